"""Neural ODEs: the ``ode`` dialect, the solvers' Butcher tableaus, the step controllers and the
step cell's nominal model (docs/ode.md).

``ode.solve(x0) {t0, t1, rtol, atol, solver, step, h0, max_steps, steady, time, ...}``
    ``({^bb(%x, %t): ... yield %dx})``: the state at ``t1`` of ``dx/dt = f(x, t)`` from ``x0``
    at ``t0``; the region is the vector field ``f`` (its time argument is there when ``time``
    is ``"scalar"`` (shape ``[]``) or ``"vector"`` (``[1]``), absent for ``"none"``). The whole
    state ``[N, D]`` is one system: one step size for all of it. ``solver`` names a tableau of
    :data:`TABLEAUS`; ``step`` is ``"digital"`` (the classic controller), ``"drift"`` (the
    drifting step cell, with the ``cell_*`` and schedule attributes) or ``"fixed:N"`` (N equal
    steps); ``steady > 0`` stops once the RMS of ``f`` falls below it.

``ode.loop(init...) {carried} ({^bb(args...): ... yield %cond, next...})``
    A do-while loop: run the body on the carried values, then again on the values it yields
    while ``cond`` (a boolean scalar) holds. The results are the last values yielded.
    ``carried`` names them (``x``, ``t``, ``cell``: the step cell's state, ...).
``ode.clock(iter) {iteration_s, at}``
    The chip time in seconds: the core's clock on the chip (the ``time`` instruction); in the
    interpreter the schedule's model ``(iter + at) * iteration_s``. Only differences matter.
``ode.cell_write(cell, g, enable, now) {levels, nu, rows}``
    Write conductance ``g`` (a fraction of the cell's G_max) to the step cell's next row when
    ``enable``; ``cell`` is the cell's state as a value (``[g_w, t_w, nu, row]``), which the
    chip keeps in the cell itself. The nominal cell: exact writes, the mean exponent of the
    written level (``nu[i]`` for ``levels[i]``).
``ode.cell_read(cell, now) {t0_s}``
    The cell's conductance at time ``now``: ``g_w (max(now - t_w, t0_s)/t0_s)^-nu``.
``ode.check(flag, value) {message}``
    Stop with a :class:`~cimc.errors.SolverError` when ``flag`` holds; ``{}`` in the message is
    replaced by ``value``.
``ode.stat(values...) {names, append}``
    Record the values as the run's statistics (the runtime's ``chip.last_stats``; appended to a
    list per name with ``append``). Nothing in the interpreter.

The algorithm is written once, :class:`Solver`, over a :class:`Backend`: :class:`NumpyBackend`
runs it eagerly (the semantics of ``ode.solve``, and the drift schedule's simulations), and the
``ode-unroll`` pass runs it over an IR builder to make the loop; both call the same op kernels
in the same order, so the unrolled loop gives the op's numbers bit for bit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cimc.errors import SolverError, VerifyError
from cimc.ir.types import TensorType, dtype_name
from cimc.ops.registry import define, infer_types, lookup

# ----------------------------------------------------------------------------- tableaus


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method: nodes ``c``, the lower-triangular ``a`` (row i has i
    entries), weights ``b`` and, for an embedded pair, the error weights ``e = b - b_hat``;
    ``err_order`` is the order of the lower method (the controller's q is ``err_order + 1``).
    ``fsal``: the last stage is f at the new state, so an accepted step's last stage is the next
    step's first."""

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...] = ()
    err_order: int = 0
    fsal: bool = False

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return bool(self.e)

    @property
    def q(self) -> int:
        return self.err_order + 1


