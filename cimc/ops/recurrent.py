"""Recurrent layers: nn.lstm and nn.gru, with ONNX LSTM/GRU semantics (layout 0).

``nn.lstm(X, W, R, B, H0, C0, P) {direction, activations, activation_alpha, activation_beta,
clip, input_forget}`` -> ``Y, Y_h, Y_c``

``nn.gru(X, W, R, B, H0) {direction, activations, activation_alpha, activation_beta, clip,
linear_before_reset}`` -> ``Y, Y_h``

Shapes (``S`` steps, ``N`` batch, ``I`` features, ``H`` hidden, ``D`` directions, ``G`` gates:
4 for the LSTM in the order i, o, f, c; 3 for the GRU in the order z, r, h): ``X [S, N, I]``,
``W [D, G*H, I]``, ``R [D, G*H, H]``, ``B [D, 2*G*H]`` (input biases, then recurrent biases),
``H0``/``C0 [D, N, H]``, ``P [D, 3*H]`` (peepholes i, o, f); ``Y [S, D, N, H]``,
``Y_h``/``Y_c [D, N, H]``. Every operand is present: the frontend writes zeros for the ones a
model leaves out, and folds away ``sequence_lens`` (it must equal ``S`` for every sample).

With ``f, g, h`` the direction's three activations (two, ``f, g``, for the GRU) and ``clip``
bounding every pre-activation to ``[-clip, clip]`` (``inf``: no clipping)::

    LSTM  i = f(x Wi' + h Ri' + Pi*c + bi)     o = f(x Wo' + h Ro' + Po*c' + bo)
          f = f(x Wf' + h Rf' + Pf*c + bf)     (1 - i with input_forget)
          c' = f*c + i*g(x Wc' + h Rc' + bc)   h' = o*h(c')
    GRU   z = f(x Wz' + h Rz' + bz)            r = f(x Wr' + h Rr' + br)
          n = g(x Wh' + (r*h) Rh' + Rbh + Wbh)      (linear_before_reset = false)
          n = g(x Wh' + Wbh + r*(h Rh' + Rbh))      (linear_before_reset = true)
          h' = (1 - z)*n + z*h

where ``b`` is the sum of the input and recurrent biases of a gate. The reverse direction runs
from the last step to the first; ``Y`` holds each direction's ``h`` for every step in sequence
order. Products accumulate in float32 for f16/f32 operands (f64 stays f64), as ``nn.matmul``;
activations are the op library's kernels (``nn.sigmoid``, ``nn.tanh``, ...).

``lower-to-mvm`` unrolls these ops when ``W``, ``R``, ``B`` (and ``P``) are constants: the input
weights on crossbars for all steps at once, the recurrent weights on crossbars once per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cimc.errors import VerifyError
from cimc.ir.types import TensorType
from cimc.ops import elementwise
from cimc.ops.linalg import compute_dtype
from cimc.ops.registry import define

DIRECTIONS = ("forward", "reverse", "bidirectional")

# ONNX activation name -> (number of alpha/beta parameters it takes, their defaults)
ACTIVATIONS: dict[str, tuple[int, tuple[float, float]]] = {
    "Sigmoid": (0, (0.0, 0.0)),
    "Tanh": (0, (0.0, 0.0)),
    "Relu": (0, (0.0, 0.0)),
    "LeakyRelu": (1, (0.01, 0.0)),
    "HardSigmoid": (2, (0.2, 0.5)),
    "Affine": (2, (1.0, 0.0)),
    "ScaledTanh": (2, (1.0, 1.0)),
}


def activation(name: str, alpha: float, beta: float) -> Callable[[np.ndarray], np.ndarray]:
    """The numpy kernel of ONNX recurrent activation ``name`` (one of :data:`ACTIVATIONS`)."""
    if name == "Sigmoid":
        return lambda x: elementwise.sigmoid({}, x)
    if name == "Tanh":
        return lambda x: elementwise.tanh({}, x)
    if name == "Relu":
        return lambda x: elementwise.relu({}, x)
    if name == "LeakyRelu":
        return lambda x: elementwise.leaky_relu({"alpha": alpha}, x)
    if name == "HardSigmoid":
        return lambda x: elementwise.hard_sigmoid({"alpha": alpha, "beta": beta}, x)
    if name == "Affine":
        return lambda x: (x * x.dtype.type(alpha) + x.dtype.type(beta)).astype(x.dtype)
    if name == "ScaledTanh":
        return lambda x: (elementwise.tanh({}, x * x.dtype.type(beta)) * x.dtype.type(alpha))
    raise VerifyError(f"unknown recurrent activation {name!r}")


def directions(attrs: dict[str, Any]) -> int:
    return 2 if attrs["direction"] == "bidirectional" else 1


def _check_attrs(op: str, attrs: dict[str, Any], per_direction: int) -> None:
    if attrs["direction"] not in DIRECTIONS:
        raise VerifyError(f"{op}: direction must be one of {', '.join(DIRECTIONS)}, "
                          f"got {attrs['direction']!r}")
    n = per_direction * directions(attrs)
    acts = attrs["activations"]
    if not isinstance(acts, list) or len(acts) != n:
        raise VerifyError(f"{op}: activations must list {n} names ({per_direction} per "
                          f"direction), got {acts!r}")
    bad = [a for a in acts if a not in ACTIVATIONS]
    if bad:
        raise VerifyError(f"{op}: activation {bad[0]!r} is not supported; cimc supports "
                          f"{', '.join(ACTIVATIONS)}")
    for key in ("activation_alpha", "activation_beta"):
        v = attrs[key]
        if not isinstance(v, list) or len(v) != n or not all(isinstance(e, float) for e in v):
            raise VerifyError(f"{op}: {key} must list {n} floats (one per activation), "
                              f"got {v!r}")
    clip = attrs["clip"]
    if not isinstance(clip, float) or not clip > 0:
        raise VerifyError(f"{op}: clip must be a positive float (inf: none), got {clip!r}")


def _check_operands(op: str, gates: int, x: TensorType, w: TensorType, r: TensorType,
                    b: TensorType, h0: TensorType, d: int) -> int:
    """Shapes and dtypes shared by the LSTM and GRU; returns the hidden size."""
    if x.dtype not in ("f16", "f32", "f64"):
        raise VerifyError(f"{op}: X must be a float tensor, got {x}")
    for name, t in (("W", w), ("R", r), ("B", b), ("initial_h", h0)):
        if t.dtype != x.dtype:
            raise VerifyError(f"{op}: {name} {t} must have X's dtype {x.dtype}")
    if x.rank != 3:
        raise VerifyError(f"{op}: X must be [seq, batch, input], got {x}")
    _, n, i = x.shape
    hidden = r.shape[-1] if r.rank == 3 else 0
    want = {"W": (d, gates * hidden, i), "R": (d, gates * hidden, hidden),
            "B": (d, 2 * gates * hidden), "initial_h": (d, n, hidden)}
    for name, t in (("W", w), ("R", r), ("B", b), ("initial_h", h0)):
        if t.shape != want[name]:
            raise VerifyError(f"{op}: {name} must have shape {list(want[name])}, got {t}")
    if hidden < 1:
        raise VerifyError(f"{op}: the hidden size must be >= 1, got {r}")
    return hidden


def _clip(x: np.ndarray, clip: float) -> np.ndarray:
    return x if math.isinf(clip) else np.clip(x, -clip, clip).astype(x.dtype, copy=False)


def _steps(s: int, reverse: bool) -> range:
    return range(s - 1, -1, -1) if reverse else range(s)


def _acts(attrs: dict[str, Any], d: int, k: int) -> list[Callable[[np.ndarray], np.ndarray]]:
    """The ``k`` activations of direction ``d``."""
    sl = slice(d * k, (d + 1) * k)
    return [activation(a, al, be) for a, al, be in zip(
        attrs["activations"][sl], attrs["activation_alpha"][sl], attrs["activation_beta"][sl])]


def _reverse(attrs: dict[str, Any], d: int) -> bool:
    return attrs["direction"] == "reverse" or d == 1


# ----------------------------------------------------------------------------- nn.lstm


def _lstm_infer(attrs: dict[str, Any], x, w, r, b, h0, c0, p) -> list[TensorType]:
    op = "nn.lstm"
    _check_attrs(op, attrs, 3)
    if not isinstance(attrs["input_forget"], bool):
        raise VerifyError(f"{op}: input_forget must be true or false")
    d = directions(attrs)
    hidden = _check_operands(op, 4, x, w, r, b, h0, d)
    for name, t, shape in (("initial_c", c0, h0.shape), ("P", p, (d, 3 * hidden))):
        if t.dtype != x.dtype or t.shape != shape:
            raise VerifyError(f"{op}: {name} must be {TensorType(shape, x.dtype)}, got {t}")
    s, n = x.shape[:2]
    state = x.with_shape((d, n, hidden))
    return [x.with_shape((s, d, n, hidden)), state, state]


def _work(gates: int):
    def work(attrs: dict[str, Any], operands: list[tuple[int, ...]],
             results: list[tuple[int, ...]]) -> int:
        """Multiply-accumulates of the input and recurrent products, every step and direction."""
        (s, n, i), hidden = operands[0], operands[2][-1]
        return s * directions(attrs) * n * gates * hidden * (i + hidden)

    return work


@define(
    "nn.lstm",
    operands=7,
    attrs=("direction", "activations", "activation_alpha", "activation_beta", "clip",
           "input_forget"),
    infer=_lstm_infer,
    work=_work(4),
    summary="ONNX LSTM (layout 0; gates i, o, f, c; peepholes; every operand present).",
)
def lstm(attrs: dict[str, Any], x, w, r, b, h0, c0, p) -> list[np.ndarray]:
    ct = compute_dtype(x.dtype)
    s, n, _ = x.shape
    hidden = r.shape[-1]
    clip = float(attrs["clip"])
    ys, hs, cs = [], [], []
    for d in range(directions(attrs)):
        f, g, h = _acts(attrs, d, 3)
        wt, rt = w[d].astype(ct).T, r[d].astype(ct).T
        bias = (b[d, :4 * hidden] + b[d, 4 * hidden:]).astype(ct)
        pi, po, pf = (p[d, k * hidden:(k + 1) * hidden].astype(ct) for k in range(3))
        ht, c = h0[d].astype(ct), c0[d].astype(ct)
        y = np.empty((s, n, hidden), ct)
        for t in _steps(s, _reverse(attrs, d)):
            gates = x[t].astype(ct) @ wt + ht @ rt + bias
            gi, go, gf, gc = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
            i = f(_clip(gi + pi * c, clip))
            forget = (1 - i).astype(ct) if attrs["input_forget"] else f(_clip(gf + pf * c, clip))
            c = forget * c + i * g(_clip(gc, clip))
            o = f(_clip(go + po * c, clip))
            ht = o * h(c)
            y[t] = ht
        ys.append(y)
        hs.append(ht)
        cs.append(c)
    out = np.stack(ys, 1), np.stack(hs), np.stack(cs)
    return [a.astype(x.dtype, copy=False) for a in out]


# ----------------------------------------------------------------------------- nn.gru


def _gru_infer(attrs: dict[str, Any], x, w, r, b, h0) -> list[TensorType]:
    op = "nn.gru"
    _check_attrs(op, attrs, 2)
    if not isinstance(attrs["linear_before_reset"], bool):
        raise VerifyError(f"{op}: linear_before_reset must be true or false")
    d = directions(attrs)
    hidden = _check_operands(op, 3, x, w, r, b, h0, d)
    s, n = x.shape[:2]
    return [x.with_shape((s, d, n, hidden)), x.with_shape((d, n, hidden))]


@define(
    "nn.gru",
    operands=5,
    attrs=("direction", "activations", "activation_alpha", "activation_beta", "clip",
           "linear_before_reset"),
    infer=_gru_infer,
    work=_work(3),
    summary="ONNX GRU (layout 0; gates z, r, h; linear_before_reset; every operand present).",
)
def gru(attrs: dict[str, Any], x, w, r, b, h0) -> list[np.ndarray]:
    ct = compute_dtype(x.dtype)
    s, n, _ = x.shape
    hidden = r.shape[-1]
    h2 = 2 * hidden
    clip = float(attrs["clip"])
    ys, hs = [], []
    for d in range(directions(attrs)):
        f, g = _acts(attrs, d, 2)
        wt, rt = w[d].astype(ct).T, r[d].astype(ct).T
        wb, rb = b[d, :3 * hidden].astype(ct), b[d, 3 * hidden:].astype(ct)
        ht = h0[d].astype(ct)
        y = np.empty((s, n, hidden), ct)
        for t in _steps(s, _reverse(attrs, d)):
            xw = x[t].astype(ct) @ wt + wb
            zr = f(_clip(xw[:, :h2] + ht @ rt[:, :h2] + rb[:h2], clip))
            z, rg = zr[:, :hidden], zr[:, hidden:]
            if attrs["linear_before_reset"]:
                pre = xw[:, h2:] + rg * (ht @ rt[:, h2:] + rb[h2:])
            else:
                pre = xw[:, h2:] + (rg * ht) @ rt[:, h2:] + rb[h2:]
            nt = g(_clip(pre, clip))
            ht = (1 - z) * nt + z * ht
            y[t] = ht
        ys.append(y)
        hs.append(ht)
    return [np.stack(ys, 1).astype(x.dtype, copy=False), np.stack(hs).astype(x.dtype, copy=False)]
