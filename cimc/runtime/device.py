"""Device models of analog crossbars: numpy functions of a target's numbers.

Nothing here knows a chip by name: every function takes the numbers (or the schema sections of
:mod:`cimc.targets.schema`) it needs. Units: conductances in µS, times in seconds. All randomness
comes from a passed :class:`numpy.random.Generator`, so the same seed gives the same chip.

The pieces, in the order a weight meets them:

1. Weight to levels (the compiler's ``quantize`` pass): ``quantize_weights`` scales a tile (or
   each column) so max|W| maps to the largest level and rounds, ``w ~ q * step``;
   ``slice_levels`` splits ``q`` into balanced base-``2*levels - 1`` digits for bit-sliced
   targets (the emitter writes them; the runtime programs each digit on its own device pair).
2. Levels to conductance: ``levels_to_conductance`` puts the positive part on G+ and the negative
   part on G-, ``|q|/max_level * g_max`` per polarity.
3. Programming (once per chip instance, :meth:`DeviceModel.program`): each polarity's target is
   split equally over its units (``devices_per_weight/2/fit_devices``); each unit gets programming
   noise ``max(G_T + sigma(g) xi, 0)`` and, for drifting devices, a drift exponent
   ``nu = |mean(g) + std(g) xi|``.
4. At time t (:meth:`ProgrammedArray.at`): drift ``G(t) = G_prog ((t + t0)/t0)^-nu`` and the
   variance of the read noise of every cell. The device clock follows IBM aihwkit's convention:
   t = 0 is the first read after programming, taken t0 seconds after programming (the drift
   reference), so drift and 1/f noise use the elapsed time ``t + t0``.
5. At every read: read noise, 1/f (relative to the drifted conductance) and additive, redrawn
   for every vector: the column sum of an input ``x`` gets ``N(0, (x*x) @ var)``, with standard
   normals from :func:`normal_f32`.
6. Global drift compensation: ``gdc_reference`` after programming, ``gdc_factor`` at time t.

The converters (DAC, ADC) are ``cimc.ops.xbar.dac_codes`` and ``cimc.ops.xbar.adc``, shared with
the compiler's interpreter.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cimc.errors import RuntimeInputError
from cimc.targets.schema import Drift, Piece, ProgrammingNoise, ReadNoise, Target

# Normalised conductances below this are treated as this value in ln(g) and g^p.
G_FLOOR = 1e-7

# --------------------------------------------------------------------------------------------
# Piecewise curves of the normalised conductance g = G/G_max
# --------------------------------------------------------------------------------------------


def _eval_piece(piece: Piece, g: np.ndarray) -> np.ndarray:
    if piece.poly:
        out = np.polynomial.polynomial.polyval(g, piece.poly)
    elif piece.log_linear:
        a, b = piece.log_linear
        out = a * np.log(g) + b
    else:
        c, p = piece.power
        out = c * np.power(g, p)
    if piece.clip:
        out = np.clip(out, piece.clip[0], piece.clip[1])
    return np.asarray(out, dtype=g.dtype)


def eval_curve(curve: Sequence[Piece], g: np.ndarray) -> np.ndarray:
    """Evaluate a piecewise curve at normalised conductances ``g`` (floored at G_FLOOR)."""
    g = np.maximum(np.asarray(g, dtype=np.float64), G_FLOOR)
    if len(curve) == 1:
        return _eval_piece(curve[0], g)
    index = np.searchsorted([p.from_g for p in curve[1:]], g, side="right")
    out = np.empty_like(g)
    for i, piece in enumerate(curve):
        mask = index == i
        if mask.any():
            out[mask] = _eval_piece(piece, g[mask])
    return out


# --------------------------------------------------------------------------------------------
# Weights to integer levels to conductances
# --------------------------------------------------------------------------------------------


def weight_max_abs(w: np.ndarray, per_column: bool = False) -> np.ndarray:
    """max|W| of the tile (shape ``()``) or of each column (last axis; shape ``[..., 1, M]``).

    All-zero tiles or columns give 1, so dividing by the result is always safe.
    """
    w = np.asarray(w)
    if per_column:
        m = np.max(np.abs(w), axis=-2, keepdims=True) if w.ndim >= 2 else np.abs(w)
    else:
        m = np.max(np.abs(w)) if w.size else np.float64(0.0)
    m = np.asarray(m, dtype=np.float64)
    return np.where(m > 0, m, 1.0)


def quantize_weights(w: np.ndarray, max_level: int,
                     per_column: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Integer levels ``q`` in [-max_level, max_level] and ``step`` with ``w ~ q * step``.

    ``step`` is ``max|W| / max_level`` of the tile, or of each column with ``per_column``.
    """
    if max_level < 1:
        raise ValueError(f"max_level must be >= 1, got {max_level}")
    step = weight_max_abs(w, per_column) / max_level
    q = np.clip(np.rint(np.asarray(w, dtype=np.float64) / step), -max_level, max_level)
    return q.astype(np.int32), step


