"""``--ode``: a vector field imported from ONNX becomes the region of an ``ode.solve`` (docs/ode.md).

The user's model is ``f``: inputs the state ``x`` ``[N, D]`` (any name) and optionally a time
input of shape ``[]`` or ``[1]`` (the input of that shape, when there are two), one output of the
state's shape. :func:`wrap_ode` makes a ``@main`` that takes the initial state under the state
input's name and returns the state at ``t1`` under the same name. :func:`parse_ode_spec` reads
the options, ``"t1=1.0,rtol=1e-3"`` or ``{"t1": 1.0, "rtol": 1e-3}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.core import Block, Builder, Func, Module
from cimc.ops.ode import DRIFT_ATTRS, TABLEAUS, cell_levels, parse_step

# option -> (type, default); t1 has no default
OPTIONS: dict[str, tuple[type, Any]] = {
    "t0": (float, 0.0), "t1": (float, None), "rtol": (float, 1e-3), "atol": (float, 1e-6),
    "solver": (str, "heun-euler"), "step": (str, None), "h0": (float, 0.0),
    "max_steps": (int, 10_000), "steady": (float, 0.0),
}


def parse_ode_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """The ``--ode`` options as typed values (unset ones left out, ``t1`` required)."""
    if isinstance(spec, str):
        items: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, eq, value = part.partition("=")
            if not eq:
                raise CimcError(f"--ode: {part!r} is not key=value (e.g. \"t1=1.0,rtol=1e-3\")")
            items[key.strip()] = value.strip()
    elif isinstance(spec, Mapping):
        items = dict(spec)
    else:
        raise CimcError(f"ode options must be a string or a dict, got {type(spec).__name__}")
    unknown = sorted(set(items) - set(OPTIONS))
    if unknown:
        raise CimcError(f"--ode: unknown option(s) {', '.join(unknown)}; the options are "
                        f"{', '.join(OPTIONS)}")
    if "t1" not in items:
        raise CimcError("--ode: t1 (the end time) is required, e.g. --ode \"t1=1.0\"")
    out: dict[str, Any] = {}
    for key, value in items.items():
        kind = OPTIONS[key][0]
        try:
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise ValueError
            out[key] = kind(value)
        except (TypeError, ValueError):
            raise CimcError(f"--ode: {key}={value!r} is not a valid {kind.__name__}") from None
        if kind is float and not math.isfinite(out[key]):
            raise CimcError(f"--ode: {key}={value!r} must be finite")
    if "solver" in out and out["solver"] not in TABLEAUS:
        raise CimcError(f"--ode: solver={out['solver']!r}; expected one of {', '.join(TABLEAUS)}")
    if "step" in out:
        parse_step(out["step"], CimcError)
    return out


def _roles(func: Func) -> tuple[int, int | None]:
    """(index of the state input, index of the time input or None)."""
    shapes = [a.type.shape for a in func.args]
    names = func.input_names
    if len(shapes) == 1:
        return 0, None
    if len(shapes) == 2:
        timeish = [i for i, s in enumerate(shapes) if s in ((), (1,))]
        if timeish:
            t = timeish[-1]
            return 1 - t, t
    raise CimcError(f"--ode: the field takes inputs {', '.join(names)} of shapes "
                    f"{', '.join(str(list(s)) for s in shapes)}; it must take the state [N, D] "
                    "and optionally a time input of shape [] or [1]")


def wrap_ode(module: Module, spec: str | Mapping[str, Any], target: Any = None) -> Module:
    """Make ``module`` (the field f) the region of an ``ode.solve`` in a new ``@main``."""
    opts = parse_ode_spec(spec)
    field = module.main
    xi, ti = _roles(field)
    x_arg = field.args[xi]
    x_name = field.input_names[xi]
    if len(field.outputs) != 1:
        raise CimcError(f"--ode: the field has {len(field.outputs)} outputs "
                        f"({', '.join(field.output_names)}); it must have one, dx/dt")
    dx = field.outputs[0]
    if dx.type != x_arg.type:
        raise CimcError(f"--ode: the field's output '{field.output_names[0]}' is {dx.type}, but "
                        f"the state '{x_name}' is {x_arg.type}; dx/dt must have the state's "
                        "shape and dtype")
    if not x_arg.type.dtype.startswith("f"):
        raise CimcError(f"--ode: the state '{x_name}' is {x_arg.type}; it must be a float tensor")
    time = "none"
    if ti is not None:
        t_arg = field.args[ti]
        if t_arg.type.dtype != x_arg.type.dtype:
            raise CimcError(f"--ode: the time input '{field.input_names[ti]}' is {t_arg.type}; "
                            f"it must have the state's dtype {x_arg.type.dtype}")
        time = "scalar" if t_arg.type.shape == () else "vector"
    attrs = _solve_attrs(opts, time, target)
    main = Func("main", [x_arg.type], input_names=[x_name], output_names=[x_name])
    region = Block([x_arg.type] + ([field.args[ti].type] if ti is not None else []))
    mapping = {x_arg: region.args[0]}
    if ti is not None:
        mapping[field.args[ti]] = region.args[1]
    for op in list(field.body.ops):
        field.body.remove(op)
        if op.name == "return":
            Builder(region).create("yield", [mapping.get(v, v) for v in op.operands],
                                   result_types=[])
            continue
        op.operands = [mapping.get(v, v) for v in op.operands]
        region.append(op)
    for op in region.walk():  # nested regions read the old arguments too
        op.operands = [mapping.get(v, v) for v in op.operands]
    solved = Builder(main.body).create("ode.solve", [main.args[0]], attrs, regions=[region])
    Builder(main.body).create("return", [solved.result], result_types=[])
    return Module([main], dict(module.attrs))


def _solve_attrs(opts: dict[str, Any], time: str, target: Any) -> dict[str, Any]:
    cell = getattr(target, "step_cell", None) if target is not None else None
    attrs = {k: opts.get(k, default) for k, (_, default) in OPTIONS.items()}
    attrs["time"] = time
    if attrs["step"] is None:
        fixed = not TABLEAUS[attrs["solver"]].adaptive
        if fixed:
            raise CimcError(f"--ode: solver {attrs['solver']} has no error estimate; give it a "
                            "fixed step, e.g. step=fixed:100")
        attrs["step"] = "drift" if cell is not None else "digital"
    if not attrs["t1"] > attrs["t0"]:
        raise CimcError(f"--ode: t1 = {attrs['t1']:g} must be after t0 = {attrs['t0']:g}")
    rule, _ = parse_step(attrs["step"], CimcError)
    if rule != "fixed" and not TABLEAUS[attrs["solver"]].adaptive:
        raise CimcError(f"--ode: solver {attrs['solver']} has no error estimate; it takes a "
                        "fixed step (step=fixed:N), not step={attrs['step']}")
    if rule == "drift":
        if cell is None:
            name = getattr(target, "name", "this target")
            raise CimcError(f"--ode: step=drift needs a chip with a drifting step cell, and "
                            f"target {name!r} has none ([step_cell] in its TOML); use "
                            "step=digital or step=fixed:N, or a target such as pcm40")
        attrs.update(drift_defaults(cell, attrs))
    return attrs


def drift_defaults(cell: Any, attrs: dict[str, Any]) -> dict[str, Any]:
    """The step cell's numbers from the target and a first schedule, which drift-step-schedule
    tunes: the level nearest h0 (or a hundredth of the span) in the cell's middle."""
    from cimc.runtime.device import eval_curve

    g = cell_levels(cell.levels, cell.g_min)
    nu = np.asarray(cell.nu_levels, np.float64) if cell.nu_levels else \
        eval_curve(cell.nu_mean, g)
    level0 = cell.levels // 2
    h0 = attrs["h0"] or (attrs["t1"] - attrs["t0"]) / 100
    return {**DRIFT_ATTRS, "cell_g": _short(g), "cell_nu": _short(nu),
            "cell_t0_s": float(cell.t0_s), "cell_rows": int(cell.rows),
            "h_unit": float(f"{h0 / g[level0]:.6g}"), "level0": level0}


