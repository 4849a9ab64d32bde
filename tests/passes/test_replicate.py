"""Pass "replicate": text in, text out; copies of a layer on spare cores split its positions
(an im2col's input rows with their padding, or a slice of the layer's input) and give the same
outputs bit for bit; mode=none is the identity; copies are distinct crossbars; what it
refuses."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import PassError
from cimc.ir import parse_module
from cimc.ir.interpreter import run
from cimc.ir.printer import to_text
from cimc.passes import PassContext, run_pipeline
from cimc.passes.tile import layer_stats
from cimc.testing import check_pass, random_args

# A 3x3 convolution with padding 1 on a 4x4 image: 16 positions on one crossbar.
CONV = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x1x4x4xf32>) -> (tensor<1x4x4x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %w = nn.constant() {value = dense<[-1.0, -0.875, -0.75, -0.625, -0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125] : tensor<9x2xf32>>} : tensor<9x2xf32>
    %p = cim.im2col(%x) {dilations = [1, 1], kernel_shape = [3, 3], layer = "conv", pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x4x4x9xf32>
    %y = cim.mvm(%p, %w) {layer = "conv"} : tensor<1x4x4x2xf32>
    return(%y)
  }
}
"""

MAP = "tile{rows=16,cols=16},place{cores=3,crossbars_per_core=1}," \
      "quantize{max_level=0,dac_bits=0,adc_bits=0}"

# Two spare cores: one copy (a third copy would not shrink the largest chunk of the 4 output
# rows; four need three spare cores). Each copy cuts the input rows its two output rows read,
# with the padding they need (top for the first, bottom for the second), and runs its own
# im2col on its own core; the outputs are concatenated along the rows on the original's core.
CONV_REPLICATED = """module attributes {chips = 1, cores_per_chip = 3, stage = "cim"} {
  func @main(%0: tensor<1x1x4x4xf32>) -> (tensor<1x4x4x2xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y"]} {
    %1 = nn.slice(%0) {axes = [2], chip = 0, core = 0, ends = [3], layer = "conv", starts = [0], steps = [1]} : tensor<1x1x3x4xf32>
    %2 = cim.im2col(%1) {chip = 0, core = 0, dilations = [1, 1], kernel_shape = [3, 3], layer = "conv", pads = [1, 1, 0, 1], strides = [1, 1]} : tensor<1x2x4x9xf32>
    %3 = nn.slice(%0) {axes = [2], chip = 0, core = 0, ends = [4], layer = "conv", starts = [1], steps = [1]} : tensor<1x1x3x4xf32>
    %4 = cim.im2col(%3) {chip = 0, core = 1, dilations = [1, 1], kernel_shape = [3, 3], layer = "conv", pads = [0, 1, 1, 1], strides = [1, 1]} : tensor<1x2x4x9xf32>
    %5 = cim.xbar_mvm(%2) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 0, dac_bits = 0, dac_range = 0.0, layer = "conv", levels = dense<[-1.0, -0.875, -0.75, -0.625, -0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125] : tensor<9x2xf32>>, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [0, 0], utilisation = 0.070312, weight_shape = [9, 2], xbar = 0} : tensor<1x2x4x2xf32>
    %6 = cim.xbar_mvm(%4) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 1, dac_bits = 0, dac_range = 0.0, layer = "conv", levels = dense<[-1.0, -0.875, -0.75, -0.625, -0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125] : tensor<9x2xf32>>, replica = 1, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [0, 0], utilisation = 0.070312, weight_shape = [9, 2], xbar = 0} : tensor<1x2x4x2xf32>
    %7 = nn.concat(%5, %6) {axis = 1, chip = 0, core = 0, layer = "conv"} : tensor<1x4x4x2xf32>
    return(%7)
  }
}
"""

