"""Pass "tile": cut every ``cim.mvm`` into crossbar tiles.

A weight matrix ``W [K, M]`` becomes a grid of tiles of at most ``R`` rows (the crossbar's rows)
and ``C`` weight columns (the crossbar's columns divided by the devices each weight takes, see
:class:`Geometry`). In the IR, for ``y = cim.mvm(x, W)``::

    x_i   = nn.slice(x) {axes=[last], starts=[r0_i], ends=[r1_i], steps=[1]}   one per row block
    t_ij  = cim.xbar_mvm(x_i) {levels = W[r0_i:r1_i, c0_j:c1_j], tile = [i, j], ...}
    p_j   = nn.add(... nn.add(t_0j, t_1j) ..., t_nj)          partial sums, added digitally
    y     = nn.concat(p_0, ..., p_m) {axis = last}            column blocks

(no slice when there is one row block, no concat when there is one column block). The interpreter
runs this IR, so the tiling is checked like any other rewrite.

Grouped weights ``W [G, Kg, Mg]`` (grouped and depthwise convolutions) are packed: consecutive
groups go block-diagonally into one crossbar as long as they fit (``floor(R/Kg)`` and
``floor(C/Mg)`` groups), so a depthwise convolution takes ``ceil(G / groups_per_xbar)`` crossbars,
not one per channel. A group larger than a crossbar is tiled on its own like a dense matrix.

Several ``cim.mvm`` ops with one weight constant and one ``layer`` name (the steps of an unrolled
recurrent layer) are one layer: their tiles get the same layer name and tile indices, which
``place`` puts on the same crossbars, and the layer is reported once. (Without a shared name,
two uses of one constant are two layers.)

Each tile records ``utilisation`` (used weight cells / crossbar weight cells), the layer's
``weight_shape`` and how many ``groups`` it packs; ``ctx.tiling`` holds per-layer stats
(:func:`layer_stats`: crossbars, the analytic minimum ``ceil(K/R)*ceil(M/C)`` for dense layers
and ``max(ceil(G*Kg/R), ceil(G*Mg/C))`` for grouped ones, utilisation) and the totals.

Tiles come out with float32 ``levels`` (the weights), unit ``scale`` and no DAC/ADC
quantisation: the ``quantize`` pass maps them onto the target's conductance levels.

Stage: cim -> cim. Test: tests/passes/test_tile.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.core import Builder, Func, Module, Op, Value
from cimc.passes.base import Pass, PassContext
from cimc.passes.lower_to_mvm import LowerToMvm


@dataclass(frozen=True)
class Geometry:
    """What a crossbar holds, in weights: ``rows`` x ``cols`` weights, where ``cols`` is the
    physical column count divided by the devices one weight takes along a row and by the bit
    slices a weight is split into."""

    rows: int
    cols: int
    cols_per_weight: int = 1
    slices: int = 1

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise CimcError(
                f"a crossbar must hold at least one weight; got {self.rows} rows x {self.cols} "
                "weight columns (check the target's crossbar size, devices per weight and weight "
                "bits)"
            )


def target_geometry(target: Any) -> Geometry:
    """The crossbar geometry of ``target`` (a ``cimc.targets.Target``): ``weight_rows`` rows and
    ``weight_cols // slices`` weight columns (a bit-sliced weight takes one column per slice)."""
    slices = int(target.slices)
    return Geometry(
        rows=int(target.weight_rows),
        cols=int(target.weight_cols) // slices,
        cols_per_weight=int(target.crossbar.cols_per_weight),
        slices=slices,
    )


