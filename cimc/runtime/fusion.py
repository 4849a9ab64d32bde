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
  product and its read noise stay in the cache, and a moved pool runs block by block too;
  without a moved pool, each block's product goes on through the ops that keep the samples
  apart (:func:`_samplewise`: a partial-sum add of another tile's result, the bias, ReLU, the
  pool, ...) before the next block is made, so the chunk's unpooled result never exists whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ops.linalg import SAMPLES
from cimc.ops.pool import max_pool_plan
from cimc.runtime.device import normal_f32
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
        self._pool_plans: dict[tuple[Any, ...], Callable[..., np.ndarray]] = {}

    def execute(self, core: Core, run: FastRun) -> None:
        env = core.env
        if self.prologue is None:
            v, adc = self.mvm.compute(env[self.mvm.ins.src], run,
                                      defer_adc=self.pool_at is not None)
            hoisted = None if self.pool_at is None else self._hoist(v.shape)
            v, done = self._tail(v, hoisted, adc, env, run, None, len(self.ops))
        else:
            v, done = self._blocked(core, run)
        env[self.dst] = self._apply(self.ops[done:], v, env, run)

    def _tail(self, v: np.ndarray, hoisted: tuple[list[int], list[np.ndarray]] | None,
              adc: AdcArgs | None, env: dict[str, Any], run: FastRun,
              block: tuple[slice, int] | None, end: int | None, pooled: bool = False
              ) -> tuple[np.ndarray, int]:
        """What follows the product ``v`` (of the whole chunk, or of the samples ``block =
        (rows, chunk size)`` of it): the moved max_pool, the ADC left to it (``adc``) and the
        monotone maps before the pool (``hoisted``: see _hoist), then the ops in program order
        up to ``end``, or, with ``end`` None, as far as they keep the samples apart
        (:func:`_samplewise`). Returns the value and the index of the first op not applied.
        ``pooled``: the moved max_pool made ``v`` already."""
        if hoisted is not None and not pooled:
            v = self._pool(v, hoisted[0])
        if adc is not None:  # on the pooled result when the pool moved ahead of it
            self.mvm.finish_adc(v, *adc)
        i = 0
        if hoisted is not None:
            it = iter(hoisted[1])
            for op in self.ops[: self.pool_at]:
                if op.op == "nn.relu":
                    np.maximum(v, 0, out=v)
                elif op.op != "nn.transpose":
                    IN_PLACE[op.op](*op.operands(v, next(it)), out=v)
            i = self.pool_at + 1
        while i < (len(self.ops) if end is None else end):
            op = self.ops[i]
            if end is None and not _samplewise(op, v, env, block[1], run.batch):
                break
            v = self._op(op, v, env, run, None if block is None else block[0])
            i += 1
        return v, i

    def _op(self, op: FusedOp, v: np.ndarray, env: dict[str, Any], run: FastRun,
            rows: slice | None) -> np.ndarray:
        """One op on the run's value ``v`` (the samples ``rows`` of the chunk, when given: an
        operand with the chunk's samples is cut to them), in place where possible."""
        if op.other is not None:
            other = env[op.other]
            if rows is not None and np.ndim(other) == v.ndim and np.shape(other)[0] != 1:
                other = other[rows]
            return _binary(op, v, other, run)
        if op.op == "nn.relu" and v.dtype.kind == "f":
            return np.maximum(v, 0, out=v)
        if op.op == "nn.max_pool":
            return self._pool_plan(op, v.shape, v.dtype)(v)
        return op.call([v], run)

    def _pool(self, v: np.ndarray, perm: list[int], out: np.ndarray | None = None
              ) -> np.ndarray:
        """The moved max_pool on the mvm's result ``v``: a fresh array, or ``out``."""
        v = v.transpose(perm)
        return self._pool_plan(self.ops[self.pool_at], v.shape, v.dtype)(v, out)

    def _pool_plan(self, op: FusedOp, shape: tuple[int, ...], dtype: Any
                   ) -> Callable[..., np.ndarray]:
        """A max_pool op's kernel for inputs of ``shape``, worked out once per op and shape
        (blocks and runs repeat the same few)."""
        key = (id(op), shape[1:], np.dtype(dtype))
        plan = self._pool_plans.get(key)
        if plan is None:
            try:
                plan = max_pool_plan(op.attrs, shape, dtype)
            except CimcError as e:
                raise ExecError(f"{op.op} failed: {e}", op) from None
            self._pool_plans[key] = plan
        return plan

    def _blocked(self, core: Core, run: FastRun) -> tuple[np.ndarray, int]:
        """The im2col and the mvm over blocks of samples, each block's product carried on
        through the ops that keep the samples apart (see _tail) while it is in the cache: the
        value for the whole chunk and the index of the first op not yet applied to it."""
        im, mvm = self.prologue, self.mvm
        x = im.input(core)
        n = x.shape[0]
        cols = mvm.args.cols
        blocks = _blocks(n, self._block(x, run.threaded))
        out = y = end = None
        env = core.env
        for b0, b1 in blocks:
            p = im.patches(x[b0:b1], run)
            if b0 == 0:
                hoisted = None if self.pool_at is None else self._hoist((n, *p.shape[1:-1], cols))
                _, how = mvm_operand(p, mvm.args.rows)
                per = p[0, ..., 0].size  # positions per sample
                full = (n, cols, per) if how == SAMPLES else (n * per, cols)
                z = self._normals(n * per * cols, run) if len(blocks) > 1 else None
            if len(blocks) == 1:
                yb, _, adc = mvm.product(p, run, hoisted is not None, None, how)
                v = mvm.result_view(p.shape, yb, how)
                return self._tail(v, hoisted, adc, env, run, None, len(self.ops))
            rows = slice(b0, b1) if how == SAMPLES else slice(b0 * per, b1 * per)
            zb = None if z is None else z[b0 * per * cols:b1 * per * cols]
            if y is not None:  # nothing runs block by block: products go to the chunk's result
                mvm.product(p, run, False, y[rows], how, zb)
                continue
            buf = run.ws.get(("fused.y", id(self)), (rows.stop - rows.start, *full[1:]))
            yb, _, adc = mvm.product(p, run, hoisted is not None, buf, how, zb)
            v = mvm.result_view(p.shape, yb, how)
            if hoisted is not None:  # the pool, block by block; the rest on the (smaller) result
                if out is None:
                    v = self._pool(v, hoisted[0])
                    out = np.empty((n, *v.shape[1:]), v.dtype)
                    out[b0:b1] = v
                else:
                    self._pool(v, hoisted[0], out[b0:b1])
                continue
            v, end = self._tail(v, None, None, env, run, (slice(b0, b1), n), end)
            if out is None and end == 0:
                y = np.empty(full, np.float32)
                y[rows] = yb
                continue
            if out is None:
                out = np.empty((n, *v.shape[1:]), v.dtype)
            out[b0:b1] = v
        if y is not None:
            return mvm.result_view((n, *p.shape[1:]), y, how), 0
        if hoisted is not None:
            return self._tail(out, hoisted, adc, env, run, None, len(self.ops), pooled=True)
        return out, end

    def _normals(self, count: int, run: FastRun) -> np.ndarray | None:
        """The read noise's standard normals of every output of the chunk (None without read
        noise), drawn at once before the first block: each block's draw takes a multiple of 4
        of them (see _block), so these are the numbers the blocks would draw in turn, and the
        table lookups run in one pass rather than between the products."""
        if not (run.noise and run.matrices[self.mvm.key].noisy):
            return None
        return normal_f32(run.rng, count, run.ws.get("fused.normals", (count,)))

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
            v = self._op(op, v, env, run, None)
        return v


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    """``[0, n)`` in blocks of ``size`` samples; a last block of one sample joins the one
    before (a product over one vector may sum in another order than over several)."""
    bounds = [(a, min(a + size, n)) for a in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _samplewise(op: FusedOp, v: np.ndarray, env: Mapping[str, Any], n: int,
                batch: int | None) -> bool:
    """Whether ``op`` on the samples of a block ``v`` of a chunk of ``n`` samples gives those
    samples' rows of its result on the whole chunk: element-wise maps, a transpose that keeps
    the batch first, a max_pool, a reshape to ``[-1 (or the compiled batch), ...]`` of each
    sample's elements, a binary op whose other operand broadcasts over the batch or holds the
    chunk's ``n`` samples (cut to the block's)."""
    if op.other is not None:
        other = env[op.other]
        if not isinstance(other, np.ndarray) or other.ndim > v.ndim:
            return False
        if other.ndim == v.ndim and other.shape[0] not in (1, n):
            return False
        inner = other.shape[1:] if other.ndim == v.ndim else other.shape
        try:
            return np.broadcast_shapes(inner, v.shape[1:]) == v.shape[1:]
        except ValueError:
            return False
    if op.op == "nn.transpose":
        return [int(a) for a in op.attrs["perm"]][:1] == [0]
    if op.op == "nn.reshape":
        shape = [int(d) for d in op.attrs["shape"]]
        return (len(shape) > 0 and shape[0] in (-1, batch) and all(d > 0 for d in shape[1:])
                and math.prod(shape[1:]) == math.prod(v.shape[1:]))
    return op.op == "nn.relu" or (op.op == "nn.max_pool" and v.ndim >= 3)


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
