"""Worker processes that run chunks of a batch beside the calling process (Linux).

Numpy releases the GIL inside each call, but two threads of one process still hand the GIL to
each other at every call, and the runtime makes hundreds of calls per chunk, so chunks on
threads run slower than the same chunks in separate processes. A :class:`ForkPool` therefore
forks workers that inherit the programmed chip (nothing is sent or rebuilt), and a run hands
them chunks:

- the inputs of every chunk go through an anonymous shared memory map per worker (one copy,
  no pipe traffic), the request is a JSON header over a pipe;
- the worker sends back a JSON header and each output array's raw bytes (no pickle anywhere);
- an error raised in a worker by one of the pool's ``errors`` classes is raised again in the
  caller with the same class and message; anything else is reported with the worker's
  traceback; a worker that dies is reported with its exit code and the pool is closed (the next
  run forks a new one).

Workers ignore SIGINT (the caller handles it and closes the pool), exit when the pool tells them
to stop, when their pipe closes or when the process that forked them ends, and are daemons.
Nothing is registered at import: a pool is an object its owner (an execution strategy,
:mod:`cimc.runtime.execution`) starts and closes.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

# (arguments of one chunk, its input arrays) -> its output arrays; arguments are JSON values.
ChunkFn = Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
Job = tuple[Mapping[str, Any], Mapping[str, np.ndarray]]

_ALIGN = 64


def fork_available() -> bool:
    """Whether chunks may run in forked processes: on Linux (fork is unsafe with the system
    frameworks of macOS and does not exist on Windows; there, threads run the chunks), and not
    inside a daemonic process (a multiprocessing.Pool worker, say), which may have no
    children."""
    return (sys.platform.startswith("linux")
            and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _layout(arrays: Mapping[str, np.ndarray], start: int) -> list[list[Any]]:
    """Where each array goes in a shared buffer from offset ``start``: [name, dtype, shape,
    offset] entries."""
    entries, off = [], start
    for name, a in arrays.items():
        entries.append([name, a.dtype.str, list(a.shape), off])
        off = _aligned(off + a.nbytes)
    return entries


def _error_key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def start_forked(proc: multiprocessing.process.BaseProcess) -> None:
    """Start a process of the fork context. Python >= 3.12 warns when a process with threads
    forks: a lock another thread held stays locked in the child. cimc's children only run numpy
    on the chip they inherit (glibc's malloc and OpenBLAS reset their locks at fork; cimc's own
    locks are made anew in another process: cimc.runtime.machine)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*use of fork\\(\\) may lead to deadlocks",
                                DeprecationWarning)
        proc.start()


class WorkerError(RuntimeError):
    """A worker failed in a way that is not one of the pool's errors (a bug, or it died)."""


