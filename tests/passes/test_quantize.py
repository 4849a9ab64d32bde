"""Pass "quantize": weights to conductance levels (per column), DAC/ADC ranges from calibration
data; the quantised IR's interpreter semantics against the IR before the pass (equal for the
ideal target, within quantisation error otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError, PassError
from cimc.ir import parse_module
from cimc.ir.core import Builder, Func, Module
from cimc.ir.interpreter import run
from cimc.ops.xbar import adc, dac_codes
from cimc.ops.registry import lookup
from cimc.ir.types import TensorType
from cimc.passes import PassContext, run_pipeline
from cimc.passes.quantize import nonnegative_values, quantize_weights
from cimc.targets import Target, load_target
from cimc.testing import check_pass

TILE = """module attributes {stage = "cim"} {
  func @main(%x: tensor<2x3xf32>) -> (tensor<2x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %y = cim.xbar_mvm(%x) {adc_bits = 0, adc_range = 0.0, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[1.0, -0.5, 0.25, 2.0, -3.5, 0.0] : tensor<3x2xf32>>, scale = dense<[1.0, 1.0] : tensor<2xf32>>, tile = [0, 0]} : tensor<2x2xf32>
    return(%y)
  }
}
"""

# Column 0: max |w| = 3.5 -> scale 0.5, levels [2, 0 (0.5 rounds to even), -7].
# Column 1: max |w| = 2 -> scale 2/7, levels [-2 (-1.75), 7, 0].
TILE_Q7 = """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x3xf32>) -> (tensor<2x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %1 = cim.xbar_mvm(%0) {adc_bits = 0, adc_range = 0.0, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[2, -2, 0, 7, -7, 0] : tensor<3x2xi8>>, scale = dense<[0.5, 0.2857143] : tensor<2xf32>>, tile = [0, 0]} : tensor<2x2xf32>
    return(%1)
  }
}
"""


def test_weights_map_per_column_to_the_top_level():
    # the quantised weights differ from the originals by up to half a step (0.25 -> 0)
    check_pass(TILE, "quantize{max_level=7,dac_bits=0,adc_bits=0}", TILE_Q7, rtol=0, atol=0.6)


def test_quantize_weights_properties():
    w = np.random.default_rng(0).standard_normal((40, 9)).astype(np.float32)
    w[:, 3] = 0.0
    levels, scale = quantize_weights(w, 8, "max")
    assert levels.dtype == np.int8 and scale.dtype == np.float32
    assert np.abs(levels).max() == 8
    live = [c for c in range(9) if c != 3]
    assert (np.abs(levels[:, live]).max(axis=0) == 8).all()  # every column's peak on the top level
    assert (levels[:, 3] == 0).all() and scale[3] == 1.0
    assert np.abs(levels * scale - w).max() <= scale.max() / 2 + 1e-6
    assert quantize_weights(w, 127)[0].dtype == np.int8
    assert quantize_weights(w, 200)[0].dtype == np.int16
    with pytest.raises(CimcError, match="weight_scale='best'; expected one of mse, max"):
        quantize_weights(w, 8, "best")
    same, ones = quantize_weights(w, 0)  # continuous conductances keep the floats
    np.testing.assert_array_equal(same, w)
    np.testing.assert_array_equal(ones, np.ones(9, np.float32))


def test_mse_scaling_clips_outliers_and_never_does_worse_than_max():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 16)).astype(np.float32) * 0.1
    w[0, :8] = 1.0  # one outlier in each of the first 8 columns
    err = {}
    for method in ("max", "mse"):
        levels, scale = quantize_weights(w, 7, method)
        assert np.abs(levels).max() == 7
        err[method] = ((levels * scale - w) ** 2).sum(axis=0)
        if method == "mse":
            assert (scale[:8] < 1.0 / 7 * 0.99).all()  # the outliers are clipped
            assert (levels[0, :8] == 7).all()
    assert (err["mse"] <= err["max"] + 1e-7).all()
    assert err["mse"][:8].sum() < 0.75 * err["max"][:8].sum()


def test_converter_quantisation_is_exact():
    v = np.array([-3.0, -1.0, -0.26, 0.0, 0.24, 0.26, 0.9, 1.0, 5.0], np.float32)
    # 3 signed bits: q = 3 levels per side, step 1/3 over a range of 1
    codes, step = dac_codes(v, 3, 1.0)
    assert step == 1.0 / 3
    np.testing.assert_array_equal(codes, [-3, -3, -1, 0, 1, 1, 3, 3, 3])
    # 2 unsigned bits: 3 steps over [0, 1]; negative inputs clip to 0
    codes, step = dac_codes(v, 2, 1.0, signed=False)
    np.testing.assert_array_equal(codes, [0, 0, 0, 0, 1, 1, 3, 3, 3])
    codes, step = dac_codes(v, 0, 0.0)
    np.testing.assert_array_equal(codes, v)
    assert step == 1.0
    # the ADC: sums of codes worth 0.5 each, 3 signed bits over 1.0, then a gain of 2
    z = np.array([-4.0, -0.5, 0.4, 0.8, 3.0], np.float32)
    np.testing.assert_array_equal(adc(z.copy(), 0.5, 3, 1.0, gain=2.0),
                                  np.array([-3, -1, 1, 1, 3], np.float32) * np.float32(2 / 3))
    np.testing.assert_array_equal(adc(z.copy(), 0.5, 0, 0.0), z * np.float32(0.5))


def test_xbar_mvm_semantics_dac_array_adc():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    levels = rng.integers(-7, 8, (4, 3)).astype(np.int8)
    scale = np.array([0.1, 0.2, 0.05], np.float32)
    attrs = {"levels": levels, "scale": scale, "dac_bits": 4, "dac_range": 1.5, "adc_bits": 5,
             "adc_range": 2.0, "tile": [0, 0]}
    op = lookup("cim.xbar_mvm")
    got = op.evaluate(op.with_defaults(attrs), x)
    xq = np.clip(np.rint(x / np.float32(1.5 / 7)), -7, 7) * np.float32(1.5 / 7)
    y = xq @ (levels.astype(np.float32) * scale)
    want = np.clip(np.rint(y / np.float32(2.0 / 15)), -15, 15) * np.float32(2.0 / 15)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _mlp(seed: int = 0, batch: int = 2) -> Module:
    """x[batch, 20] -> mvm 20x12 -> relu -> mvm 12x5, tiled 8x8 later."""
    rng = np.random.default_rng(seed)
    f = Func("main", [TensorType((batch, 20))], ["x"], ["y"])
    b = Builder(f.body)
    w1 = b.constant((rng.standard_normal((20, 12)) / np.sqrt(20)).astype(np.float32))
    w2 = b.constant((rng.standard_normal((12, 5)) / np.sqrt(12)).astype(np.float32))
    h = b.create("cim.mvm", [f.args[0], w1], {"layer": "fc1"}).result
    r = b.create("nn.relu", [h]).result
    y = b.create("cim.mvm", [r, w2], {"layer": "fc2"}).result
    b.create("return", [y])
    return Module([f], {"stage": "cim"})


def _small(base: str, **crossbar) -> Target:
    data = load_target(base).to_dict()
    data["crossbar"].update(rows=8, cols=8 * data["crossbar"]["cols_per_weight"], **crossbar)
    return Target.from_dict(data, source="test")


def _relative_error(target: Target, calib=None, seed: int = 0) -> tuple[float, Module, PassContext]:
    module = _mlp(seed)
    x = np.random.default_rng(7).standard_normal((2, 20)).astype(np.float32)
    want = run(module, {"x": x})["y"]
    run_pipeline(module, "tile", PassContext(target=target))
    ctx = PassContext(target=target, calib=calib, seed=seed)
    run_pipeline(module, "quantize", ctx)
    got = run(module, {"x": x})["y"]
    return float(np.abs(got - want).max() / np.abs(want).max()), module, ctx


def test_ideal_target_keeps_exact_floats_and_needs_no_calibration():
    err, module, ctx = _relative_error(_small("ideal"))
    assert err < 1e-6
    tiles = [op for op in module.walk() if op.name == "cim.xbar_mvm"]
    assert all(t.attrs["levels"].dtype == np.float32 and t.attrs["dac_bits"] == 0 for t in tiles)
    assert ctx.quantization.calibration.startswith("none needed")


@pytest.mark.parametrize("target,bound", [("hermes64", 0.03), ("pcm40", 0.2), ("neurram48", 0.3)])
def test_quantised_targets_stay_within_quantisation_error(target, bound):
    calib = {"x": np.random.default_rng(3).standard_normal((64, 20)).astype(np.float32)}
    err, module, ctx = _relative_error(_small(target), calib)
    assert 0 < err < bound
    t = load_target(target)
    tiles = [op for op in module.walk() if op.name == "cim.xbar_mvm"]
    for op in tiles:
        assert op.attrs["levels"].dtype.kind == "i"
        assert np.abs(op.attrs["levels"]).max() <= t.max_level
        assert op.attrs["dac_bits"] == t.converters.dac_bits
        assert op.attrs["adc_bits"] == t.converters.adc_bits
        assert op.attrs["dac_range"] > 0 and op.attrs["adc_range"] > 0
    assert ctx.quantization.calibration == "calibration data: 64 sample(s)"


def test_ranges_are_percentiles_of_the_calibration_data():
    module = _mlp()
    run_pipeline(module, "tile{rows=32,cols=32}")
    calib = np.random.default_rng(4).standard_normal((10, 20)).astype(np.float32)
    ctx = PassContext(calib={"x": calib})
    spec = "quantize{max_level=7,dac_bits=6,adc_bits=6,dac_percentile=90.0,adc_percentile=100.0}"
    run_pipeline(module, spec, ctx)
    fc1, fc2 = [op for op in module.walk() if op.name == "cim.xbar_mvm"]
    assert fc1.attrs["dac_range"] == pytest.approx(np.percentile(np.abs(calib), 90.0), rel=1e-6)
    w1 = _mlp().main.body.ops[0].attrs["value"]
    assert fc1.attrs["adc_range"] == pytest.approx(np.abs(calib @ w1).max(), rel=1e-5)
    # fc2 reads relu outputs: an unsigned DAC over [0, range]
    assert fc2.attrs["dac_signed"] is False and "dac_signed" not in fc1.attrs
    assert ctx.quantization.unsigned_dac_tiles == 1


def test_tiles_reading_one_input_share_its_dac_range():
    module = _mlp()
    run_pipeline(module, "tile{rows=32,cols=4}")
    run_pipeline(module, "quantize{max_level=7,dac_bits=6,adc_bits=6}",
                 PassContext(calib={"x": np.ones((4, 20), np.float32)}))
    fc1 = [op for op in module.walk() if op.name == "cim.xbar_mvm" and op.attrs["layer"] == "fc1"]
    assert len(fc1) == 3 and {op.attrs["dac_range"] for op in fc1} == {1.0}


def test_without_calibration_data_a_seeded_default_is_used_and_said():
    module = _mlp()
    run_pipeline(module, "tile{rows=32,cols=32}")
    ctx = PassContext(seed=5)
    with pytest.warns(UserWarning, match="no calibration data"):
        run_pipeline(module, "quantize{max_level=7,dac_bits=8,adc_bits=8}", ctx)
    assert "seeded (seed 5) standard-normal" in ctx.quantization.calibration
    ranges = [op.attrs["dac_range"] for op in module.walk() if op.name == "cim.xbar_mvm"]
    again = _mlp()
    run_pipeline(again, "tile{rows=32,cols=32}")
    with pytest.warns(UserWarning):
        run_pipeline(again, "quantize{max_level=7,dac_bits=8,adc_bits=8}", PassContext(seed=5))
    assert ranges == [op.attrs["dac_range"] for op in again.walk() if op.name == "cim.xbar_mvm"]


@pytest.mark.parametrize("calib,match", [
    ({"input": np.zeros((4, 20), np.float32)}, r"lacks input\(s\) x; it has input"),
    ({"x": np.zeros((4, 21), np.float32)}, r"'x' has shape \[4, 21\]; expected \[N, 20\]"),
    ({"x": np.zeros((1, 20), np.float32)}, r"has 1 sample\(s\); the model's batch is 2"),
])
def test_bad_calibration_data_is_refused_with_what_was_expected(calib, match):
    module = _mlp()
    run_pipeline(module, "tile{rows=32,cols=32}")
    with pytest.raises(PassError, match=match):
        run_pipeline(module, "quantize{max_level=7,dac_bits=8,adc_bits=8}",
                     PassContext(calib=calib))


def test_calibration_samples_are_capped():
    module = _mlp()
    run_pipeline(module, "tile{rows=32,cols=32}")
    ctx = PassContext(calib={"x": np.ones((100, 20), np.float32)})
    run_pipeline(module, "quantize{max_level=7,dac_bits=8,adc_bits=8,calib_samples=10}", ctx)
    assert ctx.quantization.calibration == "calibration data: 10 sample(s)"


def test_bit_slicing_keeps_the_full_integer_and_records_the_slices():
    target = _small("pcm40", levels=4, weight_bits=8, bit_slicing=True)
    assert target.slices == 3 and target.max_level == 127
    calib = {"x": np.random.default_rng(3).standard_normal((64, 20)).astype(np.float32)}
    err, module, _ = _relative_error(target, calib)
    tiles = [op for op in module.walk() if op.name == "cim.xbar_mvm"]
    # 16 physical columns / 2 per weight / 3 slices: two weight columns per crossbar
    assert all(op.attrs["levels"].shape[1] <= 2 and op.attrs["slices"] == 3 for op in tiles)
    assert len(tiles) == 3 * 6 + 2 * 3
    assert max(np.abs(op.attrs["levels"]).max() for op in tiles) == 127
    assert err < 0.05


def test_nonnegative_values_follow_relu_through_moves_and_pooling():
    src = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x1x4x4xf32>) -> (tensor<1x4x4x4xf32>, tensor<1x1x4x4xf32>) {
    %r = nn.relu(%x) : tensor<1x1x4x4xf32>
    %p = nn.max_pool(%r) {ceil_mode = false, dilations = [1, 1], kernel_shape = [2, 2], pads = [1, 1, 1, 1], strides = [1, 1]} : tensor<1x1x5x5xf32>
    %c = cim.im2col(%p) {dilations = [1, 1], kernel_shape = [2, 2], pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x4x4x4xf32>
    %n = nn.neg(%r) : tensor<1x1x4x4xf32>
    return(%c, %n)
  }
}
"""
    func = parse_module(src).main
    ops = {op.name: op for op in func.body.ops}
    nonneg = nonnegative_values(func)
    assert {ops[n].result for n in ("nn.relu", "nn.max_pool", "cim.im2col")} <= nonneg
    assert ops["nn.neg"].result not in nonneg and func.args[0] not in nonneg


