"""The command line: each command on small inputs, and errors as one message without a traceback."""

from __future__ import annotations

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from cimc.cli import main
from cimc.ir import read_module, to_text


def _model(path, *, dynamic=False):
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N" if dynamic else 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N" if dynamic else 2, 3])],
        [w],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_import_writes_parseable_ir(tmp_path):
    r = CliRunner().invoke(main, ["import", str(_model(tmp_path / "m.onnx")), "-o", str(tmp_path / "m.cir")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "m.cir").read_text()
    assert "nn.matmul" in text and "nn.relu" in text
    assert to_text(read_module(tmp_path / "m.cir")) == text


def test_dynamic_batch_is_one_with_a_one_line_note(tmp_path):
    m = _model(tmp_path / "m.onnx", dynamic=True)
    r = CliRunner().invoke(main, ["import", str(m), "-o", str(tmp_path / "m.cir")])
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert notes == [("warning: input 'x' has a dynamic batch dimension 'N': using 1, as "
                      "--input-shape x=1x4 would; a compiled artifact still runs any batch size "
                      "when the model keeps the samples of a batch apart")]
    assert "tensor<1x4xf32>" in (tmp_path / "m.cir").read_text()
    r = CliRunner().invoke(main, ["import", str(m), "-o", str(tmp_path / "m.cir"), "--input-shape",
                                  "x=3x4"])
    assert r.exit_code == 0, r.output
    assert "tensor<3x4xf32>" in (tmp_path / "m.cir").read_text() and "warning" not in r.output


def test_empty_input_is_named_as_such_not_as_dynamic(tmp_path):
    m = _model(tmp_path / "m.onnx")
    proto = onnx.load(m)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    onnx.save(proto, m)
    r = CliRunner().invoke(main, ["import", str(m), "-o", str(tmp_path / "m.cir")])
    assert r.exit_code == 1
    assert "input 'x' has a dimension of size 0 (shape [0, 4])" in r.output
    assert "empty tensors" in r.output and "dynamic" not in r.output
    r = CliRunner().invoke(main, ["import", str(m), "-o", str(tmp_path / "m.cir"), "--input-shape", "x=3x4"])
    assert r.exit_code == 0, r.output


def test_invalid_onnx_file_is_named(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all \x00\xff")
    r = CliRunner().invoke(main, ["import", str(bad), "-o", str(tmp_path / "o.cir")])
    assert r.exit_code == 1
    assert str(bad) in r.output and "not a valid ONNX model" in r.output
    assert "Traceback" not in r.output


def test_opt_runs_pipeline_and_prints(tmp_path):
    CliRunner().invoke(main, ["import", str(_model(tmp_path / "m.onnx")), "-o", str(tmp_path / "m.cir")])
    r = CliRunner().invoke(main, ["opt", str(tmp_path / "m.cir"), "-p", "dce", "--time-passes"])
    assert r.exit_code == 0, r.output
    assert "nn.relu" in r.output and "pass timing" in r.output
    r = CliRunner().invoke(main, ["opt", str(tmp_path / "m.cir"), "-p", "dce,nosuch"])
    assert r.exit_code == 1 and "unknown pass 'nosuch'" in r.output


def test_opt_dump_dir(tmp_path):
    CliRunner().invoke(main, ["import", str(_model(tmp_path / "m.onnx")), "-o", str(tmp_path / "m.cir")])
    r = CliRunner().invoke(main, ["opt", str(tmp_path / "m.cir"), "-p", "dce,dce", "--dump-dir", str(tmp_path / "d"),
                                  "-o", str(tmp_path / "o.cir")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "d").glob("*.cir")) == ["000_input.cir", "001_dce.cir", "002_dce.cir"]


def test_opt_parse_error_has_location(tmp_path):
    (tmp_path / "bad.cir").write_text("module {\n  func @main() -> () {\n    return(%nope)\n  }\n}\n")
    r = CliRunner().invoke(main, ["opt", str(tmp_path / "bad.cir"), "-p", "dce"])
    assert r.exit_code == 1
    assert f"{tmp_path / 'bad.cir'}:3:12: use of undefined value %nope" in r.output


def test_passes_lists_each_pass_with_summary():
    r = CliRunner().invoke(main, ["passes"])
    assert r.exit_code == 0
    assert any(line.startswith("dce ") and "never used" in line for line in r.output.splitlines())


def test_print_pipeline_replays_with_opt():
    r = CliRunner().invoke(main, ["compile", "x.onnx", "--print-pipeline"])
    assert r.exit_code == 0, r.output
    from cimc.passes import available_passes, parse_pipeline, pipeline_spec

    spec = r.output.strip()
    assert pipeline_spec(parse_pipeline(spec, available_passes())) == spec
    assert spec.startswith("canonicalize,lower-to-mvm")


def test_compile_run_report_targets(tmp_path):
    from pathlib import Path

    digits = Path(__file__).resolve().parents[2] / "examples" / "digits"
    runner = CliRunner()
    art = tmp_path / "d.cimc"
    r = runner.invoke(main, ["compile", str(digits / "model.onnx"), "--target", "hermes64",
                             "--input-shape", "input=1x1x8x8", "-o", str(art)])
    assert r.exit_code == 0, r.output
    assert (art / "manifest.json").is_file() and list(art.glob("core_*.s"))
    with np.load(digits / "test.npz") as z:
        np.save(tmp_path / "x.npy", z["x"][:20])
    r = runner.invoke(main, ["run", str(art), "--input", f"input={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz"),
                             "--time", "60", "--seed", "3"])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "y.npz") as z:
        assert z["logits"].shape == (20, 10)
    r = runner.invoke(main, ["report", str(art), "--json"])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads(r.output)
    assert rep["crossbars"] >= 3 and rep["latency_ns"] > 0
    r = runner.invoke(main, ["targets"])
    assert r.exit_code == 0 and {"ideal", "pcm40", "hermes64", "neurram48"} <= {
        line.split()[0] for line in r.output.splitlines() if line.strip()}