def _short(values: np.ndarray) -> list[float]:
    """Six significant digits: the IR dump stays readable; the numbers are these from here on."""
    return [float(f"{v:.6g}") for v in values]


def float64_field(model: Any, input_shapes: Mapping[str, Any] | None = None
                  ) -> tuple[Any, tuple[int, ...]]:
    """The vector field of an ONNX model evaluated in float64 by the reference interpreter, as
    ``f(t, y)`` on the flattened state (scipy's ``solve_ivp`` convention), and the state's shape:
    a float64 solve of the same field to compare a chip's with."""
    from cimc.frontend.onnx import import_onnx
    from cimc.ir.interpreter import run
    from cimc.ir.verify import verify
    from cimc.passes import run_pipeline

    module = import_onnx(model, input_shapes)
    run_pipeline(module, "canonicalize")
    func = module.main
    xi, ti = _roles(func)
    for op in module.walk():
        if op.name == "nn.constant" and op.attrs["value"].dtype == np.float32:
            op.attrs["value"] = op.attrs["value"].astype(np.float64)
        if op.name == "nn.cast" and op.attrs.get("to") == "f32":
            op.attrs["to"] = "f64"
        for v in op.results:
            if v.type.dtype == "f32":
                v.type = v.type.with_dtype("f64")
    for v in func.args:
        if v.type.dtype == "f32":
            v.type = v.type.with_dtype("f64")
    verify(module)
    names, shape = func.input_names, func.args[xi].type.shape
    t_shape = func.args[ti].type.shape if ti is not None else None
    out = func.output_names[0]

    def f(t: float, y: np.ndarray) -> np.ndarray:
        feeds = {names[xi]: np.asarray(y, np.float64).reshape(shape)}
        if ti is not None:
            feeds[names[ti]] = np.full(t_shape, t, np.float64)
        return run(module, feeds)[out].ravel()

    return f, shape
