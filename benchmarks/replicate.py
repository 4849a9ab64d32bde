"""Weight replication (issue 13, part 3): latency and crossbars with ``--replicate auto`` beside
``--replicate none``, compiled and reported in the same run.

    python benchmarks/replicate.py [--no-resnet] [--seeds 3]

1. The MNIST LeNet (examples/mnist; the first 100 test images calibrate) and light ResNet-50
   (tests/e2e/light_models.py, seeded random weights, the quantize pass's default calibration)
   on pcm40 and hermes64: latency at batch 1 (``cimc report``), crossbars and chips, with and
   without replication; and the report's own "without the copies" figure (the replicated
   trace with every copy's work folded onto its original's core) beside the real one.
2. MNIST top-1 on pcm40, hermes64 and neurram48 at t = 0 with replication, beside fp32 and
   the unreplicated artifact (mean over --seeds chip instances; 900 images).
3. What the copies cost the simulation: wall time of one run of 1,000 MNIST images (one
   worker, best of 3) on the replicated artifact over the unreplicated one's, same process
   (the chip's latency is modelled; the simulator does the same arithmetic in more pieces).

Goal: pcm40 LeNet latency at most 0.6x of the unreplicated artifact's, on the same number of
chips; the MNIST accuracy bars (within 1.5 points of fp32) still hold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

import cimc
from cimc.testing import ort_run

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "examples" / "mnist" / "model.onnx"
DATA = ROOT / "examples" / "mnist" / "test.npz"
SHAPE = {"input": (1, 1, 28, 28)}


def mnist_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(DATA, allow_pickle=False) as z:
        x, y = z["x"].astype(np.float32), z["y"]
    return x[:100], x[100:], y[100:]


def compile_both(model, target: str, tmp: Path, **options):
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mode in ("none", "auto"):
            out[mode] = cimc.compile(model, target, tmp / f"{target}_{mode}.cimc",
                                     replicate=mode, force=True, **options).artifact
    return out


def latency_table(name: str, model, targets: tuple[str, ...], tmp: Path, **options) -> dict:
    print(f"\n{name}: batch 1, from `cimc report`")
    print(f"  {'target':<9} {'latency none':>13} {'latency auto':>13} {'ratio':>6}  "
          f"{'crossbars':>11}  {'chips':>6}  report's 'without' / real")
    ratios = {}
    for target in targets:
        arts = compile_both(model, target, tmp / name, **options)
        r0, r1 = (cimc.load(arts[m]).report(1) for m in ("none", "auto"))
        ratio = r1.latency_ns / r0.latency_ns
        without = r1.replication["latency_without_ns"] if r1.replication else r1.latency_ns
        print(f"  {target:<9} {r0.latency_ns / 1e3:10.1f} µs {r1.latency_ns / 1e3:10.1f} µs "
              f"{ratio:6.3f}  {r0.crossbars:>4} -> {r1.crossbars:<4}  {r0.chips:>2} -> "
              f"{r1.chips:<2}  {without / r0.latency_ns:.3f}")
        for lay in (r1.replication or {}).get("layers", []):
            print(f"      {lay['name']}: {lay['copies']} copies, MVMs per copy "
                  f"{lay['vectors']} -> {lay['vectors_per_copy']}")
        ratios[target] = (ratio, r0.chips == r1.chips)
    return ratios


def accuracy(seeds: int, tmp: Path) -> bool:
    calib, x, y = mnist_data()
    fp32 = float(np.mean(np.argmax(ort_run(onnx.load(str(MNIST)), {"input": x})["logits"], 1)
                         == y))
    print(f"\nMNIST top-1 at t = 0, mean of {seeds} chip instance(s), 900 images; fp32 "
          f"{100 * fp32:.2f} %")
    ok = True
    for target in ("pcm40", "hermes64", "neurram48"):
        arts = compile_both(MNIST, target, tmp / "acc", input_shapes=SHAPE,
                            calib={"input": calib})
        acc = {}
        for mode, art in arts.items():
            runs = [cimc.load(art, seed=s).run({"input": x})["logits"] for s in range(seeds)]
            acc[mode] = float(np.mean([np.mean(np.argmax(r, 1) == y) for r in runs]))
        ok &= fp32 - acc["auto"] <= 0.015
        print(f"  {target:<9} none {100 * acc['none']:.2f} %, auto {100 * acc['auto']:.2f} % "
              f"({100 * (acc['auto'] - fp32):+.2f} points from fp32)")
    return ok


def simulation_cost(tmp: Path) -> None:
    calib, x, _ = mnist_data()
    x = np.concatenate([calib, x])
    print("\nsimulation: one run of 1,000 images, one worker, best of 3 (2 shared cores)")
    for target in ("ideal", "pcm40", "hermes64"):
        arts = compile_both(MNIST, target, tmp / "sim", input_shapes=SHAPE,
                            calib={"input": calib})
        best = {}
        for mode, art in arts.items():
            with cimc.load(art, seed=0, workers=1) as chip:
                chip.run({"input": x})
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    chip.run({"input": x})
                    times.append(time.perf_counter() - t)
                best[mode] = min(times)
        print(f"  {target:<9} replicated / unreplicated: {best['auto'] / best['none']:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-resnet", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        calib, _, _ = mnist_data()
        lenet = latency_table("LeNet (examples/mnist)", MNIST, ("pcm40", "hermes64"), tmp,
                              input_shapes=SHAPE, calib={"input": calib})
        if not args.no_resnet:
            sys.path.insert(0, str(ROOT / "tests" / "e2e"))
            from light_models import light_model

            latency_table("light ResNet-50", light_model("resnet50"), ("pcm40", "hermes64"),
                          tmp)
        acc_ok = accuracy(args.seeds, tmp)
        simulation_cost(tmp)
    ratio, same_chips = lenet["pcm40"]
    goal = ratio <= 0.6 and same_chips
    print(f"\ngoal: pcm40 LeNet latency {ratio:.3f}x of the unreplicated (<= 0.6), same chips: "
          f"{same_chips} -> {'met' if goal else 'NOT met'}; accuracy bars "
          f"{'hold' if acc_ok else 'FAIL'}")
    return 0 if goal and acc_ok else 1


if __name__ == "__main__":
    sys.exit(main())
