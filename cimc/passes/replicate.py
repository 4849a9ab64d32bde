"""Pass "replicate": copy the layers whose crossbar time bounds the latency onto spare crossbars.

A layer's crossbars process its input vectors (a convolution's im2col patches, one per output
position) one after another: the first convolution of the MNIST LeNet takes 576 crossbar reads
per image on a single crossbar, most of the latency, while most of the chip's crossbars sit idle.
This pass gives such a layer ``k`` copies on cores that hold no crossbar (on the chips the model
already occupies: it never adds a chip), and the copies split the positions among themselves::

    y = layer(x)      ->   x_c = x[..., rows r_c .. r_{c+1} of the position axis, ...]
                           y_c = layer_c(x_c)                  (copy c, its own crossbars)
                           y   = nn.concat(y_0, ..., y_{k-1}) {axis = position axis}

where ``layer`` is the tile structure ``tile`` made (row-block slices, ``cim.xbar_mvm`` tiles,
partial-sum adds, column concat). When ``x`` is a ``cim.im2col`` used by the layer alone, each
copy cuts the im2col's *input* instead (the input rows its output rows read, the padding
adjusted) and runs its own im2col: the input is what travels, and the im2col work is split too.
Copy ``c`` of a tile is a clone (same levels, scale and converter ranges) with ``replica = c``
and its own crossbar; on a chip each is programmed on its own, with its own programming noise.
Every chunk is computed exactly as before, so the module's semantics are unchanged (bit for bit
on exact devices).

Which layers. At batch 1 the layers run one after another, so every layer's crossbar time adds
to the latency: ``load * ceil(n / k) * v * mvm_ns`` for a layer whose position axis has ``n``
entries of ``v`` vectors each, with ``load`` tiles on its busiest core, in ``k`` copies. Greedily,
the pass gives a copy (or the few needed before the largest chunk shrinks) to the layer whose
crossbar time drops most per spare core, less what the copies add: the input's slices and the
outputs' concat (digital) and each new copy's input and output chunk over the link (the chip
link when the spare core is on another chip); until no spare cores are left or no copy saves
``MIN_SAVING`` (1 %) of the crossbar time the layers still take. A copy takes as many spare cores as its layer has cores (it mirrors them, crossbar for
crossbar), so the copies of a layer never share a core (a core has one clock), and a copy's
im2col runs on its first core. Layers without positions (a gemm on one vector per sample), with
tiles that share a crossbar (an unrolled recurrence's steps) or whose tiles are not the tiler's
structure are left alone. Costs come from ``ctx.target`` (without one: crossbar reads only).

Where it runs: after ``quantize`` (copies must be exact clones: calibrated on their share of
the positions they would get other converter ranges), after ``place`` (the spare cores are
those its placement leaves without crossbars on its chips: the end of the last chip), before
``schedule`` (which moves the chunks between cores). It leaves every tile where place put it
and places the copies on the spare cores: placing everything again with the copies beside
their originals would shift every later layer, and where the chip boundaries then fall costs
more over the chip link than the copies save (light ResNet-50 on pcm40: 1 % slower). The
digital ops are placed again by place's own rules
(:func:`cimc.passes.place.place_around_tiles`) and ``ctx.placement`` rewritten.
``ctx.replication`` (a :class:`ReplicateSummary`, the manifest's ``replication``) records what
it did, with the core of the original that each copy's core mirrors: the report folds the
copies' work back onto those cores to show the latency without them. ``mode=none`` changes
nothing.

Stage: cim (placed, quantised) -> cim (placed). Test: tests/passes/test_replicate.py.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

from cimc.errors import CimcError
from cimc.ir.core import Builder, Func, Module, Op, Value
from cimc.ir.types import TensorType
from cimc.passes.base import Pass, PassContext
from cimc.passes.place import Place, Placement, place_around_tiles
from cimc.passes.quantize import Quantize
from cimc.passes.tile import target_geometry
from cimc.targets.batching import ELEMENTWISE

MODES = ("auto", "none")
# A copy (or the few copies that shrink a layer's largest chunk) must save at least this
# fraction of the crossbar time the layers still take: the long tail of copies that save a
# few nanoseconds each would cost crossbars, artifact size and simulation time for nothing.
MIN_SAVING = 0.01


@dataclass(frozen=True)
class ReplicatedLayer:
    """One layer the pass copied."""

    name: str
    copies: int  # the original included
    crossbars_before: int
    crossbars_after: int
    vectors: int  # crossbar input vectors per sample (its positions)
    vectors_per_copy: int  # the most that one copy processes
    axis: int  # the position axis split among the copies
    cores: tuple[tuple[int, int], ...]  # (a copy's core, the original core it mirrors)


@dataclass(frozen=True)
class ReplicateSummary:
    """What replicate did: crossbars before and after, the spare cores (cores without a
    crossbar) it found on the chips the model occupies, and each copied layer."""

    chips: int
    spare_cores: int
    crossbars_before: int
    crossbars_after: int
    layers: tuple[ReplicatedLayer, ...]

    @property
    def fold(self) -> dict[int, int]:
        """Each copy's core -> the core of the original it mirrors."""
        return {copy: orig for lay in self.layers for copy, orig in lay.cores}

    def to_dict(self) -> dict[str, Any]:
        return {"chips": self.chips, "spare_cores": self.spare_cores,
                "crossbars_before": self.crossbars_before,
                "crossbars_after": self.crossbars_after,
                "layers": [{**asdict(lay), "cores": [list(p) for p in lay.cores]}
                           for lay in self.layers]}


