"""Fusing each mvm with the digital instructions that only transform its result.

A core program typically follows an ``mvm`` with digital instructions that read nothing but its
result: the partial-sum and bias adds, the transpose back to the model's layout, a ReLU, a
max-pool, a reshape. The planner (:mod:`cimc.runtime.plan`) turns each such run of adjacent
instructions into one :class:`FusedMvm` step. The numbers are those of the instructions one by
one (the tests compare both bit for bit), but

- the element-wise instructions work in place on the mvm's fresh output (no new arrays), and
- a ``max_pool`` moves in front of the monotone element-wise maps that precede it in the run:
  the whole ADC (scalings by positive steps and gains, rounding, clipping: every one
  non-decreasing, so it runs on the pooled values), adding or subtracting a constant that is
  the same over every pooling window (a per-channel bias), multiplying by such a positive
  constant, and ReLU, with the transposes between them. For a non-decreasing ``f`` applied with
  the same parameters across a window, ``max_i f(x_i) = f(max_i x_i)``, and float32 rounding is
  monotone, so this is exact (up to the sign of a zero); the maps then run on the pooled
  tensor, ``prod(kernel_shape)`` times smaller;
- an ``im2col`` right before the mvm whose patches only that mvm reads joins the step as its
  prologue: the two run over blocks of samples (:data:`BLOCK_ELEMENTS`), so the patches, the
  product and its read noise stay in the cache, and a moved pool runs block by block too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ops.linalg import SAMPLES
from cimc.ops.pool import max_pool_plan
from cimc.runtime.fastpath import AdcArgs, FastRun, PlannedIm2col, PlannedMvm, mvm_operand
from cimc.runtime.instructions import Dop
from cimc.runtime.isa import Core, ExecError, Instr

IN_PLACE: dict[str, Callable[..., Any]] = {
    "nn.add": np.add, "nn.sub": np.subtract, "nn.mul": np.multiply,
}
FUSABLE = {*IN_PLACE, "nn.relu", "nn.transpose", "nn.reshape", "nn.max_pool"}

# An im2col whose patches only the next mvm reads is fused in front of it, and the two run over
# blocks of samples whose patches hold about this many elements (the patches, the product and
# the noise of a block stay in the cache), instead of over the whole chunk. Where chunks run
# on threads of one process, every numpy call hands the GIL to the other threads, and fewer,
# larger blocks are faster: THREADED_BLOCK_ELEMENTS. Either way a block holds a multiple of 4
# samples' read-noise normals (see _block), so the numbers do not depend on the block size.
BLOCK_ELEMENTS = 1 << 18
THREADED_BLOCK_ELEMENTS = 1 << 20


class FusedOp:
    """One fused ``dop``: its instruction, where the run's value sits among its operands, and
    the other operand's buffer (binary ops)."""

    def __init__(self, ins: Instr, pos: int, other: str | None) -> None:
        self.ins, self.pos, self.other = ins, pos, other
        self.op: str = ins.args.op
        self.attrs: dict[str, Any] = ins.args.attrs
        self.where, self.text = ins.where, ins.text

    def operands(self, v: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The binary op's operands in program order, with the run's value ``v``."""
        return (v, other) if self.pos == 0 else (other, v)

    def call(self, xs: list[np.ndarray], run: FastRun) -> np.ndarray:
        try:
            return Dop.call(self.ins, xs, run.batch)[0]
        except ExecError as e:
            raise ExecError(e.args[0], self) from None


def absorb(ins: Instr, cur: str) -> FusedOp | None:
    """``ins`` as a fused op on the run's value ``cur``, or None when it cannot join."""
    if ins.mnemonic != "dop" or ins.args.op not in FUSABLE or len(ins.dsts) != 1:
        return None
    srcs = ins.srcs
    if srcs.count(cur) != 1:
        return None
    if ins.args.op in IN_PLACE:
        if len(srcs) != 2:
            return None
        pos = srcs.index(cur)
        return FusedOp(ins, pos, srcs[1 - pos])
    return FusedOp(ins, 0, None) if len(srcs) == 1 else None


def _monotone_const(op: FusedOp, consts: Mapping[str, np.ndarray]) -> bool:
    """Whether ``op`` maps each element by a non-decreasing function given by a finite
    float32 constant (which the pool can be moved past when it is constant over windows)."""
    c = consts.get(op.other or "")
    if c is None or not isinstance(c, np.ndarray) or c.dtype != np.float32:
        return False
    if not np.isfinite(c).all():
        return False
    if op.op == "nn.sub":
        return op.pos == 0  # x - c; c - x decreases
    if op.op == "nn.mul":
        return bool((c > 0).all())
    return True


class FusedMvm:
    """An mvm and the instructions that only transform its result, run as one step."""

    def __init__(self, mvm: PlannedMvm, ops: list[FusedOp], consts: Mapping[str, np.ndarray],
                 prologue: PlannedIm2col | None = None) -> None:
        self.where, self.text = mvm.where, mvm.text  # errors of an op name the op
        self.mvm, self.ops, self.prologue = mvm, ops, prologue
        if prologue is not None:
            prologue.blocked = True  # its patches never exist for the whole chunk
        self.dst = ops[-1].ins.dst if ops else mvm.ins.dst
        self.consts = consts
        # index of the max_pool that moves in front of the monotone ops before it, or None
        self.pool_at: int | None = None
        for k, op in enumerate(ops):
            if op.op == "nn.max_pool":
                if all(p.op in ("nn.relu", "nn.transpose")
                       or (p.op in IN_PLACE and _monotone_const(p, consts)) for p in ops[:k]):
                    self.pool_at = k
                break
        self._hoisted: dict[tuple[int, ...], tuple[list[int], list[np.ndarray]] | None] = {}
        self._pool_plans: dict[tuple[int, ...], Callable[..., np.ndarray]] = {}

    def execute(self, core: Core, run: FastRun) -> None:
        k = self.pool_at
        env = core.env
        if self.prologue is None:
            v, adc = self.mvm.compute(env[self.mvm.ins.src], run, defer_adc=k is not None)
            hoisted = None if k is None else self._hoist(v.shape)
            if hoisted is not None:
                v = self._pool(v, hoisted[0])
        else:
            v, adc, hoisted = self._blocked(core, run)
        if adc is not None:  # on the pooled result when the pool moved ahead of it
            self.mvm.finish_adc(v, *adc)
        if hoisted is None:
            env[self.dst] = self._apply(self.ops, v, env, run)
            return
        # v is the pooled result: now the monotone maps before the pool, then the rest
        it = iter(hoisted[1])
        for op in self.ops[:k]:
            if op.op == "nn.relu":
                np.maximum(v, 0, out=v)
            elif op.op != "nn.transpose":
                c = next(it)
                IN_PLACE[op.op](*op.operands(v, c), out=v)
        env[self.dst] = self._apply(self.ops[k + 1:], v, env, run)

    def _pool(self, v: np.ndarray, perm: list[int], out: np.ndarray | None = None
              ) -> np.ndarray:
        """The (moved) max_pool on the mvm's result ``v``: a fresh array, or ``out``. Its
        geometry is worked out once per shape (blocks and runs repeat the same few)."""
        v = v.transpose(perm)
        plan = self._pool_plans.get(v.shape[1:])
        if plan is None:
            op = self.ops[self.pool_at]
            try:
                plan = max_pool_plan(op.attrs, v.shape, v.dtype)
            except CimcError as e:
                raise ExecError(f"{op.op} failed: {e}", op) from None
            self._pool_plans[v.shape[1:]] = plan
        return plan(v, out)

    def _blocked(self, core: Core, run: FastRun
                 ) -> tuple[np.ndarray, AdcArgs | None, tuple[list[int], list[np.ndarray]] | None]:
        """The im2col and the mvm over blocks of samples (and the moved max_pool, block by
        block): the result for the whole buffer, the deferred ADC (see PlannedMvm.compute)
        and the hoisting (None: the result is the mvm's, not pooled)."""
        im, mvm, k = self.prologue, self.mvm, self.pool_at
        x = im.input(core)
        n = x.shape[0]
        cols = mvm.args.cols
        y = pooled = hoisted = how = None
        adc, per, full = None, 0, (0,)
        blocks = _blocks(n, self._block(x, run.threaded))
        for b0, b1 in blocks:
            p = im.patches(x[b0:b1], run)
            if b0 == 0:
                hoisted = None if k is None else self._hoist((n, *p.shape[1:-1], cols))
                _, how = mvm_operand(p, mvm.args.rows)
                per = p[0, ..., 0].size  # positions per sample
                full = (n, cols, per) if how == SAMPLES else (n * per, cols)
                if hoisted is None and len(blocks) > 1:
                    y = np.empty(full, np.float32)
            rows = slice(b0, b1) if how == SAMPLES else slice(b0 * per, b1 * per)
            if hoisted is None:
                yb, _, adc = mvm.product(p, run, False, None if y is None else y[rows], how)
                if y is None:  # one block
                    return mvm.result_view(p.shape, yb, how), adc, None
                continue
            buf = run.ws.get(("fused.y", id(self)), (rows.stop - rows.start, *full[1:]))
            yb, _, adc = mvm.product(p, run, True, buf, how)
            view = mvm.result_view(p.shape, yb, how)
            if pooled is not None:
                self._pool(view, hoisted[0], pooled[b0:b1])
                continue
            pb = self._pool(view, hoisted[0])
            if len(blocks) == 1:
                return pb, adc, hoisted
            pooled = np.empty((n, *pb.shape[1:]), pb.dtype)
            pooled[b0:b1] = pb
        if y is not None:
            return mvm.result_view((n, *p.shape[1:]), y, how), adc, None
        return pooled, adc, hoisted

    def _block(self, x: np.ndarray, threaded: bool) -> int:
        """Samples per block: about BLOCK_ELEMENTS (or THREADED_BLOCK_ELEMENTS) patch elements,
        rounded down to a multiple of the samples whose outputs count a multiple of 4, and at
        least 2. Each block draws its normals in turn, four per 64 random bits
        (device.normal_f32): so blocks use the random stream exactly as one draw for the whole
        chunk would, whatever the block size. The first block's patches decide the product's
        layout for all (mvm_operand), and one sample's patches fit more than one layout."""
        positions = self.prologue.positions(x.shape)
        elements = THREADED_BLOCK_ELEMENTS if threaded else BLOCK_ELEMENTS
        step = 4 // math.gcd(4, self.mvm.args.cols * positions)
        return max(step, 2, elements // (self.mvm.args.rows * positions) // step * step)

    def _hoist(self, shape: tuple[int, ...]) -> tuple[list[int], list[np.ndarray]] | None:
        """For the mvm's result of ``shape``: the permutation of the transposes before the
        pool and each constant of the ops before it in the pool's layout; None when a constant
        varies over the pooled axes (or broadcasting would change the shape)."""
        key = shape[1:]
        if key not in self._hoisted:
            self._hoisted[key] = self._hoist_for(shape)
        return self._hoisted[key]

    def _hoist_for(self, shape: tuple[int, ...]) -> tuple[list[int], list[np.ndarray]] | None:
        rank = len(shape)
        perm = list(range(rank))
        consts: list[np.ndarray] = []
        for op in self.ops[: self.pool_at]:
            if op.op == "nn.transpose":
                p = [int(a) for a in op.attrs["perm"]]
                if sorted(p) != list(range(rank)):
                    return None
                perm = [perm[a] for a in p]
                consts = [c.transpose(p) for c in consts]
            elif op.op != "nn.relu":
                c = np.asarray(self.consts[op.other or ""])
                if c.ndim > rank:
                    return None
                consts.append(c.reshape((1,) * (rank - c.ndim) + c.shape))
        final = tuple(shape[a] for a in perm)
        if rank < 3 or perm[0] != 0:  # the batch stays first (blocks are stacked along it)
            return None
        for c in consts:
            if c.shape[0] != 1 or any(d != 1 for d in c.shape[2:]) or c.shape[1] not in (
                    1, final[1]):
                return None
        return perm, [np.ascontiguousarray(c) for c in consts]

    def _apply(self, ops: list[FusedOp], v: np.ndarray, env: dict[str, Any], run: FastRun
               ) -> np.ndarray:
        """The ops in program order on the run's value ``v`` (in place where possible)."""
        for op in ops:
            if op.other is not None:
                v = _binary(op, v, env[op.other], run)
            elif op.op == "nn.relu" and v.dtype.kind == "f":
                np.maximum(v, 0, out=v)
            else:
                v = op.call([v], run)
        return v


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    """``[0, n)`` in blocks of ``size`` samples; a last block of one sample joins the one
    before (a product over one vector may sum in another order than over several)."""
    bounds = [(a, min(a + size, n)) for a in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _binary(op: FusedOp, v: np.ndarray, other: np.ndarray, run: FastRun) -> np.ndarray:
    """``op`` with the run's value ``v`` at its position: in place on ``v`` when the result has
    ``v``'s shape and both are float32 (what the kernel computes then), else the kernel."""
    a, b = op.operands(v, other)
    if (isinstance(other, np.ndarray) and v.dtype == np.float32 and other.dtype == np.float32
            and other.ndim <= v.ndim
            and all(o in (1, s) for o, s in zip(other.shape[::-1], v.shape[::-1]))):
        IN_PLACE[op.op](a, b, out=v)
        return v
    return op.call([a, b], run)
