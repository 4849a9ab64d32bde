"""Runtime speed: MNIST-size networks, batch 1000, on the simulated chip, as a ratio to
onnxruntime on the same batch measured in the same run.

    python benchmarks/runtime_speed.py [--repeat 10] [--batch 1000] [--models lenet,issue13]

Two networks, both on the MNIST test images of examples/mnist/test.npz:

- ``lenet``: the MNIST LeNet example (examples/mnist/model.onnx: conv 1->6 5x5, conv 6->16 5x5,
  fc 256->120->84->10, max pools);
- ``issue13``: the size issue 13 names (conv 1->16 5x5, conv 16->32 5x5, fc 1568->128->10,
  "same" padding, max pools), built here with onnx.helper and seeded weights.

hermes64 runs with every noise source on (programming noise and drift drawn at the first run,
read noise redrawn at every MVM, DAC/ADC quantisation, drift at t = 1 day with global drift
compensation); ideal runs the same core programs with exact crossbars. Both use the default
number of workers (the CPUs available): worker processes on Linux, threads elsewhere
(cimc.runtime.workers). Goals: hermes64 <= 4x, ideal <= 2x.

The networks compile with ``--replicate none`` unless ``--replicate auto`` is given: copies of a
layer make the modelled chip faster, but the simulator then does the same arithmetic in more,
smaller pieces, so the figure would measure the compiler's choice rather than the runtime.

The machine may be shared and noisy: rounds of onnxruntime and of the chip alternate (three
runs back to back each, since onnxruntime's threads spin on after a run, the best of the three
counting for the round); each figure is the best over --repeat rounds (after one warm-up), so
both sides see the same conditions, and the range of the rounds' ratios is printed beside it.
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
from onnx import TensorProto, helper, numpy_helper

import cimc

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "mnist" / "test.npz"


def lenet() -> onnx.ModelProto:
    return onnx.load(str(ROOT / "examples" / "mnist" / "model.onnx"))


def issue13(seed: int = 0) -> onnx.ModelProto:
    """conv 1->16 5x5, conv 16->32 5x5, fc 1568->128->10, ReLUs and 2x2 max pools."""
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in) if len(shape) > 1 else \
            rng.standard_normal(shape) * 0.05
        return numpy_helper.from_array(w.astype(np.float32), name)

    inits = [init("c1.w", 16, 1, 5, 5), init("c1.b", 16), init("c2.w", 32, 16, 5, 5),
             init("c2.b", 32), init("f1.w", 128, 1568), init("f1.b", 128),
             init("f2.w", 10, 128), init("f2.b", 10)]
    conv = {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["a1"], **conv),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], **pool),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["a2"], **conv),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], **pool),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "f1.w", "f1.b"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["rh"]),
        helper.make_node("Gemm", ["rh", "f2.w", "f2.b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "issue13", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


MODELS = {"lenet": lenet, "issue13": issue13}


def round_times(fns, repeat: int) -> list[list[float]]:
    """Per function, its time in each round: rounds alternate the functions (after one warm-up
    each), each round the best of three runs back to back (onnxruntime's worker threads keep
    spinning for tens of ms after a run, so the first call after a switch shares the cores with
    the other engine)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            times[i].append(best)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--models", default="lenet,issue13")
    ap.add_argument("--replicate", choices=("none", "auto"), default="none")
    args = ap.parse_args()
    with np.load(DATA) as z:
        x = z["x"][: args.batch].astype(np.float32)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models.split(","):
            model = MODELS[model_name]()
            name = model.graph.input[0].name
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            sess = ort.InferenceSession(model.SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])

            def reference(sess=sess, name=name):
                sess.run(None, {name: x})

            for target, t, goal in (("hermes64", 86400.0, 4.0), ("ideal", 0.0, 2.0)):
                art = cimc.compile(model, target, Path(tmp) / f"{model_name}_{target}.cimc",
                                   input_shapes={name: (1, *x.shape[1:])},
                                   calib={name: x[:100]}, replicate=args.replicate).artifact
                chip = cimc.load(art, seed=0)

                def run(chip=chip, t=t, name=name):
                    chip.run({name: x}, t=t)

                t_ort, t_chip = round_times([reference, run], args.repeat)
                ratio = min(t_chip) / min(t_ort)
                rounds = [c / o for c, o in zip(t_chip, t_ort)]
                ok &= ratio <= goal
                print(f"{model_name:<8} {target:<8} t={t:>7.0f} s: {min(t_chip) * 1e3:7.1f} ms = "
                      f"{ratio:5.2f}x onnxruntime's {min(t_ort) * 1e3:.1f} ms (rounds "
                      f"{min(rounds):.2f}-{max(rounds):.2f}x), batch {len(x)} (goal <= {goal:g}x; "
                      f"{len(chip._chunks(len(x)))} chunks, {chip.execution.describe()})",
                      flush=True)
                chip.close()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