def test_run_errors_are_one_message(tmp_path):
    from pathlib import Path

    digits = Path(__file__).resolve().parents[2] / "examples" / "digits"
    art = tmp_path / "d.cimc"
    CliRunner().invoke(main, ["compile", str(digits / "model.onnx"), "--input-shape", "input=1x1x8x8", "-o", str(art)])
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 7, 8), np.float32))
    r = CliRunner().invoke(main, ["run", str(art), "--input", f"input={tmp_path / 'bad.npy'}", "-o", str(tmp_path / "o.npz")])
    assert r.exit_code == 1 and "Traceback" not in r.output and "input" in r.output
    assert not (tmp_path / "o.npz").exists()
    r = CliRunner().invoke(main, ["run", str(art), "--input", f"nosuch={tmp_path / 'bad.npy'}", "-o", str(tmp_path / "o.npz")])
    assert r.exit_code == 1 and "nosuch" in r.output
    (art / "core_000.s").write_text((art / "core_000.s").read_text() + "; tampered\n")
    r = CliRunner().invoke(main, ["report", str(art)])
    assert r.exit_code == 1 and "core_000.s" in r.output


def test_evaluate_prints_accuracy_beside_onnxruntime():
    from pathlib import Path

    digits = Path(__file__).resolve().parents[2] / "examples" / "digits"
    r = CliRunner().invoke(main, ["evaluate", str(digits / "model.onnx"), "--data", str(digits / "test.npz"),
                                  "--target", "pcm40", "--time", "0", "--time", "86400"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any(line.startswith("onnxruntime (fp32)") for line in lines)
    assert any("t = 1 day (drift compensation on)" in line for line in lines)
    assert any("t = 1 day (drift compensation off)" in line for line in lines)
