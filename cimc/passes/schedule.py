"""Pass "schedule": per-core instruction order and transfers between cores and chips.

After ``place`` every op has a home core. Each core executes its ops in the order they appear in
the function body (a topological order), so a core's program is the body restricted to that core.
Wherever a value is used on a core other than its home, ``schedule`` inserts
``%v2 = cim.transfer(%v) {from = A, to = B, core = B, chip = ...}`` (identity semantics) directly
after the value's definition, once per (value, destination core), and rewrites the users on B to
read ``%v2``. The emitter turns a transfer into ``send`` on core A and ``recv`` on core B at the
same point of the global order, so the per-pair FIFO order of sends and receives agree and the
programs cannot deadlock (every core follows one global topological order). Sending right after
the producer lets the receiver's transfer overlap the sender's remaining work.

An ``cim.im2col`` whose row blocks (``nn.slice`` of its patches' last axis) feed crossbar tiles
on more than one core is first split: each block becomes an im2col of its own rows
(``rows = [a, b]``) on the core of its tiles, so the im2col's input travels to those cores
instead of the patches, which are ``prod(kernel_shape)`` times larger (``place`` already moves
an im2col whose tiles share one core there).

Constants are never transferred: every core that uses one loads its own copy. In a region (an
``ode.loop``'s body) the same holds, with the region's arguments on the core of its op, and the
values the region yields read there; a value moves inside the region when it is made there (once
per iteration), before the op when it is made before it (once). Graph inputs live
on their ``input_cores``; transfers of inputs go first. ``ctx.schedule`` counts the
ops per core and the transfers (and how many cross chips).

Stage: cim (placed) -> cim (scheduled). Test: tests/passes/test_schedule.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cimc.ir.core import Block, Builder, Func, Module, Op, Value
from cimc.ops.shape import last_axis_range
from cimc.passes.base import Pass, PassContext
from cimc.passes.place import Place, Placement


def split_im2col(func: Func) -> int:
    """Split every im2col of ``func``'s body whose row blocks feed tiles on several cores into
    one im2col per block, of its rows, on the core of the block's tiles (see the module
    docstring). Returns how many im2cols were split."""
    users = func.uses()
    split = 0
    for op in list(func.body.ops):
        if op.name != "cim.im2col" or op.attrs.get("rows"):
            continue
        blocks: list[tuple[Op, tuple[int, int], Op]] = []  # (slice, its range, a tile it feeds)
        for u in users.get(op.result, []):
            cut = last_axis_range(u.attrs, op.result.type.shape) if u.name == "nn.slice" else None
            tiles = users.get(u.result, [])
            if cut is None or cut[0] == cut[1] or not tiles or any(
                    t.name != "cim.xbar_mvm" or t.attrs.get("core") != tiles[0].attrs.get("core")
                    for t in tiles):
                break
            blocks.append((u, cut, tiles[0]))
        else:
            if len({t.attrs.get("core") for _, _, t in blocks}) < 2:
                continue
            for sl, (a, b), tile in blocks:
                attrs = {**op.attrs, "rows": [a, b], "core": tile.attrs["core"],
                         "chip": tile.attrs["chip"]}
                own = Builder.before(sl).create("cim.im2col", op.operands, attrs)
                func.replace_all_uses(sl.result, own.result)
                func.body.remove(sl)
            func.body.remove(op)
            split += 1
    return split


def value_homes(func: Func, placement: Placement) -> dict[Value, int]:
    """The core each non-constant value lives on (arguments: the placement's input cores; a
    region's arguments: its op's core)."""
    homes: dict[Value, int] = dict(zip(func.args, placement.input_cores))
    for op in func.walk():
        if op.name in ("return", "yield", "nn.constant"):
            continue
        for r in op.results:
            homes[r] = placement.core_of(op)
        for region in op.regions:
            homes.update(dict.fromkeys(region.args, placement.core_of(op)))
    return homes


@dataclass(frozen=True)
class ScheduleSummary:
    """What the schedule pass did: the transfers it inserted, and how many cross chips."""

    transfers: int
    chip_transfers: int
    ops_per_core: dict[int, int]


@dataclass
class Schedule(Pass):
    """Order the work per core and insert cim.transfer ops between cores and chips.

    Needs a placed module (``place``). Each core runs its ops in body order; a value used on
    another core than its home gets one cim.transfer per destination core, right after its
    definition. Writes ``ctx.schedule`` (a :class:`ScheduleSummary`).

    Stage: cim (placed) -> cim (scheduled). Test: tests/passes/test_schedule.py.
    """

    name = "schedule"
    requires = (Place,)

    @classmethod
    def applied_to(cls, module: Module) -> bool:
        return any(op.name == "cim.transfer" for op in module.main.body.ops)

    def run(self, module: Module, ctx: PassContext) -> None:
        func = module.main
        placement = Placement.read(module, None, "schedule")
        split_im2col(func)
        homes = value_homes(func, placement)
        moved: dict[tuple[Value, int], Value] = {}
        transfers: list[Op] = []
        self._block(func.body, homes, moved, transfers, placement)
        ctx.schedule = _summary(func, transfers, placement)

    def _block(self, block: Block, homes: dict[Value, int], moved: dict[tuple[Value, int], Value],
               transfers: list[Op], placement: Placement) -> None:
        """Transfers for the operands of ``block``'s ops (and of the ops in their regions). A
        region's ``yield`` reads its values on its op's core (where the op's results and the
        region's arguments live)."""
        for op in list(block.ops):
            if op.name in ("nn.constant", "cim.transfer"):
                continue
            if op.name == "return":
                continue  # outputs are read on their home core
            dest = placement.core_of(op if op.name != "yield" else block.parent)
            new_operands = []
            for v in op.operands:
                src = homes.get(v)
                if src is None or src == dest:
                    new_operands.append(v)
                    continue
                key = (v, dest)
                if key not in moved:
                    moved[key] = self._transfer(v, src, dest, placement, transfers)
                new_operands.append(moved[key])
            op.operands = new_operands
            for region in op.regions:
                self._block(region, homes, moved, transfers, placement)

    @staticmethod
    def _transfer(v: Value, src: int, dest: int, placement: Placement, transfers: list[Op]
                  ) -> Value:
        """A transfer of ``v`` right after its definition, in the block that defines it (so
        every use of ``v`` sees it)."""
        if v.op is None:  # an argument: after the transfers already made for its block's
            block = v.owner
            index = sum(1 for t in transfers if t.operands[0].op is None
                        and t.operands[0].owner is block)
            b = Builder(block, index)
        else:
            block = v.op.parent
            b = Builder(block, block.ops.index(v.op) + 1)
            # after earlier transfers of the same value, keeping them in creation order
            while b.index < len(block.ops) and _is_transfer_of(block.ops[b.index], v):
                b.index += 1
        attrs: dict[str, Any] = {"from": src, "to": dest, "core": dest,
                                 "chip": placement.chip_of(dest)}
        t = b.create("cim.transfer", [v], attrs)
        transfers.append(t)
        return t.result


def _is_transfer_of(op: Op, v: Value) -> bool:
    return op.name == "cim.transfer" and op.operands[0] is v


def _summary(func: Func, transfers: list[Op], placement: Placement) -> ScheduleSummary:
    per_core: dict[int, int] = {}
    for op in func.walk():
        core = placement.core_of(op)
        if core is not None:
            per_core[core] = per_core.get(core, 0) + 1
    chip_hops = sum(1 for t in transfers
                    if placement.chip_of(t.attrs["from"]) != placement.chip_of(t.attrs["to"]))
    return ScheduleSummary(len(transfers), chip_hops, dict(sorted(per_core.items())))
