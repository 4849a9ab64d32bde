"""Normalisation: inference batch norm, layer norm, local response norm, softmax, log-softmax.

All compute in float32 for f16/f32 inputs (f64 stays f64) and return the input's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cimc.errors import VerifyError
from cimc.ir.types import TensorType
from cimc.ops.linalg import compute_dtype
from cimc.ops.registry import broadcast_shapes, define, normalize_axis

FLOATS = ("f16", "f32", "f64")


def _float_input(op: str, x: TensorType) -> None:
    if x.dtype not in FLOATS:
        raise VerifyError(f"{op}: the input must be a float tensor, got {x}")


def _float_attr(op: str, attrs: dict[str, Any], key: str) -> float:
    val = attrs.get(key)
    if not isinstance(val, float):
        raise VerifyError(f"{op}: attribute '{key}' must be a float, got {val!r}")
    return val


def _int_attr(op: str, attrs: dict[str, Any], key: str) -> int:
    val = attrs.get(key)
    if not isinstance(val, int) or isinstance(val, bool):
        raise VerifyError(f"{op}: attribute '{key}' must be an int, got {val!r}")
    return val


# ----------------------------------------------------------------------------- nn.batch_norm


def _batch_norm_infer(attrs: dict[str, Any], x: TensorType, *params: TensorType) -> TensorType:
    op = "nn.batch_norm"
    _float_input(op, x)
    _float_attr(op, attrs, "epsilon")
    if x.rank < 2:
        raise VerifyError(f"{op}: the input must be [N, C, ...] (rank >= 2), got {x}")
    c = x.shape[1]
    for name, t in zip(("scale", "bias", "mean", "var"), params):
        if t.shape != (c,):
            raise VerifyError(f"{op}: {name} must have shape ({c},) (one per channel), got {t}")
        if t.dtype not in FLOATS:
            raise VerifyError(f"{op}: {name} must be a float tensor, got {t}")
    return x


@define(
    "nn.batch_norm",
    operands=5,
    attrs=("epsilon",),
    infer=_batch_norm_infer,
    summary="Inference batch norm over axis 1: (x - mean) / sqrt(var + epsilon) * scale + bias.",
)
def batch_norm(attrs: dict[str, Any], x: np.ndarray, scale, bias, mean, var) -> np.ndarray:
    ct = compute_dtype(x.dtype)
    shape = (-1, *([1] * (x.ndim - 2)))
    inv = (scale.astype(ct) / np.sqrt(var.astype(ct) + ct.type(attrs["epsilon"]))).reshape(shape)
    y = (x.astype(ct, copy=False) - mean.astype(ct).reshape(shape)) * inv + bias.astype(ct).reshape(
        shape
    )
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- nn.layer_norm


def _layer_norm_infer(
    attrs: dict[str, Any], x: TensorType, scale: TensorType, bias: TensorType | None = None
) -> TensorType:
    op = "nn.layer_norm"
    _float_input(op, x)
    _float_attr(op, attrs, "epsilon")
    axis = normalize_axis(_int_attr(op, attrs, "axis"), x.rank)
    norm_shape = x.shape[axis:]
    for name, t in (("scale", scale), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != x.dtype:
            raise VerifyError(f"{op}: {name} {t} must have the input's dtype {x.dtype}")
        lead = t.shape[: max(0, t.rank - len(norm_shape))]
        inner = t.shape[len(lead) :]
        if (
            t.rank > x.rank
            or any(d != 1 for d in lead)
            or broadcast_shapes(inner, norm_shape) != norm_shape
        ):
            raise VerifyError(
                f"{op}: {name} {t} does not broadcast to the normalised shape {norm_shape}"
            )
    return x


@define(
    "nn.layer_norm",
    operands=(2, 3),
    attrs=("axis", "epsilon"),
    infer=_layer_norm_infer,
    summary="Layer norm over axes [axis, rank): (x - mean) / sqrt(var + epsilon) * scale + bias.",
)
def layer_norm(
    attrs: dict[str, Any], x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None
) -> np.ndarray:
    ct = compute_dtype(x.dtype)
    axes = tuple(range(normalize_axis(attrs["axis"], x.ndim), x.ndim))
    xc = x.astype(ct, copy=False)
    mean = xc.mean(axis=axes, keepdims=True)
    d = xc - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    y = d / np.sqrt(var + ct.type(attrs["epsilon"])) * scale.astype(ct, copy=False)
    if bias is not None:
        y = y + bias.astype(ct, copy=False)
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- nn.lrn


def _lrn_infer(attrs: dict[str, Any], x: TensorType) -> TensorType:
    op = "nn.lrn"
    _float_input(op, x)
    if x.rank < 3:
        raise VerifyError(f"{op}: the input must be [N, C, spatial...] (rank >= 3), got {x}")
    if _int_attr(op, attrs, "size") < 1:
        raise VerifyError(f"{op}: attribute 'size' must be >= 1, got {attrs['size']}")
    for key in ("alpha", "beta", "bias"):
        _float_attr(op, attrs, key)
    return x


@define(
    "nn.lrn",
    attrs=("size", "alpha", "beta", "bias"),
    infer=_lrn_infer,
    summary="Local response norm across channels: x / (bias + alpha/size * sum_window x^2)^beta.",
)
def lrn(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    ct = compute_dtype(x.dtype)
    size = attrs["size"]
    before, after = (size - 1) // 2, size // 2  # floor((size-1)/2), ceil((size-1)/2)
    sq = np.square(x.astype(ct, copy=False))
    c = x.shape[1]
    padded = np.pad(sq, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    csum = np.cumsum(padded, axis=1, dtype=np.float64)
    csum = np.concatenate([np.zeros_like(csum[:, :1]), csum], axis=1)
    window = (csum[:, size : size + c] - csum[:, :c]).astype(ct)
    base = ct.type(attrs["bias"]) + ct.type(attrs["alpha"] / size) * window
    return (x.astype(ct, copy=False) / base ** ct.type(attrs["beta"])).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- softmax


def _softmax_infer(op: str):
    def infer(attrs: dict[str, Any], x: TensorType) -> TensorType:
        _float_input(op, x)
        normalize_axis(_int_attr(op, attrs, "axis"), x.rank, f"{op}: axis")
        return x

    return infer


@define(
    "nn.softmax",
    attrs=("axis",),
    infer=_softmax_infer("nn.softmax"),
    summary="Softmax along one axis.",
)
def softmax(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    ct = compute_dtype(x.dtype)
    axis = normalize_axis(attrs["axis"], x.ndim)
    xc = x.astype(ct, copy=False)
    e = np.exp(xc - xc.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False)


@define(
    "nn.log_softmax",
    attrs=("axis",),
    infer=_softmax_infer("nn.log_softmax"),
    summary="Log of softmax along one axis (computed stably as x - max - log(sum(exp(x - max)))).",
)
def log_softmax(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    ct = compute_dtype(x.dtype)
    axis = normalize_axis(attrs["axis"], x.ndim)
    xc = x.astype(ct, copy=False)
    shifted = xc - xc.max(axis=axis, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).astype(
        x.dtype, copy=False
    )
