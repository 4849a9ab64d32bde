"""Pass "lower-to-mvm": conv, gemm and matmul with constant weights become matrix-vector products.

- ``nn.conv(x, w[, b])`` with a constant ``w [M, C/G, *k]`` (1-D, 2-D, N-d):
  ``cim.im2col(x)`` -> ``[N, *O, C*prod(k)]``, ``cim.mvm`` with ``w`` as ``[C*prod(k), M]``
  (``G == 1``) or grouped ``[G, C/G*prod(k), M/G]`` (grouped and depthwise conv), ``nn.add`` of
  the bias (in the ``[N, *O, M]`` layout), ``nn.transpose`` back to ``[N, M, *O]``.
- ``nn.gemm(a, b[, c])`` with a constant ``b``: ``nn.transpose(a)`` when ``trans_a``, ``cim.mvm``
  with ``alpha * op(b)`` as ``[K, M]``, then ``+ beta * c`` (folded into one constant when ``c`` is
  constant).
- ``nn.matmul(a, b)`` with a constant 2-D ``b`` (float): ``cim.mvm(a, b)``.
- ``nn.lstm`` and ``nn.gru`` with constant ``W``, ``R``, ``B`` (and peepholes ``P``), unrolled
  over their (static) sequence, each direction on its own: one ``cim.mvm`` of the whole input
  sequence by ``W'`` plus the folded biases, then per step a ``cim.mvm`` of the state by ``R'``
  and the gates as digital ops (``nn.split``, activations, ``nn.mul``, ``nn.add``), in the
  order of ``cimc/ops/recurrent.py``'s equations; ``Y`` is the steps' states concatenated.
  A GRU without ``linear_before_reset`` multiplies ``r*h`` by ``Rh'`` in a separate ``cim.mvm``.
  Zero initial states (constants) skip the first step's recurrent products. The steps'
  recurrent ``cim.mvm`` share one weight constant and one layer name, so ``tile`` and ``place``
  map them onto the same crossbars (read once per step: the runtime has no loops yet).

Everything else stays as it is: a matmul of two activations, a conv or gemm whose weight is
computed at run time, a matmul with a batched (rank > 2) or left-hand constant, integer ops.
Every op made from a layer carries ``layer``: the source op's ``layer`` attribute, else a name
generated in program order per kind (``conv0``, ``conv1``, ``gemm0``, ``matmul0``, ``lstm0``),
skipping names the module already uses; a recurrent layer's products are ``NAME.input`` and
``NAME.recurrent`` (``NAME.reverse.*`` for the backward direction). Dead weights are removed
afterwards.

Stage: nn -> cim. Test: tests/passes/test_lower_to_mvm.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.errors import PassError
from cimc.ir.core import Block, Builder, Module, Op, Value
from cimc.ops import registry
from cimc.ops.linalg import conv_weight_matrix
from cimc.passes.base import Pass, PassContext
from cimc.passes.canonicalize import constant_value
from cimc.passes.dce import remove_dead_ops

_KIND = {"nn.conv": "conv", "nn.gemm": "gemm", "nn.matmul": "matmul", "nn.lstm": "lstm",
         "nn.gru": "gru"}


class LayerNamer:
    """Stable layer names: per-kind counters in program order, skipping names already taken."""

    def __init__(self, module: Module) -> None:
        self.taken = {op.attrs["layer"] for op in module.walk() if "layer" in op.attrs}
        self.counters: dict[str, int] = {}

    def name_for(self, op: Op, kind: str) -> str:
        if "layer" in op.attrs:
            return str(op.attrs["layer"])
        while True:
            i = self.counters.get(kind, 0)
            self.counters[kind] = i + 1
            name = f"{kind}{i}"
            if name not in self.taken:
                self.taken.add(name)
                return name


def transposed(w: np.ndarray, tile: int = 256) -> np.ndarray:
    """A C-contiguous copy of the 2-D ``w.T``, copied in square tiles: several times faster than
    ``np.ascontiguousarray(w.T)`` on large weights, whose plain strided copy thrashes the cache."""
    m, k = w.shape
    out = np.empty((k, m), w.dtype)
    for i in range(0, m, tile):
        for j in range(0, k, tile):
            out[j : j + tile, i : i + tile] = w[i : i + tile, j : j + tile].T
    return out


def _is_float_pair(x: Value, w: np.ndarray) -> bool:
    return x.type.dtype.startswith("f") and np.dtype(w.dtype) == x.type.np_dtype


def _match_conv(op: Op) -> bool:
    x, w = op.operands[0], constant_value(op.operands[1])
    return w is not None and _is_float_pair(x, w) and w.ndim == x.type.rank and w.ndim >= 3


def _lower_conv(b: Builder, op: Op, layer: dict) -> Value:
    x = op.operands[0]
    w = constant_value(op.operands[1])
    assert w is not None
    attrs = registry.lookup(op.name).with_defaults(op.attrs)
    groups = int(attrs["group"])
    kernel = list(w.shape[2:])
    weight = np.ascontiguousarray(conv_weight_matrix(w, groups))
    cols = b.create(
        "cim.im2col",
        [x],
        {
            "kernel_shape": [int(d) for d in kernel],
            "strides": [int(s) for s in attrs["strides"]],
            "pads": [int(p) for p in attrs["pads"]],
            "dilations": [int(d) for d in attrs["dilations"]],
            **({"groups": groups} if groups > 1 else {}),
            **layer,
        },
    ).result
    y = b.create("cim.mvm", [cols, b.constant(weight)], dict(layer)).result
    if len(op.operands) > 2:
        y = b.create("nn.add", [y, op.operands[2]], dict(layer)).result
    d = x.type.rank - 2
    perm = [0, d + 1, *range(1, d + 1)]
    return b.create("nn.transpose", [y], {"perm": perm, **layer}).result


def _match_gemm(op: Op) -> bool:
    a, w = op.operands[0], constant_value(op.operands[1])
    return w is not None and _is_float_pair(a, w) and w.ndim == 2


def _lower_gemm(b: Builder, op: Op, layer: dict) -> Value:
    a = op.operands[0]
    w = constant_value(op.operands[1])
    assert w is not None
    attrs = registry.lookup(op.name).with_defaults(op.attrs)
    alpha, beta = float(attrs["alpha"]), float(attrs["beta"])
    if attrs["trans_a"]:
        a = b.create("nn.transpose", [a], {"perm": [1, 0], **layer}).result
    if attrs["trans_b"] or alpha != 1.0:
        weight = transposed(w) if attrs["trans_b"] else w.copy()
        if alpha != 1.0:
            weight *= weight.dtype.type(alpha)
        w_val = b.constant(weight)
    else:
        w_val = op.operands[1]  # used as it is
    y = b.create("cim.mvm", [a, w_val], dict(layer)).result
    if len(op.operands) < 3 or beta == 0.0:
        return y
    c_val = op.operands[2]
    c = constant_value(c_val)
    if c is not None:
        add = b.constant((np.asarray(c, np.float64) * beta).astype(c.dtype))
    elif beta == 1.0:
        add = c_val
    else:
        scale = b.constant(np.asarray(beta, dtype=c_val.type.np_dtype))
        add = b.create("nn.mul", [c_val, scale], dict(layer)).result
    return b.create("nn.add", [y, add], dict(layer)).result


def _match_matmul(op: Op) -> bool:
    a, w = op.operands[0], constant_value(op.operands[1])
    return w is not None and _is_float_pair(a, w) and w.ndim == 2 and a.type.rank >= 1


def _lower_matmul(b: Builder, op: Op, layer: dict) -> Value:
    return b.create("cim.mvm", [op.operands[0], op.operands[1]], dict(layer)).result


# ----------------------------------------------------------------------------- recurrent layers


def _match_recurrent(op: Op) -> bool:
    x = op.operands[0]
    weights = [constant_value(v) for v in op.operands[1:4]]  # W, R, B
    if op.name == "nn.lstm":
        weights.append(constant_value(op.operands[6]))  # P
    return all(w is not None and _is_float_pair(x, w) for w in weights) and x.type.shape[0] > 0


class _Unroll:
    """Builds the digital ops of one unrolled recurrent layer before it, with its layer name."""

    def __init__(self, b: Builder, op: Op, layer: dict) -> None:
        self.b = b
        self.layer = layer
        self.name = str(layer["layer"])
        self.attrs = registry.lookup(op.name).with_defaults(op.attrs)
        self.dtype = op.operands[0].type.np_dtype
        self.weights: dict[str, Value] = {}  # one constant per weight, shared by the steps
        self.one: Value | None = None

    def op(self, name: str, operands: list[Value], **attrs) -> Value:
        return self.b.create(name, operands, {**attrs, **self.layer}).result

    def const(self, value) -> Value:
        return self.b.constant(np.asarray(value, self.dtype))

    def mvm(self, x: Value, w: np.ndarray, what: str, d: int) -> Value:
        """``x @ w'`` on crossbars, ``w`` an ONNX ``[M, K]`` weight (one output per row)."""
        reverse = ".reverse" if d == 1 or self.attrs["direction"] == "reverse" else ""
        layer = f"{self.name}{reverse}.{what}"
        if layer not in self.weights:
            self.weights[layer] = self.b.constant(transposed(w))
        return self.b.create("cim.mvm", [x, self.weights[layer]], {"layer": layer}).result

    def one_minus(self, x: Value) -> Value:
        if self.one is None:
            self.one = self.const(1.0)
        return self.op("nn.sub", [self.one, x])

    def add(self, x: Value | None, y: Value | None) -> Value | None:
        """``x + y``, where None stands for a zero."""
        if x is None or y is None:
            return y if x is None else x
        return self.op("nn.add", [x, y])

    def mul(self, x: Value | None, y: Value | None) -> Value | None:
        """``x * y``, where None stands for a zero."""
        return None if x is None or y is None else self.op("nn.mul", [x, y])

    def split(self, x: Value, sizes: list[int]) -> list[Value]:
        op = self.b.create("nn.split", [x], {"axis": 1, "sizes": sizes, **self.layer})
        return list(op.results)

    def reshape(self, x: Value, shape: tuple[int, ...]) -> Value:
        return self.op("nn.reshape", [x], shape=[int(d) for d in shape])

    def take(self, x: Value, axis: int, index: int, shape: tuple[int, ...]) -> Value:
        """``x[index]`` along ``axis``, reshaped to ``shape``."""
        piece = self.op("nn.slice", [x], starts=[index], ends=[index + 1], axes=[axis], steps=[1])
        return self.reshape(piece, shape)

    def state(self, v: Value, d: int) -> Value | None:
        """Direction ``d``'s initial state ``[N, H]``; None when it is a constant zero."""
        known = constant_value(v)
        if known is not None and not known[d].any():
            return None
        return self.take(v, 0, d, v.type.shape[1:])

    def activation(self, x: Value, k: int, clipped: bool = True) -> Value:
        """Activation ``k`` of the op's list, of the clipped ``x`` (a gate's pre-activation)."""
        clip = float(self.attrs["clip"])
        if clipped and not math.isinf(clip):
            x = self.op("nn.clip", [x], min=-clip, max=clip)
        name = self.attrs["activations"][k]
        alpha, beta = self.attrs["activation_alpha"][k], self.attrs["activation_beta"][k]
        if name in ("Sigmoid", "Tanh", "Relu"):
            return self.op(f"nn.{name.lower()}", [x])
        if name == "LeakyRelu":
            return self.op("nn.leaky_relu", [x], alpha=alpha)
        if name == "HardSigmoid":
            return self.op("nn.hard_sigmoid", [x], alpha=alpha, beta=beta)
        if name == "Affine":
            return self.op("nn.add", [self.op("nn.mul", [x, self.const(alpha)]), self.const(beta)])
        assert name == "ScaledTanh", name
        inner = self.op("nn.tanh", [self.op("nn.mul", [x, self.const(beta)])])
        return self.op("nn.mul", [inner, self.const(alpha)])

    def inputs(self, x: Value, w: np.ndarray, bias: np.ndarray, d: int) -> Value:
        """The input products of every step at once, plus the folded biases: ``[S, N, G*H]``."""
        pre = self.mvm(x, w, "input", d)
        return self.add(pre, self.const(bias) if bias.any() else None)

    def outputs(self, per_dir: list[tuple[list[Value], list[Value | None]]],
                shape: tuple[int, ...]) -> list[Value]:
        """Y from each direction's per-step states, and the final states."""
        _, n, h = shape
        ys, finals = [], []
        for steps, last in per_dir:
            ys.append(self.op("nn.concat", [self.reshape(v, (1, 1, n, h)) for v in steps],
                              axis=0))
            finals.append([self.reshape(v, (1, n, h)) for v in last])
        y = ys[0] if len(ys) == 1 else self.op("nn.concat", ys, axis=1)
        states = [vs[0] if len(vs) == 1 else self.op("nn.concat", list(vs), axis=0)
                  for vs in zip(*finals)]
        return [y, *states]


