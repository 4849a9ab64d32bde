"""Pass "place": text in, text out; every tile on its own crossbar; digital ops on the core of
their first operand; models spread over chips or refused; the crossbar count of ResNet-50 on
hermes64 next to its analytic minimum."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import PassError
from cimc.ir import parse_module
from cimc.ir.core import Builder, Func, Module
from cimc.ir.types import TensorType
from cimc.passes import PassContext, run_pipeline
from cimc.targets import load_target
from cimc.testing import check_pass

MLP = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x4xf32>) -> (tensor<1x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %w1 = nn.constant() {value = dense<[1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0, 3.0, 0.5, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0] : tensor<4x4xf32>>} : tensor<4x4xf32>
    %w2 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0] : tensor<4x2xf32>>} : tensor<4x2xf32>
    %h = cim.mvm(%x, %w1) {layer = "fc1"} : tensor<1x4xf32>
    %r = nn.relu(%h) : tensor<1x4xf32>
    %y = cim.mvm(%r, %w2) {layer = "fc2"} : tensor<1x2xf32>
    return(%y)
  }
}
"""

# Four 2x4 / 2x2 tiles on chips of two single-crossbar cores: two chips. Partial sums are added on
# the core of the first partial; the relu and the next layer's slices follow their operand.
MLP_PLACED = """module attributes {chips = 2, cores_per_chip = 2, stage = "cim"} {
  func @main(%0: tensor<1x4xf32>) -> (tensor<1x2xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y"]} {
    %1 = nn.slice(%0) {axes = [1], chip = 0, core = 0, ends = [2], layer = "fc1", starts = [0], steps = [1]} : tensor<1x2xf32>
    %2 = nn.slice(%0) {axes = [1], chip = 0, core = 0, ends = [4], layer = "fc1", starts = [2], steps = [1]} : tensor<1x2xf32>
    %3 = cim.xbar_mvm(%1) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 0, dac_bits = 0, dac_range = 0.0, layer = "fc1", levels = dense<[1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0] : tensor<2x4xf32>>, scale = dense<[1.0, 1.0, 1.0, 1.0] : tensor<4xf32>>, tile = [0, 0], utilisation = 1.0, weight_shape = [4, 4], xbar = 0} : tensor<1x4xf32>
    %4 = cim.xbar_mvm(%2) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 1, dac_bits = 0, dac_range = 0.0, layer = "fc1", levels = dense<[3.0, 0.5, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0] : tensor<2x4xf32>>, scale = dense<[1.0, 1.0, 1.0, 1.0] : tensor<4xf32>>, tile = [1, 0], utilisation = 1.0, weight_shape = [4, 4], xbar = 0} : tensor<1x4xf32>
    %5 = nn.add(%3, %4) {chip = 0, core = 0, layer = "fc1"} : tensor<1x4xf32>
    %6 = nn.relu(%5) {chip = 0, core = 0} : tensor<1x4xf32>
    %7 = nn.slice(%6) {axes = [1], chip = 0, core = 0, ends = [2], layer = "fc2", starts = [0], steps = [1]} : tensor<1x2xf32>
    %8 = nn.slice(%6) {axes = [1], chip = 0, core = 0, ends = [4], layer = "fc2", starts = [2], steps = [1]} : tensor<1x2xf32>
    %9 = cim.xbar_mvm(%7) {adc_bits = 0, adc_range = 0.0, chip = 1, core = 2, dac_bits = 0, dac_range = 0.0, layer = "fc2", levels = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [0, 0], utilisation = 0.5, weight_shape = [4, 2], xbar = 0} : tensor<1x2xf32>
    %10 = cim.xbar_mvm(%8) {adc_bits = 0, adc_range = 0.0, chip = 1, core = 3, dac_bits = 0, dac_range = 0.0, layer = "fc2", levels = dense<[-1.0, -2.0, -3.0, -4.0] : tensor<2x2xf32>>, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [1, 0], utilisation = 0.5, weight_shape = [4, 2], xbar = 0} : tensor<1x2xf32>
    %11 = nn.add(%9, %10) {chip = 1, core = 2, layer = "fc2"} : tensor<1x2xf32>
    return(%11)
  }
}
"""

