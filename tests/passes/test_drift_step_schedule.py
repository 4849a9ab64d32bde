"""Pass "drift-step-schedule": the cell model and the nominal clock from the target (text in,
text out), the tuned schedule (within the tolerance, in fewer tries than the grid's start), the
semantics bound, and its errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from cimc.errors import PassError, VerifyError
from cimc.ir import parse_module
from cimc.ir.verify import verify
from cimc.ops import registry
from cimc.ops.ode import OdeConfig, final_error, solve
from cimc.passes import run_pipeline
from cimc.passes.base import PassContext
from cimc.passes.drift_step_schedule import _runner, reference
from cimc.targets import Target, load_target
from cimc.testing import check_pass

SPIRAL = """module {
  func @main(%x: tensor<1x2xf32>) -> (tensor<1x2xf32>) attributes {input_names = ["x"], output_names = ["x"]} {
    %y = ode.solve(%x) {atol = 0.0001, cell_g = [0.5, 1.0], cell_nu = [0.06, 0.05], cell_rows = 1, cell_t0_s = 1.0, grow_below = [0.5], h0 = 0.0, h_unit = 0.1, iteration_s = 0.001, level0 = 0, max_steps = 1000, rtol = 0.01, shrink_by = 1, solver = "heun-euler", steady = 0.0, step = "drift", t0 = 0.0, t1 = 1.5, time = "none"} ({
      ^bb(%s: tensor<1x2xf32>):
        %a = nn.constant() {value = dense<[-0.25, 2.0, -2.0, -0.25] : tensor<2x2xf32>>} : tensor<2x2xf32>
        %s2 = nn.mul(%s, %s) : tensor<1x2xf32>
        %s3 = nn.mul(%s2, %s) : tensor<1x2xf32>
        %d = nn.matmul(%s3, %a) : tensor<1x2xf32>
        yield(%d)
    }) : tensor<1x2xf32>
    return(%y)
  }
}
"""

# the target's 4-level cell replaces the op's; iteration_s: one try of a heun-euler step costed
# from pcm40's costs (two MVMs of 1 µs and the digital ops at 1.25 ns per element)
FROM_TARGET = """module {
  func @main(%0: tensor<1x2xf32>) -> (tensor<1x2xf32>) attributes {input_names = ["x"], output_names = ["x"]} {
    %6 = ode.solve(%0) {accept_below = 1.0, atol = 0.0001, cell_g = [0.125, 0.25, 0.5, 1.0], cell_nu = [0.0566313, 0.049, 0.049, 0.049], cell_rows = 8, cell_t0_s = 0.0001, grow_below = [0.5], h0 = 0.0, h_unit = 0.1, iteration_s = 2.64125e-06, level0 = 0, max_steps = 1000, rtol = 0.01, shrink_by = 1, solver = "heun-euler", steady = 0.0, step = "drift", t0 = 0.0, t1 = 1.5, time = "none"} ({
      ^bb(%1: tensor<1x2xf32>):
        %2 = nn.constant() {value = dense<[-0.25, 2.0, -2.0, -0.25] : tensor<2x2xf32>>} : tensor<2x2xf32>
        %3 = nn.mul(%1, %1) : tensor<1x2xf32>
        %4 = nn.mul(%3, %1) : tensor<1x2xf32>
        %5 = nn.matmul(%4, %2) : tensor<1x2xf32>
        yield(%5)
    }) : tensor<1x2xf32>
    return(%6)
  }
}
"""

X0 = np.array([[2.0, 0.0]], np.float32)


def small_cell_target() -> Target:
    d = load_target("pcm40").to_dict()
    d["step_cell"] = {**d["step_cell"], "levels": 4, "g_min": 0.125, "rows": 8}
    return Target.from_dict(d)


def test_the_cell_and_the_clock_come_from_the_target():
    ctx = PassContext(target=small_cell_target(), calib={"x": X0})
    check_pass(SPIRAL, "drift-step-schedule{tune=false}", FROM_TARGET, ctx=ctx, lossy=1.0)


def test_the_tuned_schedule_keeps_the_error_within_the_tolerance():
    ctx = PassContext(target=small_cell_target(), calib={"x": X0})
    text = check_pass(SPIRAL, "drift-step-schedule", ctx=ctx, lossy=0.05)
    r = ctx.ode.schedule
    assert r.drift_error <= r.error_budget <= 1.0
    assert r.calibration_states == 1 and r.trials > 10
    # the chosen numbers are in the IR and in the report
    op = parse_module(text).main.body.ops[-2]
    attrs = registry.lookup(op.name).with_defaults(op.attrs)
    assert (attrs["h_unit"], attrs["level0"], attrs["grow_below"], attrs["shrink_by"],
            attrs["accept_below"]) == (r.h_unit, r.level0, r.grow_below, r.shrink_by,
                                       r.accept_below)
    assert attrs["cell_rows"] == r.rows == 8
    # the grid's start is among the trials: tuning never does worse than it
    start = check_pass(SPIRAL, "drift-step-schedule{tune=false}",
                       ctx=PassContext(target=small_cell_target(), calib={"x": X0}), lossy=1.0)
    assert start != text


def _config(source: str, **drift) -> tuple[OdeConfig, Any]:
    op = parse_module(source).main.body.ops[0]
    cfg = OdeConfig.from_attrs(registry.lookup(op.name).with_defaults(op.attrs))
    return replace(cfg, drift=replace(cfg.drift, **drift)), _runner(op)


def test_accept_below_holds_each_step_to_that_share_of_the_tolerance():
    # the error in units of accept_below: the same tries, bit for bit, as the tolerances scaled
    cfg, field = _config(SPIRAL, h_unit=0.05)
    held, _ = _config(SPIRAL, h_unit=0.05, accept_below=0.25)
    x, stats = solve(held, field, X0)
    y, want = solve(replace(cfg, rtol=cfg.rtol / 4, atol=cfg.atol / 4), field, X0)
    assert np.array_equal(x, y) and stats == want
    assert stats["rejected"] > solve(cfg, field, X0)[1]["rejected"]
    with pytest.raises(VerifyError, match=r"accept_below must lie in \(0, 1\], got 1.5"):
        verify(parse_module(SPIRAL.replace("atol = 0.0001,", "accept_below = 1.5, atol = 0.0001,")))


def test_a_long_solve_is_held_to_the_tolerance_at_its_end():
    # a controller of each step's error ends a long solve several tolerances off; the tuned
    # schedule ends within the tolerance (its reference agrees with scipy's)
    long = SPIRAL.replace("t1 = 1.5", "t1 = 5.0").replace("rtol = 0.01", "rtol = 0.001")
    ctx = PassContext(target=load_target("pcm40"), calib={"x": X0})
    text = check_pass(long, "drift-step-schedule", ctx=ctx, lossy=0.05)
    r = ctx.ode.schedule
    assert r.digital_error > 1.5 and r.drift_error <= r.error_budget and not r.notes
    cfg, field = _config(text)
    x, _ = solve(cfg, field, X0)
    a = np.array([[-0.25, 2.0], [-2.0, -0.25]])
    ref = solve_ivp(lambda t, y: y ** 3 @ a, (0, 5.0), X0[0].astype(np.float64),
                    method="DOP853", rtol=1e-11, atol=1e-13).y[:, -1]
    assert final_error(reference(cfg, field, X0), ref, cfg.rtol, cfg.atol) < 0.1
    assert final_error(x, ref, cfg.rtol, cfg.atol) <= 1.0


def test_drift_needs_a_step_cell():
    src = SPIRAL.replace("cell_g = [0.5, 1.0], cell_nu = [0.06, 0.05], ", "")
    with pytest.raises(VerifyError, match=r"needs cell_g.*compile for a target with a "
                                          r"\[step_cell\]"):
        verify(parse_module(src))
    ctx = PassContext(target=load_target("hermes64"), calib={"x": X0})
    with pytest.raises(PassError, match="target 'hermes64' has none"):
        run_pipeline(parse_module(SPIRAL), "drift-step-schedule{tune=false}", ctx)
    with pytest.raises(PassError, match="calibration array 'x' has shape"):
        run_pipeline(parse_module(SPIRAL), "drift-step-schedule",
                     PassContext(target=small_cell_target(), calib={"x": np.zeros((1, 3))}))
