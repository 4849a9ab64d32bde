"""Device models: mapping, programming noise, drift, read noise, converters, drift compensation.

The expected statistics are written out here from the published formulas (DESIGN.md), not taken
from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cimc.errors import RuntimeInputError
from cimc.runtime import device as dv
from cimc.targets import load_target

N = 200_000  # devices per statistical check: std estimates to about 0.3 %


def model(name: str) -> dv.DeviceModel:
    return dv.DeviceModel.from_target(load_target(name))


def nandakumar_sigma(g: float, g_max: float) -> float:
    return (0.26348 + 1.9650 * g - 1.1731 * g**2) * (g_max / 25.0)


def hermes_sigma(g: float) -> float:
    return 0.16603 + 4.71806 * g - 8.48101 * g**2 + 4.68961 * g**3


def folded_normal(mu: float, sigma: float) -> tuple[float, float]:
    """Mean and std of |X|, X ~ N(mu, sigma): nu is drawn as |mean + std xi|."""
    phi = 0.5 * (1 + math.erf(-mu / (sigma * math.sqrt(2))))
    mean = sigma * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * (1 - 2 * phi)
    return mean, math.sqrt(mu**2 + sigma**2 - mean**2)


def neurram_sigma(g: float) -> float:
    return 0.348 + 16.030 * g - 43.853 * g**2 + 45.393 * g**3 - 16.815 * g**4


def program(m: dv.DeviceModel, levels: np.ndarray, max_level: float,
            rng: np.random.Generator) -> dv.ProgrammedArray:
    """Levels programmed the way the runtime programs a crossbar slice."""
    index, values = dv.level_index(np.asarray(levels), max_level)
    return m.program(index, m.level_table(values, max_level), m.normals(rng, np.shape(levels)))


# ---- mapping ----------------------------------------------------------------------------------


def test_quantize_weights_maps_max_to_top_level():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 32))
    q, step = dv.quantize_weights(w, 8)
    assert q.dtype == np.int32 and np.abs(q).max() == 8
    assert step.shape == () and np.isclose(step * 8, np.abs(w).max())
    assert np.all(np.abs(q * step - w) <= step / 2 + 1e-12)


def test_quantize_weights_per_column_and_zero_column():
    w = np.array([[1.0, 0.0, -0.5], [-2.0, 0.0, 0.25]])
    q, step = dv.quantize_weights(w, 7, per_column=True)
    assert step.shape == (1, 3)
    np.testing.assert_array_equal(q, [[4, 0, -7], [-7, 0, 4]])
    np.testing.assert_allclose(step.ravel(), [2 / 7, 1 / 7, 0.5 / 7])


def test_slices_round_trip():
    rng = np.random.default_rng(2)
    q = rng.integers(-127, 128, size=(50, 40))
    digits = dv.slice_levels(q, base=7, slices=3)
    assert digits.shape == (3, 50, 40) and np.abs(digits).max() == 3
    assert (digits[-1] == 3).any() and (digits[-1] == -3).any()  # the top digit's whole range
    np.testing.assert_array_equal(dv.combine_slices(digits, 7), q)
    np.testing.assert_array_equal(dv.slice_levels(np.array([171, -171]), 7, 3).T,
                                  [[3, 3, 3], [-3, -3, -3]])
    with pytest.raises(ValueError, match="more than 3 balanced base-7 digits"):
        dv.slice_levels(np.array([172]), base=7, slices=3)


def test_levels_to_conductance_differential_pair():
    q = np.array([[8, -8], [3, 0]])
    gp, gm = dv.levels_to_conductance(q, 8, 25.0)
    np.testing.assert_allclose(gp, [[25.0, 0.0], [9.375, 0.0]])
    np.testing.assert_allclose(gm, [[0.0, 25.0], [0.0, 0.0]])
    assert gp.dtype == np.float32


# ---- programming noise ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "g", "sigma"), [
    ("pcm40", 0.5, nandakumar_sigma(0.5, 25.0)),
    ("pcm40", 1.0, nandakumar_sigma(1.0, 25.0)),
    ("hermes64", 0.3, hermes_sigma(0.3)),
    ("hermes64", 0.9, hermes_sigma(0.9)),
    ("neurram48", 0.5, neurram_sigma(0.5)),
    ("neurram48", 0.8, neurram_sigma(0.8)),
])
def test_programming_noise_std_matches_the_fit(name, g, sigma):
    m = model(name)
    arr = program(m, np.full(N, round(10 * g)), 10, np.random.default_rng(4))
    err = arr.g[0, 0] - g * m.g_max  # G+ of positive levels
    assert abs(err.std() / sigma - 1) < 0.02
    assert abs(err.mean()) < 4 * sigma / np.sqrt(N)
    minus = arr.g[1, 0]  # G- of positive levels: target 0, the noise's positive half
    assert minus.min() == 0.0 and 0.45 < np.mean(minus == 0.0) < 0.55


def test_programming_noise_scales_with_g_max():
    m = model("pcm40")
    assert np.isclose(dv.programming_sigma(np.array(6.25), 12.5, m.programming),
                      nandakumar_sigma(0.5, 12.5))
    assert np.isclose(nandakumar_sigma(0.5, 12.5), 0.5 * nandakumar_sigma(0.5, 25.0))


def test_programmed_conductance_is_never_negative():
    m = model("pcm40")
    g_prog = program(m, np.zeros(N, np.int8), 8, np.random.default_rng(5)).g
    assert g_prog.min() == 0.0
    assert 0.45 < np.mean(g_prog == 0.0) < 0.55  # the negative half is clipped to 0


def test_programming_draws_one_stream_in_order():
    """Programming noise of the device holding each level and of its partner, then the drift
    exponents of the same two, from one draw; the holder is G+ for a level >= 0, else G-."""
    m = model("pcm40")
    levels = np.random.default_rng(0).integers(-8, 9, (6, 5))
    arr = program(m, levels, 8, np.random.default_rng(21))
    z = dv.normal_f32(np.random.default_rng(21), 4 * levels.size).reshape(4, 1, 6, 5)
    holder = dv.levels_to_conductance(np.abs(levels), 8, m.g_max)[0]
    for side, g_t in enumerate((holder, np.zeros_like(holder))):
        sigma = dv.programming_sigma(g_t, m.g_max, m.programming).astype(np.float32)
        np.testing.assert_allclose(arr.g[side, 0], np.maximum(g_t + sigma * z[side, 0], 0),
                                   rtol=1e-6, atol=1e-6)
        mean, std = dv.drift_exponent_stats(g_t, m.g_max, m.drift)
        np.testing.assert_allclose(arr.nu[side, 0], np.abs(mean + std * z[2 + side, 0]),
                                   rtol=1e-5, atol=1e-7)
    g_plus, g_minus = arr.polarities(arr.g)
    np.testing.assert_array_equal(g_plus[0], np.where(levels >= 0, arr.g[0, 0], arr.g[1, 0]))
    np.testing.assert_array_equal(arr.at(0.0).g_eff, g_plus[0] - g_minus[0])
    assert (g_minus[0][levels > 0] < 0.3 * m.g_max / 8).all()  # G- of a positive level: ~0


# ---- drift ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "g", "mean", "std"), [
    # Nandakumar: clip(-0.0155 ln g + 0.0244, 0.049, 0.1), clip(-0.0125 ln g - 0.0059, .008, .045)
    ("pcm40", 0.5, 0.049, 0.008),
    ("pcm40", 0.02, -0.0155 * np.log(0.02) + 0.0244, -0.0125 * np.log(0.02) - 0.0059),
    # HERMES: -0.0436 g^2 - 0.0126 g + 0.0736 for g >= 0.0945, spread poly for g >= 0.3055
    ("hermes64", 0.5, -0.0436 * 0.25 - 0.0126 * 0.5 + 0.0736, -0.0118 * 0.25 + 0.0093 * 0.5
     + 0.0073),
    ("hermes64", 0.05, -0.0387 * np.log(0.05) - 0.0182, -0.0117 * np.log(0.05) - 0.0057),
])
def test_drift_exponent_statistics(name, g, mean, std):
    m = model(name)
    nu = program(m, np.full(N, round(100 * g)), 100, np.random.default_rng(6)).nu[0]
    assert nu.min() >= 0
    mean, std = folded_normal(mean, std)
    assert abs(nu.mean() / mean - 1) < 0.01
    assert abs(nu.std() / std - 1) < 0.03


def test_hermes_mean_drift_is_within_the_published_band_at_low_g():
    m = model("hermes64")
    mean, _ = dv.drift_exponent_stats(np.linspace(0, 0.09, 50) * m.g_max, m.g_max, m.drift)
    assert mean.min() >= 0.072 and mean.max() <= 0.13


def test_drift_law():
    g = np.array([10.0, 10.0], np.float32)
    nu = np.array([0.05, 0.1], np.float32)
    np.testing.assert_array_equal(dv.drifted(g, nu, 0.0, 20.0), g)
    t = 86400.0
    expected = 10.0 * ((t + 20.0) / 20.0) ** -nu.astype(np.float64)
    np.testing.assert_allclose(dv.drifted(g, nu, t, 20.0), expected, rtol=1e-5)
    with pytest.raises(RuntimeInputError, match="time since programming"):
        dv.drift_factor(nu, -1.0, 20.0)


# ---- read noise -------------------------------------------------------------------------------


def test_pcm_read_noise_variance_formula():
    m = model("pcm40")
    g_prog = np.array([5.0, 20.0], np.float32)
    g_now = 0.8 * g_prog
    elapsed = 3600.0
    var = dv.read_noise_variance(g_prog, g_now, m.g_max, elapsed, m.read)
    g = g_prog / 25.0
    q_s = np.minimum(0.0088 / np.maximum(g**0.65, 1e-3), 0.2)
    rel = q_s * np.sqrt(np.log((elapsed + 250e-9) / (2 * 250e-9)))
    np.testing.assert_allclose(var, (rel * g_now) ** 2, rtol=1e-5)


def test_rram_additive_read_noise_and_no_drift():
    m = model("neurram48")
    assert m.drift is None
    arr = program(m, np.full((8, 8), 4), 8, np.random.default_rng(9))
    s0, s1 = arr.at(0.0), arr.at(1e6)
    np.testing.assert_array_equal(s0.g_eff, s1.g_eff)
    np.testing.assert_allclose(s0.read_var, 2 * (0.01 * 40.0) ** 2, rtol=1e-6)


def test_read_noise_variance_of_an_array_is_its_devices():
    m = model("hermes64")
    levels = np.random.default_rng(0).integers(-127, 128, (40, 30))
    arr = program(m, levels, 127, np.random.default_rng(10))
    t = 3600.0
    g_now = arr.conductances(t)
    want = sum(dv.read_noise_variance(arr.g[side, 0], g_now[side, 0], m.g_max, t + 300.0,
                                      m.read) for side in (0, 1))
    np.testing.assert_allclose(arr.at(t).read_var, want, rtol=1e-6)


def test_curves_are_the_same_in_float32_and_float64():
    m = model("hermes64")
    g = np.random.default_rng(1).uniform(0, 1.2, 1000)
    for curve in (m.read.q_s, m.drift.nu_mean, m.drift.nu_std):
        np.testing.assert_allclose(dv.eval_curve(curve, g.astype(np.float32)),
                                   dv.eval_curve(curve, g), rtol=1e-5, atol=1e-7)
    g64 = np.maximum(g, dv.G_FLOOR)
    want = np.where(g64 >= 0.16, np.polynomial.polynomial.polyval(g64, [0.0123, 0.0211, -0.0280,
                                                                        0.0069]),
                    np.clip(-0.0117 * np.log(g64) - 0.0069, 0.015, 0.04))
    np.testing.assert_allclose(dv.eval_curve(m.read.q_s, g), want, rtol=1e-12)


# ---- chip instance: determinism, splitting, ideal --------------------------------------------


def programmed(name: str, seed: int) -> dv.ProgrammedArray:
    q = np.random.default_rng(0).integers(-8, 9, (32, 16))
    return program(model(name), q, 8, np.random.default_rng(seed))


@pytest.mark.parametrize("name", ["pcm40", "hermes64", "neurram48"])
def test_same_seed_same_chip(name):
    a, b, c = programmed(name, 11), programmed(name, 11), programmed(name, 12)
    np.testing.assert_array_equal(a.g, b.g)
    np.testing.assert_array_equal(a.at(3600).g_eff, b.at(3600).g_eff)
    assert not np.array_equal(a.g, c.g)


def test_programming_by_blocks_of_rows_is_programming_the_whole():
    m = model("hermes64")
    levels = np.random.default_rng(2).integers(-127, 128, (12, 7))
    index, values = dv.level_index(levels, 127)
    table, z = m.level_table(values, 127), m.normals(np.random.default_rng(3), levels.shape)
    whole = m.program(index, table, z)
    for rows in (slice(0, 5), slice(5, 12)):
        part = m.program(index[rows], table, z[:, :, rows])
        np.testing.assert_array_equal(part.g, whole.g[:, :, rows])
        np.testing.assert_array_equal(part.at(1e5).read_var, whole.at(1e5).read_var[rows])


def test_polarity_split_over_independent_units():
    base = model("pcm40")
    split = dv.DeviceModel("pcm", base.g_max, units=2, programming=base.programming,
                           drift=base.drift, read=base.read)
    arr = program(split, np.full((200, 200), 6), 10, np.random.default_rng(13))
    assert arr.g.shape == (2, 2, 200, 200)
    # each unit targets half the conductance, with its own G_max of g_max / 2
    sigma_unit = nandakumar_sigma(0.6, base.g_max / 2)
    g_plus = arr.g[0]
    assert abs(g_plus.mean() / (0.3 * base.g_max) - 1) < 0.01
    assert abs(g_plus.sum(axis=0).std() / (np.sqrt(2) * sigma_unit) - 1) < 0.03
    np.testing.assert_allclose(arr.at(0.0).g_eff, g_plus.sum(0) - arr.g[1].sum(0), rtol=1e-6)


def test_float_levels_are_programmed_by_their_distinct_values():
    m = model("hermes64")
    levels = np.array([[0.5, -2.25, 0.0], [2.25, 3.0, -0.5]], np.float32)
    index, values = dv.level_index(levels, 3.0)
    np.testing.assert_array_equal(values, [0.0, 0.5, 2.25, 3.0])
    np.testing.assert_array_equal(np.sign(index) * values[np.abs(index)], levels)
    arr = program(m, np.repeat(levels, 4000, axis=0), 3.0, np.random.default_rng(3))
    assert abs(arr.g[0, 0, 4000:, 1].mean() / m.g_max - 1) < 0.02  # level 3.0: g_max


def test_ideal_model_is_exact():
    m = model("ideal")
    assert m.noiseless
    q = np.random.default_rng(14).integers(-8, 9, (20, 10))
    state = program(m, q, 8, np.random.default_rng(14)).at(1e7)
    assert state.read_var is None
    np.testing.assert_allclose(state.g_eff * np.float32(8 / m.g_max), q, rtol=1e-6)


def test_program_refuses_out_of_range_targets():
    m = model("pcm40")
    with pytest.raises(ValueError, match=r"\[0, 25.0\]"):
        program(m, np.array([9]), 8, np.random.default_rng(0))


# ---- global drift compensation ----------------------------------------------------------------


def test_gdc_undoes_a_uniform_drift():
    rng = np.random.default_rng(15)
    g0 = rng.uniform(-20, 20, (64, 16)).astype(np.float32)
    ref = dv.gdc_reference(g0)
    assert np.isclose(dv.gdc_factor(ref, 0.7 * g0), 1 / 0.7, rtol=1e-5)
    assert dv.gdc_factor(ref, np.zeros_like(g0)) == 1.0


def test_gdc_restores_outputs_after_a_day_of_pcm_drift():
    m = model("pcm40")
    rng = np.random.default_rng(16)
    q = rng.integers(-8, 9, (128, 32))
    arr = program(m, q, 8, rng)
    g0, g_day = arr.at(0.0).g_eff, arr.at(86400.0).g_eff
    x = rng.standard_normal((200, 128)).astype(np.float32)
    y0, y_day = x @ g0, x @ g_day
    factor = dv.gdc_factor(dv.gdc_reference(g0), g_day)
    assert factor > 1.2  # a day of drift lowers conductances by a fifth or more
    assert np.linalg.norm(y_day * factor - y0) < 0.5 * np.linalg.norm(y_day - y0)


def test_device_models_know_no_chip_by_name():
    from pathlib import Path

    from cimc.targets import list_targets

    source = Path(dv.__file__).read_text()
    assert not [name for name in list_targets() if name in source]
