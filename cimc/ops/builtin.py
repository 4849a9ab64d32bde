"""Structural ops: constants and terminators."""

from __future__ import annotations

import numpy as np

from cimc.errors import VerifyError
from cimc.ir.types import TensorType
from cimc.ops.registry import define


def _constant_type(attrs) -> TensorType:
    value = attrs.get("value")
    if not isinstance(value, np.ndarray):
        raise VerifyError("nn.constant needs a dense 'value' attribute")
    return TensorType.of(value)


@define(
    "nn.constant",
    operands=0,
    attrs=("value",),
    infer=lambda attrs: _constant_type(attrs),
    summary="A constant tensor (weights, shapes); large ones print as dense_resource.",
)
def constant(attrs):
    return attrs["value"]


@define(
    "return",
    operands=(0, None),
    infer=lambda attrs, *types: [],
    summary="Ends a function; its operands are the function's outputs.",
)
def return_(attrs, *xs):
    return list(xs)


@define(
    "yield",
    operands=(0, None),
    infer=lambda attrs, *types: [],
    summary="Ends a region; its operands are the region's results.",
)
def yield_(attrs, *xs):
    return list(xs)
