"""Shape manipulation: shape, reshape, expand, tile, transpose, concat, split, slice, pad, gather,
resize.

Semantics are ONNX's (see onnx/reference/ops and the operator spec); attributes are fully
resolved by the frontend (no 0/-1 in reshape shapes, explicit axes, full-rank pads, resize
scales *and* output sizes), so every op here is a pure function of its operands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cimc.errors import CimcError, VerifyError
from cimc.ir.types import TensorType
from cimc.ops.registry import broadcast_shapes, define, normalize_axis

INT64_MAX = 2**63 - 1

# ----------------------------------------------------------------------------- helpers


def _ints(attrs: dict[str, Any], name: str, op: str) -> list[int]:
    value = attrs[name]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        raise VerifyError(f"{op}: attribute '{name}' must be a list of integers, got {value!r}")
    return [int(v) for v in value]


def _int(attrs: dict[str, Any], name: str, op: str) -> int:
    value = attrs[name]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise VerifyError(f"{op}: attribute '{name}' must be an integer, got {value!r}")
    return int(value)


def _floats(attrs: dict[str, Any], name: str, op: str) -> list[float]:
    value = attrs[name]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in value
    ):
        raise VerifyError(f"{op}: attribute '{name}' must be a list of numbers, got {value!r}")
    return [float(v) for v in value]


def _choice(attrs: dict[str, Any], name: str, op: str, allowed: Sequence[str]) -> str:
    value = attrs[name]
    if value not in allowed:
        raise VerifyError(
            f"{op}: attribute '{name}' is {value!r}; "
            f"expected one of {', '.join(map(repr, allowed))}"
        )
    return value


def _clamp_range(rank: int, start: int, end: int) -> tuple[int, int]:
    """ONNX Shape's start/end: negative counts from the back, then clamp to [0, rank]."""
    start = start + rank if start < 0 else start
    end = end + rank if end < 0 else end
    start = min(max(start, 0), rank)
    end = min(max(end, 0), rank)
    return start, max(end, start)


# ----------------------------------------------------------------------------- nn.shape


def _shape_infer(attrs, x: TensorType) -> TensorType:
    start, end = _clamp_range(
        x.rank, _int(attrs, "start", "nn.shape"), _int(attrs, "end", "nn.shape")
    )
    return TensorType((end - start,), "i64")


@define(
    "nn.shape",
    optional={"start": 0, "end": INT64_MAX},
    infer=_shape_infer,
    summary="The dimensions start..end of x's shape as a 1-D i64 tensor (ONNX clamping).",
)
def shape(attrs, x):
    start, end = _clamp_range(x.ndim, int(attrs["start"]), int(attrs["end"]))
    return np.asarray(x.shape[start:end], dtype=np.int64).reshape(end - start)


# ----------------------------------------------------------------------------- nn.reshape


def _reshape_infer(attrs, x: TensorType) -> TensorType:
    dims = _ints(attrs, "shape", "nn.reshape")
    if any(d < 0 for d in dims):
        raise VerifyError(
            f"nn.reshape: shape {dims} must be fully resolved (no -1); "
            "the frontend resolves 0 and -1"
        )
    out = TensorType(tuple(dims), x.dtype)
    if out.numel != x.numel:
        raise VerifyError(
            f"nn.reshape: cannot reshape {x} ({x.numel} elements) to {dims} ({out.numel} elements)"
        )
    return out


@define(
    "nn.reshape",
    attrs=("shape",),
    infer=_reshape_infer,
    summary="Row-major reshape to a fully resolved shape (Flatten, Squeeze, Unsqueeze use it too).",
)
def reshape(attrs, x):
    return np.reshape(x, tuple(int(d) for d in attrs["shape"]))


# ----------------------------------------------------------------------------- nn.expand


