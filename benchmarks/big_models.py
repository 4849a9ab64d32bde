"""Big models on a noisy target: cimc.load, the first run and peak memory for the light VGG-19 and
ResNet-50 of the onnx package (seeded random weights, tests/e2e/light_models.py), each beside
onnxruntime's session creation, first run and peak memory on the same model, measured in the
same run.

    python benchmarks/big_models.py [--models vgg19,resnet50] [--target hermes64] [--workers 2]
                                    [--time 86400] [--rounds 2]

Each measurement runs in a fresh process (so its peak resident memory is its own): the
artifact is compiled once beforehand; then, per round, onnxruntime and cimc take turns. cimc's
process does ``cimc.load(artifact, seed=0, workers=W)`` and one ``chip.run`` of batch 1 at
``--time`` (every noise source on: programming noise and drift, read noise, DAC/ADC, drift
compensation), which draws and makes every crossbar at that time; onnxruntime's creates an
``InferenceSession`` and runs the same input. Figures are the best and worst over the rounds.
Goals (issue 13, light VGG-19 on hermes64, batch 1, 2 cores): load <= 8 s, first run <= 3 s,
peak RSS <= 3 GB. Peak RSS is cimc's process's: the children it forks to make the crossbars
(cimc.runtime.forkfill) write the matrices into memory it shares with them, which both count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

GOALS = {"load_s": 8.0, "run_s": 3.0, "rss_gb": 3.0}  # for vgg19 (issue 13)

CIMC = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import cimc
x = dict(np.load(sys.argv[2]))
t1 = time.perf_counter()
chip = cimc.load(sys.argv[1], seed=0, workers=int(sys.argv[3]))
t2 = time.perf_counter()
chip.run(x, t=float(sys.argv[4]))
t3 = time.perf_counter()
chip.run(x, t=float(sys.argv[4]))
t4 = time.perf_counter()
print(json.dumps({"load_s": t2 - t1, "run_s": t3 - t2, "again_s": t4 - t3}))
"""

ORT = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import onnxruntime as ort
x = dict(np.load(sys.argv[2]))
t1 = time.perf_counter()
opts = ort.SessionOptions()
opts.log_severity_level = 3
opts.intra_op_num_threads = int(sys.argv[3])
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
sess.run(None, x)
t3 = time.perf_counter()
sess.run(None, x)
t4 = time.perf_counter()
print(json.dumps({"load_s": t2 - t1, "run_s": t3 - t2, "again_s": t4 - t3}))
"""


def measure(code: str, *args: str) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter; its JSON line plus its peak resident memory."""
    # VmHWM, not getrusage's ru_maxrss: that one keeps the high-water mark of the parent
    # across fork and exec (this script's, which compiled the model)
    wrapper = (code + "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]"
               "\nprint(json.dumps({'rss_gb': int(hwm[0].split()[1]) / 1e6}))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode:
        raise SystemExit(f"measurement failed:\n{out.stderr}")
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {k: v for d in lines for k, v in d.items()}


def prepare(name: str, target: str, tmp: Path) -> tuple[Path, Path, Path]:
    """The model as .onnx, its inputs as .npz and its artifact for ``target``."""
    import onnx
    from light_models import light_inputs, light_model

    import cimc

    model, inputs = light_model(name), light_inputs(name)
    onnx_path, npz_path = tmp / f"{name}.onnx", tmp / f"{name}.npz"
    onnx.save(model, str(onnx_path))
    np.savez(npz_path, **inputs)
    weights = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    art = tmp / f"{name}_{target}.cimc"
    t = time.perf_counter()
    cimc.compile(model, target, art, calib=inputs)
    print(f"{name}: {weights / 1e6:.1f} M weights, compiled for {target} in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    return onnx_path, npz_path, art


def span(values: list[float], unit: str, digits: int = 2) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f} {unit}" if len(values) == 1 or hi - lo < 10 ** -digits else \
        f"{lo:.{digits}f}-{hi:.{digits}f} {unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg19,resnet50")
    ap.add_argument("--target", default="hermes64")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--time", type=float, default=86400.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ok = True
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="cimc-big-") as d:
        for name in args.models.split(","):
            onnx_path, npz_path, art = prepare(name, args.target, Path(d))
            runs: dict[str, list[dict[str, float]]] = {"ort": [], "cimc": []}
            for _ in range(args.rounds):
                runs["ort"].append(measure(ORT, str(onnx_path), str(npz_path),
                                           str(args.workers)))
                runs["cimc"].append(measure(CIMC, str(art), str(npz_path), str(args.workers),
                                            str(args.time)))
            print(f"{name} on {args.target}, batch 1, {args.workers} workers, t = "
                  f"{args.time:g} s ({args.rounds} rounds, best-worst):")
            for key, label, unit in (("load_s", "cimc.load", "s"), ("run_s", "first run", "s"),
                                     ("again_s", "second run", "s"), ("rss_gb", "peak RSS", "GB")):
                mine = [r[key] for r in runs["cimc"]]
                ref = [r[key] for r in runs["ort"]]
                ratio = [m / r for m, r in zip(mine, ref)]
                goal = GOALS.get(key) if name == "vgg19" else None
                verdict = ""
                if goal is not None:
                    met = min(mine) <= goal
                    ok &= met
                    verdict = f" (goal <= {goal:g} {unit}: {'met' if met else 'missed'})"
                print(f"  {label:<11} {span(mine, unit):>14}{verdict:<26} onnxruntime "
                      f"{span(ref, unit):>14}  ratio {span(ratio, 'x', 1)}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
