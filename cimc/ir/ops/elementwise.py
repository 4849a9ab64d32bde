"""Elementwise arithmetic and activations (numpy broadcasting semantics, as ONNX)."""

from __future__ import annotations

import numpy as np

from cimc.ir.registry import broadcast_type, define, same_type


@define("nn.relu", infer=same_type, summary="max(x, 0)")
def relu(attrs, x):
    return np.maximum(x, 0).astype(x.dtype)


@define("nn.add", operands=2, infer=broadcast_type, summary="x + y with broadcasting")
def add(attrs, x, y):
    return x + y
