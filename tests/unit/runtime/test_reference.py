"""The reference machine (cimc.runtime.reference): loops and branches, the iteration guard,
deadlocks across loops, the running chip clock and the cost of every iteration; the fast
executor against it on noisy runs (in distribution)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_kit import target_dict, write_artifact

from cimc.errors import ArtifactError, RuntimeInputError
from cimc.runtime import load

RNG = np.random.default_rng(77)

POWER = """
.core 0 chip=0
.xbar 0 rows={n} cols={n} layer="A" tile=[0, 0]
.const one name="one"
.const tol name="tol"
  input  x, name="x"
  dop    k, x, op="nn.reduce_sum", axes=[0, 1], keepdims=1
  dop    k, k, k, op="nn.sub"                            ; k = 0, shaped [1, 1]
loop:
  mvm    y, x, xbar=0, dac_bits=0, adc_bits=0              ; y = x A
  dop    y2, y, y, op="nn.mul"
  dop    s, y2, op="nn.reduce_sum", axes=[1], keepdims=1
  dop    r, s, op="nn.sqrt"
  dop    xn, y, r, op="nn.div"                           ; the next iterate
  dop    d, xn, x, op="nn.sub"
  dop    d2, d, d, op="nn.mul"
  dop    e, d2, op="nn.reduce_sum", axes=[0, 1], keepdims=0  ; squared change
  dop    x, xn, op="nn.identity"
  dop    k, k, one, op="nn.add"
  dop    m, e, tol, op="nn.sub"
  dop    c, m, op="nn.relu"                              ; > 0 while the change exceeds tol
  branch c, label="loop"
  output x, name="v"
  output k, name="iterations"
  halt
