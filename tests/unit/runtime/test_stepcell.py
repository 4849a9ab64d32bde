"""The step cell on the reference machine (cellw, cellr; cimc.runtime.stepcell): writes rotate
over the rows and are counted, reads follow the chip clock with the drift law, writes carry
seeded programming noise and drift exponents, costs, and errors."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_kit import target_dict, write_artifact

from cimc.errors import ArtifactError
from cimc.ops.ode import cell_conductance
from cimc.runtime import device, load
from cimc.targets import load_target

# Write level g n times (each followed by a read and the clock), in a loop, over `rows` rows;
# then read the last write again after `wait` (digital work on a big buffer advances the clock).
LOOP = """
.core 0 chip=0
.const g name="g"
.const one name="one"
.const n name="n"
  input  x, name="x"
  dop    k, one, one, op="nn.sub"
top:
  cellw  g, one, rows={rows}
  cellr  r
  time   t
  stat   r, name="read", append=true
  stat   t, name="at", append=true
  dop    k, k, one, op="nn.add"
  dop    c, k, n, op="nn.less"
  branch c, label="top"
  dop    w, x, x, op="nn.mul"
  time   tl
  cellr  late
  stat   late, name="late"
  stat   tl, name="late_at"
  stat   k, name="steps"
  output w, name="y"
  halt
"""

PCM40 = load_target("pcm40")
CELL = PCM40.step_cell


def cell_artifact(tmp_path, n: int, rows: int, g: float = 0.5, target=None, name="c.cimc"):
    return write_artifact(
        tmp_path / name, {0: LOOP.format(rows=rows)},
        {"const/g": np.array(g), "const/one": np.array(1.0), "const/n": np.array(float(n))},
        [("x", (1, 200_000), "f32")], [("y", (1, 200_000), "f32")],
        target=target or "pcm40", extra_manifest={"batch": None})


def run(path, seed=0):
    chip = load(path, seed=seed)
    chip.run({"x": np.ones((1, 200_000), np.float32)})
    return chip


def test_writes_rotate_over_the_rows_and_are_counted(tmp_path):
    chip = run(cell_artifact(tmp_path, n=7, rows=3))
    cells = chip.last_run.step_cells
    assert cells.writes == [3, 2, 2] + [0] * (CELL.rows - 3)
    stats = chip.last_stats
    assert (stats["cell_writes"], stats["max_writes_per_row"], stats["steps"]) == (7, 3, 7)
    assert len(stats["trace"]["read"]) == 7 and stats["latency_ns"] > 0


def test_reads_follow_the_chip_clock_and_the_drift_law(tmp_path):
    chip = run(cell_artifact(tmp_path, n=2, rows=4))
    cells, stats = chip.last_run.step_cells, chip.last_stats
    row = cells.current
    # right after its write (a read is a few ns later, well within t0) the cell reads G_prog
    assert stats["trace"]["read"][-1] == pytest.approx(cells.g_us[row] / CELL.g_max_us)
    # after 200,000 elements of digital work (250 µs at pcm40's 1.25 ns per element) it drifted
    tau = stats["late_at"] - cells.t_write[row]
    assert tau == pytest.approx(200_000 * PCM40.costs.digital_ns_per_element * 1e-9, rel=0.01)
    assert tau > CELL.t0_s
    want = cell_conductance(cells.g_us[row], cells.nu[row], tau, CELL.t0_s) / CELL.g_max_us
    assert stats["late"] == pytest.approx(want, rel=1e-12)
    assert stats["late"] < stats["trace"]["read"][-1]


def test_writes_carry_seeded_programming_noise_and_drift_exponents(tmp_path):
    path = cell_artifact(tmp_path, n=400, rows=16)
    reads = np.array(run(path, seed=3).last_stats["trace"]["read"])
    again = np.array(run(path, seed=3).last_stats["trace"]["read"])
    other = np.array(run(path, seed=4).last_stats["trace"]["read"])
    assert np.array_equal(reads, again) and not np.array_equal(reads, other)
    sigma = device.programming_sigma(np.array([0.5 * CELL.g_max_us]), CELL.g_max_us,
                                     CELL.programming_noise)[0] / CELL.g_max_us
    assert abs(reads.mean() - 0.5) < 4 * sigma / np.sqrt(400)
    assert np.std(reads) == pytest.approx(sigma, rel=0.15)
    nus = np.array(run(path, seed=3).last_run.step_cells.nu)  # the last write of each row
    mean = float(device.eval_curve(CELL.nu_mean, np.array([0.5]))[0])
    assert 0 < nus.min() and abs(nus.mean() - mean) < 0.03 and nus.std() > 0


def test_a_write_costs_the_cells_time_and_energy(tmp_path):
    chip = run(cell_artifact(tmp_path, n=5, rows=2))
    report = chip.report()
    assert report.executed["cellw"] == 5 and report.executed["cellr"] == 6
    assert report.energy_nj["cell"] == pytest.approx(5 * CELL.write_nj + 6 * CELL.read_nj)


def test_step_cell_errors(tmp_path):
    no_write = LOOP.format(rows=2).replace("top:\n  cellw  g, one, rows=2\n", "top:\n")
    path = write_artifact(tmp_path / "r.cimc", {0: no_write},
                          {"const/g": np.array(0.5), "const/one": np.array(1.0),
                           "const/n": np.array(1.0)},
                          [("x", (1, 4), "f32")], [("y", (1, 4), "f32")], target="pcm40",
                          extra_manifest={"batch": None})
    with pytest.raises(ArtifactError, match=r"core_000.s:\d+: cellr  r: cellr reads the step "
                                            r"cell before any cellw wrote it"):
        load(path).run({"x": np.ones((1, 4), np.float32)})
    with pytest.raises(ArtifactError, match="this target has no step cell"):
        run(cell_artifact(tmp_path, n=1, rows=2, target="hermes64", name="h.cimc"))
    with pytest.raises(ArtifactError, match="cellw rotates over 17 rows, but the step cell has 16"):
        run(cell_artifact(tmp_path, n=1, rows=17, name="r17.cimc"))
    with pytest.raises(ArtifactError, match="cellw needs rows >= 1"):
        run(cell_artifact(tmp_path, n=1, rows=0, name="r0.cimc"))
    assert target_dict("pcm40")["step_cell"]["rows"] == 16
