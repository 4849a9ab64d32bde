"""Compile light ResNet-50 (seeded random weights) for hermes64: crossbars next to the analytic
minimum, chips, and compile time (import -> passes -> artifact), with onnx.load + onnxruntime
session creation for the same file measured in the same run as the reference.

    python benchmarks/compile_resnet50.py [--target hermes64] [--repeat 3] [--calib N]

Goal: compile under 10 s on one of our 2-core machines (a C++ research compiler takes about 7 s
for ResNet-50 at this crossbar size). --calib N uses N seeded random images for calibration
(default 0: the quantize pass's documented default of one seeded standard-normal batch).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import cimc
from cimc.testing import randomize_constant_of_shape

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def best_of(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="hermes64")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calib", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.model}.onnx")
        model = randomize_constant_of_shape(onnx.load(str(LIGHT / f"light_{args.model}.onnx")))
        onnx.save(model, path)
        name = next(i.name for i in model.graph.input if "data" in i.name)
        calib = None
        if args.calib:
            calib = {name: np.random.default_rng(0).standard_normal((args.calib, 3, 224, 224)).astype(np.float32)}

        def reference():
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            ort.InferenceSession(onnx.load(path).SerializeToString(), opts, providers=["CPUExecutionProvider"])

        def compile_once():
            return cimc.compile(path, args.target, Path(tmp) / "out.cimc", calib=calib)

        t_ref, _ = best_of(reference, args.repeat)
        t_cimc, result = best_of(compile_once, args.repeat)
    place = result.context.placement
    print(f"{args.model} on {args.target}:")
    print(f"  crossbars        {place['crossbars']} (analytic minimum {place['analytic_min']}, "
          f"{100 * (place['crossbars'] / place['analytic_min'] - 1):+.1f} %)")
    print(f"  chips            {place['chips']}")
    print(f"  compile time     {t_cimc:.2f} s (goal < 10 s)")
    print(f"  onnx.load + onnxruntime session: {t_ref:.2f} s; compile / that = {t_cimc / t_ref:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
