"""MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

``auto_pad`` is resolved to explicit ``pads``; every nn attribute is written explicitly.
"""

from __future__ import annotations

from typing import Any

from cimc.frontend.onnx.ops.linalg import spatial_list, window_pads
from cimc.frontend.onnx.registry import converter


def _window_attrs(ctx, node, attrs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The input and the nn window attributes shared by MaxPool and AveragePool."""
    x = ctx.input(node, 0)
    if x.type.rank < 3:
        raise ctx.error(f"the input must be [N, C, spatial...] (rank >= 3), got {x.type}")
    r = x.type.rank - 2
    kernel = attrs.get("kernel_shape")
    if not kernel or len(kernel) != r:
        raise ctx.error(
            f"kernel_shape {kernel} must list {r} sizes, one per spatial axis of {x.type}"
        )
    kernel = [int(k) for k in kernel]
    strides = spatial_list(ctx, attrs, "strides", r, 1)
    dilations = spatial_list(ctx, attrs, "dilations", r, 1)
    pads = window_pads(ctx, attrs, x.type.shape[2:], kernel, strides, dilations)
    nn_attrs = {
        "kernel_shape": kernel,
        "strides": strides,
        "pads": pads,
        "dilations": dilations,
        "ceil_mode": bool(attrs.get("ceil_mode", 0)),
    }
    return x, nn_attrs


@converter("MaxPool", since=1)
def max_pool(ctx, node, attrs):
    """nn.max_pool (pads, auto_pad, strides, dilations, ceil_mode); no Indices output"""
    if len(node.output) > 1 and node.output[1]:
        raise ctx.error(
            f"the Indices output ('{node.output[1]}') of MaxPool is not supported; "
            "remove it from the node if nothing uses it"
        )
    x, nn_attrs = _window_attrs(ctx, node, attrs)
    return [ctx.emit1("nn.max_pool", [x], nn_attrs)]


@converter("AveragePool", since=1)
def avg_pool(ctx, node, attrs):
    """nn.avg_pool (pads, auto_pad, strides, dilations, ceil_mode, count_include_pad)"""
    x, nn_attrs = _window_attrs(ctx, node, attrs)
    nn_attrs["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
    return [ctx.emit1("nn.avg_pool", [x], nn_attrs)]


@converter("GlobalAveragePool", since=1)
def global_avg_pool(ctx, node, attrs):
    """nn.global_avg_pool"""
    return [ctx.emit1("nn.global_avg_pool", [ctx.input(node, 0)])]


@converter("GlobalMaxPool", since=1)
def global_max_pool(ctx, node, attrs):
    """nn.global_max_pool"""
    return [ctx.emit1("nn.global_max_pool", [ctx.input(node, 0)])]