def _order(s: int, reverse: bool) -> list[int]:
    return list(range(s - 1, -1, -1)) if reverse else list(range(s))


def _lower_lstm(b: Builder, op: Op, layer: dict) -> list[Value]:
    u = _Unroll(b, op, layer)
    x, _, _, _, h0, c0, _ = op.operands
    w, r, bias, p = (constant_value(op.operands[i]) for i in (1, 2, 3, 6))
    s, n, _ = x.type.shape
    hidden = r.shape[-1]
    per_dir = []
    for d in range(w.shape[0]):
        reverse = op.attrs["direction"] == "reverse" or d == 1
        pre = u.inputs(x, w[d], bias[d, :4 * hidden] + bias[d, 4 * hidden:], d)
        pi, po, pf = ((u.const(p[d, k * hidden:(k + 1) * hidden]) if p[d].any() else None)
                      for k in range(3))
        h, c = u.state(h0, d), u.state(c0, d)
        f_, g_, h_ = 3 * d, 3 * d + 1, 3 * d + 2
        steps: dict[int, Value] = {}
        for t in _order(s, reverse):
            gates = u.take(pre, 0, t, (n, 4 * hidden))
            if h is not None:
                gates = u.add(gates, u.mvm(h, r[d], "recurrent", d))
            gi, go, gf, gc = u.split(gates, [hidden] * 4)
            i = u.activation(u.add(gi, u.mul(pi, c)), f_)
            if u.attrs["input_forget"]:
                forget = u.one_minus(i)
            else:
                forget = u.activation(u.add(gf, u.mul(pf, c)), f_)
            new = u.op("nn.mul", [i, u.activation(gc, g_)])
            c = new if c is None else u.add(u.op("nn.mul", [forget, c]), new)
            o = u.activation(u.add(go, u.mul(po, c)), f_)
            h = u.op("nn.mul", [o, u.activation(c, h_, clipped=False)])
            steps[t] = h
        per_dir.append(([steps[t] for t in range(s)], [h, c]))
    return u.outputs(per_dir, (s, n, hidden))