# A layer over a sequence of 5 vectors, two row-block tiles (on cores 0 and 1) with a
# partial-sum add: the copy mirrors both cores (2 and 3) and works on a slice of the input.
SEQ = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x5x4xf32>) -> (tensor<1x5x3xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %w = nn.constant() {value = dense<[1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0, 3.0, 0.5, 1.0, -1.0] : tensor<4x3xf32>>} : tensor<4x3xf32>
    %h = nn.relu(%x) : tensor<1x5x4xf32>
    %y = cim.mvm(%h, %w) {layer = "fc"} : tensor<1x5x3xf32>
    return(%y)
  }
}
"""

SEQ_REPLICATED = """module attributes {chips = 1, cores_per_chip = 4, stage = "cim"} {
  func @main(%0: tensor<1x5x4xf32>) -> (tensor<1x5x3xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y"]} {
    %1 = nn.relu(%0) {chip = 0, core = 0} : tensor<1x5x4xf32>
    %2 = nn.slice(%1) {axes = [1], chip = 0, core = 0, ends = [2], layer = "fc", starts = [0], steps = [1]} : tensor<1x2x4xf32>
    %3 = nn.slice(%1) {axes = [1], chip = 0, core = 0, ends = [5], layer = "fc", starts = [2], steps = [1]} : tensor<1x3x4xf32>
    %4 = nn.slice(%2) {axes = [2], chip = 0, core = 0, ends = [2], layer = "fc", starts = [0], steps = [1]} : tensor<1x2x2xf32>
    %5 = nn.slice(%2) {axes = [2], chip = 0, core = 0, ends = [4], layer = "fc", starts = [2], steps = [1]} : tensor<1x2x2xf32>
    %6 = cim.xbar_mvm(%4) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 0, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[1.0, -1.0, 0.5, 2.0, 0.0, 1.0] : tensor<2x3xf32>>, scale = dense<[1.0, 1.0, 1.0] : tensor<3xf32>>, tile = [0, 0], utilisation = 0.75, weight_shape = [4, 3], xbar = 0} : tensor<1x2x3xf32>
    %7 = cim.xbar_mvm(%5) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 1, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[-2.0, 1.0, 3.0, 0.5, 1.0, -1.0] : tensor<2x3xf32>>, scale = dense<[1.0, 1.0, 1.0] : tensor<3xf32>>, tile = [1, 0], utilisation = 0.75, weight_shape = [4, 3], xbar = 0} : tensor<1x2x3xf32>
    %8 = nn.add(%6, %7) {chip = 0, core = 0, layer = "fc"} : tensor<1x2x3xf32>
    %9 = nn.slice(%3) {axes = [2], chip = 0, core = 0, ends = [2], layer = "fc", starts = [0], steps = [1]} : tensor<1x3x2xf32>
    %10 = nn.slice(%3) {axes = [2], chip = 0, core = 0, ends = [4], layer = "fc", starts = [2], steps = [1]} : tensor<1x3x2xf32>
    %11 = cim.xbar_mvm(%9) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 2, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[1.0, -1.0, 0.5, 2.0, 0.0, 1.0] : tensor<2x3xf32>>, replica = 1, scale = dense<[1.0, 1.0, 1.0] : tensor<3xf32>>, tile = [0, 0], utilisation = 0.75, weight_shape = [4, 3], xbar = 0} : tensor<1x3x3xf32>
    %12 = cim.xbar_mvm(%10) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 3, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[-2.0, 1.0, 3.0, 0.5, 1.0, -1.0] : tensor<2x3xf32>>, replica = 1, scale = dense<[1.0, 1.0, 1.0] : tensor<3xf32>>, tile = [1, 0], utilisation = 0.75, weight_shape = [4, 3], xbar = 0} : tensor<1x3x3xf32>
    %13 = nn.add(%11, %12) {chip = 0, core = 2, layer = "fc"} : tensor<1x3x3xf32>
    %14 = nn.concat(%8, %13) {axis = 1, chip = 0, core = 2, layer = "fc"} : tensor<1x5x3xf32>
    return(%14)
  }
}
"""

# A convolution with its bias, transpose, activation and 2x2 pooling: each copy runs them on
# its own chunk (rows in multiples of the pool's stride) and the pooled chunks are concatenated.
CHAIN = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x1x6x6xf32>) -> (tensor<1x2x2x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %w = nn.constant() {value = dense<[-1.0, -0.875, -0.75, -0.625, -0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125] : tensor<9x2xf32>>} : tensor<9x2xf32>
    %b = nn.constant() {value = dense<[0.5, -0.25] : tensor<2xf32>>} : tensor<2xf32>
    %p = cim.im2col(%x) {dilations = [1, 1], kernel_shape = [3, 3], layer = "conv", pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x4x4x9xf32>
    %m = cim.mvm(%p, %w) {layer = "conv"} : tensor<1x4x4x2xf32>
    %a = nn.add(%m, %b) {layer = "conv"} : tensor<1x4x4x2xf32>
    %t = nn.transpose(%a) {layer = "conv", perm = [0, 3, 1, 2]} : tensor<1x2x4x4xf32>
    %r = nn.relu(%t) : tensor<1x2x4x4xf32>
    %y = nn.max_pool(%r) {ceil_mode = false, dilations = [1, 1], kernel_shape = [2, 2], pads = [0, 0, 0, 0], strides = [2, 2]} : tensor<1x2x2x2xf32>
    return(%y)
  }
}
"""