# ----------------------------------------------------------------------------- layers


@dataclass(eq=False)
class _Layer:
    """A layer's tile structure, as ``tile`` made it (``ops``, in body order, read ``x`` alone
    and give ``y``), and the ops after it that every copy runs on its own chunk (``chain``,
    giving ``out``): those that keep the positions apart (:func:`_follow`)."""

    name: str
    ops: list[Op]
    tiles: list[Op]
    x: Value
    y: Value
    source: Op | None  # the cim.im2col making x, when the layer is its only user
    axis: int  # position axis of x (and y)
    n: int  # its length
    per_row: int  # vectors per entry of the axis (per sample)
    cores: list[int]  # its tiles' cores, in order
    load: int  # most tiles on one core
    chain: list[Op]
    out: Value
    out_axis: int  # the position axis of out
    grain: int  # chunks start at multiples of this (the strides of the pools in the chain)

    @property
    def units(self) -> int:
        return self.n // self.grain

    def rows(self, k: int) -> int:
        """The most rows (entries of the axis) one of ``k`` copies takes."""
        return math.ceil(self.units / k) * self.grain

    def chunks(self, k: int) -> list[tuple[int, int]]:
        bounds = [c * self.units // k * self.grain for c in range(k + 1)]
        return list(itertools.pairwise(bounds))


def _nbytes(t: TensorType) -> int:
    return math.prod(t.shape) * t.np_dtype.itemsize


def _structure(name: str, tiles: list[Op], body: list[Op], users: dict[Value, list[Op]],
               in_body: set[Op]) -> _Layer | None:
    """The layer's tile structure, or None when it cannot be copied (see the module doc)."""
    if not name or any("replica" in t.attrs for t in tiles):
        return None
    if len({tuple(t.attrs["tile"]) for t in tiles}) != len(tiles):
        return None  # tiles sharing a crossbar (a recurrence): one vector per step
    members: set[Op] = set(tiles)
    for t in tiles:
        v = t.operands[0]
        if v.op is not None and v.op.name == "nn.slice" and v.op.attrs.get("layer") == name:
            members.add(v.op)
    inputs = {v for m in members for v in m.operands if v.op not in members}
    if len(inputs) != 1:
        return None
    x = inputs.pop()
    results = {r for m in members for r in m.results}
    for op in body:
        if op.name in ("nn.add", "nn.concat") and op.attrs.get("layer") == name \
                and op.operands and all(v in results for v in op.operands):
            members.add(op)
            results.update(op.results)
    escaping = [r for r in results if any(u not in members for u in users.get(r, []))]
    rank = x.type.rank
    if len(escaping) != 1 or rank < 3 or escaping[0].type.shape[:-1] != x.type.shape[:-1]:
        return None
    source = x.op if x.op is not None and x.op.name == "cim.im2col" and all(
        u in members for u in users.get(x, [])) else None
    lead = x.type.shape[1:rank - 1]  # positions per sample
    axis = 1 if source is not None else 1 + max(range(len(lead)), key=lambda i: lead[i])
    cores = list(dict.fromkeys(int(t.attrs["core"]) for t in tiles))
    load = max(sum(1 for t in tiles if t.attrs["core"] == c) for c in cores)
    chain, out, out_axis, grain = _chain(escaping[0], axis, users, in_body)
    lay = _Layer(name, [op for op in body if op in members], tiles, x, escaping[0], source,
                 axis, x.type.shape[axis], math.prod(lead) // x.type.shape[axis], cores, load,
                 chain, out, out_axis, grain)
    return lay if lay.units >= 2 else None


def _chain(y: Value, axis: int, users: dict[Value, list[Op]], body: set[Op]
           ) -> tuple[list[Op], Value, int, int]:
    """The ops after ``y`` that keep its positions apart, each the only reader of the one
    before; the last value, its position axis and the product of the pooling strides."""
    chain: list[Op] = []
    v, grain = y, 1
    while len(readers := users.get(v, [])) == 1 and readers[0] in body:
        step = _follow(readers[0], v, axis)
        if step is None:
            break
        axis, stride = step
        grain *= stride
        chain.append(readers[0])
        v = readers[0].results[0]
    return chain, v, axis, grain


def _follow(op: Op, v: Value, axis: int) -> tuple[int, int] | None:
    """Where ``op``, reading ``v`` whose positions are on ``axis``, keeps them, and the stride
    it pools them by (1: none); None when it mixes positions. Elementwise ops whose other
    operands are constants that do not vary along the axis, transposes, and pools whose window
    is their stride along the axis (no padding, the axis a multiple of it) keep them."""
    if len(op.results) != 1:
        return None
    out = op.results[0].type
    if op.name in ELEMENTWISE:
        for w in op.operands:
            if w is v:
                if w.type.shape != out.shape:
                    return None
            elif w.op is None or w.op.name != "nn.constant" or (
                    (i := axis - (out.rank - w.type.rank)) >= 0 and w.type.shape[i] != 1):
                return None
        return axis, 1
    if op.name == "nn.transpose":
        return list(op.attrs["perm"]).index(axis), 1
    if op.name in ("nn.max_pool", "nn.avg_pool") and axis >= 2:
        a, i, r = op.attrs, axis - 2, v.type.rank - 2
        stride = a["strides"][i]
        if a["kernel_shape"][i] == stride and (a.get("dilations") or [1] * r)[i] == 1 \
                and a["pads"][i] == a["pads"][i + r] == 0 and v.type.shape[axis] % stride == 0:
            return axis, stride
    return None


def _im2col_rows(op: Op, r0: int, r1: int) -> tuple[int, int, int, int] | None:
    """For output rows [r0, r1) of im2col ``op`` (first spatial axis): the input rows [a, b)
    they read and the padding (top, bottom) the chunk needs; None when a chunk would read
    padding only."""
    a = op.attrs
    height = op.operands[0].type.shape[2]
    stride, dil, kern, top = a["strides"][0], a["dilations"][0], a["kernel_shape"][0], a["pads"][0]
    lo = r0 * stride - top
    hi = (r1 - 1) * stride - top + dil * (kern - 1)  # inclusive
    first, last = max(lo, 0), min(hi, height - 1)
    if last < first:
        return None
    return first, last + 1, first - lo, hi - last


def _layers(func: Func) -> list[_Layer]:
    body = func.body.ops
    users = func.uses()
    by_layer: dict[str, list[Op]] = {}
    for op in body:
        if op.name == "cim.xbar_mvm":
            by_layer.setdefault(str(op.attrs.get("layer", "")), []).append(op)
    in_body = set(body)
    found = (_structure(name, tiles, body, users, in_body) for name, tiles in by_layer.items())
    layers = [lay for lay in found if lay is not None]
    for lay in layers:  # every row must read some input (else cut the patches instead)
        if lay.source is not None and any(_im2col_rows(lay.source, r, r + 1) is None
                                          for r in range(lay.n)):
            lay.source = None
    return layers


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Costs:
    mvm_ns: float = 1.0
    digital_ns: float = 0.0  # per element
    link: tuple[float, float] = (math.inf, 0.0)  # bytes per ns, latency ns (same chip)
    chip_link: tuple[float, float] = (math.inf, 0.0)  # (between chips)

    @classmethod
    def of(cls, target: Any) -> _Costs:
        if target is None:
            return cls()
        c = target.costs
        return cls(float(c.mvm_ns), float(c.digital_ns_per_element),
                   (float(c.link_bytes_per_ns), float(c.link_latency_ns)),
                   (float(c.chip_link_bytes_per_ns), float(c.chip_link_latency_ns)))


class _Planner:
    """The greedy choice of copies (module docstring): which spare cores each copy takes."""

    def __init__(self, layers: list[_Layer], free: list[int], cores_per_chip: int,
                 costs: _Costs) -> None:
        self.layers = layers
        self.cpc = cores_per_chip
        self.free: dict[int, list[int]] = {}  # chip -> its spare cores, ascending
        for c in sorted(free):
            self.free.setdefault(c // cores_per_chip, []).append(c)
        self.costs = costs
        self.copies: dict[_Layer, list[list[int]]] = {lay: [lay.cores] for lay in layers}

    def time_ns(self, lay: _Layer, k: int) -> float:
        return lay.load * lay.rows(k) * lay.per_row * self.costs.mvm_ns

    def take(self, chip: int, count: int) -> list[int]:
        """``count`` spare cores, those of ``chip`` first (fewer when there are not as many)."""
        cores = self.free.get(chip, [])[:count]
        for other in sorted(self.free):
            if len(cores) == count:
                break
            if other != chip:
                cores += self.free[other][:count - len(cores)]
        return cores

    def offer(self, lay: _Layer) -> tuple[float, float, list[int]] | None:
        """(saving per core, saving, the cores to take) for the next copy count of ``lay``
        that shrinks its largest chunk; None when that saves no time or does not fit."""
        k = len(self.copies[lay])
        chunk = math.ceil(lay.units / k) - 1  # the largest chunk must shrink
        if chunk < 1:
            return None
        more = math.ceil(lay.units / chunk) - k
        width = len(lay.cores)
        chip = lay.cores[0] // self.cpc
        cores = self.take(chip, more * width)
        if len(cores) < more * width:
            return None
        x, y = (lay.source.operands[0] if lay.source else lay.x).type, lay.out.type
        moved = lay.rows(k + more) / lay.n * (_nbytes(x) + _nbytes(y))
        overhead = 0.0
        if k == 1:  # the input's slices and the outputs' concat
            overhead += (math.prod(x.shape) + math.prod(y.shape)) * self.costs.digital_ns
        for i in range(more):  # each new copy's input and output travel
            group = cores[i * width:(i + 1) * width]
            bw, latency = self.costs.link if all(c // self.cpc == chip for c in group) \
                else self.costs.chip_link
            overhead += moved / bw + 2 * latency
        saving = self.time_ns(lay, k) - self.time_ns(lay, k + more) - overhead
        return (saving / len(cores), saving, cores) if saving > 0 else None

    def plan(self) -> dict[_Layer, list[list[int]]]:
        while True:
            left = sum(self.time_ns(lay, len(c)) for lay, c in self.copies.items())
            offers = [(o, lay) for lay in self.layers if (o := self.offer(lay)) is not None
                      and o[1] >= MIN_SAVING * left]
            if not offers:
                return self.copies
            (_, _, cores), lay = max(offers, key=lambda item: item[0][0])  # first on ties
            width = len(lay.cores)
            self.copies[lay] += [cores[i:i + width] for i in range(0, len(cores), width)]
            for c in cores:
                self.free[c // self.cpc].remove(c)


# ----------------------------------------------------------------------------- rewriting


def _chunk_input(b: Builder, lay: _Layer, r0: int, r1: int) -> Value:
    """Rows [r0, r1) of ``lay.x`` along its position axis: an im2col of the input rows they
    read, or a slice of x."""
    def cut(v: Value, axis: int, start: int, stop: int) -> Value:
        if start == 0 and stop == v.type.shape[axis]:
            return v
        return b.create("nn.slice", [v], {"axes": [axis], "starts": [start], "ends": [stop],
                                          "steps": [1], "layer": lay.name}).result

    if lay.source is None:
        return cut(lay.x, lay.axis, r0, r1)
    rows = _im2col_rows(lay.source, r0, r1)
    assert rows is not None
    a, z, top, bottom = rows
    attrs = {k: v for k, v in lay.source.attrs.items() if k not in ("core", "chip")}
    d = len(attrs["kernel_shape"])
    pads = list(attrs["pads"])
    pads[0], pads[d] = top, bottom
    attrs["pads"] = pads
    return b.create("cim.im2col", [cut(lay.source.operands[0], 2, a, z)], attrs).result


def _rewrite(func: Func, lay: _Layer, copies: list[list[int]]) -> list[Op]:
    """Replace ``lay`` and its chain by copies (the tiles of copy c on ``copies[c]``, mirroring
    the original's cores, with ``replica = c``), each on a chunk of the positions, and the
    concat of their outputs. The chunks' inputs come first, so that they are sent before the
    original starts its own work. Returns the digital ops it placed: each copy's im2col, on the
    copy's first core (its patches are larger than its input, and the copy may sit on another
    chip)."""
    last = (lay.chain or [lay.y.op])[-1]
    b = Builder(func.body, func.body.ops.index(last) + 1, loc=lay.y.op.loc)
    inputs = [_chunk_input(b, lay, r0, r1) for r0, r1 in lay.chunks(len(copies))]
    pinned = []
    outs = []
    for c, (xc, cores) in enumerate(zip(inputs, copies)):
        if c and lay.source is not None:
            xc.op.attrs["core"] = cores[0]
            pinned.append(xc.op)
        mirror = dict(zip(lay.cores, cores))
        mapping: dict[Value, Value] = {lay.x: xc}
        for op in lay.ops + lay.chain:
            attrs = {key: v for key, v in op.attrs.items() if key not in ("core", "chip")}
            if op.name == "cim.xbar_mvm":
                attrs["core"] = mirror[op.attrs["core"]]
                if c:
                    attrs["replica"] = c
            new = b.create(op.name, [mapping.get(v, v) for v in op.operands], attrs)
            mapping[op.result] = new.result
        outs.append(mapping[lay.out])
    out = b.create("nn.concat", outs, {"axis": lay.out_axis, "layer": lay.name}).result
    func.replace_all_uses(lay.out, out)
    for op in reversed(lay.ops + lay.chain):
        func.body.remove(op)
    if lay.source is not None:
        func.body.remove(lay.source)
    return pinned


# ----------------------------------------------------------------------------- the pass


@dataclass
class Replicate(Pass):
    """Copy the layers that bound the latency onto spare cores; the copies split the positions.

    ``mode=auto`` (the default) copies the layers whose crossbar time per image drops most per
    spare core, onto the cores without crossbars of the chips the model occupies (each copy
    mirrors its original's cores); ``mode=none`` changes nothing. Writes ``replica`` on the
    copies' tiles, re-places the digital ops, and writes ``ctx.placement`` and
    ``ctx.replication`` (a :class:`ReplicateSummary`).

    Stage: cim (placed, quantised) -> cim (placed). Test: tests/passes/test_replicate.py.
    """

    name = "replicate"
    requires = (Place, Quantize)
    mode: str = "auto"

    @classmethod
    def applied_to(cls, module: Module) -> bool:
        return any("replica" in op.attrs for op in module.main.body.ops)

    def run(self, module: Module, ctx: PassContext) -> None:
        if self.mode not in MODES:
            raise CimcError(f"replicate: mode={self.mode!r}; use one of {', '.join(MODES)}")
        if self.mode == "none":
            return
        func = module.main
        if any(op.name == "cim.transfer" for op in func.body.ops):
            raise CimcError("replicate: the module is scheduled already (it has cim.transfer "
                            "ops); run replicate before schedule")
        geo = ctx.tiling.geometry if ctx.tiling is not None else (
            target_geometry(ctx.target) if ctx.target is not None else None)
        placement = Placement.read(module, geo, "replicate")
        cpc = placement.cores_per_chip
        busy = {int(op.attrs["core"]) for op in func.body.ops if op.name == "cim.xbar_mvm"}
        free = [c for c in range(placement.chips * cpc) if c not in busy]
        plan = _Planner(_layers(func), free, cpc, _Costs.of(ctx.target)).plan() if cpc else {}
        copied = [(lay, copies) for lay, copies in plan.items() if len(copies) > 1]
        pinned: set[Op] = set()
        # last layer first: a layer's input may be the output of one before it, which a
        # rewrite replaces
        for lay, copies in reversed(copied):
            pinned.update(_rewrite(func, lay, copies))
        if copied:
            for op in func.walk():  # the digital ops follow the tiles again (place's rules)
                if op.name != "cim.xbar_mvm" and op not in pinned:
                    op.attrs.pop("core", None)
                    op.attrs.pop("chip", None)
            input_cores = place_around_tiles(func, cpc)
            ctx.placement = Placement.summarise(func, placement.chips, cpc, input_cores, geo)
            ctx.placement.write(module)
        layers = tuple(ReplicatedLayer(
            lay.name, len(copies), len(lay.tiles), len(copies) * len(lay.tiles),
            lay.n * lay.per_row, lay.rows(len(copies)) * lay.per_row, lay.axis,
            tuple((copy, orig) for cores in copies[1:] for copy, orig in zip(cores, lay.cores)))
            for lay, copies in copied)
        after = ctx.placement.crossbars if copied and ctx.placement else placement.crossbars
        ctx.replication = ReplicateSummary(placement.chips, len(free), placement.crossbars,
                                           after, layers)