def _expand_infer(attrs, x: TensorType) -> TensorType:
    dims = _ints(attrs, "shape", "nn.expand")
    try:
        ok = broadcast_shapes(x.shape, tuple(dims)) == tuple(dims)
    except VerifyError:
        ok = False
    if not ok:
        raise VerifyError(
            f"nn.expand: {x} does not broadcast to the shape {dims} (the frontend resolves "
            "ONNX Expand's shape to the full result shape)"
        )
    return x.with_shape(tuple(dims))


@define(
    "nn.expand",
    attrs=("shape",),
    infer=_expand_infer,
    summary="Broadcast x to a fully resolved shape (numpy broadcasting; ONNX Expand).",
)
def expand(attrs, x):
    return np.array(np.broadcast_to(x, tuple(int(d) for d in attrs["shape"])))


# ----------------------------------------------------------------------------- nn.tile


def _tile_infer(attrs, x: TensorType) -> TensorType:
    reps = _ints(attrs, "repeats", "nn.tile")
    if len(reps) != x.rank or any(r < 1 for r in reps):
        raise VerifyError(f"nn.tile: repeats {reps} must hold one positive count per axis of {x}")
    return x.with_shape(tuple(d * r for d, r in zip(x.shape, reps)))


@define(
    "nn.tile",
    attrs=("repeats",),
    infer=_tile_infer,
    summary="Repeat x along each axis (numpy.tile; ONNX Tile).",
)
def tile(attrs, x):
    return np.tile(x, tuple(int(r) for r in attrs["repeats"]))


# ----------------------------------------------------------------------------- nn.transpose


def _transpose_infer(attrs, x: TensorType) -> TensorType:
    perm = _ints(attrs, "perm", "nn.transpose")
    if sorted(perm) != list(range(x.rank)):
        raise VerifyError(
            f"nn.transpose: perm {perm} is not a permutation of 0..{x.rank - 1} for {x}"
        )
    return x.with_shape(tuple(x.shape[p] for p in perm))


@define(
    "nn.transpose",
    attrs=("perm",),
    infer=_transpose_infer,
    summary="Permute the axes: output axis i is input axis perm[i].",
)
def transpose(attrs, x):
    return np.transpose(x, [int(p) for p in attrs["perm"]])


# ----------------------------------------------------------------------------- nn.concat


def _concat_infer(attrs, *xs: TensorType) -> TensorType:
    first = xs[0]
    axis = normalize_axis(_int(attrs, "axis", "nn.concat"), first.rank, "nn.concat: axis")
    total = 0
    for i, t in enumerate(xs):
        if t.dtype != first.dtype:
            raise VerifyError(
                f"nn.concat: operand #{i} is {t}, but operand #0 is {first} (dtypes differ)"
            )
        same = t.rank == first.rank and all(
            a == b for k, (a, b) in enumerate(zip(t.shape, first.shape)) if k != axis
        )
        if not same:
            raise VerifyError(
                f"nn.concat: operand #{i} {t} does not match operand #0 {first} outside axis {axis}"
            )
        total += t.shape[axis]
    return first.with_shape(first.shape[:axis] + (total,) + first.shape[axis + 1 :])


@define(
    "nn.concat",
    operands=(1, None),
    attrs=("axis",),
    infer=_concat_infer,
    summary="Join the operands along axis.",
)
def concat(attrs, *xs):
    return np.concatenate(xs, axis=int(attrs["axis"]))


# ----------------------------------------------------------------------------- nn.split


def _split_infer(attrs, x: TensorType) -> list[TensorType]:
    axis = normalize_axis(_int(attrs, "axis", "nn.split"), x.rank, "nn.split: axis")
    sizes = _ints(attrs, "sizes", "nn.split")
    if not sizes or any(s < 0 for s in sizes) or sum(sizes) != x.shape[axis]:
        raise VerifyError(
            f"nn.split: sizes {sizes} must be non-negative and add up to dimension {axis} of {x} "
            f"({x.shape[axis]})"
        )
    return [x.with_shape(x.shape[:axis] + (s,) + x.shape[axis + 1 :]) for s in sizes]