CHAIN_REPLICATED = """module attributes {chips = 1, cores_per_chip = 3, stage = "cim"} {
  func @main(%0: tensor<1x1x6x6xf32>) -> (tensor<1x2x2x2xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y"]} {
    %1 = nn.constant() {value = dense<[0.5, -0.25] : tensor<2xf32>>} : tensor<2xf32>
    %2 = nn.slice(%0) {axes = [2], chip = 0, core = 0, ends = [4], layer = "conv", starts = [0], steps = [1]} : tensor<1x1x4x6xf32>
    %3 = cim.im2col(%2) {chip = 0, core = 0, dilations = [1, 1], kernel_shape = [3, 3], layer = "conv", pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x4x9xf32>
    %4 = nn.slice(%0) {axes = [2], chip = 0, core = 0, ends = [6], layer = "conv", starts = [2], steps = [1]} : tensor<1x1x4x6xf32>
    %5 = cim.im2col(%4) {chip = 0, core = 1, dilations = [1, 1], kernel_shape = [3, 3], layer = "conv", pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x4x9xf32>
    %6 = cim.xbar_mvm(%3) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 0, dac_bits = 0, dac_range = 0.0, layer = "conv", levels = dense<[-1.0, -0.875, -0.75, -0.625, -0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125] : tensor<9x2xf32>>, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [0, 0], utilisation = 0.070312, weight_shape = [9, 2], xbar = 0} : tensor<1x2x4x2xf32>
    %7 = nn.add(%6, %1) {chip = 0, core = 0, layer = "conv"} : tensor<1x2x4x2xf32>
    %8 = nn.transpose(%7) {chip = 0, core = 0, layer = "conv", perm = [0, 3, 1, 2]} : tensor<1x2x2x4xf32>
    %9 = nn.relu(%8) {chip = 0, core = 0} : tensor<1x2x2x4xf32>
    %10 = nn.max_pool(%9) {ceil_mode = false, chip = 0, core = 0, dilations = [1, 1], kernel_shape = [2, 2], pads = [0, 0, 0, 0], strides = [2, 2]} : tensor<1x2x1x2xf32>
    %11 = cim.xbar_mvm(%5) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 1, dac_bits = 0, dac_range = 0.0, layer = "conv", levels = dense<[-1.0, -0.875, -0.75, -0.625, -0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125] : tensor<9x2xf32>>, replica = 1, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [0, 0], utilisation = 0.070312, weight_shape = [9, 2], xbar = 0} : tensor<1x2x4x2xf32>
    %12 = nn.add(%11, %1) {chip = 0, core = 1, layer = "conv"} : tensor<1x2x4x2xf32>
    %13 = nn.transpose(%12) {chip = 0, core = 1, layer = "conv", perm = [0, 3, 1, 2]} : tensor<1x2x2x4xf32>
    %14 = nn.relu(%13) {chip = 0, core = 1} : tensor<1x2x2x4xf32>
    %15 = nn.max_pool(%14) {ceil_mode = false, chip = 0, core = 1, dilations = [1, 1], kernel_shape = [2, 2], pads = [0, 0, 0, 0], strides = [2, 2]} : tensor<1x2x1x2xf32>
    %16 = nn.concat(%10, %15) {axis = 2, chip = 0, core = 0, layer = "conv"} : tensor<1x2x2x2xf32>
    return(%16)
  }
}
"""