def _lower_gru(b: Builder, op: Op, layer: dict) -> list[Value]:
    u = _Unroll(b, op, layer)
    x, _, _, _, h0 = op.operands
    w, r, bias = (constant_value(op.operands[i]) for i in (1, 2, 3))
    s, n, _ = x.type.shape
    hidden = r.shape[-1]
    h2 = 2 * hidden
    lbr = bool(u.attrs["linear_before_reset"])
    per_dir = []
    for d in range(w.shape[0]):
        reverse = op.attrs["direction"] == "reverse" or d == 1
        wb, rb = bias[d, :3 * hidden], bias[d, 3 * hidden:]
        folded = wb + np.concatenate([rb[:h2], np.zeros_like(rb[h2:]) if lbr else rb[h2:]])
        pre = u.inputs(x, w[d], folded, d)
        rb_h = u.const(rb[h2:]) if lbr and rb[h2:].any() else None
        h = u.state(h0, d)
        f_, g_ = 2 * d, 2 * d + 1
        steps: dict[int, Value] = {}
        for t in _order(s, reverse):
            gzr, gh = u.split(u.take(pre, 0, t, (n, 3 * hidden)), [h2, hidden])
            rec_h = None
            if h is not None and lbr:
                rec_zr, rec_h = u.split(u.mvm(h, r[d], "recurrent", d), [h2, hidden])
                gzr = u.add(gzr, rec_zr)
            elif h is not None:
                gzr = u.add(gzr, u.mvm(h, r[d, :h2], "recurrent", d))
            z, rg = u.split(u.activation(gzr, f_), [hidden, hidden])
            if lbr:
                inner = u.add(rec_h, rb_h)
                pre_h = u.add(gh, u.mul(rg, inner))
            elif h is not None:
                pre_h = u.add(gh, u.mvm(u.op("nn.mul", [rg, h]), r[d, h2:], "recurrent_h", d))
            else:
                pre_h = gh
            cand = u.activation(pre_h, g_)
            keep = u.op("nn.mul", [u.one_minus(z), cand])
            h = keep if h is None else u.add(keep, u.op("nn.mul", [z, h]))
            steps[t] = h
        per_dir.append(([steps[t] for t in range(s)], [h]))
    return u.outputs(per_dir, (s, n, hidden))


