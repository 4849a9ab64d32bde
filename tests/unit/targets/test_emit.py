"""The artifact emitter: files, manifest, checksums, the program template, programs that list
every tile, atomic writes, and, executed by the reference machine (docs/isa.md), programs that
compute what the IR computes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.ir.core import Builder, Func, Module
from cimc.ir.interpreter import run
from cimc.ir.parser import parse_module
from cimc.ir.printer import print_module
from cimc.ir.types import TensorType
from cimc.passes import PassContext, run_pipeline
from cimc.runtime import load
from cimc.runtime.artifact import read_artifact
from cimc.runtime.program import format_instr, parse_program
from cimc.targets import Target, load_target
from cimc.targets.emit import EmitError, emit_artifact, render_program

MAPPING = "tile,quantize,place,schedule"


def tiny(base: str = "ideal", rows: int = 8, cols: int = 8, cores: int = 3,
         xbars: int = 1) -> Target:
    data = load_target(base).to_dict()
    data["crossbar"].update(rows=rows, cols=cols * data["crossbar"]["cols_per_weight"])
    data["chip"].update(cores=cores, crossbars_per_core=xbars)
    return Target.from_dict(data, source="test")


def cnn(batch: int = 1, seed: int = 0) -> Module:
    """conv 3x3 (2->4 channels, 18 rows: 3 row blocks on 8-row crossbars) -> bias -> relu ->
    max pool -> reshape -> fc 36x10 (5 row blocks x 2 column blocks) -> output."""
    rng = np.random.default_rng(seed)
    f = Func("main", [TensorType((batch, 2, 6, 6))], ["image"], ["logits"])
    b = Builder(f.body)
    patches = b.create("cim.im2col", [f.args[0]], {
        "kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1],
    }).result
    w1 = b.constant((rng.standard_normal((18, 4)) / 4).astype(np.float32))
    h = b.create("cim.mvm", [patches, w1], {"layer": "conv"}).result
    h = b.create("nn.add", [h, b.constant(np.arange(4, dtype=np.float32) / 10)]).result
    h = b.create("nn.transpose", [h], {"perm": [0, 3, 1, 2]}).result
    h = b.create("nn.relu", [h]).result
    h = b.create("nn.max_pool", [h], {"kernel_shape": [2, 2], "strides": [2, 2],
                                      "pads": [0, 0, 0, 0], "dilations": [1, 1],
                                      "ceil_mode": False}).result
    h = b.create("nn.reshape", [h], {"shape": [batch, 36]}).result
    w2 = b.constant((rng.standard_normal((36, 10)) / 6).astype(np.float32))
    y = b.create("cim.mvm", [h, w2], {"layer": "fc"}).result
    b.create("return", [y])
    return Module([f], {"stage": "cim"})


def compile_ir(module: Module, target: Target, path: Path, calib=None) -> PassContext:
    ctx = PassContext(target=target, calib=calib)
    run_pipeline(module, MAPPING, ctx)
    emit_artifact(module, target, path, pipeline=MAPPING, ctx=ctx)
    return ctx


# ----------------------------------------------------------------------------- execution


def execute(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an artifact's core programs on the reference machine (docs/isa.md, instruction by
    instruction)."""
    with cimc.load(path, workers=1) as chip:
        return chip.run(inputs, reference=True)


# ----------------------------------------------------------------------------- files and manifest


