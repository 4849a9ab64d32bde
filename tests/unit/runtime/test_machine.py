"""Executing core programs (cimc.runtime.machine via cimc.runtime.load): every instruction,
send/recv across cores, deadlock, input checks, seeds, read noise, drift and its compensation."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from runtime_kit import single_mvm, write_artifact

from cimc.errors import ArtifactError, RuntimeInputError
from cimc.ops.linalg import ROWS, SAMPLES, VECTORS, patches
from cimc.runtime import load
from cimc.runtime.fastpath import PlannedIm2col, mvm_operand

RNG = np.random.default_rng(1234)


def _one_core(tmp_path: Path, body: str, inputs, outputs, weights=None, name="a.cimc",
              target="ideal", xbars: str = "") -> Path:
    prog = ".core 0 chip=0\n" + xbars + body
    return write_artifact(tmp_path / name, {0: prog}, weights or {"const/unused": np.zeros(1)},
                          inputs, outputs, target=target)


# ------------------------------------------------------------------------------ instructions


def test_input_output_and_slice(tmp_path):
    path = _one_core(tmp_path, """
        input  a0, name="x"
        slice  a1, a0, start=1, stop=3
        output a1, name="y"
        output a0, name="z"
        halt
    """.replace("    ", ""), [("x", (2, 2, 5), "f32")], [("y", (2, 2, 2), "f32"),
                                                          ("z", (2, 2, 5), "f32")])
    x = RNG.standard_normal((3, 2, 5)).astype(np.float32)
    out = load(path).run({"x": x})
    assert list(out) == ["y", "z"]
    np.testing.assert_array_equal(out["y"], x[..., 1:3])
    np.testing.assert_array_equal(out["z"], x)


def _im2col_reference(x, k, s, p, d):
    """Naive loops: [N, *O, prod(k)*C], position-major patches."""
    nd = len(k)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p[i], p[nd + i]) for i in range(nd)])
    out_shape = [(xp.shape[2 + i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nd)]
    n, c = x.shape[:2]
    res = np.zeros((n, *out_shape, c * int(np.prod(k))), x.dtype)
    for o in itertools.product(*(range(v) for v in out_shape)):
        vec = []
        for kk in itertools.product(*(range(v) for v in k)):
            for ch in range(c):
                idx = tuple(o[i] * s[i] + kk[i] * d[i] for i in range(nd))
                vec.append(xp[(slice(None), ch, *idx)])
        res[(slice(None), *o)] = np.stack(vec, axis=-1)
    return res


@pytest.mark.parametrize(
    ("shape", "k", "s", "p", "d"),
    [
        ((2, 1, 7, 6), [3, 2], [2, 1], [1, 0, 2, 1], [1, 2]),
        ((1, 1, 5, 5), [5, 5], [1, 1], [0, 0, 0, 0], [1, 1]),
        ((2, 1, 9), [3], [2], [1, 1], [2]),
    ],
)
@pytest.mark.parametrize("layout", [ROWS, SAMPLES])
def test_patch_major_patches_are_read_without_a_copy(shape, k, s, p, d, layout):
    x = RNG.standard_normal(shape).astype(np.float32)
    got = patches(x, k, s, p, d, layout=layout)
    want = _im2col_reference(x, k, s, p, d)
    np.testing.assert_array_equal(got, want)
    m, how = mvm_operand(got, want.shape[-1])  # the product reads the patches without a copy
    assert how in (SAMPLES, ROWS) and np.shares_memory(m, got)
    if x.shape[0] > 1:
        assert how == layout
    m, how = mvm_operand(got[..., 1:3], 2)  # a tile's slice of the patch vector too
    assert np.shares_memory(m, got)


def test_mvm_operand_of_plain_buffers():
    x = RNG.standard_normal((4, 3, 5)).astype(np.float32)
    m, how = mvm_operand(x, 5)
    assert how == VECTORS and m.shape == (12, 5) and np.shares_memory(m, x)


def test_im2col_instruction(tmp_path):
    path = _one_core(tmp_path, """
        input  a0, name="x"
        im2col a1, a0, kernel_shape=[3, 3], strides=[1, 2], pads=[1, 1, 1, 1], dilations=[1, 1]
        output a1, name="y"
        halt
    """.replace("    ", ""), [("x", (1, 2, 5, 6), "f32")], [("y", (1, 5, 3, 18), "f32")])
    x = RNG.standard_normal((4, 2, 5, 6)).astype(np.float32)
    y = load(path).run({"x": x})["y"]
    np.testing.assert_array_equal(y, _im2col_reference(x, [3, 3], [1, 2], [1, 1, 1, 1], [1, 1]))


def test_mvm_ideal_is_exact(tmp_path):
    levels = RNG.standard_normal((30, 7)).astype(np.float32)
    scale = RNG.uniform(0.5, 2, 7).astype(np.float32)
    path = single_mvm(tmp_path / "m.cimc", levels, levels=levels, scale=scale)
    x = RNG.standard_normal((9, 30)).astype(np.float32)
    y = load(path).run({"x": x})["y"]
    np.testing.assert_allclose(y, x @ (levels * scale), rtol=1e-5, atol=1e-6)


def test_mvm_over_positions_keeps_leading_axes(tmp_path):
    w = RNG.standard_normal((6, 4)).astype(np.float32)
    prog = """
        input a0, name="x"
        mvm   a1, a0, xbar=0, dac_bits=0, adc_bits=0
        output a1, name="y"
        halt
    """.replace("    ", "")
    path = _one_core(tmp_path, prog, [("x", (1, 3, 5, 6), "f32")], [("y", (1, 3, 5, 4), "f32")],
                     {"xbar/0/0/levels": w, "xbar/0/0/scale": np.ones(4, np.float32)},
                     xbars=".xbar 0 rows=6 cols=4\n")
    x = RNG.standard_normal((2, 3, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(load(path).run({"x": x})["y"], x @ w, rtol=1e-5, atol=1e-6)


def test_dac_and_adc_quantise_and_clip(tmp_path):
    # Integer weights and DAC step 0.25 (4 bits over ±1.75): every product is exact in float32,
    # so the expected codes are computed exactly. ADC: 6 bits over ±15.5 -> step 0.5.
    w = RNG.integers(-3, 4, (8, 5)).astype(np.float32)
    path = single_mvm(tmp_path / "q.cimc", w, dac=(4, 1.75), adc=(6, 15.5))
    codes = RNG.integers(-9, 10, (50, 8))  # beyond ±7: clipped by the DAC
    x = (codes * 0.25 + RNG.uniform(-0.1, 0.1, codes.shape)).astype(np.float32)
    xq = np.clip(codes, -7, 7) * 0.25
    y = xq @ w
    want = np.clip(np.rint(y / 0.5), -31, 31) * 0.5
    assert (np.abs(y) > 15.5).any() and (want != y).any()  # clipping and rounding both happen
    np.testing.assert_array_equal(load(path).run({"x": x})["y"], want.astype(np.float32))


def test_unsigned_dac(tmp_path):
    w = np.eye(4, dtype=np.float32)
    path = _one_core(tmp_path, "input a0, name=\"x\"\n"
                     "mvm a1, a0, xbar=0, dac_bits=3, dac_range=1.4, dac_signed=false, "
                     "adc_bits=0\noutput a1, name=\"y\"\nhalt\n",
                     [("x", (1, 4), "f32")], [("y", (1, 4), "f32")],
                     {"xbar/0/0/levels": w, "xbar/0/0/scale": np.ones(4, np.float32)},
                     xbars=".xbar 0 rows=4 cols=4\n")
    x = np.array([[-1.0, 0.21, 0.55, 3.0]], np.float32)
    # 3 bits unsigned: 7 steps of 0.2 over [0, 1.4]; negatives clip to 0
    np.testing.assert_allclose(load(path).run({"x": x})["y"], [[0.0, 0.2, 0.6, 1.4]], atol=1e-6)


def test_dop_single_and_multi_result(tmp_path):
    path = _one_core(tmp_path, """
        .const c0 name="bias"
        input a0, name="x"
        dop   a1, a0, c0, op="nn.add"
        dop   a2, a1, op="nn.relu"
        dop   a3, a4, a2, op="nn.split", results=2, axis=1, sizes=[1, 3]
        output a3, name="head"
        output a4, name="tail"
        halt
    """.replace("    ", ""), [("x", (1, 4), "f32")], [("head", (1, 1), "f32"),
                                                     ("tail", (1, 3), "f32")],
        {"const/bias": np.array([1.0, -1.0, 0.5, 0.0], np.float32)})
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    out = load(path).run({"x": x})
    r = np.maximum(x + np.array([1.0, -1.0, 0.5, 0.0], np.float32), 0)
    np.testing.assert_array_equal(out["head"], r[:, :1])
    np.testing.assert_array_equal(out["tail"], r[:, 1:])


def test_reshape_follows_the_run_batch(tmp_path):
    path = _one_core(tmp_path, """
        input a0, name="x"
        dop   a1, a0, op="nn.reshape", shape=[2, 6]
        output a1, name="y"
        halt
    """.replace("    ", ""), [("x", (2, 2, 3), "f32")], [("y", (2, 6), "f32")])
    x = RNG.standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(load(path).run({"x": x})["y"], x.reshape(5, 6))


@pytest.mark.parametrize("op", ["nn.frobnicate", "cim.mvm", "return"])
def test_unknown_op_is_refused_at_load(tmp_path, op):
    path = _one_core(tmp_path, f"input a0, name=\"x\"\ndop a1, a0, op=\"{op}\"\n"
                     "output a1, name=\"y\"\nhalt\n", [("x", (1, 2), "f32")],
                     [("y", (1, 2), "f32")])
    with pytest.raises(ArtifactError, match=rf"core_000.s:3: unknown digital op '{op}'"):
        load(path)


def test_dop_missing_attribute_is_refused_at_load(tmp_path):
    path = _one_core(tmp_path, "input a0, name=\"x\"\ndop a1, a0, op=\"nn.transpose\"\n"
                     "output a1, name=\"y\"\nhalt\n", [("x", (1, 2), "f32")],
                     [("y", (2, 1), "f32")])
    with pytest.raises(ArtifactError, match=r"core_000.s:3: nn.transpose needs attribute"):
        load(path)


def test_shape_error_at_run_names_the_instruction(tmp_path):
    w = np.ones((4, 2), np.float32)
    path = _one_core(tmp_path, "input a0, name=\"x\"\n"
                     "mvm a1, a0, xbar=0, dac_bits=0, adc_bits=0\noutput a1, name=\"y\"\nhalt\n",
                     [("x", (1, 3), "f32")], [("y", (1, 2), "f32")],
                     {"xbar/0/0/levels": w, "xbar/0/0/scale": np.ones(2, np.float32)},
                     xbars=".xbar 0 rows=4 cols=2\n")
    with pytest.raises(ArtifactError, match=r"core_000.s:4: mvm a1, a0.*4 rows.*\[1, 3\]"):
        load(path).run({"x": np.ones((1, 3), np.float32)})


def test_outputs_must_match_manifest(tmp_path):
    path = _one_core(tmp_path, "input a0, name=\"x\"\nhalt\n", [("x", (1, 2), "f32")],
                     [("y", (1, 2), "f32")])
    with pytest.raises(ArtifactError, match="no core program writes graph output"):
        load(path)


# ------------------------------------------------------------------------------ cores


def _two_cores(tmp_path: Path, p0: str, p1: str, **kw) -> Path:
    return write_artifact(tmp_path / "two.cimc", {0: p0, 1: p1}, {"const/u": np.zeros(1)},
                          [("x", (1, 3), "f32")], [("y", (1, 3), "f32")], **kw)


def test_send_recv_fifo_across_cores(tmp_path):
    p0 = """
        .core 0 chip=0
        input  a0, name="x"
        send   a0, to=1
        dop    a1, a0, op="nn.relu"
        send   a1, to=1
        recv   a2, from=1
        output a2, name="y"
        halt
    """
    p1 = """
        .core 1 chip=0
        recv b0, from=0
        recv b1, from=0
        dop  b2, b0, b1, op="nn.sub"
        send b2, to=0
        halt
    """
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    y = load(_two_cores(tmp_path, p0, p1)).run({"x": x})["y"]
    np.testing.assert_array_equal(y, np.minimum(x, 0))


def test_chain_over_three_cores_in_any_order(tmp_path):
    progs = {
        2: ".core 2\nrecv c0, from=1\ndop c1, c0, op=\"nn.neg\"\nsend c1, to=0\nhalt\n",
        1: ".core 1\nrecv b0, from=0\ndop b1, b0, b0, op=\"nn.add\"\nsend b1, to=2\nhalt\n",
        0: ".core 0\ninput a0, name=\"x\"\nsend a0, to=1\nrecv a1, from=2\n"
           "output a1, name=\"y\"\nhalt\n",
    }
    path = write_artifact(tmp_path / "c.cimc", progs, {"const/u": np.zeros(1)},
                          [("x", (1, 3), "f32")], [("y", (1, 3), "f32")])
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(load(path).run({"x": x})["y"], -2 * x)


def test_deadlock_names_cores_and_instructions(tmp_path):
    p0 = (".core 0\ninput a0, name=\"x\"\nrecv a1, from=1\nsend a0, to=1\n"
          "output a1, name=\"y\"\nhalt\n")
    p1 = ".core 1\nrecv b0, from=0\nsend b0, to=0\nhalt\n"
    chip = load(_two_cores(tmp_path, p0, p1))
    with pytest.raises(ArtifactError) as e:
        chip.run({"x": np.zeros((1, 3), np.float32)})
    msg = str(e.value)
    assert msg.startswith("deadlock")
    assert "core 0 waits at core_000.s:3 (recv a1, from=1)" in msg
    assert "core 1 waits at core_001.s:2 (recv b0, from=0)" in msg


def test_send_to_missing_core_is_refused(tmp_path):
    p0 = ".core 0\ninput a0, name=\"x\"\nsend a0, to=9\noutput a0, name=\"y\"\nhalt\n"
    p1 = ".core 1\nhalt\n"
    with pytest.raises(ArtifactError, match=r"core_000.s:3: send names core 9"):
        load(_two_cores(tmp_path, p0, p1))


# ------------------------------------------------------------------------------ inputs


@pytest.fixture
def mvm_chip(tmp_path):
    return load(single_mvm(tmp_path / "i.cimc", np.ones((4, 2), np.float32)))


@pytest.mark.parametrize(
    ("feeds", "needle"),
    [
        ({"z": np.zeros((1, 4), np.float32)}, ("unknown input name(s) 'z'; the model's inputs "
         "are: x [N, 4] float32")),
        ({}, "missing input(s) 'x'"),
        ({"x": np.zeros((2, 5), np.float32)}, "'x' has shape [2, 5], expected [N, 4] float32"),
        ({"x": np.zeros((1, 1, 4), np.float32)}, "has shape [1, 1, 4], expected [N, 4]"),
        ({"x": np.zeros((0, 4), np.float32)}, "N = any batch size >= 1"),
        ({"x": np.zeros((1, 4))}, "'x' has dtype float64, expected float32"),
        ({"x": np.array([[0, 0, np.nan, 0]], np.float32)},
         "'x' holds 1 NaN/Inf value(s), the first at index [0, 2]"),
        ({"x": np.array([[0, np.inf, 0, -np.inf]], np.float32)}, "holds 2 NaN/Inf"),
        ({"x": [[0.0, 0.0, 0.0, 0.0]]}, "'x' must be a numpy array"),
    ],
)
def test_input_errors(mvm_chip, feeds, needle):
    with pytest.raises(RuntimeInputError) as e:
        mvm_chip.run(feeds)
    assert needle in str(e.value)


def test_time_must_be_valid(mvm_chip):
    with pytest.raises(RuntimeInputError, match="time since programming"):
        mvm_chip.run({"x": np.zeros((1, 4), np.float32)}, t=-1.0)


def test_any_batch_size(mvm_chip):
    for n in (1, 7, 64):
        assert mvm_chip.run({"x": np.ones((n, 4), np.float32)})["y"].shape == (n, 2)


# ------------------------------------------------------------------------------ device models


def _hermes_mvm(tmp_path: Path, rows=16, cols=4, name="h.cimc", target="hermes64", **kw) -> Path:
    rng = np.random.default_rng(7)
    levels = rng.integers(-127, 128, (rows, cols)).astype(np.int8)
    scale = np.full(cols, 0.01, np.float32)
    return single_mvm(tmp_path / name, levels.astype(np.float32), target=target, levels=levels,
                      scale=scale, **kw)


def test_same_seed_same_chip_other_seed_other_chip(tmp_path):
    path = _hermes_mvm(tmp_path, dac=(8, 1.0), adc=(8, 2.0))
    x = RNG.uniform(-1, 1, (32, 16)).astype(np.float32)
    a, b, c = load(path, seed=3), load(path, seed=3), load(path, seed=4)
    ga, gb, gc = (ch.machine.programmed((0, 0))[0] for ch in (a, b, c))
    np.testing.assert_array_equal(ga.g, gb.g)
    np.testing.assert_array_equal(ga.nu, gb.nu)
    assert not np.array_equal(ga.g, gc.g)
    ya = [a.run({"x": x}, t=60.0)["y"] for _ in range(2)]
    yb = [b.run({"x": x}, t=60.0)["y"] for _ in range(2)]
    np.testing.assert_array_equal(ya[0], yb[0])  # same seed, same sequence of runs
    np.testing.assert_array_equal(ya[1], yb[1])
    assert not np.array_equal(ya[0], ya[1])  # read noise is redrawn every run
    assert not np.array_equal(ya[0], c.run({"x": x}, t=60.0)["y"])


def test_programming_noise_stays_near_the_weights(tmp_path):
    chip = load(_hermes_mvm(tmp_path, rows=64, cols=32))
    w_prog = chip.machine.at(0.0, False).crossbars[(0, 0)].weights[0]
    levels = chip.artifact.weights["xbar/0/0/levels"].astype(np.float32) * 0.01
    err = w_prog - levels
    assert 0.005 < np.std(err) / np.max(np.abs(levels)) < 0.1  # a few % of max|W|
    assert abs(np.mean(err)) < 0.2 * np.std(err)
    assert chip.machine.programmed((0, 0))[0].nu.shape == (2, 1, 64, 32)


def test_read_noise_statistics(tmp_path):
    chip = load(_hermes_mvm(tmp_path))
    x1 = RNG.uniform(-1, 1, 16).astype(np.float32)
    x = np.tile(x1, (40000, 1))
    t = 3600.0
    y = chip.run({"x": x}, t=t, drift_compensation=False)["y"]
    state = chip.machine.at(t, False).crossbars[(0, 0)]
    mean = x1 @ state.weights[0]
    var = (x1 * x1) @ state.read_vars[0]
    assert np.all(var > 0)
    se = np.sqrt(var / len(x))
    assert np.all(np.abs(y.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(y.var(0), var, rtol=0.05)
    # the variance the machine uses is the device model's, in weight units
    tile = chip.machine.crossbars[(0, 0)]
    want = chip.machine.programmed((0, 0))[0].at(t).read_var * tile.out_scale**2
    np.testing.assert_allclose(state.read_vars[0], want, rtol=1e-6)


def test_noise_off_is_deterministic(tmp_path):
    chip = load(_hermes_mvm(tmp_path))
    x = RNG.uniform(-1, 1, (8, 16)).astype(np.float32)
    a = chip.run({"x": x}, t=10.0, noise=False)["y"]
    np.testing.assert_array_equal(a, chip.run({"x": x}, t=10.0, noise=False)["y"])


@pytest.mark.parametrize("target", ["hermes64", "pcm40"])
def test_drift_with_and_without_compensation(tmp_path, target):
    if target == "pcm40":  # integer levels within ±8
        path = single_mvm(tmp_path / "p.cimc", np.zeros((64, 16), np.float32), target=target,
                          levels=RNG.integers(-8, 9, (64, 16)).astype(np.int8),
                          scale=np.full(16, 0.1, np.float32))
    else:
        path = _hermes_mvm(tmp_path, rows=64, cols=16, target=target)
    chip = load(path, seed=1)
    assert chip.drift_compensation  # on by default for PCM targets
    x = RNG.uniform(-1, 1, (256, 64)).astype(np.float32)
    y0 = chip.run({"x": x}, t=0.0, noise=False)["y"]
    np.testing.assert_array_equal(y0, chip.run({"x": x}, t=0.0, noise=False,
                                               drift_compensation=False)["y"])
    day = 86400.0
    raw = chip.run({"x": x}, t=day, noise=False, drift_compensation=False)["y"]
    comp = chip.run({"x": x}, t=day, noise=False)["y"]
    ratio_raw = np.abs(raw).mean() / np.abs(y0).mean()
    ratio_comp = np.abs(comp).mean() / np.abs(y0).mean()
    assert ratio_raw < 0.85  # a day of drift loses a good part of the signal
    assert abs(ratio_comp - 1) < 0.05  # compensation restores it
    err_raw = np.abs(raw - y0).mean()
    assert np.abs(comp - y0).mean() < 0.5 * err_raw
    off = load(path, seed=1, drift_compensation=False)
    np.testing.assert_array_equal(off.run({"x": x}, t=day, noise=False)["y"], raw)


def test_drift_matrices_are_cached_per_time(tmp_path):
    chip = load(_hermes_mvm(tmp_path))
    m = chip.machine
    a = m.at(100.0, True).crossbars
    assert m.at(100.0, True).crossbars is a
    assert m.at(100.0, False).crossbars is not a
    assert m.at(200.0, True).crossbars[(0, 0)].weights[0] is not a[(0, 0)].weights[0]


def test_rram_has_no_drift_but_read_noise(tmp_path):
    path = single_mvm(tmp_path / "r.cimc", np.zeros((16, 4), np.float32), target="neurram48",
                      levels=RNG.integers(-7, 8, (16, 4)).astype(np.int8),
                      scale=np.full(4, 0.1, np.float32))
    chip = load(path)
    assert not chip.drift_compensation
    a, b = chip.machine.at(0.0, False).crossbars, chip.machine.at(1e6, False).crossbars
    np.testing.assert_array_equal(a[(0, 0)].weights[0], b[(0, 0)].weights[0])
    assert a[(0, 0)].read_vars[0] is not None and np.all(a[(0, 0)].read_vars[0] > 0)


def test_levels_beyond_the_target_are_refused(tmp_path):
    path = single_mvm(tmp_path / "b.cimc", np.zeros((4, 2), np.float32), target="pcm40",
                      levels=np.full((4, 2), 9, np.int8), scale=np.ones(2, np.float32))
    with pytest.raises(ArtifactError, match="levels up to 9, beyond the target's ±8"):
        load(path)


# ------------------------------------------------------------------------------ execution paths


CONV = """
input  a0, name="x"
im2col a1, a0, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]
slice  a2, a1, start=0, stop=10
slice  a3, a1, start=10, stop=18
mvm    p0, a2, xbar=0, dac_bits=4, dac_range=1.75, adc_bits=0
mvm    p1, a3, xbar=1, dac_bits=4, dac_range=1.75, adc_bits=0
dop    p2, p0, p1, op="nn.add"
output p2, name="y"
{extra}halt
"""


def _conv_artifact(tmp_path: Path, extra: str = "", name: str = "conv.cimc", cols: int = 4):
    w = RNG.integers(-3, 4, (18, cols)).astype(np.float32)
    outputs = [("y", (1, 5, 5, cols), "f32")] + ([("p", (1, 5, 5, 18), "f32")] if extra else [])
    path = _one_core(
        tmp_path, CONV.format(extra=extra), [("x", (1, 2, 5, 5), "f32")], outputs,
        {"xbar/0/0/levels": w[:10], "xbar/0/0/scale": np.ones(cols, np.float32),
         "xbar/0/1/levels": w[10:], "xbar/0/1/scale": np.ones(cols, np.float32)},
        name=name, xbars=f".xbar 0 rows=10 cols={cols}\n.xbar 1 rows=8 cols={cols}\n")
    return path, w


def _conv_reference(x, w):
    patches = _im2col_reference(x, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1])
    q = np.clip(np.rint(patches / 0.25), -7, 7) * 0.25
    return q @ w, patches


@pytest.mark.parametrize(("extra", "cols"), [("", 4), ("", 9), ("output a1, name=\"p\"\n", 4)])
def test_conv_tiles_with_dac_folded_or_not(tmp_path, extra, cols):
    # Without 'extra' only the mvms read the patches: the DAC is applied once at the im2col and
    # the patches live in the workspace, per sample (25 positions >= 4 x 4 columns) or
    # patch-major (9 columns). With 'extra', the patches are also an output.
    path, w = _conv_artifact(tmp_path, extra, cols=cols)
    chip = load(path)
    im2col_step = chip.machine.fast[0].steps[1]
    assert isinstance(im2col_step, PlannedIm2col)
    assert im2col_step.private == (not extra) and (im2col_step.dac is None) == bool(extra)
    x = RNG.uniform(-2, 2, (3, 2, 5, 5)).astype(np.float32)
    want, patches = _conv_reference(x, w)
    for _ in range(2):  # the second run reuses the workspace
        out = chip.run({"x": x})
        np.testing.assert_allclose(out["y"], want, rtol=1e-5, atol=1e-5)
    if extra:
        np.testing.assert_array_equal(out["p"], patches)


def test_results_do_not_depend_on_threads_or_chunks(tmp_path, monkeypatch):
    import cimc.runtime.chip as chip_mod

    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 4096)  # many chunks
    path = _hermes_mvm(tmp_path, dac=(8, 1.0), adc=(8, 3.0))
    x = RNG.uniform(-1, 1, (1000, 16)).astype(np.float32)
    one, many = load(path, seed=2, workers=1), load(path, seed=2, workers=3)
    assert len(one._chunks(1000)) > 3
    a, b = one.run({"x": x}, t=10.0)["y"], many.run({"x": x}, t=10.0)["y"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1000, 4)
    # outputs are fresh arrays: a later run does not change them
    keep = a.copy()
    one.run({"x": x}, t=10.0)
    np.testing.assert_array_equal(a, keep)


def test_blas_threads_are_restored():
    from threadpoolctl import ThreadpoolController

    from cimc.runtime.execution import Serial

    def threads():
        return [c.num_threads for c in ThreadpoolController().select(
            user_api="blas").lib_controllers]

    before = threads()
    assert before, "numpy's BLAS is not found"
    scope = Serial()
    with scope.blas_scope():
        assert set(threads()) == {1}
        with scope.blas_scope():
            pass
        # the inner run ended; the outer one still runs single-threaded
        assert set(threads()) == {1}
    assert threads() == before


def test_batch_mixing_programs_run_whole(tmp_path, monkeypatch):
    # A program that normalises over the batch axis must not be split into chunks.
    import cimc.runtime.chip as chip_mod

    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 64)
    path = _one_core(tmp_path, """
        input a0, name="x"
        dop   a1, a0, op="nn.softmax", axis=0
        output a1, name="y"
        halt
    """.replace("    ", ""), [("x", (4, 8), "f32")], [("y", (4, 8), "f32")])
    chip = load(path)
    x = RNG.standard_normal((40, 8)).astype(np.float32)
    e = np.exp(x - x.max(0))
    np.testing.assert_allclose(chip.run({"x": x})["y"], e / e.sum(0), rtol=1e-5, atol=1e-7)
    assert chip._chunks(40) == [(0, 40)]
    independent = load(single_mvm(tmp_path / "s.cimc", np.ones((8, 2), np.float32)))
    assert len(independent._chunks(40)) > 1


def test_a_batch_of_small_buffers_still_runs_in_two_chunks(tmp_path):
    # Buffers far under CHUNK_ELEMENTS: one chunk would leave the second worker idle.
    chip = load(single_mvm(tmp_path / "s.cimc", np.ones((8, 2), np.float32)))
    assert chip._chunks(127) == [(0, 127)]
    assert chip._chunks(128) == [(0, 64), (64, 128)]
    assert chip._chunks(1000) == [(0, 500), (500, 1000)]


def test_a_batch_in_several_chunks_runs_in_an_even_number(tmp_path, monkeypatch):
    # two workers then get equal shares (the chunks never depend on the workers)
    import cimc.runtime.chip as chip_mod

    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 800)  # 100 samples of 8 inputs
    chip = load(single_mvm(tmp_path / "s.cimc", np.ones((8, 2), np.float32)))
    assert chip._chunks(200) == [(0, 100), (100, 200)]
    assert chip._chunks(250) == [(0, 62), (62, 125), (125, 187), (187, 250)]
