"""Elementwise arithmetic and activations."""

from __future__ import annotations

from cimc.frontend.onnx.registry import converter


@converter("Relu", since=1)
def relu(ctx, node, attrs):
    """nn.relu"""
    return [ctx.emit1("nn.relu", [ctx.input(node, 0)])]


@converter("Add", since=1)
def add(ctx, node, attrs):
    """nn.add (numpy broadcasting; opset < 7 `broadcast`/`axis` forms are rejected)"""
    if attrs.get("broadcast") and "axis" in attrs:
        raise ctx.error("legacy Add with broadcast/axis attributes is not supported; re-export at opset >= 7")
    return [ctx.emit1("nn.add", [ctx.input(node, 0), ctx.input(node, 1)])]