class ForkPool:
    """``workers`` forked processes that run ``fn`` on chunks (see the module docstring), each
    with a shared input buffer of two slots of ``slot_bytes``: a worker holds at most two
    chunks, the one it runs and the next. Not thread-safe: one :meth:`map` at a time
    (:attr:`lock`)."""

    SLOTS = 2

    def __init__(self, fn: ChunkFn, workers: int, slot_bytes: int,
                 errors: Sequence[type[Exception]] = ()) -> None:
        self.slot_bytes = max(_ALIGN, _aligned(slot_bytes))
        self.errors = {_error_key(e): e for e in errors}
        self.lock = threading.Lock()
        self.pid = os.getpid()  # a forked copy of the caller must not use these workers
        self.born = time.monotonic()  # the workers have what the caller had by then
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._mems: list[mmap.mmap] = []
        ctx = multiprocessing.get_context("fork")
        try:
            for _ in range(workers):
                # anonymous and shared with the child
                mem = mmap.mmap(-1, self.SLOTS * self.slot_bytes)
                parent, child = ctx.Pipe(duplex=True)
                self._conns.append(parent)
                self._mems.append(mem)
                proc = ctx.Process(target=_serve, args=(child, mem, fn), daemon=True,
                                   name="cimc-run")
                start_forked(proc)
                child.close()
                self._procs.append(proc)
        except BaseException:
            self.close(kill=True)
            raise

    @property
    def workers(self) -> int:
        return len(self._procs)

    @staticmethod
    def need(jobs: Sequence[Job]) -> int:
        """The slot bytes that :meth:`map` needs for ``jobs``: the largest job's inputs."""
        return max((sum(_aligned(a.nbytes) for a in arrays.values()) for _, arrays in jobs),
                   default=0)

    def usable(self, slot_bytes: int, forked_after: float | None = None) -> bool:
        """Whether the pool belongs to this process, every worker is alive, the slots hold
        ``slot_bytes`` and (given ``forked_after``, a time.monotonic()) the workers were forked
        after it."""
        return (bool(self._procs) and self.pid == os.getpid() and slot_bytes <= self.slot_bytes
                and (forked_after is None or forked_after < self.born)
                and all(p.is_alive() for p in self._procs))

    def map(self, jobs: Sequence[Job], local: ChunkFn) -> list[Mapping[str, np.ndarray]]:
        """The outputs of every job, in order. Job ``j`` runs on worker ``j % (workers + 1) -
        1``, or in this process (``local``) when that is -1; each worker gets its next job
        while it runs one, so it never waits for this process. The first error is raised once
        every reply is in; an interrupted map (^C) or a failed worker closes the pool (replies
        in flight would answer later runs)."""
        n = self.workers + 1
        if self.need(jobs) > self.slot_bytes:
            raise ValueError("a job's inputs do not fit the workers' buffer slots")
        results: list[Mapping[str, np.ndarray] | None] = [None] * len(jobs)
        todo = [deque(range(w + 1, len(jobs), n)) for w in range(self.workers)]
        sent = [0] * self.workers
        waiting: list[deque[int]] = [deque() for _ in range(self.workers)]
        first: Exception | None = None

        def send(w: int) -> None:
            j = todo[w].popleft()
            args, arrays = jobs[j]
            entries = _layout(arrays, (sent[w] % self.SLOTS) * self.slot_bytes)
            for (_, _, _, off), a in zip(entries, arrays.values()):
                np.copyto(np.ndarray(a.shape, a.dtype, self._mems[w], off), a)
            try:
                self._conns[w].send_bytes(json.dumps({"args": args, "inputs": entries}).encode())
            except OSError:
                raise self._died(w) from None
            sent[w] += 1
            waiting[w].append(j)

        def receive(w: int) -> None:
            nonlocal first
            j = waiting[w].popleft()
            try:
                results[j] = self._receive(w)
            except Exception as e:  # (raised once every reply is in)
                if isinstance(e, WorkerError) and not self._procs[w].is_alive():
                    raise  # it died: the pool closes
                first = first or e
            if todo[w]:
                send(w)

        try:
            for w in range(self.workers):
                while todo[w] and len(waiting[w]) < self.SLOTS:
                    send(w)
            for j in range(0, len(jobs), n):
                if first is None:
                    try:
                        results[j] = local(*jobs[j])
                    except Exception as e:  # noqa: BLE001 - raised once the replies are in
                        first = e
                for w in range(self.workers):  # refill the workers that are done
                    while waiting[w] and self._conns[w].poll():
                        receive(w)
            while any(waiting):
                busy = {self._conns[w]: w for w in range(self.workers) if waiting[w]}
                for conn in wait(list(busy)):
                    receive(busy[conn])  # type: ignore[index]
        except BaseException:
            self.close(kill=True)
            raise
        if first is not None:
            raise first
        return results  # type: ignore[return-value]

    def _receive(self, w: int) -> dict[str, np.ndarray]:
        conn = self._conns[w]
        try:
            head = json.loads(conn.recv_bytes())
            if head.get("error") is not None:
                kind, message, trace = head["error"]
                cls = self.errors.get(kind)
                if cls is None:
                    raise WorkerError(f"a run worker failed:\n{trace}")
                raise cls(message)
            out = {}
            for name, dtype, shape in head["outputs"]:
                arr = np.empty(shape, np.dtype(dtype))
                conn.recv_bytes_into(memoryview(arr.reshape(-1).view(np.uint8)))
                out[name] = arr
            return out
        except (EOFError, OSError):
            raise self._died(w) from None

    def _died(self, w: int) -> WorkerError:
        proc = self._procs[w]
        proc.join(1.0)
        return WorkerError(f"a run worker (pid {proc.pid}) exited unexpectedly (exit code "
                           f"{proc.exitcode}); the next run starts a new one")

    def close(self, kill: bool = False) -> None:
        """Stop the workers and free the buffers: each idle worker is told to stop (another
        process forked meanwhile may hold a copy of its pipe, so the pipe's end is no
        signal); ``kill`` ends them at once (they may be running a chunk nobody waits for)."""
        procs, self._procs = self._procs, []
        if self.pid != os.getpid():  # a forked copy of the owner: the workers are not ours
            return
        for proc, conn in zip(procs, self._conns):
            if kill:
                proc.terminate()
            else:
                with contextlib.suppress(OSError):
                    conn.send_bytes(_STOP)
            conn.close()
        for proc in procs:
            proc.join(2.0)
            if proc.exitcode is None:
                proc.kill()
                proc.join(1.0)
        for mem in self._mems:
            with contextlib.suppress(BufferError):
                mem.close()
        self._conns, self._mems = [], []


_STOP = b'{"stop": true}'


def _serve(conn: Connection, mem: mmap.mmap, fn: ChunkFn) -> None:
    """A worker's loop: read a request, run ``fn``, reply; exit when told to stop, when the
    pipe closes, or when the process that forked it is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller handles ^C and closes the pool
    owner = os.getppid()
    while True:
        try:
            while not conn.poll(1.0):
                if os.getppid() != owner:
                    return
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if raw == _STOP:
            return
        head = json.loads(raw)
        try:
            inputs = {name: np.ndarray(shape, np.dtype(dtype), mem, off)
                      for name, dtype, shape, off in head["inputs"]}
            out = {k: np.asarray(v, order="C") for k, v in fn(head["args"], inputs).items()}
            reply = {"outputs": [[k, v.dtype.str, list(v.shape)] for k, v in out.items()]}
            if any(v.dtype.hasobject for v in out.values()):
                raise TypeError("outputs of dtype object cannot leave a worker")
        except Exception as e:  # noqa: BLE001 - every failure goes back to the caller
            reply, out = {"error": [_error_key(type(e)), str(e), traceback.format_exc()]}, {}
        try:
            conn.send_bytes(json.dumps(reply).encode())
            for v in out.values():
                conn.send_bytes(memoryview(v.reshape(-1).view(np.uint8)))
        except OSError:  # the caller closed the pool
            return


__all__ = ["ForkPool", "WorkerError", "fork_available"]