@define(
    "nn.split",
    attrs=("axis", "sizes"),
    infer=_split_infer,
    summary="Cut x along axis into consecutive pieces of the given sizes (one result each).",
)
def split(attrs, x):
    axis = int(attrs["axis"])
    bounds = np.cumsum([int(s) for s in attrs["sizes"]])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


# ----------------------------------------------------------------------------- nn.slice


def last_axis_range(attrs: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(start, stop) when an ``nn.slice`` of ``attrs`` on an operand of ``shape`` is
    ``x[..., start:stop]`` with ``0 <= start <= stop <= shape[-1]``, else None."""
    rank = len(shape)
    if rank == 0 or len(attrs["axes"]) != 1 or attrs["steps"] != [1]:
        return None
    if attrs["axes"][0] % rank != rank - 1:
        return None
    start, stop = attrs["starts"][0], attrs["ends"][0]
    if not 0 <= start <= stop <= shape[-1]:
        return None
    return start, stop


def _slices(attrs, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Per-axis python slices; python's slice clamping is exactly ONNX's (start/end counted from
    the back when negative, clamped to [0, dim] for positive and [-1, dim-1] for negative steps)."""
    starts = _ints(attrs, "starts", "nn.slice")
    ends = _ints(attrs, "ends", "nn.slice")
    axes = _ints(attrs, "axes", "nn.slice")
    steps = _ints(attrs, "steps", "nn.slice")
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise VerifyError(
            f"nn.slice: starts, ends, axes and steps must have the same length "
            f"(got {len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})"
        )
    out = [slice(None)] * len(shape)
    seen: set[int] = set()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        a = normalize_axis(axis, len(shape), "nn.slice: axis")
        if a in seen:
            raise VerifyError(f"nn.slice: axis {axis} is given twice in axes {axes}")
        seen.add(a)
        if step == 0:
            raise VerifyError("nn.slice: a step of 0 is not allowed")
        out[a] = slice(start, end, step)
    return tuple(out)


def _slice_infer(attrs, x: TensorType) -> TensorType:
    sl = _slices(attrs, x.shape)
    return x.with_shape(tuple(len(range(d)[s]) for d, s in zip(x.shape, sl)))


@define(
    "nn.slice",
    attrs=("starts", "ends", "axes", "steps"),
    infer=_slice_infer,
    summary="Strided slice with ONNX semantics (negative indices and steps, clamped bounds).",
)
def slice_(attrs, x):
    return np.ascontiguousarray(x[_slices(attrs, x.shape)])


# ----------------------------------------------------------------------------- nn.pad

PAD_MODES = ("constant", "reflect", "edge")


def _pad_widths(attrs, x: TensorType) -> list[tuple[int, int]]:
    pads = _ints(attrs, "pads", "nn.pad")
    if len(pads) != 2 * x.rank:
        raise VerifyError(
            f"nn.pad: pads {pads} must have 2*rank = {2 * x.rank} entries "
            f"(all begins, then all ends) for {x}"
        )
    return [(pads[i], pads[i + x.rank]) for i in range(x.rank)]


def _pad_infer(attrs, x: TensorType) -> TensorType:
    mode = _choice(attrs, "mode", "nn.pad", PAD_MODES)
    if not isinstance(attrs["value"], (int, float)) or isinstance(attrs["value"], bool):
        raise VerifyError(f"nn.pad: attribute 'value' must be a number, got {attrs['value']!r}")
    shape = []
    for axis, ((b, e), d) in enumerate(zip(_pad_widths(attrs, x), x.shape)):
        kept = d + min(b, 0) + min(e, 0)
        if kept < 0:
            raise VerifyError(
                f"nn.pad: negative pads ({b}, {e}) remove more than dimension {axis} ({d})"
            )
        grow = max(b, 0) + max(e, 0)
        if grow and mode == "reflect" and max(b, e) >= kept:
            raise VerifyError(
                f"nn.pad: reflect padding ({b}, {e}) on axis {axis} needs a dimension larger "
                f"than the pad (it is {kept})"
            )
        if grow and mode == "edge" and kept == 0:
            raise VerifyError(f"nn.pad: edge padding of the empty axis {axis} is not defined")
        shape.append(kept + grow)
    return x.with_shape(tuple(shape))


@define(
    "nn.pad",
    attrs=("pads",),
    optional={"mode": "constant", "value": 0.0},
    infer=_pad_infer,
    summary="Pad (or crop, with negative pads) each axis; pads = [begins..., ends...].",
)
def pad(attrs, x):
    widths = _pad_widths(attrs, TensorType.of(x))
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for (b, e), d in zip(widths, x.shape))
    x = x[crop]
    grow = [(max(b, 0), max(e, 0)) for b, e in widths]
    if attrs["mode"] == "constant":
        value = np.asarray(attrs["value"]).astype(x.dtype)
        return np.pad(x, grow, mode="constant", constant_values=value)
    return np.pad(x, grow, mode=attrs["mode"])


