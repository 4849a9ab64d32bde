"""The public runtime entry: ``load(artifact, seed, key) -> Chip``; ``Chip.run``; ``Chip.report``.

A :class:`Chip` is one simulated chip instance: the artifact plus a seed. Programming noise and
each device's drift exponent are a fixed function of the seed (drawn, crossbar by crossbar, when
a run first needs the crossbars at its time); read noise is redrawn at every MVM of every run
(its random stream also comes from the seed, so the same seed and the same sequence of runs give
the same numbers); ``t`` is the time since programming, in seconds, at which a run starts.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np

from cimc import errors
from cimc.errors import CimcError, RuntimeInputError, check_seed
from cimc.progress import ProgressFn
from cimc.runtime import device
from cimc.runtime.artifact import Artifact, read_artifact
from cimc.runtime.execution import choose
from cimc.runtime.fastpath import Workspace
from cimc.runtime.isa import Run
from cimc.runtime.key import KeyLike, encryption_info, read_key
from cimc.runtime.machine import DTYPES, Machine, all_finite, check_finite, check_inputs
from cimc.runtime.reference import Trace, replay
from cimc.runtime.report import Report, build_report, replica_fold

# Random streams derived from the seed: programming (load) and read noise (runs).
_PROGRAM_STREAM, _READ_STREAM = 0, 1

# A run is split into chunks of the batch whose largest buffer holds about this many elements
# (the values a fused step makes block by block aside: cimc.runtime.fusion keeps those in the
# cache); chunks run in parallel (cimc.runtime.execution). Few large chunks mean few Python
# calls and few messages.
CHUNK_ELEMENTS = 1 << 21
# ... but a batch of at least 2 * MIN_CHUNK_SAMPLES samples runs in at least MIN_CHUNKS chunks,
# so that two workers share it even when its buffers are small, and a batch in several chunks
# in a multiple of MIN_CHUNKS of them, so that two workers get equal shares. The chunks are a
# function of the batch alone (never of the workers), so the numbers of a seed are the same
# on any machine.
MIN_CHUNKS, MIN_CHUNK_SAMPLES = 2, 64


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=path)))


def _program_stream(seed: int, core: int, xbar: int) -> np.random.Generator:
    """The random stream that programs crossbar ``xbar`` of ``core`` (cimc.runtime.crossbars)."""
    return _rng(seed, _PROGRAM_STREAM, core, xbar)


def _in_process(pid: int, fn: ProgressFn, what: str, done: int, total: int) -> None:
    if os.getpid() == pid:
        fn(what, done, total)


class _NotFinite(Exception):
    """A chunk of the batch holds NaN or Inf (Chip.run then names the first in the batch)."""


# What a worker process may raise that is raised again as itself (cimc.runtime.workers).
_WORKER_ERRORS = (*(c for c in vars(errors).values()
                    if isinstance(c, type) and issubclass(c, CimcError)), _NotFinite)


class Chip:
    """A programmed chip instance; see the module docstring."""

    def __init__(self, art: Artifact, seed: int = 0, key: KeyLike = None,
                 drift_compensation: bool | None = None, workers: int | None = None,
                 progress: ProgressFn | None = None) -> None:
        self.artifact = art
        self.target = art.target
        self.seed = check_seed(seed)
        self.drift_compensation = (art.target.device.drift_compensation
                                   if drift_compensation is None else bool(drift_compensation))
        flips = read_key(key, art)  # checked before anything is programmed
        self.unlocked = flips is not None  # an encrypted artifact runs scrambled without its key
        self.machine = Machine(art, functools.partial(_program_stream, self.seed), flips)
        self.progress = progress
        self.execution = choose(workers, _WORKER_ERRORS)
        self._closer = weakref.finalize(self, self.execution.close)
        self.runs = 0
        self.last_run: Run | None = None  # the last run on the reference machine (its clock)
        self.last_stats: dict[str, Any] | None = None  # the last run's statistics (ODE solves)
        self._last_trace: Trace | None = None  # and what it executed
        self._last_batch = 1
        self._peak_per_sample: float | None = None
        self._dry: Trace | None = None
        self._splittable = True
        self._local = threading.local()  # one Workspace per thread that executes chunks

    @property
    def progress(self) -> ProgressFn | None:
        """Called with (what, done, total) as a run makes the crossbars at a new time (None:
        silent); worker processes say nothing."""
        return self.machine.progress

    @progress.setter
    def progress(self, fn: ProgressFn | None) -> None:
        if fn is not None:
            pid = os.getpid()
            fn = functools.partial(_in_process, pid, fn)
        self.machine.progress = fn

    @property
    def workers(self) -> int:
        return self.execution.workers

    @property
    def inputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {s.name: (s.shape, s.dtype) for s in self.artifact.inputs}

    @property
    def outputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {s.name: (s.shape, s.dtype) for s in self.artifact.outputs}

    def run(self, inputs: Mapping[str, np.ndarray], t: float = 0.0, *,
            drift_compensation: bool | None = None, noise: bool = True,
            reference: bool = False, max_iterations: int | None = None
            ) -> dict[str, np.ndarray]:
        """Execute the core programs on ``inputs`` (name -> array, batch first), starting at
        chip time ``t`` (seconds after programming). ``drift_compensation`` overrides the
        instance's setting for this run; ``noise=False`` skips read noise (programming noise
        and drift stay).

        The fast executor cuts the batch into chunks (a fixed function of the batch size, so
        results do not depend on the number of workers); each chunk draws its read noise from
        its own stream. ``reference=True`` runs the reference machine instead, the whole batch
        at once, as do programs with loops or that read the chip clock; its clock is then in
        ``last_run.timeline``. ``max_iterations`` bounds how often one loop repeats.
        """
        flexible = self.artifact.batch is not None
        # names, dtypes and shapes here; finiteness inside each chunk (in parallel)
        feeds = check_inputs(self.artifact.inputs, inputs, flexible)
        comp = self.drift_compensation if drift_compensation is None else bool(drift_compensation)
        t = device.check_time(t)  # here, so that a bad t is reported before any chunk
        self.last_stats = None
        run_index = self.runs
        self.runs += 1
        batch = next(iter(feeds.values())).shape[0] if feeds and flexible else 1
        fast = not reference and self.machine.fast is not None
        bounds = self._chunks(batch) if flexible and fast else [(0, batch)]
        jobs = [({"seed": self.seed, "run": run_index, "chunk": i, "t": t, "compensate": comp,
                  "noise": bool(noise), "fast": fast, "max_iterations": max_iterations,
                  "batch": b - a},
                 {k: v[a:b] for k, v in feeds.items()} if len(bounds) > 1 else feeds)
                for i, (a, b) in enumerate(bounds)]
        try:
            with self.execution.blas_scope():
                frozen = self.machine.at(t, comp)
                if len(jobs) > 1:
                    # the crossbars at t, made before any chunk runs (worker processes forked
                    # for this run inherit them)
                    frozen.fill(self.execution.each, self.execution.processes)
                    parts = self.execution.map(jobs, self._chunk, frozen.completed)
                else:  # one chunk, here: it goes on with each crossbar as soon as it is made
                    with frozen.forking(self.execution.processes):
                        parts = self.execution.map(jobs, self._chunk)
        except _NotFinite:
            check_finite(feeds)  # the whole batch: the first bad index and the count
            raise AssertionError("a chunk held NaN/Inf but the batch does not") from None
        self._last_batch = batch  # report() scales the traced batch-1 run to this batch
        return {s.name: _join([p[s.name] for p in parts]) for s in self.artifact.outputs}

    def _chunk(self, args: Mapping[str, Any], inputs: Mapping[str, np.ndarray]
               ) -> Mapping[str, np.ndarray]:
        """Run one chunk of a batch (``args``: see run), here or in a worker process."""
        if not all_finite(inputs):
            raise _NotFinite
        trace = None if args["fast"] else Trace(args["batch"])
        outputs, run = self.machine.execute(
            inputs, args["t"], args["compensate"],
            _rng(args["seed"], _READ_STREAM, args["run"], args["chunk"]), noise=args["noise"],
            fast=args["fast"], threaded=args.get("threaded", False), ws=self._workspace(),
            trace=trace, max_iterations=args.get("max_iterations"))
        if trace is not None:
            self.last_run, self._last_trace = run, trace
            self.last_stats = run_stats(run)
        return outputs

    def _chunks(self, batch: int) -> list[tuple[int, int]]:
        """The chunks of a batch: each about CHUNK_ELEMENTS of its largest buffer, at least two
        samples (a product over one vector may sum in another order than over several), at
        least MIN_CHUNKS of them for a batch of 2 * MIN_CHUNK_SAMPLES or more, several in a
        multiple of MIN_CHUNKS (where the batch allows), and of sizes that differ by at most
        one."""
        if batch < 4:
            return [(0, batch)]
        if self._peak_per_sample is None:
            blocked = self.machine.blocked()
            written = [n for key, n in self._dry_trace().written.items() if key not in blocked]
            self._peak_per_sample = max(max(written, default=1) / self._dry_trace().batch, 1.0)
            # The compiler proves batch independence (the manifest's "batch"); only an artifact
            # without that field (written by hand) is probed.
            self._splittable = (self.artifact.manifest.get("batch") is not None
                                or self._samples_independent())
        if not self._splittable:
            return [(0, batch)]
        size = max(1, int(CHUNK_ELEMENTS // self._peak_per_sample))
        n = max(math.ceil(batch / size), min(MIN_CHUNKS, batch // MIN_CHUNK_SAMPLES))
        if n > 1:
            n = -(-n // MIN_CHUNKS) * MIN_CHUNKS
        n = min(n, batch // 2)
        cuts = [batch * i // n for i in range(n + 1)]
        return list(itertools.pairwise(cuts))

    def _samples_independent(self) -> bool:
        """Whether the programs of an artifact without a ``batch`` field treat the samples of a
        batch independently, so a batch may run in chunks. A model can normalise or reduce over
        its first axis; then the first sample's outputs change when a second sample joins it
        (checked once, noiselessly, on random inputs)."""
        rng = np.random.default_rng(0)
        two = {s.name: (rng.standard_normal((2, *s.shape[1:])).astype(DTYPES[s.dtype])
                        if DTYPES[s.dtype].kind == "f" else np.zeros((2, *s.shape[1:]),
                                                                      DTYPES[s.dtype]))
               for s in self.artifact.inputs}
        t, comp = self._any_time()
        try:
            with self.execution.blas_scope(), np.errstate(all="ignore"):
                both, _ = self.machine.execute(two, t, comp, _rng(0, 98), noise=False)
                first, _ = self.machine.execute({k: v[:1] for k, v in two.items()}, t, comp,
                                                _rng(0, 98), noise=False)
        except CimcError:
            return False  # not batch-flexible: run every batch whole
        for name, a in first.items():
            b = both[name]
            if np.ndim(a) == 0 or np.shape(a)[0] != 1 or np.shape(b)[0] != 2:
                continue
            b = b[:1]
            if a.shape != b.shape:
                return False
            if a.dtype.kind in "fc":
                tol = 1e-4 * (float(np.nanmax(np.abs(b))) if b.size else 0.0) + 1e-6
                off = ~np.isclose(a, b, rtol=1e-4, atol=tol, equal_nan=True)
                if off.mean() > 0.05:  # a few ADC steps may flip on rounding; mixing moves all
                    return False
            elif not np.array_equal(a, b):
                return False
        return True

    def _workspace(self) -> Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = Workspace()
        return ws

    def report(self, batch: int | None = None) -> Report:
        """Crossbars, cores, utilisation, instruction counts, latency, energy and area for a
        batch of ``batch`` inputs (default: the last run's batch, or 1 before any run). For
        programs with loops, the instructions the last run executed (which depend on its
        inputs)."""
        trace = self._loop_trace() or self._dry_trace()  # work scales with the batch
        if batch is None:
            batch = self._last_batch
        if batch < 1:
            raise RuntimeInputError(f"report batch must be >= 1, got {batch}")
        programs, ratio = self.machine.programs, batch / trace.batch
        timeline = replay(programs, trace, self.machine.timeline(), ratio)
        fold = replica_fold(self.artifact)
        unreplicated = replay(programs, trace, self.machine.timeline(), ratio, fold) \
            if fold else None
        return build_report(self.machine, timeline, int(batch),
                            encryption_info(self.artifact, self.unlocked), self.last_stats,
                            unreplicated)

    def _loop_trace(self) -> Trace | None:
        if not any(p.labels for p in self.machine.programs.values()):
            return None
        if self._last_trace is None:
            raise RuntimeInputError("this artifact's programs loop, and how often depends on "
                                    "the inputs: run it once before asking for its report "
                                    "(cimc report --input NAME=FILE.npy runs it)")
        return self._last_trace

    def _any_time(self) -> tuple[float, bool]:
        """A (t, compensate) for runs whose values do not matter, only their shapes and work:
        the crossbars made last, so that no others are made for them (t = 0 before any)."""
        return self.machine.latest() or (0.0, False)

    def _dry_trace(self) -> Trace:
        """Trace one noiseless run of the reference machine on zeros of batch 1 (for shapes and
        work; no random stream used), on whichever crossbars are at hand."""
        if self._dry is not None:
            return self._dry
        if self.artifact.batch is None:  # exact shapes: trace the compiled shapes themselves
            feeds = {s.name: np.zeros(s.shape, DTYPES[s.dtype]) for s in self.artifact.inputs}
        else:
            feeds = {s.name: np.zeros((1, *s.shape[1:]), DTYPES[s.dtype])
                     for s in self.artifact.inputs}
        trace = Trace(1)
        t, comp = self._any_time()
        with self.execution.blas_scope(), np.errstate(all="ignore"):
            self.machine.at(t, comp).fill(self.execution.each)
            self.machine.execute(feeds, t, comp, _rng(0, 99), noise=False, trace=trace)
        self._dry = trace
        return trace

    def close(self) -> None:
        """Stop this instance's worker processes or threads, if it has any, once a run of it
        in another thread is done (a later run starts new ones; they also stop when the
        instance is garbage-collected or the process exits)."""
        self.execution.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Chip({self.artifact.name!r}, target={self.target.name!r}, seed={self.seed}, "
                f"cores={len(self.machine.programs)}, crossbars={len(self.machine.crossbars)})")


# Statistics that count something (the others are times).
_COUNTS = ("steps", "rejected", "f_evals")


def run_stats(run: Run) -> dict[str, Any] | None:
    """``chip.last_stats``: what the run's ``stat`` instructions recorded (an ODE solve's
    ``steps``, ``rejected``, ``f_evals``, ``t_end``; the per-try lists ``t``, ``h``,
    ``accepted`` under ``trace``), the step cells' ``cell_writes`` and ``max_writes_per_row``,
    and the run's modelled ``latency_ns`` and ``energy_nj``. None for a run that recorded
    nothing."""
    if not run.stats:
        return None
    stats: dict[str, Any] = {k: int(v) if k in _COUNTS else v for k, v in run.stats.items()
                             if not isinstance(v, list)}
    cells = run.step_cells
    stats["cell_writes"] = sum(cells.writes) if cells is not None else 0
    stats["max_writes_per_row"] = max(cells.writes, default=0) if cells is not None else 0
    if run.timeline is not None:
        stats["latency_ns"] = run.timeline.latency_ns
        stats["energy_nj"] = float(sum(run.timeline.energy.values()))
    stats["trace"] = {k: v for k, v in run.stats.items() if isinstance(v, list)}
    return stats


def _join(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1 or np.ndim(parts[0]) == 0:
        return np.asarray(parts[0], order="C")  # (ascontiguousarray would make a 0-d array 1-d)
    return np.concatenate(parts, axis=0)


def load(path: str | Path, seed: int = 0, key: KeyLike = None, *,
         drift_compensation: bool | None = None, workers: int | None = None,
         progress: ProgressFn | None = None) -> Chip:
    """Read an artifact (``NAME.cimc/`` or ``.cimc.zip``) and program a chip instance.

    ``seed`` fixes the programming noise and drift exponents (and the read-noise stream);
    ``key`` unlocks encrypted weights; ``drift_compensation`` overrides the target's default
    (on for PCM targets); ``workers`` sets how many chunks of a batch run at once (default:
    the CPUs available, at most 8): in worker processes forked beside the caller on Linux, on
    threads elsewhere, in the calling thread for 1 (cimc.runtime.execution). ``Chip.close()``
    (or ``with``) stops them; so does garbage collection. ``progress`` is called with (what,
    done, total) while the artifact is read and as the crossbars are made, at a run's new time
    (:attr:`Chip.progress`): for a bar over big models. It may be called from threads of the
    chip's own (the crossbars made in forked processes are taken in by one).

    The crossbars' programming noise and drift exponents are a fixed function of the seed; a
    chip draws them when a run first needs its crossbars at a time, and keeps only what the runs
    at that time multiply by (cimc.runtime.crossbars).
    """
    return Chip(read_artifact(path, progress), seed=seed, key=key,
                drift_compensation=drift_compensation, workers=workers, progress=progress)
