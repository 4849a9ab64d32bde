"""Where each filter's output goes: the channel-flow analysis behind ``prune-similar``.

A *producer* is a conv (``group = 1``), gemm or matmul with constant weights: each of its filters
makes one channel of its result (axis 1 of a conv or gemm, the last axis of a matmul), and each
channel gets a global id. The analysis follows the channels through the function, op by op, as
a :class:`Layout` per value: the axis that carries them and, along it, a run of elements per
channel (a flatten turns a channel into a block of features; a concat puts operands side by side).

Every op that reads a value carrying channels has a rule (:data:`RULES`) that says what its
results carry, or why it stops the channels. A stopped channel is *fixed*: it cannot be pruned.
The rules:

- elementwise ops and activations pass the channels on; a constant operand that varies along the
  channel axis is sliced with them; two operands that both carry channels (a residual add) tie
  their channels together, element by element, so they are pruned jointly or not at all;
- pools, batch norm (its parameters are sliced), pad, resize and transpose pass them on when they
  leave the channel axis alone; reshape passes them on when it merges the channel axis with the
  axes after it (a flatten: a channel becomes a block) and keeps the axes before it;
- concat along the channel axis puts the operands' runs side by side (at their offsets);
- a depthwise conv passes each input channel on to its ``multiplier`` outputs, so its filters go
  with the channel that feeds them (the channels are coupled through it);
- *consumers* (a conv with ``group = 1``, a gemm, a matmul, a conv_transpose with ``group = 1``,
  all with constant weights) absorb the channels: pruning one removes the matching input rows of
  their weights;
- everything else fixes the channels it reads, with a reason: a grouped conv (its groups would
  shrink unevenly), a model output, a softmax or reduction over the channel axis, a slice or
  split of it, an op with regions, a ``cim.*`` op (after lowering), ...

The rewrite (:func:`rewrite_flow`) applies the prune decision to the flow ops (constants sliced,
attributes that spell out sizes updated) and then re-infers every result type with the op
registry, checking each against the size the layout predicts. The weights of producers,
consumers and depthwise convs are rewritten by the pass itself (``prune_similar.py``).

Stage: nn. Tests: tests/passes/test_prune_similar.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod

import numpy as np

from cimc.errors import PassError
from cimc.ir.core import Builder, Func, Op, Value
from cimc.ops import registry
from cimc.passes.canonicalize import constant_value

FIXED = 0  # the channel id of elements no producer owns; channels tied to it are never pruned

# Ops without operands (they never read channels) and terminators (a model or region output).
NO_OPERANDS = ("nn.constant",)
TERMINATORS = ("return", "yield")


@dataclass(frozen=True)
class Seg:
    """``length`` consecutive elements of a layout's axis that belong to channel ``chan``."""

    chan: int
    length: int


