"""A programmed chip instance's machine: the parsed programs, their constants, the crossbars, and
the two executors over them.

:class:`Machine` is built once per chip instance (``cimc.load``): it checks that the programs
fit the artifact (constants exist, transfers name existing cores, inputs and outputs match the
manifest), reads and checks every crossbar (:mod:`cimc.runtime.crossbars`), and makes each
core's code for the reference machine (:mod:`cimc.runtime.reference`) and, unless a program
reads the chip clock, the fast executor's plan (:mod:`cimc.runtime.plan`). Per time ``t`` it
freezes the crossbars (programmed from their streams, drift applied, scales folded in, read-noise
variances, compensation gains) and keeps the last few times within :data:`CACHE_BYTES`, so
repeated runs at one time do not redo them.

Crossbar weights keep one drift time per run: the run's ``t``. A run lasts milliseconds of chip
time, which drift's logarithmic clock cannot tell from its start; the chip clock that
instructions advance is for the state that changes within a run (``time``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from cimc.errors import ArtifactError, RuntimeInputError
from cimc.progress import ProgressFn
from cimc.runtime import device
from cimc.runtime.artifact import Artifact, TensorSpec
from cimc.runtime.crossbars import (
    CrossbarAt,
    DeclaredCrossbar,
    Streams,
    crossbar_at,
    declare_crossbars,
    programmed,
)
from cimc.runtime.fastpath import FastRun, Matrices
from cimc.runtime.forkfill import PROGRESS_S, ForkedFill, worth_forking
from cimc.runtime.workers import fork_available
from cimc.runtime.isa import Run, Timeline
from cimc.runtime.plan import plan_core, plannable
from cimc.runtime.reference import Coded, Trace, reference_codes, run_cores
from cimc.runtime.stepcell import StepCells

# IR dtype names (docs/isa.md, manifest inputs/outputs) -> numpy dtypes.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32), "f64": np.dtype(np.float64), "f16": np.dtype(np.float16),
    "i64": np.dtype(np.int64), "i32": np.dtype(np.int32), "i16": np.dtype(np.int16),
    "i8": np.dtype(np.int8), "u8": np.dtype(np.uint8), "i1": np.dtype(np.bool_),
}

# The crossbar matrices of at most this many times are kept, and of as many as fit in
# CACHE_BYTES (the newest always).
_T_CACHE_SIZE = 4
CACHE_BYTES = 1 << 30

# Runs a function on every item of a list, results in order (the execution strategy's each).
Each = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]

Key = tuple[int, int]  # (core, crossbar index)


class Frozen:
    """A chip's crossbars frozen at one time (``t``, ``compensate``): each made the first time a
    run asks for it, or ahead of that by :meth:`fill` (on the process's threads or, for many,
    in forked processes: what ``Chip.run`` does). Whoever asks first makes a crossbar; whoever
    asks while another thread makes it waits for it. ``crossbars`` and ``matrices`` are the
    mappings the reference machine and the fast executor read."""

    def __init__(self, machine: Machine, t: float, compensate: bool) -> None:
        self._xbs = machine.crossbars
        self._make_at = functools.partial(crossbar_at, t=t, compensate=compensate,
                                          streams=machine.streams)
        self._made: dict[Key, Matrices] = {}
        self._making: dict[Key, threading.Event] = {}
        self._failed: dict[Key, BaseException] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # when fill() first found every crossbar made (a time.monotonic()): processes forked
        # before it lack some. None where a process makes them faster than it is forked anew.
        self.completed: float | None = None
        self._forks = machine.forks
        self._progress = machine.progress
        self._what = f"crossbars at t = {t:g} s"
        self.crossbars: Mapping[Key, CrossbarAt] = _View(self, lambda m: m.at)
        self.matrices: Mapping[Key, Matrices] = _View(self, lambda m: m)

    def get(self, key: Key) -> Matrices:
        """Crossbar ``key`` at this time, made now if no one has begun it; when another thread
        is making it, that one (and when that one gave it up unmade, made now after all)."""
        while True:
            hit = self._made.get(key)
            if hit is not None:
                return hit
            self._own()
            with self._lock:
                hit = self._made.get(key)
                if hit is not None:
                    return hit
                event = self._making.get(key)
                mine = event is None
                if mine:
                    event = self._making[key] = threading.Event()
            if mine:
                break
            event.wait()
            if key in self._failed:
                raise self._failed[key]
        try:
            hit = self._made[key] = Matrices(self._make_at(self._xbs[key]))
        except BaseException as e:
            with self._lock:
                if isinstance(e, Exception) and not isinstance(e, MemoryError):
                    self._failed[key] = e  # every later ask gets the same error
                else:  # interrupted or out of memory: whoever asks next tries again
                    self._making.pop(key, None)
            raise
        finally:
            event.set()
        self._heard()
        return hit

    def fill(self, each: Each | None = None, processes: int = 1) -> None:
        """Make every crossbar no one has begun, by ``each`` (default: one after another) or,
        with ``processes`` > 1 and enough of them (cimc.runtime.forkfill), on that many
        forked processes; and wait for those others are making."""
        if not self.complete:
            with self.forking(processes):
                pass
            (each or _serial)(self.get, list(self._xbs))
        if self.completed is None and self._forks:
            self.completed = time.monotonic()

    @contextlib.contextmanager
    def forking(self, processes: int) -> Iterator[None]:
        """Run the block while ``processes`` forked processes make the noisy crossbars no one
        has begun (when there are enough of them, cimc.runtime.forkfill), layer by layer: a
        thread of this process settles each as it comes, so that a :meth:`get` waiting for it
        goes on at once. The block's end waits for the children (stopped when the block, or
        the thread, raises); those they left unmade are made by whoever asks for them."""
        self._own()
        events: dict[Key, threading.Event] = {}
        fill: ForkedFill | None = None
        settler: threading.Thread | None = None
        errors: list[BaseException] = []
        try:
            if processes > 1 and fork_available() and self._begin_forked(events):
                try:
                    fill = ForkedFill(self._make_at, {k: self._xbs[k] for k in events},
                                      processes)
                except (OSError, MemoryError):  # no shared memory of that size: made when
                    self._release(events)  # asked for
            if fill is not None:
                settler = threading.Thread(target=self._settle, args=(fill, events, errors),
                                           name="cimc-crossbars", daemon=True)
                settler.start()
            yield
            if settler is not None:
                settler.join()
                if errors:
                    raise errors[0]
        finally:
            if fill is not None:
                fill.kill()  # (the children have ended, unless something was interrupted)
                if settler is not None and settler.ident is not None:
                    settler.join()
                else:  # no thread: what the children made is taken here
                    self._settle(fill, events, errors)
                fill.close()
            self._release(events)

    def _begin_forked(self, events: dict[Key, threading.Event]) -> bool:
        """Begin the noisy crossbars no one has begun, in layer order, when there are enough of
        them to fork for: whether it did; their events (which their waiters wait on) go into
        ``events``, at once, so that whatever interrupts the caller can release them."""
        with self._lock:
            todo = [k for k in layer_order(self._xbs)
                    if self._xbs[k].noisy and k not in self._made and k not in self._making]
            if not worth_forking([self._xbs[k] for k in todo]):
                return False
            for k in todo:
                events[k] = self._making[k] = threading.Event()
            return True

    def _settle(self, fill: ForkedFill, events: Mapping[Key, threading.Event],
                errors: list[BaseException]) -> None:
        """Take the crossbars the children make as they come, until every child has ended;
        then release those none made (a thread waiting for one then makes it). An error here
        (a progress callback that raises) stops the children and goes to ``errors``."""
        try:
            heard = time.monotonic()
            while (made := fill.take(PROGRESS_S)) is not None:
                with self._lock:
                    for k, at in made.items():
                        self._made[k] = Matrices(at)
                        self._making.pop(k, None)
                        events[k].set()
                if time.monotonic() - heard >= PROGRESS_S:
                    heard = time.monotonic()
                    self._heard()
            self._heard()
        except BaseException as e:
            fill.kill()
            errors.append(e)
        finally:
            self._release(events)

    def _own(self) -> None:
        """In a process forked while this one's threads were making crossbars (a worker
        process): no one here is making them, and no one holds the lock."""
        if _fresh_lock(self):
            self._making = {}

    def _release(self, events: Mapping[Key, threading.Event]) -> None:
        """No crossbar of ``events`` stays begun: the waiters for one not made make it."""
        with self._lock:
            for k, event in events.items():
                if not event.is_set():
                    self._making.pop(k, None)
                    event.set()

    def _heard(self) -> None:
        """Progress: the crossbars made."""
        if self._progress is not None:
            self._progress(self._what, len(self._made), len(self._xbs))

    @property
    def complete(self) -> bool:
        return len(self._made) == len(self._xbs)

    @property
    def nbytes(self) -> int:
        """Bytes of the matrices made (the noiseless crossbars' are the crossbars' own)."""
        return sum(m.at.nbytes for k, m in list(self._made.items()) if self._xbs[k].noisy)


def _fresh_lock(owner: Any) -> bool:
    """Whether this process was forked since ``owner`` (with ``_pid`` and ``_lock``) was made
    or last looked; then ``owner`` gets a new lock (a thread that held the old one at the fork
    is not here to release it)."""
    if owner._pid == os.getpid():
        return False
    owner._pid, owner._lock = os.getpid(), threading.Lock()
    return True


def layer_order(xbs: Mapping[Key, DeclaredCrossbar]) -> list[Key]:
    """The crossbars layer by layer, the layers in the order their first crossbars come (about
    the order a run asks for them: a layer's copies, placed after every other layer, join it)."""
    rank: dict[str, int] = {}
    for xb in xbs.values():
        rank.setdefault(xb.layer, len(rank))
    return sorted(xbs, key=lambda k: (rank[xbs[k].layer], k))


class _View(Mapping[Key, Any]):
    def __init__(self, frozen: Frozen, pick: Callable[[Matrices], Any]) -> None:
        self._frozen, self._pick = frozen, pick

    def __getitem__(self, key: Key) -> Any:
        if key not in self._frozen._xbs:
            raise KeyError(key)
        return self._pick(self._frozen.get(key))

    def __iter__(self) -> Iterator[Key]:
        return iter(self._frozen._xbs)

    def __len__(self) -> int:
        return len(self._frozen._xbs)


class Machine:
    """A chip instance: crossbars plus the code of every core. ``streams`` gives each
    crossbar's random stream of programming (see :mod:`cimc.runtime.crossbars`)."""

    def __init__(self, art: Artifact, streams: Streams,
                 flips: Mapping[str, np.ndarray] | None = None) -> None:
        self.art = art
        self.programs = dict(sorted(art.programs.items()))
        self.consts = {c: _consts(p, art) for c, p in self.programs.items()}
        _check_links(self.programs, art)
        self.crossbars = declare_crossbars(art, flips)
        # enough noisy crossbars to make in forked processes (cimc.runtime.forkfill)
        self.forks = worth_forking(list(self.crossbars.values()))
        self.streams = streams
        self.chips = {c: p.chip for c, p in self.programs.items()}
        self.reference = reference_codes(self.programs, self.consts)
        self.fast: dict[int, Coded] | None = None
        if plannable(self.programs):
            sliced = {c: {x for x, d in p.xbars.items() if d.slices > 1}
                      for c, p in self.programs.items()}
            self.fast = {c: plan_core(p, self.consts[c], sliced[c])
                         for c, p in self.programs.items()}
        self._cache: OrderedDict[tuple[float, bool], Frozen] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.progress: ProgressFn | None = None  # hears of the crossbars made at a new time

    @property
    def noisy(self) -> bool:
        return any(xb.noisy for xb in self.crossbars.values())

    def at(self, t: float, compensate: bool) -> Frozen:
        """The crossbars at time ``t`` (cached, see the module docstring), made as they are
        asked for (or by :meth:`Frozen.fill`)."""
        key = (device.check_time(t), bool(compensate))
        hit = self._cache.get(key)
        if hit is not None:  # without the lock: a forked worker may inherit it held
            try:
                self._cache.move_to_end(key)
            except KeyError:  # dropped by another thread just now: it is still ours
                pass
            return hit
        _fresh_lock(self)
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                self._make_room()
                hit = self._cache[key] = Frozen(self, *key)
            self._cache.move_to_end(key)
        return hit

    def programmed(self, key: tuple[int, int]) -> list[device.ProgrammedArray]:
        """The programmed slices of crossbar ``key`` (core, index) of a noisy chip: its
        devices' conductances and drift exponents, drawn again from its stream."""
        return programmed(self.crossbars[key], self.streams)

    def latest(self) -> tuple[float, bool] | None:
        """The (t, compensate) whose crossbars were made or used last, if any."""
        return next(reversed(self._cache), None)

    def _make_room(self) -> None:
        """Drop the oldest times until one more fits."""
        sizes = [f.nbytes for f in self._cache.values()]
        need = max(sizes, default=0)
        while self._cache and (len(self._cache) >= _T_CACHE_SIZE
                               or sum(sizes) + need > CACHE_BYTES):
            self._cache.popitem(last=False)
            sizes.pop(0)

    def blocked(self) -> set[tuple[int, int]]:
        """(core, instruction index) of the instructions whose whole result the fast plan
        never holds: in a fused step with an im2col (cimc.runtime.fusion), every value before
        the step's result (the patches, the product and the ops' values, made block by block
        or in place on the result)."""
        out = set()
        for c, code in (self.fast or {}).items():
            index = {id(ins): i for i, ins in enumerate(self.programs[c].instrs)}
            for st in code.steps:
                if getattr(st, "prologue", None) is not None:
                    inner = [st.prologue.ins, st.mvm.ins, *(op.ins for op in st.ops)][:-1]
                    out.update((c, index[id(ins)]) for ins in inner)
        return out

    def timeline(self) -> Timeline:
        return Timeline(self.art.target.costs, self.chips, self.art.target.step_cell)

    def execute(self, inputs: Mapping[str, np.ndarray], t: float, compensate: bool,
                rng: np.random.Generator, *, noise: bool = True, fast: bool = True,
                threaded: bool = False, ws: Any = None, trace: Trace | None = None,
                max_iterations: int | None = None) -> tuple[dict[str, np.ndarray], Run]:
        """Run every core program on one batch: on the fast executor when ``fast`` and the
        programs allow it (and no ``trace`` is asked for), else on the reference machine, which
        keeps the chip clock. Returns the graph outputs and the run (its timeline, if kept)."""
        frozen = self.at(t, compensate)
        common: dict[str, Any] = {"crossbars": frozen.crossbars, "rng": rng, "inputs": inputs,
                                  "t": t,
                                  "noise": noise, "batch": self.art.batch}
        if max_iterations is not None:
            common["max_iterations"] = int(max_iterations)
        if fast and trace is None and self.fast is not None:
            run: Run = FastRun(**common, matrices=frozen.matrices, threaded=threaded,
                               **({} if ws is None else {"ws": ws}))
            run_cores(self.fast, run)
        else:
            cell = self.art.target.step_cell
            run = Run(**common, timeline=self.timeline(),
                      step_cells=StepCells(cell) if cell is not None else None)
            run_cores(self.reference, run, trace)
        return run.outputs, run


def _serial(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(x) for x in items]


def _consts(prog: Any, art: Artifact) -> dict[str, np.ndarray]:
    consts = {}
    for buf, decl in prog.consts.items():
        key = f"const/{decl.name}"
        if key not in art.weights:
            raise ArtifactError(f"{prog.file}:{decl.line}: .const {buf} names '{decl.name}', "
                                f"but weights.npz has no '{key}'")
        consts[buf] = art.weights[key]
    return consts


def _check_links(programs: Mapping[int, Any], art: Artifact) -> None:
    """send/recv name existing cores; inputs/outputs match the manifest."""
    in_names = {s.name for s in art.inputs}
    produced: dict[str, str] = {}
    for prog in programs.values():
        for ins in prog.instrs:
            peer = ins.kwargs.get("to" if ins.mnemonic == "send" else "from")
            if ins.mnemonic in ("send", "recv") and peer not in programs:
                raise ArtifactError(f"{ins.where}: {ins.mnemonic} names core {peer}, which the "
                                    f"artifact does not have (cores: {sorted(programs)})")
            name = ins.kwargs.get("name")
            if ins.mnemonic == "input" and name not in in_names:
                raise ArtifactError(f"{ins.where}: input '{name}' is not a graph input of the "
                                    f"manifest ({', '.join(sorted(in_names))})")
            if ins.mnemonic == "output":
                if name in produced:
                    raise ArtifactError(f"{ins.where}: output '{name}' is also written at "
                                        f"{produced[name]}")
                produced[name] = ins.where
    missing = [s.name for s in art.outputs if s.name not in produced]
    extra = sorted(set(produced) - {s.name for s in art.outputs})
    if missing:
        raise ArtifactError(f"{art.path}: no core program writes graph output(s) "
                            f"{', '.join(missing)}")
    if extra:
        raise ArtifactError(f"{produced[extra[0]]}: output '{extra[0]}' is not a graph output "
                            "of the manifest")


# ------------------------------------------------------------------------------ inputs


def check_inputs(specs: tuple[TensorSpec, ...], inputs: Mapping[str, Any],
                 flexible: bool = True) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes (finiteness: :func:`all_finite`, :func:`check_finite`,
    which a run applies chunk by chunk). With ``flexible`` the batch dimension (0) may differ
    from the compiled one, the same for every input; otherwise shapes are exact."""
    if not isinstance(inputs, Mapping):
        raise RuntimeInputError(f"inputs must be a dict of name -> array, got "
                                f"{type(inputs).__name__}")
    want = {s.name: s for s in specs}
    unknown = [k for k in inputs if k not in want]
    if unknown:
        raise RuntimeInputError(f"unknown input name(s) {', '.join(map(repr, unknown))}; the "
                                f"model's inputs are: {_describe_specs(specs)}")
    missing = [s.name for s in specs if s.name not in inputs]
    if missing:
        raise RuntimeInputError(f"missing input(s) {', '.join(map(repr, missing))}; the model's "
                                f"inputs are: {_describe_specs(specs)}")
    out = {}
    batch = None
    for s in specs:
        arr = _check_one(s, inputs[s.name], flexible)
        if flexible:
            if batch is not None and arr.shape[0] != batch:
                raise RuntimeInputError(f"input '{s.name}' has batch size {arr.shape[0]}, but "
                                        f"another input has {batch}; all inputs share the batch "
                                        "size")
            batch = arr.shape[0]
        out[s.name] = arr
    return out


def _describe_specs(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name} {_fmt_shape(s.shape)} {_dtype_name(s.dtype)}" for s in specs)


def _dtype_name(ir_dtype: str) -> str:
    return DTYPES[ir_dtype].name if ir_dtype in DTYPES else ir_dtype


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[N" + "".join(f", {d}" for d in shape[1:]) + "]" if shape else "[]"


def _check_one(spec: TensorSpec, value: Any, flexible: bool = True) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise RuntimeInputError(f"input '{spec.name}' must be a numpy array, got "
                                f"{type(value).__name__}")
    dtype = DTYPES.get(spec.dtype)
    if dtype is None:
        raise ArtifactError(f"manifest input '{spec.name}' has unknown dtype '{spec.dtype}'")
    expected = f"{_fmt_shape(spec.shape)} {dtype.name}"
    if value.dtype != dtype:
        raise RuntimeInputError(f"input '{spec.name}' has dtype {value.dtype}, expected "
                                f"{dtype.name} (shape {expected}); convert it with "
                                f".astype(np.{dtype.name})")
    if not flexible:
        if tuple(value.shape) != tuple(spec.shape):
            raise RuntimeInputError(f"input '{spec.name}' has shape {list(value.shape)}, expected "
                                    f"exactly {list(spec.shape)} {dtype.name} (this model's first "
                                    "dimension is not a batch the runtime may vary)")
    elif value.ndim != len(spec.shape) or value.shape[1:] != spec.shape[1:] or (
            value.ndim and value.shape[0] < 1):
        raise RuntimeInputError(f"input '{spec.name}' has shape {list(value.shape)}, expected "
                                f"{expected} (N = any batch size >= 1)")
    return value


def all_finite(inputs: Mapping[str, np.ndarray]) -> bool:
    """Whether every float input is free of NaN and Inf (a quick scan; see check_finite)."""
    return all(v.dtype.kind != "f" or bool(np.isfinite(v).all()) for v in inputs.values())


def check_finite(inputs: Mapping[str, np.ndarray]) -> None:
    """Raise for the first input holding NaN or Inf, naming the count and first index."""
    for name, value in inputs.items():
        if value.dtype.kind != "f":
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise RuntimeInputError(f"input '{name}' holds {int(bad.sum())} NaN/Inf "
                                    f"value(s), the first at index {list(idx)}; inputs must be "
                                    "finite")