def slice_levels(q: np.ndarray, base: int, slices: int) -> np.ndarray:
    """Balanced base-``base`` digits of ``q``, least significant first: ``[slices, *q.shape]``,
    each in ``[-(base-1)/2, (base-1)/2]`` (``base`` odd: a device pair stores negative and
    positive digits alike, so every digit uses the pair's whole range). ``combine_slices``
    inverts this. ``|q|`` must be at most ``(base**slices - 1) / 2``."""
    q = np.asarray(q, dtype=np.int64)
    half = (base - 1) // 2
    if q.size and int(np.abs(q).max()) > (base**slices - 1) // 2:
        raise ValueError(f"|q| up to {int(np.abs(q).max())} needs more than {slices} balanced "
                         f"base-{base} digits")
    digits = np.empty((slices, *q.shape), dtype=np.int32)
    rest = q
    for s in range(slices):
        d = (rest + half) % base - half
        digits[s] = d
        rest = (rest - d) // base
    return digits


def combine_slices(digits: np.ndarray, base: int) -> np.ndarray:
    """Inverse of ``slice_levels``: ``sum_s digits[s] * base**s``."""
    weights = base ** np.arange(digits.shape[0], dtype=np.int64)
    return np.tensordot(weights, np.asarray(digits, dtype=np.int64), axes=1)


