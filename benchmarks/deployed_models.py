"""The deployed-style models of tests/e2e/deployed on a target: crossbars, cores and, against
onnxruntime run on the same inputs in the same run, the worst output error as a fraction of the
e2e bar (rtol 1e-4 / atol 1e-5: 1.0 is the bar) and the chip's latency and energy per batch.

    python benchmarks/deployed_models.py [--target ideal]

On a noisy target (pcm40, ...) the error fraction measures the device model, not the compiler.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

import cimc
from cimc.testing import ort_run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from deployed_models import HERE, MODELS  # the suite's models and inputs

RTOL, ATOL = 1e-4, 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="ideal")
    args = parser.parse_args()
    print(f"{'model':12} {'crossbars':>9} {'cores':>5} {'error/bar':>10} {'latency':>10} "
          f"{'energy':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (make_inputs, _) in MODELS.items():
            inputs = make_inputs(np.random.default_rng(0))
            model = onnx.load(str(HERE / f"{name}.onnx"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # no calibration data: the documented default
                result = cimc.compile(model, target=args.target, output=Path(tmp) / name,
                                      input_shapes={k: v.shape for k, v in inputs.items()})
            chip = cimc.load(result.artifact, seed=0)
            got, want = chip.run(inputs), ort_run(model, inputs)
            worst = max(float(np.max(np.abs(got[k] - w) / (ATOL + RTOL * np.abs(w))))
                        for k, w in want.items())
            report = chip.report()
            print(f"{name:12} {report.crossbars:9d} {report.cores:5d} {worst:10.3g} "
                  f"{report.latency_ns / 1e3:8.3g}us {report.total_energy_nj:8.3g}nJ")
            chip.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
