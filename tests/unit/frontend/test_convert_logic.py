"""One-node tests against onnxruntime of the comparison, logical, selection and min/max
converters (Equal, Less, Greater, LessOrEqual, GreaterOrEqual, Not, And, Or, Xor, Where, Max,
Min, Reciprocal), and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import FrontendError, VerifyError
from cimc.frontend.onnx import import_onnx
from cimc.ir.parser import parse_module
from cimc.ir.verify import verify
from cimc.testing import compare_with_ort, one_node_model

RNG = np.random.default_rng(3)

SHAPES = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (1, 3, 1)), ((2, 3), ())]


def ints(shape, dtype=np.int64) -> np.ndarray:
    return RNG.integers(-3, 4, shape).astype(dtype)


def floats(shape, dtype=np.float32) -> np.ndarray:
    return np.asarray(np.round(RNG.standard_normal(shape), 1), dtype)  # with ties, for ==


def bools(shape) -> np.ndarray:
    return RNG.integers(0, 2, shape).astype(bool)


def check(op_type: str, inputs: dict, opset: int = 17, **attrs) -> dict:
    return compare_with_ort(one_node_model(op_type, inputs, opset=opset, **attrs), inputs)


@pytest.mark.parametrize("op_type", ["Equal", "Less", "Greater", "LessOrEqual",
                                     "GreaterOrEqual"])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("make", [floats, ints], ids=["f32", "i64"])
def test_comparisons(op_type, shapes, make):
    got = check(op_type, {"a": make(shapes[0]), "b": make(shapes[1])})
    assert got["y"].dtype == np.bool_


@pytest.mark.parametrize("op_type,opset,make", [
    ("Equal", 7, ints), ("Equal", 11, floats), ("Less", 9, ints), ("Greater", 7, floats),
    ("LessOrEqual", 12, floats)])
def test_comparison_opsets(op_type, opset, make):
    dtype = np.int32 if make is ints else np.float32
    check(op_type, {"a": make((3, 4), dtype), "b": make((4,), dtype)}, opset=opset)


@pytest.mark.parametrize("op_type", ["And", "Or", "Xor"])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_logical(op_type, shapes):
    check(op_type, {"a": bools(shapes[0]), "b": bools(shapes[1])})


def test_not():
    check("Not", {"x": bools((3, 5))})


def test_logical_ops_take_booleans():
    m = one_node_model("And", {"a": bools((2,)), "b": bools((2,))})
    m.graph.input[0].type.tensor_type.elem_type = 1  # float
    with pytest.raises(FrontendError):
        import_onnx(m)
    text = """module {
  func @main(%0: tensor<2xf32>) -> (tensor<2xi1>) {
    %1 = nn.not(%0) : tensor<2xi1>
    return(%1)
  }
}"""
    with pytest.raises(VerifyError, match="boolean"):
        verify(parse_module(text))


@pytest.mark.parametrize("shapes", [((2, 3), (2, 3), (2, 3)), ((1, 3), (2, 1), ()),
                                    ((2, 1, 4), (4,), (3, 1))], ids=str)
@pytest.mark.parametrize("make", [floats, ints], ids=["f32", "i64"])
def test_where(shapes, make):
    cond, x, y = shapes
    check("Where", {"c": bools(cond), "a": make(x), "b": make(y)})


@pytest.mark.parametrize("opset", [9, 16])
def test_where_opsets(opset):
    check("Where", {"c": bools((4,)), "a": floats((4,)), "b": floats((1,))}, opset=opset)


def test_where_branches_must_share_a_dtype():
    text = """module {
  func @main(%0: tensor<2xi1>, %1: tensor<2xf32>, %2: tensor<2xi64>) -> (tensor<2xf32>) {
    %3 = nn.where(%0, %1, %2) : tensor<2xf32>
    return(%3)
  }
}"""
    with pytest.raises(VerifyError, match="different dtypes"):
        verify(parse_module(text))


@pytest.mark.parametrize("op_type", ["Max", "Min"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("make", [floats, ints], ids=["f32", "i64"])
def test_max_min_variadic(op_type, n, make):
    shapes = [(2, 3, 4), (3, 1), (4,)][:n]
    check(op_type, {f"x{i}": make(s) for i, s in enumerate(shapes)})


@pytest.mark.parametrize("op_type", ["Max", "Min"])
@pytest.mark.parametrize("opset", [6, 8, 12])
def test_max_min_opsets(op_type, opset):
    check(op_type, {"a": floats((2, 3)), "b": floats((2, 3))}, opset=opset)


def test_max_before_opset_8_needs_equal_shapes():
    a, b = floats((2, 3)), floats((3,))
    m = one_node_model("Max", {"a": a, "b": b}, opset=6)
    with pytest.raises(FrontendError, match="opset 8"):
        import_onnx(m)


@pytest.mark.parametrize("opset", [6, 13])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reciprocal(opset, dtype):
    x = floats((3, 4), dtype)
    x[x == 0] = 0.5
    check("Reciprocal", {"x": x}, opset=opset)