SEQ_MAP = "tile{rows=2,cols=4},place{cores=4,crossbars_per_core=1}," \
          "quantize{max_level=0,dac_bits=0,adc_bits=0}"


def _compiled(src: str, spec: str):
    ctx = PassContext()
    module = parse_module(src)
    run_pipeline(module, spec, ctx)
    return module, ctx


def _same_outputs_bit_for_bit(src: str, mapping: str, seed: int = 0) -> None:
    plain, _ = _compiled(src, mapping)
    copied, _ = _compiled(src, mapping + ",replicate")
    args = random_args(plain, seed)
    for name, want in run(plain, args).items():
        np.testing.assert_array_equal(run(copied, args)[name], want, err_msg=name)


def test_copies_of_a_convolution_cut_the_im2col_input_rows():
    check_pass(CONV, MAP + ",replicate", CONV_REPLICATED)
    _same_outputs_bit_for_bit(CONV, MAP)


def test_copies_of_a_layer_of_several_cores_mirror_its_cores():
    check_pass(SEQ, SEQ_MAP + ",replicate", SEQ_REPLICATED)
    _same_outputs_bit_for_bit(SEQ, SEQ_MAP)


def test_copies_run_the_ops_that_keep_positions_apart():
    check_pass(CHAIN, MAP + ",replicate", CHAIN_REPLICATED)
    _same_outputs_bit_for_bit(CHAIN, MAP)


def test_a_pool_that_mixes_chunks_runs_after_the_concat():
    src = CHAIN.replace("kernel_shape = [2, 2], pads = [0, 0, 0, 0], strides = [2, 2]",
                        "kernel_shape = [3, 3], pads = [0, 0, 0, 0], strides = [1, 1]")
    module, ctx = _compiled(src, MAP + ",replicate")
    names = [op.name for op in module.main.body.ops]
    assert names[-3:] == ["nn.concat", "nn.max_pool", "return"]
    assert ctx.replication.layers[0].copies == 2
    _same_outputs_bit_for_bit(src, MAP)


def test_summary_and_placement():
    module, ctx = _compiled(SEQ, SEQ_MAP + ",replicate")
    rep = ctx.replication
    assert (rep.chips, rep.spare_cores, rep.crossbars_before, rep.crossbars_after) == (1, 2, 2, 4)
    (lay,) = rep.layers
    assert (lay.name, lay.copies, lay.crossbars_before, lay.crossbars_after) == ("fc", 2, 2, 4)
    assert (lay.vectors, lay.vectors_per_copy, lay.axis) == (5, 3, 1)
    assert lay.cores == ((2, 0), (3, 1)) and rep.fold == {2: 0, 3: 1}
    assert rep.to_dict()["layers"][0]["cores"] == [[2, 0], [3, 1]]
    assert ctx.placement.crossbars == 4 and ctx.placement.cores_with_crossbars == 4
    assert module.attrs["chips"] == 1  # never a chip more


def test_none_is_the_identity():
    plain, _ = _compiled(CONV, MAP)
    check_pass(CONV, MAP + ",replicate{mode=none}", to_text(plain, inline_limit=1 << 30))
    _, ctx = _compiled(CONV, MAP + ",replicate{mode=none}")
    assert ctx.replication is None


def test_no_spare_core_changes_nothing_and_says_so():
    spec = MAP.replace("cores=3", "cores=1")
    plain, _ = _compiled(CONV, spec)
    copied, ctx = _compiled(CONV, spec + ",replicate")
    assert to_text(copied) == to_text(plain)
    assert ctx.replication.layers == () and ctx.replication.spare_cores == 0


def test_copies_are_distinct_crossbars_even_when_placed_again():
    module, _ = _compiled(CONV, MAP + ",replicate")
    (stats,) = layer_stats(module.main, None)
    assert stats.crossbars == 2 and stats.cores == (0, 1)
    run_pipeline(module, "place{cores=3,crossbars_per_core=1}", PassContext())
    (stats,) = layer_stats(module.main, None)
    assert stats.crossbars == 2  # place does not share a copy's crossbar with its original


