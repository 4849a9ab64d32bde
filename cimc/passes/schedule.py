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

Constants are never transferred: every core that uses one loads its own copy. Graph inputs live
on their ``input_cores``; transfers of inputs go first. ``ctx.schedule`` counts the
ops per core and the transfers (and how many cross chips).

Stage: cim (placed) -> cim (scheduled). Test: tests/passes/test_schedule.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cimc.ir.core import Builder, Func, Module, Op, Value
from cimc.passes.base import Pass, PassContext
from cimc.passes.place import Place, Placement


def value_homes(func: Func, placement: Placement) -> dict[Value, int]:
    """The core each non-constant value lives on (arguments: the placement's input cores)."""
    homes: dict[Value, int] = dict(zip(func.args, placement.input_cores))
    for op in func.body.ops:
        if op.name in ("return", "nn.constant"):
            continue
        for r in op.results:
            homes[r] = placement.core_of(op)
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
        homes = value_homes(func, placement)
        moved: dict[tuple[Value, int], Value] = {}
        transfers: list[Op] = []
        for op in list(func.body.ops):
            if op.name in ("nn.constant", "cim.transfer"):
                continue
            if op.name == "return":
                continue  # outputs are read on their home core
            dest = placement.core_of(op)
            new_operands = []
            for v in op.operands:
                src = homes.get(v)
                if src is None or src == dest:
                    new_operands.append(v)
                    continue
                key = (v, dest)
                if key not in moved:
                    moved[key] = self._transfer(func, v, src, dest, placement, transfers)
                new_operands.append(moved[key])
            op.operands = new_operands
        ctx.schedule = _summary(func, transfers, placement)

    @staticmethod
    def _transfer(
        func: Func, v: Value, src: int, dest: int, placement: Placement, transfers: list[Op]
    ) -> Value:
        if v.op is None:  # an argument: after the transfers already made for arguments
            index = sum(1 for t in transfers if t.operands[0].op is None)
            b = Builder(func.body, index)
        else:
            b = Builder(func.body, func.body.ops.index(v.op) + 1)
            # after earlier transfers of the same value, keeping them in creation order
            while b.index < len(func.body.ops) and _is_transfer_of(func.body.ops[b.index], v):
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
    for op in func.body.ops:
        core = placement.core_of(op)
        if core is not None:
            per_core[core] = per_core.get(core, 0) + 1
    chip_hops = sum(1 for t in transfers
                    if placement.chip_of(t.attrs["from"]) != placement.chip_of(t.attrs["to"]))
    return ScheduleSummary(len(transfers), chip_hops, dict(sorted(per_core.items())))
