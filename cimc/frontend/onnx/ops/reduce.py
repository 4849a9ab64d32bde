"""Reductions: ReduceMean, ReduceSum, ReduceMax and ReduceMin.

``axes`` is an attribute up to ReduceSum-11 / ReduceMean-13 / ReduceMax-13 / ReduceMin-13 and an
input from ReduceSum-13 / ReduceMean-18 / ReduceMax-18 / ReduceMin-18 (it must then be known at
compile time). No axes means every axis, unless
``noop_with_empty_axes`` is set, in which case the op reduces nothing (nn op with axes = []).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cimc.frontend.onnx.registry import converter


def _reduce(ctx, node, attrs, name: str, axes: Sequence[int] | None, noop_if_empty: bool):
    x = ctx.input(node, 0)
    rank = x.type.rank
    if axes is None or len(axes) == 0:
        resolved = [] if noop_if_empty else list(range(rank))
    else:
        resolved = []
        for a in axes:
            if not -rank <= int(a) < max(rank, 1):
                raise ctx.error(f"axis {a} is out of range for an input of rank {rank}")
            resolved.append(int(a) % max(rank, 1))
        if len(set(resolved)) != len(resolved):
            raise ctx.error(f"axes {list(axes)} name the same axis twice")
        resolved = sorted(resolved)
    keepdims = bool(attrs.get("keepdims", 1))
    return [ctx.emit1(name, [x], {"axes": resolved, "keepdims": keepdims})]


def _axes_input(ctx, node) -> list[int] | None:
    if ctx.input(node, 1) is None:
        return None
    value = ctx.const(node, 1)
    if value is None:
        raise ctx.error(
            "input #1 (axes) is computed at run time; cimc needs the reduced axes at compile time "
            "(make axes a constant)"
        )
    return [int(a) for a in np.asarray(value).reshape(-1)]


@converter("ReduceSum", since=1)
def reduce_sum_1(ctx, node, attrs):
    """nn.reduce_sum (`axes` attribute; none: every axis)"""
    return _reduce(ctx, node, attrs, "nn.reduce_sum", attrs.get("axes"), False)


@converter("ReduceSum", since=13)
def reduce_sum_13(ctx, node, attrs):
    """nn.reduce_sum (`axes` input known at compile time; noop_with_empty_axes)"""
    noop = bool(attrs.get("noop_with_empty_axes", 0))
    return _reduce(ctx, node, attrs, "nn.reduce_sum", _axes_input(ctx, node), noop)


@converter("ReduceMean", since=1)
def reduce_mean_1(ctx, node, attrs):
    """nn.reduce_mean (`axes` attribute; none: every axis)"""
    return _reduce(ctx, node, attrs, "nn.reduce_mean", attrs.get("axes"), False)


@converter("ReduceMean", since=18)
def reduce_mean_18(ctx, node, attrs):
    """nn.reduce_mean (`axes` input known at compile time; noop_with_empty_axes)"""
    noop = bool(attrs.get("noop_with_empty_axes", 0))
    return _reduce(ctx, node, attrs, "nn.reduce_mean", _axes_input(ctx, node), noop)


def _register_extremum(op_type: str, nn_name: str) -> None:
    def attribute(ctx, node, attrs):
        return _reduce(ctx, node, attrs, nn_name, attrs.get("axes"), False)

    def input_(ctx, node, attrs):
        noop = bool(attrs.get("noop_with_empty_axes", 0))
        return _reduce(ctx, node, attrs, nn_name, _axes_input(ctx, node), noop)

    attribute.__doc__ = f"{nn_name} (`axes` attribute; none: every axis)"
    input_.__doc__ = f"{nn_name} (`axes` input known at compile time; noop_with_empty_axes)"
    converter(op_type, since=1)(attribute)
    converter(op_type, since=18)(input_)


_register_extremum("ReduceMax", "nn.reduce_max")
_register_extremum("ReduceMin", "nn.reduce_min")
