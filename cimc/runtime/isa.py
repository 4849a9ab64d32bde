"""What an instruction is: the base class of every definition in :mod:`cimc.runtime.instructions`,
the parsed form of one instruction, and the state the reference semantics work on.

A definition (a subclass of :class:`Instruction`) says everything about one mnemonic:

- its operands and keyword arguments (``dsts``, ``srcs``, ``required``, ``optional``) and any
  check of their values at parse time (``check``); its arguments decoded once (``decode``);
- its reference semantics: ``execute`` reads and writes a core's buffers (plain numpy);
- its cost: ``work`` (how much it did: vectors, elements or bytes) and ``charge`` (the time and
  energy that costs, from the target's ``costs``, on a :class:`Timeline`);
- its documentation (``usage``, ``semantics``, ``cost_doc``), from which docs/isa.md's
  instruction table is generated.

Parsing and printing (:mod:`cimc.runtime.program`), the reference machine
(:mod:`cimc.runtime.reference`), the report and the emitter all work through the definitions, so
adding an instruction is adding one class there.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cimc.errors import ArtifactError

if TYPE_CHECKING:
    from cimc.runtime.crossbars import CrossbarAt
    from cimc.runtime.program import Program
    from cimc.runtime.stepcell import StepCells
    from cimc.targets.schema import Costs, StepCell


# ------------------------------------------------------------------------------ argument kinds


@dataclass(frozen=True)
class Kind:
    """A keyword argument's kind: a name for messages and a check of a JSON value."""

    name: str
    check: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


INT = Kind("an integer", _is_int)
NUM = Kind("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool))
STR = Kind("a string", lambda v: isinstance(v, str))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
INTS = Kind("a list of integers", lambda v: isinstance(v, list) and all(_is_int(x) for x in v))


class InstrError(Exception):
    """A value the parser or a definition's ``check`` rejects; the parser adds ``file:line``."""


class ExecError(Exception):
    """Raised while executing; the machine adds the instruction's ``file:line`` and text."""


# ------------------------------------------------------------------------------ parsed form


@dataclass(frozen=True, eq=False)
class Instr:
    """One instruction of a program: its definition, operands, keyword arguments (as written),
    the arguments its definition decoded from them, and where it stands."""

    op: Instruction
    dsts: tuple[str, ...]
    srcs: tuple[str, ...]
    kwargs: Mapping[str, Any]
    args: Any
    file: str
    line: int
    text: str

    @property
    def mnemonic(self) -> str:
        return self.op.mnemonic

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def dst(self) -> str:
        return self.dsts[0] if self.dsts else ""

    @property
    def src(self) -> str:
        return self.srcs[0] if self.srcs else ""


# ------------------------------------------------------------------------------ machine state


# What ``execute`` returns besides None (go on with the next instruction) or the index of the
# next instruction (a taken branch).
BLOCKED = -1  # waits for a message that has not been sent; executed again later
HALT = -2  # the core's program is done


@dataclass
class Core:
    """One core while a program runs: its buffers and program counter."""

    id: int
    chip: int
    env: dict[str, Any]
    labels: Mapping[str, int]
    pc: int = 0
    iterations: Counter = field(default_factory=Counter)  # taken backward jumps per label


@dataclass
class Run:
    """What the instructions of one execution share: the crossbars at the run's time, the
    read-noise stream, the graph inputs and outputs, the messages in flight, the step cells and
    the statistics the run records and, when the run keeps time, its :class:`Timeline`."""

    crossbars: Mapping[tuple[int, int], CrossbarAt]
    rng: np.random.Generator
    inputs: Mapping[str, np.ndarray]
    t: float = 0.0  # chip time (s since programming) at which the run starts
    noise: bool = True  # read noise on
    max_iterations: int = 1_000_000  # taken backward jumps per label and core
    batch: int | None = None  # the compiled batch size a dop's reshape may carry (docs/isa.md)
    timeline: Timeline | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    queues: dict[tuple[int, int], deque] = field(default_factory=dict)
    step_cells: StepCells | None = None  # the chip's step cells (targets with a step_cell)
    stats: dict[str, Any] = field(default_factory=dict)  # what stat instructions record

    def now(self, core: int) -> float:
        """The chip time at ``core``'s clock, in seconds since programming."""
        if self.timeline is None:
            raise ExecError("this instruction reads the chip clock, which only runs on the "
                            "reference machine")
        return self.t + self.timeline.clock[core] * 1e-9


# ------------------------------------------------------------------------------ cost model


@dataclass
class Timeline:
    """The cost model's state (docs/isa.md, "Cost"): a clock per core, advanced by the cost of
    each instruction it executes, the arrival times of messages in flight, and the totals."""

    costs: Costs
    chips: Mapping[int, int]  # core -> chip
    step_cell: StepCell | None = None  # the costs of cellw and cellr
    clock: dict[int, float] = field(default_factory=dict)  # ns
    busy: dict[int, float] = field(default_factory=dict)  # ns
    energy: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("mvm", "digital", "link", "io"), 0.0))  # nJ
    work: Counter = field(default_factory=Counter)  # per mnemonic
    layer_vectors: Counter = field(default_factory=Counter)
    layer_ns: Counter = field(default_factory=Counter)
    arrivals: dict[tuple[int, int], deque] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for core in self.chips:
            self.clock.setdefault(core, 0.0)
            self.busy.setdefault(core, 0.0)

    def charge(self, ins: Instr, amount: float, core: int) -> None:
        """``core`` did ``amount`` of ``ins``'s work: charge its cost (its definition's)."""
        self.work[ins.mnemonic] += amount
        ins.op.charge(ins, amount, core, self)

    def spend(self, core: int, ns: float, nj: float, kind: str) -> None:
        """``core`` is busy for ``ns`` and uses ``nj`` of energy of ``kind``."""
        self.clock[core] += ns
        self.busy[core] += ns
        if nj:
            self.energy[kind] = self.energy.get(kind, 0.0) + nj

    def wait_until(self, core: int, ns: float) -> None:
        self.clock[core] = max(self.clock[core], ns)

    @property
    def latency_ns(self) -> float:
        return max(self.clock.values(), default=0.0)