# ----------------------------------------------------------------------------- nn.gather


def _gather_infer(attrs, x: TensorType, indices: TensorType) -> TensorType:
    axis = normalize_axis(_int(attrs, "axis", "nn.gather"), x.rank, "nn.gather: axis")
    if indices.dtype not in ("i64", "i32", "i16", "i8", "u8"):
        raise VerifyError(f"nn.gather: indices must be integers, got {indices}")
    return x.with_shape(x.shape[:axis] + indices.shape + x.shape[axis + 1 :])


@define(
    "nn.gather",
    operands=2,
    attrs=("axis",),
    infer=_gather_infer,
    summary="Take entries of x along axis at the given indices (negative ones count from the end).",
)
def gather(attrs, x, indices):
    axis = int(attrs["axis"]) % x.ndim
    dim = x.shape[axis]
    idx = np.asarray(indices).astype(np.int64)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise CimcError(
            f"nn.gather: indices {idx.min()}..{idx.max()} out of range "
            f"for axis {axis} of size {dim}"
        )
    return np.take(x, np.where(idx < 0, idx + dim, idx), axis=axis)


# ----------------------------------------------------------------------------- nn.resize

RESIZE_MODES = ("nearest", "linear")
COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
)
# "simple" is ONNX Resize-10's rounding (as onnxruntime implements it): ceil on axes that shrink,
# floor on the others.
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def _resize_infer(attrs, x: TensorType) -> TensorType:
    mode = attrs["mode"]
    if mode == "cubic":
        raise VerifyError("nn.resize: mode 'cubic' is not supported; use 'nearest' or 'linear'")
    _choice(attrs, "mode", "nn.resize", RESIZE_MODES)
    _choice(attrs, "coordinate_transformation_mode", "nn.resize", COORDINATE_MODES)
    _choice(attrs, "nearest_mode", "nn.resize", NEAREST_MODES)
    scales = _floats(attrs, "scales", "nn.resize")
    sizes = _ints(attrs, "sizes", "nn.resize")
    if len(scales) != x.rank or len(sizes) != x.rank:
        raise VerifyError(
            f"nn.resize: scales {scales} and sizes {sizes} must each have one entry per axis of {x}"
        )
    if any(not s > 0 for s in scales) or any(s < 0 for s in sizes):
        raise VerifyError(
            f"nn.resize: scales {scales} must be positive and sizes {sizes} non-negative"
        )
    if mode == "linear" and not x.dtype.startswith("f"):
        raise VerifyError(f"nn.resize: linear mode needs a floating-point input, got {x}")
    return x.with_shape(tuple(sizes))


