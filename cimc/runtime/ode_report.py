"""The ODE part of a report (``cimc report`` of an artifact compiled with ``--ode``): the last
solve's statistics, the modelled time and energy per iteration beside the figure the target
reports, where that time goes, and the step controller's area beside a digital one's.

An iteration is one try of a step (accepted or rejected): every stage's f-call, the error
estimate and the step control. Its modelled time is the run's latency (the latest core clock of
the reference machine, :mod:`cimc.runtime.report`) over the iterations; the work behind it is
summed per kind from the instructions executed, at the target's costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cimc.targets.schema import Target

SECONDS_PER_YEAR = 365.25 * 86400


@dataclass(frozen=True)
class OdeUse:
    """One ODE solve on the chip (see the module docstring)."""

    solver: str
    step: str
    t0: float
    t1: float
    rtol: float
    atol: float
    steps: int
    rejected: int
    f_evals: int
    t_end: float
    cell_writes: int
    max_writes_per_row: int
    latency_ns: float
    energy_nj: float
    work_ns: dict[str, float]  # per iteration, summed over cores, by kind of work
    reported_iteration_ms: float | None
    pipeline: str  # what the target reports of its pipeline, e.g. "9 stages at 50 MHz"
    cell_area_mm2: float | None
    digital_area_mm2: float | None
    chip_area_mm2: float | None  # reported area of the whole computation
    digital_chip_area_mm2: float | None  # reported area of a digital design
    cell_lifetime_years: float | None  # solving back to back, the busiest row's endurance
    schedule: dict[str, Any] | None = None
    assumptions: list[str] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return self.steps + self.rejected

    @property
    def iteration_ns(self) -> float:
        return self.latency_ns / max(self.iterations, 1)

    @property
    def iteration_nj(self) -> float:
        return self.energy_nj / max(self.iterations, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "iterations": self.iterations, "iteration_ns": self.iteration_ns,
                "iteration_nj": self.iteration_nj}


def ode_use(manifest: dict[str, Any], target: Target, stats: dict[str, Any] | None,
            executed: dict[str, float]) -> OdeUse | None:
    """The ODE part of a report from the manifest's ``ode``, the last run's statistics
    (``chip.last_stats``) and the work it executed per mnemonic; None for other artifacts."""
    info = manifest.get("ode")
    if not info or not stats:
        return None
    c, cell, rep = target.costs, target.step_cell, target.reported_dict
    iterations = max(int(stats["steps"]) + int(stats["rejected"]), 1)
    work = {
        "mvm": executed.get("mvm", 0) * c.mvm_ns,
        "digital": sum(executed.get(k, 0) for k in ("dop", "slice", "im2col", "branch", "jump",
                                                      "trap")) * c.digital_ns_per_element,
        "transfers": executed.get("send", 0) / c.link_bytes_per_ns,
        "step cell": (executed.get("cellw", 0) * cell.write_ns
                      + executed.get("cellr", 0) * cell.read_ns) if cell else 0.0,
    }
    latency_s = float(stats.get("latency_ns", 0.0)) * 1e-9
    per_row = int(stats.get("max_writes_per_row", 0))
    lifetime = (cell.endurance_writes * latency_s / per_row / SECONDS_PER_YEAR
                if cell is not None and per_row and latency_s > 0 else None)
    stages, clock = rep.get("pipeline_stages"), rep.get("clock_mhz")
    pipeline = f"{stages}-stage pipeline at {clock:g} MHz" if stages and clock else ""
    assumptions = [
        (f"an MVM costs {c.mvm_ns:g} ns per input vector; a layer of the field takes one MVM "
         "per row of the state, every stage of every iteration"),
        (f"digital ops cost {c.digital_ns_per_element:g} ns per element; transfers "
         f"{c.link_bytes_per_ns:g} B/ns (+ {c.link_latency_ns:g} ns each) between cores"),
        ("cores work in parallel where the data allow; no pipelining of the rows of a state "
         "through the layers"),
    ]
    return OdeUse(
        solver=str(info.get("solver")), step=str(info.get("step")), t0=float(info["t0"]),
        t1=float(info["t1"]), rtol=float(info["rtol"]), atol=float(info["atol"]),
        steps=int(stats["steps"]), rejected=int(stats["rejected"]),
        f_evals=int(stats["f_evals"]), t_end=float(stats["t_end"]),
        cell_writes=int(stats.get("cell_writes", 0)), max_writes_per_row=per_row,
        latency_ns=float(stats.get("latency_ns", 0.0)),
        energy_nj=float(stats.get("energy_nj", 0.0)),
        work_ns={k: v / iterations for k, v in work.items()},
        reported_iteration_ms=rep.get("iteration_ms"), pipeline=pipeline,
        cell_area_mm2=cell.area_mm2 if cell else None,
        digital_area_mm2=cell.digital_area_mm2 if cell else None,
        chip_area_mm2=rep.get("array_area_mm2"),
        digital_chip_area_mm2=rep.get("digital_design_area_mm2"),
        cell_lifetime_years=lifetime, schedule=info.get("schedule"), assumptions=assumptions)


def _ms(ns: float) -> str:
    return f"{ns * 1e-6:.3g} ms" if ns >= 1e5 else f"{ns * 1e-3:.3g} µs"


def format_ode(u: OdeUse) -> list[str]:
    """The ODE part of a report as text lines."""
    lines = [
        (f"ODE solve: {u.solver}, step {u.step}, t {u.t0:g} -> {u.t1:g} (reached {u.t_end:g}), "
         f"rtol {u.rtol:g}, atol {u.atol:g}"),
        (f"  {u.steps} steps, {u.rejected} rejected, {u.f_evals} f-evaluations; step cell: "
         f"{u.cell_writes} writes, at most {u.max_writes_per_row} per row"),
        f"  per iteration: {_ms(u.iteration_ns)} modelled, {u.iteration_nj:.3g} nJ"
        + (f"; the chip reports {u.reported_iteration_ms:g} ms"
           + (f" ({u.pipeline})" if u.pipeline else "") if u.reported_iteration_ms else ""),
        "  work per iteration (summed over cores): "
        + ", ".join(f"{k} {_ms(v)}" for k, v in u.work_ns.items() if v),
        "  assumptions: " + "; ".join(u.assumptions),
    ]
    if u.cell_area_mm2 is not None:
        line = (f"  step controller: PCM step cells {u.cell_area_mm2:g} mm² vs a digital "
                f"controller {u.digital_area_mm2:g} mm²")
        if u.chip_area_mm2 and u.digital_chip_area_mm2:
            line += (f"; the whole computation {u.chip_area_mm2:g} mm² vs about "
                     f"{u.digital_chip_area_mm2:g} mm² digital (reported)")
        lines.append(line)
    if u.cell_lifetime_years is not None:
        lines.append(f"  step-cell endurance: {u.cell_lifetime_years:.3g} years of solves back "
                     "to back (the busiest row)")
    s = u.schedule
    if s:
        lines.append(
            f"  drift schedule: h = {s['h_unit']:g} G/G_max over {len(s['levels'])} levels, "
            f"first level {s['level0']}, accept below {s.get('accept_below', 1.0):g} x "
            f"tolerance, grow below {s['grow_below']} of that, shrink by "
            f"{s['shrink_by']}, {s['rows']} rows in rotation, nominal {_ms(s['iteration_s'] * 1e9)}"
            f" per iteration; on {s['calibration_states']} calibration state(s): "
            f"{s['drift_tries']} tries (classic controller {s['digital_tries']}), final error "
            f"{s['drift_error']:.3g} x tolerance (budget {s['error_budget']:.3g})")
    return lines
