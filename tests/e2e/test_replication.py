"""Weight replication end to end on the MNIST LeNet: the pcm40 latency goal on the same chips,
the report's fields with and without the copies, every copy its own programmed crossbar, and the
fast executor equal to the reference machine bit for bit (no read noise) on a replicated
artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cimc
from cimc.cli import main
from cimc.errors import ArtifactError, CimcError

MNIST = Path(__file__).resolve().parents[2] / "examples" / "mnist"
SHAPE = {"input": (1, 1, 28, 28)}


@pytest.fixture(scope="module")
def images():
    with np.load(MNIST / "test.npz", allow_pickle=False) as z:
        return z["x"].astype(np.float32)


@pytest.fixture(scope="module")
def pcm40(images, tmp_path_factory):
    """The LeNet on pcm40, compiled with and without replication."""
    tmp = tmp_path_factory.mktemp("replication")
    return {mode: cimc.compile(MNIST / "model.onnx", "pcm40", tmp / f"{mode}.cimc",
                               input_shapes=SHAPE, calib={"input": images[:100]},
                               replicate=mode)
            for mode in ("none", "auto")}


def test_pcm40_latency_goal_on_the_same_chips(pcm40):
    plain, copied = (cimc.load(pcm40[m].artifact).report(1) for m in ("none", "auto"))
    assert copied.chips == plain.chips == 1
    assert copied.latency_ns <= 0.6 * plain.latency_ns
    assert copied.crossbars > plain.crossbars == 5
    assert copied.crossbars <= copied.crossbars_available
    rep = copied.replication
    assert rep["latency_ns"] == copied.latency_ns
    # the copies' work folded back onto their originals' cores: close to the real thing
    assert rep["latency_without_ns"] == pytest.approx(plain.latency_ns, rel=0.02)
    assert (rep["crossbars_before"], rep["crossbars_after"]) == (5, copied.crossbars)
    assert [lay["name"] for lay in rep["layers"]] == ["conv0", "conv1"]
    assert plain.replication is None


def test_report_text_and_json(pcm40):
    art = pcm40["auto"].artifact
    summary = pcm40["auto"].context.replication
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["replication"] == summary.to_dict()
    runner = CliRunner()
    text = runner.invoke(main, ["report", str(art)])
    assert text.exit_code == 0, text.output
    assert f"crossbars 5 -> {summary.crossbars_after}" in text.output
    assert "without the copies" in text.output
    assert "conv0" in text.output.split("replication:")[1]
    data = json.loads(runner.invoke(main, ["report", str(art), "--json"]).output)
    rep = data["replication"]
    assert rep["latency_ns"] == data["latency_ns"] < rep["latency_without_ns"]
    assert rep["layers"][0]["copies"] == summary.layers[0].copies


def test_every_copy_is_its_own_programmed_crossbar(pcm40):
    art = pcm40["auto"].artifact
    summary = pcm40["auto"].context.replication
    chip = cimc.load(art, seed=0)
    ats = chip.machine.at(0.0, False).crossbars
    with np.load(art / "weights.npz", allow_pickle=False) as w:
        for copy, orig in summary.fold.items():
            np.testing.assert_array_equal(w[f"xbar/{copy}/0/levels"], w[f"xbar/{orig}/0/levels"])
            a, b = chip.machine.crossbars[(copy, 0)], chip.machine.crossbars[(orig, 0)]
            assert a.layer == b.layer
            # the same levels, programmed with each crossbar's own noise
            assert not np.array_equal(ats[(copy, 0)].weights[0], ats[(orig, 0)].weights[0])


def test_fast_executor_equals_the_reference_without_read_noise(pcm40, images):
    with cimc.load(pcm40["auto"].artifact, seed=3) as chip:
        x = {"input": images[100:300]}
        fast = chip.run(x, noise=False)["logits"]
        np.testing.assert_array_equal(fast, chip.run(x, noise=False, reference=True)["logits"])


def test_compile_options(tmp_path, images):
    np.savez(tmp_path / "calib.npz", input=images[:100])
    runner = CliRunner()
    out = runner.invoke(main, ["compile", str(MNIST / "model.onnx"), "--print-pipeline",
                               "--replicate", "none"])
    assert "quantize,replicate{mode=none},schedule" in out.output
    out = runner.invoke(main, ["compile", str(MNIST / "model.onnx"), "--print-pipeline"])
    assert "quantize,replicate,schedule" in out.output
    art = tmp_path / "m.cimc"
    out = runner.invoke(main, ["compile", str(MNIST / "model.onnx"), "--target", "hermes64",
                               "--input-shape", "input=1x1x28x28", "--calib",
                               str(tmp_path / "calib.npz"), "--replicate", "none", "-o",
                               str(art)])
    assert out.exit_code == 0, out.output
    assert json.loads((art / "manifest.json").read_text())["replication"] is None
    with pytest.raises(CimcError, match="replicate='all': expected one of auto, none"):
        cimc.compile(MNIST / "model.onnx", "pcm40", replicate="all")
    with pytest.raises(CimcError, match="in the pipeline itself"):
        cimc.compile(MNIST / "model.onnx", "pcm40", replicate="none",
                     pipeline="canonicalize")


def test_a_manifest_naming_unknown_cores_is_refused(pcm40, tmp_path):
    import shutil

    art = shutil.copytree(pcm40["auto"].artifact, tmp_path / "bad.cimc")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["replication"]["layers"][0]["cores"] = [[99, 0]]
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="'replication' must list each layer's cores"):
        cimc.load(art).report()
