"""Models of the kinds people deploy (tests/e2e/deployed/, made by make_models.py there with
seeded weights), end to end on the ``ideal`` target: a YOLOv8-style detector, a BERT-style
encoder exported by the torch tracer and by torch.export, a file-type classifier, an LSTM and a
GRU network.

Each model imports, lowers (its weight products on crossbars, recurrent layers unrolled), maps,
emits and runs on the runtime, matching onnxruntime within rtol 1e-4 / atol 1e-5 after the
import, after the lowering and on the runtime. The ops each model is there to cover are checked
to be in the file, so a re-export that loses one fails here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from deployed_models import HERE, MODELS, bert_inputs

import cimc
from cimc.frontend.onnx import import_onnx
from cimc.ir.interpreter import run
from cimc.passes import PassContext, run_pipeline
from cimc.passes.pipelines import LOWERING, MAPPING
from cimc.targets import load_target
from cimc.targets.emit import emit_artifact
from cimc.testing import ort_run

RTOL, ATOL = 1e-4, 1e-5


# Crossbars on ideal: LSTM: W and R of layer 1, W and R of both directions of layer 2, the
# head; GRU: W, R, the head.
CROSSBARS = {"lstm": 7, "gru": 3}


def _assert_matches(got: dict, want: dict, stage: str) -> None:
    assert list(got) == list(want), stage
    for k, w in want.items():
        assert got[k].shape == w.shape, f"{stage}: {k} shape"
        np.testing.assert_allclose(got[k], w, rtol=RTOL, atol=ATOL, err_msg=f"{stage}: {k}")


@pytest.mark.parametrize("name", MODELS)
def test_deployed_model_end_to_end(name, tmp_path):
    make_inputs, covers = MODELS[name]
    model = onnx.load(str(HERE / f"{name}.onnx"))
    assert covers <= {n.op_type for n in model.graph.node}
    inputs = make_inputs(np.random.default_rng(0))
    want = ort_run(model, inputs)

    module = import_onnx(model, {k: v.shape for k, v in inputs.items()})
    _assert_matches(run(module, inputs), want, "interpreter after import")
    run_pipeline(module, LOWERING)
    ops = Counter(op.name for op in module.walk())
    assert ops["cim.mvm"] >= 1
    assert not {"nn.conv", "nn.gemm", "nn.lstm", "nn.gru"} & set(ops), ops
    _assert_matches(run(module, inputs), want, "interpreter after lowering")

    target = load_target("ideal")
    ctx = PassContext(target=target)
    run_pipeline(module, MAPPING, ctx)
    if name in CROSSBARS:  # every weight matrix once: the unrolled steps share R's crossbar
        assert ctx.replication.crossbars_before == CROSSBARS[name]  # (before any copies)
    path = emit_artifact(module, target, tmp_path / f"{name}.cimc", pipeline=MAPPING,
                         ctx=ctx)
    chip = cimc.load(path, seed=0)
    _assert_matches(chip.run(inputs), want, "runtime (ideal target)")


def test_attention_products_are_digital_work_in_the_report(tmp_path):
    """BERT's q @ k' and probs @ v stay digital ops (both operands are activations) and the
    report charges them as digital work: 2 layers x 2 products x (2 x 4 heads x 8 x 8 outputs)
    x 8 multiply-accumulates each (the exact count is tests/unit/runtime/test_report.py's)."""
    model = onnx.load(str(HERE / "bert_script.onnx"))
    inputs = bert_inputs(np.random.default_rng(0))
    path = cimc.compile(model, target="ideal", output=tmp_path / "bert.cimc",
                        input_shapes={k: v.shape for k, v in inputs.items()}).artifact
    programs = "".join(p.read_text() for p in Path(path).glob("core_*.s"))
    assert programs.count('op="nn.matmul"') == 4
    report = cimc.load(path).report(batch=2)
    assert report.executed["dop"] > 2 * 2 * (2 * 4 * 8 * 8) * 8
    assert report.energy_nj["digital"] > 0


@pytest.mark.parametrize("name", ["yolov8", "bert_script", "filetype"])
def test_compiled_for_one_sample_runs_any_batch(name, tmp_path):
    """Exported with a dynamic batch and compiled for batch 1, the artifact's batch contract
    holds (the anchors, position ids and masks fold or broadcast per sample), so the runtime
    runs a batch of 3 and matches onnxruntime on it."""
    make_inputs, _ = MODELS[name]
    one, three = make_inputs(np.random.default_rng(1), 1), make_inputs(np.random.default_rng(2), 3)
    model = onnx.load(str(HERE / f"{name}.onnx"))
    path = cimc.compile(model, target="ideal", output=tmp_path / f"{name}.cimc",
                        input_shapes={k: v.shape for k, v in one.items()}).artifact
    chip = cimc.load(path)
    assert chip.artifact.batch == 1
    _assert_matches(chip.run(three), ort_run(model, three), "runtime, batch 3")
