"""Pass "tile": text in, text out; the interpreter gives the same outputs before and after; tile
counts against the analytic minimum; grouped weights packed block-diagonally; geometry from the
target (devices per weight, bit slices)."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError, PassError
from cimc.ir import parse_module
from cimc.ir.core import Builder, Func, Module
from cimc.ir.interpreter import run
from cimc.ir.types import TensorType
from cimc.passes import PassContext, run_pipeline
from cimc.passes.tile import Geometry, analytic_minimum, target_geometry, tile_count
from cimc.targets import Target, load_target
from cimc.testing import check_pass

DENSE = """module attributes {stage = "cim"} {
  func @main(%x: tensor<2x5xf32>) -> (tensor<2x3xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0] : tensor<5x3xf32>>} : tensor<5x3xf32>
    %y = cim.mvm(%x, %w) {layer = "fc"} : tensor<2x3xf32>
    return(%y)
  }
}
"""

DENSE_TILED = """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x5xf32>) -> (tensor<2x3xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %1 = nn.slice(%0) {axes = [1], ends = [3], layer = "fc", starts = [0], steps = [1]} : tensor<2x3xf32>
    %2 = nn.slice(%0) {axes = [1], ends = [5], layer = "fc", starts = [3], steps = [1]} : tensor<2x2xf32>
    %3 = cim.xbar_mvm(%1) {adc_bits = 0, adc_range = 0.0, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[1.0, 2.0, 4.0, 5.0, 7.0, 8.0] : tensor<3x2xf32>>, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [0, 0], utilisation = 1.0, weight_shape = [5, 3]} : tensor<2x2xf32>
    %4 = cim.xbar_mvm(%2) {adc_bits = 0, adc_range = 0.0, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[10.0, 11.0, 13.0, 14.0] : tensor<2x2xf32>>, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [1, 0], utilisation = 0.666667, weight_shape = [5, 3]} : tensor<2x2xf32>
    %5 = nn.add(%3, %4) {layer = "fc"} : tensor<2x2xf32>
    %6 = cim.xbar_mvm(%1) {adc_bits = 0, adc_range = 0.0, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[3.0, 6.0, 9.0] : tensor<3x1xf32>>, scale = dense<[1.0] : tensor<1xf32>>, tile = [0, 1], utilisation = 0.5, weight_shape = [5, 3]} : tensor<2x1xf32>
    %7 = cim.xbar_mvm(%2) {adc_bits = 0, adc_range = 0.0, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[12.0, 15.0] : tensor<2x1xf32>>, scale = dense<[1.0] : tensor<1xf32>>, tile = [1, 1], utilisation = 0.333333, weight_shape = [5, 3]} : tensor<2x1xf32>
    %8 = nn.add(%6, %7) {layer = "fc"} : tensor<2x1xf32>
    %9 = nn.concat(%5, %8) {axis = 1, layer = "fc"} : tensor<2x3xf32>
    return(%9)
  }
}
"""


def test_dense_weight_becomes_row_and_column_blocks():
    # 5x3 weights on 3x2 crossbars: row blocks [0:3], [3:5]; column blocks [0:2], [2:3].
    check_pass(DENSE, "tile{rows=3,cols=2}", DENSE_TILED)


def test_weight_that_fits_one_crossbar_needs_no_slice_or_concat():
    out = check_pass(DENSE, "tile{rows=8,cols=8}")
    assert "nn.slice" not in out and "nn.concat" not in out and "nn.add" not in out
    assert out.count("cim.xbar_mvm") == 1
    assert "utilisation = 0.234375" in out  # 15 weights / 64 cells
    assert "nn.constant" not in out  # the weight now lives in the tile


def _module(weight: np.ndarray, x_shape: tuple[int, ...], layer: str = "layer") -> Module:
    """@main(x) = cim.mvm(x, weight)."""
    k = weight.shape[0] * weight.shape[1] if weight.ndim == 3 else weight.shape[0]
    assert x_shape[-1] == k
    f = Func("main", [TensorType(x_shape)], ["x"], ["y"])
    b = Builder(f.body)
    y = b.create("cim.mvm", [f.args[0], b.constant(weight.astype(np.float32))], {"layer": layer})
    b.create("return", [y.result])
    return Module([f], {"stage": "cim"})


def _tile_and_compare(module: Module, spec: str, ctx: PassContext | None = None) -> Module:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(module.main.args[0].type.shape).astype(np.float32)
    want = run(module, {"x": x})["y"]
    run_pipeline(module, spec, ctx)
    got = run(module, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return module


def _tiles(module: Module) -> list:
    return [op for op in module.walk() if op.name == "cim.xbar_mvm"]


@pytest.mark.parametrize("k,m,rows,cols", [(7, 5, 3, 2), (8, 8, 4, 4), (1, 9, 4, 4), (9, 1, 2, 3)])
def test_dense_tiles_cover_the_weight_exactly(k, m, rows, cols):
    w = np.random.default_rng(0).standard_normal((k, m))
    module = _tile_and_compare(_module(w, (3, k)), f"tile{{rows={rows},cols={cols}}}")
    tiles = _tiles(module)
    geo = Geometry(rows, cols)
    assert len(tiles) == analytic_minimum((k, m), geo) == -(-k // rows) * -(-m // cols)
    assert {tuple(t.attrs["tile"]) for t in tiles} == {
        (i, j) for i in range(-(-k // rows)) for j in range(-(-m // cols))}
    assert all(t.attrs["levels"].shape[0] <= rows for t in tiles)
    assert all(t.attrs["levels"].shape[1] <= cols for t in tiles)


def test_depthwise_groups_are_packed_block_diagonally():
    # 6 groups of 2x1 (a depthwise conv's [G, Kg, Mg]) on 4x4 crossbars: 2 groups per crossbar.
    w = np.arange(1, 13, dtype=np.float32).reshape(6, 2, 1)
    ctx = PassContext()
    module = _tile_and_compare(_module(w, (1, 3, 12)), "tile{rows=4,cols=4}", ctx)
    tiles = _tiles(module)
    assert len(tiles) == 3 == analytic_minimum((6, 2, 1), Geometry(4, 4))
    first = tiles[0].attrs
    np.testing.assert_array_equal(first["levels"], [[1, 0], [2, 0], [0, 3], [0, 4]])
    assert first["groups"] == 2 and first["utilisation"] == 4 / 16
    layer = ctx.tiling.layers[0]
    assert layer.groups == 6 and layer.crossbars == 3 and layer.analytic_min == 3


def test_grouped_weight_larger_than_a_crossbar_is_tiled_per_group():
    w = np.random.default_rng(2).standard_normal((2, 5, 3))
    module = _tile_and_compare(_module(w, (4, 10)), "tile{rows=4,cols=2}")
    # each group: 2 row blocks x 2 column blocks
    assert len(_tiles(module)) == 8
    assert all("groups" not in t.attrs for t in _tiles(module))


def test_many_groups_do_not_take_one_crossbar_each():
    w = np.random.default_rng(3).standard_normal((64, 9, 1))  # depthwise 3x3, 64 channels
    ctx = PassContext(target=load_target("hermes64"))
    module = _tile_and_compare(_module(w, (1, 4, 4, 576)), "tile", ctx)
    assert len(_tiles(module)) == 3  # 28 channels per 256x256 crossbar
    assert ctx.tiling.crossbars == ctx.tiling.analytic_min == 3


@pytest.mark.parametrize("shape,rows,cols", [
    ((7, 5), 3, 2), ((8, 8), 4, 4), ((6, 2, 1), 4, 4), ((2, 5, 3), 4, 2), ((64, 9, 1), 256, 256),
    ((5, 3, 2), 7, 5),
])
def test_tile_count_is_the_tilers_count_without_weights(shape, rows, cols):
    w = np.random.default_rng(4).standard_normal(shape)
    x_last = shape[0] * shape[1] if len(shape) == 3 else shape[0]
    module = _tile_and_compare(_module(w, (2, x_last)), f"tile{{rows={rows},cols={cols}}}")
    assert tile_count(shape, Geometry(rows, cols)) == len(_tiles(module))


def _variant(base: str, **crossbar) -> Target:
    data = load_target(base).to_dict()
    data["crossbar"].update(crossbar)
    return Target.from_dict(data, source="test")


def test_geometry_counts_devices_per_weight_and_bit_slices():
    assert target_geometry(load_target("hermes64")) == Geometry(256, 256, 1, 1)
    assert target_geometry(load_target("neurram48")) == Geometry(256, 128, 2, 1)
    sliced = _variant("pcm40", levels=4, weight_bits=8, bit_slicing=True)
    assert sliced.slices == 3  # |q| <= 127 needs three balanced base-7 digits
    assert target_geometry(sliced) == Geometry(256, 42, 2, 3)


@pytest.mark.parametrize("target,tiles", [("hermes64", 2), ("neurram48", 4), ("ideal", 2)])
def test_target_decides_the_tile_grid(target, tiles):
    w = np.random.default_rng(4).standard_normal((300, 200))
    ctx = PassContext(target=load_target(target))
    module = _tile_and_compare(_module(w, (2, 300)), "tile", ctx)
    assert len(_tiles(module)) == tiles == ctx.tiling.analytic_min


def test_options_override_the_target():
    w = np.random.default_rng(5).standard_normal((300, 200))
    ctx = PassContext(target=load_target("hermes64"))
    module = _tile_and_compare(_module(w, (2, 300)), "tile{rows=100,cols=100}", ctx)
    assert len(_tiles(module)) == 6


def test_report_has_per_layer_and_per_tile_utilisation():
    ctx = PassContext()
    module = parse_module(DENSE)
    run_pipeline(module, "tile{rows=3,cols=2}", ctx)
    rep = ctx.tiling
    assert rep.crossbars == 4 and rep.analytic_min == 4
    (layer,) = rep.layers
    assert layer.name == "fc" and layer.weight_shape == (5, 3)
    utils = [t.attrs["utilisation"] for t in _tiles(module)]
    assert utils == pytest.approx([6 / 6, 4 / 6, 3 / 6, 2 / 6])
    assert layer.utilisation == rep.utilisation == pytest.approx(15 / 24)


def test_without_target_or_sizes_tile_says_what_it_needs():
    with pytest.raises(PassError, match=r"needs a target .* tile\{rows=256,cols=256\}"):
        run_pipeline(parse_module(DENSE), "tile")


def test_weight_computed_at_run_time_is_refused():
    src = """module attributes {stage = "cim"} {
  func @main(%x: tensor<2x3xf32>, %w: tensor<3x3xf32>) -> (tensor<2x3xf32>) {
    %y = cim.mvm(%x, %w) : tensor<2x3xf32>
    return(%y)
  }
}
"""
    with pytest.raises(CimcError, match="weight is not a constant"):
        run_pipeline(parse_module(src), "tile{rows=2,cols=2}")


def test_unnamed_layers_get_names_and_two_layers_stay_apart():
    src = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x2xf32>) -> (tensor<1x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %a = cim.mvm(%x, %w) : tensor<1x2xf32>
    %b = cim.mvm(%a, %w) : tensor<1x2xf32>
    return(%b)
  }
}
"""
    ctx = PassContext()
    module = parse_module(src)
    run_pipeline(module, "tile{rows=4,cols=4}", ctx)
    assert [t.attrs["layer"] for t in _tiles(module)] == ["mvm0", "mvm1"]
    assert [lay.name for lay in ctx.tiling.layers] == ["mvm0", "mvm1"]


SHARED = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x2xf32>) -> (tensor<1x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %a = cim.mvm(%x, %w) {layer = "rnn.recurrent"} : tensor<1x2xf32>
    %b = cim.mvm(%a, %w) {layer = "rnn.recurrent"} : tensor<1x2xf32>
    return(%b)
  }
}
"""


def test_one_constant_under_one_layer_name_is_one_layer():
    """The steps of an unrolled recurrent layer: their tiles keep one name and tile index (place
    puts them on one crossbar) and the layer is counted once."""
    ctx = PassContext()
    module = parse_module(SHARED)
    run_pipeline(module, "tile{rows=1,cols=4}", ctx)
    tiles = _tiles(module)
    assert [(t.attrs["layer"], t.attrs["tile"]) for t in tiles] == [
        ("rnn.recurrent", [0, 0]), ("rnn.recurrent", [1, 0])] * 2
    assert [lay.name for lay in ctx.tiling.layers] == ["rnn.recurrent"]
    assert ctx.tiling.crossbars == 2
