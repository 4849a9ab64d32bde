"""Pass "ode-unroll": text in, text out, and the unrolled loop gives the ode.solve's numbers bit
for bit (every solver, step rule, time input, steady exit), and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import SolverError
from cimc.ir import parse_module, run
from cimc.passes import run_pipeline
from cimc.testing import check_pass

EULER = """module {
  func @main(%x: tensor<2x1xf32>) -> (tensor<2x1xf32>) attributes {input_names = ["x"], output_names = ["x"]} {
    %y = ode.solve(%x) {atol = 1e-06, h0 = 0.0, max_steps = 100, rtol = 0.001, solver = "euler", steady = 0.0, step = "fixed:4", t0 = 0.0, t1 = 1.0, time = "none"} ({
      ^bb(%s: tensor<2x1xf32>):
        %k = nn.constant() {value = dense<[-1.0] : tensor<f32>>} : tensor<f32>
        %d = nn.mul(%s, %k) : tensor<2x1xf32>
        yield(%d)
    }) : tensor<2x1xf32>
    return(%y)
  }
}
"""

EULER_UNROLLED = """module {
  func @main(%0: tensor<2x1xf32>) -> (tensor<2x1xf32>) attributes {input_names = ["x"], output_names = ["x"]} {
    %1 = nn.constant() {value = dense<[-1.0] : tensor<f32>>} : tensor<f32>
    %2 = nn.constant() {value = dense<[0.0] : tensor<f64>>} : tensor<f64>
    %3 = nn.constant() {value = dense<[0.25] : tensor<f64>>} : tensor<f64>
    %4 = nn.constant() {value = dense<[1.0] : tensor<f64>>} : tensor<f64>
    %5 = nn.constant() {value = dense<[0.999999999] : tensor<f64>>} : tensor<f64>
    %6 = nn.constant() {value = dense<[100.0] : tensor<f64>>} : tensor<f64>
    %35, %36, %37, %38, %39, %40, %41, %42 = ode.loop(%0, %2, %3, %2, %2, %2, %2, %2) {carried = ["x", "t", "h", "steps", "rejected", "tries", "iter", "fevals"]} ({
      ^bb(%7: tensor<2x1xf32>, %8: tensor<f64>, %9: tensor<f64>, %10: tensor<f64>, %11: tensor<f64>, %12: tensor<f64>, %13: tensor<f64>, %14: tensor<f64>):
        %15 = nn.sub(%4, %8) : tensor<f64>
        %16 = nn.mul(%15, %5) : tensor<f64>
        %17 = nn.greater_equal(%9, %16) : tensor<i1>
        %18 = nn.where(%17, %15, %9) : tensor<f64>
        %19 = nn.cast(%18) {to = "f32"} : tensor<f32>
        %20 = nn.mul(%7, %1) : tensor<2x1xf32>
        %21 = nn.mul(%20, %19) : tensor<2x1xf32>
        %22 = nn.add(%7, %21) : tensor<2x1xf32>
        %23 = nn.add(%8, %18) : tensor<f64>
        %24 = nn.where(%17, %4, %23) : tensor<f64>
        %25 = nn.add(%10, %4) : tensor<f64>
        %26 = nn.add(%13, %4) : tensor<f64>
        %27 = nn.add(%14, %4) : tensor<f64>
        %28 = nn.reduce_sum(%22) {axes = [0, 1], keepdims = false} : tensor<f32>
        %29 = nn.sub(%28, %28) : tensor<f32>
        %30 = nn.equal(%29, %29) : tensor<i1>
        %31 = nn.not(%30) : tensor<i1>
        ode.check(%31, %24) {message = "the state is not finite (NaN or Inf) at t = {}; the field diverges or the step is too large (lower rtol/atol or h0)"}
        ode.stat(%24, %18, %4) {append = true, names = ["t", "h", "accepted"]}
        %32 = nn.less(%24, %4) : tensor<i1>
        %33 = nn.less(%25, %6) : tensor<i1>
        %34 = nn.and(%32, %33) : tensor<i1>
        yield(%34, %22, %24, %9, %25, %11, %12, %26, %27)
    }) : tensor<2x1xf32>, tensor<f64>, tensor<f64>, tensor<f64>, tensor<f64>, tensor<f64>, tensor<f64>, tensor<f64>
    %43 = nn.less(%36, %4) : tensor<i1>
    ode.check(%43, %36) {message = "max_steps = 100 exceeded: the solve reached t = {} of t1 = 1; raise max_steps or loosen rtol/atol"}
    ode.stat(%38, %39, %42, %36) {append = false, names = ["steps", "rejected", "f_evals", "t_end"]}
    return(%35)
  }
}
"""


def test_euler_unrolls_into_a_loop_of_one_stage():
    check_pass(EULER, "ode-unroll", EULER_UNROLLED, rtol=0, atol=0)
    out = run(parse_module(EULER_UNROLLED), {"x": np.ones((2, 1), np.float32)})["x"]
    np.testing.assert_allclose(out, 0.75**4)  # four steps of x <- x - x/4


# dx/dt = x A + t b: a damped rotation pushed along by the time input ([] or [1])
FIELD = """module {{
  func @main(%x: tensor<3x2xf32>) -> (tensor<3x2xf32>) attributes {{input_names = ["x"], output_names = ["x"]}} {{
    %y = ode.solve(%x) {{{attrs}, t0 = 0.0, t1 = 2.0, time = "{time}"}} ({{
      ^bb(%s: tensor<3x2xf32>{targ}):
        %a = nn.constant() {{value = dense<[-0.3, 2.0, -2.0, -0.3] : tensor<2x2xf32>>}} : tensor<2x2xf32>
        %d = nn.matmul(%s, %a) : tensor<3x2xf32>
        {tuse}
        yield(%e)
    }}) : tensor<3x2xf32>
    return(%y)
  }}
}}
"""

COMMON = 'atol = 1e-05, h0 = 0.0, max_steps = 500, rtol = 0.001, steady = 0.0'
DRIFT = ('cell_g = [0.1, 0.2, 0.4, 0.7, 1.0], cell_nu = [0.08, 0.07, 0.06, 0.05, 0.05], '
         'cell_rows = 4, cell_t0_s = 0.0001, grow_below = [0.6, 0.2], h_unit = 0.2, '
         'iteration_s = 0.002, level0 = 2, shrink_by = 2')


def field(attrs: str, time: str = "none") -> str:
    targ = {"none": "", "scalar": ", %t: tensor<f32>", "vector": ", %t: tensor<1xf32>"}[time]
    tuse = ("%e = nn.identity(%d) : tensor<3x2xf32>" if time == "none" else
            "%e = nn.add(%d, %t) : tensor<3x2xf32>")
    return FIELD.format(attrs=attrs, time=time, targ=targ, tuse=tuse)


@pytest.mark.parametrize("solver, step, time, extra", [
    ("heun-euler", "digital", "none", ""),
    ("heun-euler", "digital", "scalar", ""),
    ("bosh3", "digital", "vector", ""),
    ("rk4", "fixed:7", "vector", ""),
    ("heun-euler", "fixed:5", "none", ""),
    ("heun-euler", "drift", "scalar", DRIFT),
    ("bosh3", "drift", "none", DRIFT),
])
def test_the_loop_gives_the_solve_bit_for_bit(solver, step, time, extra):
    attrs = f'{COMMON}, solver = "{solver}", step = "{step}"' + (f", {extra}" if extra else "")
    src = field(attrs, time)
    text = check_pass(src, "ode-unroll", rtol=0, atol=0)
    assert "ode.solve" not in text and text.count("ode.loop") == 1
    stages = {"heun-euler": 2, "bosh3": 3, "rk4": 4}[solver]  # f-calls in the loop (bosh3: FSAL)
    loop = text[text.index("ode.loop"):text.index("yield(%")]
    assert loop.count("nn.matmul") == stages
    assert ("ode.cell_write" in text) == (step == "drift")


def test_steady_stops_once_the_field_is_small():
    # dx/dt = -x: |f| = |x| falls below 0.1 near t = ln(10) = 2.3, long before t1 = 50
    src = EULER.replace('steady = 0.0, step = "fixed:4", t0 = 0.0, t1 = 1.0',
                        'steady = 0.1, step = "fixed:500", t0 = 0.0, t1 = 50.0')
    src = src.replace('max_steps = 100', 'max_steps = 1000')
    check_pass(src, "ode-unroll", rtol=0, atol=0)
    m = parse_module(src)
    x = np.full((2, 1), 1.0, np.float32)
    before = run(m, {"x": x})["x"]
    run_pipeline(m, "ode-unroll")
    assert np.array_equal(run(m, {"x": x})["x"], before)
    assert 0.09 < float(np.sqrt(np.mean(before**2))) < 0.1


def test_max_steps_and_non_finite_states_stop_the_solve():
    m = parse_module(EULER.replace('max_steps = 100', 'max_steps = 3'))
    run_pipeline(m, "ode-unroll")
    with pytest.raises(SolverError, match=r"max_steps = 3 exceeded: the solve reached "
                                          r"t = 0\.75 of t1 = 1"):
        run(m, {"x": np.ones((2, 1), np.float32)})
    blowup = EULER.replace("dense<[-1.0]", "dense<[1e+38]")
    m = parse_module(blowup)
    run_pipeline(m, "ode-unroll")
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(SolverError, match=r"not finite \(NaN or Inf\) at t = 0\.5;"):
        run(m, {"x": np.ones((2, 1), np.float32)})