TILE = "tile{rows=2,cols=4}"


def test_tiles_fill_cores_then_chips():
    check_pass(MLP, f"{TILE},place{{cores=2,crossbars_per_core=1}}", MLP_PLACED)


def _placed(spec: str, src: str = MLP, target=None):
    ctx = PassContext(target=target)
    module = parse_module(src)
    run_pipeline(module, spec, ctx)
    return module, ctx


def test_several_crossbars_per_core():
    module, ctx = _placed(f"{TILE},place{{cores=4,crossbars_per_core=2}}")
    tiles = [op for op in module.walk() if op.name == "cim.xbar_mvm"]
    assert [(t.attrs["core"], t.attrs["xbar"]) for t in tiles] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert module.attrs["chips"] == 1
    rep = ctx.placement
    assert rep.crossbars == 4 and rep.analytic_min == 4 and rep.cores_with_crossbars == 2


def test_a_model_too_large_for_the_chips_allowed_is_refused_with_the_numbers():
    with pytest.raises(PassError) as info:
        _placed(f"{TILE},place{{chips=1,cores=2,crossbars_per_core=1}}")
    msg = str(info.value)
    assert "needs 4 crossbars, i.e. 2 chips" in msg
    assert "chips=1 allows only 2" in msg and "--chips auto" in msg


def test_chips_auto_spreads_and_chips_n_accepts_what_fits():
    module, ctx = _placed(f"{TILE},place{{cores=1,crossbars_per_core=1}}")
    assert module.attrs["chips"] == ctx.placement.chips == 4
    module, _ = _placed(f"{TILE},place{{chips=4,cores=1,crossbars_per_core=1}}")
    assert {op.attrs["chip"] for op in module.walk() if "chip" in op.attrs} == {0, 1, 2, 3}


def _big_layer(k: int, m: int) -> Module:
    f = Func("main", [TensorType((1, k))], ["x"], ["y"])
    b = Builder(f.body)
    y = b.create("cim.mvm", [f.args[0], b.constant(np.ones((k, m), np.float32))]).result
    b.create("return", [y])
    return Module([f], {"stage": "cim"})


def test_refusal_names_the_target():
    # neurram48: 3 row blocks x 5 column blocks of 256x128 weights = 15 crossbars; fits one chip
    ctx = PassContext(target=load_target("neurram48"))
    run_pipeline(_big_layer(600, 600), "tile,place{chips=1}", ctx)
    assert ctx.placement.crossbars == 15
    with pytest.raises(PassError, match=r"15 crossbars, i\.e\. 2 chips of 'neurram48'"):
        run_pipeline(_big_layer(600, 600), "tile,place{chips=1,cores=8}",
                     PassContext(target=load_target("neurram48")))


