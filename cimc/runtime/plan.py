"""The fast executor's plan of one core program (see :mod:`cimc.runtime.fastpath`).

Only straight-line programs are planned (:func:`plannable`); the reference machine runs the
others. In a plan:

- an ``im2col`` whose patches only ``mvm`` instructions read (directly or through ``slice``)
  becomes a private :class:`PlannedIm2col`, with the DAC its readers share folded in;
- each ``mvm`` becomes a :class:`PlannedMvm` (on bit-sliced crossbars the reference's);
- :class:`~cimc.runtime.fusion.FusedMvm` joins an ``mvm`` with the instructions after it that
  only transform its result, and with the ``im2col`` before it whose patches only it reads;
  a ``recv`` of another tile's partial sum between them is planned before the step
  (:func:`_early_recv`), so that the add joins it too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cimc.runtime.fastpath import PlannedIm2col, PlannedMvm
from cimc.runtime.fusion import FusedMvm, FusedOp, absorb
from cimc.runtime.isa import Instr
from cimc.runtime.program import Program
from cimc.runtime.reference import Coded, InstrStep


def plannable(programs: Mapping[int, Program]) -> bool:
    """Whether the fast executor may run these programs: they are straight-line (no labels,
    so no loops; the reference machine's clock then costs every iteration) and none reads
    the chip clock."""
    return not any(p.labels or any(ins.op.reads_clock for ins in p.instrs)
                   for p in programs.values())


def _mvm_readers(instrs: list[Instr], start: int, buf: str, lo: float = 0.0,
                 hi: float = np.inf) -> list[tuple[int, float, float]] | None:
    """The mvms (indices) after ``start`` that read ``buf`` (directly or through slices)
    before it is written again, each with the range of ``buf``'s last axis it reads
    (``lo``/``hi`` place ``buf`` in its base buffer); None when anything else reads it."""
    found: list[tuple[int, float, float]] = []
    for j in range(start + 1, len(instrs)):
        ins = instrs[j]
        if buf in ins.srcs:
            if ins.mnemonic == "mvm":
                found.append((j, lo, hi))
            elif ins.mnemonic == "slice":
                a, b = ins.kwargs["start"], ins.kwargs["stop"]
                sub = _mvm_readers(instrs, j, ins.dst, lo + a, min(hi, lo + b))
                if sub is None:
                    return None
                found += sub
            else:
                return None
        if buf in ins.dsts:
            break
    return found


def _read_later(instrs: list[Instr], j: int, buf: str) -> bool:
    """Whether an instruction after ``j`` reads ``buf`` before one writes it."""
    for ins in instrs[j + 1:]:
        if buf in ins.srcs:
            return True
        if buf in ins.dsts:
            return False
    return False


def plan_core(prog: Program, consts: Mapping[str, np.ndarray], sliced: set[int]) -> Coded:
    """The fast plan of one core program. ``sliced``: its bit-sliced crossbars (their mvms run
    as the reference's)."""
    instrs = prog.instrs
    mvms = {i: PlannedMvm(ins) for i, ins in enumerate(instrs)
            if ins.mnemonic == "mvm" and ins.args.xbar not in sliced}
    for m in mvms.values():
        m.key = (prog.core, m.args.xbar)
    ims: dict[int, PlannedIm2col] = {}
    for i, ins in enumerate(instrs):
        if ins.mnemonic != "im2col":
            continue
        readers = _mvm_readers(instrs, i, ins.dst)
        if readers is not None and any(j not in mvms for j, _, _ in readers):
            readers = None
        ims[i] = PlannedIm2col(ins, [mvms[j] for j, _, _ in readers or ()])
        for k, (j, lo, hi) in enumerate(readers or ()):
            mvms[j].owns_input = all(h <= lo or hi <= lo2 for n, (_, lo2, h) in
                                     enumerate(readers) if n != k)
            mvms[j].pre_quantised = ims[i].dac is not None
    steps: list = []
    i = 0
    while i < len(instrs):
        pro = ims.get(i) if _only_reader(ims.get(i), mvms.get(i + 1)) else None
        m = i + 1 if pro is not None else i
        ops: list[FusedOp] = []
        recvs: list[Instr] = []
        j = m + 1
        if m in mvms:
            cur = instrs[m].dst
            while j < len(instrs):
                if _early_recv(instrs, i, j, cur):
                    recvs.append(instrs[j])
                    j += 1
                op = _joins(instrs, j, cur)
                if op is None:
                    break
                ops.append(op)
                cur, j = instrs[j].dst, j + 1
        if ops or pro is not None:
            steps += [InstrStep(r) for r in recvs]
            steps.append(FusedMvm(mvms[m], ops, consts, pro))
            i = j
        else:
            steps.append(mvms.get(i) or ims.get(i) or InstrStep(instrs[i]))
            i += 1
    return Coded(prog.core, prog.chip, steps, consts, {})


def _joins(instrs: list[Instr], j: int, cur: str) -> FusedOp | None:
    """Instruction ``j`` as an op of the fused step whose value is ``cur`` so far, or None
    (it cannot join, or ``cur`` is read again later)."""
    if j >= len(instrs):
        return None
    op = absorb(instrs[j], cur)
    if op is None or (cur not in instrs[j].dsts and _read_later(instrs, j, cur)):
        return None
    return op


def _early_recv(instrs: list[Instr], start: int, j: int, cur: str) -> bool:
    """Whether instruction ``j`` is a ``recv`` of the other operand of the op right after it,
    which would join the fused step that begins at ``start`` and holds ``cur``: the plan then
    receives it before the step, so that the step runs whole (and its im2col and mvm block by
    block through that op). Receiving earlier never deadlocks: the instructions it moves ahead
    of only compute on this core (they send nothing), and none touches its buffer. The fast
    executor's read-noise draws then follow the order the cores reach their mvms in (another
    core's may come first), a fixed order: the numbers stay a function of the seed."""
    ins = instrs[j]
    if ins.mnemonic != "recv":
        return False
    op = _joins(instrs, j + 1, cur)
    if op is None or op.other != ins.dst:
        return False
    return all(ins.dst not in (*k.srcs, *k.dsts) for k in instrs[start:j])


def _only_reader(im: PlannedIm2col | None, mvm: PlannedMvm | None) -> bool:
    """The mvm right after a private im2col reads its patches whole and alone."""
    return (im is not None and mvm is not None and im.readers == [mvm]
            and mvm.ins.src == im.ins.dst)
