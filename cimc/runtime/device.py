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
3. Programming (a fixed function of the chip instance's seed, :meth:`DeviceModel.program`):
   each polarity's target is split equally over its units (``devices_per_weight/2/fit_devices``);
   each unit gets programming noise ``max(G_T + sigma(g) xi, 0)`` and, for drifting devices, a
   drift exponent ``nu = |mean(g) + std(g) xi|``, with standard normals ``xi`` from
   :func:`normal_f32`. The curves of g are evaluated once per level; a weight's device pair is
   held as the device its level is on and the partner, whose target is 0.
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
    """One piece at ``g`` (floored), computed in g's float type."""
    dt = g.dtype.type
    if piece.poly:  # Horner, in place
        c = piece.poly
        out = np.multiply(g, dt(c[-1])) if len(c) > 1 else np.full_like(g, c[0])
        for k in range(len(c) - 2, -1, -1):
            out += dt(c[k])
            if k:
                out *= g
    elif piece.log_linear:
        a, b = piece.log_linear
        out = np.log(g)
        out *= dt(a)
        out += dt(b)
    else:
        c, p = piece.power
        out = np.power(g, dt(p))
        out *= dt(c)
    if piece.clip:
        np.clip(out, dt(piece.clip[0]), dt(piece.clip[1]), out=out)
    return out


def _bounded(piece: Piece) -> bool:
    """Whether the piece is finite for every g >= G_FLOOR (a negative power is not, unclipped)."""
    return bool(piece.clip) or not (piece.power and piece.power[1] < 0)


def eval_curve(curve: Sequence[Piece], g: np.ndarray) -> np.ndarray:
    """Evaluate a piecewise curve at normalised conductances ``g`` (floored at G_FLOOR), in
    float32 for float32 ``g`` and in float64 otherwise. Piece i holds from its ``from_g`` up to
    the next piece's."""
    g = np.asarray(g)
    return _eval_floored(curve, np.maximum(g, G_FLOOR, dtype=np.float32 if g.dtype == np.float32
                                           else np.float64))


def _eval_floored(curve: Sequence[Piece], g: np.ndarray) -> np.ndarray:
    out = _eval_piece(curve[0], g)
    blend = all(_bounded(p) for p in curve)
    for piece in curve[1:]:
        above = g >= piece.from_g
        if above.all():
            out = _eval_piece(piece, g)
        elif above.any():
            v = _eval_piece(piece, g)
            if blend:  # out + above * (v - out): many times faster than selecting by a mask
                v -= out
                v *= above.astype(g.dtype)
                out += v
            else:
                np.copyto(out, v, where=above)
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
    """Programmed conductances ``max(G_T + sigma(g) xi, 0)`` (float32; exact without noise), one
    write of each target (a drifting step cell's writes)."""
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


def check_time(t: float) -> float:
    t = float(t)
    if not np.isfinite(t) or t < 0:
        raise RuntimeInputError(f"time since programming must be a finite number of seconds "
                                f">= 0, got {t}")
    return t


def drift_factor(nu: np.ndarray, t: float, t0: float) -> np.ndarray:
    """``((t + t0)/t0)^-nu`` (float32): 1 at t = 0 (the first read, t0 after programming)."""
    out = np.multiply(nu, np.float32(-np.log1p(check_time(t) / t0)), dtype=np.float32)
    return np.exp(out, out=out)


def drifted(g_prog: np.ndarray, nu: np.ndarray, t: float, t0: float) -> np.ndarray:
    """PCM drift ``G(t) = G_prog ((t + t0)/t0)^-nu``."""
    g = drift_factor(nu, t, t0)
    g *= g_prog
    return g


def one_over_f_scale(elapsed: float, t_read: float) -> float:
    """sqrt(ln((elapsed + t_read)/(2 t_read))), 0 before one read time has passed."""
    return float(np.sqrt(max(np.log((elapsed + t_read) / (2.0 * t_read)), 0.0)))


def one_over_f_amplitude(g_prog: np.ndarray, g_max: float, read: ReadNoise) -> np.ndarray | None:
    """Q_s(G_prog/g_max) per device (float32), or None without 1/f noise."""
    if not read.q_s:
        return None
    g = np.multiply(g_prog, np.float32(1 / g_max), dtype=np.float32)
    return _eval_floored(read.q_s, np.maximum(g, G_FLOOR, out=g))


def read_noise_variance(g_prog: np.ndarray, g_now: np.ndarray, g_max: float, elapsed: float,
                        read: ReadNoise, q_s: np.ndarray | None = None) -> np.ndarray:
    """Variance (µS²) of one read of each device: 1/f noise of relative sigma
    ``Q_s(G_prog/g_max) * one_over_f_scale`` on |G(t)|, plus additive ``additive_rel * g_max``.

    ``q_s`` may pass ``one_over_f_amplitude(g_prog, ...)`` computed once at programming time.
    """
    if read.q_s:
        var = one_over_f_amplitude(g_prog, g_max, read) if q_s is None else q_s.copy()
        var *= g_now  # = |G(t)|: conductances are never negative
        np.square(var, out=var)
        var *= np.float32(one_over_f_scale(elapsed, read.t_read_s) ** 2)
    else:
        var = np.zeros(np.shape(g_now), dtype=np.float32)
    if read.additive_rel:
        var += np.float32((read.additive_rel * g_max) ** 2)
    return var


# --------------------------------------------------------------------------------------------
# Standard normals of the programming and read noise
# --------------------------------------------------------------------------------------------

# Each normal comes from 16 random bits through a table of quantiles.
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


# Normals looked up at a time: their indices and the table stay in the cache.
NORMAL_BLOCK = 1 << 16


def normal_f32(rng: np.random.Generator, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """``n`` standard normal float32 samples (in ``out`` when given), by inversion through
    :func:`normal_table`: each takes 16 bits of the generator's raw output (one 64-bit draw gives
    four) and looks its quantile up. A discrete distribution of 2^16 equally likely values that
    matches the normal's distribution function at every multiple of 2^-16, with mean 0 and
    variance exactly 1 and no samples beyond ±4.325 (the normal puts 1.5e-5 of its mass there).
    Draws made one after another use the random stream as one draw of their total would, when
    every draw but the last takes a multiple of 4 samples."""
    out = np.empty(n, np.float32) if out is None else out
    table = normal_table()
    for a in range(0, n, NORMAL_BLOCK):  # NORMAL_BLOCK is a multiple of 4: one stream
        b = min(a + NORMAL_BLOCK, n)
        raw = rng.bit_generator.random_raw((b - a + 3) // 4)
        # mode="wrap" skips the bounds check; every uint16 index is in range
        np.take(table, raw.view(np.uint16)[: b - a].astype(np.intp), out=out[a:b], mode="wrap")
    return out


# --------------------------------------------------------------------------------------------
# Global drift compensation
# --------------------------------------------------------------------------------------------


@functools.cache
def gdc_probe(rows: int, n: int = 32) -> np.ndarray:
    """The known input pushed through a tile: ``n`` fixed ±1 vectors of length ``rows``
    (read-only).

    Part of the chip, not of an instance: the same for every seed.
    """
    probe = np.random.default_rng(0x6DC).choice(np.array([-1.0, 1.0], np.float32), (n, rows))
    probe.flags.writeable = False
    return probe


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

    def normals(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """The standard normals that program levels of ``shape``: one :func:`normal_f32` draw
        of ``[sources, units, *shape]``, the sources in order the programming noise of the
        device that holds each level (G+ for a level >= 0, G- for a negative one) and of its
        partner, then the drift exponents of the same two (a source the model lacks draws
        nothing). The order is fixed, so a seed reproduces a chip."""
        sources = 2 * (self.programming is not None) + 2 * (self.drift is not None)
        n = sources * self.units * math.prod(shape)
        return normal_f32(rng, n).reshape(sources, self.units, *shape)

    def level_table(self, values: np.ndarray, max_level: float) -> np.ndarray:
        """Per level magnitude in ``values`` (``|level| <= max_level``): the target of each of
        a polarity's units, sigma of its programming noise, and the mean and spread of its
        drift exponent (``[len(values), 4]`` float32; zeros where the model has no such
        source). Every device's target is a level's: the curves of g are evaluated here once
        (:meth:`program` looks them up per device)."""
        unit_max = self.g_max_unit
        targets = levels_to_conductance(values, max_level, self.g_max)[0] / np.float32(self.units)
        if values.min(initial=0) < 0 or targets.max(initial=0.0) > unit_max * (1 + 1e-6):
            raise ValueError(f"target conductances must lie in [0, {self.g_max}] µS")
        table = np.zeros((len(values), 4), np.float32)
        table[:, 0] = targets
        if self.programming is not None:
            table[:, 1] = programming_sigma(targets, unit_max, self.programming)
        if self.drift is not None:
            table[:, 2], table[:, 3] = drift_exponent_stats(targets, unit_max, self.drift)
        return table

    def program(self, index: np.ndarray, table: np.ndarray, z: np.ndarray) -> ProgrammedArray:
        """Program signed levels, given as ``index`` into the magnitudes of ``table`` (a
        :meth:`level_table`; level = sign(index) * magnitude[|index|], see :func:`level_index`),
        with the standard normals ``z`` (:meth:`normals`). Each level goes on one device of its
        differential pair, ``|level|/max_level * g_max`` on G+ for a level >= 0 and on G- for a
        negative one (:func:`levels_to_conductance`); its partner's target is 0. Each split
        equally over its units, and each unit gets programming noise ``max(G_T + sigma(g) xi,
        0)`` and, for drifting devices, a drift exponent ``nu = |mean(g) + std(g) xi|``."""
        magnitude = np.abs(index)
        columns = np.ascontiguousarray(table.T)

        def holder(column: int) -> np.ndarray:  # the holding devices' numbers
            return columns[column].take(magnitude, mode="wrap")  # (every index is in range)

        partner = table[0]  # target 0
        g = np.empty((2, self.units, *index.shape), np.float32)
        if self.programming is not None:
            np.multiply(holder(1), z[0], out=g[0])
            g[0] += holder(0)
            np.multiply(z[1], partner[1], out=g[1])  # (+ a target of 0)
            np.maximum(g, 0, out=g)
        else:
            g[0], g[1] = holder(0), partner[0]
        nu = None
        if self.drift is not None:
            k = 2 if self.programming is not None else 0
            nu = np.empty_like(g)
            np.multiply(holder(3), z[k], out=nu[0])
            nu[0] += holder(2)
            np.multiply(z[k + 1], partner[3], out=nu[1])
            nu[1] += partner[2]
            np.abs(nu, out=nu)
        sign = np.copysign(np.float32(1), index.astype(np.float32))  # +1 for a level of 0
        return ProgrammedArray(self, g, sign, nu)


def level_index(levels: np.ndarray, max_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed indices into the level magnitudes of ``levels`` (level = sign(index) *
    values[|index|]) and those magnitudes, ``values[0] == 0``: for integer levels and an
    integer ``max_level`` every integer up to it (the same for every crossbar of a target)."""
    if levels.dtype.kind in "iu" and float(max_level).is_integer():
        index = levels.astype(np.intp)
        top = max(int(max_level), int(index.max(initial=0)), -int(index.min(initial=0)))
        return index, np.arange(top + 1, dtype=np.float32)  # beyond max_level: refused later
    mag = np.abs(levels.astype(np.float32))
    values, inverse = np.unique(np.concatenate([[0.0], mag.ravel()]), return_inverse=True)
    index = inverse[1:].reshape(levels.shape) * np.sign(levels).astype(np.intp)
    return index, values.astype(np.float32)


@dataclass(frozen=True)
class ProgrammedArray:
    """One crossbar slice of a chip instance: the programmed conductances ``g`` of the device
    that holds each weight's level and of its partner, and, for drifting devices, each device's
    drift exponent ``nu`` (both ``[2, units, R, C]``); ``sign`` (``[R, C]``, +1 or -1) says
    whether the holder is G+ or G-: a weight is ``sign * (g[0] - g[1])``."""

    model: DeviceModel
    g: np.ndarray
    sign: np.ndarray
    nu: np.ndarray | None = None

    @property
    def g_programmed(self) -> np.ndarray:
        """Effective conductances (G+ - G-, µS) as programmed (t = 0: before any drift)."""
        return self._effective(self.g)

    def polarities(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """G+ and G- (``[units, R, C]``) of ``g`` given per holder and partner."""
        plus = self.sign > 0
        return np.where(plus, g[0], g[1]), np.where(plus, g[1], g[0])

    def conductances(self, t: float) -> np.ndarray:
        """The holders' and partners' conductances (``[2, units, R, C]``) at time t, drift
        applied."""
        drift = self.model.drift
        if drift is None or check_time(t) == 0:
            return self.g
        return drifted(self.g, self.nu, t, drift.t0_s)

    def at(self, t: float) -> ArrayState:
        """The slice at time t: effective conductances (G+ - G-, µS) and read-noise variance."""
        g_now = self.conductances(t)
        g_eff = self._effective(g_now)
        read = self.model.read
        if read is None:
            return ArrayState(g_eff)
        elapsed = t + (self.model.drift.t0_s if self.model.drift is not None else 0.0)
        # holders and partners apart: a partner's conductance stays small, and the curve's
        # pieces that start above it are not evaluated
        var = read_noise_variance(self.g[0], g_now[0], self.model.g_max_unit, elapsed, read)
        var += read_noise_variance(self.g[1], g_now[1], self.model.g_max_unit, elapsed, read)
        return ArrayState(g_eff, var[0] if self.model.units == 1 else var.sum(axis=0))

    def _effective(self, g: np.ndarray) -> np.ndarray:
        """``sign * (g[0] - g[1])``, summed over the units (float32)."""
        if g.shape[1] == 1:
            out = np.subtract(g[0, 0], g[1, 0], dtype=np.float32)
        else:
            out = np.subtract(g[0].sum(axis=0), g[1].sum(axis=0), dtype=np.float32)
        out *= self.sign
        return out


@dataclass(frozen=True)
class ArrayState:
    """A tile frozen at one time: what every MVM of a run reads (plus fresh read noise)."""

    g_eff: np.ndarray
    read_var: np.ndarray | None = None
