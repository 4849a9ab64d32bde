"""Pass "lower-to-mvm": conv, gemm and matmul with constant weights become matrix-vector products.

- ``nn.conv(x, w[, b])`` with a constant ``w [M, C/G, *k]`` (1-D, 2-D, N-d):
  ``cim.im2col(x)`` -> ``[N, *O, C*prod(k)]``, ``cim.mvm`` with ``w`` as ``[C*prod(k), M]``
  (``G == 1``) or grouped ``[G, C/G*prod(k), M/G]`` (grouped and depthwise conv), ``nn.add`` of
  the bias (in the ``[N, *O, M]`` layout), ``nn.transpose`` back to ``[N, M, *O]``.
- ``nn.gemm(a, b[, c])`` with a constant ``b``: ``nn.transpose(a)`` when ``trans_a``, ``cim.mvm``
  with ``alpha * op(b)`` as ``[K, M]``, then ``+ beta * c`` (folded into one constant when ``c`` is
  constant).
- ``nn.matmul(a, b)`` with a constant 2-D ``b`` (float): ``cim.mvm(a, b)``.

Everything else stays as it is: a matmul of two activations, a conv or gemm whose weight is
computed at run time, a matmul with a batched (rank > 2) or left-hand constant, integer ops.
Every op made from a layer carries ``layer``: the source op's ``layer`` attribute, else a name
generated in program order per kind (``conv0``, ``conv1``, ``gemm0``, ``matmul0``), skipping
names the module already uses. Dead weights are removed afterwards.

Stage: nn -> cim. Test: tests/passes/test_lower_to_mvm.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cimc.errors import PassError
from cimc.ops import registry
from cimc.ir.core import Block, Builder, Module, Op, Value
from cimc.passes.base import Pass, PassContext
from cimc.passes.canonicalize import constant_value
from cimc.passes.dce import remove_dead_ops

_KIND = {"nn.conv": "conv", "nn.gemm": "gemm", "nn.matmul": "matmul"}


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
    m, cg, kernel = w.shape[0], w.shape[1], list(w.shape[2:])
    k = cg * int(np.prod(kernel))
    if groups == 1:
        weight = transposed(w.reshape(m, k))
    else:
        weight = w.reshape(groups, m // groups, k).transpose(0, 2, 1)
    cols = b.create(
        "cim.im2col",
        [x],
        {
            "kernel_shape": [int(d) for d in kernel],
            "strides": [int(s) for s in attrs["strides"]],
            "pads": [int(p) for p in attrs["pads"]],
            "dilations": [int(d) for d in attrs["dilations"]],
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


# op name -> (does it have stationary weights?, rewrite it before the op; returns the new result)
_LOWER: dict[str, tuple[Callable[[Op], bool], Callable[[Builder, Op, dict], Value]]] = {
    "nn.conv": (_match_conv, _lower_conv),
    "nn.gemm": (_match_gemm, _lower_gemm),
    "nn.matmul": (_match_matmul, _lower_matmul),
}


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
    """The layer name lower-to-mvm gives each op it lowers (conv, gemm or matmul with constant
    weights): its ``layer`` attribute, else ``conv0``, ``gemm0``, ... in program order. Passes
    that run before lowering (prune-similar) report layers under these names."""
    namer = LayerNamer(module)
    return {op: namer.name_for(op, _KIND[op.name])
            for f in module.funcs for op in _lowerable(f.body)}


def _lower_ops(ops: list[Op], names: dict[Op, str]) -> dict[Value, Value]:
    replaced: dict[Value, Value] = {}
    for op in ops:
        layer = {"layer": names[op]}
        new = _LOWER[op.name][1](Builder.before(op), op, layer)
        if new.type != op.result.type:
            raise PassError(
                f"lower-to-mvm: {op.name}{' at ' + op.loc if op.loc else ''} lowered to {new.type}, "
                f"expected {op.result.type} (a bug)"
            )
        replaced[op.result] = new
    return replaced


@dataclass
class LowerToMvm(Pass):
    """Express conv, gemm and matmul with constant weights as im2col + matrix-vector products.

    Stage: nn -> cim (cim.im2col, cim.mvm with constant weights, digital nn ops around them).
    Test: tests/passes/test_lower_to_mvm.py.
    """

    name = "lower-to-mvm"
    produces_stage = "cim"

    def run(self, module: Module, ctx: PassContext) -> None:
        names = layer_names(module)
        for f in module.funcs:
            f.replace_uses_map(_lower_ops(_lowerable(f.body), names))
            remove_dead_ops(f.body)
