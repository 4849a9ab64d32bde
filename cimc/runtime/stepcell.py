"""The step cells of a chip during one run: the drifting PCM cells that hold an ODE solver's step
size (docs/ode.md), written and read by the ``cellw`` and ``cellr`` instructions.

A write goes to the next of the ``rows`` rows in rotation and draws, from the run's random stream,
the programming noise of the written conductance (the target's ``step_cell.programming_noise``,
as :func:`cimc.runtime.device.program`) and the row's drift exponent for this write,
``nu = |nu_mean(g) + nu_std(g) xi|`` (the cell's ``nu_levels`` or its curves of g); it records the
chip time of the write and counts it. A read gives the last written row's conductance at the
chip time, ``G_prog (max(tau, t0)/t0)^-nu`` (:func:`cimc.ops.ode.cell_conductance`), as a
fraction of the cell's G_max. The state lives in the run: every run starts with unwritten cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cimc.ops.ode import cell_conductance, cell_levels
from cimc.runtime import device
from cimc.targets.schema import StepCell


@dataclass
class StepCells:
    """The rows of step cells of one run (see the module docstring)."""

    model: StepCell
    g_us: list[float] = field(default_factory=list)  # programmed conductance per row
    t_write: list[float] = field(default_factory=list)  # chip time of the row's last write
    nu: list[float] = field(default_factory=list)
    writes: list[int] = field(default_factory=list)  # per row
    current: int = -1  # the row written last

    def __post_init__(self) -> None:
        n = self.model.rows
        self.g_us, self.t_write, self.nu = [0.0] * n, [0.0] * n, [0.0] * n
        self.writes = [0] * n

    def exponent_stats(self, g: float) -> tuple[float, float]:
        """Mean and spread of the drift exponent of a write to the fraction ``g`` of G_max."""
        m = self.model
        std = max(float(device.eval_curve(m.nu_std, np.array([g]))[0]), 0.0) if m.nu_std else 0.0
        if m.nu_levels:
            levels = cell_levels(m.levels, m.g_min)
            return m.nu_levels[int(np.argmin(np.abs(np.log(levels / max(g, 1e-12)))))], std
        return float(device.eval_curve(m.nu_mean, np.array([g]))[0]), std

    def write(self, g: float, now: float, rows: int, rng: np.random.Generator) -> int:
        """Write the fraction ``g`` of G_max to the next of ``rows`` rows; returns the row."""
        m = self.model
        row = (self.current + 1) % rows
        target = np.array([min(max(g, 0.0), 1.0) * m.g_max_us], np.float32)
        self.g_us[row] = float(device.program(target, m.g_max_us, m.programming_noise, rng)[0])
        mean, std = self.exponent_stats(g)
        self.nu[row] = abs(mean + std * float(rng.standard_normal()))
        self.t_write[row] = now
        self.writes[row] += 1
        self.current = row
        return row

    def read(self, now: float) -> float:
        """The last written row's conductance at chip time ``now``, a fraction of G_max."""
        row = self.current
        tau = now - self.t_write[row]
        return float(cell_conductance(self.g_us[row], self.nu[row], tau, self.model.t0_s)
                     / self.model.g_max_us)

    @property
    def written(self) -> bool:
        return self.current >= 0