def test_a_spare_core_on_another_chip():
    """Three one-tile layers on chips of two cores: the last chip has a spare core, which the
    first layer gets (without a target's costs, the chip link costs nothing); the module stays
    on its two chips and computes the same."""
    body = CONV.replace("%y = cim.mvm(%p, %w) {layer = \"conv\"}", "%a = cim.mvm(%p, %w) {layer = \"conv\"}")
    extra = """%v = nn.constant() {value = dense<[1.0, -1.0, 0.5, 2.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %b = cim.mvm(%a, %v) {layer = "fc2"} : tensor<1x4x4x2xf32>
    %y = cim.mvm(%b, %v) {layer = "fc3"} : tensor<1x4x4x2xf32>
    return(%y)"""
    src = body.replace("return(%y)", extra)
    spec = MAP.replace("cores=3", "cores=2") + ",replicate"
    module, ctx = _compiled(src, spec)
    assert module.attrs["chips"] == 2 and ctx.replication.spare_cores == 1
    (lay,) = ctx.replication.layers
    assert (lay.name, lay.copies, lay.cores) == ("conv", 2, ((3, 0),))
    copy = next(op for op in module.walk() if op.attrs.get("replica") == 1)
    assert (copy.attrs["chip"], copy.attrs["core"]) == (1, 3)
    _same_outputs_bit_for_bit(src, MAP.replace("cores=3", "cores=2"))


def test_refusals():
    with pytest.raises(PassError, match="mode='some'; use one of auto, none"):
        _compiled(CONV, MAP + ",replicate{mode=some}")
    with pytest.raises(PassError, match="run replicate before schedule"):
        _compiled(SEQ, SEQ_MAP + ",schedule,replicate")
    with pytest.raises(PassError, match="'replicate' needs 'quantize' to run before it"):
        _compiled(CONV, "tile{rows=16,cols=16},place{cores=3,crossbars_per_core=1},replicate")


def test_layers_without_positions_are_left_alone():
    """A gemm on one vector per sample has nothing to split."""
    src = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x4xf32>) -> (tensor<1x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0] : tensor<4x2xf32>>} : tensor<4x2xf32>
    %y = cim.mvm(%x, %w) {layer = "fc"} : tensor<1x2xf32>
    return(%y)
  }
}
"""
    module, ctx = _compiled(src, MAP + ",replicate")
    assert ctx.replication.layers == ()
    assert not any("replica" in op.attrs for op in module.walk())


def test_copies_that_save_too_little_are_not_made(monkeypatch):
    """Layer a (200 vectors on two cores) cannot get a copy from the one spare core; layer b
    (2 vectors) could, but would save 1 of the 202 crossbar reads: under MIN_SAVING."""
    src = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x200x4xf32>, %z: tensor<1x2x2xf32>) -> (tensor<1x200x3xf32>, tensor<1x2x2xf32>) attributes {input_names = ["x", "z"], output_names = ["a", "b"]} {
    %w = nn.constant() {value = dense<[1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -2.0, 1.0, 3.0, 0.5, 1.0, -1.0] : tensor<4x3xf32>>} : tensor<4x3xf32>
    %v = nn.constant() {value = dense<[1.0, -1.0, 0.5, 2.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %a = cim.mvm(%x, %w) {layer = "a"} : tensor<1x200x3xf32>
    %b = cim.mvm(%z, %v) {layer = "b"} : tensor<1x2x2xf32>
    return(%a, %b)
  }
}
"""
    spec = SEQ_MAP + ",replicate"
    _, ctx = _compiled(src, spec)
    assert ctx.replication.spare_cores == 1 and ctx.replication.layers == ()
    monkeypatch.setattr("cimc.passes.replicate.MIN_SAVING", 0.0)
    _, ctx = _compiled(src, spec)
    assert [(lay.name, lay.copies) for lay in ctx.replication.layers] == [("b", 2)]