def test_without_target_or_options_quantize_says_what_it_needs():
    with pytest.raises(CimcError, match=r"needs a target .* quantize\{max_level=7"):
        run_pipeline(parse_module(TILE), "quantize")


def _ranges(module: Module) -> list[tuple[float, float]]:
    return [(op.attrs["dac_range"], op.attrs["adc_range"])
            for op in module.walk() if op.name == "cim.xbar_mvm"]


def _batch1_model(pin_batch: bool) -> Module:
    """Compiled for batch 1, with a reshape that spells the batch out; ``pin_batch`` adds a sum
    over the batch axis, which no larger batch can run through."""
    rng = np.random.default_rng(0)
    f = Func("main", [TensorType((1, 2, 10))], ["x"], ["y"])
    b = Builder(f.body)
    v = b.create("nn.reshape", [f.args[0]], {"shape": [1, 20]}).result
    if pin_batch:
        v = b.create("nn.reduce_sum", [v], {"axes": [0], "keepdims": True}).result
    w = b.constant((rng.standard_normal((20, 6)) / 4).astype(np.float32))
    b.create("return", [b.create("cim.mvm", [v, w]).result])
    return Module([f], {"stage": "cim"})


@pytest.mark.parametrize("pin_batch", [False, True])
def test_calibration_in_larger_batches_gives_the_same_ranges(pin_batch, monkeypatch):
    import cimc.passes.quantize as q

    sizes: list[int] = []
    observe = q._observe

    def spy(func, args, *rest):
        sizes.append(args[0].shape[0])
        return observe(func, args, *rest)

    monkeypatch.setattr(q, "_observe", spy)
    calib = {"x": np.random.default_rng(9).standard_normal((40, 2, 10)).astype(np.float32)}
    spec = "quantize{max_level=7,dac_bits=8,adc_bits=8,dac_percentile=99.0,calib_batch=%d}"
    got = []
    for size in (16, 1):
        sizes.clear()
        module = _batch1_model(pin_batch)
        run_pipeline(module, "tile{rows=32,cols=32}")
        run_pipeline(module, spec % size, PassContext(calib=calib))
        got.append(_ranges(module))
        if size == 1:
            assert sizes == [1] * 40
        elif pin_batch:  # the first batch of 16 fails the shape check: one sample at a time
            assert sizes == [16] + [1] * 40
        else:
            assert sizes == [16, 16, 8]
    assert got[0] == got[1]
