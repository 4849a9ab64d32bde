"""Checking cimc against onnxruntime: one-node models, whole models, seeded random weights.

Used by the test suite and handy for users who want to check their own model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cimc.frontend.onnx.dtypes import onnx_elem_type


def ort_run(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` with onnxruntime on the CPU; outputs by name."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(inputs))))


def one_node_model(
    op_type: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] = ("y",),
    *,
    initializers: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
    input_names: Sequence[str] | None = None,
    **attrs: Any,
) -> onnx.ModelProto:
    """A model with one node. ``inputs`` are graph inputs (fed at run time); ``initializers``
    are constants. ``input_names`` gives the node's input order ('' for a skipped optional
    input); by default graph inputs then initializers, in the order given."""
    initializers = dict(initializers or {})
    order = list(input_names) if input_names is not None else [*inputs, *initializers]
    node = helper.make_node(op_type, order, list(outputs), name=f"{op_type.lower()}0", **attrs)
    g_inputs = [
        helper.make_tensor_value_info(n, onnx_elem_type(np.asarray(a).dtype), np.shape(a)) for n, a in inputs.items()
    ]
    g_outputs = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in outputs]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()]
    graph = helper.make_graph([node], f"{op_type}_test", g_inputs, g_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    inferred = onnx.shape_inference.infer_shapes(model)
    # Give graph outputs their inferred types so the model passes the checker.
    vi = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for o in model.graph.output:
        if o.name in vi and vi[o.name].type.tensor_type.elem_type:
            o.type.CopyFrom(vi[o.name].type)
    return model


def compare_with_ort(
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    passes: str | None = None,
) -> dict[str, np.ndarray]:
    """Import ``model``, (optionally) run a pass pipeline, interpret, and assert the outputs
    match onnxruntime's. Returns cimc's outputs."""
    from cimc.frontend.onnx import import_onnx
    from cimc.ir.interpreter import run

    want = ort_run(model, inputs)
    module = import_onnx(model, {k: np.shape(v) for k, v in inputs.items()})
    if passes:
        from cimc.passes import run_pipeline

        run_pipeline(module, passes)
    got = run(module, inputs)
    for name, w in want.items():
        assert name in got, f"output {name!r} missing from cimc's outputs {list(got)}"
        g = got[name]
        assert g.shape == w.shape, f"output {name!r}: shape {g.shape} != onnxruntime's {w.shape}"
        assert g.dtype == w.dtype, f"output {name!r}: dtype {g.dtype} != onnxruntime's {w.dtype}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {name!r}")
    return got


def randomize_constant_of_shape(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace every ConstantOfShape whose shape is an initializer by a seeded random initializer
    of that shape (the onnx package's light_* models keep their weights that way).

    Weights (rank >= 2) are He-scaled normal; BatchNorm variances are positive; other vectors
    are small normal values, so activations stay O(1) through deep networks."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.ir_version = max(m.ir_version, 4)  # IR >= 4 allows initializers that are not graph inputs
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    var_inputs = {n.input[4] for n in m.graph.node if n.op_type == "BatchNormalization" and len(n.input) > 4}
    scale_inputs = {n.input[1] for n in m.graph.node if n.op_type == "BatchNormalization"}
    keep, new_inits = [], []
    for node in m.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(d) for d in inits[node.input[0]])
            out = node.output[0]
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
            elif out in var_inputs:
                arr = rng.uniform(0.5, 1.5, shape)
            elif out in scale_inputs:
                arr = rng.uniform(0.5, 1.0, shape)
            else:
                arr = rng.standard_normal(shape) * 0.1
            new_inits.append(numpy_helper.from_array(arr.astype(np.float32), out))
        else:
            keep.append(node)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.initializer.extend(new_inits)
    return m


def random_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs for every graph input that is not an initializer."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def random_args(module, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs for a module's @main (normal floats, small non-negative ints)."""
    rng = np.random.default_rng(seed)
    f = module.main
    out = {}
    for name, v in zip(f.input_names, f.args):
        t = v.type
        if t.dtype.startswith("f"):
            out[name] = rng.standard_normal(t.shape).astype(t.np_dtype)
        elif t.dtype == "i1":
            out[name] = rng.integers(0, 2, t.shape).astype(bool)
        else:
            out[name] = rng.integers(0, 4, t.shape).astype(t.np_dtype)
    return out


def check_pass(
    source: str,
    spec: str,
    expected: str | None = None,
    *,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    inline_limit: int = 1 << 30,
    lossy: float | None = None,
    ctx: Any = None,
) -> str:
    """Text-in/text-out pass test: parse ``source``, run the pipeline ``spec`` (with the pass
    context ``ctx``, if given), compare the printed result with ``expected`` (when given;
    leading/trailing whitespace of the whole text ignored), and check the interpreter gives the
    same outputs before and after on seeded random inputs. Returns the printed result (constants
    inline, so tests are self-contained).

    Lossy passes (pruning, quantisation) change the outputs on purpose: with ``lossy = e`` the
    check is a bound instead, ``max|after - before| <= e * max|before|`` for every output (same
    shapes), on the same random inputs."""
    from cimc.ir.interpreter import run
    from cimc.ir.parser import parse_module
    from cimc.ir.printer import to_text
    from cimc.ir.verify import verify
    from cimc.passes import run_pipeline

    before = parse_module(source, filename="<test input>")
    verify(before)
    args = random_args(before, seed)
    want = run(before, args)
    after = parse_module(source, filename="<test input>")
    run_pipeline(after, spec, ctx)
    text = to_text(after, inline_limit=inline_limit)
    if expected is not None:
        assert text.strip() == expected.strip(), f"pass output differs:\n{text}"
    got = run(after, args)
    assert list(got) == list(want)
    for name in want:
        if lossy is None:
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)
            continue
        assert got[name].shape == want[name].shape, name
        err = float(np.max(np.abs(got[name].astype(np.float64) - want[name]), initial=0.0))
        scale = float(np.max(np.abs(want[name]), initial=0.0))
        assert err <= lossy * scale, (
            f"output {name}: max error {err:.3g} exceeds {lossy} x max|output| ({scale:.3g})")
    # and the output text parses back to itself
    assert to_text(parse_module(text), inline_limit=inline_limit) == text
    return text