def _source_coords(mode: str, out_len: int, in_len: int, scale: float) -> np.ndarray:
    """Coordinate in the input of each output position along one axis, in float32 arithmetic
    with the float32 scale, step by step as onnxruntime computes it (nearest-neighbour picks
    depend on the last bit)."""
    f32 = np.float32
    y = np.arange(out_len, dtype=f32)
    s, half = f32(scale), f32(0.5)
    if mode == "asymmetric":
        return y / s
    if mode == "half_pixel":
        return (y + half) / s - half
    if mode == "pytorch_half_pixel":
        return (y + half) / s - half if out_len > 1 else np.zeros(out_len, f32)
    if mode == "tf_half_pixel_for_nn":
        return (y + half) / s
    if mode == "align_corners":
        if out_len == 1:
            return np.zeros(out_len, f32)
        return y * f32(in_len - 1) / f32(out_len - 1)
    if mode == "half_pixel_symmetric":
        adjustment = f32(out_len) / f32(s * f32(in_len))
        offset = f32(in_len) / f32(2) * (f32(1) - adjustment)
        return (np.float64(offset) + (y.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(f32)
    raise VerifyError(f"nn.resize: unknown coordinate_transformation_mode {mode!r}")


# A coordinate whose fraction is within this of 1/2 is a tie for the round_prefer_* modes, so
# that mathematically exact halves that float32 arithmetic misses by an ulp still count as ties
# (onnxruntime uses the same tolerance).
TIE_EPS = 1e-6


def _nearest_index(x: np.ndarray, mode: str, scale: float) -> np.ndarray:
    if mode == "simple":  # Resize-10: truncate when enlarging, ceil when shrinking
        return np.ceil(x) if scale < 1 else np.trunc(x)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    low = np.floor(x)
    frac = x - low
    tie = np.abs(frac - np.float32(0.5)) <= np.float32(TIE_EPS)
    nearest = np.where(frac < 0.5, low, low + 1)
    return np.where(tie, low if mode == "round_prefer_floor" else low + 1, nearest)


def _resize_axis(x: np.ndarray, axis: int, out_len: int, scale: float, attrs) -> np.ndarray:
    in_len = x.shape[axis]
    coords = _source_coords(attrs["coordinate_transformation_mode"], out_len, in_len, scale)
    if attrs["mode"] == "nearest":
        idx = _nearest_index(coords, attrs["nearest_mode"], scale)
        idx = np.clip(idx, 0, in_len - 1).astype(np.intp)
        return np.take(x, idx, axis=axis)
    coords = np.clip(coords.astype(np.float64), 0, in_len - 1)
    lo = np.floor(coords).astype(np.intp)
    hi = np.minimum(lo + 1, in_len - 1)
    w = (coords - lo).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    a = np.take(x, lo, axis=axis).astype(np.float64)
    b = np.take(x, hi, axis=axis).astype(np.float64)
    return a * (1.0 - w) + b * w


@define(
    "nn.resize",
    attrs=("mode", "scales", "sizes"),
    optional={
        "coordinate_transformation_mode": "half_pixel",
        "nearest_mode": "round_prefer_floor",
        "cubic_coeff_a": -0.75,
    },
    infer=_resize_infer,
    summary="Nearest or N-linear resize to `sizes`; `scales` map output to input coordinates.",
)
def resize(attrs, x):
    sizes = tuple(int(s) for s in attrs["sizes"])
    if sizes == x.shape:
        return x.copy()  # same shape: a copy whatever the scales say (as onnxruntime does)
    out = x
    for axis, (scale, size) in enumerate(zip(attrs["scales"], sizes)):
        if float(scale) == 1.0 and size == x.shape[axis]:
            continue
        if x.shape[axis] == 0 or size == 0:
            shape = list(out.shape)
            shape[axis] = size
            out = np.zeros(shape, out.dtype)
            continue
        out = _resize_axis(out, axis, size, float(scale), attrs)
    return np.asarray(out).astype(x.dtype)
