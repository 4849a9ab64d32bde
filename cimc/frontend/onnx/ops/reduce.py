"""Reductions: ReduceMean, ReduceSum, ReduceMax and ReduceMin.

``axes`` is an attribute up to ReduceSum-11 / ReduceMean-13 / ReduceMax-13 / ReduceMin-13 and an
input from ReduceSum-13 / ReduceMean-18 / ReduceMax-18 / ReduceMin-18 (it must then be known at
compile time). No axes means every axis, unless
``noop_with_empty_axes`` is set, in which case the op reduces nothing (nn op with axes = []).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cimc.frontend.onnx.registry import register_for


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


def _with_attribute(ctx, node, attrs, nn_name: str):
    return _reduce(ctx, node, attrs, nn_name, attrs.get("axes"), False)


def _with_input(ctx, node, attrs, nn_name: str):
    noop = bool(attrs.get("noop_with_empty_axes", 0))
    return _reduce(ctx, node, attrs, nn_name, _axes_input(ctx, node), noop)


# ONNX op, nn op, the first opset that takes the axes as an input
for _op_type, _nn_name, _since in (("ReduceSum", "nn.reduce_sum", 13),
                                   ("ReduceMean", "nn.reduce_mean", 18),
                                   ("ReduceMax", "nn.reduce_max", 18),
                                   ("ReduceMin", "nn.reduce_min", 18)):
    register_for(_op_type, 1, f"{_nn_name} (`axes` attribute; none: every axis)",
                 _with_attribute, _nn_name)
    register_for(_op_type, _since, f"{_nn_name} (`axes` input known at compile time; "
                 "noop_with_empty_axes)", _with_input, _nn_name)
