"""The public runtime entry: ``load(artifact, seed, key) -> Chip``; ``Chip.run``; ``Chip.report``.

A :class:`Chip` is one simulated chip instance: the artifact plus a seed. Programming noise and
each device's drift exponent are drawn once, when the instance is loaded; read noise is redrawn
at every MVM of every run (its random stream also comes from the seed, so the same seed and the
same sequence of runs give the same numbers); ``t`` is the time since programming, in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import numpy as np
from threadpoolctl import ThreadpoolController

from cimc import errors
from cimc.errors import CimcError, RuntimeInputError
from cimc.runtime import device
from cimc.runtime.artifact import Artifact, read_artifact
from cimc.runtime.key import KeyLike, encryption_info, read_key
from cimc.runtime.machine import (
    DTYPES,
    Machine,
    RunContext,
    Trace,
    Workspace,
    all_finite,
    check_finite,
    check_inputs,
)
from cimc.runtime.report import Report, build_report
from cimc.runtime.workers import ForkPool, fork_available

# Random streams derived from the seed: programming (load) and read noise (runs).
_PROGRAM_STREAM, _READ_STREAM = 0, 1

# A run is split into chunks of the batch whose largest buffer holds about this many elements
# (patches made block by block inside a fused step aside: cimc.runtime.fusion keeps those in
# the cache); chunks run in parallel (cimc.runtime.workers). Few large chunks mean few Python
# calls and few messages.
CHUNK_ELEMENTS = 1 << 21


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The BLAS libraries loaded in this process (scanned once: the scan reads the process's
    loaded libraries, far too slow to repeat per run)."""
    return ThreadpoolController()


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with BLAS (OpenBLAS, MKL, BLIS: whichever numpy uses) on one thread,
    restored afterwards.

    A run parallelises over chunks of the batch itself; BLAS threads on top of that only
    compete for the same cores (and spin), which costs far more than they give on the skinny
    products of crossbar MVMs. This changes a process-wide setting while a run executes;
    concurrent runs share one limit, lifted when the last ends.
    """
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = _blas_controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


_thread_pools: dict[int, ThreadPoolExecutor] = {}
_thread_pools_lock = threading.Lock()


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """Worker threads shared by every chip instance (where chunks cannot run in forked
    processes; many instances, few threads)."""
    with _thread_pools_lock:
        pool = _thread_pools.get(threads)
        if pool is None:
            pool = ThreadPoolExecutor(threads, thread_name_prefix="cimc-run")
            _thread_pools[threads] = pool
        return pool


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=path)))


class _NotFinite(Exception):
    """A chunk of the batch holds NaN or Inf (Chip.run then names the first in the batch)."""


# What a worker process may raise that is raised again as itself (cimc.runtime.workers).
_WORKER_ERRORS = (*(c for c in vars(errors).values()
                    if isinstance(c, type) and issubclass(c, CimcError)), _NotFinite)


class Chip:
    """A programmed chip instance; see the module docstring."""

    def __init__(self, art: Artifact, seed: int = 0, key: KeyLike = None,
                 drift_compensation: bool | None = None, workers: int | None = None) -> None:
        self.artifact = art
        self.target = art.target
        self.seed = int(seed)
        self.drift_compensation = (art.target.device.drift_compensation
                                   if drift_compensation is None else bool(drift_compensation))
        flips = read_key(key, art)  # checked before anything is programmed
        self.unlocked = flips is not None  # an encrypted artifact runs scrambled without its key
        self.machine = Machine(art, _rng(self.seed, _PROGRAM_STREAM), flips)
        self.workers = _default_workers() if workers is None else max(1, int(workers))
        self.runs = 0
        self._last_batch = 1
        self._peak_per_sample: float | None = None
        self._dry: Trace | None = None
        self._splittable = True
        self._local = threading.local()  # one Workspace per thread that executes chunks
        self._procs: ForkPool | None = None  # worker processes, forked at the first parallel run
        self._procs_lock = threading.Lock()
        self._procs_closer: Callable[[], Any] = lambda: None

    @property
    def inputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {s.name: (s.shape, s.dtype) for s in self.artifact.inputs}

    @property
    def outputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {s.name: (s.shape, s.dtype) for s in self.artifact.outputs}

    def run(self, inputs: Mapping[str, np.ndarray], t: float = 0.0, *,
            drift_compensation: bool | None = None, noise: bool = True) -> dict[str, np.ndarray]:
        """Execute the core programs on ``inputs`` (name -> array, batch first) at ``t`` seconds
        after programming. ``drift_compensation`` overrides the instance's setting for this run;
        ``noise=False`` skips read noise (programming noise and drift stay).

        The batch is cut into chunks (a fixed function of the batch size, so results do not
        depend on the number of workers); each chunk draws its read noise from its own stream.
        """
        flexible = self.artifact.batch is not None
        # names, dtypes and shapes here; finiteness inside each chunk (in parallel)
        feeds = check_inputs(self.artifact.inputs, inputs, flexible)
        comp = self.drift_compensation if drift_compensation is None else bool(drift_compensation)
        t = device.check_time(t)
        self.machine.tiles_at(t, comp)  # here, so that a bad t is reported before any chunk
        run_index = self.runs
        self.runs += 1
        batch = next(iter(feeds.values())).shape[0] if feeds and flexible else 1
        bounds = self._chunks(batch) if flexible else [(0, batch)]
        jobs = [({"seed": self.seed, "run": run_index, "chunk": i, "t": t, "compensate": comp,
                  "noise": bool(noise)},
                 {k: v[a:b] for k, v in feeds.items()} if len(bounds) > 1 else feeds)
                for i, (a, b) in enumerate(bounds)]
        try:
            with single_threaded_blas():
                parts = self._map(jobs)
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
        ctx = RunContext(self.machine.tiles_at(args["t"], args["compensate"]),
                         _rng(args["seed"], _READ_STREAM, args["run"], args["chunk"]),
                         args["noise"], self._workspace(), threaded=args.get("threaded", False))
        return self.machine.execute(inputs, ctx)

    def _map(self, jobs: list[tuple[dict[str, Any], Mapping[str, np.ndarray]]]
             ) -> list[Mapping[str, np.ndarray]]:
        """The chunks' outputs: on forked worker processes beside this one (Linux), else on
        threads; one chunk, or one worker, runs here alone."""
        if len(jobs) == 1 or self.workers == 1:
            return [self._chunk(*job) for job in jobs]
        pool = self._fork_pool(jobs) if fork_available() else None
        if pool is not None:
            try:
                return pool.map(jobs, self._chunk)
            finally:
                pool.lock.release()
        for args, _ in jobs:
            args["threaded"] = True
        return self._threaded(jobs)

    def _fork_pool(self, jobs: list[tuple[dict[str, Any], Mapping[str, np.ndarray]]]
                   ) -> ForkPool | None:
        """This instance's worker processes, locked for one run; forked at its first parallel
        run (again when a chunk outgrows their input buffers, or after a worker died). None
        while another run of this instance uses them, or when no process can be forked."""
        need = ForkPool.need(jobs)
        with self._procs_lock:
            pool = self._procs
            if pool is not None and not pool.lock.acquire(blocking=False):
                return None
            if pool is None or not pool.usable(need):
                if pool is not None:
                    pool.lock.release()
                    self._procs_closer()
                    self._procs = None
                # Forked inside the run's single_threaded_blas(): the workers keep one BLAS
                # thread. (Setting it in a worker would start OpenBLAS's thread pool there,
                # whose thread spins for 0.1 s; so does the one restoring the caller's limit
                # after this run, once.)
                try:
                    pool = ForkPool(self._chunk, self.workers - 1,
                                    1 << max(need - 1, 1).bit_length(), errors=_WORKER_ERRORS)
                except OSError as e:  # no fork now (process or memory limits): threads
                    warnings.warn(f"cimc: cannot start worker processes ({e}); this run's "
                                  "chunks run on threads", RuntimeWarning, stacklevel=4)
                    return None
                pool.lock.acquire()
                self._procs, self._procs_closer = pool, weakref.finalize(self, pool.close)
            return pool

    def close(self) -> None:
        """Stop this instance's worker processes, if it has any, once a run of it in another
        thread is done (a later run starts new ones; they also stop when the instance is
        garbage-collected or the process exits)."""
        with self._procs_lock:
            pool, closer, self._procs = self._procs, self._procs_closer, None
        if pool is not None:
            with pool.lock:
                closer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _threaded(self, jobs: list[tuple[dict[str, Any], Mapping[str, np.ndarray]]]
                  ) -> list[Mapping[str, np.ndarray]]:
        """The chunks' outputs on ``workers`` threads: the calling thread and ``workers - 1``
        pool threads each take the next chunk until none is left (the caller works instead of
        sleeping until the others are done)."""
        parts: list[Mapping[str, np.ndarray] | None] = [None] * len(jobs)
        todo = iter(range(len(jobs)))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                parts[i] = self._chunk(*jobs[i])

        pool = _thread_pool(self.workers - 1)
        helpers = [pool.submit(work) for _ in range(min(self.workers, len(jobs)) - 1)]
        try:
            work()
        finally:
            for f in helpers:
                f.result()  # waits for every helper; re-raises the first error
        return parts  # type: ignore[return-value]

    def _chunks(self, batch: int) -> list[tuple[int, int]]:
        if self._peak_per_sample is None:
            self._peak_per_sample = max(self._dry_trace().peak_per_sample, 1.0)
            # The compiler proves batch independence (the manifest's "batch"); only an artifact
            # without that field (written by hand) is probed.
            self._splittable = (self.artifact.manifest.get("batch") is not None
                                or self._samples_independent())
        if not self._splittable:
            return [(0, batch)]
        size = max(1, int(CHUNK_ELEMENTS // self._peak_per_sample))
        n = math.ceil(batch / size)
        size = math.ceil(batch / n)
        return [(a, min(a + size, batch)) for a in range(0, batch, size)]

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
        ctx = RunContext(self.machine.tiles_at(0.0, False), _rng(0, 98), noise=False)
        try:
            with single_threaded_blas(), np.errstate(all="ignore"):
                both = self.machine.execute(two, ctx)
                first = self.machine.execute({k: v[:1] for k, v in two.items()}, ctx)
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
        batch of ``batch`` inputs (default: the last run's batch, or 1 before any run)."""
        trace = self._dry_trace()  # the work of every instruction scales with the batch
        if batch is None:
            batch = self._last_batch
        if batch < 1:
            raise RuntimeInputError(f"report batch must be >= 1, got {batch}")
        return build_report(self.machine, trace, int(batch),
                            encryption_info(self.artifact, self.unlocked))

    def _dry_trace(self) -> Trace:
        """Trace one noiseless run on zeros of batch 1 (for shapes; no random stream used)."""
        if self._dry is not None:
            return self._dry
        if self.artifact.batch is None:  # exact shapes: trace the compiled shapes themselves
            feeds = {s.name: np.zeros(s.shape, DTYPES[s.dtype]) for s in self.artifact.inputs}
        else:
            feeds = {s.name: np.zeros((1, *s.shape[1:]), DTYPES[s.dtype])
                     for s in self.artifact.inputs}
        ctx = RunContext(self.machine.tiles_at(0.0, False), _rng(0, 99), noise=False)
        trace = Trace(1)
        with single_threaded_blas(), np.errstate(all="ignore"):
            self.machine.execute(feeds, ctx, trace)
        self._dry = trace
        return trace

    def __repr__(self) -> str:
        return (f"Chip({self.artifact.name!r}, target={self.target.name!r}, seed={self.seed}, "
                f"cores={len(self.machine.codes)}, crossbars={len(self.machine.tiles)})")


def _join(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1 or np.ndim(parts[0]) == 0:
        return np.asarray(parts[0], order="C")  # (ascontiguousarray would make a 0-d array 1-d)
    return np.concatenate(parts, axis=0)


def load(path: str | Path, seed: int = 0, key: KeyLike = None, *,
         drift_compensation: bool | None = None, workers: int | None = None) -> Chip:
    """Read an artifact (``NAME.cimc/`` or ``.cimc.zip``) and program a chip instance.

    ``seed`` fixes the programming noise and drift exponents (and the read-noise stream);
    ``key`` unlocks encrypted weights; ``drift_compensation`` overrides the target's default
    (on for PCM targets); ``workers`` sets how many chunks of a batch run at once (default:
    the CPUs available, at most 8): in forked worker processes beside the caller on Linux,
    on threads elsewhere. ``Chip.close()`` (or ``with``) stops the processes; so does
    garbage collection.
    """
    return Chip(read_artifact(path), seed=seed, key=key, drift_compensation=drift_compensation,
                workers=workers)
