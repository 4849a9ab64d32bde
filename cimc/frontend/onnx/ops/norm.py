"""BatchNormalization, LayerNormalization, LRN, Softmax and LogSoftmax."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cimc.frontend.onnx.registry import converter
from cimc.ops.registry import normalize_axis

# ----------------------------------------------------------------------------- BatchNormalization


def _batch_norm(ctx, node, attrs: dict[str, Any]) -> list[Any]:
    if int(attrs.get("training_mode", 0)) == 1:
        raise ctx.error(
            "BatchNormalization with training_mode=1 is not supported: "
            "cimc compiles for inference; "
            "export the model in eval mode"
        )
    if int(attrs.get("spatial", 1)) != 1:
        raise ctx.error(
            "BatchNormalization with spatial=0 (per-activation statistics) is not supported; "
            "re-export the model with spatial=1 or at opset >= 9"
        )
    extra = [name for name in node.output[1:] if name]
    if extra:
        raise ctx.error(
            f"the training-only outputs {extra} of BatchNormalization are not supported; "
            "remove them (cimc compiles for inference)"
        )
    operands = [ctx.input(node, i) for i in range(5)]
    if any(v is None for v in operands):
        raise ctx.error("BatchNormalization needs all five inputs (X, scale, B, mean, var)")
    return [ctx.emit1("nn.batch_norm", operands, {"epsilon": float(attrs.get("epsilon", 1e-5))})]


@converter("BatchNormalization", since=1)
def batch_norm_1(ctx, node, attrs):
    """nn.batch_norm (opset < 7: is_test=1 required; spatial=0 and training outputs rejected)"""
    if int(attrs.get("is_test", 0)) != 1:
        raise ctx.error(
            "BatchNormalization before opset 7 with is_test=0 normalises with the batch's own "
            "statistics (training mode), which is not supported: cimc compiles for inference; "
            "export the model in eval mode (is_test=1) or at opset >= 7"
        )
    return _batch_norm(ctx, node, attrs)


@converter("BatchNormalization", since=7)
def batch_norm_7(ctx, node, attrs):
    """nn.batch_norm (inference; spatial=0 and the training outputs are rejected)"""
    return _batch_norm(ctx, node, attrs)


@converter("BatchNormalization", since=9)
def batch_norm_9(ctx, node, attrs):
    """nn.batch_norm (inference; the training outputs are rejected)"""
    return _batch_norm(ctx, node, attrs)


@converter("BatchNormalization", since=14)
def batch_norm_14(ctx, node, attrs):
    """nn.batch_norm (inference; training_mode=1 is rejected)"""
    return _batch_norm(ctx, node, attrs)


@converter("BatchNormalization", since=15)
def batch_norm_15(ctx, node, attrs):
    """nn.batch_norm (inference; mixed float types allowed; training_mode=1 is rejected)"""
    return _batch_norm(ctx, node, attrs)


# ----------------------------------------------------------------------------- LayerNormalization


def _layer_norm_stats(ctx, x, axis: int, epsilon: float) -> tuple[Any, Any]:
    """Mean and 1/sqrt(var + epsilon) over axes [axis, rank), kept as size-1 axes."""
    axes = list(range(axis, x.type.rank))
    mean = ctx.emit1("nn.reduce_mean", [x], {"axes": axes, "keepdims": True})
    d = ctx.emit1("nn.sub", [x, mean])
    var = ctx.emit1(
        "nn.reduce_mean", [ctx.emit1("nn.mul", [d, d])], {"axes": axes, "keepdims": True}
    )
    eps = ctx.constant(np.asarray(epsilon, dtype=x.type.np_dtype))
    one = ctx.constant(np.asarray(1.0, dtype=x.type.np_dtype))
    inv = ctx.emit1("nn.div", [one, ctx.emit1("nn.sqrt", [ctx.emit1("nn.add", [var, eps])])])
    return mean, inv


@converter("LayerNormalization", since=17)
def layer_norm(ctx, node, attrs):
    """nn.layer_norm (axis, epsilon); Mean/InvStdDev outputs via nn.reduce_mean and arithmetic"""
    x, scale, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    axis = normalize_axis(int(attrs.get("axis", -1)), x.type.rank)
    epsilon = float(attrs.get("epsilon", 1e-5))
    operands = [x, scale] if bias is None else [x, scale, bias]
    y = ctx.emit1("nn.layer_norm", operands, {"axis": axis, "epsilon": epsilon})
    wants_stats = any(len(node.output) > i and node.output[i] for i in (1, 2))
    if not wants_stats:
        return [y]
    if x.type.dtype != "f32" and int(attrs.get("stash_type", 1)) == 1:
        raise ctx.error(
            f"the Mean/InvStdDev outputs of a {x.type.dtype} LayerNormalization are float32 "
            "in ONNX; "
            "cimc supports them for float32 inputs only"
        )
    mean, inv = _layer_norm_stats(ctx, x, axis, epsilon)
    return [y, mean, inv]


# ----------------------------------------------------------------------------- LRN


@converter("LRN", since=1)
def lrn(ctx, node, attrs):
    """nn.lrn (size, alpha, beta, bias)"""
    if "size" not in attrs:
        raise ctx.error("LRN needs the 'size' attribute")
    nn_attrs = {
        "size": int(attrs["size"]),
        "alpha": float(attrs.get("alpha", 1e-4)),
        "beta": float(attrs.get("beta", 0.75)),
        "bias": float(attrs.get("bias", 1.0)),
    }
    return [ctx.emit1("nn.lrn", [ctx.input(node, 0)], nn_attrs)]


# ----------------------------------------------------------------------------- Softmax / LogSoftmax


def _coerced(ctx, node, attrs: dict[str, Any], op: str) -> list[Any]:
    """Opset < 13: flatten to 2-D [prod(shape[:axis]), prod(shape[axis:])], normalise each row,
    and restore the shape. When axis is the last axis that is the single-axis op."""
    x = ctx.input(node, 0)
    rank = x.type.rank
    if rank == 0:
        raise ctx.error("softmax of a scalar is not defined; the input needs rank >= 1")
    axis = normalize_axis(int(attrs.get("axis", 1)), rank)
    if axis == rank - 1:
        return [ctx.emit1(op, [x], {"axis": axis})]
    shape = list(x.type.shape)
    flat = [math.prod(shape[:axis]), math.prod(shape[axis:])]
    y = ctx.emit1("nn.reshape", [x], {"shape": flat})
    y = ctx.emit1(op, [y], {"axis": 1})
    return [ctx.emit1("nn.reshape", [y], {"shape": shape})]


def _single_axis(ctx, node, attrs: dict[str, Any], op: str) -> list[Any]:
    x = ctx.input(node, 0)
    if x.type.rank == 0:
        raise ctx.error("softmax of a scalar is not defined; the input needs rank >= 1")
    axis = normalize_axis(int(attrs.get("axis", -1)), x.type.rank)
    return [ctx.emit1(op, [x], {"axis": axis})]


@converter("Softmax", since=1)
def softmax_1(ctx, node, attrs):
    """nn.softmax over the input coerced to 2-D at `axis` (default 1), via nn.reshape"""
    return _coerced(ctx, node, attrs, "nn.softmax")


@converter("Softmax", since=13)
def softmax_13(ctx, node, attrs):
    """nn.softmax along one axis (default -1)"""
    return _single_axis(ctx, node, attrs, "nn.softmax")


@converter("LogSoftmax", since=1)
def log_softmax_1(ctx, node, attrs):
    """nn.log_softmax over the input coerced to 2-D at `axis` (default 1), via nn.reshape"""
    return _coerced(ctx, node, attrs, "nn.log_softmax")


@converter("LogSoftmax", since=13)
def log_softmax_13(ctx, node, attrs):
    """nn.log_softmax along one axis (default -1)"""
    return _single_axis(ctx, node, attrs, "nn.log_softmax")
