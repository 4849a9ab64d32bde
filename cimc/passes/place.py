"""Pass "place": put every crossbar tile on a (chip, core, crossbar) and every digital op on a core.

Tiles are placed in program order, filling the crossbars of one core, then the next core, then the
next chip, so the tiles of a layer sit on neighbouring cores and a layer's partial sums travel
little. A chip holds ``cores x crossbars_per_core`` tiles (from the target; the options ``cores``
and ``crossbars_per_core`` override it). With ``chips=0`` (the default, ``--chips auto``) the model
is spread over as many chips as it needs; with ``chips=N`` a model that needs more than ``N``
chips is refused with a message that says how many crossbars and chips it needs.

Tiles of one layer with the same tile index and weights (the steps of an unrolled recurrent
layer, the stages of an ODE solve's loop, see ``tile``) share one crossbar. Ops in a region (an
``ode.loop``'s body) are placed like the others, the region's arguments (the loop's carried
values) on the core of the op that holds the region.

Core ids are global over chips: core ``k`` of chip ``c`` has id ``c * cores + k``. Every placed op
gets ``chip`` and ``core`` attributes; tiles also get ``xbar`` (the crossbar index in their core).
A digital op runs on the core that holds its largest operand, the first of equally large ones (the
"home" of the value: partial sums are added where the first partial is, the next layer's im2col
runs where the previous layer's output is; a scalar moves rather than a tensor); an op with only constant operands runs on the core of its first placed user. A graph
input lives on the core of the first tile that depends on it (``input_cores`` attribute of the
function). An ``cim.im2col`` whose patches all feed tiles of one core runs on that core (its input
is smaller than its patches, so that is what travels). Constants are not placed: every core that
uses one gets its own copy.
``ctx.placement`` (a :class:`Placement`) holds the chips, the input cores, and the crossbars,
cores and analytic minimum of the placed module.

Stage: cim (tiled) -> cim (placed). Test: tests/passes/test_place.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.core import Block, Func, Module, Op, Value
from cimc.passes.base import Pass, PassContext
from cimc.passes.tile import Geometry, Tile, layer_stats, target_geometry


@dataclass(frozen=True)
class ChipShape:
    cores: int
    crossbars_per_core: int
    name: str = "the target"

    @property
    def crossbars(self) -> int:
        return self.cores * self.crossbars_per_core


def chip_shape(target: Any, cores: int = 0, crossbars_per_core: int = 0) -> ChipShape:
    if target is None and (cores <= 0 or crossbars_per_core <= 0):
        raise CimcError(
            "pass 'place' needs a target (compile with --target, or `cimc opt --target NAME`) or "
            "explicit chip sizes, e.g. place{cores=64,crossbars_per_core=1}"
        )
    base_cores = int(target.chip.cores) if target is not None else 0
    base_xpc = int(target.chip.crossbars_per_core) if target is not None else 0
    name = f"'{target.name}'" if target is not None else "the chip"
    return ChipShape(cores or base_cores, crossbars_per_core or base_xpc, name)


def _crossbar_slots(tiles: list[Op]) -> dict[Op, int]:
    """Each tile's crossbar, numbered in program order; a tile with the layer, tile index,
    replica, levels and scale of an earlier one shares its crossbar (copies made by
    ``replicate`` never do)."""
    seen: dict[tuple[str, tuple[int, ...], int], list[Op]] = {}
    slot: dict[Op, int] = {}
    crossbars = 0
    for op in tiles:
        key = (str(op.attrs.get("layer", "")), tuple(op.attrs["tile"]),
               int(op.attrs.get("replica", 0)))
        same = next((o for o in seen.get(key, ()) if _same_weights(o, op)), None)
        if same is None:
            seen.setdefault(key, []).append(op)
            slot[op] = crossbars
            crossbars += 1
        else:
            slot[op] = slot[same]
    return slot


def _same_weights(a: Op, b: Op) -> bool:
    return all(np.array_equal(a.attrs[k], b.attrs[k]) for k in ("levels", "scale"))


def _is_const(v: Value) -> bool:
    return v.op is not None and v.op.name == "nn.constant"


def _input_cores(func: Func, tile_core: dict[Op, int], default: int) -> list[int]:
    """Each argument's core: that of the first tile (in program order, an op's regions
    included) that depends on it."""
    cores = []
    for arg in func.args:
        reached: set[Value] = {arg}
        core = default
        for op in func.body.ops:
            if any(v in reached for v in op.operands):
                tile = next((o for o in op.walk() if o in tile_core), None)
                if tile is not None:
                    core = tile_core[tile]
                    break
                reached.update(op.results)
        cores.append(core)
    return cores


def _place_digital(block: Block, home: dict[Value, int], unplaced: list[Op],
                   prefer: int | None = None) -> None:
    """Each op of ``block`` on its largest operand's core; the ops of a region after their op,
    its arguments (a loop's carried values) on the op's core, which ``prefer`` names: in the
    region, an op with equally large operands there and elsewhere stays there."""
    for op in block.ops:
        if op.name in ("return", "yield", "nn.constant") or "core" in op.attrs:
            for r in op.results:
                if "core" in op.attrs:
                    home[r] = op.attrs["core"]
            continue
        placed = [(v.type.numel, home[v] == prefer, -i, home[v])
                  for i, v in enumerate(op.operands) if v in home]
        if not placed:
            unplaced.append(op)
            continue
        core = max(placed)[3]  # the largest operand's core, the first of equals
        op.attrs["core"] = core
        for r in op.results:
            home[r] = core
        for region in op.regions:
            home.update(dict.fromkeys(region.args, core))
            _place_digital(region, home, unplaced, core)


def _place_by_users(func: Func, unplaced: list[Op], default: int) -> None:
    """Ops with only constant operands: the core of their first placed user."""
    users = func.uses()
    for op in reversed(unplaced):
        core = default
        for r in op.results:
            placed = [u.attrs["core"] for u in users.get(r, []) if "core" in u.attrs]
            if placed:
                core = placed[0]
                break
        op.attrs["core"] = core


def _pull_im2col(func: Func) -> int:
    """Run an im2col (and the slices that cut its patches into row blocks) on the core of the
    tiles it feeds, when they all sit on one core: its input is smaller than its patches, so
    moving the input is cheaper than moving the patches. Returns how many moved."""
    users = func.uses()
    moved = 0
    for op in func.body.ops:
        if op.name != "cim.im2col":
            continue
        consumers: list[Op] = []
        for u in users.get(op.result, []):
            if u.name == "nn.slice" and all(
                    w.name == "cim.xbar_mvm" for w in users.get(u.result, [])):
                consumers.extend(users.get(u.result, []))
            else:
                consumers.append(u)
        cores = {c.attrs.get("core") for c in consumers}
        if len(cores) != 1 or None in cores:
            continue
        core = cores.pop()
        if core == op.attrs["core"]:
            continue
        op.attrs["core"] = core
        for u in users.get(op.result, []):
            if u.name == "nn.slice":
                u.attrs["core"] = core
        moved += 1
    return moved


def _set_chips(func: Func, cores_per_chip: int) -> None:
    for op in func.walk():
        if "core" in op.attrs:
            op.attrs["chip"] = op.attrs["core"] // cores_per_chip


def place_around_tiles(func: Func, cores_per_chip: int) -> list[int]:
    """Place the graph inputs and every digital op of ``func`` (regions included) around its
    placed tiles (the rules of the module docstring; a digital op that has a core already keeps
    it); returns the input cores. ``replicate`` re-places with it after adding copies of tiles."""
    tile_core = {op: op.attrs["core"] for op in func.walk() if op.name == "cim.xbar_mvm"}
    first = next(iter(tile_core.values()), 0)
    input_cores = _input_cores(func, tile_core, first)
    home: dict[Value, int] = dict(zip(func.args, input_cores))
    unplaced: list[Op] = []
    _place_digital(func.body, home, unplaced)
    _place_by_users(func, unplaced, first)
    _pull_im2col(func)
    _set_chips(func, cores_per_chip)
    return input_cores


@dataclass(frozen=True)
class Placement:
    """Where a placed module runs: the place pass's record, which schedule and the emitter read.

    In the IR it is the module's ``chips`` and ``cores_per_chip``, @main's ``input_cores`` and
    every placed op's ``core`` and ``chip`` (and a tile's ``xbar``), so dumps show it and parse
    back; :meth:`write` and :meth:`read` (and :meth:`core_of`, :meth:`xbar_of`) are the one
    place that spells those attributes. The counts come from :func:`summarise`."""

    chips: int
    cores_per_chip: int
    input_cores: tuple[int, ...]
    crossbars: int
    cores_used: int
    cores_with_crossbars: int
    utilisation: float  # mean over the crossbars
    analytic_min: int | None  # None without a crossbar geometry

    def chip_of(self, core: int) -> int:
        return core // self.cores_per_chip if self.cores_per_chip else 0

    @staticmethod
    def core_of(op: Op) -> int | None:
        return op.attrs.get("core")

    @staticmethod
    def xbar_of(op: Op) -> int | None:
        return op.attrs.get("xbar")

    def write(self, module: Module) -> None:
        module.attrs["chips"] = self.chips
        module.attrs["cores_per_chip"] = self.cores_per_chip
        module.main.attrs["input_cores"] = list(self.input_cores)

    @classmethod
    def read(cls, module: Module, geo: Geometry | None, what: str) -> Placement:
        """The placement a placed module records (``what`` names the reader in the error
        when it is not placed)."""
        func = module.main
        input_cores = func.attrs.get("input_cores")
        if input_cores is None or len(input_cores) != len(func.args):
            raise CimcError(f"{what}: @main has no input_cores; run the 'place' pass first")
        for op in func.walk():
            if op.name not in ("return", "yield", "nn.constant") and cls.core_of(op) is None:
                where = f" at {op.loc}" if op.loc else ""
                raise CimcError(f"{what}: {op.name}{where} has no core; run the 'place' pass "
                                "first")
        cores_per_chip = int(module.attrs.get("cores_per_chip") or 0)
        chips = int(module.attrs.get("chips") or 1)
        return cls.summarise(func, chips, cores_per_chip, input_cores, geo)

    @classmethod
    def summarise(cls, func: Func, chips: int, cores_per_chip: int, input_cores: list[int],
                  geo: Geometry | None) -> Placement:
        """The record of ``func`` as placed (its tiles' stats from :func:`layer_stats`)."""
        layers = layer_stats(func, geo)
        crossbars = sum(lay.crossbars for lay in layers)
        cores = {op.attrs["core"] for op in func.walk() if "core" in op.attrs}
        return cls(
            chips=chips, cores_per_chip=cores_per_chip, input_cores=tuple(input_cores),
            crossbars=crossbars, cores_used=len(cores | set(input_cores)),
            cores_with_crossbars=len({c for lay in layers for c in lay.cores}),
            utilisation=(sum(lay.utilisation * lay.crossbars for lay in layers) / crossbars
                         if crossbars else 0.0),
            analytic_min=None if geo is None else sum(lay.analytic_min or 0 for lay in layers))


@dataclass
class Place(Pass):
    """Assign crossbar tiles to (chip, core, crossbar) and digital ops to cores.

    ``chips=0``: as many chips as needed; ``chips=N``: refuse a model needing more than N chips.
    ``cores``/``crossbars_per_core`` (> 0) override the target's chip. Writes ``chip``, ``core``
    (global id) and, on tiles, ``xbar`` attributes, the function's ``input_cores``, the module's
    ``chips`` and ``cores_per_chip`` (:meth:`Placement.write`), and ``ctx.placement``.

    Stage: cim (tiled) -> cim (placed). Test: tests/passes/test_place.py.
    """

    name = "place"
    requires = (Tile,)
    chips: int = 0
    cores: int = 0
    crossbars_per_core: int = 0

    @classmethod
    def applied_to(cls, module: Module) -> bool:
        return "input_cores" in module.main.attrs

    def run(self, module: Module, ctx: PassContext) -> None:
        if self.chips < 0:
            raise CimcError(f"place: chips={self.chips}; use 0 (auto) or a positive chip count")
        shape = chip_shape(ctx.target, self.cores, self.crossbars_per_core)
        func = module.main
        for op in func.walk():  # placing again starts from scratch
            for key in ("chip", "core", "xbar"):
                op.attrs.pop(key, None)
        tiles = [op for op in func.walk() if op.name == "cim.xbar_mvm"]
        slot = _crossbar_slots(tiles)
        n_xbars = len(set(slot.values()))
        needed = max(math.ceil(n_xbars / shape.crossbars), 1)
        self._check_capacity(n_xbars, needed, shape)
        for op in tiles:
            op.attrs["core"], op.attrs["xbar"] = divmod(slot[op], shape.crossbars_per_core)
        input_cores = place_around_tiles(func, shape.cores)
        used_cores = {op.attrs["core"] for op in func.walk() if "core" in op.attrs}
        chips_used = max((c // shape.cores for c in used_cores | set(input_cores)),
                         default=0) + 1
        geo = ctx.tiling.geometry if ctx.tiling is not None else (
            target_geometry(ctx.target) if ctx.target is not None else None)
        ctx.placement = Placement.summarise(func, chips_used, shape.cores, input_cores, geo)
        ctx.placement.write(module)

    def _check_capacity(self, n_tiles: int, needed: int, shape: ChipShape) -> None:
        if self.chips and needed > self.chips:
            raise CimcError(
                f"the model needs {n_tiles} crossbars, i.e. {needed} chips of {shape.name} "
                f"({shape.cores} cores x {shape.crossbars_per_core} crossbar(s) = "
                f"{shape.crossbars} crossbars per chip), but chips={self.chips} allows only "
                f"{self.chips * shape.crossbars}; use --chips auto (or --chips {needed}), or a "
                "target with more or larger crossbars"
            )
