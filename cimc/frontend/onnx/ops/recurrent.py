"""LSTM and GRU.

The nn ops (``cimc/ops/recurrent.py``) take every operand: absent biases, initial states and
peepholes become zero constants. ``sequence_lens`` must be known at compile time and equal the
sequence length for every sample (cimc does not run ragged batches). ``layout = 1`` (batch first,
opset 14) becomes transposes around the layout-0 op. Activation parameters are resolved as
onnxruntime does: each activation takes its alpha/beta values from the lists in order, and its
ONNX defaults once a list runs out.
"""

from __future__ import annotations

import math

import numpy as np

from cimc.frontend.onnx.registry import converter
from cimc.ops.recurrent import ACTIVATIONS, DIRECTIONS

_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3}


def _activations(ctx, node, attrs, d: int) -> dict:
    """The nn op's activations, activation_alpha and activation_beta (one entry each)."""
    default = _DEFAULT_ACTIVATIONS[node.op_type]
    names = list(attrs.get("activations") or default * d)
    if len(names) == len(default) and d == 2:
        names = names * 2
    if len(names) != len(default) * d:
        raise ctx.error(f"activations {names} must name {len(default)} functions per direction "
                        f"({len(default) * d} in all)")
    canonical = {k.lower(): k for k in ACTIVATIONS}
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    out_names, out_alpha, out_beta = [], [], []
    for name in names:
        key = canonical.get(str(name).lower())
        if key is None:
            raise ctx.error(f"activation {name!r} is not supported; cimc supports "
                            f"{', '.join(ACTIVATIONS)}")
        count, (alpha, beta) = ACTIVATIONS[key]
        if count >= 1 and alphas:
            alpha = alphas.pop(0)
        if count >= 2 and betas:
            beta = betas.pop(0)
        out_names.append(key)
        out_alpha.append(float(alpha))
        out_beta.append(float(beta))
    return {"activations": out_names, "activation_alpha": out_alpha, "activation_beta": out_beta}


def _recurrent(ctx, node, attrs):
    """Shared by LSTM and GRU: operands (zeros for absent ones), attributes, layout."""
    gates = _GATES[node.op_type]
    x, w, r = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    direction = attrs.get("direction", "forward")
    if direction not in DIRECTIONS:
        raise ctx.error(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    d = 2 if direction == "bidirectional" else 1
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ctx.error(f"layout must be 0 or 1, got {layout}")
    if x.type.rank != 3 or w.type.rank != 3 or r.type.rank != 3:
        raise ctx.error(f"X, W and R must have rank 3, got {x.type}, {w.type}, {r.type}")
    if layout == 1:
        x = ctx.emit1("nn.transpose", [x], {"perm": [1, 0, 2]})
    s, n = x.type.shape[:2]
    hidden = r.type.shape[-1]
    if "hidden_size" in attrs and int(attrs["hidden_size"]) != hidden:
        raise ctx.error(f"hidden_size {attrs['hidden_size']} does not match R {r.type}")
    lens = ctx.input(node, 4)
    if lens is not None:
        known = ctx.const(node, 4)
        if known is None or np.any(np.asarray(known) != s):
            shown = "computed at run time" if known is None else f"{known.reshape(-1).tolist()}"
            raise ctx.error(
                f"sequence_lens is {shown}; cimc runs every sample over the whole sequence, so "
                f"it must be a constant equal to the sequence length {s} (or absent)")
    dtype = x.type.np_dtype

    def state(i: int):
        v = ctx.input(node, i)
        if v is None:
            return ctx.constant(np.zeros((d, n, hidden), dtype))
        if layout == 1:
            return ctx.emit1("nn.transpose", [v], {"perm": [1, 0, 2]})
        return v

    b = ctx.input(node, 3)
    if b is None:
        b = ctx.constant(np.zeros((d, 2 * gates * hidden), dtype))
    operands = [x, w, r, b, state(5)]
    clip = float(attrs.get("clip", math.inf))
    if not clip > 0:
        raise ctx.error(f"clip must be positive, got {clip}")
    nn_attrs = {"direction": direction, "clip": clip, **_activations(ctx, node, attrs, d)}
    return operands, nn_attrs, layout, d, hidden


def _outputs(ctx, results, layout: int) -> list:
    """Y, Y_h[, Y_c] back in the node's layout."""
    if layout == 0:
        return list(results)
    y, *states = results
    return [ctx.emit1("nn.transpose", [y], {"perm": [2, 0, 1, 3]})] + [
        ctx.emit1("nn.transpose", [v], {"perm": [1, 0, 2]}) for v in states]


@converter("LSTM", since=1)
def lstm(ctx, node, attrs):
    """nn.lstm (directions, activations, clip, input_forget, peepholes, layout; sequence_lens = S)"""
    operands, nn_attrs, layout, d, hidden = _recurrent(ctx, node, attrs)
    dtype = operands[0].type.np_dtype
    n = operands[0].type.shape[1]
    c0 = ctx.input(node, 6)
    if c0 is None:
        c0 = ctx.constant(np.zeros((d, n, hidden), dtype))
    elif layout == 1:
        c0 = ctx.emit1("nn.transpose", [c0], {"perm": [1, 0, 2]})
    p = ctx.input(node, 7)
    if p is None:
        p = ctx.constant(np.zeros((d, 3 * hidden), dtype))
    nn_attrs["input_forget"] = bool(attrs.get("input_forget", 0))
    op = ctx.emit("nn.lstm", [*operands, c0, p], nn_attrs)
    return _outputs(ctx, op.results, layout)


@converter("GRU", since=1)
def gru(ctx, node, attrs):
    """nn.gru (directions, activations, clip, linear_before_reset, layout; sequence_lens = S)"""
    operands, nn_attrs, layout, _, _ = _recurrent(ctx, node, attrs)
    nn_attrs["linear_before_reset"] = bool(attrs.get("linear_before_reset", 0))
    op = ctx.emit("nn.gru", operands, nn_attrs)
    return _outputs(ctx, op.results, layout)
