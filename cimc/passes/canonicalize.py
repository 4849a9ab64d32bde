"""Pass "canonicalize": local simplifications, repeated until nothing changes.

Rewrites (each one keeps the interpreter's outputs, up to float rounding):

- ``nn.batch_norm`` folded into the ``nn.conv``, ``nn.gemm`` or ``nn.matmul`` that feeds it, when
  that op's only user is the batch norm and its weights (and bias, and the batch norm's four
  parameters) are constants. With ``a = scale / sqrt(var + eps)``, ``b = bias - mean * a``: conv
  weight rows and bias are scaled by ``a`` and ``b`` added to the bias; gemm weight columns (rows
  when ``trans_b``) are scaled and ``C`` becomes ``beta * C * a + b`` with ``beta = 1``; a 2-D
  ``x @ W`` becomes ``x @ (W * a) + b``; a batch norm after a batch norm merges into it. Any
  other batch norm stays.
- The same folding for ``y * c`` and ``y + c`` (either operand order) where ``c`` is a constant
  that varies along axis 1 only (``[C, 1, 1]``, ``[1, C]``, a scalar): the per-channel "scale"
  layers that Caffe2-exported models put after their batch norms.
- Constant folding: an ``nn.*`` op without regions whose operands are all ``nn.constant`` is
  evaluated with the op registry and replaced by constants, unless its results would hold more
  elements than ``max(elements of its operands, fold_limit)``. This keeps shape arithmetic and
  weight reshapes/transposes folded, but never lets a broadcast (``x + 0`` of a scalar against
  an activation-sized constant, ``Expand``-like patterns) blow up the IR.
- ``nn.shape`` of a value becomes a constant (types are static).
- ``nn.identity`` (ONNX Identity and inference Dropout) is removed.
- ``reshape(reshape(x))`` -> ``reshape(x)``; a reshape to the operand's own shape is removed;
  ``transpose(transpose(x, p), q)`` -> ``transpose(x, p[q])``; an identity permutation is removed;
  ``nn.cast`` to the operand's own dtype and ``nn.expand`` to its own shape are removed.
- Dead ops are removed (``dce``) after every sweep.

Stage: any -> same. Test: tests/passes/test_canonicalize.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cimc.errors import PassError
from cimc.ops import registry
from cimc.ir.core import Block, Builder, Func, Module, Op, Value
from cimc.passes.base import Pass, PassContext
from cimc.passes.dce import remove_dead_ops


def constant_value(v: Value) -> np.ndarray | None:
    """The array of ``v`` when an ``nn.constant`` defines it, else None."""
    op = v.op
    if op is not None and op.name == "nn.constant":
        return op.attrs["value"]
    return None


class _Sweep:
    """One pass over a function's ops, applying the first matching rule to each op.

    Replacements are recorded in a map and applied to operands as ops are visited (definitions
    precede uses), then once more over the whole function at the end. ``users`` starts exact and
    is kept conservative: a value's list may hold users that have died in this sweep, never miss
    a live one, so "only user" checks never fold wrongly; the next sweep sees the exact map.
    """

    def __init__(self, func: Func, fold_limit: int) -> None:
        self.func = func
        self.fold_limit = fold_limit
        self.users: dict[Value, list[Op]] = func.uses()
        self.replaced: dict[Value, Value] = {}
        self.changed = False

    # --- bookkeeping
    def resolve(self, v: Value) -> Value:
        while v in self.replaced:
            v = self.replaced[v]
        return v

    def replace(self, old: Value, new: Value) -> None:
        if old.type != new.type:
            raise PassError(
                f"canonicalize: replacing a {old.type} value by a {new.type} one (a bug)"
            )
        self.replaced[old] = new
        self.users.setdefault(new, []).extend(self.users.pop(old, []))
        self.changed = True

    def set_operand(self, op: Op, index: int, new: Value) -> None:
        old = op.operands[index]
        op.operands[index] = new
        lst = self.users.get(old)
        if lst and op in lst:
            lst.remove(op)
        self.users.setdefault(new, []).append(op)
        self.changed = True

    def create(self, before: Op, name: str, operands: list[Value], attrs: dict) -> Op:
        new = Builder.before(before).create(name, operands, attrs)
        for v in operands:
            self.users.setdefault(v, []).append(new)
        return new

    def constant(self, before: Op, value: np.ndarray) -> Value:
        return Builder.before(before).constant(value)

    def only_user(self, v: Value, op: Op) -> bool:
        lst = self.users.get(v, [])
        return len(lst) == 1 and lst[0] is op

    # --- driving
    def run(self) -> bool:
        self.block(self.func.body)
        self.func.replace_uses_map({k: self.resolve(k) for k in self.replaced})
        return self.changed

    def block(self, block: Block) -> None:
        for op in list(block.ops):
            op.operands = [self.resolve(v) for v in op.operands]
            for r in op.regions:
                self.block(r)
            for _ in range(8):  # in-place rewrites may enable another rule on the same op
                if any(r in self.replaced for r in op.results):
                    break
                if not any(rule(self, op) for rule in RULES):
                    break


# ----------------------------------------------------------------------------- rules

Rule = Callable[[_Sweep, Op], bool]


def remove_identity(sw: _Sweep, op: Op) -> bool:
    if op.name != "nn.identity":
        return False
    sw.replace(op.result, op.operands[0])
    return True


def fold_shape(sw: _Sweep, op: Op) -> bool:
    if op.name != "nn.shape":
        return False
    t = op.operands[0].type
    # A zero-strided view: the shape without allocating the tensor.
    dummy = np.broadcast_to(np.zeros((), t.np_dtype), t.shape)
    _replace_by_constants(sw, op, [dummy])
    return True


def fold_constants(sw: _Sweep, op: Op) -> bool:
    if op.dialect != "nn" or op.name == "nn.constant" or op.regions or not op.operands:
        return False
    values = [constant_value(v) for v in op.operands]
    if any(v is None for v in values):
        return False
    n_in = sum(int(v.size) for v in values)
    n_out = sum(r.type.numel for r in op.results)
    if n_out > max(n_in, sw.fold_limit):
        return False
    _replace_by_constants(sw, op, values)
    return True


def _replace_by_constants(sw: _Sweep, op: Op, inputs: list[np.ndarray]) -> None:
    opdef = registry.lookup(op.name)
    out = opdef.evaluate(opdef.with_defaults(op.attrs), *inputs)
    outs = out if isinstance(out, (list, tuple)) else [out]
    if len(outs) != len(op.results):
        raise PassError(
            f"canonicalize: {op.name} evaluated to {len(outs)} results, not {len(op.results)}"
        )
    for r, a in zip(op.results, outs):
        a = np.array(a, dtype=r.type.np_dtype, order="C")
        if a.shape != r.type.shape:
            raise PassError(
                f"canonicalize: folding {op.name} gave shape {a.shape}, its type says {r.type} (a bug)"
            )
        sw.replace(r, sw.constant(op, a))


def simplify_reshape(sw: _Sweep, op: Op) -> bool:
    if op.name != "nn.reshape":
        return False
    x = op.operands[0]
    if x.type.shape == op.result.type.shape:
        sw.replace(op.result, x)
        return True
    if x.op is not None and x.op.name == "nn.reshape":
        sw.set_operand(op, 0, x.op.operands[0])
        return True
    return False


def simplify_transpose(sw: _Sweep, op: Op) -> bool:
    if op.name != "nn.transpose":
        return False
    x = op.operands[0]
    perm = [int(p) for p in op.attrs["perm"]]
    if perm == list(range(len(perm))):
        sw.replace(op.result, x)
        return True
    if x.op is not None and x.op.name == "nn.transpose":
        inner = [int(p) for p in x.op.attrs["perm"]]
        op.attrs["perm"] = [inner[p] for p in perm]
        sw.set_operand(op, 0, x.op.operands[0])
        return True
    return False


def remove_noop_cast_or_expand(sw: _Sweep, op: Op) -> bool:
    """A cast to the operand's own dtype, or an expand to its own shape."""
    if op.name not in ("nn.cast", "nn.expand") or op.operands[0].type != op.result.type:
        return False
    sw.replace(op.result, op.operands[0])
    return True


