"""ODE solves end to end (docs/ode.md): an ONNX vector field compiled with ``ode=...``, run on
the chip against the interpreter and scipy; f's crossbars shared by every stage; the interface's
errors; the command line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from scipy.integrate import solve_ivp

import cimc
from cimc.cli import main
from cimc.errors import CimcError, SolverError
from cimc.ir import run as interpret
from cimc.ops.ode import final_error

STATS = {"steps", "rejected", "f_evals", "t_end", "cell_writes", "max_writes_per_row",
         "latency_ns", "energy_nj"}
A = np.array([[-0.25, 2.0], [-2.0, -0.25]], np.float32)
B = np.array([0.5, -0.5], np.float32)


def graph(nodes, inputs, out_shape, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "f", inputs,
                          [helper.make_tensor_value_info("dx", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def rotation(n: int = 3, time_shape=(1,), a: np.ndarray = A) -> onnx.ModelProto:
    """dx/dt = x A + t b: a damped rotation pushed by the time input."""
    nodes = [helper.make_node("MatMul", ["x", "A"], ["y"]),
             helper.make_node("Mul", ["t", "B"], ["tb"]),
             helper.make_node("Add", ["y", "tb"], ["dx"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 2]),
           helper.make_tensor_value_info("t", TensorProto.FLOAT, list(time_shape))]
    return graph(nodes, ins, [n, 2], {"A": a, "B": B})


def rotation_f64(t: float, y: np.ndarray) -> np.ndarray:
    x = y.reshape(-1, 2)
    return (x @ A.astype(np.float64) + t * B.astype(np.float64)).ravel()


def mlp(n: int = 16, hidden: int = 32, seed: int = 0) -> tuple[onnx.ModelProto, list]:
    """dx/dt = tanh(tanh([x, t] W1 + b1) W2) W3, three layers with stationary weights."""
    rng = np.random.default_rng(seed)
    w = [(rng.standard_normal((4, hidden)) * 0.5).astype(np.float32),
         (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32),
         (rng.standard_normal((hidden, 3)) / np.sqrt(hidden) * 0.5).astype(np.float32)]
    b1 = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Expand", ["t", "shape"], ["tt"]),
             helper.make_node("Concat", ["x", "tt"], ["xt"], axis=1),
             helper.make_node("Gemm", ["xt", "w1", "b1"], ["h1"]),
             helper.make_node("Tanh", ["h1"], ["a1"]),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"]),
             helper.make_node("Tanh", ["h2"], ["a2"]),
             helper.make_node("MatMul", ["a2", "w3"], ["dx"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 3]),
           helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])]
    inits = {"w1": w[0], "w2": w[1], "w3": w[2], "b1": b1,
             "shape": np.array([n, 1], np.int64)}
    return graph(nodes, ins, [n, 3], inits), [*w, b1]


def mlp_f64(params: list) -> object:
    w1, w2, w3, b1 = (np.asarray(p, np.float64) for p in params)

    def f(t: float, y: np.ndarray) -> np.ndarray:
        x = y.reshape(-1, 3)
        xt = np.concatenate([x, np.full((len(x), 1), t)], axis=1)
        return (np.tanh(np.tanh(xt @ w1 + b1) @ w2) @ w3).ravel()

    return f


def scipy_solve(f, x0: np.ndarray, t1: float) -> np.ndarray:
    sol = solve_ivp(f, (0.0, t1), x0.astype(np.float64).ravel(), method="DOP853", rtol=1e-10,
                    atol=1e-12)
    return sol.y[:, -1].reshape(x0.shape)


X0 = np.array([[1.0, 0.0], [0.0, 2.0], [-1.5, 0.5]], np.float32)


@pytest.mark.parametrize("solver", ["heun-euler", "bosh3"])
def test_a_small_ode_on_the_ideal_chip_is_the_interpreters_and_scipys(tmp_path, solver):
    rtol, atol = 1e-3, 1e-5
    result = cimc.compile(rotation(), "ideal", tmp_path / "r.cimc", calib={"x": X0},
                          ode={"t1": 2.0, "rtol": rtol, "atol": atol, "solver": solver})
    chip = cimc.load(tmp_path / "r.cimc")
    y = chip.run({"x": X0})["x"]
    assert np.array_equal(y, interpret(result.module, {"x": X0})["x"])  # exact devices
    assert final_error(y, scipy_solve(rotation_f64, X0, 2.0), rtol, atol) < 5
    stats = chip.last_stats
    assert STATS <= set(stats) and stats["t_end"] == 2.0 and stats["cell_writes"] == 0
    assert stats["f_evals"] == (3 * stats["steps"] + 3 * stats["rejected"] + 1
                                if solver == "bosh3" else 2 * (stats["steps"] + stats["rejected"]))
    assert chip.report().ode.steps == stats["steps"]


def test_an_mlp_field_on_pcm40_with_drift_control(tmp_path):
    model, params = mlp()
    x0 = np.random.default_rng(1).standard_normal((16, 3)).astype(np.float32)
    result = cimc.compile(model, "pcm40", tmp_path / "m.cimc", calib={"x": x0},
                          ode="t1=1.0,rtol=1e-2,atol=1e-4")
    sched = result.ode.schedule
    assert result.ode.solve["step"] == "drift" and sched.drift_error <= sched.error_budget
    chip = cimc.load(tmp_path / "m.cimc", seed=0)
    y = chip.run({"x": x0})["x"]
    stats = chip.last_stats
    assert STATS <= set(stats) and stats["t_end"] == 1.0 and stats["cell_writes"] >= 1
    assert stats["f_evals"] > 10
    ref = scipy_solve(mlp_f64(params), x0, 1.0)
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()  # 17-level weights, noise
    report = chip.report()
    # every stage of every iteration reads the three crossbars of one evaluation
    assert report.crossbars == 3
    assert [u.mvm_vectors for u in report.layers] == [16 * stats["f_evals"]] * 3
    for prog in chip.machine.programs.values():
        assert len(prog.labels) == 1
    text = str(report)
    assert "per iteration" in text and "the chip reports 2.12 ms" in text
    assert "step controller: PCM step cells 0.002 mm² vs a digital controller 0.04 mm²" in text


@pytest.mark.parametrize("ode, target, message", [
    ("t1=1.0,rtoll=1e-3", "ideal", r"unknown option\(s\) rtoll; the options are t0, t1"),
    ("rtol=1e-3", "ideal", "t1 \\(the end time\\) is required"),
    ("t1=1.0,step=drift", "hermes64", ("step=drift needs a chip with a drifting step cell, "
                                       "and target 'hermes64' has none")),
    ("t1=1.0,solver=rk4", "ideal", "solver rk4 has no error estimate"),
    ("t1=1.0,step=fixed:0", "ideal", "step must be drift, digital or fixed:N"),
    ("t1=0.0", "ideal", "t1 = 0 must be after t0 = 0"),
])
def test_bad_ode_options(tmp_path, ode, target, message):
    with pytest.raises(CimcError, match=message):
        cimc.compile(rotation(), target, ode=ode)


def test_a_field_whose_output_is_not_the_state(tmp_path):
    with pytest.raises(CimcError, match=r"the field's output 'dx' is tensor<3x1xf32>, but the "
                                        r"state 'x' is tensor<3x2xf32>"):
        cimc.compile(_narrow(rotation()), "ideal", ode="t1=1")


def _narrow(m: onnx.ModelProto) -> onnx.ModelProto:
    """The rotation field with a [2, 1] matrix: its output has one column."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    a = next(i for i in m.graph.initializer if i.name == "A")
    a.CopyFrom(numpy_helper.from_array(A[:, :1].copy(), "A"))
    b = next(i for i in m.graph.initializer if i.name == "B")
    b.CopyFrom(numpy_helper.from_array(B[:1].copy(), "B"))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
    return m


