"""Reductions: nn.reduce_mean, nn.reduce_sum, nn.reduce_max and nn.reduce_min over explicit axes.

``axes`` is resolved by the frontend (non-negative, sorted, no duplicates); an empty list
reduces over nothing, i.e. the op is the identity (ONNX's noop_with_empty_axes). Sums are
accumulated in float64 (integers in int64) and cast back to the input's dtype. The maximum and
minimum of an empty axis are refused (ONNX leaves them undefined).
"""

from __future__ import annotations

import numpy as np

from cimc.errors import CimcError, VerifyError
from cimc.ir.types import TensorType
from cimc.ops.registry import define, normalize_axis


def _axes(attrs, rank: int, op: str) -> tuple[int, ...]:
    axes = attrs["axes"]
    if not isinstance(axes, (list, tuple)) or not all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes
    ):
        raise VerifyError(f"{op}: attribute 'axes' must be a list of integers, got {axes!r}")
    norm = [normalize_axis(int(a), rank, f"{op}: axis") for a in axes]
    if len(set(norm)) != len(norm):
        raise VerifyError(f"{op}: axes {list(axes)} name an axis twice")
    return tuple(sorted(norm))


def _reduce_infer(op: str):
    def infer(attrs, x: TensorType) -> TensorType:
        axes = _axes(attrs, x.rank, op)
        if not isinstance(attrs["keepdims"], bool):
            raise VerifyError(
                f"{op}: attribute 'keepdims' must be true or false, got {attrs['keepdims']!r}"
            )
        if attrs["keepdims"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return x.with_shape(shape)

    return infer


def _acc_dtype(dtype: np.dtype) -> type:
    if dtype.kind == "f":
        return np.float64
    if dtype.kind == "b":
        return np.int64
    return np.int64 if dtype.kind == "i" else np.uint64


@define(
    "nn.reduce_sum",
    attrs=("axes",),
    optional={"keepdims": True},
    infer=_reduce_infer("nn.reduce_sum"),
    summary="Sum over axes (empty axes: identity).",
)
def reduce_sum(attrs, x):
    axes = _axes(attrs, x.ndim, "nn.reduce_sum")
    out = np.sum(x, axis=axes, dtype=_acc_dtype(x.dtype), keepdims=bool(attrs["keepdims"]))
    return np.asarray(out).astype(x.dtype)


@define(
    "nn.reduce_mean",
    attrs=("axes",),
    optional={"keepdims": True},
    infer=_reduce_infer("nn.reduce_mean"),
    summary="Mean over axes (empty axes: identity).",
)
def reduce_mean(attrs, x):
    axes = _axes(attrs, x.ndim, "nn.reduce_mean")
    total = np.sum(x, axis=axes, dtype=_acc_dtype(x.dtype), keepdims=bool(attrs["keepdims"]))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if x.dtype.kind == "f":
        return np.asarray(total / count if count else total * np.nan).astype(x.dtype)
    # integer mean: onnxruntime divides the integer sum (truncating towards zero)
    return np.asarray(np.trunc(np.asarray(total, np.float64) / max(count, 1))).astype(x.dtype)


def _extremum(attrs, x, fn, op: str, what: str):
    axes = _axes(attrs, x.ndim, op)
    if any(x.shape[a] == 0 for a in axes):
        raise CimcError(f"{op}: an axis of size 0 in {x.shape} has no {what}")
    if not axes:
        return x.copy()
    return np.asarray(fn(x, axis=axes, keepdims=bool(attrs["keepdims"]))).astype(x.dtype)


@define(
    "nn.reduce_max",
    attrs=("axes",),
    optional={"keepdims": True},
    infer=_reduce_infer("nn.reduce_max"),
    summary="Maximum over axes (empty axes: identity; NaN wins).",
)
def reduce_max(attrs, x):
    return _extremum(attrs, x, np.max, "nn.reduce_max", "maximum")


@define(
    "nn.reduce_min",
    attrs=("axes",),
    optional={"keepdims": True},
    infer=_reduce_infer("nn.reduce_min"),
    summary="Minimum over axes (empty axes: identity; NaN wins).",
)
def reduce_min(attrs, x):
    return _extremum(attrs, x, np.min, "nn.reduce_min", "minimum")
