"""A chip instance's crossbars (cimc.runtime.crossbars, cimc.runtime.machine.Frozen): programmed
from one random stream per crossbar, made at a time as runs ask for them, kept per time.

The programming draws changed with issue 13 (one stream per crossbar, the table normals of
``device.normal_f32``, curves evaluated per level): the statistics of the programmed devices
are checked here against the programming as it was before (numpy's normals, one stream for the
whole chip, every curve per device in float64), written out below.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from runtime_kit import write_artifact

from cimc.runtime import device as dv
from cimc.runtime import load
from cimc.runtime.crossbars import crossbar_at
from cimc.targets import load_target

RNG = np.random.default_rng(99)


def chain(tmp_path: Path, sizes: list[int], target: str = "hermes64", name: str = "c.cimc",
          levels: list[np.ndarray] | None = None) -> Path:
    """One core per layer, each one crossbar: x [N, sizes[0]] -> y [N, sizes[-1]]."""
    programs, weights = {}, {}
    n = len(sizes) - 1
    for i in range(n):
        rows, cols = sizes[i], sizes[i + 1]
        first = 'input a0, name="x"' if i == 0 else f"recv a0, from={i - 1}"
        last = 'output p0, name="y"' if i == n - 1 else f"send p0, to={i + 1}"
        programs[i] = f"""
            .core {i} chip=0
            .xbar 0 rows={rows} cols={cols} layer="l{i}" tile=[0, 0]
              {first}
              mvm p0, a0, xbar=0, dac_bits=8, dac_range=2.0, adc_bits=8, adc_range=8.0
              {last}
              halt
        """
        lv = RNG.integers(-127, 128, (rows, cols)) if levels is None else levels[i]
        weights[f"xbar/{i}/0/levels"] = np.asarray(lv, np.int8)
        weights[f"xbar/{i}/0/scale"] = np.full(cols, 0.02, np.float32)
    return write_artifact(tmp_path / name, programs, weights, [("x", (1, sizes[0]), "f32")],
                          [("y", (1, sizes[-1]), "f32")], target=target)


# ------------------------------------------------------------------------------ streams


def test_each_crossbar_has_its_own_stream(tmp_path):
    same = RNG.integers(-127, 128, (24, 24))
    path = chain(tmp_path, [24, 24, 24], levels=[same, same])
    chip = load(path, seed=7)
    a, b = (chip.machine.programmed((c, 0))[0] for c in (0, 1))
    assert not np.array_equal(a.g, b.g)  # the same levels, other devices
    # a crossbar's devices do not depend on the others: the same first layer in a longer chip
    longer = load(chain(tmp_path, [24, 24, 24, 8], levels=[same, same, same[:, :8]],
                        name="d.cimc"), seed=7)
    np.testing.assert_array_equal(longer.machine.programmed((0, 0))[0].g, a.g)
    np.testing.assert_array_equal(longer.machine.programmed((1, 0))[0].nu, b.nu)


def test_programming_follows_the_seed_pinned():
    """The draws of a seed are part of the contract (the seed reproduces a chip): stream
    (seed, 0, core, crossbar), normals for the programming noise of each level's device and of
    its partner, then their drift exponents, in turn."""
    m = dv.DeviceModel.from_target(load_target("hermes64"))
    levels = np.array([[100, -50, 0, 7]])
    index, values = dv.level_index(levels, 127)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(5, spawn_key=(0, 2, 1))))
    arr = m.program(index, m.level_table(values, 127), m.normals(rng, levels.shape))
    np.testing.assert_allclose(arr.g[:, 0, 0], [[16.174982, 6.991103, 0.0, 1.103927],
                                                [0.0, 0.0, 0.0, 0.1572604]],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arr.nu[:, 0, 0], [[0.02891011, 0.05411897, 0.1493111, 0.15591297],
                                                 [0.11451432, 0.1156738, 0.07681788, 0.1506964]],
                               rtol=1e-5)
    np.testing.assert_array_equal(arr.sign, [[1, -1, 1, 1]])  # -50 is held by G-
    # what a chip of that seed programs: its crossbar 1 of core 2 draws from that stream
    from cimc.runtime.chip import _program_stream
    np.testing.assert_array_equal(_program_stream(5, 2, 1).bit_generator.random_raw(3),
                                  np.random.Generator(np.random.PCG64(np.random.SeedSequence(
                                      5, spawn_key=(0, 2, 1)))).bit_generator.random_raw(3))


# ------------------------------------------------------------------------------ distribution


def _programmed_before(m: dv.DeviceModel, levels: np.ndarray, max_level: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """G+, G-, nu+, nu- (units summed for g) as the runtime programmed them before issue 13."""
    gp, gm = dv.levels_to_conductance(levels, max_level, m.g_max)
    targets = [np.broadcast_to(g / np.float32(m.units), (m.units, *g.shape)) for g in (gp, gm)]
    g_prog = []
    for g in targets:
        sigma = dv.programming_sigma(g, m.g_max_unit, m.programming).astype(np.float32)
        xi = rng.standard_normal(g.shape, dtype=np.float32)
        g_prog.append(np.maximum(g + sigma * xi, 0.0, dtype=np.float32))
    nus = []
    for g in targets:
        x = np.asarray(g, np.float64) / m.g_max_unit
        mean = np.polynomial.polynomial.polyval(x, (0.0736, -0.0126, -0.0436))
        low = np.clip(-0.0387 * np.log(np.maximum(x, 1e-7)) - 0.0182, 0.072, 0.13)
        mean = np.where(x >= 0.0945, mean, low)
        std = np.where(x >= 0.3055, np.polynomial.polynomial.polyval(x, (0.0073, 0.0093, -0.0118)),
                       np.clip(-0.0117 * np.log(np.maximum(x, 1e-7)) - 0.0057, 0.0091, 0.04))
        xi = rng.standard_normal(g.shape, dtype=np.float32)
        nus.append(np.abs(mean + np.maximum(std, 0) * xi).astype(np.float32))
    return g_prog[0], g_prog[1], nus[0], nus[1]


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a.ravel()), np.sort(b.ravel())
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                                - np.searchsorted(b, grid, side="right") / len(b))))


@pytest.mark.parametrize("level", [0, 9, 60, 127])
def test_programming_has_the_distribution_it_had(level):
    m = dv.DeviceModel.from_target(load_target("hermes64"))
    n = 100_000
    levels = np.full((1, n), level)
    index, values = dv.level_index(levels, 127)
    now = m.program(index, m.level_table(values, 127), m.normals(np.random.default_rng(1),
                                                                  levels.shape))
    before = _programmed_before(m, levels, 127, np.random.default_rng(2))
    limit = 2.3 * math.sqrt(2 / n)  # the KS test at about 1e-4
    for got, want in zip((now.g[0], now.g[1], now.nu[0], now.nu[1]), before):
        assert _ks(got, want) < limit
        assert abs(got.mean() - want.mean()) < 0.02 * want.std()  # 4.5 standard errors
        assert abs(got.std() / want.std() - 1) < 0.015
    # and what runs see at a time: the drifted conductances and their read-noise variance
    t = 86400.0
    factor = [np.exp(-nu * np.float32(math.log1p(t / 300.0))) for nu in before[2:]]
    g_t = before[0] * factor[0] - before[1] * factor[1]
    state = now.at(t)
    assert _ks(state.g_eff, g_t) < limit
    want_var = sum(dv.read_noise_variance(g, g * f, m.g_max, t + 300.0, m.read)
                   for g, f in zip(before[:2], factor))
    assert _ks(state.read_var, want_var) < limit


# ------------------------------------------------------------------------------ made lazily


def test_crossbars_are_made_as_runs_ask_and_kept(tmp_path):
    chip = load(chain(tmp_path, [32, 16, 8]), seed=3, workers=1)
    frozen = chip.machine.at(3600.0, True)
    assert not frozen.complete and frozen.nbytes == 0
    a = frozen.crossbars[(0, 0)]
    assert frozen.crossbars[(0, 0)] is a and not frozen.complete
    want = crossbar_at(chip.machine.crossbars[(0, 0)], 3600.0, True, chip.machine.streams)
    np.testing.assert_array_equal(a.weights[0], want.weights[0])
    np.testing.assert_array_equal(a.read_vars[0], want.read_vars[0])
    assert a.gain == want.gain
    frozen.fill()
    assert frozen.complete and chip.machine.at(3600.0, True) is frozen
    assert frozen.nbytes == sum(x.nbytes for x in frozen.crossbars.values())
    with pytest.raises(KeyError):
        frozen.crossbars[(5, 0)]


def test_runs_give_the_same_numbers_however_the_crossbars_are_made(tmp_path):
    path = chain(tmp_path, [40, 24, 16, 8])
    x = RNG.uniform(-1, 1, (3, 40)).astype(np.float32)
    runs = []
    for workers, lazily in ((1, False), (2, False), (1, True)):
        with load(path, seed=4, workers=workers) as chip:
            if lazily:  # made one by one, last first
                crossbars = chip.machine.at(86400.0, True).crossbars
                for key in reversed(list(crossbars)):
                    crossbars[key]
            runs.append(chip.run({"x": x}, t=86400.0)["y"])  # else on 1 or 2 threads
    for y in runs[1:]:
        np.testing.assert_array_equal(y, runs[0])


def test_the_cache_keeps_recent_times_within_its_bytes(tmp_path, monkeypatch):
    from cimc.runtime import machine

    chip = load(chain(tmp_path, [64, 64]), seed=1)
    x = RNG.uniform(-1, 1, (2, 64)).astype(np.float32)
    one = 64 * 64 * 4 * 2  # weights and read variances
    monkeypatch.setattr(machine, "CACHE_BYTES", 2 * one)
    for t in (1.0, 2.0, 3.0):
        chip.run({"x": x}, t=t)
    assert list(chip.machine._cache) == [(2.0, True), (3.0, True)]
    chip.run({"x": x}, t=2.0)
    assert chip.machine.latest() == (2.0, True)
    monkeypatch.setattr(machine, "CACHE_BYTES", one // 2)  # the newest is kept all the same
    chip.run({"x": x}, t=4.0)
    assert list(chip.machine._cache) == [(4.0, True)]


def test_the_report_shares_the_crossbars_of_the_last_run(tmp_path):
    chip = load(chain(tmp_path, [16, 8]), seed=1)
    chip.run({"x": RNG.uniform(-1, 1, (2, 16)).astype(np.float32)}, t=50.0)
    assert chip.report().latency_ns > 0
    assert list(chip.machine._cache) == [(50.0, True)]  # no crossbars made for the trace


def test_load_and_runs_report_their_progress(tmp_path):
    calls = []
    chip = load(chain(tmp_path, [16, 8, 4]), seed=1, workers=1,
                progress=lambda *a: calls.append(a))
    assert calls == [("core programs", 1, 2), ("core programs", 2, 2)]
    x = RNG.uniform(-1, 1, (2, 16)).astype(np.float32)
    calls.clear()
    chip.run({"x": x}, t=5.0)
    assert calls == [("crossbars at t = 5 s", 1, 2), ("crossbars at t = 5 s", 2, 2)]
    calls.clear()
    chip.run({"x": x}, t=5.0)  # made already
    chip.progress = None
    chip.run({"x": x}, t=6.0)
    assert calls == []