@dataclass(frozen=True)
class Layout:
    """The channels a value carries: along ``axis``, the runs ``segs`` in order."""

    axis: int
    segs: tuple[Seg, ...]

    @property
    def size(self) -> int:
        return sum(s.length for s in self.segs)

    def scaled(self, q: int, axis: int | None = None) -> Layout:
        return Layout(self.axis if axis is None else axis,
                      tuple(Seg(s.chan, s.length * q) for s in self.segs))

    def starts(self) -> list[int]:
        out, at = [], 0
        for s in self.segs:
            out.append(at)
            at += s.length
        return out

    def kept(self, pruned: Callable[[int], bool]) -> np.ndarray:
        """Indices along the axis of the elements whose channel is not pruned."""
        parts = [np.arange(a, a + s.length) for a, s in zip(self.starts(), self.segs)
                 if not pruned(s.chan)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class Channels:
    """Union-find over channel ids: tied channels share a root (a *class*, pruned as one). A class
    with a reason is fixed: it cannot be pruned. Records the ops that tied each class together.
    Id :data:`FIXED` stands for elements that no producer owns; it is fixed from the start."""

    def __init__(self) -> None:
        self.parent = [FIXED]
        self.reason: dict[int, str] = {FIXED: "tied to values that no prunable layer makes"}
        self.via: dict[int, set[str]] = {}

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, c: int) -> int:
        root = c
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[c] != root:
            self.parent[c], c = root, self.parent[c]
        return root

    def union(self, a: int, b: int, via: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb == FIXED:  # FIXED stays a root
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.via.setdefault(ra, set()).update(self.via.pop(rb, set()), {via})
        if rb in self.reason:
            self.reason.setdefault(ra, self.reason.pop(rb))

    def note(self, c: int, via: str) -> None:
        self.via.setdefault(self.find(c), set()).add(via)

    def fix(self, c: int, reason: str) -> None:
        self.reason.setdefault(self.find(c), reason)

    def fixed(self, c: int) -> bool:
        return self.find(c) in self.reason


@dataclass
class Producer:
    """A layer whose filters make channels: ``filters[i]`` (float64 ``[N, D]`` rows) makes
    channel ``chans[i]`` of ``op.result`` along ``axis``."""

    op: Op
    kind: str  # conv, gemm, matmul
    axis: int
    filters: np.ndarray
    chans: list[int]


@dataclass
class Consumer:
    """A layer that reads channels (``layout``) in operand 0 and absorbs their removal."""

    op: Op
    layout: Layout


@dataclass
class Analysis:
    """The outcome of :func:`analyze`."""

    func: Func
    channels: Channels = field(default_factory=Channels)
    layouts: dict[Value, Layout] = field(default_factory=dict)
    producers: dict[Op, Producer] = field(default_factory=dict)
    consumers: list[Consumer] = field(default_factory=list)
    depthwise: dict[Op, tuple[Layout, Layout]] = field(default_factory=dict)  # input, output
    # flow ops to rewrite: (op, constant operand index, axis of that constant, layout)
    const_slices: list[tuple[Op, int, int, Layout]] = field(default_factory=list)
    # flow ops whose attributes spell out the size of a result axis: (op, attr, axis, layout)
    attr_sizes: list[tuple[Op, str, int, Layout]] = field(default_factory=list)

    def fix_all(self, layout: Layout, reason: str) -> None:
        for s in layout.segs:
            self.channels.fix(s.chan, reason)


# A rule looks at an op that reads channels (``ins[i]`` is operand i's layout, or None). It
# returns one layout (or None) per result, or a reason why the op stops the channels.
Rule = Callable[[Analysis, Op, Sequence[Layout | None]], list[Layout | None] | str]


# ----------------------------------------------------------------------------- helpers


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _where(op: Op) -> str:
    return f" at {op.loc}" if op.loc else ""


def _only_first(op: Op, ins: Sequence[Layout | None]) -> str | None:
    extra = [i for i, lay in enumerate(ins) if lay is not None and i > 0]
    if extra:
        return f"{op.name}{_where(op)} reads the channels in operand #{extra[0]}"
    return None


def _tie(an: Analysis, layouts: Sequence[Layout], via: str) -> Layout | str:
    """Layouts that meet element by element (same axis): tie their channels pairwise."""
    first = layouts[0]
    for lay in layouts[1:]:
        if lay.axis != first.axis or [s.length for s in lay.segs] != [s.length for s in first.segs]:
            return f"{via}: its operands carry channels that do not line up"
        for a, b in zip(first.segs, lay.segs):
            if a.chan != b.chan:
                an.channels.union(a.chan, b.chan, via)
    return first


# ----------------------------------------------------------------------------- rules


def _unary(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    """The result has the operand's shape and channels (activations, casts, ...)."""
    return [ins[0]] * len(op.results)


def _broadcast(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    """Numpy-broadcasting binary ops. Operands that carry channels are tied; a constant that
    varies along the channel axis is sliced; a run-time value that does stops the channels."""
    out = op.results[0].type
    tracked = []
    for v, lay in zip(op.operands, ins):
        if lay is not None:
            shift = out.rank - v.type.rank
            tracked.append(Layout(lay.axis + shift, lay.segs))
    lay = _tie(an, tracked, op.name)
    if isinstance(lay, str):
        return lay
    for i, (v, lin) in enumerate(zip(op.operands, ins)):
        if lin is not None:
            continue
        local = lay.axis - (out.rank - v.type.rank)
        if local < 0 or v.type.shape[local] == 1:
            continue  # broadcast along the channel axis: the same for every channel
        if constant_value(v) is None:
            return f"{op.name}{_where(op)} combines the channels with a value that carries none"
        an.const_slices.append((op, i, local, lay))
    return [lay]


def _channel_axis_only(what: str) -> Rule:
    """Ops that work per channel on axis 1 (pools, LRN-free normalisations): the channels must be
    on axis 1."""

    def rule(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
        bad = _only_first(op, ins)
        if bad:
            return bad
        if ins[0].axis != 1:
            return f"{op.name}{_where(op)} {what} axis {ins[0].axis}, which carries the channels"
        return [ins[0]]

    return rule


def _batch_norm(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    bad = _only_first(op, ins)
    if bad:
        return bad
    lay = ins[0]
    if lay.axis != 1:
        return f"nn.batch_norm{_where(op)} normalises axis 1, but the channels are on {lay.axis}"
    if any(constant_value(v) is None for v in op.operands[1:]):
        return f"nn.batch_norm{_where(op)} has run-time parameters"
    for i in range(1, 5):
        an.const_slices.append((op, i, 0, lay))
    return [lay]


def _lrn(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    if ins[0].axis == 1:
        return f"nn.lrn{_where(op)} mixes neighbouring channels"
    return [ins[0]]


def _pad(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    rank, a = op.operands[0].type.rank, ins[0].axis
    pads = op.attrs["pads"]
    if pads[a] != 0 or pads[a + rank] != 0:
        return f"nn.pad{_where(op)} pads the channel axis"
    return [ins[0]]


def _resize(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    a = ins[0].axis
    scales, sizes = op.attrs.get("scales") or [], op.attrs.get("sizes") or []
    if scales and float(scales[a]) != 1.0:
        return f"nn.resize{_where(op)} resizes the channel axis"
    if sizes:
        if int(sizes[a]) != op.operands[0].type.shape[a]:
            return f"nn.resize{_where(op)} resizes the channel axis"
        an.attr_sizes.append((op, "sizes", a, ins[0]))
    return [ins[0]]


def _transpose(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    perm = [int(p) for p in op.attrs["perm"]]
    return [Layout(perm.index(ins[0].axis), ins[0].segs)]


def _reshape(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    """A reshape that keeps the axes before the channel axis and merges it with (a prefix of)
    the axes after it: channel runs grow by the merged factor (a flatten)."""
    s, t = op.operands[0].type.shape, op.results[0].type.shape
    lay = ins[0]
    a, c = lay.axis, s[lay.axis]
    outer, inner = prod(s[:a]), prod(s[a + 1:])
    for b in range(len(t)):  # size-1 axes make several b possible: the first that fits
        if prod(t[:b]) > outer:
            break
        if prod(t[:b]) == outer and t[b] >= c and t[b] % c == 0 and inner % (t[b] // c) == 0:
            an.attr_sizes.append((op, "shape", b, lay.scaled(t[b] // c, b)))
            return [lay.scaled(t[b] // c, b)]
    return f"nn.reshape{_where(op)} {list(s)} -> {list(t)} splits or reorders the channel axis"


def _concat(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    rank = op.results[0].type.rank
    axis = _axis(int(op.attrs["axis"]), rank)
    tracked = [lay for lay in ins if lay is not None]
    if all(lay.axis == axis for lay in tracked):
        segs: list[Seg] = []
        for v, lay in zip(op.operands, ins):
            segs.extend(lay.segs if lay is not None else (Seg(FIXED, v.type.shape[axis]),))
        return [Layout(axis, tuple(segs))]
    if len(tracked) != len(ins):
        return f"nn.concat{_where(op)} joins channels with values that carry none"
    lay = _tie(an, tracked, op.name)
    return lay if isinstance(lay, str) else [lay]


def _not_along(attr_axes: Callable[[Op], list[int]], what: str) -> Rule:
    """Ops that leave every axis but some alone (softmax, slice, split, ...)."""

    def rule(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
        bad = _only_first(op, ins)
        if bad:
            return bad
        rank = op.operands[0].type.rank
        if ins[0].axis in {_axis(a, rank) for a in attr_axes(op)}:
            return f"{op.name}{_where(op)} {what} the channel axis"
        return [ins[0]] * len(op.results)

    return rule


def _sliced_axes(op: Op) -> list[int]:
    """The axes an nn.slice actually cuts."""
    x = op.operands[0].type
    out = op.results[0].type
    return [int(a) for a in op.attrs["axes"] if x.shape[_axis(int(a), x.rank)]
            != out.shape[_axis(int(a), x.rank)]]


def _reduce(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    rank = op.operands[0].type.rank
    axes = {_axis(int(a), rank) for a in op.attrs["axes"]}
    a = ins[0].axis
    if a in axes:
        return f"{op.name}{_where(op)} reduces over the channel axis"
    keep = registry.lookup(op.name).with_defaults(op.attrs)["keepdims"]
    return [Layout(a if keep else a - sum(1 for x in axes if x < a), ins[0].segs)]


def _layer_norm(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    bad = _only_first(op, ins)
    if bad:
        return bad
    if ins[0].axis >= _axis(int(op.attrs["axis"]), op.operands[0].type.rank):
        return f"nn.layer_norm{_where(op)} normalises over the channel axis"
    return [ins[0]]


def _conv(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
    """A conv with constant weights consumes the channels of its input (``group = 1``) or, as a
    depthwise conv, passes each one on to its ``multiplier`` outputs."""
    bad = _only_first(op, ins)
    if bad:
        return bad
    lay = ins[0]
    w = constant_value(op.operands[1])
    if w is None or (len(op.operands) > 2 and constant_value(op.operands[2]) is None):
        return f"nn.conv{_where(op)} has run-time weights"
    if lay.axis != 1:
        return f"nn.conv{_where(op)} reads channels on axis {lay.axis}, not its channel axis"
    group = int(op.attrs["group"])
    if group == 1:
        an.consumers.append(Consumer(op, lay))
        return [None]
    if w.shape[1] == 1 and group == op.operands[0].type.shape[1]:
        out = lay.scaled(w.shape[0] // group)
        an.depthwise[op] = (lay, out)
        for s in lay.segs:
            an.channels.note(s.chan, "depthwise conv")
        return [out]
    return f"grouped conv (group={group}){_where(op)}: its groups would lose different channels"


def _consumer(why_not: Callable[[Op, Layout], str | None]) -> Rule:
    """Layers with constant weights that read the channels in operand 0 and absorb their
    removal (their input rows go), unless ``why_not`` gives a reason."""

    def rule(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
        bad = _only_first(op, ins) or why_not(op, ins[0])
        if bad:
            return bad
        an.consumers.append(Consumer(op, ins[0]))
        return [None]

    return rule


def _conv_transpose(op: Op, lay: Layout) -> str | None:
    if constant_value(op.operands[1]) is None or int(op.attrs["group"]) != 1 or lay.axis != 1:
        return f"nn.conv_transpose{_where(op)}: grouped, run-time weights or channels off axis 1"
    return None


def _gemm(op: Op, lay: Layout) -> str | None:
    attrs = registry.lookup(op.name).with_defaults(op.attrs)
    if constant_value(op.operands[1]) is None or attrs["trans_a"] or lay.axis != 1:
        return f"nn.gemm{_where(op)}: run-time B, trans_a, or channels off the rows' axis"
    if len(op.operands) > 2 and constant_value(op.operands[2]) is None:
        return f"nn.gemm{_where(op)} adds a run-time C"
    return None


def _matmul(op: Op, lay: Layout) -> str | None:
    w = constant_value(op.operands[1])
    if w is None or w.ndim != 2 or lay.axis != op.operands[0].type.rank - 1:
        return f"nn.matmul{_where(op)}: no constant 2-D weight, or channels off the last axis"
    return None


def _stop(reason: str) -> Rule:
    def rule(an: Analysis, op: Op, ins: Sequence[Layout | None]) -> list[Layout | None] | str:
        return f"{op.name}{_where(op)} {reason}"

    return rule


UNARY = (
    "nn.relu", "nn.leaky_relu", "nn.sigmoid", "nn.tanh", "nn.hard_sigmoid", "nn.hard_swish",
    "nn.clip", "nn.erf", "nn.gelu", "nn.sqrt", "nn.exp", "nn.neg", "nn.cast", "nn.identity",
    "nn.reciprocal", "nn.not",
)
BROADCAST = (
    "nn.add", "nn.sub", "nn.mul", "nn.div", "nn.pow", "nn.prelu", "nn.max", "nn.min",
    "nn.equal", "nn.less", "nn.less_equal", "nn.greater", "nn.greater_equal", "nn.and",
    "nn.or", "nn.xor", "nn.where",
)
POOLS = ("nn.max_pool", "nn.avg_pool", "nn.global_avg_pool", "nn.global_max_pool")

RULES: dict[str, Rule] = {
    **{name: _unary for name in UNARY},
    **{name: _broadcast for name in BROADCAST},
    **{name: _channel_axis_only("pools over") for name in POOLS},
    "nn.batch_norm": _batch_norm,
    "nn.lrn": _lrn,
    "nn.pad": _pad,
    "nn.resize": _resize,
    "nn.transpose": _transpose,
    "nn.reshape": _reshape,
    "nn.concat": _concat,
    "nn.softmax": _not_along(lambda op: [int(op.attrs["axis"])], "normalises over"),
    "nn.log_softmax": _not_along(lambda op: [int(op.attrs["axis"])], "normalises over"),
    "nn.split": _not_along(lambda op: [int(op.attrs["axis"])], "cuts"),
    "nn.slice": _not_along(_sliced_axes, "cuts"),
    "nn.reduce_sum": _reduce,
    "nn.reduce_mean": _reduce,
    "nn.reduce_max": _reduce,
    "nn.reduce_min": _reduce,
    "nn.layer_norm": _layer_norm,
    "nn.conv": _conv,
    "nn.conv_transpose": _consumer(_conv_transpose),
    "nn.gemm": _consumer(_gemm),
    "nn.matmul": _consumer(_matmul),
    "nn.gather": _stop("indexes the channels (not analysed)"),
    "nn.shape": _stop("reads the number of channels"),
    "nn.expand": _stop("broadcasts to a shape of its own (not analysed)"),
    "nn.tile": _stop("repeats the channels (not analysed)"),
    "nn.lstm": _stop("reads its input in a recurrence (not analysed)"),
    "nn.gru": _stop("reads its input in a recurrence (not analysed)"),
    "cim.im2col": _stop("is a crossbar op; prune-similar runs before lower-to-mvm"),
    "cim.mvm": _stop("is a crossbar op; prune-similar runs before lower-to-mvm"),
    "cim.xbar_mvm": _stop("is a crossbar op; prune-similar runs before lower-to-mvm"),
    "cim.transfer": _stop("is a crossbar op; prune-similar runs before lower-to-mvm"),
}


# ----------------------------------------------------------------------------- producers


def producer_filters(op: Op) -> tuple[str, int, np.ndarray] | None:
    """``(kind, axis, filters [N, D])`` when ``op`` makes prunable channels: a conv with
    ``group = 1``, a gemm or a matmul (2-D weight), with constant float weights (and bias)."""
    w = constant_value(op.operands[1]) if len(op.operands) > 1 else None
    if w is None or w.dtype.kind != "f" or op.operands[0].type.np_dtype != w.dtype:
        return None
    bias = op.operands[2] if len(op.operands) > 2 else None
    if bias is not None and constant_value(bias) is None:
        return None
    if op.name == "nn.conv":
        if int(op.attrs["group"]) != 1 or w.ndim != op.operands[0].type.rank:
            return None
        return "conv", 1, w.reshape(w.shape[0], -1).astype(np.float64)
    if op.name == "nn.gemm" and w.ndim == 2:
        trans_b = registry.lookup(op.name).with_defaults(op.attrs)["trans_b"]
        return "gemm", 1, (w if trans_b else w.T).astype(np.float64)
    if op.name == "nn.matmul" and w.ndim == 2 and op.operands[0].type.rank >= 2:
        return "matmul", op.results[0].type.rank - 1, w.T.astype(np.float64)
    return None


# ----------------------------------------------------------------------------- analysis


def analyze(func: Func) -> Analysis:
    """Follow every producer's channels through ``func`` (module docstring)."""
    an = Analysis(func)
    for op in func.body.ops:
        ins = [an.layouts.get(v) for v in op.operands]
        inner = [v for o in op.walk() if o is not op for v in o.operands if v in an.layouts]
        if op.regions and (inner or any(ins)):
            for v in {*inner, *(v for v in op.operands if v in an.layouts)}:
                an.fix_all(an.layouts[v], f"{op.name}{_where(op)} reads the channels in a region")
        elif any(lay is not None for lay in ins):
            if op.name in TERMINATORS:
                outs: list[Layout | None] | str = (
                    "feeds the model output" if op.name == "return" else "leaves a region")
            else:
                rule = RULES.get(op.name)
                outs = f"{op.name} has no channel rule" if rule is None else rule(an, op, ins)
            if isinstance(outs, str):
                for lay in ins:
                    if lay is not None:
                        an.fix_all(lay, outs)
            else:
                for r, lay in zip(op.results, outs):
                    if lay is not None:
                        an.layouts[r] = lay
        made = producer_filters(op) if not op.regions else None
        if made is not None:
            kind, axis, filters = made
            chans = [an.channels.new() for _ in range(len(filters))]
            an.producers[op] = Producer(op, kind, axis, filters, chans)
            an.layouts[op.result] = Layout(axis, tuple(Seg(c, 1) for c in chans))
    return an


# ----------------------------------------------------------------------------- rewrite


def slice_axis(a: np.ndarray, axis: int, keep: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.take(a, keep, axis=axis))


def rewrite_flow(an: Analysis, pruned: Callable[[int], bool]) -> None:
    """Slice the flow ops' constants and size attributes for the pruned channels, then re-infer
    every result type in order (checking it against the layouts)."""
    for op, index, axis, lay in an.const_slices:
        keep = lay.kept(pruned)
        if len(keep) == lay.size:
            continue
        c = constant_value(op.operands[index])
        assert c is not None
        op.operands[index] = Builder.before(op).constant(slice_axis(c, axis, keep))
    for op, attr, axis, lay in an.attr_sizes:
        sizes = list(op.attrs[attr])
        sizes[axis] = len(lay.kept(pruned))
        op.attrs[attr] = sizes
    for op in an.func.body.ops:
        if op.name in TERMINATORS or op.name in NO_OPERANDS:
            continue
        types = registry.infer_types(op.name, [v.type for v in op.operands], op.attrs)
        for r, t in zip(op.results, types):
            lay = an.layouts.get(r)
            if lay is not None and t.shape[lay.axis] != len(lay.kept(pruned)):
                raise PassError(
                    f"prune-similar: {op.name}{_where(op)} gives {t}, but its channels say "
                    f"{len(lay.kept(pruned))} along axis {lay.axis} (a bug)"
                )
            r.type = t
