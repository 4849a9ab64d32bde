"""Pass "prune-similar": remove near-duplicate filters and rewrite the layers that read them.

Which filters go. Every conv (``group = 1``), gemm and matmul with constant weights is a
*producer*: its filters make channels (``prune_channels.py`` follows them through the function
and ties together channels that meet in a residual add or pass through a depthwise conv; those
*classes* are pruned as one, across all their producers, or not at all). Filters whose weights
are all zero always go (e.g. zeroed by training with :func:`cimc.pruning.similarity_mask`).
Then, either

- ``ratio = 0`` (default): the similarity rule of :mod:`cimc.pruning` on each layer's non-zero
  filters (``metric``, L2 by default, ``c``, ``b``; defaults per metric as published; Hamming
  distances of sign bits suit the sign-binarised filters of the in-memory training rule, L2
  the float filters of a trained ONNX model): a class goes when the
  rule marks its filter in every producer of the class; or
- ``ratio = R`` (``0 < R < 1``): the most redundant classes go, one at a time, until a fraction
  ``R`` of the MACs of all conv/gemm/matmul layers (at the compiled shapes) is gone. A filter's
  redundancy is its distance (``metric``) to the nearest filter of its layer that stays, as a
  z-score against the layer's pair distances; a class counts its least redundant member. The
  nearest distances are updated as filters go, so of two duplicates only one is pruned.

A layer always keeps at least one filter. ``layers`` limits pruning to the named layers (names as
``cimc report`` shows them, or a kind: ``conv``, ``gemm``, ``matmul``; separated by ``;``); a
class with a producer outside them stays.

What the rewrite does. Each pruned filter's output channel disappears: its weight row and bias in
the producer, the matching elements of every value it flows through (constants of elementwise ops
and batch norm parameters are sliced, a reshape's shape and a resize's sizes shrink), its group in
a depthwise conv, and the matching input rows of every consumer (conv, gemm, matmul,
conv_transpose).

Compensation (``compensate = true``). Before removal, calibration inputs (``ctx.calib``, at most
``calib_samples`` of them; without it, the quantize pass's default, one seeded standard-normal
batch, with a warning) run through the unpruned function in the reference interpreter. At each
consumer's input, a pruned channel's values ``y_p`` are fitted by least squares as
``alpha * y_k + beta`` from the kept channel ``k`` of the same input that fits best (the largest
squared correlation, i.e. the smallest residual; a flattened channel pairs with another block
element by element). The consumer absorbs the fit: ``W[:, k] += alpha * W[:, p]`` and
``bias += beta * sum(W[:, p])`` (a matmul gets an add after it). This is exact when
``y_p = alpha * y_k + beta`` holds (a duplicated filter, a scaled copy through relu and pools, a
constant channel) and the consumer does not zero-pad (a padded conv sees ``beta`` at its borders
only in part, so there the bias term is approximate). That is ``partners = 1``, the method as
published. ``partners = 0`` (the default) fits ``y_p`` from all kept channels of the same input
at once (a slightly ridged multiple regression), folded the same way, except where one kept
channel alone explains it (squared correlation within 1e-6 of 1), which is then fitted exactly
as above: never worse on the calibration data, and usually better.

The summary (:class:`PruneSummary`: per layer the filters and MACs before and after, and the
crossbars when the context has a target, from :func:`cimc.passes.tile.tile_count`; the coupled
channel groups and what happened to them) goes to ``ctx.pruning``; ``cimc compile`` writes it to
the artifact's manifest and ``cimc report`` shows it.

Stage: nn -> nn (run it before lower-to-mvm). Test: tests/passes/test_prune_similar.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.core import Builder, Module, Op
from cimc.ops import registry
from cimc.passes.base import Pass, PassContext
from cimc.passes.canonicalize import constant_value
from cimc.passes.dce import remove_dead_ops
from cimc.passes.lower_to_mvm import layer_names
from cimc.passes.prune_calib import Fit, least_squares_fits, observe
from cimc.passes.prune_channels import FIXED, Analysis, analyze, rewrite_flow, slice_axis
from cimc.passes.tile import geometry, tile_count
from cimc.pruning import METRICS, pairwise_distances, rule_parameters, similarity_mask

KINDS = ("conv", "gemm", "matmul")


# ----------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class PrunedLayer:
    """One conv/gemm/matmul layer before and after pruning (MACs at the compiled shapes)."""

    name: str
    kind: str
    filters_before: int
    filters_after: int
    macs_before: int
    macs_after: int
    crossbars_before: int | None = None
    crossbars_after: int | None = None


@dataclass(frozen=True)
class ChannelGroup:
    """Channels tied across ``layers`` (through ``via``: a residual add, a depthwise conv, ...)
    or left alone, and what happened to them."""

    layers: tuple[str, ...]
    via: tuple[str, ...]
    channels: int
    pruned: int
    status: str


@dataclass
class PruneSummary:
    """What prune-similar did, for the report (``manifest.json``'s ``pruning``)."""

    spec: str
    mode: str
    compensation: str
    layers: list[PrunedLayer] = field(default_factory=list)
    groups: list[ChannelGroup] = field(default_factory=list)

    @property
    def macs_before(self) -> int:
        return sum(lay.macs_before for lay in self.layers)

    @property
    def macs_after(self) -> int:
        return sum(lay.macs_after for lay in self.layers)

    @property
    def macs_removed_fraction(self) -> float:
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    def _crossbars(self, key: str) -> int | None:
        counts = [getattr(lay, key) for lay in self.layers]
        return None if any(c is None for c in counts) else sum(counts)

    @property
    def crossbars_saved(self) -> int | None:
        before, after = self._crossbars("crossbars_before"), self._crossbars("crossbars_after")
        return None if before is None or after is None else before - after

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "mode": self.mode,
            "compensation": self.compensation,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_removed_fraction": self.macs_removed_fraction,
            "crossbars_before": self._crossbars("crossbars_before"),
            "crossbars_after": self._crossbars("crossbars_after"),
            "crossbars_saved": self.crossbars_saved,
            "layers": [asdict(lay) for lay in self.layers],
            "groups": [{**asdict(g), "layers": list(g.layers), "via": list(g.via)}
                       for g in self.groups],
        }


