"""Pooling: N-d max and average pooling with pads, dilations and ceil mode; global pooling.

Window geometry follows ONNX and onnxruntime: an axis of size S padded by ``pb``/``pe`` gives
``floor((S + pb + pe - ((k-1)*d + 1)) / s) + 1`` windows, or ``ceil(...)`` with ``ceil_mode``,
minus one when that last window would start inside the end padding. Padding never wins a max.
An average divides by the number of window taps inside the input, or, with
``count_include_pad``, inside the explicitly padded input (taps in the ceil-mode overhang past
the end padding never count).

Average pooling runs as one strided slice per kernel tap of the padded input (see
``linalg.kernel_taps``); max pooling is separable, so it takes the max along each spatial axis in
turn (``k0 + k1 + ...`` strided slices instead of ``k0 * k1 * ...``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cimc.errors import VerifyError
from cimc.ir.types import TensorType, dtype_name
from cimc.ops.linalg import (
    check_spatial,
    compute_dtype,
    kernel_taps,
    pad_spatial,
    window_out_size,
)
from cimc.ops.registry import define


def _check_bool(op: str, attrs: dict[str, Any], key: str) -> bool:
    val = attrs.get(key)
    if not isinstance(val, bool):
        raise VerifyError(f"{op}: attribute '{key}' must be a bool, got {val!r}")
    return val


def _dilations(attrs: dict[str, Any], r: int) -> list[int]:
    d = attrs.get("dilations")
    return [1] * r if d is None else list(d)


def _pool_geometry(op: str, attrs: dict[str, Any], x: TensorType) -> list[int]:
    """Validate the attributes of a pooling op over ``x``; returns the output spatial sizes."""
    if x.rank < 3:
        raise VerifyError(f"{op}: the input must be [N, C, spatial...] (rank >= 3), got {x}")
    r = x.rank - 2
    a = dict(attrs, dilations=_dilations(attrs, r))
    sp = check_spatial(op, a, r, ("kernel_shape", "strides", "pads", "dilations"))
    ceil_mode = _check_bool(op, attrs, "ceil_mode")
    k, s, d, p = sp["kernel_shape"], sp["strides"], sp["dilations"], sp["pads"]
    for i in range(r):
        if p[i] >= (k[i] - 1) * d[i] + 1 or p[i + r] >= (k[i] - 1) * d[i] + 1:
            raise VerifyError(
                f"{op}: pads {p} must be smaller than the window (kernel {k}, dilations {d})"
            )
    try:
        return [
            window_out_size(x.shape[2 + i], k[i], s[i], d[i], p[i], p[i + r], ceil_mode)
            for i in range(r)
        ]
    except VerifyError as e:
        raise VerifyError(f"{op}: {e}") from None


def _pool_pads(attrs: dict[str, Any], shape: Sequence[int], out: Sequence[int]) -> list[int]:
    """``pads``, with the end of each axis extended by the ceil-mode overhang."""
    r = len(shape) - 2
    k, s, d, p = attrs["kernel_shape"], attrs["strides"], _dilations(attrs, r), attrs["pads"]
    pads = list(p)
    for i in range(r):
        need = (out[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1
        pads[i + r] = max(p[i + r], need - shape[2 + i] - p[i])
    return pads


def _padded(x: np.ndarray, attrs: dict[str, Any], out: Sequence[int], value: float) -> np.ndarray:
    """``x`` padded by ``pads``, plus the ceil-mode overhang at the end of each axis."""
    return pad_spatial(x, _pool_pads(attrs, x.shape, out), value)


# ----------------------------------------------------------------------------- nn.max_pool


def _max_pool_infer(attrs: dict[str, Any], x: TensorType) -> TensorType:
    out = _pool_geometry("nn.max_pool", attrs, x)
    return x.with_shape((*x.shape[:2], *out))


def _lowest(dtype: np.dtype) -> float | int:
    return -np.inf if dtype.kind == "f" else int(np.iinfo(dtype).min)


@define(
    "nn.max_pool",
    attrs=("kernel_shape", "strides", "pads", "dilations", "ceil_mode"),
    infer=_max_pool_infer,
    summary="N-d max pooling (ONNX MaxPool without the Indices output).",
)
def max_pool(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return max_pool_plan(attrs, x.shape, x.dtype)(x)


def max_pool_plan(attrs: dict[str, Any], shape: tuple[int, ...], dtype: Any
                  ) -> Callable[..., np.ndarray]:
    """``nn.max_pool`` for inputs of ``shape`` and ``dtype``, validated and laid out once:
    ``fn(x, dst=None)`` pools ``x`` (into ``dst`` when given; else a new array in ``x``'s
    layout). The runtime keeps one per shape and calls it block after block."""
    dtype = np.dtype(dtype)
    out = _max_pool_infer(attrs, TensorType(tuple(shape), dtype_name(dtype))).shape[2:]
    r = len(shape) - 2
    k, s, d = attrs["kernel_shape"], attrs["strides"], _dilations(attrs, r)
    # The max over a window box is the max along each spatial axis in turn: k[0] + k[1] + ...
    # strided passes instead of k[0] * k[1] * ...
    passes = [[(slice(None),) * (2 + i) + t for t in kernel_taps([k[i]], [s[i]], [d[i]], [out[i]])]
              for i in range(r)]
    pads = _pool_pads(attrs, shape, out)
    lowest = _lowest(dtype)

    def run(x: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        x = pad_spatial(x, pads, lowest)
        for i, taps in enumerate(passes):
            last = i == r - 1
            if len(taps) == 1 and last and dst is not None:
                np.copyto(dst, x[taps[0]])
                y = dst
            elif len(taps) == 1:
                y = x[taps[0]].copy(order="K")
            else:
                y = np.maximum(x[taps[0]], x[taps[1]], out=dst if last else None)
                for tap in taps[2:]:
                    np.maximum(y, x[tap], out=y)
            x = y
        return x

    return run


# ----------------------------------------------------------------------------- nn.avg_pool


def _avg_pool_infer(attrs: dict[str, Any], x: TensorType) -> TensorType:
    if x.dtype not in ("f16", "f32", "f64"):
        raise VerifyError(f"nn.avg_pool: the input must be a float tensor, got {x}")
    _check_bool("nn.avg_pool", attrs, "count_include_pad")
    out = _pool_geometry("nn.avg_pool", attrs, x)
    return x.with_shape((*x.shape[:2], *out))


def _tap_counts(
    size: int, k: int, s: int, d: int, pb: int, pe: int, out: int, include_pad: bool
) -> np.ndarray:
    """Per output position along one axis: how many of the window's taps count in the average."""
    lo, hi = (-pb, size + pe) if include_pad else (0, size)
    starts = np.arange(out) * s - pb
    taps = starts[:, None] + np.arange(k)[None, :] * d
    return ((taps >= lo) & (taps < hi)).sum(axis=1)