# op name -> (does it have stationary weights?, rewrite it before the op; returns the new
# result, or the new results of a multi-result op)
_LOWER: dict[str, tuple[Callable[[Op], bool], Callable[[Builder, Op, dict], Any]]] = {
    "nn.conv": (_match_conv, _lower_conv),
    "nn.gemm": (_match_gemm, _lower_gemm),
    "nn.matmul": (_match_matmul, _lower_matmul),
    "nn.lstm": (_match_recurrent, _lower_lstm),
    "nn.gru": (_match_recurrent, _lower_gru),
}

# The ops this pass puts on crossbars (when their weights are constants).
LOWERED_OPS = tuple(_LOWER)


def _lowerable(block: Block) -> list[Op]:
    """The ops lower-to-mvm rewrites, in the order it visits them (regions before their op)."""
    out = []
    for op in block.ops:
        for r in op.regions:
            out.extend(_lowerable(r))
        rule = _LOWER.get(op.name)
        if rule is not None and rule[0](op):
            out.append(op)
    return out


def layer_names(module: Module) -> dict[Op, str]:
    """The layer name lower-to-mvm gives each op it lowers (conv, gemm, matmul, lstm or gru with
    constant weights): its ``layer`` attribute, else ``conv0``, ``gemm0``, ... in program
    order. Passes that run before lowering (prune-similar) report layers under these names."""
    namer = LayerNamer(module)
    return {op: namer.name_for(op, _KIND[op.name])
            for f in module.funcs for op in _lowerable(f.body)}