def geometry(target: Any, rows: int = 0, cols: int = 0, what: str = "tile") -> Geometry:
    """Geometry from the target, with ``rows``/``cols`` (> 0) overriding it (tests, experiments)."""
    if target is None and (rows <= 0 or cols <= 0):
        raise CimcError(
            f"pass '{what}' needs a target (compile with --target, or `cimc opt --target NAME`) "
            f"or explicit crossbar sizes, e.g. {what}{{rows=256,cols=256}}"
        )
    base = target_geometry(target) if target is not None else Geometry(rows, cols)
    return Geometry(
        rows=rows if rows > 0 else base.rows,
        cols=cols if cols > 0 else base.cols,
        cols_per_weight=base.cols_per_weight,
        slices=base.slices,
    )


@dataclass
class _Pack:
    """A dense sub-problem: input columns [offset, offset + rows) times ``weights``."""

    offset: int
    weights: np.ndarray  # [rows, cols]
    groups: int          # groups packed block-diagonally (1 for dense)
    used: np.ndarray | None  # bool [rows, cols]: cells holding a weight (None: all of them)

    def used_cells(self, r0: int, r1: int, c0: int, c1: int) -> int:
        if self.used is None:
            return (r1 - r0) * (c1 - c0)
        return int(self.used[r0:r1, c0:c1].sum())