# ----------------------------------------------------------------------------- layer geometry


@dataclass(eq=False)
class _Layer:
    """A conv/gemm/matmul with constant weights: its MACs as a function of the input elements
    and output channels it keeps, and its crossbar weight shape."""

    op: Op
    name: str
    kind: str
    n_in: int  # elements along the consumed axis
    n_out: int  # output channels
    per: int  # MACs per (input element x output channel), or per output channel (depthwise)
    groups: int  # 1 dense; n_in when depthwise; other grouped convs never change
    taps: int
    removed_in: int = 0
    removed_out: int = 0

    def macs(self, removed_in: int | None = None, removed_out: int | None = None) -> int:
        rin = self.removed_in if removed_in is None else removed_in
        rout = self.removed_out if removed_out is None else removed_out
        out = self.n_out - rout
        if self.groups == 1:
            return self.per * (self.n_in - rin) * out
        return self.per * out  # depthwise (per includes C/G * taps) and fixed grouped convs

    def mvm_shape(self) -> tuple[int, ...]:
        """The weight shape lower-to-mvm gives this layer: ``[K, M]`` or ``[G, Kg, Mg]``."""
        n_in, n_out = self.n_in - self.removed_in, self.n_out - self.removed_out
        if self.groups == 1:
            return (n_in * self.taps, n_out)
        g = n_in if self.groups == self.n_in else self.groups
        return (g, n_in // g * self.taps, n_out // g)


def _layer(op: Op, name: str) -> _Layer:
    x, y = op.operands[0].type, op.results[0].type
    w = constant_value(op.operands[1])
    assert w is not None
    if op.name == "nn.conv":
        group = int(op.attrs["group"])
        taps = math.prod(w.shape[2:])
        positions = y.shape[0] * math.prod(y.shape[2:])
        if group == 1:
            return _Layer(op, name, "conv", x.shape[1], w.shape[0], positions * taps, 1, taps)
        return _Layer(op, name, "conv", x.shape[1], w.shape[0], positions * w.shape[1] * taps,
                      group, taps)
    if op.name == "nn.gemm":
        rows, k = (x.shape[::-1] if op.attrs.get("trans_a") else x.shape)
        return _Layer(op, name, "gemm", k, y.shape[1], rows, 1, 1)
    rows = math.prod(x.shape[:-1])
    return _Layer(op, name, "matmul", w.shape[0], w.shape[1], rows, 1, 1)


# ----------------------------------------------------------------------------- the plan


@dataclass
class _Class:
    """Channels pruned as one: the producers' filters ``members`` (layer, filter index) and what
    removing them takes off each layer: ``effects`` (layer, input elements, output channels)."""

    root: int
    members: list[tuple[_Layer, int]] = field(default_factory=list)
    effects: list[tuple[_Layer, int, int]] = field(default_factory=list)


class _Plan:
    """The layers, the channel classes and the choice of classes to prune, for one function."""

    def __init__(self, an: Analysis, names: dict[Op, str]) -> None:
        self.an = an
        self.layers = {op: _layer(op, names[op]) for op in an.func.walk() if op in names}
        ch = an.channels
        self.classes: dict[int, _Class] = {}

        def cls(chan: int) -> _Class:
            root = ch.find(chan)
            return self.classes.setdefault(root, _Class(root))

        for op, prod in an.producers.items():
            layer = self.layers[op]
            for i, c in enumerate(prod.chans):
                entry = cls(c)
                entry.members.append((layer, i))
                entry.effects.append((layer, 0, 1))
        for con in an.consumers:
            layer = self.layers.get(con.op)
            for s in con.layout.segs:
                if s.chan != FIXED and layer is not None:
                    cls(s.chan).effects.append((layer, s.length, 0))
        for op, (_, out) in an.depthwise.items():
            for s in out.segs:
                if s.chan != FIXED:
                    cls(s.chan).effects.append((self.layers[op], 0, s.length))
        self.pruned: set[int] = set()

    def is_pruned(self, chan: int) -> bool:
        return chan != FIXED and self.an.channels.find(chan) in self.pruned

    def total_macs(self) -> int:
        return sum(layer.macs() for layer in self.layers.values())

    def allows(self, c: _Class) -> bool:
        """Pruning ``c`` leaves every producer at least one filter."""
        count: dict[_Layer, int] = {}
        for layer, _ in c.members:
            count[layer] = count.get(layer, 0) + 1
        return all(layer.removed_out + n < layer.n_out for layer, n in count.items())

    def prune(self, c: _Class) -> None:
        self.pruned.add(c.root)
        for layer, rin, rout in c.effects:
            layer.removed_in += rin
            layer.removed_out += rout


class _Redundancy:
    """One producer's filters, ranked by the distance (``metric``) of each to the nearest
    filter that stays, as a z-score against the layer's pair distances (all-zero filters:
    ``-inf``, and left out of the distances); the nearest filters are updated as filters go."""

    def __init__(self, filters: np.ndarray, metric: str) -> None:
        self.zero = ~filters.any(axis=1)
        nz = np.flatnonzero(~self.zero)
        n = len(filters)
        self.d = np.full((n, n), np.inf)
        self.mu, self.sd = 0.0, 1.0
        if len(nz) >= 2:
            sub = pairwise_distances(filters[nz], metric)
            pairs = sub[np.triu_indices(len(nz), k=1)]
            self.mu, self.sd = float(pairs.mean()), float(pairs.std()) or 1.0
            self.d[np.ix_(nz, nz)] = sub
        np.fill_diagonal(self.d, np.inf)
        self.owner = np.full(n, -1)  # the candidate class of each filter (-1: none)
        self.nearest = self.d.argmin(axis=1)
        self.dist = self.d[np.arange(n), self.nearest]

    def score(self, i: int) -> float:
        if self.zero[i]:
            return -math.inf
        return float((self.dist[i] - self.mu) / self.sd)

    def remove(self, i: int) -> list[int]:
        """Filter ``i`` goes: the filters whose nearest it was look again. Returns them."""
        self.d[:, i] = np.inf
        stale = [int(j) for j in np.flatnonzero(self.nearest == i) if j != i]
        for j in stale:
            self.nearest[j] = int(self.d[j].argmin())
            self.dist[j] = self.d[j, self.nearest[j]]
        return stale


# ----------------------------------------------------------------------------- weight rewrite


def _input_first(op: Op, w: np.ndarray) -> np.ndarray:
    """The weight as float64 ``[inputs, outputs, taps...]`` (a copy)."""
    w = np.asarray(w, np.float64)
    if op.name == "nn.conv":
        return np.moveaxis(w, 1, 0).copy()
    if op.name == "nn.gemm" and registry.lookup(op.name).with_defaults(op.attrs)["trans_b"]:
        return w.T.copy()
    return w.copy()  # gemm [K, M], matmul [K, M], conv_transpose [C, M, taps...]


def _from_input_first(op: Op, v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if op.name == "nn.conv":
        v = np.moveaxis(v, 0, 1)
    elif op.name == "nn.gemm" and registry.lookup(op.name).with_defaults(op.attrs)["trans_b"]:
        v = v.T
    return np.ascontiguousarray(v).astype(dtype)


def _compensate(v: np.ndarray, fits: list[Fit]) -> np.ndarray:
    """Fold the fits into the input-first weight ``v`` (in place); returns the bias change over
    the outputs."""
    delta = np.zeros(v.shape[1])
    for f in fits:
        for j in range(f.length):
            row = v[f.p + j]
            for k, alpha in zip(f.ks, f.alphas):
                v[k + j] += alpha * row
            delta += f.beta * row.reshape(v.shape[1], -1).sum(axis=1)
    return delta


class _Rewriter:
    """Applies a plan: new weights for producers, consumers and depthwise convs (compensation
    first, then slicing), then the flow ops and every result type."""

    def __init__(self, plan: _Plan, fits: dict[Op, list[Fit]]) -> None:
        self.plan = plan
        self.fits = fits
        self.bias_after: list[tuple[Op, np.ndarray]] = []  # matmuls that need an add

    def run(self) -> None:
        an, pruned = self.plan.an, self.plan.is_pruned
        keep_in = {c.op: c.layout.kept(pruned) for c in an.consumers}
        keep_out = {op: np.flatnonzero([not pruned(c) for c in p.chans])
                    for op, p in an.producers.items()}
        for op, (lin, lout) in an.depthwise.items():
            keep_out[op] = lout.kept(pruned)
            keep_in[op] = lin.kept(pruned)
        for op in [*dict.fromkeys([*keep_in, *keep_out])]:
            self.weights(op, keep_in.get(op), keep_out.get(op))
        rewrite_flow(an, pruned)
        for op, delta in self.bias_after:
            at = op.parent.ops.index(op) + 1
            b = Builder(op.parent, at, loc=op.loc)
            add = b.create("nn.add", [op.result, b.constant(delta.astype(op.result.type.np_dtype))])
            for user in an.func.walk():
                if user is not add:
                    user.operands = [add.result if v is op.result else v for v in user.operands]

    def weights(self, op: Op, keep_in: np.ndarray | None, keep_out: np.ndarray | None) -> None:
        w = constant_value(op.operands[1])
        assert w is not None
        depthwise = op in self.plan.an.depthwise
        if depthwise:
            n_in, n_out = op.operands[0].type.shape[1], w.shape[0]
        else:
            v = _input_first(op, w)
            n_in, n_out = v.shape[:2]
        fits = self.fits.get(op, [])
        same_in = keep_in is None or len(keep_in) == n_in
        same_out = keep_out is None or len(keep_out) == n_out
        if same_in and same_out and not fits:
            return
        b = Builder.before(op)
        attrs = registry.lookup(op.name).with_defaults(op.attrs)
        delta = np.zeros(n_out)
        if depthwise:
            new_w = w if same_out else slice_axis(w, 0, keep_out)
            op.attrs["group"] = len(keep_in)
        else:
            if fits:
                delta = _compensate(v, fits)
                if op.name == "nn.gemm":
                    delta *= float(attrs["alpha"])
            if not same_in:
                v = v[keep_in]
            if not same_out:
                v = v[:, keep_out]
            new_w = _from_input_first(op, v, w.dtype)
        op.operands[1] = b.constant(new_w)
        out_keep = None if same_out else keep_out
        if delta.any() or (len(op.operands) > 2 and out_keep is not None):
            self.bias(op, b, attrs, delta, out_keep)

    def bias(self, op: Op, b: Builder, attrs: dict, delta: np.ndarray,
             keep_out: np.ndarray | None) -> None:
        """Add ``delta`` (over the original outputs) to the bias and slice it to ``keep_out``."""
        dtype = op.operands[0].type.np_dtype
        if op.name == "nn.matmul":
            if delta.any():
                self.bias_after.append((op, delta if keep_out is None else delta[keep_out]))
            return
        c = constant_value(op.operands[2]) if len(op.operands) > 2 else None
        if c is None:
            new = delta
        elif op.name == "nn.gemm" and delta.any():
            new = float(attrs["beta"]) * np.asarray(c, np.float64) + delta
            op.attrs["beta"] = 1.0
        else:
            new = np.asarray(c, np.float64) + delta
        if keep_out is not None and new.ndim >= 1 and new.shape[-1] == len(delta):
            new = slice_axis(new, new.ndim - 1, keep_out)
        value = b.constant(np.asarray(new).astype(dtype))
        if len(op.operands) > 2:
            op.operands[2] = value
        else:
            op.operands.append(value)


# ----------------------------------------------------------------------------- the pass


@dataclass
class PruneSimilar(Pass):
    """Remove near-duplicate filters (similarity rule or MAC ratio), rewrite the layers after.

    Options: ``metric`` (l2, the default; hamming, cosine), ``c`` and ``b`` (the rule; default
    per metric as published), ``ratio`` (prune the most redundant filters until this fraction of
    conv/gemm MACs is gone; 0: use the rule), ``layers`` (names or kinds separated by ``;``; default all),
    ``compensate`` (fold a least-squares fit of each pruned channel into the next layer),
    ``partners`` (0, the default: fit from all kept channels; 1: from the most similar one),
    ``calib_samples`` (calibration samples used for the fit). All-zero filters always go.
    Writes the summary to ``ctx.pruning``. See the module docstring.

    Stage: nn -> nn (before lower-to-mvm). Test: tests/passes/test_prune_similar.py.
    """

    name = "prune-similar"
    metric: str = "l2"
    c: float | None = None
    b: float | None = None
    ratio: float = 0.0
    layers: str = ""
    compensate: bool = True
    partners: int = 0
    calib_samples: int = 64

    def check(self) -> None:
        if self.metric not in METRICS:
            raise CimcError(f"prune-similar: metric {self.metric!r} is not one of "
                            f"{', '.join(METRICS)}")
        if not 0.0 <= self.ratio < 1.0:
            raise CimcError(f"prune-similar: ratio={self.ratio} must be in [0, 1)")
        if self.ratio > 0 and (self.c is not None or self.b is not None):
            raise CimcError("prune-similar: c and b set the similarity rule, which ratio "
                            "replaces; give either ratio or c/b")
        if self.c is not None and self.c < 0:
            raise CimcError(f"prune-similar: c={self.c} must be >= 0")
        if self.partners not in (0, 1):
            raise CimcError(f"prune-similar: partners={self.partners} must be 1 (the most "
                            "similar kept channel) or 0 (all kept channels)")
        if self.calib_samples < 1:
            raise CimcError(f"prune-similar: calib_samples={self.calib_samples} must be >= 1")

    def run(self, module: Module, ctx: PassContext) -> None:
        self.check()
        if module.attrs.get("stage", "nn") != "nn":
            raise CimcError("prune-similar works on nn-stage IR; run it before lower-to-mvm")
        names = layer_names(module)
        selected = self._selection(names)
        plans = []
        for func in module.funcs:
            plan = _Plan(analyze(func), names)
            plans.append(plan)
        candidates = [(plan, c) for plan in plans for c in plan.classes.values()
                      if not plan.an.channels.fixed(c.root)
                      and all(layer.op in selected for layer, _ in c.members)]
        if not candidates:
            raise CimcError("prune-similar: no layer can be pruned: " + _why_none(plans, selected))
        before = {layer: (layer.macs(0, 0), layer.mvm_shape())
                  for plan in plans for layer in plan.layers.values()}
        self._choose(plans, candidates)
        fits = self._fit(plans, ctx) if self.compensate else {}
        for plan in plans:
            _Rewriter(plan, fits).run()
            remove_dead_ops(plan.an.func.body)
        ctx.pruning = self._summary(plans, before, ctx, bool(fits))

    # ---- which layers
    def _selection(self, names: dict[Op, str]) -> set[Op]:
        if not self.layers.strip():
            return set(names)
        chosen: set[Op] = set()
        for item in (s.strip() for s in self.layers.split(";")):
            if not item:
                continue
            hit = {op for op, n in names.items()
                   if n == item or (item in KINDS and n.rstrip("0123456789#") == item)}
            if not hit:
                raise CimcError(f"prune-similar: layers={item!r} matches no layer; the layers "
                                f"are {', '.join(names.values()) or 'none'} (or a kind: "
                                f"{', '.join(KINDS)})")
            chosen |= hit
        return chosen

    # ---- which classes
    def _choose(self, plans: list[_Plan], candidates: list[tuple[_Plan, _Class]]) -> None:
        """Prune all-zero classes, then the rule's or the ratio's choice (module docstring)."""
        ranks: dict[_Layer, _Redundancy] = {}
        for k, (plan, c) in enumerate(candidates):
            for layer, i in c.members:
                if layer not in ranks:
                    ranks[layer] = _Redundancy(plan.an.producers[layer.op].filters, self.metric)
                ranks[layer].owner[i] = k

        def score(k: int) -> float:
            return max(ranks[layer].score(i) for layer, i in candidates[k][1].members)

        def prune(k: int) -> None:
            plan, c = candidates[k]
            plan.prune(c)
            scores[k] = math.inf
            for layer, i in c.members:
                for j in ranks[layer].remove(i):
                    other = int(ranks[layer].owner[j])
                    if other >= 0 and math.isfinite(scores[other]):
                        scores[other] = score(other)

        scores = np.array([score(k) for k in range(len(candidates))])
        for k, (plan, c) in enumerate(candidates):  # all-zero filters go in every mode
            zero = all(not plan.an.producers[layer.op].filters[i].any() for layer, i in c.members)
            if zero and plan.allows(c):
                prune(k)
        if self.ratio == 0:
            c_rule, b_rule = rule_parameters(self.metric, self.c, self.b)
            marked: dict[_Layer, np.ndarray] = {}
            for plan, c in candidates:
                for layer, _ in c.members:
                    if layer not in marked:
                        marked[layer] = self._rule_marks(plan, layer, c_rule, b_rule)
            for k in np.argsort(scores, kind="stable"):
                plan, c = candidates[k]
                if (math.isfinite(scores[k]) and all(marked[layer][i] for layer, i in c.members)
                        and plan.allows(c)):
                    prune(int(k))
            return
        total = sum(plan.total_macs() for plan in plans)
        while total - sum(p.total_macs() for p in plans) < self.ratio * total:
            k = int(scores.argmin())
            if scores[k] == math.inf:
                done = sum(plan.total_macs() for plan in plans)
                raise CimcError(
                    f"prune-similar: ratio={self.ratio} cannot be reached: at most "
                    f"{1 - done / total:.1%} of the MACs can go (each layer keeps one filter; "
                    "coupled and output channels stay)")
            plan, c = candidates[k]
            if plan.allows(c):
                prune(k)
            else:
                scores[k] = math.inf

    def _rule_marks(self, plan: _Plan, layer: _Layer, c: float, b: float) -> np.ndarray:
        filters = plan.an.producers[layer.op].filters
        marked = ~filters.any(axis=1)
        nz = np.flatnonzero(~marked)
        marked[nz] = ~similarity_mask(filters[nz], self.metric, c, b)
        return marked

    # ---- compensation
    def _fit(self, plans: list[_Plan], ctx: PassContext) -> dict[Op, list[Fit]]:
        out: dict[Op, list[Fit]] = {}
        for plan in plans:
            todo = [c for c in plan.an.consumers
                    if any(plan.is_pruned(s.chan) for s in c.layout.segs)]
            values = list(dict.fromkeys(c.op.operands[0] for c in todo))
            if not values:
                continue
            seen = observe(plan.an.func, values, plan.an.layouts, ctx.calib, self.calib_samples,
                           ctx.seed)
            for con in todo:
                out[con.op] = least_squares_fits(seen[con.op.operands[0]], plan.is_pruned,
                                                 self.partners)
        return out

    # ---- summary
    def _summary(self, plans: list[_Plan], before: dict[_Layer, tuple[int, tuple[int, ...]]],
                 ctx: PassContext, compensated: bool) -> PruneSummary:
        geo = geometry(ctx.target, what=self.name) if ctx.target is not None else None
        mode = f"ratio {self.ratio}" if self.ratio else (
            "rule: {} c={} b={}".format(self.metric, *rule_parameters(self.metric, self.c, self.b)))
        comp = "off"
        if self.compensate:
            comp = ("least squares on calibration data" if ctx.calib is not None
                    else "least squares on one seeded standard-normal batch (no calibration data)")
            if not compensated:
                comp = "nothing to compensate"
        summary = PruneSummary(self.spec(), mode, comp)
        for plan in plans:
            for layer in plan.layers.values():
                macs0, shape0 = before[layer]
                summary.layers.append(PrunedLayer(
                    layer.name, layer.kind, layer.n_out, layer.n_out - layer.removed_out,
                    macs0, layer.macs(),
                    None if geo is None else tile_count(shape0, geo),
                    None if geo is None else tile_count(layer.mvm_shape(), geo)))
            summary.groups.extend(_groups(plan))
        return summary


def _groups(plan: _Plan) -> list[ChannelGroup]:
    """Coupled or left-alone channel classes, grouped by the layers they span and their fate."""
    ch = plan.an.channels
    spans: dict[int, set[str]] = {}
    for c in plan.classes.values():
        spans[c.root] = {layer.name for layer, _ in c.members}
    for op, (lin, _) in plan.an.depthwise.items():
        for s in lin.segs:
            spans.setdefault(ch.find(s.chan), set()).add(plan.layers[op].name)
    out: dict[tuple, list[int]] = {}
    for root, names in spans.items():
        via = tuple(sorted(ch.via.get(root, ())))
        reason = ch.reason.get(root)
        if len(names) < 2 and reason is None and not via:
            continue  # one layer's own channel: the per-layer figures say it all
        pruned = root in plan.pruned
        if reason is not None:
            status = f"left alone: {reason}"
        else:
            status = "pruned jointly" if len(names) > 1 or via else "pruned"
        key = (tuple(sorted(names)), via, status if reason else "coupled")
        counts = out.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += int(pruned)
    groups = []
    for (names, via, status), (n, k) in out.items():
        if status == "coupled":
            status = "pruned jointly" if k else "kept (not redundant enough)"
        groups.append(ChannelGroup(names, via, n, k, status))
    return groups


def _why_none(plans: list[_Plan], selected: set[Op]) -> str:
    reasons = []
    for plan in plans:
        for op, layer in plan.layers.items():
            if op not in plan.an.producers:
                reasons.append(f"{layer.name} is not a prunable producer (grouped or run-time "
                               "weights)")
            elif op not in selected:
                continue
            else:
                chans = plan.an.producers[op].chans
                why = {plan.an.channels.reason.get(plan.an.channels.find(c)) for c in chans}
                why.discard(None)
                reasons.append(f"{layer.name}: " + ("; ".join(sorted(why)) or "coupled with "
                                                    "layers outside the selection"))
    return ", ".join(reasons) or "the module has no conv, gemm or matmul with constant weights"