def test_artifact_files_manifest_and_checksums(tmp_path):
    out = tmp_path / "cnn.cimc"
    module = cnn()
    ctx = compile_ir(module, tiny(), out)
    names = sorted(p.name for p in out.iterdir())
    m = json.loads((out / "manifest.json").read_text())
    programs = [c["program"] for c in m["cores"]]
    assert names == sorted(["manifest.json", "weights.npz", *programs])
    assert m["format"] == "cimc-artifact" and m["version"] == 1
    assert Target.from_dict(m["target"]) == tiny()
    assert m["inputs"] == [{"name": "image", "shape": [1, 2, 6, 6], "dtype": "f32"}]
    assert m["outputs"] == [{"name": "logits", "shape": [1, 10], "dtype": "f32"}]
    assert m["key"] is None and m["weights"] == "weights.npz"
    assert m["compiler"]["pipeline"] == MAPPING
    assert set(m["files"]) == {"weights.npz", *programs}
    for name, digest in m["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    # 3 + 10 tiles on chips of 3 single-crossbar cores: 5 chips
    assert m["chips"] == 5 == ctx.placement.chips
    assert [c["id"] for c in m["cores"]] == list(range(13))
    assert [c["chip"] for c in m["cores"]] == [i // 3 for i in range(13)]
    layers = {lay["name"]: lay for lay in m["layers"]}
    assert layers["conv"]["crossbars"] == 3 and layers["fc"]["crossbars"] == 10
    assert layers["fc"]["analytic_min"] == 10 and layers["fc"]["weight_shape"] == [36, 10]
    assert m["mapping"]["crossbars"] == 13 == m["mapping"]["analytic_min"]
    with np.load(out / "weights.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    read_artifact(out)  # the runtime's reader accepts it (format, checksums, program syntax)


def test_programs_list_every_tile_once(tmp_path):
    out = tmp_path / "cnn.cimc"
    module = cnn()
    compile_ir(module, tiny(cores=4, xbars=2), out)
    art = read_artifact(out)
    declared = sorted((d.layer, d.tile) for p in art.programs.values() for d in p.xbars.values())
    want = sorted([("conv", (i, 0)) for i in range(3)]
                  + [("fc", (i, j)) for i in range(5) for j in range(2)])
    assert declared == want
    used = sorted((c, i.kwargs["xbar"]) for c, p in art.programs.items() for i in p.instrs
                  if i.mnemonic == "mvm")
    assert used == sorted((c, x) for c, p in art.programs.items() for x in p.xbars)
    for c, p in art.programs.items():
        for x, d in p.xbars.items():
            assert art.weights[f"xbar/{c}/{x}/levels"].shape == (d.rows, d.cols)
            assert art.weights[f"xbar/{c}/{x}/scale"].shape == (d.cols,)


# ----------------------------------------------------------------------------- semantics


def test_ideal_programs_compute_what_the_ir_computes(tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)
    want = run(cnn(), {"image": x})["logits"]
    out = tmp_path / "cnn.cimc"
    compile_ir(cnn(), tiny(), out)
    got = execute(out, {"image": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_programs_run_for_any_batch_size(tmp_path):
    x = np.random.default_rng(2).standard_normal((5, 2, 6, 6)).astype(np.float32)
    want = np.concatenate([run(cnn(), {"image": x[i:i + 1]})["logits"] for i in range(5)])
    out = tmp_path / "cnn.cimc"
    compile_ir(cnn(), tiny(), out)  # compiled for batch 1
    text = "".join(p.read_text() for p in out.glob("core_*.s"))
    assert "shape=[-1, 36]" in text
    np.testing.assert_allclose(execute(out, {"image": x})["logits"], want, rtol=1e-5, atol=1e-6)


def noiseless_quantising(cores: int = 3, xbars: int = 1) -> Target:
    """An ideal device with 4-bit weights, 4-bit DACs and 6-bit ADCs."""
    data = tiny(cores=cores, xbars=xbars).to_dict()
    data["crossbar"].update(weight_bits=4, levels=8)
    data["converters"].update(dac_bits=4, adc_bits=6)
    return Target.from_dict(data, source="test")


def test_quantised_programs_match_the_quantised_ir_exactly(tmp_path):
    calib = {"image": np.random.default_rng(3).standard_normal((16, 2, 6, 6)).astype(np.float32)}
    module = cnn()
    out = tmp_path / "cnn.cimc"
    compile_ir(module, noiseless_quantising(cores=2, xbars=4), out, calib)
    x = np.random.default_rng(4).standard_normal((1, 2, 6, 6)).astype(np.float32)
    want = run(module, {"image": x})["logits"]
    np.testing.assert_array_equal(execute(out, {"image": x})["logits"], want)
    text = (out / "core_000.s").read_text()
    assert "dac_bits=4" in text and "adc_bits=6" in text
    unsigned = "".join(p.read_text() for p in out.glob("core_*.s")).count("dac_signed=false")
    assert unsigned == 10  # the fc tiles read relu outputs; the conv reads the raw image
    with np.load(out / "weights.npz") as z:
        assert z["xbar/0/0/levels"].dtype == np.int8


def test_the_runtime_executes_the_programs_as_the_ir_says(tmp_path):
    """The contract of docs/isa.md: on a noiseless quantising target (an ideal device with 4-bit
    weights, DACs and 6-bit ADCs) the runtime (its fast executor) gives exactly the quantised
    IR's outputs; on the ideal target, for a batch other than the compiled one, the float IR's."""
    target = noiseless_quantising()
    calib = {"image": np.random.default_rng(3).standard_normal((16, 2, 6, 6)).astype(np.float32)}
    module = cnn()
    compile_ir(module, target, tmp_path / "q.cimc", calib)
    x = np.random.default_rng(4).standard_normal((1, 2, 6, 6)).astype(np.float32)
    with cimc.load(tmp_path / "q.cimc") as chip:
        got = chip.run({"image": x})["logits"]
    np.testing.assert_array_equal(got, run(module, {"image": x})["logits"])

    compile_ir(cnn(), tiny(), tmp_path / "f.cimc")
    xs = np.random.default_rng(5).standard_normal((3, 2, 6, 6)).astype(np.float32)
    want = np.concatenate([run(cnn(), {"image": xs[i:i + 1]})["logits"] for i in range(3)])
    with cimc.load(tmp_path / "f.cimc") as chip:
        got = chip.run({"image": xs})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_compile_api_writes_an_artifact_from_onnx(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((20, 12)) / 4).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.standard_normal(20).astype(np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "c"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 20])], [w, c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    out = tmp_path / "gemm.cimc"
    result = cimc.compile(model, target=tiny(), output=out)
    assert result.artifact == out
    x = rng.standard_normal((2, 12)).astype(np.float32)
    want = np.maximum(x @ numpy_helper.to_array(w).T + numpy_helper.to_array(c), 0)
    np.testing.assert_allclose(execute(out, {"x": x})["y"], want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- templates


def test_template_renders_directives_and_every_instruction_kind():
    instrs = [
        ("input", ["a0"], [], {"name": "x"}, ""),
        ("recv", ["a1"], [], {"from": 2}, ""),
        ("im2col", ["a2"], ["a1"], {"kernel_shape": [5, 5], "strides": [1, 1],
                                   "pads": [2, 2, 2, 2], "dilations": [1, 1]}, ""),
        ("slice", ["a3"], ["a2"], {"start": 0, "stop": 200}, ""),
        ("mvm", ["p0"], ["a3"], {"xbar": 0, "dac_bits": 8, "dac_range": 3.5, "dac_signed": False,
                                 "adc_bits": 8, "adc_range": 41.0}, "conv2 tile [0, 1]"),
        ("dop", ["a4"], ["p0", "c0"], {"op": "nn.add"}, ""),
        ("dop", ["a5", "a6"], ["a4"], {"op": "nn.split", "axis": 1, "sizes": [16, 16]}, ""),
        ("send", [], ["a5"], {"to": 5}, ""),
        ("output", [], ["a6"], {"name": "y"}, ""),
    ]
    core = {
        "id": 3, "chip": 0,
        "xbars": [{"index": 0, "rows": 200, "cols": 32, "layer": "conv2", "tile": [0, 1],
                   "slices": 1}],
        "consts": [{"buffer": "c0", "name": "c7"}],
        "instrs": [{"text": format_instr(m, d, s, kw), "comment": c} for m, d, s, kw, c in instrs],
    }
    text = render_program(core, "pcm40", "0.1.0")
    assert text == """\
; core 3 of chip 0: 1 crossbar(s), 9 instruction(s)
; target "pcm40", cimc 0.1.0
.core 3 chip=0
.xbar 0 rows=200 cols=32 layer="conv2" tile=[0, 1]
.const c0 name="c7"
  input   a0, name="x"
  recv    a1, from=2
  im2col  a2, a1, kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2], dilations=[1, 1]
  slice   a3, a2, start=0, stop=200
  mvm     p0, a3, xbar=0, dac_bits=8, dac_range=3.5, dac_signed=false, adc_bits=8, adc_range=41.0  ; conv2 tile [0, 1]
  dop     a4, p0, c0, op="nn.add"
  dop     a5, a6, a4, op="nn.split", results=2, axis=1, sizes=[16, 16]
  send    a5, to=5
  output  a6, name="y"
  halt
"""
    parsed = parse_program(text, "core_003.s")  # what the printer writes, the parser reads
    for ins, (m, d, s, kw, _) in zip(parsed.instrs, instrs):
        assert (ins.mnemonic, list(ins.dsts), list(ins.srcs)) == (m, d, s)
        assert dict(ins.kwargs) == {**kw, **({"results": 2} if len(d) > 1 else {})}


# ----------------------------------------------------------------------------- errors, atomicity


def test_unscheduled_module_is_refused_and_nothing_is_written(tmp_path):
    module = cnn()
    target = tiny()
    run_pipeline(module, "tile,quantize,place", PassContext(target=target))
    out = tmp_path / "cnn.cimc"
    with pytest.raises(EmitError, match="run the 'schedule' pass"):
        emit_artifact(module, target, out)
    assert list(tmp_path.iterdir()) == []


def test_untiled_module_is_refused(tmp_path):
    with pytest.raises(EmitError, match=r"cim.mvm is not tiled; run the mapping passes"):
        emit_artifact(cnn(), tiny(), tmp_path / "x.cimc")


def test_a_failed_emit_leaves_the_previous_artifact_alone(tmp_path):
    out = tmp_path / "cnn.cimc"
    compile_ir(cnn(), tiny(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(EmitError):
        emit_artifact(cnn(), tiny(), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.cimc"]


def test_emitting_again_replaces_the_artifact(tmp_path):
    out = tmp_path / "cnn.cimc"
    compile_ir(cnn(), tiny(), out)
    compile_ir(cnn(), tiny(cores=64), out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["chips"] == 1 and len(list(out.glob("core_*.s"))) == len(m["cores"])
    read_artifact(out)


def test_scheduled_ir_round_trips_through_text_and_emits_the_same_programs(tmp_path):
    module = cnn()
    target = tiny()
    run_pipeline(module, MAPPING, PassContext(target=target))
    again = parse_module(*print_module(module))
    emit_artifact(module, target, tmp_path / "a.cimc")
    emit_artifact(again, target, tmp_path / "b.cimc")
    for p in (tmp_path / "a.cimc").glob("core_*.s"):
        assert p.read_text() == (tmp_path / "b.cimc" / p.name).read_text()


def test_scalar_constants_and_expand_run_for_any_batch_size(tmp_path):
    """A 0-d constant (a scalar gather index) stays 0-d in weights.npz, and nn.expand's shape
    follows the run's batch size."""
    f = Func("main", [TensorType((2, 3, 4))], ["x"], ["row", "y"])
    b = Builder(f.body)
    x = f.args[0]
    row = b.create("nn.gather", [x, b.constant(np.array(1, np.int64))], {"axis": 1}).result
    col = b.create("nn.reshape", [row], {"shape": [2, 1, 4]}).result
    wide = b.create("nn.expand", [col], {"shape": [2, 3, 4]}).result
    b.create("return", [row, b.create("nn.sub", [x, wide]).result])
    module = Module([f], {"stage": "cim"})
    out = tmp_path / "g.cimc"
    compile_ir(module, tiny(), out)
    assert read_artifact(out).manifest["batch"] == 2
    x = np.random.default_rng(4).standard_normal((5, 3, 4)).astype(np.float32)
    got = load(out).run({"x": x})
    np.testing.assert_array_equal(got["row"], x[:, 1])
    np.testing.assert_array_equal(got["y"], x - x[:, 1:2, :])


def test_a_shared_crossbar_is_declared_once_and_read_by_each_step(tmp_path):
    """An unrolled recurrence h' = tanh(h @ W): every step's mvm reads the one crossbar."""
    rng = np.random.default_rng(5)
    f = Func("main", [TensorType((2, 4))], ["h"], ["y"])
    b = Builder(f.body)
    w = b.constant((rng.standard_normal((4, 4)) / 2).astype(np.float32))
    h = f.args[0]
    for _ in range(3):
        h = b.create("nn.tanh", [b.create("cim.mvm", [h, w], {"layer": "rnn"}).result]).result
    b.create("return", [h])
    module = Module([f], {"stage": "cim"})
    x = rng.standard_normal((2, 4)).astype(np.float32)
    want = run(module, {"h": x})["y"]
    out = tmp_path / "rnn.cimc"
    ctx = compile_ir(module, tiny(), out)
    assert ctx.placement.crossbars == 1
    programs = "".join(p.read_text() for p in out.glob("core_*.s"))
    assert programs.count(".xbar") == 1 and programs.count("  mvm ") == 3
    assert read_artifact(out).manifest["layers"][0]["crossbars"] == 1
    np.testing.assert_allclose(execute(out, {"h": x})["y"], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(load(out).run({"h": x})["y"], want, rtol=1e-6, atol=1e-6)
    noisy = tmp_path / "rnn_pcm.cimc"
    compile_ir(module, tiny("pcm40"), noisy, calib={"h": x})
    assert load(noisy, seed=1).run({"h": x})["y"].shape == (2, 4)
