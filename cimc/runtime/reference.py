"""The reference machine: the core programs executed instruction by instruction, exactly as
docs/isa.md defines them (each instruction's ``execute`` in :mod:`cimc.runtime.instructions`).

The cores run interleaved: each runs until it halts or waits at a ``recv`` whose message has
not been sent; when no core can go on, that is a deadlock, reported with where each core waits.
Every executed instruction charges its cost to a :class:`~cimc.runtime.isa.Timeline`: each core
keeps a clock, so a loop's cost is paid per iteration and an instruction that reads the chip
time (``time``) sees the run's ``t`` plus its core's clock. A loop that runs on past the run's
``max_iterations`` taken backward jumps at one label is stopped with an error naming the core
and the label.

:func:`run_cores` is also how :mod:`cimc.runtime.fastpath` runs its plans: the same
interleaving over other steps, without the clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cimc.errors import ArtifactError
from cimc.runtime.isa import BLOCKED, HALT, Core, ExecError, Instr, Run, Timeline
from cimc.runtime.program import Program


class Step(Protocol):
    """What :func:`run_cores` executes: an instruction (:class:`~cimc.runtime.isa.Instr`
    through its definition) or a step of a fast plan."""

    def execute(self, core: Core, run: Run) -> int | None: ...

    @property
    def where(self) -> str: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Coded:
    """One core's code: the steps it runs, its constants, and its labels (name -> step)."""

    core: int
    chip: int
    steps: Sequence[Any]
    consts: Mapping[str, np.ndarray]
    labels: Mapping[str, int]


@dataclass
class Trace:
    """What one execution did, in order: (core, instruction index, work) per instruction, and
    the most elements each instruction wrote."""

    batch: int
    events: list[tuple[int, int, float]] = field(default_factory=list)
    written: dict[tuple[int, int], int] = field(default_factory=dict)


class InstrStep:
    """An instruction as a step: its definition's reference semantics."""

    __slots__ = ("ins",)

    def __init__(self, ins: Instr) -> None:
        self.ins = ins

    def execute(self, core: Core, run: Run) -> int | None:
        return self.ins.op.execute(self.ins, core, run)

    @property
    def where(self) -> str:
        return self.ins.where

    @property
    def text(self) -> str:
        return self.ins.text


def run_cores(codes: Mapping[int, Coded], run: Run, trace: Trace | None = None) -> None:
    """Execute every core's steps until all halt (see the module docstring). With
    ``run.timeline`` every step is an :class:`InstrStep` charged to it; with ``trace`` each is
    recorded."""
    cores = {c: Core(c, code.chip, dict(code.consts), code.labels) for c, code in codes.items()}
    live = list(codes)
    timeline = run.timeline
    while live:
        progressed = False
        for c in list(live):
            core, steps = cores[c], codes[c].steps
            while True:
                pc = core.pc
                st = steps[pc]
                try:
                    nxt = st.execute(core, run)
                except ExecError as e:
                    at = e.args[1] if len(e.args) > 1 else st
                    raise ArtifactError(f"{at.where}: {at.text}: {e.args[0]}") from None
                if nxt == BLOCKED:
                    break
                progressed = True
                if timeline is not None or trace is not None:
                    _account(st.ins, core, timeline, trace)
                if nxt == HALT:
                    live.remove(c)
                    break
                if nxt is None:
                    core.pc = pc + 1
                else:
                    if nxt <= pc:
                        _count_iteration(core, st, nxt, run.max_iterations)
                    core.pc = nxt
        if not progressed:
            raise ArtifactError(_deadlock_message(live, cores, codes))


def _account(ins: Instr, core: Core, timeline: Timeline | None, trace: Trace | None) -> None:
    amount = ins.op.work(ins, core)
    if timeline is not None:
        timeline.charge(ins, amount, core.id)
    if trace is not None:
        trace.events.append((core.id, core.pc, amount))
        size = sum(int(np.size(core.env[d])) for d in ins.dsts)
        key = (core.id, core.pc)
        trace.written[key] = max(trace.written.get(key, 0), size)


def _count_iteration(core: Core, st: Any, target: int, limit: int) -> None:
    label = next((name for name, i in core.labels.items() if i == target), str(target))
    core.iterations[label] += 1
    if core.iterations[label] > limit:
        raise ArtifactError(f"{st.where}: core {core.id} jumped back to label '{label}' more "
                            f"than {limit} times; the loop does not end (raise max_iterations "
                            "if it needs more)")


def _deadlock_message(live: list[int], cores: Mapping[int, Core],
                      codes: Mapping[int, Coded]) -> str:
    waits = []
    for c in live:
        st = codes[c].steps[cores[c].pc]
        waits.append(f"core {c} waits at {st.where} ({st.text})")
    return ("deadlock: no core can proceed; " + "; ".join(waits)
            + ". Every recv needs a matching earlier send from the named core; the artifact "
            "is inconsistent, recompile it")


def reference_codes(programs: Mapping[int, Program],
                    consts: Mapping[int, Mapping[str, np.ndarray]]) -> dict[int, Coded]:
    """Each core's program as steps of the reference machine."""
    return {c: Coded(c, p.chip, [InstrStep(ins) for ins in p.instrs], consts[c], p.labels)
            for c, p in sorted(programs.items())}


def replay(programs: Mapping[int, Program], trace: Trace, timeline: Timeline,
           ratio: float = 1.0, fold: Mapping[int, int] | None = None) -> Timeline:
    """Charge ``timeline`` with the instructions of ``trace``, each with its work times
    ``ratio`` (the work of every instruction scales with the batch: a trace taken at one batch
    size gives the cost of any other).

    ``fold`` (core -> core) charges the work of each core it names to another core's clock, as
    if that core ran it: a message between two cores folded together costs nothing. The report
    folds the copies ``replicate`` made onto their originals to show the latency without them."""
    fold = fold or {}
    for core, pc, amount in trace.events:
        ins = programs[core].instrs[pc]
        core = fold.get(core, core)
        if fold and ins.op.peer:
            other = ins.kwargs[ins.op.peer]
            peer = fold.get(other, other)
            if peer == core:
                continue
            if peer != other:
                ins = dataclasses.replace(ins, kwargs={**ins.kwargs, ins.op.peer: peer})
        timeline.charge(ins, amount * ratio, core)
    return timeline