def test_max_steps_and_a_diverging_state_stop_the_run(tmp_path):
    cimc.compile(rotation(), "ideal", tmp_path / "few.cimc",
                 ode="t1=2.0,rtol=1e-6,atol=1e-8,max_steps=5")
    with pytest.raises(SolverError, match=r"max_steps = 5 exceeded: the solve reached "
                                          r"t = 0\.\d+ of t1 = 2"):
        cimc.load(tmp_path / "few.cimc").run({"x": X0})
    cimc.compile(rotation(), "ideal", tmp_path / "big.cimc", ode="t1=2.0,step=fixed:2")
    with np.errstate(over="ignore", invalid="ignore"), \
            pytest.raises(SolverError, match=r"not finite \(NaN or Inf\) at t = 1"):
        cimc.load(tmp_path / "big.cimc").run({"x": np.full((3, 2), 1e38, np.float32)})


def test_the_command_line(tmp_path):
    onnx.save(rotation(), tmp_path / "f.onnx")
    np.save(tmp_path / "x0.npy", X0)
    runner = CliRunner()
    r = runner.invoke(main, ["compile", str(tmp_path / "f.onnx"), "--target", "pcm40",
                             "--ode", "t1=1.0,rtol=1e-2,atol=1e-4", "-o",
                             str(tmp_path / "f.cimc")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["run", str(tmp_path / "f.cimc"), "--input",
                             f"x={tmp_path / 'x0.npy'}", "-o", str(tmp_path / "y.npz")])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ode: ") and "cell writes" in r.stdout
    r = runner.invoke(main, ["report", str(tmp_path / "f.cimc")])
    assert r.exit_code == 1 and "cimc report --input NAME=FILE.npy" in r.output
    r = runner.invoke(main, ["report", str(tmp_path / "f.cimc"), "--input",
                             f"x={tmp_path / 'x0.npy'}"])
    assert r.exit_code == 0, r.output
    assert "ODE solve: heun-euler, step drift" in r.stdout and "drift schedule" in r.stdout
    r = runner.invoke(main, ["compile", str(tmp_path / "f.onnx"), "--ode", "t1=1,x=2"])
    assert r.exit_code == 1 and "unknown option(s) x" in r.output


def test_steady_stops_the_solve_on_the_chip(tmp_path):
    # a fast-decaying rotation without the push: |f| < 0.2 near t = 3, long before t1 = 100
    fast = np.array([[-1.0, 2.0], [-2.0, -1.0]], np.float32)
    still = rotation(a=fast)
    next(i for i in still.graph.initializer if i.name == "B").CopyFrom(
        numpy_helper.from_array(np.zeros(2, np.float32), "B"))
    result = cimc.compile(still, "ideal", tmp_path / "s.cimc",
                          ode="t1=100,rtol=1e-2,atol=1e-4,steady=0.2")
    chip = cimc.load(tmp_path / "s.cimc")
    y = chip.run({"x": X0})["x"]
    assert np.array_equal(y, interpret(result.module, {"x": X0})["x"])
    assert 1 < chip.last_stats["t_end"] < 10
    assert np.sqrt(np.mean((y @ fast) ** 2)) < 0.2


def test_the_float64_field_of_an_onnx_model():
    from cimc.frontend.ode import float64_field

    f, shape = float64_field(rotation())
    y = np.random.default_rng(0).standard_normal(6)
    assert shape == (3, 2)
    np.testing.assert_allclose(f(0.7, y), rotation_f64(0.7, y), rtol=1e-12)
