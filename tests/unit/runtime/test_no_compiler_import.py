"""The runtime reads only the artifact: loading and running one never imports the compiler.

A fresh interpreter imports cimc.runtime, loads an artifact that uses every kind of instruction
(including a digital op), runs it, builds the report, and lists the modules it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from runtime_kit import write_artifact

FORBIDDEN = (
    "cimc.frontend", "cimc.passes", "cimc.compiler", "cimc.testing", "cimc.cli",
    "cimc.targets.emit", "cimc.ir.parser", "cimc.ir.printer", "cimc.ir.verify",
    "cimc.ir.interpreter", "cimc.ir.core", "onnx", "onnxruntime", "lark", "jinja2",
)

# The runtime shares the op library (cimc.ops: each op's numpy semantics, which `dop` runs) with
# the compiler's interpreter; of cimc.ir it may load only the tensor types the library uses (and
# the package's lazy __init__).
ALLOWED_IR = ("cimc.ir", "cimc.ir.types")

PROGRAM = """
.core 0 chip=0
.xbar 0 rows=8 cols=3 layer="conv" tile=[0, 0]
.const c0 name="bias"
  input  a0, name="x"
  im2col a1, a0, kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1]
  slice  a2, a1, start=0, stop=8
  mvm    p0, a2, xbar=0, dac_bits=8, dac_range=2.0, adc_bits=8, adc_range=8.0
  dop    p1, p0, c0, op="nn.add"
  send   p1, to=1
  halt
"""
PROGRAM1 = """
.core 1 chip=0
  recv   b0, from=0
  dop    b1, b0, op="nn.relu"
  output b1, name="y"
  halt
"""

SCRIPT = """
import json, sys
import numpy as np
from cimc.runtime import load
chip = load(sys.argv[1], seed=1)
y = chip.run({"x": np.ones((2, 2, 3, 3), np.float32)}, t=100.0)["y"]
assert y.shape == (2, 2, 2, 3), y.shape
chip.report()
print(json.dumps(sorted(sys.modules)))
"""


def test_runtime_does_not_import_the_compiler(tmp_path):
    rng = np.random.default_rng(0)
    path = write_artifact(
        tmp_path / "n.cimc", {0: PROGRAM, 1: PROGRAM1},
        {"xbar/0/0/levels": rng.integers(-127, 128, (8, 3)).astype(np.int8),
         "xbar/0/0/scale": np.full(3, 0.01, np.float32),
         "const/bias": np.zeros(3, np.float32)},
        [("x", (1, 2, 3, 3), "f32")], [("y", (1, 2, 2, 3), "f32")], target="hermes64")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "cimc.runtime.machine" in modules
    bad = [m for m in modules if m.startswith(FORBIDDEN)]
    assert not bad, f"the runtime imported compiler modules: {bad}"
    ir = [m for m in modules if m == "cimc.ir" or m.startswith("cimc.ir.")]
    unexpected = [m for m in ir if m not in ALLOWED_IR]
    assert not unexpected, f"the runtime imported IR modules beyond the op kernels: {unexpected}"
