"""The fast executor (cimc.runtime.fastpath, plan, fusion) gives exactly the reference machine's
numbers without read noise, the same distribution with it; patch layouts; the separable
max-pool kernel; the table-inversion normals of the read noise."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from runtime_kit import write_artifact

from cimc.errors import ArtifactError
from cimc.ops.linalg import ROWS, SAMPLES, VECTORS, patches
from cimc.ops.pool import max_pool
from cimc.runtime import execution, fusion, load
from cimc.runtime.chip import _rng
from cimc.runtime.device import normal_f32, normal_table
from cimc.runtime.fastpath import PlannedIm2col
from cimc.runtime.fusion import FusedMvm

RNG = np.random.default_rng(2024)

# ------------------------------------------------------------------------------ programs

POOL = ('dop    a5, a4, op="nn.max_pool", ceil_mode={ceil}, dilations=[1, 1], '
        'kernel_shape=[{k}, {k}], pads={pads}, strides=[{s}, {s}]')


def _conv(tmp_path: Path, *, c: int = 2, hw: int = 9, m: int = 4, k: int = 3,
          target: str = "ideal", conv: str = "dac_bits=0, adc_bits=0",
          bias_shape: tuple[int, ...] | None = None, bias_op: str = "nn.add",
          bias_first: bool = False, bias: np.ndarray | None = None, pool: str | None = None,
          tail: str = "", name: str = "c.cimc") -> tuple[Path, np.ndarray]:
    """im2col -> mvm -> bias op -> transpose -> relu -> max_pool -> flatten, the shape of a
    lowered conv layer. Returns the artifact and the weights (levels, scale 0.01 on noisy
    targets)."""
    rows, out = c * k * k, hw - k + 1
    noisy = target != "ideal"
    w = (RNG.integers(-100, 101, (rows, m)) if noisy else RNG.standard_normal((rows, m)))
    w = w.astype(np.float32)
    scale = np.full(m, 0.01 if noisy else 1.0, np.float32)
    b = RNG.standard_normal(bias_shape or (m,)).astype(np.float32) if bias is None else bias
    pool = pool or POOL.format(ceil="false", k=2, s=2, pads="[0, 0, 0, 0]")
    pooled = (out - 2) // 2 + 1
    operands = "c0, p0" if bias_first else "p0, c0"
    prog = f"""
        .core 0 chip=0
        .xbar 0 rows={rows} cols={m} layer="conv" tile=[0, 0]
        .const c0 name="bias"
          input  a0, name="x"
          im2col a1, a0, kernel_shape=[{k}, {k}], strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1]
          mvm    p0, a1, xbar=0, {conv}
          dop    a2, {operands}, op="{bias_op}"
          dop    a3, a2, op="nn.transpose", perm=[0, 3, 1, 2]
          dop    a4, a3, op="nn.relu"
          {pool}
          output a5, name="y"
          halt
    """
    path = write_artifact(tmp_path / name, {0: prog},
                          {"xbar/0/0/levels": w, "xbar/0/0/scale": scale, "const/bias": b},
                          [("x", (1, c, hw, hw), "f32")], [("y", (1, m, pooled, pooled), "f32")],
                          target=target)
    return path, w


def _both(chip, feeds, t=0.0, noise=True, seed=5):
    """The outputs of the fast plan and of the reference machine, one chunk each."""
    return [chip.machine.execute(feeds, t, chip.drift_compensation, _rng(seed, 1, 0, 0),
                                 noise=noise, fast=fast)[0] for fast in (True, False)]


def _fused_step(chip) -> FusedMvm:
    steps = [s for s in chip.machine.fast[0].steps if isinstance(s, FusedMvm)]
    assert len(steps) == 1
    return steps[0]


# ------------------------------------------------------------------------------ fusion


@pytest.mark.parametrize(("c", "k"), [(1, 3), (2, 3), (6, 3)])  # patch-major; channels-last
@pytest.mark.parametrize("target", ["ideal", "hermes64"])
def test_conv_epilogue_fused_and_pool_moved_exactly(tmp_path, c, k, target):
    conv = ("dac_bits=0, adc_bits=0" if target == "ideal" else
            "dac_bits=8, dac_range=2.0, adc_bits=8, adc_range=4.0")
    path, _ = _conv(tmp_path, c=c, k=k, target=target, conv=conv)
    chip = load(path)
    step = _fused_step(chip)
    assert step.prologue is not None and [o.op for o in step.ops] == [
        "nn.add", "nn.transpose", "nn.relu", "nn.max_pool"]
    assert step.pool_at == 3
    x = RNG.uniform(-2, 2, (7, c, 9, 9)).astype(np.float32)
    assert (step.prologue.layout(x) == VECTORS) == (c > 1)
    fused, plain = _both(chip, {"x": x}, t=3600.0, noise=False)
    np.testing.assert_array_equal(fused["y"], plain["y"])
    assert all(v is not None for v in step._hoisted.values())  # the pool did move
    if target == "hermes64":  # read noise on: other draws, the same distribution (see below)
        noisy = _both(chip, {"x": x}, t=3600.0)[0]["y"]
        assert not np.array_equal(noisy, fused["y"])
        assert np.abs(noisy - fused["y"]).max() <= 4 * 4.0 / 127 * 8  # a few ADC steps


def test_fused_conv_matches_numpy(tmp_path):
    path, w = _conv(tmp_path, c=3, k=3)
    b = load(path).artifact.weights["const/bias"]
    x = RNG.standard_normal((4, 3, 9, 9)).astype(np.float32)
    cols = np.stack([x[:, :, i:i + 7, j:j + 7] for i in range(3) for j in range(3)], 1)
    y = np.einsum("nqchw,qcm->nmhw", cols, w.reshape(9, 3, 4)) + b[:, None, None]
    want = np.maximum(y, 0)[:, :, :6, :6].reshape(4, 4, 3, 2, 3, 2).max(axis=(3, 5))
    np.testing.assert_allclose(load(path).run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("bias_shape", "bias_op", "first", "moved"), [
    ((1, 1, 1, 4), "nn.add", False, True),   # per channel, full rank
    ((7, 7, 4), "nn.add", False, False),     # varies over the pooled positions
    ((4,), "nn.sub", False, True),           # x - c is monotone
    ((4,), "nn.sub", True, False),           # c - x is not
    ((4,), "nn.mul", False, None),           # c > 0 only: decided by the values
])
def test_pool_moves_only_past_monotone_window_constant_maps(tmp_path, bias_shape, bias_op,
                                                            first, moved):
    bias = None
    if bias_op == "nn.mul":
        bias = np.array([0.5, 2.0, -1.0, 3.0], np.float32)  # a negative factor: not monotone
        moved = False
    path, _ = _conv(tmp_path, bias_shape=bias_shape, bias_op=bias_op, bias_first=first,
                    bias=bias, pool=POOL.format(ceil="true", k=3, s=2, pads="[1, 1, 1, 1]"),
                    name="m.cimc")
    chip = load(path)
    x = RNG.standard_normal((5, 2, 9, 9)).astype(np.float32)
    fused, plain = _both(chip, {"x": x})
    np.testing.assert_array_equal(fused["y"], plain["y"])
    step = _fused_step(chip)
    hoisted = [v is not None for v in step._hoisted.values()]
    assert hoisted == ([moved] if step.pool_at is not None else [])
    if step.pool_at is None:
        assert not moved


# 6 channels: channels-last patches; 1: patch-major ones (a block of one sample would fit
# another layout). 4 or 3 * 49 outputs per sample: blocks of any size or of multiples of 4.
@pytest.mark.parametrize(("c", "cols"), [(6, 4), (6, 3), (1, 4)])
def test_blocks_and_chunks_do_not_change_the_numbers(tmp_path, monkeypatch, c, cols):
    import cimc.runtime.chip as chip_mod

    conv = "dac_bits=8, dac_range=2.0, adc_bits=8, adc_range=4.0"
    path, _ = _conv(tmp_path, c=c, m=cols, target="hermes64", conv=conv)
    x = RNG.uniform(-2, 2, (40, c, 9, 9)).astype(np.float32)
    whole = _both(load(path), {"x": x}, t=10.0, noise=False)[1]["y"]  # the reference
    monkeypatch.setattr(fusion, "BLOCK_ELEMENTS", 2000)  # the fewest samples a block
    fused, plain = _both(load(path), {"x": x}, t=10.0, noise=False)
    np.testing.assert_array_equal(fused["y"], whole)
    np.testing.assert_array_equal(plain["y"], whole)
    # With read noise, blocks draw their normals in turn, using the chunk's random stream as
    # one draw would: the same seed gives the same numbers for any block size and any number
    # of workers, processes or threads (which use larger blocks).
    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 1000)  # several chunks

    def first_run(workers: int) -> np.ndarray:
        with load(path, seed=1, workers=workers) as chip:
            assert len(chip._chunks(len(x))) > 2
            return chip.run({"x": x}, t=10.0)["y"]

    a = first_run(1)
    np.testing.assert_array_equal(a, first_run(3))  # processes
    monkeypatch.setattr(execution, "fork_available", lambda: False)
    np.testing.assert_array_equal(a, first_run(3))  # threads
    monkeypatch.setattr(fusion, "BLOCK_ELEMENTS", 1 << 20)  # one block a chunk
    np.testing.assert_array_equal(a, first_run(1))
    one = load(path, seed=1, workers=1)
    assert np.array_equal(a, one.run({"x": x}, t=10.0)["y"])
    assert not np.array_equal(a, one.run({"x": x}, t=10.0)["y"])  # fresh noise every run


def test_read_noise_of_blocked_convolutions_is_exact_in_distribution(tmp_path, monkeypatch):
    # im2col + mvm without converters: every output is its noiseless value plus
    # N(0, (x*x) @ var), independently for every vector, block after block.
    prog = """
        .core 0 chip=0
        .xbar 0 rows=27 cols=3
          input  a0, name="x"
          im2col a1, a0, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]
          mvm    p0, a1, xbar=0, dac_bits=0, adc_bits=0
          output p0, name="y"
          halt
    """
    levels = RNG.integers(-127, 128, (27, 3)).astype(np.int8)
    path = write_artifact(tmp_path / "n.cimc", {0: prog},
                          {"xbar/0/0/levels": levels,
                           "xbar/0/0/scale": np.full(3, 0.01, np.float32)},
                          [("x", (1, 3, 4, 4), "f32")], [("y", (1, 4, 4, 3), "f32")],
                          target="hermes64")
    monkeypatch.setattr(fusion, "BLOCK_ELEMENTS", 27 * 16 * 7)  # 7 samples a block
    chip = load(path)
    assert isinstance(chip.machine.fast[0].steps[1], FusedMvm)
    x1 = RNG.uniform(-1, 1, (1, 3, 4, 4)).astype(np.float32)
    x = np.repeat(x1, 6000, axis=0)
    t = 3600.0
    y = chip.run({"x": x}, t=t, drift_compensation=False)["y"]
    exact = chip.run({"x": x1}, t=t, drift_compensation=False, noise=False)["y"][0]
    state = chip.machine.at(t, False).crossbars[(0, 0)]
    p1 = patches(x1, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1])[0]
    var = (p1 * p1) @ state.read_vars[0]  # [4, 4, 3]
    z = (y - exact) / np.sqrt(var)
    assert np.all(np.abs(z.mean(0)) < 5 / np.sqrt(len(x)))
    np.testing.assert_allclose(z.var(0), 1.0, rtol=0.08)
    corr = np.corrcoef(z[:, 0, 0, 0], z[:, 1, 1, 1])[0, 1]  # vectors are independent
    assert abs(corr) < 0.06


def test_partial_sums_and_values_read_later(tmp_path):
    # p0 + p1 runs in place on p1; a2 is also an output, so the relu after it is not fused.
    w = RNG.standard_normal((10, 3)).astype(np.float32)
    prog = """
        .core 0 chip=0
        .xbar 0 rows=6 cols=3 layer="fc" tile=[0, 0]
        .xbar 1 rows=4 cols=3 layer="fc" tile=[1, 0]
        .const c0 name="b"
          input  a0, name="x"
          slice  a1, a0, start=0, stop=6
          slice  a4, a0, start=6, stop=10
          mvm    p0, a1, xbar=0, dac_bits=0, adc_bits=0
          mvm    p1, a4, xbar=1, dac_bits=0, adc_bits=0
          dop    p2, p0, p1, op="nn.add"
          dop    a2, p2, c0, op="nn.add"
          dop    a3, a2, op="nn.relu"
          output a2, name="pre"
          output a3, name="y"
          halt
    """
    ones = np.ones(3, np.float32)
    path = write_artifact(tmp_path / "p.cimc", {0: prog},
                          {"xbar/0/0/levels": w[:6], "xbar/0/0/scale": ones,
                           "xbar/0/1/levels": w[6:], "xbar/0/1/scale": ones,
                           "const/b": np.array([0.5, -0.5, 0.0], np.float32)},
                          [("x", (1, 10), "f32")], [("pre", (1, 3), "f32"), ("y", (1, 3), "f32")])
    chip = load(path)
    fused = [s for s in chip.machine.fast[0].steps if isinstance(s, FusedMvm)]
    assert len(fused) == 1 and [o.op for o in fused[0].ops] == ["nn.add", "nn.add"]
    x = RNG.standard_normal((6, 10)).astype(np.float32)
    out = chip.run({"x": x})
    pre = x @ w + np.array([0.5, -0.5, 0.0], np.float32)
    np.testing.assert_allclose(out["pre"], pre, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["y"], np.maximum(pre, 0), rtol=1e-5, atol=1e-5)
    a, b = _both(chip, {"x": x})
    for key in ("pre", "y"):
        np.testing.assert_array_equal(a[key], b[key])


def test_an_error_in_a_fused_op_names_that_instruction(tmp_path):
    path, _ = _conv(tmp_path, bias_shape=(5,))  # 5 biases for 4 columns
    chip = load(path)
    x = RNG.standard_normal((2, 2, 9, 9)).astype(np.float32)
    where = r"core_000.s:7: dop +a2, p0, c0.*nn.add on operands of shapes \[\d, 7, 7, 4\], \[5\]"
    for fast in (True, False):
        with pytest.raises(ArtifactError, match=where):
            chip.machine.execute({"x": x}, 0.0, False, _rng(0, 1), noise=False, fast=fast)
    with pytest.raises(ArtifactError, match=where):
        chip.run({"x": x})


def test_report_counts_every_instruction(tmp_path):
    path, _ = _conv(tmp_path)
    chip = load(path)
    before = chip.report(batch=8).to_dict()
    chip.run({"x": RNG.standard_normal((8, 2, 9, 9)).astype(np.float32)})
    after = chip.report().to_dict()
    assert after["executed"] == before["executed"] and after["latency_ns"] == before["latency_ns"]
    assert after["executed"]["dop"] > 0 and after["executed"]["im2col"] > 0


# ------------------------------------------------------------------------------ patches


@pytest.mark.parametrize(("shape", "k", "s", "p", "d"), [
    ((2, 6, 9, 8), [3, 3], [1, 2], [1, 0, 2, 1], [1, 1]),
    ((3, 4, 7, 7), [2, 3], [1, 1], [0, 0, 0, 0], [2, 1]),
    ((2, 5, 11), [3], [2], [1, 1], [1]),
])
def test_patch_layouts_hold_the_same_patches(shape, k, s, p, d):
    x = RNG.standard_normal(shape).astype(np.float32)
    c = shape[1]
    for groups in (1, c):
        want = patches(x, k, s, p, d, groups)
        nhwc = np.ascontiguousarray(np.moveaxis(x, 1, -1))  # a channels-last buffer: no copy
        np.testing.assert_array_equal(patches(np.moveaxis(nhwc, -1, 1), k, s, p, d, groups),
                                      want)
        out = np.empty(want.size, np.float32)
        scratch = np.full(10**5, np.nan, np.float32)
        for _ in range(2):  # reused buffers (the padding of the scratch copy stays zero)
            got = patches(x, k, s, p, d, groups, out=out, scratch=scratch[:x.size * 4])
            np.testing.assert_array_equal(got, want)
        if groups == c:  # one channel per group: patch-major blocks, read without a copy
            for layout in (ROWS, SAMPLES):
                got = patches(x, k, s, p, d, groups, layout=layout)
                np.testing.assert_array_equal(got, want)
                assert not got.flags.c_contiguous
    with pytest.raises(ValueError, match="one channel per group"):
        patches(x, k, s, p, d, 1, layout=ROWS)


def _two_tiles(tmp_path: Path, prog: str, cut: int, y_shape: tuple[int, ...]):
    """A chip of ``prog``: crossbars 0 and 1 hold rows ..cut and cut.. of a random [54, 2]
    weight (3x3 patches of 6 channels), input x [1, 6, 5, 5]; the chip and the weight."""
    w = RNG.standard_normal((54, 2)).astype(np.float32)
    ones = np.ones(2, np.float32)
    path = write_artifact(tmp_path / "t.cimc", {0: prog},
                          {"xbar/0/0/levels": w[:cut], "xbar/0/0/scale": ones,
                           "xbar/0/1/levels": w[cut:], "xbar/0/1/scale": ones},
                          [("x", (1, 6, 5, 5), "f32")], [("y", y_shape, "f32")])
    return load(path), w


def test_tiles_that_read_row_ranges_of_private_patches(tmp_path):
    prog = """
        .core 0 chip=0
        .xbar 0 rows=30 cols=2
        .xbar 1 rows=24 cols=2
          input  a0, name="x"
          im2col a1, a0, kernel_shape=[3, 3], strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1]
          slice  a2, a1, start=0, stop=30
          slice  a3, a1, start=30, stop=54
          mvm    p0, a2, xbar=0, dac_bits=0, adc_bits=0
          mvm    p1, a3, xbar=1, dac_bits=0, adc_bits=0
          dop    p2, p0, p1, op="nn.add"
          output p2, name="y"
          halt
    """
    chip, w = _two_tiles(tmp_path, prog, 30, (1, 3, 3, 2))
    im = chip.machine.fast[0].steps[1]
    assert isinstance(im, PlannedIm2col) and im.private
    x = RNG.standard_normal((3, 6, 5, 5)).astype(np.float32)
    fast, ref = _both(chip, {"x": x})
    np.testing.assert_array_equal(fast["y"], ref["y"])
    np.testing.assert_allclose(fast["y"], patches(x, [3, 3], [1, 1], [0] * 4, [1, 1]) @ w,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dac", ["dac_bits=0", "dac_bits=8, dac_range=3.0"])
def test_im2cols_of_row_ranges_fuse_with_their_tiles(tmp_path, dac):
    # the rows of a tile made by its own im2col (what schedule's split leaves on each core):
    # fused with the mvm, the DAC folded into the input, the reference's numbers
    im = "im2col {}, a0, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]"
    prog = f"""
        .core 0 chip=0
        .xbar 0 rows=31 cols=2
        .xbar 1 rows=23 cols=2
          input  a0, name="x"
          {im.format("a1")}, rows=[0, 31]
          mvm    p0, a1, xbar=0, {dac}, adc_bits=0
          {im.format("a2")}, rows=[31, 54]
          mvm    p1, a2, xbar=1, {dac}, adc_bits=0
          dop    p2, p0, p1, op="nn.add"
          output p2, name="y"
          halt
    """
    chip, w = _two_tiles(tmp_path, prog, 31, (1, 5, 5, 2))
    fused = [s for s in chip.machine.fast[0].steps if isinstance(s, FusedMvm)]
    assert len(fused) == 2 and all(f.prologue is not None for f in fused)
    assert all((f.prologue.dac is not None) == (dac != "dac_bits=0") for f in fused)
    x = RNG.uniform(-1, 1, (6, 6, 5, 5)).astype(np.float32)
    fast, ref = _both(chip, {"x": x})
    np.testing.assert_array_equal(fast["y"], ref["y"])
    if dac == "dac_bits=0":
        np.testing.assert_allclose(fast["y"], patches(x, [3, 3], [1, 1], [1] * 4, [1, 1]) @ w,
                                   rtol=1e-5, atol=1e-5)


def _split_conv(tmp_path: Path, tail: str, y_shape: tuple[int, ...], conv: str):
    """A conv split over two cores the way schedule leaves it: each makes the patch rows of
    its tile; core 0 adds core 1's partial sum (received between its mvm and the add), the
    bias, and runs ``tail`` on a4 (ending in a5). Input x [1, 6, 8, 8], 3x3 patches, 4
    output channels; returns the chip and the weight [54, 4]."""
    w = RNG.integers(-100, 101, (54, 4)).astype(np.float32)
    im = "im2col a1, a0, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]"
    progs = {0: f"""
        .core 0 chip=0
        .xbar 0 rows=30 cols=4
        .const c0 name="bias"
          input  a0, name="x"
          send   a0, to=1
          {im}, rows=[0, 30]
          mvm    p0, a1, xbar=0, {conv}
          recv   p1, from=1
          dop    a2, p0, p1, op="nn.add"
          dop    a3, a2, c0, op="nn.add"
          dop    a4, a3, op="nn.transpose", perm=[0, 3, 1, 2]
          {tail}
          output a5, name="y"
          halt
    """, 1: f"""
        .core 1 chip=0
        .xbar 0 rows=24 cols=4
          recv   a0, from=0
          {im}, rows=[30, 54]
          mvm    p0, a1, xbar=0, {conv}
          send   p0, to=0
          halt
    """}
    scale = np.full(4, 0.01, np.float32)
    path = write_artifact(tmp_path / "s.cimc", progs,
                          {"xbar/0/0/levels": w[:30], "xbar/0/0/scale": scale,
                           "xbar/1/0/levels": w[30:], "xbar/1/0/scale": scale,
                           "const/bias": RNG.standard_normal(4).astype(np.float32)},
                          [("x", (1, 6, 8, 8), "f32")], [("y", y_shape, "f32")],
                          target="hermes64")
    return load(path), w


RELU_POOL = ('dop    a6, a4, op="nn.relu"\n' + POOL.replace("a5, a4", "a7, a6").format(
    ceil="false", k=2, s=2, pads="[0, 0, 0, 0]"))


@pytest.mark.parametrize(("tail", "y_shape"), [
    (RELU_POOL + '\ndop    a5, a7, op="nn.reshape", shape=[-1, 64]', (1, 64)),
    # a reshape that does not keep the samples apart: on the whole chunk after the blocks
    (RELU_POOL + '\ndop    a5, a7, op="nn.reshape", shape=[-1, 16]', (4, 16)),
    ('dop    a5, a4, op="nn.relu"', (1, 4, 8, 8)),
])
@pytest.mark.parametrize("conv", ["dac_bits=0, adc_bits=0",
                                  "dac_bits=8, dac_range=2.0, adc_bits=8, adc_range=4.0"])
def test_a_split_conv_runs_its_partial_sum_and_epilogue_block_by_block(
        tmp_path, monkeypatch, tail, y_shape, conv):
    # The recv of the other tile's partial sum is planned before the fused step, so the add,
    # the bias, ReLU and the pool run on each block of the product: the reference's numbers
    # for every block size; with read noise, the same numbers for any chunking and workers.
    import cimc.runtime.chip as chip_mod

    chip, w = _split_conv(tmp_path, tail.replace("\n", "\n          "), y_shape, conv)
    steps = chip.machine.fast[0].steps
    fused = [s for s in steps if isinstance(s, FusedMvm)]
    assert len(fused) == 1 and fused[0].prologue is not None
    assert [o.op for o in fused[0].ops][:3] == ["nn.add", "nn.add", "nn.transpose"]
    before = steps[steps.index(fused[0]) - 1]
    assert before.ins.mnemonic == "recv"
    x = RNG.uniform(-1, 1, (40, 6, 8, 8)).astype(np.float32)
    fast, want = _both(chip, {"x": x}, t=10.0, noise=False)
    np.testing.assert_array_equal(fast["y"], want["y"])  # one block
    monkeypatch.setattr(fusion, "BLOCK_ELEMENTS", 30 * 64 * 3)  # blocks of 3 samples
    fast = _both(chip, {"x": x}, t=10.0, noise=False)[0]["y"]
    np.testing.assert_array_equal(fast, want["y"])
    monkeypatch.setattr(chip_mod, "CHUNK_ELEMENTS", 2000)  # several chunks, read noise on

    def noisy(workers: int) -> np.ndarray:
        with load(chip.artifact.path, seed=3, workers=workers) as c:
            assert len(c._chunks(len(x))) > 2
            return c.run({"x": x}, t=10.0)["y"]

    a = noisy(1)
    np.testing.assert_array_equal(a, noisy(2))
    assert not np.array_equal(a, fast)


# ------------------------------------------------------------------------------ max_pool


def _max_pool_reference(x, k, s, p, d, ceil):
    r = len(k)
    out = []
    for i in range(r):
        span = (x.shape[2 + i] + p[i] + p[r + i] - ((k[i] - 1) * d[i] + 1))
        o = (-(-span // s[i]) if ceil else span // s[i]) + 1
        if ceil and (o - 1) * s[i] >= x.shape[2 + i] + p[i]:
            o -= 1
        out.append(o)
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    y = np.full((*x.shape[:2], *out), low, x.dtype)
    for o in itertools.product(*(range(v) for v in out)):
        for tap in itertools.product(*(range(v) for v in k)):
            idx = [o[i] * s[i] - p[i] + tap[i] * d[i] for i in range(r)]
            if all(0 <= idx[i] < x.shape[2 + i] for i in range(r)):
                pos = (slice(None), slice(None), *o)
                y[pos] = np.maximum(y[pos], x[(slice(None), slice(None), *idx)])
    return y


@pytest.mark.parametrize(("shape", "k", "s", "p", "d", "ceil"), [
    ((2, 3, 8, 8), [2, 2], [2, 2], [0, 0, 0, 0], [1, 1], False),
    ((2, 3, 9, 7), [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], True),
    ((1, 2, 10, 9), [3, 2], [1, 3], [1, 0, 2, 1], [2, 1], True),
    ((3, 2, 11), [4], [3], [2, 1], [1], False),
    ((1, 2, 5, 6, 7), [2, 3, 2], [2, 1, 3], [1, 0, 1, 0, 1, 1], [1, 1, 2], True),
])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_separable_max_pool_matches_the_window_definition(shape, k, s, p, d, ceil, dtype):
    x = (RNG.standard_normal(shape) * 100).astype(dtype)
    attrs = {"kernel_shape": k, "strides": s, "pads": p, "dilations": d, "ceil_mode": ceil}
    np.testing.assert_array_equal(max_pool(attrs, x), _max_pool_reference(x, k, s, p, d, ceil))


def test_max_pool_keeps_the_layout_and_propagates_nan():
    x = np.ascontiguousarray(RNG.standard_normal((2, 6, 6, 3)).astype(np.float32))
    v = x.transpose(0, 3, 1, 2)  # channels-last memory
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0],
             "dilations": [1, 1], "ceil_mode": False}
    y = max_pool(attrs, v)
    assert y.strides[1] == y.itemsize  # still channels-last
    np.testing.assert_array_equal(y, _max_pool_reference(v, [2, 2], [2, 2], [0] * 4, [1, 1],
                                                         False))
    v = v.copy()
    v[0, 1, 2, 3] = np.nan
    assert np.isnan(max_pool(attrs, v)[0, 1, 1, 1])


# ------------------------------------------------------------------------------ normals


def test_normal_table():
    q = normal_table().astype(np.float64)
    assert q.shape == (1 << 16,) and np.all(np.diff(q) > 0)
    np.testing.assert_array_equal(q, -q[::-1])  # symmetric: mean 0
    assert abs(np.mean(q * q) - 1) < 1e-6  # variance 1
    assert abs(q[-1] - 4.325) < 1e-3  # the tail cut-off
    nd = NormalDist()
    cells = (np.arange(1 << 16) + 0.5) / (1 << 16)
    np.testing.assert_allclose(q[1:-1], [nd.inv_cdf(u) for u in cells[1:-1]], rtol=2e-5,
                               atol=1e-6)


def test_normals_moments_and_tails():
    z = normal_f32(np.random.default_rng(0), 2_000_001).astype(np.float64)
    assert z.dtype == np.float64 and len(z) == 2_000_001
    assert abs(z.mean()) < 0.003 and abs(z.std() - 1) < 0.003
    assert abs(np.mean(z**3)) < 0.01 and abs(np.mean(z**4) - 3) < 0.03
    nd = NormalDist()
    for a in (0.5, 1.0, 2.0, 3.0):
        tail = 1 - nd.cdf(a)
        assert abs(np.mean(z > a) - tail) < 4 * math.sqrt(tail / len(z)) + 1e-5
    assert np.abs(z).max() <= normal_table()[-1]


def test_normals_follow_the_seed_and_fill_a_buffer():
    a = normal_f32(np.random.default_rng(3), 35)
    b = normal_f32(np.random.default_rng(3), 35)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (35,) and a.dtype == np.float32
    out = np.empty(35, np.float32)
    c = normal_f32(np.random.default_rng(3), 35, out)
    assert c is out
    np.testing.assert_array_equal(c, a)
    # draws of multiples of 4 in turn use the stream as one draw of their total
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(np.concatenate([normal_f32(rng, 8), normal_f32(rng, 27)]), a)
