"""One-node tests of the elementwise/activation converters against onnxruntime, the numpy
semantics of the nn elementwise ops, and the clear errors of both."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.errors import CimcError, FrontendError, VerifyError
from cimc.frontend.onnx import import_onnx
from cimc.frontend.onnx import registry as conv_registry
from cimc.ops import registry as op_registry
from cimc.ir.interpreter import run
from cimc.ops import elementwise as ew
from cimc.ir.parser import parse_module
from cimc.ir.printer import to_text
from cimc.ir.verify import verify
from cimc.testing import compare_with_ort, one_node_model


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _normal(shape, dtype=np.float32, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return np.asarray(_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _ints(shape, dtype=np.int32, lo: int = -9, hi: int = 10, seed: int = 0) -> np.ndarray:
    return np.asarray(_rng(seed).integers(lo, hi, shape)).astype(dtype)


def _nonzero_ints(shape, dtype=np.int32, seed: int = 1) -> np.ndarray:
    v = _ints(shape, dtype, -5, 6, seed)
    return np.where(v == 0, 3, v).astype(dtype)


def _check(
    op_type: str, inputs: dict, opset: int = 17, initializers=None, input_names=None, **attrs
):
    model = one_node_model(
        op_type, inputs, initializers=initializers, opset=opset, input_names=input_names, **attrs
    )
    return compare_with_ort(model, inputs)


def _ops_in(model_or_module) -> list[str]:
    module = model_or_module
    return [op.name for op in module.main.body.ops]


# ----------------------------------------------------------------------------- binary arithmetic

BINARY_SHAPES = [
    ((2, 3, 4), (2, 3, 4)),  # same shape
    ((2, 3, 4), (4,)),  # trailing vector
    ((2, 3, 4), (3, 1)),  # middle broadcast
    ((2, 1, 4), (1, 3, 1)),  # both sides broadcast
    ((2, 3), ()),  # scalar
    ((), (2, 3)),  # scalar on the left
    ((1, 3, 1, 1), (2, 3, 4, 5)),  # left operand grows
]


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=lambda s: f"{s[0]}-{s[1]}")
def test_binary_float_broadcasting(op_type, shapes):
    a = _normal(shapes[0], seed=1)
    b = _normal(shapes[1], seed=2)
    if op_type == "Div":
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
    _check(op_type, {"a": a, "b": b})


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64])
def test_binary_other_dtypes(op_type, dtype):
    if np.dtype(dtype).kind == "f":
        a, b = _normal((3, 4), dtype, 3), _normal((4,), dtype, 4) + 5.0
    else:
        a, b = _ints((3, 4), dtype, -20, 21, 3), _nonzero_ints((4,), dtype, 4)
    out = _check(op_type, {"a": a, "b": b})
    assert out["y"].dtype == np.dtype(dtype)


def test_integer_div_truncates_toward_zero():
    a = np.array([-7, -7, 7, 7, -6, 6, 0, -1, 1], np.int32)
    b = np.array([2, -2, 2, -2, 3, -3, 5, 2, -2], np.int32)
    out = _check("Div", {"a": a, "b": b})
    np.testing.assert_array_equal(out["y"], [-3, 3, 3, -3, -2, -2, 0, 0, 0])


@pytest.mark.parametrize("op_type", ["Add", "Mul", "Div"])
@pytest.mark.parametrize("opset", [7, 13, 14, 21])
def test_binary_opsets(op_type, opset):
    _check(op_type, {"a": _normal((2, 3), seed=5), "b": _normal((3,), seed=6) + 4.0}, opset=opset)


def test_binary_with_constant_operand():
    _check("Mul", {"a": _normal((2, 3, 4))}, initializers={"b": _normal((3, 1), seed=3)})


@pytest.mark.parametrize("n_inputs", [1, 2, 3, 4])
def test_sum(n_inputs):
    shapes = [(2, 3, 4), (4,), (3, 1), (1, 1, 4)][:n_inputs]
    inputs = {f"x{i}": _normal(s, seed=i) for i, s in enumerate(shapes)}
    model = one_node_model("Sum", inputs, opset=13)
    module = import_onnx(model)
    expected = ["nn.add"] * (n_inputs - 1) if n_inputs > 1 else ["nn.identity"]
    assert _ops_in(module)[:-1] == expected
    compare_with_ort(model, inputs)


@pytest.mark.parametrize("opset", [7, 8, 13])
def test_sum_opsets(opset):
    inputs = {f"x{i}": _normal((2, 3), seed=i) for i in range(3)}
    _check("Sum", inputs, opset=opset)


# ----------------------------------------------------------------------------- legacy broadcasting


def _legacy_model(op_type: str, a: np.ndarray, b: np.ndarray, **attrs) -> onnx.ModelProto:
    """An opset-6 model (onnxruntime cannot run it; checked against numpy instead)."""
    node = helper.make_node(op_type, ["a", "b"], ["y"], name="legacy", **attrs)
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "legacy",
        [
            helper.make_tensor_value_info("a", f, a.shape),
            helper.make_tensor_value_info("b", f, b.shape),
        ],
        [helper.make_tensor_value_info("y", f, a.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    "op_type, fn",
    [
        ("Add", np.add),
        ("Sub", np.subtract),
        ("Mul", np.multiply),
        ("Div", np.divide),
        ("Pow", np.power),
    ],
)
@pytest.mark.parametrize(
    "b_shape, attrs",
    [
        ((2, 3, 4, 5), {}),
        ((4, 5), {"broadcast": 1}),
        ((5,), {"broadcast": 1}),
        ((1, 1), {"broadcast": 1}),
        ((4, 5), {"broadcast": 1, "axis": 2}),
        ((4, 5), {"broadcast": 1, "axis": -2}),
    ],
)
def test_legacy_binary_numpy_compatible_forms(op_type, fn, b_shape, attrs):
    a = np.abs(_normal((2, 3, 4, 5), seed=1)) + 0.5
    b = _normal(b_shape, seed=2) + 4.0
    got = run(import_onnx(_legacy_model(op_type, a, b, **attrs)), {"a": a, "b": b})["y"]
    np.testing.assert_allclose(got, fn(a, b).astype(np.float32), rtol=1e-5)


def test_legacy_broadcast_with_axis_is_rejected():
    model = _legacy_model("Add", _normal((2, 3, 4, 5)), _normal((3, 4)), broadcast=1, axis=1)
    with pytest.raises(
        FrontendError, match=r"legacy broadcasting.*re-export the model at opset >= 7"
    ):
        import_onnx(model)


def test_legacy_broadcast_without_attribute_is_rejected():
    model = _legacy_model("Mul", _normal((2, 3)), _normal((3,)))
    with pytest.raises(FrontendError, match=r"broadcast=1.*opset >= 7"):
        import_onnx(model)


# ----------------------------------------------------------------------------- pow


@pytest.mark.parametrize(
    "base, exponent, opset",
    [
        (np.abs(_normal((2, 3, 4), seed=1)) + 0.1, _normal((2, 3, 4), seed=2, scale=1.0), 7),
        (np.abs(_normal((2, 3, 4), seed=1)) + 0.1, _normal((4,), seed=2, scale=1.0), 13),
        (_normal((2, 3), seed=1), np.array(2.0, np.float32), 13),
        (_normal((2, 3), seed=1), np.array([3.0], np.float32), 15),
        (_normal((2, 3), seed=1), np.array([2, 3, 0], np.int64), 15),  # float ** int
        (_normal((2, 3), np.float64, seed=1), np.array([2, 3, 1], np.int32), 12),
        (_ints((2, 3), np.int32, -4, 5), np.array([0, 1, 3], np.int32), 15),  # int ** int
        (
            _nonzero_ints((2, 3), np.int64),
            np.array([2, -1, -2], np.int64),
            15,
        ),  # negative exponents
        (_ints((2, 3), np.int32, 1, 9), np.array([0.5, 1.5, 2.0], np.float32), 15),  # int ** float
    ],
    ids=lambda v: str(getattr(v, "dtype", v)),
)
def test_pow(base, exponent, opset):
    _check("Pow", {"a": base, "b": exponent}, opset=opset)


# ----------------------------------------------------------------------------- unary activations

X = _normal((2, 3, 4, 5), seed=7, scale=3.0)

UNARY = [
    ("Relu", {}, 6),
    ("Relu", {}, 14),
    ("LeakyRelu", {}, 7),
    ("LeakyRelu", {"alpha": 0.3}, 16),
    ("Sigmoid", {}, 7),
    ("Sigmoid", {}, 13),
    ("Tanh", {}, 13),
    ("HardSigmoid", {}, 7),
    ("HardSigmoid", {"alpha": 0.1, "beta": 0.4}, 17),
    ("HardSwish", {}, 14),
    ("HardSwish", {}, 21),
    ("Erf", {}, 9),
    ("Erf", {}, 13),
    ("Gelu", {}, 20),
    ("Gelu", {"approximate": "none"}, 20),
    ("Gelu", {"approximate": "tanh"}, 20),
    ("Exp", {}, 7),
    ("Exp", {}, 13),
    ("Neg", {}, 13),
    ("Identity", {}, 7),
    ("Identity", {}, 16),
    ("Identity", {}, 21),
]


@pytest.mark.parametrize("op_type, attrs, opset", UNARY, ids=[f"{o}-{a}-{v}" for o, a, v in UNARY])
def test_unary_float32(op_type, attrs, opset):
    out = _check(op_type, {"x": X}, opset=opset, **attrs)
    assert out["y"].dtype == np.float32


@pytest.mark.parametrize(
    "op_type, attrs",
    # (onnxruntime has no float64 Erf, HardSigmoid or HardSwish; test_float_results_keep_the_input_
    # dtype covers those)
    [
        ("Relu", {}),
        ("Sigmoid", {}),
        ("Tanh", {}),
        ("Exp", {}),
        ("Neg", {}),
        ("LeakyRelu", {"alpha": 0.2}),
        ("Sqrt", {}),
    ],
)
def test_unary_float64(op_type, attrs):
    x = np.abs(X).astype(np.float64) if op_type == "Sqrt" else X.astype(np.float64)
    out = _check(op_type, {"x": x}, **attrs)
    assert out["y"].dtype == np.float64


@pytest.mark.parametrize("opset", [7, 13])
def test_sqrt(opset):
    _check("Sqrt", {"x": np.abs(X)}, opset=opset)


def test_sigmoid_exp_extremes():
    x = np.array([-1000.0, -90.0, -20.0, 0.0, 20.0, 90.0, 1000.0], np.float32)
    _check("Sigmoid", {"x": x})
    _check("Tanh", {"x": x})
    _check("Exp", {"x": np.array([-200.0, 0.0, 80.0], np.float32)})


@pytest.mark.parametrize(
    "op_type, dtype",
    # (onnxruntime's Relu has int8 and int32 kernels only)
    [("Relu", np.int8), ("Relu", np.int32), ("Neg", np.int8), ("Neg", np.int32), ("Neg", np.int64)],
)
def test_unary_integers(op_type, dtype):
    _check(op_type, {"x": _ints((3, 4), dtype)}, opset=14)


def test_relu_float16_keeps_dtype():
    out = _check("Relu", {"x": X.astype(np.float16)})
    assert out["y"].dtype == np.float16


# ----------------------------------------------------------------------------- prelu


@pytest.mark.parametrize(
    "slope_shape",
    [(3, 1, 1), (1,), (), (4, 5), (1, 3, 4, 5), (2, 3, 4, 5), (5,)],
    ids=str,
)
@pytest.mark.parametrize("opset", [7, 9, 16])
def test_prelu_slope_broadcasting(slope_shape, opset):
    x = _normal((2, 3, 4, 5), seed=3)
    slope = _normal(slope_shape, seed=4, scale=0.5)
    _check("PRelu", {"x": x}, initializers={"slope": slope}, opset=opset)


def test_prelu_slope_as_graph_input():
    _check("PRelu", {"x": _normal((2, 3, 4)), "slope": _normal((3, 1), seed=9)})


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_prelu_integers(dtype):
    _check(
        "PRelu",
        {"x": _ints((2, 3), dtype)},
        initializers={"s": np.array([2, 3, -1], dtype)},
        opset=16,
    )


def test_prelu_slope_that_does_not_fit_the_input_is_rejected():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    s = numpy_helper.from_array(_normal((2, 3, 3)), "s")
    node = helper.make_node("PRelu", ["x", "s"], ["y"], name="p")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y], [s]), opset_imports=[helper.make_opsetid("", 16)]
    )
    with pytest.raises(FrontendError, match="unidirectional"):
        import_onnx(model)


def test_prelu_legacy_per_channel_slope_is_rejected():
    x = _normal((2, 3, 4, 5))
    node = helper.make_node("PRelu", ["x", "s"], ["y"], name="p")
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", f, x.shape)],
        [helper.make_tensor_value_info("y", f, x.shape)],
        [numpy_helper.from_array(_normal((3,)), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 8
    with pytest.raises(FrontendError, match="re-export the model at opset >= 7"):
        import_onnx(model)


# ----------------------------------------------------------------------------- clip


@pytest.mark.parametrize(
    "attrs",
    [{}, {"min": -1.0}, {"max": 0.5}, {"min": -0.5, "max": 1.5}, {"min": 0.0, "max": 6.0}],
    ids=str,
)
def test_clip_opset6_attributes(attrs):
    _check("Clip", {"x": X}, opset=6, **attrs)


CLIP_INPUT_FORMS = [
    (["x", "lo", "hi"], {"lo": -1.0, "hi": 0.5}),
    (["x", "lo"], {"lo": -0.25}),
    (["x", "", "hi"], {"hi": 0.75}),
    (["x", "", ""], {}),
    (["x"], {}),
    (["x", "lo", "hi"], {"lo": 2.0, "hi": 1.0}),  # min > max: everything becomes max
]


@pytest.mark.parametrize("opset", [11, 12, 13])
@pytest.mark.parametrize("names, bounds", CLIP_INPUT_FORMS, ids=lambda v: str(v))
def test_clip_optional_inputs(opset, names, bounds):
    inits = {k: np.array(v, np.float32) for k, v in bounds.items()}
    _check("Clip", {"x": X}, initializers=inits, input_names=names, opset=opset)


def test_clip_bounds_from_constant_nodes_fold():
    lo = helper.make_node(
        "Constant", [], ["lo"], value=numpy_helper.from_array(np.array(-1.0, np.float32))
    )
    neg = helper.make_node("Neg", ["lo"], ["hi"])
    clip = helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [lo, neg, clip],
        "g",
        [helper.make_tensor_value_info("x", f, X.shape)],
        [helper.make_tensor_value_info("y", f, X.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    module = import_onnx(model)
    (clip_op,) = [op for op in module.main.body.ops if op.name == "nn.clip"]
    assert clip_op.attrs == {"min": -1.0, "max": 1.0}
    compare_with_ort(model, {"x": X})


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, np.uint8])
def test_clip_integers(dtype):
    lo, hi = (2, 7) if dtype == np.uint8 else (-3, 4)
    x = _ints((3, 5), dtype, 0 if dtype == np.uint8 else -9, 10)
    inits = {"lo": np.array(lo, dtype), "hi": np.array(hi, dtype)}
    _check("Clip", {"x": x}, initializers=inits, opset=13)
    _check(
        "Clip",
        {"x": x},
        initializers={"hi": np.array(hi, dtype)},
        input_names=["x", "", "hi"],
        opset=13,
    )


def test_clip_runtime_bound_is_rejected():
    model = one_node_model("Clip", {"x": X, "lo": np.array(0.0, np.float32)}, opset=13)
    with pytest.raises(FrontendError, match=r"min.*compile time"):
        import_onnx(model)


# ----------------------------------------------------------------------------- cast

CASTS = [
    (np.float32, TensorProto.INT32),
    (np.float32, TensorProto.INT64),
    (np.float32, TensorProto.INT8),
    (np.float32, TensorProto.UINT8),
    (np.float32, TensorProto.BOOL),
    (np.float32, TensorProto.FLOAT16),
    (np.float32, TensorProto.DOUBLE),
    (np.float32, TensorProto.FLOAT),
    (np.float64, TensorProto.FLOAT),
    (np.int64, TensorProto.FLOAT),
    (np.int32, TensorProto.INT64),
    (np.int64, TensorProto.INT8),
    (np.bool_, TensorProto.FLOAT),
    (np.bool_, TensorProto.INT32),
    (np.uint8, TensorProto.FLOAT),
    (np.float16, TensorProto.FLOAT),
]


@pytest.mark.parametrize("src, to", CASTS, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("opset", [9, 13, 19, 21])
def test_cast(src, to, opset):
    if np.dtype(src) == np.bool_:
        x = _rng(2).integers(0, 2, (3, 4)).astype(bool)
    elif np.dtype(src).kind == "f":
        x = _normal((3, 4), src, seed=2, scale=40.0)
        if to == TensorProto.UINT8:
            x = np.abs(x)
        x[0, :3] = [0.0, -0.0, 2.5]
    else:
        x = _ints((3, 4), src, 0 if src == np.uint8 else -100, 100)
    _check("Cast", {"x": x}, opset=opset, to=to)


def test_cast_to_given_as_string_in_opset_1():
    node = helper.make_node("Cast", ["x"], ["y"], name="c", to="INT32")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 1)])
    model.ir_version = 8
    got = run(import_onnx(model), {"x": np.array([-2.7, 0.5, 3.9], np.float32)})["y"]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [-2, 0, 3])


@pytest.mark.parametrize("to", [TensorProto.STRING, TensorProto.UINT16, TensorProto.BFLOAT16])
def test_cast_to_unsupported_dtype_is_rejected(to):
    node = helper.make_node("Cast", ["x"], ["y"], name="c", to=to)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", to, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    name = TensorProto.DataType.Name(to)
    with pytest.raises(FrontendError, match=rf"node 'c' \(Cast\).*{name} is not supported.*FLOAT"):
        import_onnx(model)


# ----------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("opset", [7, 10, 12, 13])
def test_dropout_without_mask(opset):
    out = _check("Dropout", {"x": X}, opset=opset)
    np.testing.assert_array_equal(out["y"], X)


def _dropout_model(opset: int, extra_inputs=(), inits=(), mask: bool = True) -> onnx.ModelProto:
    outputs = ["y", "mask"] if mask else ["y"]
    node = helper.make_node("Dropout", ["x", *extra_inputs], outputs, name="drop")
    mask_type = TensorProto.FLOAT if opset < 10 else TensorProto.BOOL
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, X.shape)]
        + ([helper.make_tensor_value_info("mask", mask_type, X.shape)] if mask else []),
        list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("opset", [7, 10, 12, 13, 21])
def test_dropout_mask_is_all_ones(opset):
    model = _dropout_model(opset)
    got = run(import_onnx(model), {"x": X})
    want_dtype = np.float32 if opset < 10 else np.bool_
    assert got["mask"].dtype == want_dtype and got["mask"].shape == X.shape
    assert np.all(got["mask"] == 1)
    np.testing.assert_array_equal(got["y"], X)
    if opset >= 12:
        # onnxruntime's opset 7-11 kernels fill the mask with zeros; from 12 on it agrees with the
        # ONNX reference (ones: nothing dropped at inference)
        compare_with_ort(model, {"x": X})


@pytest.mark.parametrize("ratio, mode", [(0.5, False), (0.2, None), (None, False)])
def test_dropout_ratio_and_training_mode_inputs(ratio, mode):
    inits, names = [], []
    if ratio is not None:
        inits.append(numpy_helper.from_array(np.array(ratio, np.float32), "ratio"))
    names.append("ratio" if ratio is not None else "")
    if mode is not None:
        inits.append(numpy_helper.from_array(np.array(mode), "mode"))
        names.append("mode")
    compare_with_ort(_dropout_model(13, names, inits), {"x": X})


def test_dropout_training_mode_true_is_rejected():
    model = _dropout_model(13, ["", "mode"], [numpy_helper.from_array(np.array(True), "mode")])
    with pytest.raises(FrontendError, match="inference only"):
        import_onnx(model)


def test_dropout_runtime_training_mode_is_rejected():
    model = _dropout_model(13, ["", "mode"], mask=False)
    model.graph.input.append(helper.make_tensor_value_info("mode", TensorProto.BOOL, []))
    with pytest.raises(FrontendError, match="training_mode.*run time"):
        import_onnx(model)


# ----------------------------------------------------------------------------- constants

CONSTANTS = [
    {"value": numpy_helper.from_array(_normal((2, 3)))},
    {"value": numpy_helper.from_array(np.array(3.5, np.float32))},
    {"value": numpy_helper.from_array(np.array([1, -2, 3], np.int64))},
    {"value": numpy_helper.from_array(np.array([[True, False]]))},
    {"value": numpy_helper.from_array(np.array([1.5, 2.5], np.float64))},
    {"value_float": 2.5},
    {"value_floats": [1.0, -2.0, 0.125]},
    {"value_int": -7},
    {"value_ints": [3, 4, 5]},
]


@pytest.mark.parametrize("attrs", CONSTANTS, ids=lambda a: next(iter(a)))
@pytest.mark.parametrize("opset", [13, 21])
def test_constant(attrs, opset):
    model = one_node_model("Constant", {}, opset=opset, **attrs)
    module = import_onnx(model)
    assert _ops_in(module) == ["nn.constant", "return"]
    text = to_text(module)
    assert to_text(parse_module(text)) == text
    compare_with_ort(model, {})


def test_constant_feeds_a_later_op():
    const = helper.make_node("Constant", [], ["c"], value_floats=[0.5, -1.0, 2.0])
    mul = helper.make_node("Mul", ["x", "c"], ["y"])
    graph = helper.make_graph(
        [const, mul],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    compare_with_ort(model, {"x": _normal((2, 3))})


@pytest.mark.parametrize(
    "attrs, match",
    [
        ({"value_string": "hi"}, "value_string"),
        ({"value_strings": ["a", "b"]}, "value_strings"),
        ({"value": numpy_helper.from_array(np.array([1, 2], np.uint16))}, "uint16"),
    ],
    ids=["value_string", "value_strings", "uint16"],
)
def test_constant_unsupported_forms_are_rejected(attrs, match):
    node = helper.make_node("Constant", [], ["y"], name="k", **attrs)
    graph = helper.make_graph(
        [node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(FrontendError, match=rf"node 'k' \(Constant\).*{match}.*"):
        import_onnx(model)


@pytest.mark.parametrize(
    "shape, value",
    [
        ([2, 3], None),
        ([2, 3, 4], np.array([1.5], np.float32)),
        ([4], np.array([7], np.int64)),
        ([3, 2], np.array([-2], np.int32)),
        ([2, 2], np.array([True])),
        ([0, 3], None),
        ([], np.array([5.0], np.float32)),
    ],
    ids=str,
)
@pytest.mark.parametrize("opset", [9, 20, 21])
def test_constant_of_shape(shape, value, opset):
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    model = one_node_model(
        "ConstantOfShape",
        {},
        initializers={"shape": np.array(shape, np.int64)},
        opset=opset,
        **attrs,
    )
    got = compare_with_ort(model, {})["y"]
    assert got.shape == tuple(shape)
    assert got.dtype == (np.float32 if value is None else value.dtype)


def test_constant_of_shape_from_shape_of_static_input():
    shape = helper.make_node("Shape", ["x"], ["s"])
    fill = helper.make_node(
        "ConstantOfShape", ["s"], ["y"], value=numpy_helper.from_array(np.array([3], np.int64))
    )
    graph = helper.make_graph(
        [shape, fill],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    module = import_onnx(model)
    assert "nn.constant" in _ops_in(module)
    compare_with_ort(model, {"x": _normal((2, 5))})


def test_constant_of_shape_runtime_shape_is_rejected():
    model = one_node_model("ConstantOfShape", {"shape": np.array([2, 3], np.int64)}, opset=13)
    with pytest.raises(FrontendError, match=r"ConstantOfShape.*shape.*compile time"):
        import_onnx(model)


# ----------------------------------------------------------------------------- opset coverage

FAMILY = {
    "Add": 7,
    "Sub": 7,
    "Mul": 7,
    "Div": 7,
    "Sum": 7,
    "Pow": 7,
    "Relu": 7,
    "LeakyRelu": 7,
    "PRelu": 7,
    "Sigmoid": 7,
    "Tanh": 7,
    "HardSigmoid": 7,
    "HardSwish": 14,
    "Clip": 7,
    "Erf": 9,
    "Gelu": 20,
    "Sqrt": 7,
    "Exp": 7,
    "Neg": 7,
    "Cast": 7,
    "Identity": 7,
    "Dropout": 7,
    "Constant": 7,
    "ConstantOfShape": 9,
}


@pytest.mark.parametrize("op_type", sorted(FAMILY))
def test_every_opset_from_7_to_21_has_a_converter(op_type):
    for opset in range(FAMILY[op_type], 22):
        assert conv_registry.find(op_type, opset) is not None, f"{op_type} at opset {opset}"


def test_legacy_and_modern_converters_are_distinct():
    assert conv_registry.find("Add", 6).since == 1
    assert conv_registry.find("Add", 7).since == 7
    assert conv_registry.find("Add", 14).since == 7
    assert conv_registry.find("Clip", 10).since == 1
    assert conv_registry.find("Clip", 13).since == 11
    assert conv_registry.find("Dropout", 11).since == 10
    assert conv_registry.find("Dropout", 22).since == 12


# ----------------------------------------------------------------------------- IR semantics


def _module(body: str, args: str) -> str:
    return (
        'module attributes {stage = "nn"} {\n'
        f"  func @main({args}) -> (tensor<2xf32>) attributes "
        '{input_names = ["a", "b"], output_names = ["y"]} {\n'
        f"    {body}\n    return(%2)\n  }}\n}}\n"
    )


@pytest.mark.parametrize(
    "body, args, match",
    [
        (
            "%2 = nn.add(%0, %1) : tensor<2xf32>",
            "%0: tensor<2xf32>, %1: tensor<2xi64>",
            "different dtypes",
        ),
        (
            "%2 = nn.prelu(%0, %1) : tensor<2xf32>",
            "%0: tensor<2xf32>, %1: tensor<3xf32>",
            "unidirectional",
        ),
        (
            "%2 = nn.sigmoid(%1) : tensor<2xf32>",
            "%0: tensor<2xf32>, %1: tensor<2xi32>",
            "float tensor",
        ),
        (
            '%2 = nn.gelu(%0) {approximate = "fast"} : tensor<2xf32>',
            "%0: tensor<2xf32>, %1: tensor<2xf32>",
            "approximate",
        ),
        (
            '%2 = nn.cast(%0) {to = "f128"} : tensor<2xf32>',
            "%0: tensor<2xf32>, %1: tensor<2xf32>",
            "f128",
        ),
    ],
    ids=["add-dtypes", "prelu-slope", "sigmoid-int", "gelu-mode", "cast-dtype"],
)
def test_ir_verify_errors(body, args, match):
    with pytest.raises(VerifyError, match=match):
        verify(parse_module(_module(body, args)))


def test_every_elementwise_op_is_registered():
    names = [
        "nn.add",
        "nn.sub",
        "nn.mul",
        "nn.div",
        "nn.pow",
        "nn.relu",
        "nn.leaky_relu",
        "nn.prelu",
        "nn.sigmoid",
        "nn.tanh",
        "nn.hard_sigmoid",
        "nn.hard_swish",
        "nn.clip",
        "nn.erf",
        "nn.gelu",
        "nn.sqrt",
        "nn.exp",
        "nn.neg",
        "nn.cast",
        "nn.identity",
    ]
    for name in names:
        assert op_registry.get(name) is not None, name


def test_erf_matches_math_erf():
    xs = np.concatenate([np.linspace(-7, 7, 2001), [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0]])
    want = np.array([math.erf(v) for v in xs])
    np.testing.assert_allclose(ew.erf(xs), want, rtol=1e-12, atol=1e-15)
    assert np.isnan(ew.erf(np.array([np.nan])))[0]
    np.testing.assert_array_equal(ew.erf(np.array([-np.inf, np.inf])), [-1.0, 1.0])


def test_float_to_int_truncates_and_wraps():
    got = ew.float_to_int(np.array([-1.7, 2.9, 300.0, -1.0, np.nan, np.inf]), np.dtype(np.int8))
    np.testing.assert_array_equal(got, [-1, 2, 44, -1, 0, 0])
    got = ew.float_to_int(np.array([-1.0, 256.5]), np.dtype(np.uint8))
    np.testing.assert_array_equal(got, [255, 0])


def test_clip_on_integers_saturates_float_bounds():
    opdef = op_registry.lookup("nn.clip")
    x = np.array([-128, -3, 0, 3, 127], np.int8)
    got = opdef.evaluate(opdef.with_defaults({"min": -2.5, "max": 1e9}), x)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, [-2, -2, 0, 3, 127])
    got = opdef.evaluate(opdef.with_defaults({}), x)
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize(
    "name, attrs",
    [
        ("nn.sigmoid", {}),
        ("nn.tanh", {}),
        ("nn.gelu", {"approximate": "none"}),
        ("nn.gelu", {"approximate": "tanh"}),
        ("nn.erf", {}),
        ("nn.exp", {}),
        ("nn.hard_swish", {}),
        ("nn.hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
        ("nn.leaky_relu", {"alpha": 0.1}),
        ("nn.clip", {"min": -1.0, "max": 1.0}),
    ],
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_results_keep_the_input_dtype(name, attrs, dtype):
    opdef = op_registry.lookup(name)
    x = X.astype(dtype)
    assert opdef.evaluate(opdef.with_defaults(attrs), x).dtype == np.dtype(dtype)


def test_frontend_errors_are_cimc_errors():
    assert issubclass(FrontendError, CimcError)