"""


def _power(tmp_path: Path, a: np.ndarray, tol: float, name: str = "p.cimc") -> Path:
    n = a.shape[0]
    return write_artifact(
        tmp_path / name, {0: POWER.format(n=n)},
        {"xbar/0/0/levels": a, "xbar/0/0/scale": np.ones(n, np.float32),
         "const/one": np.ones((1, 1), np.float32), "const/tol": np.float32(tol)},
        [("x", (1, n), "f32")], [("v", (1, n), "f32"), ("iterations", (1, 1), "f32")],
        extra_manifest={"batch": None})


def _numpy_power(a: np.ndarray, x: np.ndarray, tol: float) -> tuple[np.ndarray, int]:
    k = 0
    while True:
        y = x @ a
        xn = y / np.sqrt(np.sum(y * y, axis=1, keepdims=True))
        e = np.sum((xn - x) ** 2)
        x, k = xn, k + 1
        if e <= tol:
            return x, k


def test_power_iteration_loops_until_the_change_is_below_the_tolerance(tmp_path):
    q, _ = np.linalg.qr(RNG.standard_normal((8, 8)))
    a = (q * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1])) @ q.T  # symmetric
    a = a.astype(np.float32)
    x = np.full((1, 8), 1 / np.sqrt(8), np.float32)
    tol = 1e-10
    chip = load(_power(tmp_path, a, tol))
    out = chip.run({"x": x})
    want, k = _numpy_power(a, x, tol)
    assert out["iterations"].item() == k > 10
    np.testing.assert_allclose(out["v"], want, rtol=1e-5, atol=1e-6)
    top = np.linalg.eigh(a.astype(np.float64))[1][:, -1]
    assert abs(abs(out["v"][0] @ top) - 1) < 1e-5  # the dominant eigenvector
    assert chip.machine.fast is None  # loops run on the reference machine
    # the cost model pays every iteration: the report of this run counts k MVMs
    report = chip.report()
    assert report.executed["mvm"] == k and report.executed["branch"] == k
    # fewer iterations from a better start: less work and time
    chip.run({"x": out["v"]})
    assert chip.report().executed["mvm"] < k


def test_a_loop_that_does_not_end_names_the_core_and_label(tmp_path):
    a = np.eye(4, dtype=np.float32) * 2
    chip = load(_power(tmp_path, a, -1.0))  # the change never gets below -1
    x = np.full((1, 4), 0.5, np.float32)
    with pytest.raises(ArtifactError, match=r"core_000.s:\d+: core 0 jumped back to label "
                                            r"'loop' more than 50 times"):
        chip.run({"x": x}, max_iterations=50)


def test_report_of_a_loop_needs_a_run(tmp_path):
    chip = load(_power(tmp_path, np.eye(4, dtype=np.float32), 1e-6))
    with pytest.raises(RuntimeInputError, match="run it once"):
        chip.report()


def test_deadlock_across_a_loop(tmp_path):
    # core 1 receives once per iteration but core 0 sends only once.
    prog0 = """
        .core 0 chip=0
          input a, name="x"
          send  a, to=1
          halt
    """
    prog1 = """
        .core 1 chip=0
        .const one name="one"
        top:
          recv  b, from=0
          dop   c, b, one, op="nn.add"
          branch one, label="top"
          output c, name="y"
          halt
    """
    path = write_artifact(tmp_path / "d.cimc", {0: prog0, 1: prog1},
                          {"const/one": np.ones(1, np.float32)},
                          [("x", (1, 1), "f32")], [("y", (1, 1), "f32")],
                          extra_manifest={"batch": None})
    with pytest.raises(ArtifactError, match=r"deadlock.*core 1 waits at core_001.s:\d+ "
                                            r"\(recv  b, from=0\)"):
        load(path).run({"x": np.ones((1, 1), np.float32)})


def test_the_chip_clock_runs_with_the_instructions(tmp_path):
    # time reads the run's start time plus this core's clock: three time reads around two
    # mvms of 7 vectors each (1000 ns per vector on this target) and a send of 28 bytes
    costs = {"mvm_ns": 1000.0, "digital_ns_per_element": 0.0, "link_bytes_per_ns": 1.0,
             "link_latency_ns": 0.0, "chip_link_latency_ns": 0.0}
    target = target_dict("ideal", costs=costs)
    prog = """
        .core 0 chip=0
        .xbar 0 rows=4 cols=1
          input  x, name="x"
          time   t0
          mvm    y, x, xbar=0, dac_bits=0, adc_bits=0
          time   t1
          mvm    y, x, xbar=0, dac_bits=0, adc_bits=0
          send   y, to=0
          recv   z, from=0
          time   t2
          dop    t, t0, t1, op="nn.sub"
          dop    u, t1, t2, op="nn.sub"
          output t, name="d1"
          output u, name="d2"
          output t2, name="t2"
          halt
    """
    path = write_artifact(tmp_path / "c.cimc", {0: prog},
                          {"xbar/0/0/levels": np.ones((4, 1), np.float32),
                           "xbar/0/0/scale": np.ones(1, np.float32)},
                          [("x", (7, 4), "f32")],
                          [("d1", (), "f64"), ("d2", (), "f64"), ("t2", (), "f64")],
                          target=target, extra_manifest={"batch": None})
    chip = load(path)
    assert chip.machine.fast is None  # it reads the clock: the reference machine runs it
    x = np.ones((7, 4), np.float32)
    out = chip.run({"x": x}, t=86400.0)
    io_ns = 7 * 4 * 4 / target["costs"]["chip_link_bytes_per_ns"]  # the input's bytes
    assert out["t2"] == pytest.approx(86400.0 + io_ns * 1e-9 + 2 * 7000e-9, abs=1e-12)
    assert -out["d1"] == pytest.approx(7000e-9, abs=1e-10)  # float64 seconds near 1 day
    assert -out["d2"] == pytest.approx(7000e-9, abs=1e-10)  # a send to itself is free
    # after t2: two subtractions (free here) and three outputs over the I/O link
    assert chip.last_run.timeline.clock[0] == pytest.approx(
        (out["t2"] - 86400.0) * 1e9 + 3 * 8 / target["costs"]["chip_link_bytes_per_ns"])


def _noisy_conv(tmp_path: Path) -> Path:
    prog = """
        .core 0 chip=0
        .xbar 0 rows=18 cols=3
          input  a0, name="x"
          im2col a1, a0, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]
          mvm    p0, a1, xbar=0, dac_bits=8, dac_range=2.0, adc_bits=8, adc_range=6.0
          dop    p1, p0, op="nn.relu"
          output p1, name="y"
          halt
    """
    levels = RNG.integers(-100, 101, (18, 3)).astype(np.int8)
    return write_artifact(tmp_path / "n.cimc", {0: prog},
                          {"xbar/0/0/levels": levels,
                           "xbar/0/0/scale": np.full(3, 0.02, np.float32)},
                          [("x", (1, 2, 5, 5), "f32")], [("y", (1, 5, 5, 3), "f32")],
                          target="hermes64")


def test_fast_and_reference_agree_in_distribution_with_read_noise(tmp_path):
    # The same chip instance, 400 runs each: per output, the means agree within sampling
    # error and so do the variances.
    path = _noisy_conv(tmp_path)
    x = RNG.uniform(-1.5, 1.5, (1, 2, 5, 5)).astype(np.float32)
    xs = np.repeat(x, 400, axis=0)  # 400 reads of the same input in one run
    with load(path, seed=9, workers=1) as chip:
        fast = chip.run({"x": xs}, t=3600.0)["y"].astype(np.float64)
        ref = chip.run({"x": xs}, t=3600.0, reference=True)["y"].astype(np.float64)
        top = 6.0 * chip.machine.at(3600.0, True).crossbars[(0, 0)].gain  # the ADC's clip
    exact = load(path, seed=9).run({"x": x}, t=3600.0, noise=False)["y"][0]
    n = len(xs)
    for a in (fast, ref):
        assert not np.array_equal(a[0], a[1])  # fresh noise on every read
    sd = np.sqrt((fast.var(0) + ref.var(0)) / 2) + 1e-3
    z = (fast.mean(0) - ref.mean(0)) / (sd * np.sqrt(2 / n))
    assert np.abs(z).max() < 5
    # outputs with noise worth comparing: above the ADC's steps, away from ReLU's 0 and from
    # the ADC's clip (where the variance comes from a few samples)
    mean = (fast.mean(0) + ref.mean(0)) / 2
    busy = (sd > 0.02) & (mean > 4 * sd) & (mean < top - 4 * sd)
    assert busy.sum() >= 10
    ratio = fast.var(0)[busy] / ref.var(0)[busy]
    assert np.all(np.abs(ratio - 1) < 5 * np.sqrt(2 / n) + 0.05)
    assert np.abs(fast.mean(0) - exact).max() < 0.2  # noise around the noiseless values
