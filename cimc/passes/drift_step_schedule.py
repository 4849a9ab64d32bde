"""Pass "drift-step-schedule": the drift controller's numbers, chosen by simulating the nominal
step cell (docs/ode.md).

For every ``ode.solve`` with ``step = "drift"`` the pass sets:

- the cell model from the target's ``[step_cell]`` (its levels, the mean drift exponent of each,
  tau0) and the rotation: all of its ``rows``, one write each in turn;
- ``iteration_s``, the nominal chip time of one iteration (the clock of the nominal cell): one
  try of a step costed op by op from the target's ``costs``: an MVM per input vector of a layer
  with stationary weights (its tiles in parallel), the digital ops per element of work, the
  cell's read and write;
- the schedule: ``h_unit`` (h = h_unit G/G_max: the top level's step), ``level0`` (the first
  write, counted up from the level nearest the classic controller's first step),
  ``accept_below`` (the error, in units of the tolerance, up to which a try is accepted),
  ``grow_below`` (an accepted step whose error is under k of these fractions of
  ``accept_below`` grows the level by k) and ``shrink_by`` (the levels a rejection goes down).
  They are tuned on the calibration initial states (``ctx.calib``: the state input's arrays, one
  system per ``N`` rows; default one seeded standard-normal state) by coordinate descent over a
  small grid around the classic controller's steps: the fewest tries (accepted + rejected steps)
  whose final error (:func:`cimc.ops.ode.final_error`) against a tight reference solve
  (:func:`reference`) stays within the tolerance, with a margin for the chip's noisy cell (at
  most ERROR_BUDGET). A controller that bounds the error of each step does not bound the error
  at the end of a long solve (the classic one may end several times the tolerance off);
  ``accept_below`` under 1 is what holds the final error, at the price of more steps. Where no
  point of the grid meets the budget, the one with the least error is used, with a warning.

The numbers are attributes of the op (the IR dump shows them) and ``ctx.ode`` (the manifest's
``ode``, which ``cimc report`` shows). The pass changes the solution within the tolerance, so its
semantics check is a bound, not equality.

Stage: nn or cim (ode.solve) -> the same. Test: tests/passes/test_drift_step_schedule.py.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cimc.errors import CimcError, SolverError
from cimc.ir.core import Func, Module, Op
from cimc.ir.interpreter import run_block
from cimc.ir.types import TensorType
from cimc.ops import registry
from cimc.ops.ode import TABLEAUS, DriftSchedule, OdeConfig, Solver, final_error, solve
from cimc.passes.base import Pass, PassContext
from cimc.passes.ode_unroll import OdeInfo
from cimc.passes.quantize import calibration_inputs

# The grid the tuning walks: h_unit as multiples of the classic controller's largest step
# (scaled by the acceptance threshold's q-th root), threshold sets, levels down per rejection,
# acceptance thresholds.
H_UNIT_FACTORS = (1.0, 1.5, 2.0, 3.0, 5.0)
GROW_SETS = ((0.8,), (0.5,), (0.3,), (0.15,), (0.8, 0.3), (0.6, 0.15), (0.9, 0.5, 0.2))
SHRINK_STEPS = (1, 2, 3, 4)
ACCEPT_BELOW = (1.0, 0.5, 0.25, 0.12, 0.06, 0.03, 0.015)
# The final error the tuning allows on the nominal cell, in units of the tolerance: a chip's
# cell is programmed with noise and its exponent varies from write to write, so its steps, and
# the error they leave, differ from the nominal cell's.
ERROR_BUDGET = 0.7
# the first level: this many levels above the one nearest the classic controller's first step
START_OFFSETS = (0, 2, 4, 6, 9, 12, 15)
# The reference solves: bosh3 with the tolerances divided by each of these in turn, until two in
# a row agree within REFERENCE_AGREEMENT of the tolerance (the finer one is then the reference).
REFERENCE_TIGHTENING = (1e2, 1e3, 1e4, 1e5)
REFERENCE_AGREEMENT = 0.05
MVM_OPS = ("cim.mvm", "nn.matmul", "nn.gemm")


@dataclass
class Trial:
    """One simulated schedule: tries and errors over the calibration states."""

    schedule: DriftSchedule
    tries: int = 0
    writes: int = 0
    error: float = math.inf  # the largest final error over the states
    failed: str = ""

    def fits(self, budget: float) -> bool:
        return not self.failed and self.error <= budget


@dataclass
class DriftReport:
    """What the pass chose and why (the manifest's ``ode.schedule``)."""

    h_unit: float
    level0: int
    accept_below: float
    grow_below: list[float]
    shrink_by: int
    rows: int
    iteration_s: float
    levels: list[float]
    nu: list[float]
    calibration_states: int
    digital_tries: int
    digital_error: float
    drift_tries: int
    drift_error: float
    error_budget: float
    cell_writes: int
    trials: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Costs:
    """A :class:`~cimc.ops.ode.Backend` over types that adds up one iteration's nominal time
    (ns) from the target's costs."""

    def __init__(self, target: Any, region: Any) -> None:
        self.c = target.costs
        self.cell = target.step_cell
        self.region = region
        self.ns = 0.0

    def _charge(self, name: str, attrs: dict[str, Any], types: list[TensorType],
                results: list[TensorType]) -> None:
        if name == "ode.cell_read":
            self.ns += self.cell.read_ns
        elif name == "ode.cell_write":
            self.ns += self.cell.write_ns
        elif name in MVM_OPS and len(types) > 1 and types[1].rank == 2:
            self.ns += types[0].numel // max(types[0].shape[-1], 1) * self.c.mvm_ns
        elif name != "nn.constant":
            opdef = registry.lookup(name)
            work = opdef.work_of(opdef.with_defaults(attrs), [t.shape for t in types],
                                 [r.shape for r in results])
            self.ns += work * self.c.digital_ns_per_element

    def op(self, name: str, *types: TensorType, **attrs: Any) -> TensorType:
        (out,) = registry.infer_types(name, list(types), attrs)
        self._charge(name, attrs, list(types), [out])
        return out

    def effect(self, name: str, *types: TensorType, **attrs: Any) -> None:
        self._charge(name, attrs, list(types), [])

    def const(self, value: np.ndarray) -> TensorType:
        return TensorType.of(np.asarray(value))

    def field(self, x: TensorType, t: TensorType | None) -> TensorType:
        for op in self.region.ops[:-1]:
            if op.name != "nn.constant":
                self._charge(op.name, op.attrs, [v.type for v in op.operands],
                             [r.type for r in op.results])
        return x


def iteration_seconds(cfg: OdeConfig, x: TensorType, region: Any, target: Any) -> float:
    """The nominal chip time of one iteration of the solve (see the module docstring)."""
    costs = _Costs(target, region)
    solver = Solver(cfg, x.np_dtype, x.rank)
    state = solver.init(costs, x)
    costs.ns = 0.0
    solver.iteration(costs, state)
    return max(costs.ns, 1.0) * 1e-9


def _runner(op: Op) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    region = op.regions[0]
    return lambda xs: run_block(region, xs, {})


def _simulate(cfg: OdeConfig, field_fn: Callable, states: list[np.ndarray],
              refs: list[np.ndarray]) -> tuple[int, int, float, str, list[float]]:
    """(tries, cell writes, largest final error, failure, accepted steps' h) over the states."""
    tries = writes = 0
    worst = 0.0
    hs: list[float] = []
    for x0, ref in zip(states, refs):
        try:
            x, stats = solve(cfg, field_fn, x0)
        except SolverError as e:
            return 0, 0, math.inf, str(e), []
        tries += int(stats["steps"] + stats["rejected"])
        writes += int(stats["cell_writes"])
        worst = max(worst, final_error(x, ref, cfg.rtol, cfg.atol))
        hs += [h for h, a in zip(stats["h"], stats["accepted"]) if a]
    return tries, writes, worst, "", hs


def reference(cfg: OdeConfig, field_fn: Callable, x0: np.ndarray) -> np.ndarray:
    """The final state of a solve far tighter than ``cfg``: bosh3 with the tolerances divided by
    REFERENCE_TIGHTENING's factors in turn until two solves in a row end within
    REFERENCE_AGREEMENT of the tolerance of each other. The solves run in the state's dtype:
    where a tighter one agrees less with the one before (its rounding has come to outweigh its
    truncation), the one before is the reference; the last one if none of that happens."""
    prev = x = None
    apart = math.inf
    for k in REFERENCE_TIGHTENING:
        tight = replace(cfg, tableau=TABLEAUS["bosh3"], step="digital", drift=None,
                        rtol=cfg.rtol / k, atol=cfg.atol / k, max_steps=cfg.max_steps * 100,
                        steady=0.0)
        x = solve(tight, field_fn, x0)[0]
        if prev is not None:
            d = final_error(prev, x, cfg.rtol, cfg.atol)
            if d <= REFERENCE_AGREEMENT:
                break
            if d >= apart:
                return prev
            apart = d
        prev = x
    assert x is not None
    return x


def tune(cfg: OdeConfig, field_fn: Callable, states: list[np.ndarray]
         ) -> tuple[DriftSchedule, DriftReport]:
    """Choose the schedule of ``cfg.drift`` (see the module docstring)."""
    assert cfg.drift is not None
    refs = [reference(cfg, field_fn, x0) for x0 in states]
    digital = replace(cfg, step="digital", drift=None)
    d_tries, _, d_err, d_fail, d_hs = _simulate(digital, field_fn, states, refs)
    if d_fail or not d_hs:
        raise CimcError(f"drift-step-schedule: the classic controller cannot solve the "
                        f"calibration states ({d_fail or 'no step accepted'}); check the field, "
                        "t1 and the tolerances")
    budget = ERROR_BUDGET
    h_max, h_first = max(d_hs), d_hs[0]
    g = np.asarray(cfg.drift.cell_g)

    def schedule(factor: float, grow: tuple[float, ...], shrink: int, start: int,
                 accept: float) -> DriftSchedule:
        # a smaller acceptance threshold asks for steps smaller by its q-th root
        scale = accept ** (1.0 / cfg.tableau.q)
        h_unit = float(f"{factor * h_max * scale:.6g}")
        level0 = int(np.argmin(np.abs(np.log(g * h_unit / (h_first * scale))))) + start
        return replace(cfg.drift, h_unit=h_unit, level0=min(level0, len(g) - 1),
                       grow_below=grow, shrink_by=shrink, accept_below=accept)

    Point = tuple[float, tuple[float, ...], int, int, float]
    seen: dict[Point, Trial] = {}

    def trial(point: Point) -> Trial:
        if point not in seen:
            sched = schedule(*point)
            tries, writes, err, fail, _ = _simulate(replace(cfg, drift=sched), field_fn,
                                                    states, refs)
            seen[point] = Trial(sched, tries, writes, err, fail)
        return seen[point]

    def better(a: Trial, b: Trial) -> bool:
        """a before b: fitting first, then fewer tries, fewer writes, smaller error."""
        return (not a.fits(budget), a.tries if a.fits(budget) else a.error, a.writes) < \
            (not b.fits(budget), b.tries if b.fits(budget) else b.error, b.writes)

    point: Point = (2.0, (0.5,), 2, 0, 1.0)
    best = trial(point)
    for _ in range(2):  # coordinate descent, two sweeps
        axes = (H_UNIT_FACTORS, GROW_SETS, SHRINK_STEPS, START_OFFSETS, ACCEPT_BELOW)
        for axis, values in enumerate(axes):
            for v in values:
                cand = tuple(v if i == axis else p for i, p in enumerate(point))
                t = trial(cand)  # type: ignore[arg-type]
                if better(t, best):
                    best, point = t, cand  # type: ignore[assignment]
    notes = []
    if not best.fits(budget):
        notes.append(f"no schedule of the grid kept the final error within {budget:g} times "
                     f"the tolerance (best {best.error:.3g} times it); the one with the least "
                     "error is used")
        warnings.warn("drift-step-schedule: " + notes[-1], stacklevel=3)
    s = best.schedule
    report = DriftReport(
        h_unit=s.h_unit, level0=s.level0, accept_below=s.accept_below,
        grow_below=list(s.grow_below), shrink_by=s.shrink_by,
        rows=s.cell_rows, iteration_s=s.iteration_s, levels=list(s.cell_g), nu=list(s.cell_nu),
        calibration_states=len(states), digital_tries=d_tries, digital_error=d_err,
        drift_tries=best.tries, drift_error=best.error, error_budget=budget,
        cell_writes=best.writes, trials=len(seen), notes=notes)
    return s, report


def _cell_attrs(op: Op, target: Any) -> None:
    """Refresh the op's cell model from the target's step cell (as the ODE wrapper sets it)."""
    from cimc.frontend.ode import drift_defaults

    if target is None:
        return
    if target.step_cell is None:
        raise CimcError(f"step \"drift\" needs a chip with a step cell, and target "
                        f"'{target.name}' has none ([step_cell] in its TOML); compile with "
                        "step=digital or step=fixed:N")
    attrs = registry.lookup(op.name).with_defaults(op.attrs)
    fresh = drift_defaults(target.step_cell, attrs)
    for key in ("cell_g", "cell_nu", "cell_t0_s", "cell_rows"):
        op.attrs[key] = fresh[key]


def _states(func: Func, ctx: PassContext, samples: int) -> list[np.ndarray]:
    cal = calibration_inputs(func, ctx.calib, samples * max(func.args[0].type.shape[0], 1),
                             ctx.seed, who="drift-step-schedule")
    if ctx.calib is None:
        warnings.warn(f"drift-step-schedule: no calibration initial states; {cal.description}",
                      stacklevel=3)
    return [batch[0] for batch in cal.batches(cal.batch)][:samples]


@dataclass
class DriftStepSchedule(Pass):
    """Choose the drift controller's write levels, thresholds and rotation rows from the
    target's step cell, by simulating the nominal cell on calibration initial states.

    ``tune=false`` keeps the op's schedule and only sets the cell model and ``iteration_s``;
    ``states`` caps the calibration states simulated. Writes ``ctx.ode.schedule``.

    Stage: nn or cim (ode.solve) -> the same. Test: tests/passes/test_drift_step_schedule.py.
    """

    name = "drift-step-schedule"
    tune: bool = True
    states: int = 1

    def run(self, module: Module, ctx: PassContext) -> None:
        func = module.main
        for op in [o for o in func.body.ops if o.name == "ode.solve"]:
            attrs = registry.lookup(op.name).with_defaults(op.attrs)
            if attrs["step"] != "drift":
                continue
            _cell_attrs(op, ctx.target)
            attrs = registry.lookup(op.name).with_defaults(op.attrs)
            cfg = OdeConfig.from_attrs(attrs)
            assert cfg.drift is not None
            x = op.operands[0]
            if ctx.target is not None:
                t_iter = iteration_seconds(cfg, x.type, op.regions[0], ctx.target)
                cfg = replace(cfg, drift=replace(cfg.drift, iteration_s=float(f"{t_iter:.6g}")))
            if x is not func.args[0]:
                raise CimcError("drift-step-schedule: the ode.solve must start from the "
                                "function's input (its calibration states)")
            if self.tune:
                sched, report = tune(cfg, _runner(op), _states(func, ctx, self.states))
                if ctx.ode is None:
                    ctx.ode = OdeInfo()
                ctx.ode.schedule = report
            else:
                sched = cfg.drift
            op.attrs.update({
                "h_unit": sched.h_unit, "level0": sched.level0,
                "accept_below": sched.accept_below,
                "grow_below": list(sched.grow_below), "shrink_by": sched.shrink_by,
                "iteration_s": sched.iteration_s, "cell_rows": sched.cell_rows})
