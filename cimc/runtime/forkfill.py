"""Making many crossbars at a new time in forked processes (Linux).

Making a noisy crossbar at a time (:func:`cimc.runtime.crossbars.crossbar_at`) is thousands of
small numpy calls per crossbar. Threads of one process hand the interpreter lock to each other at
every call, so on threads the work goes no faster than on one (on two cores it went slower), and
a model with thousands of crossbars waits seconds for them at its first run. :class:`ForkedFill`
deals the crossbars in turn, in the order given (the order a run wants them), to ``processes``
children forked from this process. They inherit the declared crossbars (nothing is sent), and
every crossbar is drawn from its own random stream, so who makes it does not change its numbers.
Each child makes its crossbars' matrices straight into one anonymous shared memory map that the
caller's crossbars then view (no copy, no pickle), puts each crossbar's gain, compensation
reference and which slices read noisily into a small shared table, and then says the crossbar's
index over its pipe: the caller takes each crossbar as soon as it is made (a run may use the
first ones while the children make the rest), and the pipe orders the child's writes before the
caller's reads. A crossbar no child finished (one failed or died, or could not be forked) is
left to the caller, which makes it itself and so reports its error as usual.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait

import numpy as np

from cimc.runtime.crossbars import CrossbarAt, DeclaredCrossbar
from cimc.runtime.workers import start_forked

Key = tuple[int, int]  # (core, crossbar index)
# crossbar_at at one time: the crossbar -> its matrices, written into ``out``
Make = Callable[..., CrossbarAt]

# Crossbars are made in forked processes only when together they hold at least this many
# weights (noisy ones): below it the fork costs more than it saves.
FORK_WEIGHTS = 1 << 22
PROGRESS_S = 0.5

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_DONE, _GAIN, _REF, _NOISY = 0, 1, 2, 3  # columns of the shared table; _NOISY + slice


def worth_forking(xbs: Sequence[DeclaredCrossbar]) -> bool:
    """Whether making ``xbs`` is enough work to fork for."""
    return sum(xb.rows * xb.cols * len(xb.levels) for xb in xbs if xb.noisy) >= FORK_WEIGHTS


class _Shared:
    """The shared memory of :func:`make_forked`: per crossbar and slice a weight matrix and,
    for devices with read noise, a read variance matrix (float32), and the table of what each
    crossbar came to."""

    def __init__(self, xbs: Sequence[DeclaredCrossbar]) -> None:
        kinds = [1 + (xb.model.read is not None) for xb in xbs]  # matrices per slice
        slices = max(len(xb.levels) for xb in xbs)
        total = sum(k * len(xb.levels) * xb.rows * xb.cols for xb, k in zip(xbs, kinds))
        self.data = np.frombuffer(mmap.mmap(-1, max(4 * total, 1)), np.float32)
        self.table = np.frombuffer(mmap.mmap(-1, 8 * len(xbs) * (_NOISY + slices)),
                                   np.float64).reshape(len(xbs), _NOISY + slices)
        self.views: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
        at = 0
        for xb, k in zip(xbs, kinds):
            mats: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
            n = xb.rows * xb.cols
            for _ in range(len(xb.levels)):
                for kind in mats[:k]:
                    kind.append(self.data[at:at + n].reshape(xb.rows, xb.cols))
                    at += n
            self.views.append(mats)

    def make(self, i: int, xb: DeclaredCrossbar, make: Make) -> None:
        """Crossbar ``i`` made into its matrices here, and what it came to into the table."""
        at = make(xb, out=self.views[i])
        row = self.table[i]
        for s, var in enumerate(at.read_vars):
            row[_NOISY + s] = var is not None
        row[_GAIN] = at.gain
        row[_REF] = np.nan if xb.gdc_ref is None else xb.gdc_ref
        row[_DONE] = 1.0

    def read(self, i: int, xb: DeclaredCrossbar) -> CrossbarAt | None:
        """Crossbar ``i`` as made by whoever made it (None: no one finished it)."""
        row = self.table[i]
        if row[_DONE] != 1.0:
            return None
        if xb.gdc_ref is None and not np.isnan(row[_REF]):
            xb.gdc_ref = float(row[_REF])  # the same for every time: not worked out again
        weights, variances = self.views[i]
        noisy = [variances[s] if row[_NOISY + s] == 1.0 else None for s in range(len(weights))]
        return CrossbarAt(tuple(weights), tuple(noisy), float(row[_GAIN]), xb.base)


class ForkedFill:
    """Crossbars being made in forked children (see the module docstring): forked here, each
    child taking every ``processes``-th crossbar of ``xbs`` in its order; :meth:`take` hands
    over those made. Raises OSError or MemoryError when the shared memory cannot be had. Its
    methods may be called from several threads."""

    def __init__(self, make: Make, xbs: Mapping[Key, DeclaredCrossbar], processes: int) -> None:
        self._keys = list(xbs)
        self._xbs = [xbs[k] for k in self._keys]
        self._shared = _Shared(self._xbs)
        self._lock = threading.Lock()
        self._children: list[multiprocessing.process.BaseProcess] = []
        self._working: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        ctx = multiprocessing.get_context("fork")
        n = len(self._keys)
        try:
            for p in range(min(processes, n)):
                mine, theirs = ctx.Pipe(duplex=False)
                child = ctx.Process(target=_child, daemon=True, name="cimc-crossbars",
                                    args=(self._shared, self._xbs, make, range(p, n, processes),
                                          theirs))
                try:
                    start_forked(child)
                except (OSError, AssertionError, ValueError):  # no fork here now (a daemonic
                    mine.close()  # process may have no children): the caller makes this part
                    continue
                finally:
                    theirs.close()
                self._children.append(child)
                self._working.append((child, mine))
        except BaseException:
            self.kill()
            self.close()
            raise

    def take(self, timeout: float) -> dict[Key, CrossbarAt] | None:
        """The crossbars made since the last call, after waiting up to ``timeout`` seconds for
        one (an empty dict when none came); None once every child has ended. A child has ended
        when its process has, whether or not its pipe has (a process forked meanwhile by
        another thread may hold the pipe's other end)."""
        with self._lock:
            if not self._working:
                self._close()
                return None
            working = list(self._working)
        try:
            ready = set(wait([pipe for _, pipe in working] + [c.sentinel for c, _ in working],
                             timeout))
        except (OSError, ValueError):  # another thread closed a pipe meanwhile: look again
            return {}
        made = []
        with self._lock:
            for child, pipe in working:
                if (child, pipe) not in self._working:  # another thread took it
                    continue
                ended = child.sentinel in ready
                try:
                    while pipe.poll():  # all a child that ended wrote is in its pipe
                        made.append(int.from_bytes(pipe.recv_bytes(), "little"))
                except (EOFError, OSError):
                    ended = True
                if ended:
                    self._working.remove((child, pipe))
                    pipe.close()
        return {self._keys[i]: at for i in made
                if (at := self._shared.read(i, self._xbs[i])) is not None}

    def kill(self) -> None:
        """Stop the children."""
        for child in self._children:
            child.kill()

    def close(self) -> None:
        """Wait for the children to end (what they made and no one took is dropped)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        for _, pipe in self._working:
            pipe.close()
        self._working = []
        for child in self._children:
            child.join()


def _keep_freed_memory() -> None:
    """Have glibc's malloc keep the memory this process frees. By default it returns a freed
    block over a threshold to the system at once, and the top of its heap when that grows
    large; a child that makes thousands of crossbars, keeping none of their temporaries (the
    matrices go to shared memory), would then fault every temporary's pages in anew (a third
    of its time). The child lives for one fill: it keeps what it frees. Elsewhere (another C
    library) nothing changes."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 25)  # glibc's largest
    except (OSError, AttributeError):
        pass


def _child(shared: _Shared, xbs: Sequence[DeclaredCrossbar], make: Make, part: Sequence[int],
           pipe: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller handles it
    _keep_freed_memory()
    try:
        for i in part:
            shared.make(i, xbs[i], make)
            pipe.send_bytes(i.to_bytes(4, "little"))
    except Exception:  # noqa: S110 - the caller makes what is left and reports its error
        pass


__all__ = ["FORK_WEIGHTS", "ForkedFill", "worth_forking"]
