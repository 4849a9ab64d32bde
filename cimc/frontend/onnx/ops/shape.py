"""Shape manipulation: Shape, Reshape, Flatten, Squeeze, Unsqueeze, Expand, Range, Tile,
Transpose, Concat, Split, Slice, Pad, Gather, Resize.

Every value-dependent shape is resolved here, at import: shape-giving operands (Reshape's shape,
Slice's starts/ends, Pad's pads, Resize's scales/sizes, ...) must be known at compile time
(constants, or computed from constants and static shapes, which ``ctx.const`` folds), and the
nn ops get them as attributes with every default written out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cimc.frontend.onnx.registry import converter
from cimc.ops.shape import INT64_MAX

# ----------------------------------------------------------------------------- helpers


def _const_ints(ctx, node, i: int, what: str) -> list[int] | None:
    """Input ``i`` as a list of ints; None when absent; an error when computed at run time."""
    if ctx.input(node, i) is None:
        return None
    value = ctx.const(node, i)
    if value is None:
        raise ctx.error(
            f"input #{i} ({what}) is computed at run time; cimc needs it at compile time. Make it "
            f"a constant (an initializer), or give static input shapes so it can be folded "
            f"(--input-shape)"
        )
    if value.dtype.kind not in "iu":
        raise ctx.error(f"input #{i} ({what}) must hold integers, got {value.dtype}")
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _const_floats(ctx, node, i: int, what: str) -> list[float] | None:
    if ctx.input(node, i) is None:
        return None
    value = ctx.const(node, i)
    if value is None:
        raise ctx.error(
            f"input #{i} ({what}) is computed at run time; cimc needs it at compile time. Make it "
            f"a constant (an initializer)"
        )
    return [float(v) for v in np.asarray(value, np.float32).reshape(-1)]


def _axis(ctx, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ctx.error(f"{what} {axis} is out of range for an input of rank {rank}")
    return axis % rank


def _axes(ctx, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    norm = [_axis(ctx, int(a), rank, what) for a in axes]
    if len(set(norm)) != len(norm):
        raise ctx.error(f"{what} {list(axes)} name the same axis twice")
    return norm


def _reshape(ctx, x, shape: Sequence[int]):
    return ctx.emit1("nn.reshape", [x], {"shape": [int(d) for d in shape]})


def resolve_reshape(
    ctx, in_shape: tuple[int, ...], spec: Sequence[int], allowzero: bool
) -> list[int]:
    """ONNX Reshape's target shape with 0 (copy the input's dim, unless allowzero) and -1 (infer)
    resolved."""
    numel = math.prod(in_shape)
    out: list[int] = []
    infer_at = None
    for i, d in enumerate(spec):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise ctx.error(
                    f"shape {list(spec)}: 0 at position {i} copies a dimension that the input "
                    f"{list(in_shape)} lacks"
                )
            out.append(in_shape[i])
        elif d == -1:
            if infer_at is not None:
                raise ctx.error(f"shape {list(spec)} has more than one -1")
            infer_at = i
            out.append(1)
        elif d < 0:
            raise ctx.error(f"shape {list(spec)} has the invalid dimension {d}")
        else:
            out.append(d)
    if infer_at is not None:
        if allowzero and 0 in spec:
            raise ctx.error(
                f"shape {list(spec)} has both -1 and 0 with allowzero=1, which ONNX forbids"
            )
        known = math.prod(out)
        if known == 0 or numel % known:
            raise ctx.error(f"cannot reshape an input of shape {list(in_shape)} to {list(spec)}")
        out[infer_at] = numel // known
    if math.prod(out) != numel:
        raise ctx.error(
            f"cannot reshape an input of shape {list(in_shape)} ({numel} elements) to {list(spec)} "
            f"({math.prod(out)} elements)"
        )
    return out


# ----------------------------------------------------------------------------- Shape


@converter("Shape", since=1)
def shape_1(ctx, node, attrs):
    """nn.shape (the whole shape; folded to a constant wherever it is used as a shape)"""
    x = ctx.input(node, 0)
    return [ctx.emit1("nn.shape", [x], {"start": 0, "end": x.type.rank})]


@converter("Shape", since=15)
def shape_15(ctx, node, attrs):
    """nn.shape {start, end} (clamped as ONNX does)"""
    x = ctx.input(node, 0)
    rank = x.type.rank
    start, end = int(attrs.get("start", 0)), int(attrs.get("end", rank))
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return [ctx.emit1("nn.shape", [x], {"start": start, "end": max(start, end)})]


# ----------------------------------------------------------------------------- Reshape family


@converter("Reshape", since=5)
def reshape_5(ctx, node, attrs):
    """nn.reshape (shape input must be known at compile time; 0, -1 and allowzero resolved)"""
    x = ctx.input(node, 0)
    spec = _const_ints(ctx, node, 1, "shape")
    if spec is None:
        raise ctx.error("Reshape needs its shape input")
    allowzero = bool(attrs.get("allowzero", 0))
    return [_reshape(ctx, x, resolve_reshape(ctx, x.type.shape, spec, allowzero))]


@converter("Flatten", since=1)
def flatten(ctx, node, attrs):
    """nn.reshape to 2-D [prod(dims[:axis]), prod(dims[axis:])]"""
    x = ctx.input(node, 0)
    rank = x.type.rank
    axis = int(attrs.get("axis", 1))
    if not -rank <= axis <= rank:
        raise ctx.error(f"axis {axis} is out of range [-{rank}, {rank}]")
    axis = axis + rank if axis < 0 else axis
    dims = x.type.shape
    return [_reshape(ctx, x, [math.prod(dims[:axis]), math.prod(dims[axis:])])]


def _squeeze(ctx, x, axes: Sequence[int] | None):
    dims = x.type.shape
    if axes is None or len(axes) == 0:
        drop = {i for i, d in enumerate(dims) if d == 1}
    else:
        drop = set(_axes(ctx, axes, len(dims)))
        bad = [a for a in sorted(drop) if dims[a] != 1]
        if bad:
            raise ctx.error(f"cannot squeeze axes {bad} of shape {list(dims)}: their size is not 1")
    return _reshape(ctx, x, [d for i, d in enumerate(dims) if i not in drop])


@converter("Squeeze", since=1)
def squeeze_1(ctx, node, attrs):
    """nn.reshape (opset 1 `axes` attribute; no axes: every dimension of size 1)"""
    return [_squeeze(ctx, ctx.input(node, 0), attrs.get("axes"))]


@converter("Squeeze", since=13)
def squeeze_13(ctx, node, attrs):
    """nn.reshape (`axes` input, known at compile time; absent: every dimension of size 1)"""
    return [_squeeze(ctx, ctx.input(node, 0), _const_ints(ctx, node, 1, "axes"))]


def _unsqueeze(ctx, x, axes: Sequence[int] | None):
    if not axes:
        raise ctx.error("Unsqueeze needs a non-empty list of axes")
    rank = x.type.rank + len(axes)
    where = set(_axes(ctx, axes, rank))
    dims = iter(x.type.shape)
    return _reshape(ctx, x, [1 if i in where else next(dims) for i in range(rank)])


@converter("Unsqueeze", since=1)
def unsqueeze_1(ctx, node, attrs):
    """nn.reshape (opset 1 `axes` attribute, axes of the output)"""
    return [_unsqueeze(ctx, ctx.input(node, 0), attrs.get("axes"))]


@converter("Unsqueeze", since=13)
def unsqueeze_13(ctx, node, attrs):
    """nn.reshape (`axes` input, known at compile time)"""
    return [_unsqueeze(ctx, ctx.input(node, 0), _const_ints(ctx, node, 1, "axes"))]


# ----------------------------------------------------------------------------- Expand, Range


@converter("Expand", since=8)
def expand(ctx, node, attrs):
    """nn.expand (shape input known at compile time; resolved to the broadcast result shape)"""
    x = ctx.input(node, 0)
    spec = _const_ints(ctx, node, 1, "shape")
    if spec is None:
        raise ctx.error("Expand needs its shape input")
    rank = max(len(spec), x.type.rank)
    a = (1,) * (rank - x.type.rank) + x.type.shape
    b = (1,) * (rank - len(spec)) + tuple(spec)
    if any(p != q and 1 not in (p, q) for p, q in zip(a, b)) or any(d < 0 for d in spec):
        raise ctx.error(f"the input of shape {list(x.type.shape)} cannot be expanded to {spec}")
    out = [q if p == 1 else p for p, q in zip(a, b)]
    return [ctx.emit1("nn.expand", [x], {"shape": out})]


@converter("Tile", since=6)
def tile(ctx, node, attrs):
    """nn.tile (repeats input known at compile time)"""
    x = ctx.input(node, 0)
    reps = _const_ints(ctx, node, 1, "repeats")
    if reps is None or len(reps) != x.type.rank or any(r < 1 for r in reps):
        raise ctx.error(f"repeats {reps} must hold one positive count per axis of the input "
                        f"(rank {x.type.rank})")
    return [ctx.emit1("nn.tile", [x], {"repeats": reps})]


# The most elements a Range may fold into (its output becomes a constant of the IR).
RANGE_LIMIT = 1 << 24


def _scalar(ctx, node, i: int, what: str) -> np.ndarray:
    value = ctx.const(node, i) if ctx.input(node, i) is not None else None
    if value is None:
        raise ctx.error(
            f"input #{i} ({what}) is computed at run time; cimc needs Range's start, limit and "
            "delta at compile time (they set the length of its output). Give static input "
            "shapes (--input-shape) so they can be folded"
        )
    if value.size != 1:
        raise ctx.error(f"input #{i} ({what}) must be a scalar, got shape {list(value.shape)}")
    return value.reshape(())


@converter("Range", since=11)
def range_(ctx, node, attrs):
    """nn.constant (start, limit and delta known at compile time; onnxruntime's arithmetic)"""
    start, limit, delta = (_scalar(ctx, node, i, w) for i, w in
                           enumerate(("start", "limit", "delta")))
    dtype = start.dtype
    if float(delta) == 0:
        raise ctx.error("delta is 0")
    # onnxruntime: n = ceil((limit - start) / delta) with the difference taken in the dtype,
    # and each value the previous one plus delta (accumulated in the dtype)
    with np.errstate(over="ignore"):
        diff = np.asarray(limit - start, dtype)
    n = max(math.ceil(float(diff) / float(delta)), 0)
    if n > RANGE_LIMIT:
        raise ctx.error(f"Range from {start} to {limit} by {delta} has {n} elements, more than "
                        f"cimc folds into a constant ({RANGE_LIMIT})")
    steps = np.full(n, delta, dtype)
    if n:
        steps[0] = start
    return [ctx.constant(np.cumsum(steps, dtype=dtype))]


# ----------------------------------------------------------------------------- Transpose, Concat


@converter("Transpose", since=1)
def transpose(ctx, node, attrs):
    """nn.transpose (default perm: the axes reversed)"""
    x = ctx.input(node, 0)
    rank = x.type.rank
    perm = [int(p) for p in attrs.get("perm", range(rank - 1, -1, -1))]
    if sorted(perm) != list(range(rank)):
        raise ctx.error(f"perm {perm} is not a permutation of the {rank} axes of the input")
    return [ctx.emit1("nn.transpose", [x], {"perm": perm})]


@converter("Concat", since=1)
def concat(ctx, node, attrs):
    """nn.concat (negative axis resolved)"""
    xs = [ctx.input(node, i) for i in range(len(node.input))]
    xs = [x for x in xs if x is not None]
    if not xs:
        raise ctx.error("Concat needs at least one input")
    axis = _axis(ctx, int(attrs.get("axis", 1)), xs[0].type.rank)
    return [ctx.emit1("nn.concat", xs, {"axis": axis})]


# ----------------------------------------------------------------------------- Split


def _split(ctx, node, attrs, sizes: Sequence[int] | None, num_outputs: int | None = None):
    x = ctx.input(node, 0)
    axis = _axis(ctx, int(attrs.get("axis", 0)), x.type.rank)
    dim = x.type.shape[axis]
    n = len(node.output)
    if sizes is not None and len(sizes) > 0:
        sizes = [int(s) for s in sizes]
        if len(sizes) != n or sum(sizes) != dim or any(s < 0 for s in sizes):
            raise ctx.error(
                f"split sizes {sizes} must be {n} non-negative numbers adding up to dimension "
                f"{axis} of the input ({dim})"
            )
    elif num_outputs is not None:
        if num_outputs != n:
            raise ctx.error(f"num_outputs={num_outputs} but the node has {n} outputs")
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sizes[-1] < 0:
            raise ctx.error(f"dimension {axis} ({dim}) cannot be split into {n} chunks of {chunk}")
    else:
        if dim % n:
            raise ctx.error(
                f"dimension {axis} ({dim}) does not split into {n} equal parts; give 'split'"
            )
        sizes = [dim // n] * n
    op = ctx.emit("nn.split", [x], {"axis": axis, "sizes": sizes})
    return list(op.results)


@converter("Split", since=2)
def split_2(ctx, node, attrs):
    """nn.split (`split` attribute; default equal parts)"""
    return _split(ctx, node, attrs, attrs.get("split"))


@converter("Split", since=13)
def split_13(ctx, node, attrs):
    """nn.split (`split` input, known at compile time; default equal parts)"""
    return _split(ctx, node, attrs, _const_ints(ctx, node, 1, "split"))


@converter("Split", since=18)
def split_18(ctx, node, attrs):
    """nn.split (`split` input or `num_outputs`: chunks of ceil(dim/n), the last one smaller)"""
    sizes = _const_ints(ctx, node, 1, "split")
    num = attrs.get("num_outputs")
    if sizes and num is not None:
        raise ctx.error("give either the 'split' input or the 'num_outputs' attribute, not both")
    if not sizes and num is None:
        raise ctx.error("Split-18 needs the 'split' input or the 'num_outputs' attribute")
    return _split(ctx, node, attrs, sizes, None if sizes else int(num))


# ----------------------------------------------------------------------------- Slice


def _clip_i64(v: int) -> int:
    """Clamp to the int64 range (Slice-1 attributes are python ints of any size)."""
    return max(min(int(v), INT64_MAX), -INT64_MAX - 1)


def _slice(ctx, node, starts, ends, axes, steps):
    x = ctx.input(node, 0)
    rank = x.type.rank
    if starts is None or ends is None or len(starts) != len(ends):
        raise ctx.error(f"starts {starts} and ends {ends} must be given and have the same length")
    axes = list(range(len(starts))) if axes is None else _axes(ctx, axes, rank)
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    if not len(axes) == len(steps) == len(starts):
        raise ctx.error(
            f"starts, ends, axes and steps must have the same length (got {len(starts)}, "
            f"{len(ends)}, {len(axes)}, {len(steps)})"
        )
    if 0 in steps:
        raise ctx.error(f"steps {steps} contain 0")
    attrs = {
        "starts": [_clip_i64(s) for s in starts],
        "ends": [_clip_i64(e) for e in ends],
        "axes": axes,
        "steps": steps,
    }
    return [ctx.emit1("nn.slice", [x], attrs)]


@converter("Slice", since=1)
def slice_1(ctx, node, attrs):
    """nn.slice (opset 1 `starts`/`ends`/`axes` attributes)"""
    return _slice(ctx, node, attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None)


@converter("Slice", since=10)
def slice_10(ctx, node, attrs):
    """nn.slice (starts/ends/axes/steps inputs, known at compile time; ONNX clamping)"""
    return _slice(
        ctx,
        node,
        _const_ints(ctx, node, 1, "starts"),
        _const_ints(ctx, node, 2, "ends"),
        _const_ints(ctx, node, 3, "axes"),
        _const_ints(ctx, node, 4, "steps"),
    )


# ----------------------------------------------------------------------------- Pad


def _pad(ctx, node, pads, mode: str, value: float, axes=None):
    x = ctx.input(node, 0)
    rank = x.type.rank
    if mode == "wrap":
        raise ctx.error("Pad mode 'wrap' is not supported; use 'constant', 'reflect' or 'edge'")
    if mode not in ("constant", "reflect", "edge"):
        raise ctx.error(f"unknown Pad mode {mode!r}; expected 'constant', 'reflect' or 'edge'")
    if pads is None:
        raise ctx.error("Pad needs pads")
    axes = list(range(rank)) if axes is None else _axes(ctx, axes, rank)
    if len(pads) != 2 * len(axes):
        raise ctx.error(
            f"pads {list(pads)} must have two entries per padded axis ({2 * len(axes)})"
        )
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a] = int(pads[i])
        full[a + rank] = int(pads[i + len(axes)])
    return [ctx.emit1("nn.pad", [x], {"pads": full, "mode": mode, "value": float(value)})]


@converter("Pad", since=2)
def pad_2(ctx, node, attrs):
    """nn.pad (`pads`/`mode`/`value` attributes)"""
    return _pad(
        ctx, node, attrs.get("pads"), attrs.get("mode", "constant"), attrs.get("value", 0.0)
    )


@converter("Pad", since=11)
def pad_11(ctx, node, attrs):
    """nn.pad (pads, constant_value and, from opset 18, axes inputs, known at compile time)"""
    value = 0.0
    if ctx.input(node, 2) is not None:
        v = ctx.const(node, 2)
        if v is None:
            raise ctx.error(
                "input #2 (constant_value) is computed at run time; it must be a constant"
            )
        if v.size != 1:
            raise ctx.error(f"constant_value must be a scalar, got shape {list(v.shape)}")
        value = float(v.reshape(-1)[0])
    pads = _const_ints(ctx, node, 1, "pads")
    axes = _const_ints(ctx, node, 3, "axes")
    return _pad(ctx, node, pads, attrs.get("mode", "constant"), value, axes)


# ----------------------------------------------------------------------------- Gather


@converter("Gather", since=1)
def gather(ctx, node, attrs):
    """nn.gather (negative indices allowed; constant indices range-checked at import)"""
    x, idx = ctx.input(node, 0), ctx.input(node, 1)
    axis = _axis(ctx, int(attrs.get("axis", 0)), x.type.rank)
    known = ctx.const(node, 1)
    dim = x.type.shape[axis]
    if known is not None and known.size and (known.min() < -dim or known.max() >= dim):
        raise ctx.error(
            f"indices {known.reshape(-1).tolist()} out of range for axis {axis} of size {dim}"
        )
    return [ctx.emit1("nn.gather", [x, idx], {"axis": axis})]


# ----------------------------------------------------------------------------- Resize


def _resize_from_scales(ctx, dims, axes, scales):
    if len(scales) != len(axes):
        raise ctx.error(f"scales {scales} must have one entry per resized axis ({len(axes)})")
    full = [1.0] * len(dims)
    for a, s in zip(axes, scales):
        if not s > 0:
            raise ctx.error(f"scales {scales} must be positive")
        full[a] = s
    # output size = floor(scale * dim), in float32 as onnxruntime computes it
    sizes = [int(np.float32(s) * np.float32(d)) for s, d in zip(full, dims)]
    return full, sizes


def _resize_from_sizes(ctx, dims, axes, sizes, policy: str):
    if len(sizes) != len(axes):
        raise ctx.error(f"sizes {sizes} must have one entry per resized axis ({len(axes)})")
    if any(s <= 0 for s in sizes):
        raise ctx.error(f"sizes {sizes} must be positive")
    out = list(dims)
    # the scale that maps coordinates is the float32 ratio, as onnxruntime computes it
    ratios = {a: float(np.float32(s) / np.float32(dims[a])) for a, s in zip(axes, sizes)}
    if policy == "stretch":
        for a, s in zip(axes, sizes):
            out[a] = s
    elif policy in ("not_larger", "not_smaller"):
        # onnxruntime picks the policy's scale among the float32 ratios and rounds scale * dim
        pick = min if policy == "not_larger" else max
        scale = pick(np.float32(s) / np.float32(dims[a]) for a, s in zip(axes, sizes))
        ratios = {a: float(scale) for a in axes}
        for a in axes:
            out[a] = math.floor(float(scale * np.float32(dims[a])) + 0.5)
    else:
        raise ctx.error(f"unknown keep_aspect_ratio_policy {policy!r}")
    full = [ratios.get(a, 1.0) for a in range(len(dims))]
    return full, out


def _resize(ctx, node, attrs, scales, sizes, ctm: str, nearest_mode: str):
    x = ctx.input(node, 0)
    dims = x.type.shape
    mode = attrs.get("mode", "nearest")
    if mode == "cubic":
        raise ctx.error(
            "Resize mode 'cubic' is not supported; cimc resizes with 'nearest' or 'linear'"
        )
    if mode not in ("nearest", "linear"):
        raise ctx.error(f"unknown Resize mode {mode!r}; expected 'nearest' or 'linear'")
    if ctm == "tf_crop_and_resize":
        raise ctx.error(
            "coordinate_transformation_mode 'tf_crop_and_resize' (resize of a region of "
            "interest) is not supported; use another coordinate_transformation_mode"
        )
    axes = _axes(ctx, attrs["axes"], len(dims)) if "axes" in attrs else list(range(len(dims)))
    scales = scales or None
    sizes = sizes or None
    if scales is not None and sizes is not None:
        raise ctx.error("Resize takes either scales or sizes, not both")
    if scales is not None:
        full_scales, out = _resize_from_scales(ctx, dims, axes, scales)
    elif sizes is not None:
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        full_scales, out = _resize_from_sizes(ctx, dims, axes, sizes, policy)
    else:
        raise ctx.error("Resize needs scales or sizes")
    if mode == "linear" and attrs.get("antialias", 0) and any(s < 1 for s in full_scales):
        raise ctx.error("Resize with antialias=1 while downsampling is not supported")
    if nearest_mode == "simple" and mode == "linear":
        nearest_mode = "round_prefer_floor"  # unused by linear; written in its canonical form
    elif nearest_mode == "simple":
        if all(s >= 1 for s in full_scales):
            nearest_mode = "floor"
        elif all(s <= 1 for s in full_scales):
            nearest_mode = "ceil"
    attrs_out = {
        "mode": mode,
        "coordinate_transformation_mode": ctm,
        "nearest_mode": nearest_mode,
        "scales": [float(s) for s in full_scales],
        "sizes": out,
        "cubic_coeff_a": float(attrs.get("cubic_coeff_a", -0.75)),
    }
    return [ctx.emit1("nn.resize", [x], attrs_out)]


@converter("Resize", since=10)
def resize_10(ctx, node, attrs):
    """nn.resize (opset 10: scales input; asymmetric coordinates, onnxruntime's nearest rounding)"""
    scales = _const_floats(ctx, node, 1, "scales")
    return _resize(ctx, node, attrs, scales, None, "asymmetric", "simple")


@converter("Resize", since=11)
def resize_11(ctx, node, attrs):
    """nn.resize (nearest/linear; constant scales or sizes; opset-18 axes and aspect policy)

    roi is ignored (tf_crop_and_resize is refused); cubic and antialiased downsampling are refused.
    """
    scales = _const_floats(ctx, node, 2, "scales")
    sizes = _const_ints(ctx, node, 3, "sizes")
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = attrs.get("nearest_mode", "round_prefer_floor")
    return _resize(ctx, node, attrs, scales, sizes, ctm, nearest_mode)
