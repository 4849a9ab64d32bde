"""Pruning end to end (issue 10): ``cimc.compile(..., prune=...)``, ``cimc compile --prune``,
``cimc opt -p prune-similar{...}`` and ``cimc report`` on the MNIST examples; the artifact runs the
pruned network; the example trained with the rule loses exactly its zeroed filters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import cimc
from cimc.cli import main
from cimc.frontend.onnx import import_onnx
from cimc.ir.interpreter import run
from cimc.passes import PassContext, run_pipeline
from cimc.testing import ort_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MNIST = EXAMPLES / "mnist" / "model.onnx"
PRUNED = EXAMPLES / "mnist_prune" / "model.onnx"
SHAPE = {"input": (1, 1, 28, 28)}


@pytest.fixture(scope="module")
def data():
    with np.load(EXAMPLES / "mnist" / "test.npz") as z:
        return z["x"].astype(np.float32), z["y"]


def test_compile_with_prune_writes_the_summary_that_report_shows(data, tmp_path):
    x, _ = data
    # (without copies of layers: the artifact then holds the crossbars pruning counts)
    result = cimc.compile(MNIST, "pcm40", tmp_path / "m.cimc", input_shapes=SHAPE,
                          calib={"input": x[:64]}, prune={"ratio": 0.3}, replicate="none")
    assert "canonicalize,prune-similar{ratio=0.3},lower-to-mvm" in result.pipeline
    summary = result.pruning
    assert summary.macs_removed_fraction >= 0.3
    manifest = json.loads((tmp_path / "m.cimc" / "manifest.json").read_text())
    assert manifest["pruning"] == json.loads(json.dumps(summary.to_dict()))
    # the crossbars counted after pruning are the ones the artifact holds
    tiles = {lay["name"]: lay["crossbars"] for lay in manifest["layers"]}
    assert {lay.name: lay.crossbars_after for lay in summary.layers} == tiles
    report = cimc.load(tmp_path / "m.cimc").report()
    d = report.to_dict()["pruning"]
    assert d["macs_removed_fraction"] == summary.macs_removed_fraction
    assert d["crossbars_saved"] == summary.crossbars_saved == 0  # LeNet: one crossbar per layer
    text = str(report)
    assert "pruning: prune-similar{ratio=0.3}" in text and "conv0  conv" in text


def test_the_artifact_runs_the_pruned_network(data, tmp_path):
    x, _ = data
    calib = {"input": x[:32]}
    spec = "metric=cosine,ratio=0.25,layers=conv1"
    art = cimc.compile(MNIST, "ideal", tmp_path / "m.cimc", input_shapes=SHAPE, calib=calib,
                       prune=spec).artifact
    module = import_onnx(MNIST, {"input": (32, 1, 28, 28)})
    run_pipeline(module, "canonicalize,prune-similar{" + spec + "}", PassContext(calib=calib))
    want = run(module, {"input": x[100:132]})["logits"]
    got = cimc.load(art).run({"input": x[100:132]})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _zero_filters(path: Path) -> list[int]:
    """All-zero filters per conv weight of an ONNX model."""
    proto = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return [int((~weights[n.input[1]].reshape(weights[n.input[1]].shape[0], -1).any(1)).sum())
            for n in proto.graph.node if n.op_type == "Conv"]


def test_training_time_pruning_example_loses_exactly_its_zeroed_filters(data, tmp_path):
    x, _ = data
    zeros = _zero_filters(PRUNED)
    assert sum(zeros) > 0
    result = cimc.compile(PRUNED, "ideal", tmp_path / "m.cimc", input_shapes=SHAPE,
                          calib={"input": x[:16]}, prune="c=1")
    lay = {entry.name: entry for entry in result.pruning.layers}
    assert [lay["conv0"].filters_after, lay["conv1"].filters_after] == [6 - zeros[0],
                                                                        16 - zeros[1]]
    want = ort_run(onnx.load(str(PRUNED)), {"input": x[100:300]})["logits"]
    got = cimc.load(result.artifact).run({"input": x[100:300]})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_command_line_prune_options(data, tmp_path):
    x, _ = data
    np.savez(tmp_path / "calib.npz", input=x[:32])
    runner = CliRunner()
    base = ["compile", str(MNIST), "--target", "hermes64", "--input-shape", "input=1x1x28x28",
            "--calib", str(tmp_path / "calib.npz")]
    r = runner.invoke(main, [*base, "--prune", "ratio=0.3", "--print-pipeline"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("canonicalize,prune-similar{ratio=0.3},lower-to-mvm,")
    r = runner.invoke(main, [*base, "--prune", "ratio=0.3", "-o", str(tmp_path / "m.cimc")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["report", str(tmp_path / "m.cimc"), "--json"])
    pruning = json.loads(r.output)["pruning"]
    assert pruning["macs_removed_fraction"] >= 0.3 and pruning["crossbars_saved"] == 0
    r = runner.invoke(main, ["report", str(tmp_path / "m.cimc")])
    assert "pruning: prune-similar{ratio=0.3}" in r.output
    for bad, message in (("layers=conv9", "layers='conv9' matches no layer"),
                         ("ratio=2", "ratio=2.0 must be in [0, 1)"),
                         ("speed=3", "pass 'prune-similar' has no option 'speed'")):
        r = runner.invoke(main, [*base, "--prune", bad, "-o", str(tmp_path / "bad.cimc")])
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
        assert not (tmp_path / "bad.cimc").exists()


def test_opt_runs_the_pass_on_ir(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["import", str(MNIST), "-o", str(tmp_path / "m.cir"),
                             "--input-shape", "input=1x1x28x28"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["opt", str(tmp_path / "m.cir"), "-p",
                             "canonicalize,prune-similar{ratio=0.3}"])
    assert r.exit_code == 0, r.output
    assert "tensor<1x6x24x24xf32>" not in r.output or "tensor<1x16x8x8xf32>" not in r.output