TABLEAUS: dict[str, Tableau] = {
    "euler": Tableau("euler", (0.0,), ((),), (1.0,)),
    "rk4": Tableau("rk4", (0.0, 0.5, 0.5, 1.0),
                   ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                   (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
    # Heun's method (order 2) with Euler (order 1) embedded: e = b - b_hat = (-1/2, 1/2)
    "heun-euler": Tableau("heun-euler", (0.0, 1.0), ((), (1.0,)), (0.5, 0.5), (-0.5, 0.5), 1),
    # Bogacki-Shampine 3(2), first same as last
    "bosh3": Tableau("bosh3", (0.0, 0.5, 0.75, 1.0),
                     ((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
                     (2 / 9, 1 / 3, 4 / 9, 0.0),
                     (2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8), 2, fsal=True),
}

STEP_RULES = ("drift", "digital", "fixed")
TIME_INPUTS = ("none", "scalar", "vector")
MAX_REJECTIONS = 3  # per step; the next try is accepted whatever its error
# The classic controller: h <- h * min(FAC_MAX, max(FAC_MIN, SAFETY * err^(-1/q)))
FAC_MAX, FAC_MIN, SAFETY = 5.0, 0.2, 0.9
ERR_FLOOR = 1e-10
LAST_SLACK = 1e-9  # a step within this fraction of what remains of [t0, t1] ends the solve  # err below this counts as this (err^(-1/q) stays finite)
EMPTY_CELL = (0.0, 0.0, 0.0, -1.0)  # a cell never written: [g_w, t_w, nu, row]

# ----------------------------------------------------------------------------- the cell


def cell_conductance(g_w: Any, nu: Any, tau: Any, t0: float) -> Any:
    """A drifting cell's conductance ``tau`` seconds after it was written to ``g_w``:
    ``g_w (max(tau, t0)/t0)^-nu`` (the same units as ``g_w``)."""
    return g_w * np.power(np.maximum(tau, t0) / t0, -nu)


def cell_levels(levels: int, g_min: float) -> np.ndarray:
    """The step cell's programmable levels as fractions of its G_max: geometric from ``g_min``
    to 1, lowest first."""
    k = np.arange(levels, dtype=np.float64)
    return g_min ** (1.0 - k / (levels - 1))


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DriftSchedule:
    """The drift controller: the cell's levels (fractions of G_max, lowest first) with their
    nominal exponents, its drift reference and rotation rows; h = h_unit * G(tau)/G_max; the
    level written first; the error thresholds below which an accepted step grows the level by
    one each (``grow_below``, decreasing); the levels a rejection goes down; the model of the
    chip's clock for the nominal cell (seconds per iteration); the error, in units of the
    tolerance, up to which a try is accepted (``accept_below``: 1 as the classic controller;
    below 1 the solve is held to a smaller local error, which the final error of a long solve
    may need). The error thresholds of ``grow_below`` are fractions of ``accept_below``."""

    cell_g: tuple[float, ...]
    cell_nu: tuple[float, ...]
    cell_t0_s: float
    cell_rows: int
    h_unit: float
    level0: int
    grow_below: tuple[float, ...]
    shrink_by: int
    iteration_s: float
    accept_below: float = 1.0

    def h_of_level(self, level: int) -> float:
        return self.h_unit * self.cell_g[level]


DRIFT_ATTRS: dict[str, Any] = {
    "cell_g": [], "cell_nu": [], "cell_t0_s": 1e-4, "cell_rows": 1, "h_unit": 0.0, "level0": 0,
    "grow_below": [0.5], "shrink_by": 2, "iteration_s": 1e-3, "accept_below": 1.0,
}


@dataclass(frozen=True)
class OdeConfig:
    """An ``ode.solve``'s attributes, checked."""

    t0: float
    t1: float
    rtol: float
    atol: float
    tableau: Tableau
    step: str  # drift, digital or fixed
    fixed_steps: int
    h0: float
    max_steps: int
    steady: float
    time: str
    drift: DriftSchedule | None = None

    @property
    def span(self) -> float:
        return self.t1 - self.t0

    @staticmethod
    def from_attrs(attrs: dict[str, Any]) -> OdeConfig:
        def num(key: str) -> float:
            v = attrs[key]
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise VerifyError(f"ode.solve: '{key}' must be a finite number, got {v!r}")
            return float(v)

        def count(key: str, least: int) -> int:
            v = attrs[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise VerifyError(f"ode.solve: '{key}' must be an integer >= {least}, got {v!r}")
            return v

        t0, t1, rtol, atol, h0, steady = (num(k) for k in ("t0", "t1", "rtol", "atol", "h0",
                                                            "steady"))
        if not t1 > t0:
            raise VerifyError(f"ode.solve: t1 = {t1:g} must be after t0 = {t0:g}")
        if rtol < 0 or atol < 0 or rtol + atol <= 0:
            raise VerifyError(f"ode.solve: rtol and atol must be >= 0 and not both 0, got "
                              f"rtol={rtol:g}, atol={atol:g}")
        if h0 < 0 or steady < 0:
            raise VerifyError("ode.solve: h0 and steady must be >= 0")
        tableau = TABLEAUS.get(attrs["solver"])
        if tableau is None:
            raise VerifyError(f"ode.solve: unknown solver {attrs['solver']!r}; expected one of "
                              f"{', '.join(TABLEAUS)}")
        step, fixed = parse_step(attrs["step"], VerifyError)
        if step != "fixed" and not tableau.adaptive:
            raise VerifyError(f"ode.solve: solver {tableau.name} has no error estimate; it takes "
                              "a fixed step (step = \"fixed:N\")")
        if attrs["time"] not in TIME_INPUTS:
            raise VerifyError(f"ode.solve: 'time' must be one of {', '.join(TIME_INPUTS)}, got "
                              f"{attrs['time']!r}")
        drift = _drift_schedule(attrs, count, num) if step == "drift" else None
        return OdeConfig(t0, t1, rtol, atol, tableau, step, fixed, h0,
                         count("max_steps", 1), steady, attrs["time"], drift)


def parse_step(text: Any, error: type[Exception]) -> tuple[str, int]:
    """``"drift"``, ``"digital"`` or ``"fixed:N"`` -> (rule, N or 0)."""
    if isinstance(text, str) and text in ("drift", "digital"):
        return text, 0
    if isinstance(text, str) and text.startswith("fixed:"):
        n = text.partition(":")[2]
        if n.isdigit() and int(n) >= 1:
            return "fixed", int(n)
    raise error(f"step must be drift, digital or fixed:N with N >= 1 steps, got {text!r}")


def _drift_schedule(attrs: dict[str, Any], count: Callable, num: Callable) -> DriftSchedule:
    def floats(key: str) -> tuple[float, ...]:
        v = attrs[key]
        if not isinstance(v, list) or not all(isinstance(x, int | float) and
                                              not isinstance(x, bool) for x in v):
            raise VerifyError(f"ode.solve: '{key}' must be a list of numbers, got {v!r}")
        return tuple(float(x) for x in v)

    g, nu, grow = floats("cell_g"), floats("cell_nu"), floats("grow_below")
    if len(g) < 2 or len(nu) != len(g) or any(not 0 < a < b for a, b in itertools.pairwise(g)) \
            or g[-1] > 1:
        raise VerifyError("ode.solve: step \"drift\" needs cell_g, the step cell's levels in "
                          "(0, 1], increasing (at least two), and cell_nu, one exponent each; "
                          "compile for a target with a [step_cell]")
    if any(not 0 <= n < 1 for n in nu):
        raise VerifyError(f"ode.solve: cell_nu must lie in [0, 1), got {list(nu)}")
    if not grow or any(not a > b for a, b in itertools.pairwise(grow)) or grow[-1] <= 0 \
            or grow[0] > 1:
        raise VerifyError(f"ode.solve: grow_below must be decreasing thresholds in (0, 1], got "
                          f"{list(grow)}")
    sched = DriftSchedule(g, nu, num("cell_t0_s"), count("cell_rows", 1), num("h_unit"),
                          count("level0", 0), grow, count("shrink_by", 1), num("iteration_s"),
                          num("accept_below"))
    if sched.level0 >= len(g):
        raise VerifyError(f"ode.solve: level0 = {sched.level0} is not a level of the "
                          f"{len(g)}-level cell")
    if not (sched.h_unit > 0 and sched.iteration_s > 0 and sched.cell_t0_s > 0):
        raise VerifyError("ode.solve: h_unit, iteration_s and cell_t0_s must be > 0")
    if not 0 < sched.accept_below <= 1:
        raise VerifyError(f"ode.solve: accept_below must lie in (0, 1], got "
                          f"{sched.accept_below:g}")
    return sched


# ----------------------------------------------------------------------------- the algorithm


class Backend(Protocol):
    """What :class:`Solver` computes with: ops of the op library on values."""

    def op(self, name: str, *operands: Any, **attrs: Any) -> Any:
        """One op with one result."""

    def effect(self, name: str, *operands: Any, **attrs: Any) -> None:
        """One op without results (ode.check, ode.stat)."""

    def const(self, value: np.ndarray) -> Any:
        """A constant."""

    def field(self, x: Any, t: Any | None) -> Any:
        """f(x, t); ``t`` is None for a field without a time input."""


@dataclass
class Solver:
    """One ``ode.solve`` as ops: :meth:`init` makes the carried state (an ordered dict of named
    values), :meth:`iteration` one try of a step (every stage, the error, accept or reject, the
    next step size) and the loop condition, :meth:`finish` the checks after the loop and the
    final state."""

    cfg: OdeConfig
    dtype: np.dtype  # the state's
    rank: int  # the state's

    def c64(self, b: Backend, v: float) -> Any:
        return b.const(np.array(v, np.float64))

    def cx(self, b: Backend, v: float) -> Any:
        return b.const(np.array(v, self.dtype))

    def field_time(self, b: Backend, t: Any) -> Any | None:
        if self.cfg.time == "none":
            return None
        tx = b.op("nn.cast", t, to=dtype_name(self.dtype))
        return b.op("nn.reshape", tx, shape=[1]) if self.cfg.time == "vector" else tx

    def f(self, b: Backend, x: Any, t: Any) -> Any:
        return b.field(x, self.field_time(b, t))

    def evals_per_iteration(self) -> int:
        s = self.cfg.tableau.stages
        return s - 1 if self.cfg.tableau.fsal else s

    def init(self, b: Backend, x0: Any) -> dict[str, Any]:
        cfg, tab = self.cfg, self.cfg.tableau
        s: dict[str, Any] = {"x": x0, "t": self.c64(b, cfg.t0)}
        if cfg.step == "fixed":
            s["h"] = self.c64(b, cfg.span / cfg.fixed_steps)
        elif cfg.step == "digital":
            s["h"] = self.c64(b, cfg.h0 or cfg.span / 100)
        if tab.fsal:
            s["k1"] = self.f(b, x0, s["t"])
        for name in ("steps", "rejected", "tries", "iter"):
            s[name] = self.c64(b, 0.0)
        s["fevals"] = self.c64(b, 1.0 if tab.fsal else 0.0)
        if cfg.steady > 0:
            s["stopped"] = b.const(np.array(False))
        d = cfg.drift
        if d is not None:
            s["level"] = self.c64(b, d.level0)
            now = b.op("ode.clock", s["iter"], iteration_s=d.iteration_s, at=0.0)
            s["cell"] = self.write(b, b.const(np.array(EMPTY_CELL)),
                                   self.c64(b, d.cell_g[d.level0]), b.const(np.array(True)), now)
        return s

    def write(self, b: Backend, cell: Any, g: Any, enable: Any, now: Any) -> Any:
        d = self.cfg.drift
        assert d is not None
        return b.op("ode.cell_write", cell, g, enable, now, levels=list(d.cell_g),
                    nu=list(d.cell_nu), rows=d.cell_rows)

    def combine(self, b: Backend, coeffs: Sequence[float], ks: Sequence[Any]) -> Any:
        """sum_j coeffs[j] * ks[j], skipping zero coefficients."""
        acc = None
        for c, k in zip(coeffs, ks):
            if c == 0.0:
                continue
            term = k if c == 1.0 else b.op("nn.mul", k, self.cx(b, c))
            acc = term if acc is None else b.op("nn.add", acc, term)
        assert acc is not None
        return acc

    def iteration(self, b: Backend, s: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        cfg, tab, d = self.cfg, self.cfg.tableau, self.cfg.drift
        x, t = s["x"], s["t"]
        t1 = self.c64(b, cfg.t1)
        rem = b.op("nn.sub", t1, t)
        if d is not None:
            now = b.op("ode.clock", s["iter"], iteration_s=d.iteration_s, at=0.0)
            g = b.op("ode.cell_read", s["cell"], now, t0_s=d.cell_t0_s)
            hc = b.op("nn.mul", g, self.c64(b, d.h_unit))
        else:
            hc = s["h"]
        # the last step: what remains, also when rounding left a sliver of it
        last = b.op("nn.greater_equal", hc, b.op("nn.mul", rem, self.c64(b, 1 - LAST_SLACK)))
        hs = b.op("nn.where", last, rem, hc)
        hx = b.op("nn.cast", hs, to=dtype_name(self.dtype))
        ks = [s["k1"] if tab.fsal else self.f(b, x, t)]
        stop = None
        if cfg.steady > 0:
            ms = b.op("nn.reduce_mean", b.op("nn.mul", ks[0], ks[0]), axes=_all(self, x),
                      keepdims=False)
            rms = b.op("nn.cast", b.op("nn.sqrt", ms), to="f64")
            stop = b.op("nn.less", rms, self.c64(b, cfg.steady))
        x_new = None
        for i in range(1, tab.stages):
            xi = b.op("nn.add", x, b.op("nn.mul", self.combine(b, tab.a[i], ks), hx))
            if tab.fsal and i == tab.stages - 1:
                x_new = xi  # the last stage's input is the new state
            dt = hs if tab.c[i] == 1.0 else b.op("nn.mul", hs, self.c64(b, tab.c[i]))
            ti = b.op("nn.add", t, dt)
            ks.append(self.f(b, xi, ti))
        if x_new is None:
            x_new = b.op("nn.add", x, b.op("nn.mul", self.combine(b, tab.b, ks), hx))
        err = accept = None
        if cfg.step != "fixed":
            e = b.op("nn.mul", self.combine(b, tab.e, ks), hx)
            big = b.op("nn.max", _abs(b, x), _abs(b, x_new))
            sc = b.op("nn.add", self.cx(b, cfg.atol), b.op("nn.mul", self.cx(b, cfg.rtol), big))
            r = b.op("nn.div", e, sc)
            ms = b.op("nn.reduce_mean", b.op("nn.mul", r, r), axes=_all(self, x), keepdims=False)
            err = b.op("nn.cast", b.op("nn.sqrt", ms), to="f64")
            if d is not None and d.accept_below != 1.0:  # in units of the acceptance threshold
                err = b.op("nn.mul", err, self.c64(b, 1.0 / d.accept_below))
            accept = b.op("nn.or", b.op("nn.less_equal", err, self.c64(b, 1.0)),
                          b.op("nn.greater_equal", s["tries"], self.c64(b, MAX_REJECTIONS)))
        t_step = b.op("nn.where", last, t1, b.op("nn.add", t, hs))
        n: dict[str, Any] = {}
        if err is None and stop is None:  # fixed steps: every step is taken
            accept = reject = None
            acc_f = self.c64(b, 1.0)
            n["x"], n["t"] = x_new, t_step
            n["steps"] = b.op("nn.add", s["steps"], acc_f)
            n["rejected"], n["tries"] = s["rejected"], s["tries"]
        else:
            accept = b.const(np.array(True)) if err is None else accept
            if stop is not None:
                go = b.op("nn.not", stop)
                accept = b.op("nn.and", accept, go)
                reject = b.op("nn.and", b.op("nn.not", accept), go)
            else:
                reject = b.op("nn.not", accept)
            acc_f, rej_f = b.op("nn.cast", accept, to="f64"), b.op("nn.cast", reject, to="f64")
            n["x"] = b.op("nn.where", accept, x_new, x)
            n["t"] = b.op("nn.where", accept, t_step, t)
            n["steps"] = b.op("nn.add", s["steps"], acc_f)
            n["rejected"] = b.op("nn.add", s["rejected"], rej_f)
            n["tries"] = b.op("nn.where", accept, self.c64(b, 0.0),
                              b.op("nn.add", s["tries"], rej_f))
        if "h" in s:
            n["h"] = self.next_h(b, s["h"], hs, err)
        if tab.fsal:
            n["k1"] = ks[-1] if accept is None else b.op("nn.where", accept, ks[-1], s["k1"])
        n["iter"] = b.op("nn.add", s["iter"], self.c64(b, 1.0))
        n["fevals"] = b.op("nn.add", s["fevals"], self.c64(b, self.evals_per_iteration()))
        if stop is not None:
            n["stopped"] = stop
        if d is not None:
            assert err is not None
            n["level"], n["cell"] = self.drift_control(b, s, err, accept, reject)
        total = b.op("nn.reduce_sum", n["x"], axes=_all(self, x), keepdims=False)
        spread = b.op("nn.sub", total, total)  # NaN when the sum is NaN or infinite
        b.effect("ode.check", b.op("nn.not", b.op("nn.equal", spread, spread)), n["t"],
                 message="the state is not finite (NaN or Inf) at t = {}; the field diverges "
                 "or the step is too large (lower rtol/atol or h0)")
        b.effect("ode.stat", n["t"], hs, acc_f, names=["t", "h", "accepted"], append=True)
        cond = b.op("nn.and", b.op("nn.less", n["t"], t1),
                    b.op("nn.less", n["steps"], self.c64(b, cfg.max_steps)))
        if stop is not None:
            cond = b.op("nn.and", cond, b.op("nn.not", stop))
        return cond, n

    def next_h(self, b: Backend, h: Any, hs: Any, err: Any | None) -> Any:
        if err is None:  # fixed steps
            return h
        q = self.cfg.tableau.q
        grow = b.op("nn.pow", b.op("nn.max", err, self.c64(b, ERR_FLOOR)), self.c64(b, -1.0 / q))
        fac = b.op("nn.min", self.c64(b, FAC_MAX),
                   b.op("nn.max", self.c64(b, FAC_MIN), b.op("nn.mul", self.c64(b, SAFETY), grow)))
        return b.op("nn.mul", hs, fac)

    def drift_control(self, b: Backend, s: dict[str, Any], err: Any, accept: Any, reject: Any
                      ) -> tuple[Any, Any]:
        """Grow the level by one per threshold of ``grow_below`` the error is under (an
        accepted step), go down ``shrink_by`` levels on a rejection, and write the cell when
        the level changed or was rejected (a write at the top level refreshes the cell)."""
        d = self.cfg.drift
        assert d is not None
        level = s["level"]
        up = None
        for eps in d.grow_below:
            u = b.op("nn.cast", b.op("nn.less", err, self.c64(b, eps)), to="f64")
            up = u if up is None else b.op("nn.add", up, u)
        top, bottom = self.c64(b, len(d.cell_g) - 1), self.c64(b, 0.0)
        lvl_up = b.op("nn.min", b.op("nn.add", level, up), top)
        lvl_dn = b.op("nn.max", b.op("nn.sub", level, self.c64(b, d.shrink_by)), bottom)
        lvl = b.op("nn.where", accept, lvl_up, b.op("nn.where", reject, lvl_dn, level))
        grows = b.op("nn.and", accept, b.op("nn.greater", up, self.c64(b, 0.0)))
        enable = b.op("nn.or", grows, reject)
        g = b.op("nn.gather", b.const(np.asarray(d.cell_g, np.float64)),
                 b.op("nn.cast", lvl, to="i64"), axis=0)
        now = b.op("ode.clock", s["iter"], iteration_s=d.iteration_s, at=1.0)
        return lvl, self.write(b, s["cell"], g, enable, now)

    def finish(self, b: Backend, s: dict[str, Any]) -> Any:
        cfg = self.cfg
        short = b.op("nn.less", s["t"], self.c64(b, cfg.t1))
        if "stopped" in s:
            short = b.op("nn.and", short, b.op("nn.not", s["stopped"]))
        b.effect("ode.check", short, s["t"],
                 message=f"max_steps = {cfg.max_steps} exceeded: the solve reached t = {{}} of "
                 f"t1 = {cfg.t1:g}; raise max_steps or loosen rtol/atol")
        b.effect("ode.stat", s["steps"], s["rejected"], s["fevals"], s["t"],
                 names=["steps", "rejected", "f_evals", "t_end"], append=False)
        return s["x"]


def _all(solver: Solver, x: Any) -> list[int]:
    return list(range(solver.rank))


def _abs(b: Backend, x: Any) -> Any:
    return b.op("nn.max", x, b.op("nn.neg", x))


# ----------------------------------------------------------------------------- eager backend


@dataclass
class NumpyBackend:
    """Runs :class:`Solver` eagerly with the op library's kernels, each result cast to the type
    the registry infers for it (as the interpreter does). Records what ``ode.stat`` records on
    the chip, and counts the cell's writes."""

    region: Callable[[list[np.ndarray]], list[np.ndarray]]
    stats: dict[str, Any] = field(default_factory=dict)
    dtypes: dict[tuple, np.dtype] = field(default_factory=dict)  # inferred, per signature

    def op(self, name: str, *operands: Any, **attrs: Any) -> np.ndarray:
        opdef = lookup(name)
        out = np.asarray(opdef.evaluate(opdef.with_defaults(attrs), *operands))
        key = (name, *((a.shape, a.dtype.char) for a in operands), repr(attrs))
        want = self.dtypes.get(key)
        if want is None:
            (t,) = infer_types(name, [TensorType.of(np.asarray(a)) for a in operands], attrs)
            want = self.dtypes[key] = t.np_dtype
        if name == "ode.cell_write" and bool(operands[2]):
            self.stats["cell_writes"] = self.stats.get("cell_writes", 0) + 1
        return out if out.dtype == want else out.astype(want)

    def effect(self, name: str, *operands: Any, **attrs: Any) -> None:
        opdef = lookup(name)
        opdef.evaluate(opdef.with_defaults(attrs), *operands)
        if name == "ode.stat":
            record_stats(self.stats, attrs["names"], operands, attrs.get("append", False))

    def const(self, value: np.ndarray) -> np.ndarray:
        return value

    def field(self, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
        (dx,) = self.region([x] if t is None else [x, t])
        return np.asarray(dx)


def record_stats(stats: dict[str, Any], names: Sequence[str], values: Sequence[Any],
                 append: bool) -> None:
    """What ``ode.stat`` (the ``stat`` instruction) records: each value as a float under its
    name, or appended to the list of that name."""
    for name, v in zip(names, values):
        v = float(np.asarray(v).reshape(()))
        if append:
            stats.setdefault(name, []).append(v)
        else:
            stats[name] = v


def solve(cfg: OdeConfig, region: Callable[[list[np.ndarray]], list[np.ndarray]],
          x0: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``ode.solve`` eagerly (its semantics; ``region`` evaluates the field). Returns the
    final state and the statistics the chip's ``stat`` instructions would record (``steps``,
    ``rejected``, ``f_evals``, ``t_end``; per try ``t``, ``h``, ``accepted``) with
    ``cell_writes``."""
    b = NumpyBackend(region)
    solver = Solver(cfg, x0.dtype, x0.ndim)
    s = solver.init(b, x0)
    while True:
        cond, s = solver.iteration(b, s)
        if not bool(cond):
            break
    x = solver.finish(b, s)
    b.stats.setdefault("cell_writes", 0)
    return np.asarray(x), b.stats


# ----------------------------------------------------------------------------- the ops

SOLVE_ATTRS = ("t0", "t1", "rtol", "atol", "solver", "step", "h0", "max_steps", "steady", "time")


def _scalar(t: TensorType, dtype: str, what: str) -> None:
    if t.shape != () or t.dtype != dtype:
        raise VerifyError(f"{what} must be a tensor<{dtype}> scalar, got {t}")


def _solve_type(attrs: dict[str, Any], x: TensorType) -> TensorType:
    if not x.dtype.startswith("f") or x.rank < 1:
        raise VerifyError(f"ode.solve: the state must be a float tensor [N, ...], got {x}")
    OdeConfig.from_attrs(attrs)
    return x


@define("ode.solve", attrs=SOLVE_ATTRS, optional=DRIFT_ATTRS, regions=1, infer=_solve_type,
        summary="The state at t1 of dx/dt = f(x, t) (f: the region), one system (docs/ode.md).")
def solve_op(attrs: dict[str, Any], x0: np.ndarray, regions: Sequence[Callable]) -> np.ndarray:
    return solve(OdeConfig.from_attrs(attrs), regions[0], x0)[0]


def _loop_type(attrs: dict[str, Any], *types: TensorType) -> list[TensorType]:
    names = attrs["carried"]
    if names and (len(names) != len(types) or not all(isinstance(n, str) for n in names)):
        raise VerifyError("ode.loop: 'carried' must name each carried value")
    return list(types)


@define("ode.loop", operands=(1, None), optional={"carried": []}, regions=1, infer=_loop_type,
        summary="Do-while: run the region on the carried values while the cond it yields holds.")
def loop(attrs: dict[str, Any], *inits: np.ndarray, regions: Sequence[Callable]
         ) -> list[np.ndarray]:
    values = list(inits)
    while True:
        out = regions[0](values)
        if len(out) != len(values) + 1:
            raise VerifyError(f"ode.loop: the region yields {len(out)} values; it must yield the "
                              f"condition and the {len(values)} carried values")
        cond, values = out[0], list(out[1:])
        if not bool(np.asarray(cond).reshape(())):
            return values


def _clock_type(attrs: dict[str, Any], it: TensorType) -> TensorType:
    _scalar(it, "f64", "ode.clock: the iteration count")
    if not attrs["iteration_s"] > 0 or not 0 <= attrs["at"] <= 1:
        raise VerifyError("ode.clock: iteration_s must be > 0 and at in [0, 1]")
    return it


@define("ode.clock", attrs=("iteration_s", "at"), infer=_clock_type,
        summary="The chip time (s); nominally (iter + at) * iteration_s.")
def clock(attrs: dict[str, Any], it: np.ndarray) -> np.ndarray:
    return np.asarray((it + attrs["at"]) * attrs["iteration_s"], np.float64)


def _cell_write_type(attrs: dict[str, Any], cell: TensorType, g: TensorType, enable: TensorType,
                     now: TensorType) -> TensorType:
    if cell != TensorType((4,), "f64"):
        raise VerifyError(f"ode.cell_write: the cell state must be tensor<4xf64>, got {cell}")
    _scalar(g, "f64", "ode.cell_write: the level")
    _scalar(enable, "i1", "ode.cell_write: the enable flag")
    _scalar(now, "f64", "ode.cell_write: the time")
    if len(attrs["levels"]) != len(attrs["nu"]) or not attrs["levels"]:
        raise VerifyError("ode.cell_write: levels and nu must be lists of one length")
    return cell


@define("ode.cell_write", operands=4, attrs=("levels", "nu", "rows"), infer=_cell_write_type,
        effects=True, summary="Write level g to the step cell's next row when enabled.")
def cell_write(attrs: dict[str, Any], cell: np.ndarray, g: np.ndarray, enable: np.ndarray,
               now: np.ndarray) -> np.ndarray:
    if not bool(enable):
        return cell
    levels = np.asarray(attrs["levels"], np.float64)
    nu = float(attrs["nu"][int(np.argmin(np.abs(levels - float(g))))])
    row = (int(cell[3]) + 1) % int(attrs["rows"])
    return np.array([float(g), float(now), nu, row], np.float64)


def _cell_read_type(attrs: dict[str, Any], cell: TensorType, now: TensorType) -> TensorType:
    if cell != TensorType((4,), "f64"):
        raise VerifyError(f"ode.cell_read: the cell state must be tensor<4xf64>, got {cell}")
    _scalar(now, "f64", "ode.cell_read: the time")
    if not attrs["t0_s"] > 0:
        raise VerifyError("ode.cell_read: t0_s must be > 0")
    return now


@define("ode.cell_read", operands=2, attrs=("t0_s",), infer=_cell_read_type,
        summary="The step cell's conductance (fraction of G_max) at time now.")
def cell_read(attrs: dict[str, Any], cell: np.ndarray, now: np.ndarray) -> np.ndarray:
    return np.asarray(cell_conductance(cell[0], cell[2], float(now) - cell[1], attrs["t0_s"]),
                      np.float64)


def _check_type(attrs: dict[str, Any], flag: TensorType, value: TensorType) -> list:
    _scalar(flag, "i1", "ode.check: the flag")
    if value.shape != () or not isinstance(attrs["message"], str):
        raise VerifyError("ode.check takes a scalar value and a message string")
    return []


@define("ode.check", operands=2, attrs=("message",), infer=_check_type, effects=True,
        summary="Stop with an error (message, {} = the value) when the flag holds.")
def check(attrs: dict[str, Any], flag: np.ndarray, value: np.ndarray) -> list:
    if bool(flag):
        raise solver_error(attrs["message"], float(value))
    return []


def solver_error(message: str, value: float) -> SolverError:
    """The error of ``ode.check`` (and the ``trap`` instruction): ``{}`` in the message is the
    value."""
    return SolverError(message.replace("{}", f"{value:.6g}"))


def _stat_type(attrs: dict[str, Any], *values: TensorType) -> list:
    names = attrs["names"]
    if not isinstance(names, list) or len(names) != len(values) or \
            not all(isinstance(n, str) for n in names):
        raise VerifyError("ode.stat: 'names' must name each operand")
    if any(v.numel != 1 for v in values):
        raise VerifyError("ode.stat records scalars")
    return []


@define("ode.stat", operands=(1, None), attrs=("names",), optional={"append": False},
        infer=_stat_type, effects=True,
        summary="Record scalars as the run's statistics (chip.last_stats); no-op here.")
def stat(attrs: dict[str, Any], *values: np.ndarray) -> list:
    return []


def final_error(x: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> float:
    """The global error of a solve against a reference, in units of the tolerance:
    ``RMS((x - ref) / (atol + rtol |ref|))`` (1 = as large as the tolerance)."""
    ref = np.asarray(ref, np.float64)
    r = (np.asarray(x, np.float64) - ref) / (atol + rtol * np.abs(ref))
    return float(np.sqrt(np.mean(r * r)))
