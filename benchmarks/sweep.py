"""Monte Carlo sweep on Dask (issue 13, part 1): the MNIST LeNet on pcm40, 64 chip instances x
5 drift times x the 1,000 test images, against the same work run serially in this process.

    python benchmarks/sweep.py [--seeds 64] [--repeat 2]

Every figure is measured in this run:
- reference: the work itself, serial, in this process: one instance programmed and scored at the
  5 times (``cimc.montecarlo.driver.instance_accuracy``), times the number of instances;
- ``cimc sweep`` of the ONNX model (compile included) with 2 local workers: goal under 90 s;
- the sweep of the compiled artifact with 1 and with 2 workers (best of --repeat each, cluster
  start and stop included): goal 2 workers at least 1.7x faster; each beside the reference, and
  the cost of starting and stopping an idle cluster of that size;
- ``cimc sweep`` killed (SIGKILL to its process group, workers included) once half the instances
  are in its JSON, then run again with ``--resume``: goal the same JSON, byte for byte, as the
  uninterrupted command's.
The first 100 images calibrate the converters (``--calib``); all 1,000 are scored.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import cimc
from cimc.montecarlo.driver import instance_accuracy, prepare
from cimc.montecarlo.engine import dask_client
from cimc.runtime import Chip, read_artifact

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "mnist" / "model.onnx"
DATA = ROOT / "examples" / "mnist" / "test.npz"


def cli(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cimc", "sweep", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def cpu_seconds() -> float:
    """User + system time of this process and its reaped children (the local workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def finished(path: Path) -> int:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    return sum(all(row[j] is not None for row in d["accuracy"]) for j in range(len(d["seeds"])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    n = args.seeds
    tmp = Path(tempfile.mkdtemp(prefix="cimc-bench-sweep-"))
    with np.load(DATA) as z:
        np.savez(tmp / "calib.npz", input=z["x"][:100])
    common = [str(MODEL), "--data", str(DATA), "--target", "pcm40", "--calib",
              str(tmp / "calib.npz"), "--seeds", f"0:{n}", "--workers", "2"]
    print(f"sweep: MNIST LeNet on pcm40, {n} instances x 5 times x 1000 images "
          f"({len(os.sched_getaffinity(0))} CPUs)")

    t = time.perf_counter()
    p = cli([*common, "-o", str(tmp / "full.json")])
    if p.wait() != 0:
        print(p.stderr.read())
        return 1
    t_cli = time.perf_counter() - t
    full = (tmp / "full.json").read_text()

    art = cimc.compile(MODEL, "pcm40", tmp / "mnist.cimc", input_shapes={"input": (1, 1, 28, 28)},
                       calib=tmp / "calib.npz").artifact
    plan = prepare(art, DATA, seeds=range(n))
    k = min(8, n)
    t, c = time.perf_counter(), cpu_seconds()
    for seed in range(k):
        instance_accuracy(plan.artifact, plan.x, plan.y, seed, plan.result.times, True)
    per_instance = (time.perf_counter() - t) / k
    cpu_reference = (cpu_seconds() - c) / k * n
    t = time.perf_counter()
    for seed in range(k):
        Chip(read_artifact(plan.artifact), seed=seed, workers=1)
    per_load = (time.perf_counter() - t) / k
    reference = per_instance * n
    print(f"reference, serial in this process: {per_instance:.3f} s per instance ({per_load:.3f}"
          f" s reading the artifact's bytes and programming the chip, the rest 5 runs of 1000 "
          f"images), {reference:.1f} s for {n} (CPU time {cpu_reference:.1f} s)")
    print(f"cimc sweep (ONNX, compile included), 2 workers: {t_cli:.1f} s "
          f"(goal < 90 s: {'met' if t_cli < 90 else 'NOT met'})")

    best: dict[int, float] = {}
    cpu: dict[int, float] = {}
    tables = []
    for _ in range(args.repeat):
        for w in (1, 2):
            t, c = time.perf_counter(), cpu_seconds()
            result = cimc.sweep(art, DATA, seeds=range(n), workers=w)
            if time.perf_counter() - t < best.get(w, float("inf")):
                best[w], cpu[w] = time.perf_counter() - t, cpu_seconds() - c
            tables.append(result.accuracy)
    idle = {}
    for w in (1, 2):
        t = time.perf_counter()
        with dask_client(w, None, cimc.__version__):
            pass
        idle[w] = time.perf_counter() - t
    for w in (1, 2):
        print(f"sweep of the artifact, {w} worker{'s' * (w > 1)}: {best[w]:.1f} s = the serial "
              f"reference / {w} + {best[w] - reference / w:.1f} s (an idle cluster of {w} starts "
              f"and stops in {idle[w]:.1f} s); CPU time {cpu[w]:.1f} s, all processes")
    speedup = best[1] / best[2]
    same = all(t == tables[0] for t in tables) and tables[0] == json.loads(full)["accuracy"]
    print(f"2 workers vs 1: {speedup:.2f}x (goal >= 1.7x: {'met' if speedup >= 1.7 else 'NOT met'}"
          f"); every sweep gave the same accuracies: {same}")

    out = tmp / "killed.json"
    p = cli([*common, "-o", str(out)], start_new_session=True)
    while finished(out) < n // 2 and p.poll() is None:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    at_kill = finished(out)
    p = cli([*common, "-o", str(out), "--resume"])
    if p.wait() != 0:
        print(p.stderr.read())
        return 1
    equal = out.read_text() == full and at_kill < n
    print(f"killed with {at_kill} of {n} instances written, resumed: the JSON equals the "
          f"uninterrupted run's: {equal} (goal: equal)")
    return 0 if t_cli < 90 and speedup >= 1.7 and equal and same else 1


if __name__ == "__main__":
    sys.exit(main())