def _packs(w: np.ndarray, geo: Geometry) -> list[_Pack]:
    if w.ndim == 2:
        return [_Pack(0, w, 1, None)]
    g, kg, mg = w.shape
    per = min(geo.rows // kg, geo.cols // mg) if kg <= geo.rows and mg <= geo.cols else 1
    per = max(per, 1)
    packs = []
    for g0 in range(0, g, per):
        n = min(per, g - g0)
        dense = np.zeros((n * kg, n * mg), dtype=w.dtype)
        used = np.zeros(dense.shape, dtype=bool)
        for k in range(n):
            dense[k * kg:(k + 1) * kg, k * mg:(k + 1) * mg] = w[g0 + k]
            used[k * kg:(k + 1) * kg, k * mg:(k + 1) * mg] = True
        packs.append(_Pack(g0 * kg, dense, n, used))
    return packs


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def analytic_minimum(shape: tuple[int, ...], geo: Geometry) -> int:
    """Fewest crossbars a layer can take: ``ceil(K/R)*ceil(M/C)`` for ``[K, M]``; for grouped
    ``[G, Kg, Mg]`` every row and column of the block-diagonal matrix needs a crossbar row/column:
    ``max(ceil(G*Kg/R), ceil(G*Mg/C))``."""
    if len(shape) == 2:
        return math.ceil(shape[0] / geo.rows) * math.ceil(shape[1] / geo.cols)
    g, kg, mg = shape
    return max(math.ceil(g * kg / geo.rows), math.ceil(g * mg / geo.cols))


def tile_count(shape: tuple[int, ...], geo: Geometry) -> int:
    """How many crossbar tiles the tile pass makes for a weight of ``shape`` (``[K, M]`` or
    grouped ``[G, Kg, Mg]``): the same packing and blocking as :class:`Tile`, without weights."""
    if len(shape) == 2:
        return len(_blocks(shape[0], geo.rows)) * len(_blocks(shape[1], geo.cols))
    g, kg, mg = shape
    per = max(min(geo.rows // kg, geo.cols // mg) if kg <= geo.rows and mg <= geo.cols else 1, 1)
    return sum(len(_blocks(n * kg, geo.rows)) * len(_blocks(n * mg, geo.cols))
               for n in (min(per, g - g0) for g0 in range(0, g, per)))


@dataclass(frozen=True)
class LayerStats:
    """One layer's crossbar use. :func:`layer_stats` is the one place that works these out: the
    tile pass's summary, place's totals and the artifact's manifest all come from it."""

    name: str
    weight_shape: tuple[int, ...]
    crossbars: int  # distinct crossbars (tiles that share one, such as a recurrence's, once)
    analytic_min: int | None  # None without a crossbar geometry
    utilisation: float  # weight cells used / offered, over its crossbars
    cores: tuple[int, ...] = ()  # once placed

    @property
    def groups(self) -> int:
        return self.weight_shape[0] if len(self.weight_shape) == 3 else 1


@dataclass(frozen=True)
class TileSummary:
    """What the tile pass made: the crossbar geometry and every layer's stats."""

    geometry: Geometry
    layers: tuple[LayerStats, ...]

    @property
    def crossbars(self) -> int:
        return sum(lay.crossbars for lay in self.layers)

    @property
    def analytic_min(self) -> int:
        return sum(lay.analytic_min or 0 for lay in self.layers)

    @property
    def utilisation(self) -> float:
        n = self.crossbars
        return sum(lay.utilisation * lay.crossbars for lay in self.layers) / n if n else 0.0


def layer_stats(func: Func, geo: Geometry | None) -> list[LayerStats]:
    """Per layer (in program order), from the ``cim.xbar_mvm`` tiles of ``func``: its distinct
    crossbars (by ``(core, xbar)`` once placed, else by tile index and replica: tiles of one
    layer with one index share their crossbar), their mean ``utilisation``, the analytic minimum
    of its ``weight_shape`` and, once placed, its cores."""
    by_layer: dict[str, dict[tuple[int, ...], Op]] = {}
    for op in func.walk():
        if op.name != "cim.xbar_mvm":
            continue
        a = op.attrs
        key = (int(a["core"]), int(a["xbar"])) if "xbar" in a and "core" in a else \
            (*a["tile"], int(a.get("replica", 0)))
        by_layer.setdefault(str(a.get("layer", "")), {}).setdefault(key, op)
    out = []
    for name, crossbars in by_layer.items():
        tiles = list(crossbars.values())
        shape = tuple(int(d) for d in tiles[0].attrs.get("weight_shape") or ())
        cores = tuple(sorted({int(t.attrs["core"]) for t in tiles if "core" in t.attrs}))
        out.append(LayerStats(
            name, shape, len(tiles),
            None if geo is None else analytic_minimum(shape, geo) if len(shape) in (2, 3)
            else len(tiles),
            sum(float(t.attrs.get("utilisation", 0.0)) for t in tiles) / len(tiles), cores))
    return out


def _weight(op: Op) -> np.ndarray:
    w_val = op.operands[1]
    if w_val.op is None or w_val.op.name != "nn.constant":
        where = f" at {op.loc}" if op.loc else ""
        raise CimcError(
            f"cim.mvm{where}: its weight is not a constant, so it cannot be programmed into a "
            "crossbar; run canonicalize (constant folding) before tile"
        )
    w = np.asarray(w_val.op.attrs["value"])
    if w.ndim not in (2, 3):
        raise CimcError(f"cim.mvm: weight of shape {w.shape} is neither [K, M] nor [G, Kg, Mg]")
    return np.asarray(w, dtype=np.float32)


class _Tiler:
    def __init__(self, geo: Geometry) -> None:
        self.geo = geo
        self.names: set[str] = set()

    def layer_name(self, op: Op) -> str:
        name = op.attrs.get("layer")
        if not isinstance(name, str) or not name:
            name = f"mvm{len(self.names)}"
        base, k = name, 1
        while name in self.names:  # two mvms of one ONNX node (rare): keep names distinct
            name = f"{base}#{k}"
            k += 1
        self.names.add(name)
        return name

    def tile(self, func: Func, op: Op, shared: str | None = None) -> str:
        """Tile ``op``; ``shared`` names the layer of an op tiled before with the same weight
        constant (its tiles are the same crossbars). Returns the layer name."""
        x = op.operands[0]
        if x.type.dtype != "f32":
            raise CimcError(
                f"cim.mvm{' at ' + op.loc if op.loc else ''}: input is {x.type.dtype}; crossbars "
                "take f32 activations (cast the input to f32 first)"
            )
        w = _weight(op)
        layer = shared or self.layer_name(op)
        b = Builder.before(op)
        last = x.type.rank - 1
        geo = self.geo
        cells = geo.rows * geo.cols
        col_outputs: list[Value] = []
        j = 0
        for pack in _packs(w, geo):
            k_rows, m_cols = pack.weights.shape
            rows = _blocks(k_rows, geo.rows)
            inputs = []
            for r0, r1 in rows:
                lo, hi = pack.offset + r0, pack.offset + r1
                if lo == 0 and hi == x.type.shape[-1]:
                    inputs.append(x)
                else:
                    attrs = {"axes": [last], "starts": [lo], "ends": [hi], "steps": [1],
                             "layer": layer}
                    inputs.append(b.create("nn.slice", [x], attrs).result)
            for c0, c1 in _blocks(m_cols, geo.cols):
                partial: Value | None = None
                for i, (r0, r1) in enumerate(rows):
                    used = pack.used_cells(r0, r1, c0, c1)
                    util = used / cells
                    attrs = {
                        "levels": pack.weights[r0:r1, c0:c1],  # a view: no copy
                        "scale": np.ones(c1 - c0, dtype=np.float32),
                        "dac_bits": 0, "dac_range": 0.0, "adc_bits": 0, "adc_range": 0.0,
                        "tile": [i, j],
                        "layer": layer,
                        "weight_shape": [int(d) for d in w.shape],
                        "utilisation": float(round(util, 6)),
                    }
                    if pack.groups > 1:
                        attrs["groups"] = pack.groups
                    t = b.create("cim.xbar_mvm", [inputs[i]], attrs).result
                    partial = t if partial is None else b.create(
                        "nn.add", [partial, t], {"layer": layer}).result
                assert partial is not None
                col_outputs.append(partial)
                j += 1
        if len(col_outputs) == 1:
            y = col_outputs[0]
        else:
            y = b.create("nn.concat", col_outputs, {"axis": last, "layer": layer}).result
        func.replace_all_uses(op.result, y)
        op.parent.remove(op)
        return layer


@dataclass
class Tile(Pass):
    """Split every cim.mvm into crossbar-sized tiles; partial sums are added digitally.

    Reads the crossbar size (rows, columns, devices per weight, bit slices) from ``ctx.target``;
    the options ``rows``/``cols`` (weights per crossbar, > 0) override it. Grouped weights are
    packed block-diagonally. Writes per-tile ``utilisation`` attributes and ``ctx.tiling`` (a
    :class:`TileSummary`).

    Stage: cim -> cim (cim.mvm -> nn.slice + cim.xbar_mvm + nn.add + nn.concat).
    Test: tests/passes/test_tile.py.
    """

    name = "tile"
    requires = (LowerToMvm,)
    rows: int = 0
    cols: int = 0

    @classmethod
    def applied_to(cls, module: Module) -> bool:
        return module.attrs.get("stage") == "cim" and not any(
            op.name == "cim.mvm" for op in module.walk())

    def run(self, module: Module, ctx: PassContext) -> None:
        geo = geometry(ctx.target, self.rows, self.cols, "tile")
        tiler = _Tiler(geo)
        for f in module.funcs:
            mvms = [op for op in f.walk() if op.name == "cim.mvm"]
            weights = {op.operands[1].op for op in mvms}
            shared: dict[tuple[Op | None, str], str] = {}  # (weight, layer attr) -> tiled as
            for op in mvms:
                name = op.attrs.get("layer")
                if not isinstance(name, str) or not name:
                    tiler.tile(f, op)
                    continue
                key = (op.operands[1].op, name)
                shared[key] = tiler.tile(f, op, shared.get(key))
            _drop_unused(f, weights)
        ctx.tiling = TileSummary(geo, tuple(layer_stats(module.main, geo)))


def _drop_unused(func: Func, ops: set[Op | None]) -> None:
    """Remove the weight constants that no op uses any more (they now live in the tiles)."""
    if not ops:
        return
    used = set(func.uses())
    for op in ops:
        if op is not None and op.parent is not None and not any(r in used for r in op.results):
            op.parent.remove(op)
