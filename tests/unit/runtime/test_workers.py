"""Worker processes for the chunks of a run (cimc.runtime.workers) and their use by Chip."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cimc.errors import RuntimeInputError
from cimc.runtime import load
from cimc.runtime.workers import ForkPool, WorkerError, fork_available

pytestmark = pytest.mark.skipif(not fork_available(), reason="worker processes need fork (Linux)")

RNG = np.random.default_rng(11)
MNIST = Path(__file__).resolve().parents[3] / "examples" / "mnist"


class Odd(Exception):
    pass


def _fn(args, inputs):
    """A chunk function for the pool: sums, with failures on request."""
    if args.get("fail") == "odd":
        raise Odd(f"odd job {args['j']}")
    if args.get("fail") == "bug":
        raise ValueError("a bug")
    if args.get("fail") == "namesake":  # named like a registered class, but another one
        raise type("Odd", (Exception,), {"__module__": "elsewhere"})("not ours")
    if args.get("fail") == "die" and os.getpid() != args["parent"]:
        os._exit(3)
    x = inputs["x"]
    return {"sum": x.sum(axis=1), "pid": np.array(os.getpid()), "empty": x[:0]}


def _jobs(n, rows=5, **extra):
    xs = [RNG.standard_normal((rows, 7)).astype(np.float32) for _ in range(n)]
    return [({"j": j, "parent": os.getpid(), **extra}, {"x": x}) for j, x in enumerate(xs)], xs


def test_jobs_run_in_order_on_the_workers_and_here():
    jobs, xs = _jobs(9)  # more jobs than workers and slots: workers are refilled
    pool = ForkPool(_fn, 2, ForkPool.need(jobs))
    try:
        out = pool.map(jobs, _fn)
        for o, x in zip(out, xs):
            np.testing.assert_allclose(o["sum"], x.sum(axis=1), rtol=1e-6)
            assert o["empty"].shape == (0, 7) and o["empty"].dtype == np.float32
        pids = [int(o["pid"]) for o in out]
        assert pids[0::3] == [os.getpid()] * 3  # every third job runs here
        assert len(set(pids)) == 3
        again = pool.map(jobs[:2], _fn)  # slots are reused run after run
        np.testing.assert_array_equal(again[1]["sum"], out[1]["sum"])
    finally:
        pool.close()
    assert not pool.usable(0)


def test_errors_come_back_as_themselves_or_with_the_traceback():
    jobs, _ = _jobs(3, fail="odd")
    pool = ForkPool(_fn, 1, ForkPool.need(jobs), errors=(Odd,))
    try:
        with pytest.raises(Odd, match="odd job 0"):  # the first error, here, once all are in
            pool.map(jobs, _fn)
        with pytest.raises(Odd, match="odd job 1"):  # a worker's error: same class and text
            pool.map(jobs[1:2] * 2, lambda a, i: {})
        assert pool.usable(0)  # an error in a chunk leaves the workers running
        bug, _ = _jobs(2, fail="bug")
        with pytest.raises(WorkerError, match="(?s)a run worker failed.*ValueError: a bug"):
            pool.map(bug, lambda a, i: {})
        namesake, _ = _jobs(2, fail="namesake")
        with pytest.raises(WorkerError, match="(?s)elsewhere.Odd: not ours"):
            pool.map(namesake, lambda a, i: {})
    finally:
        pool.close()


def test_a_worker_that_dies_is_reported_and_the_pool_closed():
    jobs, _ = _jobs(2, fail="die")
    pool = ForkPool(_fn, 1, ForkPool.need(jobs))
    with pytest.raises(WorkerError, match="exited unexpectedly \\(exit code 3\\)"):
        pool.map(jobs, _fn)
    assert pool.workers == 0 and not pool.usable(0)


def test_a_worker_that_died_before_a_map_is_reported():
    jobs, _ = _jobs(2)
    pool = ForkPool(_fn, 1, ForkPool.need(jobs))
    pool._procs[0].kill()
    pool._procs[0].join(5)
    assert not pool.usable(0)
    with pytest.raises(WorkerError, match="exited unexpectedly \\(exit code -9\\)"):
        pool.map(jobs, _fn)
    assert pool.workers == 0


def test_inputs_must_fit_the_slots():
    jobs, _ = _jobs(2, rows=100)
    pool = ForkPool(_fn, 1, 64)
    try:
        with pytest.raises(ValueError, match="do not fit"):
            pool.map(jobs, _fn)
    finally:
        pool.close()


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    from cimc import compile as compile_model

    with np.load(MNIST / "test.npz") as z:
        x = z["x"][:400].astype(np.float32)
    # unreplicated: the chunk sizes below follow its largest buffer (conv0's pooled result)
    art = compile_model(MNIST / "model.onnx", "hermes64",
                        tmp_path_factory.mktemp("w") / "m.cimc",
                        input_shapes={"input": (1, 1, 28, 28)}, calib={"input": x[:50]},
                        replicate="none").artifact
    return art, x


def test_chip_runs_chunks_in_worker_processes(mnist, monkeypatch):
    import cimc.runtime.chip as chip_mod

    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 1 << 20)  # two chunks of 200
    art, x = mnist
    with load(art, seed=3, workers=2) as chip, load(art, seed=3, workers=1) as alone:
        assert len(chip._chunks(len(x))) == 2
        y = chip.run({"input": x}, t=60.0)["logits"]
        pool = chip.execution._procs
        assert pool is not None and pool.workers == 1
        np.testing.assert_array_equal(y, alone.run({"input": x}, t=60.0)["logits"])
        # a NaN in the worker's chunk is named by its index in the batch
        bad = x.copy()
        bad[350, 0, 3, 4] = np.nan
        with pytest.raises(RuntimeInputError, match=r"1 NaN/Inf value\(s\), the first at index "
                                                   r"\[350, 0, 3, 4\]"):
            chip.run({"input": bad}, t=60.0)
        with pytest.raises(RuntimeInputError, match=r"index \[350, 0, 3, 4\]"):
            alone.run({"input": bad}, t=60.0)  # (a run all the same: the next draws fresh noise)
        assert chip.execution._procs is pool and pool.usable(0)
        # a worker killed between runs is replaced
        pid = pool._procs[0].pid
        os.kill(pid, 9)
        pool._procs[0].join(5)
        y2 = chip.run({"input": x}, t=60.0)["logits"]
        assert chip.execution._procs is not pool and chip.execution._procs._procs[0].pid != pid
        np.testing.assert_array_equal(y2, alone.run({"input": x}, t=60.0)["logits"])
    assert chip.execution._procs is None  # with closed them


def test_workers_forked_before_a_time_was_made_are_forked_anew(mnist, monkeypatch):
    import cimc.runtime.chip as chip_mod
    import cimc.runtime.forkfill as forkfill

    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 1 << 20)  # two chunks of 200
    art, x = mnist
    with load(art, seed=3, workers=2) as small:  # its workers make them sooner than a fork
        small.run({"input": x}, t=60.0)
        pool = small.execution._procs
        small.run({"input": x}, t=3600.0)
        assert small.execution._procs is pool
    monkeypatch.setattr(forkfill, "FORK_WEIGHTS", 1)  # as if LeNet were big
    with load(art, seed=3, workers=2) as chip, load(art, seed=3, workers=1) as alone:
        chip.run({"input": x}, t=60.0)
        first = chip.execution._procs
        chip.run({"input": x}, t=60.0)
        assert chip.execution._procs is first
        # the workers would make the crossbars at a new time all over again, one by one
        y = chip.run({"input": x}, t=3600.0, noise=False)["logits"]
        second = chip.execution._procs
        assert second is not first and not first._procs
        chip.run({"input": x}, t=60.0)
        chip.run({"input": x}, t=3600.0)
        assert chip.execution._procs is second  # forked with both times made
        np.testing.assert_array_equal(y, alone.run({"input": x}, t=3600.0, noise=False)["logits"])


def test_worker_processes_end_with_their_chip(mnist, monkeypatch):
    import cimc.runtime.chip as chip_mod

    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 1 << 20)
    art, x = mnist
    chip = load(art, seed=3, workers=2)
    chip.run({"input": x})
    proc = chip.execution._procs._procs[0]
    del chip
    gc.collect()
    for _ in range(50):
        if not proc.is_alive():
            break
        time.sleep(0.1)
    assert not proc.is_alive()


def test_workers_end_when_their_pool_closes_whatever_was_forked_later():
    # A pool tells its workers to stop: closed while a later pool's workers, or any other child
    # forked later, live (holding copies of its pipes) it still ends them at once (not by the
    # kill after a timeout).
    jobs, _ = _jobs(2)
    first = ForkPool(_fn, 1, ForkPool.need(jobs))
    second = ForkPool(_fn, 1, ForkPool.need(jobs))
    other = os.fork()
    if other == 0:  # a child that is not a worker
        time.sleep(5)
        os._exit(0)
    try:
        proc = first._procs[0]
        started = time.perf_counter()
        first.close()
        assert proc.exitcode == 0 and time.perf_counter() - started < 1.5
        second.map(jobs, _fn)
        proc = second._procs[0]
        second.close()
        assert proc.exitcode == 0
    finally:
        os.kill(other, 9)
        os.waitpid(other, 0)
        second.close()
    assert second._procs == [] and not second.usable(0)


def test_closing_a_chip_waits_for_its_run_in_another_thread(mnist, monkeypatch):
    import threading

    import cimc.runtime.chip as chip_mod

    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 1 << 17)  # four chunks
    art, x = mnist
    with load(art, seed=3, workers=1) as alone:
        want = [alone.run({"input": x})["logits"] for _ in range(3)]
    chip = load(art, seed=3, workers=2)
    got, errors = [], []

    def runs():
        try:
            got.extend(chip.run({"input": x})["logits"] for _ in range(3))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    worker = threading.Thread(target=runs)
    worker.start()
    while chip.execution._procs is None and worker.is_alive():
        time.sleep(0.001)
    chip.close()  # waits for the run in progress; the next run forks new workers
    worker.join(60)
    assert not worker.is_alive() and errors == []
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    chip.close()


def _blas_threads(args, inputs):
    from threadpoolctl import ThreadpoolController

    info = ThreadpoolController().select(user_api="blas").info()
    return {"n": np.array([lib["num_threads"] for lib in info] or [1])}


def test_workers_forked_in_a_run_keep_one_blas_thread():
    # A chip forks its workers inside the run's single-threaded BLAS section, so they never
    # set the limit themselves (that would start OpenBLAS's spinning thread pool).
    from cimc.runtime.execution import Serial

    with Serial().blas_scope():
        pool = ForkPool(_blas_threads, 1, 64)
    try:
        out = pool.map([({}, {}), ({}, {})], _blas_threads)
        assert out[1]["n"].max() == 1  # the worker's
    finally:
        pool.close()


def test_runs_fall_back_to_threads_where_no_worker_can_be_forked(mnist, monkeypatch):
    import multiprocessing
    from types import SimpleNamespace

    import cimc.runtime.chip as chip_mod
    import cimc.runtime.execution as execution
    from cimc.runtime import workers

    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 1 << 20)
    art, x = mnist
    with load(art, seed=3, workers=1) as alone:
        want = alone.run({"input": x})["logits"]

    class NoFork(ForkPool):
        def __init__(self, *args, **kwargs):
            raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(execution, "ForkPool", NoFork)
    with load(art, seed=3, workers=2) as chip:
        with pytest.warns(RuntimeWarning, match="cannot start worker processes.*threads"):
            np.testing.assert_array_equal(chip.run({"input": x})["logits"], want)
        assert chip.execution._procs is None
    # a daemonic process (a multiprocessing.Pool worker) may not have children
    monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    assert not workers.fork_available()


def _crossbars_equal(a, b) -> bool:
    return (a.gain == b.gain and len(a.weights) == len(b.weights)
            and all(np.array_equal(p, q) for p, q in zip(a.weights, b.weights))
            and all((p is None) == (q is None) and (p is None or np.array_equal(p, q))
                    for p, q in zip(a.read_vars, b.read_vars)))


def test_many_crossbars_are_made_in_forked_processes(mnist, monkeypatch):
    import cimc.runtime.forkfill as forkfill

    art, x = mnist
    made = []
    real = forkfill.ForkedFill
    monkeypatch.setattr(forkfill, "FORK_WEIGHTS", 1)  # LeNet's few crossbars: fork all the same
    monkeypatch.setattr("cimc.runtime.machine.ForkedFill",
                        lambda *a: made.append(len(a[1])) or real(*a))
    heard = []
    with load(art, seed=5, workers=2, progress=lambda *a: heard.append(a)) as chip, \
            load(art, seed=5, workers=1) as alone:
        y = chip.run({"input": x[:8]}, t=3600.0)["logits"]
        assert made == [len(chip.machine.crossbars)] and made[0] > 2
        assert heard[-1][1:] == (made[0], made[0])
        np.testing.assert_array_equal(y, alone.run({"input": x[:8]}, t=3600.0)["logits"])
        mine, theirs = chip.machine.at(3600.0, True), alone.machine.at(3600.0, True)
        assert all(_crossbars_equal(mine.crossbars[k], theirs.crossbars[k])
                   for k in chip.machine.crossbars)
        # a later time forks again; the compensation's reference came back from the children
        assert all(xb.gdc_ref is not None for xb in chip.machine.crossbars.values())
        chip.run({"input": x[:8]}, t=60.0)
        assert len(made) == 2


def test_crossbars_a_child_did_not_make_are_made_here(mnist, monkeypatch):
    import cimc.runtime.crossbars as crossbars
    import cimc.runtime.forkfill as forkfill

    art, x = mnist
    parent = os.getpid()
    real = crossbars.crossbar_at

    def failing_in_children(xb, *a, **kw):
        if os.getpid() != parent and xb.index == 0 and xb.core % 2 == 0:
            raise OSError("a child's failure")
        return real(xb, *a, **kw)

    monkeypatch.setattr(forkfill, "FORK_WEIGHTS", 1)
    monkeypatch.setattr("cimc.runtime.machine.crossbar_at", failing_in_children)
    with load(art, seed=5, workers=2) as chip, load(art, seed=5, workers=1) as alone:
        y = chip.run({"input": x[:8]}, t=3600.0)["logits"]
        np.testing.assert_array_equal(y, alone.run({"input": x[:8]}, t=3600.0)["logits"])


def test_a_run_waiting_on_a_crossbar_the_children_left_makes_it(mnist, monkeypatch):
    import threading

    import cimc.runtime.forkfill as forkfill

    art, x = mnist
    monkeypatch.setattr(forkfill, "FORK_WEIGHTS", 1)
    with load(art, seed=5, workers=2) as chip, load(art, seed=5, workers=1) as alone:
        frozen = chip.machine.at(3600.0, True)
        key = next(iter(chip.machine.crossbars))
        got, waiters = [], []

        class NothingMade:  # as if every child had failed
            def __init__(self, make, xbs, processes):
                assert key in frozen._making  # begun: another thread asking for it waits
                waiters.append(threading.Thread(target=lambda: got.append(frozen.get(key))))
                waiters[0].start()
                waiters[0].join(0.3)

            def take(self, timeout):
                return None

            def kill(self):
                pass

            def close(self):
                pass

        monkeypatch.setattr("cimc.runtime.machine.ForkedFill", NothingMade)
        frozen.fill(chip.execution.each, chip.execution.processes)
        waiters[0].join()
        assert got and _crossbars_equal(got[0].at, alone.machine.at(3600.0, True).crossbars[key])
        assert frozen.complete and all(e.is_set() for e in frozen._making.values())


def test_where_no_child_can_be_forked_the_caller_makes_the_crossbars(mnist, monkeypatch):
    import multiprocessing.process

    import cimc.runtime.forkfill as forkfill

    def refuse(self):
        raise AssertionError("daemonic processes are not allowed to have children")

    art, x = mnist
    monkeypatch.setattr(forkfill, "FORK_WEIGHTS", 1)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    with load(art, seed=5, workers=2) as chip, load(art, seed=5, workers=1) as alone:
        y = chip.run({"input": x[:8]}, t=3600.0)["logits"]
        np.testing.assert_array_equal(y, alone.run({"input": x[:8]}, t=3600.0)["logits"])


def _slow_in_children(monkeypatch, seconds, keys=None):
    """crossbar_at sleeping ``seconds`` before each crossbar (of ``keys``) it makes in a forked
    child."""
    import cimc.runtime.forkfill as forkfill
    from cimc.runtime import crossbars

    parent, real = os.getpid(), crossbars.crossbar_at

    def slow(xb, *a, **kw):
        if os.getpid() != parent and (keys is None or xb.key in keys):
            time.sleep(seconds)
        return real(xb, *a, **kw)

    monkeypatch.setattr(forkfill, "FORK_WEIGHTS", 1)
    monkeypatch.setattr("cimc.runtime.machine.crossbar_at", slow)


def test_a_run_of_one_chunk_goes_on_while_the_children_make_crossbars(mnist, monkeypatch):
    from cimc.runtime.machine import Frozen

    art, x = mnist
    with load(art, seed=5, workers=1) as alone:
        want = alone.run({"input": x[:1]}, t=3600.0)["logits"]
        keys = list(alone.machine.crossbars)
    _slow_in_children(monkeypatch, 0.3, set(keys[-2:]))  # the last layer's come late
    asked = []
    real_get = Frozen.get
    monkeypatch.setattr(Frozen, "get", lambda self, key: asked.append(
        (key, len(self._made))) or real_get(self, key))
    with load(art, seed=5, workers=2) as chip:
        np.testing.assert_array_equal(chip.run({"input": x[:1]}, t=3600.0)["logits"], want)
        # the first crossbar was asked for (and used) while the children were still at work
        assert asked[0][0] == keys[0] and asked[0][1] < len(keys)
        assert chip.machine.at(3600.0, True).complete


def test_an_interrupted_run_stops_the_children_and_leaves_nothing_begun(mnist, monkeypatch):
    import multiprocessing

    art, x = mnist
    _slow_in_children(monkeypatch, 0.5)
    with load(art, seed=5, workers=2) as chip, load(art, seed=5, workers=1) as alone:
        frozen = chip.machine.at(3600.0, True)
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt), frozen.forking(2):
            assert frozen._making
            raise KeyboardInterrupt
        assert time.monotonic() - start < 0.5 * len(chip.machine.crossbars) / 2
        assert not frozen._making
        assert not [p for p in multiprocessing.active_children() if p.name == "cimc-crossbars"]
        monkeypatch.undo()
        np.testing.assert_array_equal(chip.run({"input": x[:1]}, t=3600.0)["logits"],
                                      alone.run({"input": x[:1]}, t=3600.0)["logits"])


def test_crossbars_are_made_layer_by_layer_with_the_copies_of_a_layer():
    from types import SimpleNamespace

    from cimc.runtime.machine import layer_order

    layers = {(0, 0): "conv0", (1, 0): "conv1", (1, 1): "conv1", (2, 0): "fc", (3, 0): "conv0",
              (4, 0): "conv1"}  # cores 3 and 4: copies placed after every layer
    xbs = {k: SimpleNamespace(layer=v) for k, v in layers.items()}
    assert layer_order(xbs) == [(0, 0), (3, 0), (1, 0), (1, 1), (4, 0), (2, 0)]


def test_children_that_ended_are_done_though_another_process_holds_their_pipes(mnist,
                                                                               monkeypatch):
    import multiprocessing
    import threading

    import cimc.runtime.forkfill as forkfill

    art, x = mnist
    monkeypatch.setattr(forkfill, "FORK_WEIGHTS", 1)
    held = []
    fork_context = type(multiprocessing.get_context("fork"))
    real_pipe = fork_context.Pipe

    def pipe(self, duplex=True):  # as a process that another thread forked meanwhile would
        reader, writer = real_pipe(self, duplex)
        held.append(os.dup(writer.fileno()))
        return reader, writer

    monkeypatch.setattr(fork_context, "Pipe", pipe)
    try:
        with load(art, seed=5, workers=2) as chip, load(art, seed=5, workers=1) as alone:
            got = []
            run = threading.Thread(target=lambda: got.append(chip.run({"input": x[:1]},
                                                                      t=3600.0)), daemon=True)
            run.start()
            run.join(60)
            assert held and not run.is_alive(), "the run waits for children that have ended"
            np.testing.assert_array_equal(got[0]["logits"],
                                          alone.run({"input": x[:1]}, t=3600.0)["logits"])
    finally:
        for fd in held:
            os.close(fd)


def test_a_progress_callback_that_raises_stops_the_children_and_reaches_the_caller(
        mnist, monkeypatch):
    import multiprocessing

    class Stop(Exception):
        pass

    def progress(what, done, total):
        if what.startswith("crossbars"):
            raise Stop

    art, x = mnist
    _slow_in_children(monkeypatch, 0.05)
    with load(art, seed=5, workers=2) as chip, load(art, seed=5, workers=1) as alone:
        chip.progress = progress
        with pytest.raises(Stop):
            chip.run({"input": x[:1]}, t=3600.0)
        assert not chip.machine.at(3600.0, True)._making
        assert not [p for p in multiprocessing.active_children() if p.name == "cimc-crossbars"]
        chip.progress = None  # (the failed run took read-noise stream 0)
        np.testing.assert_array_equal(chip.run({"input": x[:1]}, t=3600.0, noise=False)["logits"],
                                      alone.run({"input": x[:1]}, t=3600.0, noise=False)["logits"])


def test_a_process_forked_while_crossbars_are_being_made_makes_them_itself(mnist):
    import multiprocessing
    import threading

    art, x = mnist
    with load(art, seed=5, workers=1) as chip:
        frozen = chip.machine.at(3600.0, True)
        key = next(iter(chip.machine.crossbars))
        begun = frozen._making[key] = threading.Event()  # by a thread of this process
        try:
            child = multiprocessing.get_context("fork").Process(
                target=lambda: frozen.get(key), daemon=True)
            child.start()
            child.join(60)
            assert child.exitcode == 0, "the forked process waits for a thread it does not have"
        finally:
            child.kill()
            frozen._making.pop(key)
            begun.set()


def test_a_process_forked_while_a_thread_held_the_machine_lock_can_freeze_a_new_time(mnist):
    import multiprocessing

    art, x = mnist
    with load(art, seed=5, workers=1) as chip:
        with chip.machine._lock:  # as another thread of this process at the fork
            child = multiprocessing.get_context("fork").Process(
                target=lambda: chip.machine.at(60.0, True).get(next(iter(chip.machine.crossbars))),
                daemon=True)
            child.start()
            child.join(60)
        child.kill()
        assert child.exitcode == 0, "the forked process waits for a lock no one will release"


def test_a_crossbar_interrupted_while_made_is_made_at_the_next_ask(mnist, monkeypatch):
    from cimc.runtime import crossbars

    art, x = mnist
    real, calls = crossbars.crossbar_at, []

    class Interrupt(BaseException):  # as KeyboardInterrupt, without stopping pytest
        pass

    def interrupted_once(xb, *a, **kw):
        calls.append(xb.key)
        if len(calls) == 2:
            raise Interrupt
        return real(xb, *a, **kw)

    monkeypatch.setattr("cimc.runtime.machine.crossbar_at", interrupted_once)
    with load(art, seed=5, workers=1) as chip, load(art, seed=5, workers=1) as alone:
        with pytest.raises(Interrupt):
            chip.run({"input": x[:4]}, t=3600.0, noise=False)
        np.testing.assert_array_equal(chip.run({"input": x[:4]}, t=3600.0, noise=False)["logits"],
                                      alone.run({"input": x[:4]}, t=3600.0, noise=False)["logits"])


def test_runs_in_several_threads_keep_blas_on_one_thread(mnist, monkeypatch):
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    import cimc.runtime.chip as chip_mod

    art, x = mnist
    real, threads = chip_mod.Chip._chunk, []

    def spy(self, *a):
        threads.append(max(i["num_threads"] for i in threadpool_info()
                           if i["user_api"] == "blas"))
        return real(self, *a)

    monkeypatch.setattr(chip_mod.Chip, "_chunk", spy)
    with threadpool_limits(2, user_api="blas"):  # this thread sets BLAS's threads first
        with load(art, seed=5, workers=2) as chip:
            def runs():
                for _ in range(3):
                    chip.run({"input": x[:1]}, t=60.0, noise=False)

            others = [threading.Thread(target=runs) for _ in range(2)]
            for th in others:
                th.start()
            for th in others:
                th.join(60)
            assert len(threads) == 6 and set(threads) == {1}