@define(
    "nn.avg_pool",
    attrs=("kernel_shape", "strides", "pads", "ceil_mode", "count_include_pad"),
    optional={"dilations": None},
    infer=_avg_pool_infer,
    summary="N-d average pooling (ONNX AveragePool); dilations default to 1.",
)
def avg_pool(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    r = x.ndim - 2
    ct = compute_dtype(x.dtype)
    k, s, d, p = attrs["kernel_shape"], attrs["strides"], _dilations(attrs, r), attrs["pads"]
    out = _avg_pool_infer(attrs, TensorType.of(x)).shape[2:]
    xp = _padded(x.astype(ct, copy=False), attrs, out, 0)
    y = np.zeros((*x.shape[:2], *out), ct)
    for tap in kernel_taps(k, s, d, out):
        y += xp[(slice(None), slice(None), *tap)]
    count = np.ones((), ct)
    for i in range(r):
        c = _tap_counts(
            x.shape[2 + i], k[i], s[i], d[i], p[i], p[i + r], out[i], attrs["count_include_pad"]
        )
        count = np.multiply.outer(count, c.astype(ct))
    return (y / count).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- global pooling


def _global_infer(attrs: dict[str, Any], x: TensorType) -> TensorType:
    if x.rank < 3:
        raise VerifyError(f"global pooling needs an input [N, C, spatial...] (rank >= 3), got {x}")
    return x.with_shape((*x.shape[:2], *([1] * (x.rank - 2))))


@define(
    "nn.global_avg_pool",
    infer=_global_infer,
    summary="Mean over all spatial axes, kept as size-1 axes (ONNX GlobalAveragePool).",
)
def global_avg_pool(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    axes = tuple(range(2, x.ndim))
    return (
        x.astype(compute_dtype(x.dtype), copy=False).mean(axis=axes, keepdims=True).astype(x.dtype)
    )


@define(
    "nn.global_max_pool",
    infer=_global_infer,
    summary="Max over all spatial axes, kept as size-1 axes (ONNX GlobalMaxPool).",
)
def global_max_pool(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)
