"""The bundled example models (examples/digits, examples/mnist) through compile, load and run.

- ideal target: the runtime matches onnxruntime within rtol 1e-4 / atol 1e-5;
- pcm40, hermes64, neurram48 on MNIST: top-1 within 1.5 points of fp32 at t = 0, and for the PCM
  targets within 2 points after one day of drift with global drift compensation.

Calibration uses the first 100 test images, which are left out of every score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import cimc
from cimc.testing import ort_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DAY = 86400.0


def _data(name: str):
    with np.load(EXAMPLES / name / "test.npz") as z:
        return z["x"].astype(np.float32), z["y"]


@pytest.fixture(scope="module")
def mnist_fp32():
    x, y = _data("mnist")
    model = onnx.load(str(EXAMPLES / "mnist" / "model.onnx"))
    logits = ort_run(model, {"input": x[100:]})["logits"]
    return float(np.mean(np.argmax(logits, 1) == y[100:]))


@pytest.mark.parametrize("example", ["digits", "mnist"])
def test_example_on_ideal_target_matches_onnxruntime(example, tmp_path):
    """The examples were exported by torch with a dynamic batch dimension: compiled as they are
    (batch 1, with a note), the artifact runs the whole test set as one batch."""
    x, _ = _data(example)
    model = onnx.load(str(EXAMPLES / example / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    want = ort_run(model, {"input": x})["logits"]
    with pytest.warns(UserWarning, match="input 'input' has a dynamic batch dimension 'N': using 1"):
        art = cimc.compile(model, "ideal", tmp_path / "m.cimc").artifact
    chip = cimc.load(art)
    assert chip.artifact.batch == 1
    got = chip.run({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target", ["pcm40", "hermes64", "neurram48"])
def test_mnist_accuracy_on_chip_targets(target, mnist_fp32, tmp_path):
    x, y = _data("mnist")
    model = EXAMPLES / "mnist" / "model.onnx"
    art = cimc.compile(model, target, tmp_path / "m.cimc", input_shapes={"input": (1, 1, 28, 28)},
                       calib={"input": x[:100]}).artifact
    # the bars hold for the mean chip: one instance's accuracy spreads by about half a point
    chips = [cimc.load(art, seed=seed) for seed in range(3)]
    chip = chips[0]

    def accuracy(t: float, comp: bool | None = None) -> float:
        return float(np.mean([
            np.mean(np.argmax(c.run({"input": x[100:]}, t=t, drift_compensation=comp)["logits"], 1)
                    == y[100:]) for c in chips]))

    assert mnist_fp32 - accuracy(0.0) <= 0.015
    if chip.target.device.kind == "pcm":
        assert mnist_fp32 - accuracy(DAY, True) <= 0.02
        # Without compensation a day of drift must cost something measurable on the chip's outputs.
        ref = chip.run({"input": x[100:200]}, t=0.0, drift_compensation=False, noise=False)["logits"]
        late = chip.run({"input": x[100:200]}, t=DAY, drift_compensation=False, noise=False)["logits"]
        assert np.abs(late).mean() < np.abs(ref).mean()


def test_bit_sliced_mnist_within_one_and_a_half_points(mnist_fp32, tmp_path):
    """pcm40 with 8-bit weights sliced over device pairs (balanced base-17 digits, each with its
    own programming noise, recombined by shift-and-add after the ADC)."""
    from cimc.targets import Target, load_target

    data = load_target("pcm40").to_dict()
    data["crossbar"].update(bit_slicing=True, weight_bits=8)
    target = Target.from_dict(data, source="pcm40, 8-bit sliced")
    assert (target.slices, target.slice_base) == (2, 17)
    x, y = _data("mnist")
    art = cimc.compile(EXAMPLES / "mnist" / "model.onnx", target, tmp_path / "s.cimc",
                       input_shapes={"input": (1, 1, 28, 28)}, calib={"input": x[:100]}).artifact
    assert "slices=2" in (art / "core_000.s").read_text()
    with cimc.load(art, seed=0) as chip:
        logits = chip.run({"input": x[100:]})["logits"]
        assert mnist_fp32 - float(np.mean(np.argmax(logits, 1) == y[100:])) <= 0.015
        fast = chip.run({"input": x[100:300]}, noise=False)["logits"]
        np.testing.assert_array_equal(
            fast, chip.run({"input": x[100:300]}, noise=False, reference=True)["logits"])
