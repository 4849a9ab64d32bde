"""Import + canonicalise + lower time for light ResNet-50 and VGG-19, as a ratio to onnx.load +
onnxruntime session creation for the same file, measured in the same run.

    python benchmarks/import_time.py [--repeat 3]

Weights are seeded random (the light models ship ConstantOfShape placeholders); the model is saved
to a temporary file so both sides start from the same bytes on disk. Each side's time is the best
of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import onnx
import onnxruntime as ort

from cimc.frontend.onnx import import_onnx
from cimc.passes import run_pipeline
from cimc.testing import randomize_constant_of_shape

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default="resnet50,vgg19")
    args = ap.parse_args()
    print(f"{'model':<10} {'weights MB':>10} {'ort load+session s':>19} {'cimc import+lower s':>20} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = os.path.join(tmp, f"{name}.onnx")
            onnx.save(randomize_constant_of_shape(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))), path)

            def reference():
                m = onnx.load(path)
                opts = ort.SessionOptions()
                opts.log_severity_level = 3
                ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])

            def cimc_side():
                module = import_onnx(path)
                run_pipeline(module, "canonicalize,lower-to-mvm,canonicalize")

            t_ref = best_of(reference, args.repeat)
            t_cimc = best_of(cimc_side, args.repeat)
            mb = os.path.getsize(path) / 1e6
            print(f"{name:<10} {mb:>10.0f} {t_ref:>19.3f} {t_cimc:>20.3f} {t_cimc / t_ref:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