CONV_AFTER_FC = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x4xf32>) -> (tensor<1x3x3x3xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %w1 = nn.constant() {value = dense<[1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0, 3.0, 0.5, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0, 3.0, 0.5, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0, 3.0, 0.5, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0, 3.0, 0.5, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0] : tensor<4x16xf32>>} : tensor<4x16xf32>
    %w2 = nn.constant() {value = dense<[1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0, 3.0, 0.5, 1.0, -1.0] : tensor<4x3xf32>>} : tensor<4x3xf32>
    %h = cim.mvm(%x, %w1) {layer = "fc"} : tensor<1x16xf32>
    %r = nn.reshape(%h) {shape = [1, 1, 4, 4]} : tensor<1x1x4x4xf32>
    %c = cim.im2col(%r) {dilations = [1, 1], kernel_shape = [2, 2], pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x3x3x4xf32>
    %y = cim.mvm(%c, %w2) {layer = "conv"} : tensor<1x3x3x3xf32>
    return(%y)
  }
}
"""


def test_im2col_runs_on_the_core_of_the_tiles_it_feeds():
    module, _ = _placed("tile{rows=16,cols=16},place{cores=2,crossbars_per_core=1}", CONV_AFTER_FC)
    cores = {op.name: op.attrs.get("core") for op in module.walk()}
    assert cores["nn.reshape"] == 0  # follows the fc layer's output
    assert cores["cim.im2col"] == 1  # moved to the conv's crossbar: the 4x4 input travels


def test_placing_again_starts_from_scratch():
    spec = f"{TILE},place{{cores=2,crossbars_per_core=1}},place{{cores=4,crossbars_per_core=4}}"
    module, _ = _placed(spec)
    assert {op.attrs["core"] for op in module.walk() if "core" in op.attrs} == {0}
    assert module.attrs["chips"] == 1


def test_a_model_without_inputs_or_weights_is_placed_on_one_chip():
    # e.g. the ONNX backend test "test_constant": one Constant node, no graph inputs.
    src = """module attributes {stage = "cim"} {
  func @main() -> (tensor<2xf32>) attributes {input_names = [], output_names = ["y"]} {
    %c = nn.constant() {value = dense<[1.0, 2.0] : tensor<2xf32>>} : tensor<2xf32>
    return(%c)
  }
}
"""
    module, ctx = _placed("place{cores=2,crossbars_per_core=1}", src)
    assert module.attrs["chips"] == 1
    assert ctx.placement.crossbars == 0 and ctx.placement.chips == 1


def test_without_target_or_sizes_place_says_what_it_needs():
    want = r"needs a target .* place\{cores=64,crossbars_per_core=1\}"
    with pytest.raises(PassError, match=want):
        _placed(f"{TILE},place")


def test_resnet50_on_hermes64_is_within_ten_percent_of_the_analytic_minimum():
    from light_models import light_model

    from cimc.frontend.onnx import import_onnx

    module = import_onnx(light_model("resnet50"))
    ctx = PassContext(target=load_target("hermes64"))
    run_pipeline(module, "canonicalize,lower-to-mvm,canonicalize,tile,place", ctx)
    rep = ctx.placement
    assert rep.analytic_min > 300  # ~25 M weights on 64 K-weight crossbars
    assert rep.crossbars <= 1.1 * rep.analytic_min
    assert rep.chips == -(-rep.crossbars // 64)
    layers = ctx.tiling.layers
    assert len(layers) == 54  # 53 convolutions and the classifier
    assert sum(lay.crossbars for lay in layers) == rep.crossbars


def test_tiles_of_one_layer_with_the_same_weights_share_a_crossbar():
    """Two uses of one weight under one layer name (an unrolled recurrent layer's steps) take one
    crossbar; a tile of the same name and index but other weights takes its own."""
    src = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x2xf32>) -> (tensor<1x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %v = nn.constant() {value = dense<[1.0, 2.0, 3.0, 5.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %a = cim.mvm(%x, %w) {layer = "rnn.recurrent"} : tensor<1x2xf32>
    %b = cim.mvm(%a, %w) {layer = "rnn.recurrent"} : tensor<1x2xf32>
    %c = cim.mvm(%b, %v) {layer = "rnn.recurrent"} : tensor<1x2xf32>
    return(%c)
  }
}
"""
    module, ctx = _placed("tile{rows=4,cols=4},place{cores=4,crossbars_per_core=1}", src)
    tiles = [op for op in module.walk() if op.name == "cim.xbar_mvm"]
    assert [(t.attrs["layer"], t.attrs["core"]) for t in tiles] == [
        ("rnn.recurrent", 0), ("rnn.recurrent", 0), ("rnn.recurrent#1", 1)]
    assert ctx.placement.crossbars == 2
    # the same name and tile index with other weights (hand-written IR) is not shared
    renamed = src.replace('%c = cim.mvm(%b, %v) {layer = "rnn.recurrent"}',
                          '%c = cim.mvm(%b, %v) {layer = "other"}')
    module = parse_module(renamed)
    run_pipeline(module, "tile{rows=4,cols=4}")
    for op in module.walk():
        if op.attrs.get("layer") == "other":
            op.attrs["layer"] = "rnn.recurrent"
    run_pipeline(module, "place{cores=4,crossbars_per_core=1}")
    assert [op.attrs["core"] for op in module.walk() if op.name == "cim.xbar_mvm"] == [0, 0, 1]