# --- batch norm folding


def _bn_affine(bn: Op) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) with ``batch_norm(x) == x * a + b`` along axis 1, in float64; None if not constant."""
    params = [constant_value(v) for v in bn.operands[1:5]]
    if any(p is None for p in params):
        return None
    scale, bias, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
    eps = float(registry.lookup(bn.name).with_defaults(bn.attrs)["epsilon"])
    a = scale / np.sqrt(var + eps)
    return a, bias - mean * a


def fold_batch_norm(sw: _Sweep, bn: Op) -> bool:
    if bn.name != "nn.batch_norm" or len(bn.operands) != 5:
        return False
    return _fold_affine(sw, bn, bn.operands[0], lambda: _bn_affine(bn))


def _per_channel(c: np.ndarray, x: Value) -> np.ndarray | None:
    """``c`` as a float64 vector over axis 1 of ``x``, when ``x op c`` broadcasts ``c`` along
    axis 1 only (a scalar counts) and the result keeps ``x``'s shape; else None."""
    r = x.type.rank
    if c.ndim > r or c.dtype.kind != "f":
        return None
    shape = (1,) * (r - c.ndim) + c.shape
    channels = x.type.shape[1]
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (channels,)).copy()


def fold_channel_affine(sw: _Sweep, op: Op) -> bool:
    """``y * c`` or ``y + c`` with a per-channel constant ``c`` (Caffe2's scale layers after a
    batch norm), folded like a batch norm."""
    if op.name not in ("nn.mul", "nn.add"):
        return False
    for i in (0, 1):
        x, c = op.operands[i], constant_value(op.operands[1 - i])
        if c is None or x.op is None or x.op.name not in _BN_FOLDERS or x.type != op.result.type:
            continue
        vec = _per_channel(c, x)
        if vec is None:
            continue
        if op.name == "nn.mul":
            affine = (vec, np.zeros_like(vec))
        else:
            affine = (np.ones_like(vec), vec)
        return _fold_affine(sw, op, x, lambda affine=affine: affine)
    return False