def levels_to_conductance(q: np.ndarray, max_level: int,
                          g_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Target conductances (µS, float32) of G+ and G-: ``|q|/max_level * g_max`` on the side of
    q's sign, 0 on the other. A weight is then ``w ~ (G+ - G-) * step * max_level / g_max``."""
    q = np.asarray(q)
    unit = np.float32(g_max / max_level)
    g_plus = np.maximum(q, 0).astype(np.float32) * unit
    g_minus = np.maximum(-q, 0).astype(np.float32) * unit
    return g_plus, g_minus


# --------------------------------------------------------------------------------------------
# Programming noise, drift and read noise
# --------------------------------------------------------------------------------------------


def programming_sigma(g_target: np.ndarray, g_max: float,
                      noise: ProgrammingNoise) -> np.ndarray:
    """sigma(g) in µS: the fitted polynomial in g = G_T/g_max, scaled by g_max/fit_g_max."""
    g = np.asarray(g_target, dtype=np.float64) / g_max
    sigma = np.polynomial.polynomial.polyval(g, noise.coeffs_us)
    return np.maximum(sigma * (g_max / noise.fit_g_max_us), 0.0)


def program(g_target: np.ndarray, g_max: float, noise: ProgrammingNoise | None,
            rng: np.random.Generator) -> np.ndarray:
    """Programmed conductances ``max(G_T + sigma(g) xi, 0)`` (float32); exact without noise."""
    g_target = np.asarray(g_target, dtype=np.float32)
    if noise is None:
        return g_target.copy()
    sigma = programming_sigma(g_target, g_max, noise).astype(np.float32)
    xi = rng.standard_normal(g_target.shape, dtype=np.float32)
    return np.maximum(g_target + sigma * xi, 0.0, dtype=np.float32)


def drift_exponent_stats(g_target: np.ndarray, g_max: float,
                         drift: Drift) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the drift exponent nu at each target conductance."""
    g = np.asarray(g_target, dtype=np.float64) / g_max
    return eval_curve(drift.nu_mean, g), np.maximum(eval_curve(drift.nu_std, g), 0.0)


def draw_drift_exponents(g_target: np.ndarray, g_max: float, drift: Drift,
                         rng: np.random.Generator) -> np.ndarray:
    """nu = |mean(g) + std(g) xi|, drawn once per device (float32)."""
    mean, std = drift_exponent_stats(g_target, g_max, drift)
    xi = rng.standard_normal(np.shape(g_target), dtype=np.float32)
    return np.abs(mean + std * xi).astype(np.float32)


def check_time(t: float) -> float:
    t = float(t)
    if not np.isfinite(t) or t < 0:
        raise RuntimeInputError(f"time since programming must be a finite number of seconds "
                                f">= 0, got {t}")
    return t


def drift_factor(nu: np.ndarray, t: float, t0: float) -> np.ndarray:
    """``((t + t0)/t0)^-nu``: 1 at t = 0 (the first read, t0 after programming)."""
    log_ratio = np.log1p(check_time(t) / t0)
    return np.exp(-np.asarray(nu, dtype=np.float32) * np.float32(log_ratio))


def drifted(g_prog: np.ndarray, nu: np.ndarray, t: float, t0: float) -> np.ndarray:
    """PCM drift ``G(t) = G_prog ((t + t0)/t0)^-nu``."""
    return g_prog * drift_factor(nu, t, t0)


def one_over_f_scale(elapsed: float, t_read: float) -> float:
    """sqrt(ln((elapsed + t_read)/(2 t_read))), 0 before one read time has passed."""
    return float(np.sqrt(max(np.log((elapsed + t_read) / (2.0 * t_read)), 0.0)))


def one_over_f_amplitude(g_prog: np.ndarray, g_max: float, read: ReadNoise) -> np.ndarray | None:
    """Q_s(G_prog/g_max) per device (float32), or None without 1/f noise."""
    if not read.q_s:
        return None
    return eval_curve(read.q_s, np.asarray(g_prog) / g_max).astype(np.float32)


def read_noise_variance(g_prog: np.ndarray, g_now: np.ndarray, g_max: float, elapsed: float,
                        read: ReadNoise, q_s: np.ndarray | None = None) -> np.ndarray:
    """Variance (µS²) of one read of each device: 1/f noise of relative sigma
    ``Q_s(G_prog/g_max) * one_over_f_scale`` on |G(t)|, plus additive ``additive_rel * g_max``.

    ``q_s`` may pass ``one_over_f_amplitude(g_prog, ...)`` computed once at programming time.
    """
    var = np.zeros(np.shape(g_now), dtype=np.float32)
    if read.q_s:
        q_s = one_over_f_amplitude(g_prog, g_max, read) if q_s is None else q_s
        rel = q_s * np.float32(one_over_f_scale(elapsed, read.t_read_s))
        var += np.square(rel * np.abs(g_now))
    if read.additive_rel:
        var += np.float32((read.additive_rel * g_max) ** 2)
    return var


# --------------------------------------------------------------------------------------------
# Standard normals of the read noise
# --------------------------------------------------------------------------------------------

# Each read-noise normal comes from 16 random bits through a table of quantiles.
NORMAL_TABLE_BITS = 16


@functools.cache
def normal_table() -> np.ndarray:
    """float32 ``[2^16]``: the standard normal's quantiles at the cell midpoints
    ``(i + 1/2) / 2^16`` (made exactly symmetric), scaled so that the table's variance is
    exactly 1. The largest entry, 4.325, is the tail cut-off."""
    n = 1 << NORMAL_TABLE_BITS
    nd = statistics.NormalDist()
    upper = np.array([nd.inv_cdf((i + 0.5) / n) for i in range(n // 2, n)])
    q = np.concatenate([-upper[::-1], upper])
    q /= math.sqrt(float(np.mean(q * q)))
    return q.astype(np.float32)


def normal_f32(rng: np.random.Generator, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """``n`` standard normal float32 samples (in ``out`` when given), by inversion through
    :func:`normal_table`: each takes 16 bits of the generator's raw output (one 64-bit draw gives
    four) and looks its quantile up. A discrete distribution of 2^16 equally likely values that
    matches the normal's distribution function at every multiple of 2^-16, with mean 0 and
    variance exactly 1 and no samples beyond ±4.325 (the normal puts 1.5e-5 of its mass there).
    Draws made one after another use the random stream as one draw of their total would, when
    every draw but the last takes a multiple of 4 samples."""
    raw = rng.bit_generator.random_raw((n + 3) // 4)
    out = np.empty(n, np.float32) if out is None else out
    # mode="wrap" skips the bounds check; every uint16 index is in range
    np.take(normal_table(), raw.view(np.uint16)[:n], out=out, mode="wrap")
    return out


# --------------------------------------------------------------------------------------------
# Global drift compensation
# --------------------------------------------------------------------------------------------


def gdc_probe(rows: int, n: int = 32) -> np.ndarray:
    """The known input pushed through a tile: ``n`` fixed ±1 vectors of length ``rows``.

    Part of the chip, not of an instance: the same for every seed.
    """
    return np.random.default_rng(0x6DC).choice(np.array([-1.0, 1.0], np.float32), (n, rows))


def gdc_reference(g_eff: np.ndarray, probe: np.ndarray | None = None) -> float:
    """Mean |output| of the probe through a tile's effective conductances (taken at t = 0)."""
    probe = gdc_probe(g_eff.shape[-2]) if probe is None else probe
    return float(np.mean(np.abs(probe @ g_eff)))


