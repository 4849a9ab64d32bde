"""The Dask side of a sweep: a cluster to run on, and one task per chip instance.

With no scheduler address, a ``LocalCluster`` of worker processes (one thread each) on this
machine; with one, the cluster behind it (dask-jobqueue, Kubernetes, a remote scheduler). The
task's inputs (the artifact as zip bytes, the data) are scattered to every worker once; nothing
is read from a shared filesystem. A task that raises is retried once (possibly on another
worker); a second failure is reported with its seed and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from cimc.errors import CimcError


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def dask_client(workers: int | None, scheduler: str | None, version: str) -> Iterator[Any]:
    """A connected ``distributed.Client``: to ``scheduler``, or to a new ``LocalCluster`` of
    ``workers`` processes (closed on exit). Checks that every worker runs cimc ``version``."""
    from distributed import Client

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=15)
        except (OSError, ValueError, TypeError) as e:
            raise CimcError(f"cannot connect to the Dask scheduler at {scheduler!r}: {e}") from None
        with client:
            _check_workers(client, scheduler, version)
            yield client
        return
    with local_cluster(workers) as cluster, Client(cluster) as client:
        _check_workers(client, "the local cluster", version)
        yield client


def local_cluster(workers: int | None) -> Any:
    """A ``LocalCluster`` of worker processes with one thread each, quiet, with its HTTP server
    on any free port (not the dashboard's usual one: another cluster may hold it).

    Its workers keep glibc's malloc settings: Dask's default MALLOC_TRIM_THRESHOLD_ turns off
    glibc's adaptive mmap threshold, so every large temporary of a run is mapped and unmapped
    afresh, at a cost of page faults that the runs here measurably pay.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=logging.ERROR,
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


def _check_workers(client: Any, where: str, version: str) -> None:
    # A lambda travels by value, so it runs even where cimc cannot be imported.
    found = client.run(lambda: __import__("cimc").__version__, on_error="return")
    if not found:
        raise CimcError(f"{where}: the Dask cluster has no workers")
    for worker, v in sorted(found.items()):
        if isinstance(v, BaseException):
            raise CimcError(f"{where}: worker {worker} cannot import cimc ({v}); install cimc "
                            f"{version} on the workers")
        if v != version:
            raise CimcError(f"{where}: worker {worker} runs cimc {v}, this is cimc {version}; "
                            "install the same version on the workers")


def run_tasks(client: Any, task: Callable[..., Any], seeds: Sequence[int],
              shared: Sequence[Any], extra: Sequence[Any] = ()
              ) -> Iterator[tuple[int, Any, str | None]]:
    """``task(*shared, seed, *extra)`` for every seed, as ``(seed, result, None)`` or
    ``(seed, None, error)`` in the order they finish. ``shared`` (large: artifact, data) is
    sent to every worker once; unfinished tasks are cancelled when the caller stops early."""
    from distributed import as_completed

    scattered = [client.scatter(v, broadcast=True, hash=False) for v in shared]
    run = uuid.uuid4().hex[:12]
    futures = {client.submit(task, *scattered, seed, *extra, key=f"cimc-sweep-{run}-{seed}",
                             retries=1, pure=False): seed for seed in seeds}
    try:
        for future in as_completed(futures):
            seed = futures[future]
            if future.status == "finished":
                yield seed, future.result(), None
            elif future.status == "error":
                e = future.exception()
                yield seed, None, f"{type(e).__name__}: {e}"
            else:
                yield seed, None, f"the task was {future.status}"
            future.release()
    finally:
        client.cancel([f for f in futures if not f.done()])