def _fold_affine(
    sw: _Sweep, user: Op, x: Value, affine: Callable[[], tuple[np.ndarray, np.ndarray] | None]
) -> bool:
    """Replace ``user`` (which computes ``x * a + b`` along axis 1) by its producer with the
    affine map folded into the constant weights, if the producer allows it."""
    prod = x.op
    if prod is None or prod.name not in _BN_FOLDERS or not sw.only_user(x, user):
        return False
    if x.type.rank < 2 or not x.type.dtype.startswith("f"):
        return False
    ab = affine()
    if ab is None:
        return False
    new = _BN_FOLDERS[prod.name](sw, prod, user, *ab)
    if new is None:
        return False
    sw.replace(user.result, new)
    return True


def _fold_into_conv(sw: _Sweep, conv: Op, user: Op, a: np.ndarray, b: np.ndarray) -> Value | None:
    w = constant_value(conv.operands[1])
    bias = constant_value(conv.operands[2]) if len(conv.operands) > 2 else None
    if w is None or (len(conv.operands) > 2 and bias is None) or w.shape[0] != a.size:
        return None
    new_w = w * a.astype(w.dtype).reshape(-1, *([1] * (w.ndim - 1)))
    operands = [conv.operands[0], sw.constant(user, new_w)]
    if bias is not None or b.any():
        old_b = np.zeros(a.size) if bias is None else np.asarray(bias, np.float64)
        operands.append(sw.constant(user, (old_b * a + b).astype(w.dtype)))
    return sw.create(user, "nn.conv", operands, dict(conv.attrs)).result


