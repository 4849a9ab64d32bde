"""The fast executor's plan of one core program (see :mod:`cimc.runtime.fastpath`).

The program is cut into basic blocks (a label starts one; a ``jump`` or ``branch`` ends one);
nothing is planned across their edges. Inside a block:

- an ``im2col`` whose patches only ``mvm`` instructions of the block read (directly or through
  ``slice``), and no instruction elsewhere, becomes a private :class:`PlannedIm2col`, with the
  DAC its readers share folded in;
- each ``mvm`` becomes a :class:`PlannedMvm` (on bit-sliced crossbars the reference's);
- :class:`~cimc.runtime.fusion.FusedMvm` joins an ``mvm`` with the instructions after it that
  only transform its result, and with the ``im2col`` before it whose patches only it reads.

Labels are renumbered to the plan's steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from cimc.runtime.fastpath import PlannedIm2col, PlannedMvm
from cimc.runtime.fusion import FusedMvm, FusedOp, absorb
from cimc.runtime.isa import Instr
from cimc.runtime.program import Program
from cimc.runtime.reference import Coded, InstrStep


def plannable(programs: Mapping[int, Program]) -> bool:
    """Whether the fast executor may run these programs: none reads the chip clock."""
    return not any(ins.op.reads_clock for p in programs.values() for ins in p.instrs)


def _blocks(prog: Program) -> list[tuple[int, int]]:
    starts = {0, *prog.labels.values()}
    starts.update(i + 1 for i, ins in enumerate(prog.instrs) if ins.op.labels)
    cuts = sorted(s for s in starts if s < len(prog.instrs)) + [len(prog.instrs)]
    return list(itertools.pairwise(cuts))


def _mvm_readers(instrs: list[Instr], start: int, end: int, buf: str, lo: float = 0.0,
                 hi: float = np.inf) -> list[tuple[int, float, float]] | None:
    """The mvms (indices) of ``instrs[start+1:end]`` that read ``buf`` (directly or through
    slices) before it is written again, each with the range of ``buf``'s last axis it reads
    (``lo``/``hi`` place ``buf`` in its base buffer); None when anything else reads it."""
    found: list[tuple[int, float, float]] = []
    for j in range(start + 1, end):
        ins = instrs[j]
        if buf in ins.srcs:
            if ins.mnemonic == "mvm":
                found.append((j, lo, hi))
            elif ins.mnemonic == "slice":
                a, b = ins.kwargs["start"], ins.kwargs["stop"]
                sub = _mvm_readers(instrs, j, end, ins.dst, lo + a, min(hi, lo + b))
                if sub is None:
                    return None
                found += sub
            else:
                return None
        if buf in ins.dsts:
            break
    return found


def _read_outside(instrs: list[Instr], start: int, end: int, buf: str) -> bool:
    return any(buf in ins.srcs for j, ins in enumerate(instrs) if not start <= j < end)


def _read_later(instrs: list[Instr], j: int, end: int, buf: str) -> bool:
    """Whether an instruction after ``j`` in its block reads ``buf`` before one writes it."""
    for ins in instrs[j + 1:end]:
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
    for start, end in _blocks(prog):
        for i in range(start, end):
            ins = instrs[i]
            if ins.mnemonic != "im2col":
                continue
            readers = None if _read_outside(instrs, start, end, ins.dst) else \
                _mvm_readers(instrs, i, end, ins.dst)
            if readers is not None and any(j not in mvms for j, _, _ in readers):
                readers = None
            planned = [mvms[j] for j, _, _ in readers or ()]
            ims[i] = PlannedIm2col(ins, planned)
            for k, (j, lo, hi) in enumerate(readers or ()):
                mvms[j].owns_input = all(h <= lo or hi <= lo2 for n, (_, lo2, h) in
                                         enumerate(readers) if n != k)
                mvms[j].pre_quantised = ims[i].dac is not None
    steps: list = []
    index: dict[int, int] = {}  # instruction -> step
    for start, end in _blocks(prog):
        i = start
        while i < end:
            index[i] = len(steps)
            pro = ims.get(i) if _only_reader(ims.get(i), mvms.get(i + 1)) else None
            m = i + 1 if pro is not None else i
            ops: list[FusedOp] = []
            j = m + 1
            if m in mvms:
                cur = instrs[m].dst
                while j < end:
                    op = absorb(instrs[j], cur)
                    if op is None or (cur not in instrs[j].dsts
                                      and (_read_later(instrs, j, end, cur)
                                           or _read_outside(instrs, start, end, cur))):
                        break
                    ops.append(op)
                    cur, j = instrs[j].dst, j + 1
            if ops or pro is not None:
                steps.append(FusedMvm(mvms[m], ops, consts, pro))
                i = j
            else:
                steps.append(mvms.get(i) or ims.get(i) or InstrStep(instrs[i]))
                i += 1
    labels = {name: index[i] for name, i in prog.labels.items()}
    return Coded(prog.core, prog.chip, steps, consts, labels)


def _only_reader(im: PlannedIm2col | None, mvm: PlannedMvm | None) -> bool:
    """The mvm right after a private im2col reads its patches whole and alone."""
    return (im is not None and mvm is not None and im.readers == [mvm]
            and mvm.ins.src == im.ins.dst)
