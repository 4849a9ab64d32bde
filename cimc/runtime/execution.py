"""How a chip runs the chunks of a batch: an execution strategy, chosen at ``cimc.load``.

- :class:`Serial`: every chunk in the calling thread (``workers=1``);
- :class:`Threads`: the calling thread and ``workers - 1`` threads of its own pool;
- :class:`Processes`: the calling process and ``workers - 1`` worker processes forked from it
  at the first parallel run (:class:`~cimc.runtime.workers.ForkPool`; Linux). A run that cannot
  have them (a fork that fails, the pool busy with another run of the same chip) runs on
  threads instead.

Each strategy belongs to one chip instance and holds its workers until :meth:`close`. Its
:meth:`blas_scope` pins BLAS to one thread while a run executes (the chunks are the
parallelism; BLAS threads on top of them only compete for the same cores on the skinny products
of crossbar MVMs) and restores the previous limits when the last run of the chip that entered
it ends. BLAS's thread count is a setting of the whole process: runs of several chip instances
that overlap in time each restore what they found when they began.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import threadpoolctl
from threadpoolctl import ThreadpoolController

from cimc.runtime.workers import ForkPool, fork_available

Job = tuple[dict[str, Any], Mapping[str, np.ndarray]]
ChunkFn = Callable[[dict[str, Any], Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def default_workers() -> int:
    """The CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


class Execution:
    """Runs the chunks of a run (see the module docstring)."""

    kind = ""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._blas_lock = threading.Lock()
        self._blas_users = 0
        self._blas_limiter: Any = None
        self._controller: ThreadpoolController | None = None

    def map(self, jobs: Sequence[Job], fn: ChunkFn, forked_after: float | None = None
            ) -> list[Mapping[str, np.ndarray]]:
        """``fn`` on every job, results in order. ``forked_after`` (a time.monotonic()): when
        the caller's state that ``fn`` reads last changed; worker processes forked before it
        would run on an older copy, and are forked anew."""
        return [fn(*job) for job in jobs]

    def each(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` on every item, results in order, on threads of this process (``workers`` at
        once; in this thread for one): for work that numpy does with the interpreter lock
        released, such as making a chip's crossbars at a new time."""
        return [fn(x) for x in items]

    @property
    def processes(self) -> int:
        """How many processes may make a chip's crossbars (cimc.runtime.forkfill): this one
        and forked children, where the strategy forks."""
        return 1

    @contextlib.contextmanager
    def blas_scope(self) -> Iterator[None]:
        """BLAS on one thread inside the block (see the module docstring)."""
        with self._blas_lock:
            if self._blas_users == 0:
                if self._controller is None:
                    self._controller = ThreadpoolController()
                _control_openblas()
                self._blas_limiter = self._controller.limit(limits=1, user_api="blas")
            self._blas_users += 1
        try:
            yield
        finally:
            with self._blas_lock:
                self._blas_users -= 1
                if self._blas_users == 0:
                    _control_openblas()
                    self._blas_limiter.restore_original_limits()
                    self._blas_limiter = None

    def close(self) -> None:
        """Stop the strategy's workers (a later run starts new ones)."""

    def describe(self) -> str:
        return f"{self.workers} at once on {self.kind}"


def _control_openblas() -> None:
    """Let this thread set OpenBLAS's threads. OpenBLAS (without OpenMP) has one setting for the
    whole process, and threadpoolctl lets only the thread that set it first change it while that
    thread lives: a run entering blas_scope in another thread would leave BLAS multi-threaded,
    and a process forked while another thread is inside a multi-threaded BLAS call waits forever
    on OpenBLAS's lock."""
    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None),
                    "clear_controlling_thread", None)
    if clear is not None:  # threadpoolctl >= 3.6
        clear(force=True)


class Serial(Execution):
    kind = "this thread"


class Threads(Execution):
    kind = "threads"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def map(self, jobs: Sequence[Job], fn: ChunkFn, forked_after: float | None = None
            ) -> list[Mapping[str, np.ndarray]]:
        if len(jobs) == 1:
            return [fn(*jobs[0])]
        for args, _ in jobs:
            args["threaded"] = True
        return self.each(lambda job: fn(*job), jobs)

    def each(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """The calling thread and ``workers - 1`` pool threads each take the next item until
        none is left (the caller works instead of waiting)."""
        if len(items) < 2:
            return [fn(x) for x in items]
        parts: list[Any] = [None] * len(items)
        todo = iter(range(len(items)))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                parts[i] = fn(items[i])

        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="cimc-run")
            pool = self._pool
        helpers = [pool.submit(work) for _ in range(min(self.workers, len(items)) - 1)]
        try:
            work()
        finally:
            for f in helpers:
                f.result()  # waits for every helper; re-raises the first error
        return parts

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class Processes(Threads):
    """Worker processes beside the caller; threads for a run that cannot have them."""

    kind = "processes"

    def __init__(self, workers: int, errors: Sequence[type[Exception]] = ()) -> None:
        super().__init__(workers)
        self.errors = tuple(errors)
        self._procs: ForkPool | None = None
        self._procs_lock = threading.Lock()
        self.last = "processes"  # how the last parallel run went

    @property
    def processes(self) -> int:
        return self.workers

    def map(self, jobs: Sequence[Job], fn: ChunkFn, forked_after: float | None = None
            ) -> list[Mapping[str, np.ndarray]]:
        if len(jobs) == 1:
            return [fn(*jobs[0])]
        pool = self._pool_for(jobs, fn, forked_after)
        if pool is None:
            self.last = "threads"
            return super().map(jobs, fn)
        self.last = "processes"
        try:
            return pool.map(jobs, fn)
        finally:
            pool.lock.release()

    def _pool_for(self, jobs: Sequence[Job], fn: ChunkFn, forked_after: float | None = None
                  ) -> ForkPool | None:
        """The worker processes, locked for one run; forked at the first parallel run (again
        when a chunk outgrows their input buffers, when they were forked before
        ``forked_after``, or after a worker died). None while another run uses them, or when
        no process can be forked."""
        need = ForkPool.need(jobs)
        with self._procs_lock:
            pool = self._procs
            if pool is not None and not pool.lock.acquire(blocking=False):
                return None
            if pool is None or not pool.usable(need, forked_after):
                if pool is not None:
                    pool.lock.release()
                    pool.close()
                    self._procs = None
                # Forked inside the run's blas_scope(): the workers keep one BLAS thread
                # (setting it in a fresh worker would start OpenBLAS's spinning thread pool).
                try:
                    pool = ForkPool(fn, self.workers - 1, 1 << max(need - 1, 1).bit_length(),
                                    errors=self.errors)
                except OSError as e:  # no fork now (process or memory limits): threads
                    warnings.warn(f"cimc: cannot start worker processes ({e}); this run's "
                                  "chunks run on threads", RuntimeWarning, stacklevel=5)
                    return None
                pool.lock.acquire()
                self._procs = pool
            return pool

    def close(self) -> None:
        """Stop the worker processes once a run in another thread is done with them."""
        with self._procs_lock:
            pool, self._procs = self._procs, None
        if pool is not None:
            with pool.lock:
                pool.close()
        super().close()

    def describe(self) -> str:
        return f"{self.workers} at once on {self.last}"


def choose(workers: int | None, errors: Sequence[type[Exception]] = ()) -> Execution:
    """The strategy for ``workers`` chunks at once (None: :func:`default_workers`): serial for
    one, worker processes where they can be forked, threads elsewhere."""
    n = default_workers() if workers is None else max(1, int(workers))
    if n == 1:
        return Serial()
    if fork_available():
        return Processes(n, errors)
    return Threads(n)