# ------------------------------------------------------------------------------ definitions


class Instruction:
    """The definition of one mnemonic (see the module docstring). Subclasses set the class
    attributes and override what differs from the defaults."""

    mnemonic: ClassVar[str] = ""
    usage: ClassVar[str] = ""
    semantics: ClassVar[str] = ""
    cost_doc: ClassVar[str] = "free"
    dsts: ClassVar[int] = 0  # -1: given by the 'results' keyword
    srcs: ClassVar[tuple[int, int | None]] = (0, 0)
    required: ClassVar[dict[str, Kind]] = {}
    optional: ClassVar[dict[str, Kind]] = {}
    open_kwargs: ClassVar[bool] = False  # any further keyword is passed on (dop's attributes)
    labels: ClassVar[tuple[str, ...]] = ()  # keyword arguments that name a label
    reads_clock: ClassVar[bool] = False  # its result depends on the chip time when it runs
    peer: ClassVar[str] = ""  # the keyword argument naming the other core of a message

    def check(self, kwargs: Mapping[str, Any]) -> None:
        """Reject values the definition cannot run (raise :class:`InstrError`)."""

    def decode(self, kwargs: Mapping[str, Any], program: Program) -> Any:
        """The arguments ``execute`` uses, worked out once at parse time (``program``: the
        directives and instructions parsed so far)."""
        return None

    def execute(self, ins: Instr, core: Core, run: Run) -> int | None:  # pragma: no cover
        """The reference semantics: read and write ``core.env``; return None (next
        instruction), the index of the next instruction, :data:`BLOCKED` or :data:`HALT`."""
        raise NotImplementedError

    def work(self, ins: Instr, core: Core) -> float:
        """How much the instruction just did (the unit its cost is per), after ``execute``:
        by default the elements it wrote."""
        return float(sum(np.size(core.env[d]) for d in ins.dsts))

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        """Advance ``timeline`` by the cost of ``core`` doing ``amount`` of this instruction's
        work."""

    @staticmethod
    def digital(amount: float, core: int, timeline: Timeline) -> None:
        c = timeline.costs
        timeline.spend(core, amount * c.digital_ns_per_element,
                       amount * c.digital_pj_per_element * 1e-3, "digital")


def format_value(value: Any) -> str:
    """A keyword argument's value as written in a program (JSON)."""
    return json.dumps(value)


def instr_error(ins: Instr, message: str) -> ArtifactError:
    return ArtifactError(f"{ins.where}: {ins.text}: {message}")