def _lower_ops(ops: list[Op], names: dict[Op, str]) -> dict[Value, Value]:
    replaced: dict[Value, Value] = {}
    for op in ops:
        layer = {"layer": names[op]}
        new = _LOWER[op.name][1](Builder.before(op), op, layer)
        news = new if isinstance(new, list) else [new]
        for old, value in zip(op.results, news, strict=True):
            if value.type != old.type:
                raise PassError(
                    f"lower-to-mvm: {op.name}{' at ' + op.loc if op.loc else ''} lowered to "
                    f"{value.type}, expected {old.type} (a bug)"
                )
            replaced[old] = value
    return replaced


@dataclass
class LowerToMvm(Pass):
    """Express conv, gemm and matmul with constant weights as im2col + matrix-vector products.

    Stage: nn -> cim (cim.im2col, cim.mvm with constant weights, digital nn ops around them).
    Test: tests/passes/test_lower_to_mvm.py.
    """

    name = "lower-to-mvm"
    produces_stage = "cim"

    @classmethod
    def applied_to(cls, module: Module) -> bool:
        return module.attrs.get("stage") == "cim"

    def run(self, module: Module, ctx: PassContext) -> None:
        names = layer_names(module)
        for f in module.funcs:
            f.replace_uses_map(_lower_ops(_lowerable(f.body), names))
            remove_dead_ops(f.body)