def _fold_into_gemm(sw: _Sweep, gemm: Op, user: Op, a: np.ndarray, b: np.ndarray) -> Value | None:
    weight = constant_value(gemm.operands[1])
    c = constant_value(gemm.operands[2]) if len(gemm.operands) > 2 else None
    if weight is None or (len(gemm.operands) > 2 and c is None) or gemm.result.type.rank != 2:
        return None
    attrs = registry.lookup(gemm.name).with_defaults(dict(gemm.attrs))
    a_w = a.astype(weight.dtype)
    new_w = weight * (a_w[:, None] if attrs["trans_b"] else a_w[None, :])
    operands = [gemm.operands[0], sw.constant(user, new_w)]
    new_attrs = dict(gemm.attrs)
    if c is not None or b.any():
        new_c = b if c is None else float(attrs["beta"]) * np.asarray(c, np.float64) * a + b
        operands.append(sw.constant(user, np.asarray(new_c).astype(weight.dtype)))
        new_attrs["beta"] = 1.0
    return sw.create(user, "nn.gemm", operands, new_attrs).result


def _fold_into_matmul(sw: _Sweep, mm: Op, user: Op, a: np.ndarray, b: np.ndarray) -> Value | None:
    weight = constant_value(mm.operands[1])
    if weight is None or weight.ndim != 2 or mm.result.type.rank != 2:
        return None
    new_w = sw.constant(user, weight * a.astype(weight.dtype)[None, :])
    y = sw.create(user, "nn.matmul", [mm.operands[0], new_w], dict(mm.attrs)).result
    if not b.any():
        return y
    layer = {k: v for k, v in mm.attrs.items() if k == "layer"}
    return sw.create(user, "nn.add", [y, sw.constant(user, b.astype(weight.dtype))], layer).result


def _fold_into_batch_norm(
    sw: _Sweep, bn0: Op, user: Op, a: np.ndarray, b: np.ndarray
) -> Value | None:
    params = [constant_value(v) for v in bn0.operands[1:5]]
    if any(p is None for p in params):
        return None
    scale, bias = params[0], params[1]  # mean and var stay as they are
    new_scale = (np.asarray(scale, np.float64) * a).astype(scale.dtype)
    new_bias = (np.asarray(bias, np.float64) * a + b).astype(bias.dtype)
    operands = [
        bn0.operands[0],
        sw.constant(user, new_scale),
        sw.constant(user, new_bias),
        *bn0.operands[3:5],
    ]
    return sw.create(user, "nn.batch_norm", operands, dict(bn0.attrs)).result


# Ops whose output, scaled and shifted per channel (axis 1), can absorb the scale and shift.
_BN_FOLDERS = {
    "nn.conv": _fold_into_conv,
    "nn.gemm": _fold_into_gemm,
    "nn.matmul": _fold_into_matmul,
    "nn.batch_norm": _fold_into_batch_norm,
}

RULES: list[Rule] = [
    remove_identity,
    fold_shape,
    fold_constants,
    fold_batch_norm,
    fold_channel_affine,
    simplify_reshape,
    simplify_transpose,
    remove_noop_cast_or_expand,
]


@dataclass
class Canonicalize(Pass):
    """Fold BatchNorm into conv/gemm/matmul, fold constants and shapes, drop Identity/Dropout.

    Also folds per-channel constant scales/shifts into the conv/gemm/matmul/batch norm before
    them, removes no-op reshapes/transposes/casts, merges reshape chains and transpose chains,
    and removes dead ops; repeats until nothing changes. Options: ``fold_limit``, constant folding
    may produce up to this many elements even when that is more than the op's inputs hold;
    ``max_sweeps``, a bound on the repetitions.

    Stage: any -> same. Test: tests/passes/test_canonicalize.py.
    """

    name = "canonicalize"
    fold_limit: int = 1024
    max_sweeps: int = 32

    def run(self, module: Module, ctx: PassContext) -> None:
        for f in module.funcs:
            for _ in range(self.max_sweeps):
                changed = _Sweep(f, self.fold_limit).run()
                changed = remove_dead_ops(f.body) > 0 or changed
                if not changed:
                    break