def gdc_factor(reference: float, g_eff_t: np.ndarray,
               probe: np.ndarray | None = None) -> float:
    """Output scale at time t: reference / mean |probe @ G(t)| (1 when either is 0)."""
    now = gdc_reference(g_eff_t, probe)
    return reference / now if now > 0 and reference > 0 else 1.0


# --------------------------------------------------------------------------------------------
# A device model and a programmed array
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceModel:
    """The statistical model of one target's devices.

    ``g_max`` is one polarity's maximum conductance, split over ``units`` independently
    modelled units (``devices_per_weight / 2 / fit_devices``).
    """

    kind: str
    g_max: float
    units: int = 1
    programming: ProgrammingNoise | None = None
    drift: Drift | None = None
    read: ReadNoise | None = None

    @classmethod
    def from_target(cls, target: Target) -> DeviceModel:
        dev = target.device
        return cls(kind=dev.kind, g_max=dev.g_max_us, units=target.units_per_polarity,
                   programming=dev.programming_noise, drift=dev.drift, read=dev.read_noise)

    @property
    def g_max_unit(self) -> float:
        return self.g_max / self.units

    @property
    def noiseless(self) -> bool:
        return self.programming is None and self.drift is None and self.read is None

    def program(self, g_plus: np.ndarray, g_minus: np.ndarray,
                rng: np.random.Generator) -> ProgrammedArray:
        """Program target conductances (µS per polarity, e.g. from ``levels_to_conductance``).

        Draw order (fixed, so a seed reproduces a chip): programming noise of G+ then G-, then
        the drift exponents of G+ then G-.
        """
        targets = [self._split(g) for g in (g_plus, g_minus)]
        progs = [program(g, self.g_max_unit, self.programming, rng) for g in targets]
        nus: list[np.ndarray | None] = [None, None]
        if self.drift is not None:
            nus = [draw_drift_exponents(g, self.g_max_unit, self.drift, rng) for g in targets]
        q_s: list[np.ndarray | None] = [None, None]
        if self.read is not None:
            q_s = [one_over_f_amplitude(g, self.g_max_unit, self.read) for g in progs]
        return ProgrammedArray(self, progs[0], progs[1], nus[0], nus[1], q_s[0], q_s[1])

    def _split(self, g: np.ndarray) -> np.ndarray:
        g = np.asarray(g, dtype=np.float32)
        if g.min(initial=0.0) < 0 or g.max(initial=0.0) > self.g_max * (1 + 1e-6):
            raise ValueError(f"target conductances must lie in [0, {self.g_max}] µS")
        return np.broadcast_to(g / np.float32(self.units), (self.units, *g.shape))


@dataclass(frozen=True)
class ProgrammedArray:
    """One crossbar tile of a chip instance: programmed conductances ``[units, R, C]`` per
    polarity, each device's drift exponent (drifting devices) and 1/f amplitude Q_s (PCM)."""

    model: DeviceModel
    g_plus: np.ndarray
    g_minus: np.ndarray
    nu_plus: np.ndarray | None = None
    nu_minus: np.ndarray | None = None
    q_s_plus: np.ndarray | None = None
    q_s_minus: np.ndarray | None = None

    def conductances(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """G+ and G- (``[units, R, C]``) at time t, drift applied."""
        drift = self.model.drift
        if drift is None:
            check_time(t)
            return self.g_plus, self.g_minus
        return (drifted(self.g_plus, self.nu_plus, t, drift.t0_s),
                drifted(self.g_minus, self.nu_minus, t, drift.t0_s))

    def at(self, t: float) -> ArrayState:
        """The tile at time t: effective conductances (G+ - G-, µS) and read-noise variance."""
        gp, gm = self.conductances(t)
        g_eff = (gp.sum(axis=0) - gm.sum(axis=0)).astype(np.float32)
        read = self.model.read
        if read is None:
            return ArrayState(g_eff)
        elapsed = t + (self.model.drift.t0_s if self.model.drift is not None else 0.0)
        g_max = self.model.g_max_unit
        var = (read_noise_variance(self.g_plus, gp, g_max, elapsed, read, self.q_s_plus)
               + read_noise_variance(self.g_minus, gm, g_max, elapsed, read, self.q_s_minus))
        var = var.sum(axis=0)
        return ArrayState(g_eff, var.astype(np.float32))


@dataclass(frozen=True)
class ArrayState:
    """A tile frozen at one time: what every MVM of a run reads (plus fresh read noise)."""

    g_eff: np.ndarray
    read_var: np.ndarray | None = None
