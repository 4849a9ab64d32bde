"""Pass "schedule": text in, text out; after it every op reads only values of its own core (or
constants); one transfer per value and destination core; transfers across chips are counted."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cimc.errors import PassError
from cimc.ir import parse_module
from cimc.ir.core import Builder, Func, Module
from cimc.ir.interpreter import run
from cimc.ir.types import TensorType
from cimc.passes import PassContext, run_pipeline
from cimc.passes.schedule import value_homes
from cimc.testing import check_pass

PLACED = """module attributes {chips = 2, cores_per_chip = 2, stage = "cim"} {
  func @main(%x: tensor<1x4xf32>) -> (tensor<1x4xf32>, tensor<1x4xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y", "z"]} {
    %k = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<4xf32>>} : tensor<4xf32>
    %a = nn.relu(%x) {chip = 0, core = 0} : tensor<1x4xf32>
    %b = nn.add(%a, %k) {chip = 0, core = 1} : tensor<1x4xf32>
    %c = nn.add(%a, %b) {chip = 1, core = 2} : tensor<1x4xf32>
    %d = nn.add(%x, %c) {chip = 1, core = 2} : tensor<1x4xf32>
    %e = nn.add(%a, %k) {chip = 0, core = 1} : tensor<1x4xf32>
    return(%d, %e)
  }
}
"""

# %a moves once to each of cores 1 and 2 (its second use on core 1 reuses the first transfer),
# right after its definition; the input x moves first; the constant %k is never moved.
SCHEDULED = """module attributes {chips = 2, cores_per_chip = 2, stage = "cim"} {
  func @main(%0: tensor<1x4xf32>) -> (tensor<1x4xf32>, tensor<1x4xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y", "z"]} {
    %1 = cim.transfer(%0) {chip = 1, core = 2, from = 0, to = 2} : tensor<1x4xf32>
    %2 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<4xf32>>} : tensor<4xf32>
    %3 = nn.relu(%0) {chip = 0, core = 0} : tensor<1x4xf32>
    %4 = cim.transfer(%3) {chip = 0, core = 1, from = 0, to = 1} : tensor<1x4xf32>
    %5 = cim.transfer(%3) {chip = 1, core = 2, from = 0, to = 2} : tensor<1x4xf32>
    %6 = nn.add(%4, %2) {chip = 0, core = 1} : tensor<1x4xf32>
    %7 = cim.transfer(%6) {chip = 1, core = 2, from = 1, to = 2} : tensor<1x4xf32>
    %8 = nn.add(%5, %7) {chip = 1, core = 2} : tensor<1x4xf32>
    %9 = nn.add(%1, %8) {chip = 1, core = 2} : tensor<1x4xf32>
    %10 = nn.add(%4, %2) {chip = 0, core = 1} : tensor<1x4xf32>
    return(%9, %10)
  }
}
"""


# An im2col (C = 2, a 2x2 kernel: 8 entries per patch) cut into rows 0..4 and 5..7 for tiles on
# cores 1 and 2 (the cut splits a kernel position's channels).
TILED = """module attributes {chips = 1, cores_per_chip = 4, stage = "cim"} {
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y"]} {
    %p = cim.im2col(%x) {chip = 0, core = 0, dilations = [1, 1], kernel_shape = [2, 2], layer = "conv", pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x8xf32>
    %a = nn.slice(%p) {axes = [3], chip = 0, core = 0, ends = [5], layer = "conv", starts = [0], steps = [1]} : tensor<1x2x2x5xf32>
    %b = nn.slice(%p) {axes = [3], chip = 0, core = 0, ends = [8], layer = "conv", starts = [5], steps = [1]} : tensor<1x2x2x3xf32>
    %ya = cim.xbar_mvm(%a) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 1, dac_bits = 0, dac_range = 0.0, layer = "conv", levels = dense<[-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0] : tensor<5x2xf32>>, scale = dense<[1.0, 0.5] : tensor<2xf32>>, tile = [0, 0], xbar = 0} : tensor<1x2x2x2xf32>
    %yb = cim.xbar_mvm(%b) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 2, dac_bits = 0, dac_range = 0.0, layer = "conv", levels = dense<[0.0, 1.0, 0.0, 1.0, 0.0, 1.0] : tensor<3x2xf32>>, scale = dense<[1.0, 0.5] : tensor<2xf32>>, tile = [1, 0], xbar = 0} : tensor<1x2x2x2xf32>
    %y = nn.add(%ya, %yb) {chip = 0, core = 1, layer = "conv"} : tensor<1x2x2x2xf32>
    return(%y)
  }
}
"""

# Each core makes its own rows from the input, which travels instead of the patches.
SPLIT = """module attributes {chips = 1, cores_per_chip = 4, stage = "cim"} {
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y"]} {
    %1 = cim.transfer(%0) {chip = 0, core = 1, from = 0, to = 1} : tensor<1x2x3x3xf32>
    %2 = cim.transfer(%0) {chip = 0, core = 2, from = 0, to = 2} : tensor<1x2x3x3xf32>
    %3 = cim.im2col(%1) {chip = 0, core = 1, dilations = [1, 1], kernel_shape = [2, 2], layer = "conv", pads = [0, 0, 0, 0], rows = [0, 5], strides = [1, 1]} : tensor<1x2x2x5xf32>
    %4 = cim.im2col(%2) {chip = 0, core = 2, dilations = [1, 1], kernel_shape = [2, 2], layer = "conv", pads = [0, 0, 0, 0], rows = [5, 8], strides = [1, 1]} : tensor<1x2x2x3xf32>
    %5 = cim.xbar_mvm(%3) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 1, dac_bits = 0, dac_range = 0.0, layer = "conv", levels = dense<[-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0] : tensor<5x2xf32>>, scale = dense<[1.0, 0.5] : tensor<2xf32>>, tile = [0, 0], xbar = 0} : tensor<1x2x2x2xf32>
    %6 = cim.xbar_mvm(%4) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 2, dac_bits = 0, dac_range = 0.0, layer = "conv", levels = dense<[0.0, 1.0, 0.0, 1.0, 0.0, 1.0] : tensor<3x2xf32>>, scale = dense<[1.0, 0.5] : tensor<2xf32>>, tile = [1, 0], xbar = 0} : tensor<1x2x2x2xf32>
    %7 = cim.transfer(%6) {chip = 0, core = 1, from = 2, to = 1} : tensor<1x2x2x2xf32>
    %8 = nn.add(%5, %7) {chip = 0, core = 1, layer = "conv"} : tensor<1x2x2x2xf32>
    return(%8)
  }
}
"""


def test_an_im2col_whose_row_blocks_feed_two_cores_runs_on_each_of_them():
    check_pass(TILED, "schedule", SPLIT)


def test_an_im2col_with_another_reader_is_not_split():
    relu = "    %z = nn.relu(%p) {chip = 0, core = 0} : tensor<1x2x2x8xf32>\n"
    src = TILED.replace("    return(%y)", relu + "    return(%y)")
    module = parse_module(src)
    run_pipeline(module, "schedule")
    im2cols = [op for op in module.walk() if op.name == "cim.im2col"]
    assert len(im2cols) == 1 and not im2cols[0].attrs.get("rows")


def test_transfers_are_inserted_after_the_producer_once_per_destination():
    check_pass(PLACED, "schedule", SCHEDULED)


def test_report_counts_transfers_and_chip_crossings():
    ctx = PassContext()
    run_pipeline(parse_module(PLACED), "schedule", ctx)
    rep = ctx.schedule
    assert rep.transfers == 4
    assert rep.chip_transfers == 3  # x, a and b go from chip 0 to chip 1
    assert rep.ops_per_core == {0: 1, 1: 3, 2: 5}


def test_scheduling_twice_adds_nothing():
    module = parse_module(PLACED)
    run_pipeline(module, "schedule,schedule")
    assert sum(op.name == "cim.transfer" for op in module.walk()) == 4


def test_unplaced_module_is_refused():
    src = PLACED.replace("{chip = 0, core = 0} ", "")
    with pytest.raises(PassError, match="nn.relu.* has no core; run the 'place' pass first"):
        run_pipeline(parse_module(src), "schedule")


def _mlp(widths: list[int], seed: int = 0) -> Module:
    rng = np.random.default_rng(seed)
    f = Func("main", [TensorType((3, widths[0]))], ["x"], ["y"])
    b = Builder(f.body)
    v = f.args[0]
    skip = None
    for i, (k, m) in enumerate(itertools.pairwise(widths)):
        w = b.constant((rng.standard_normal((k, m)) / np.sqrt(k)).astype(np.float32))
        v = b.create("cim.mvm", [v, w], {"layer": f"fc{i}"}).result
        if skip is not None and skip.type == v.type:
            v = b.create("nn.add", [v, skip]).result  # a residual connection across cores
        v = b.create("nn.relu", [v]).result
        skip = v
    b.create("return", [v])
    return Module([f], {"stage": "cim"})


def test_every_op_reads_values_of_its_own_core_and_semantics_hold():
    module = _mlp([10, 7, 7, 7, 3])
    x = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    want = run(module, {"x": x})["y"]
    ctx = PassContext()
    run_pipeline(module, "tile{rows=4,cols=3},place{cores=3,crossbars_per_core=2},schedule", ctx)
    np.testing.assert_allclose(run(module, {"x": x})["y"], want, rtol=1e-5, atol=1e-6)
    func = module.main
    homes = value_homes(func, ctx.placement)
    for op in func.body.ops:
        if op.name in ("return", "nn.constant"):
            continue
        for v in op.operands:
            if op.name == "cim.transfer":
                assert homes[v] == op.attrs["from"]
            else:
                assert v not in homes or homes[v] == op.attrs["core"], op
    assert ctx.schedule.transfers > 0
    assert ctx.schedule.chip_transfers > 0  # 13 tiles on chips of 6 crossbars
