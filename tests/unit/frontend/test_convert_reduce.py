"""One-node tests against onnxruntime for ReduceMean / ReduceSum / ReduceMax / ReduceMin (and
their errors)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from cimc.errors import CimcError, FrontendError
from cimc.frontend.onnx import import_onnx
from cimc.testing import compare_with_ort, one_node_model

RNG = np.random.default_rng(1)
OPS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"]
# the first opset at which each op takes its axes as an input
AXES_INPUT_OPSET = {"ReduceMean": 18, "ReduceSum": 13, "ReduceMax": 18, "ReduceMin": 18}


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def reduce_op(model):
    ops = [op for op in import_onnx(model).main.body.ops if op.name.startswith("nn.reduce")]
    assert len(ops) == 1
    return ops[0]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axes", [[1], [0, 2], [-1], [2, -3], None])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_axes_attribute(op, axes, keepdims):
    x = rand(2, 3, 4)
    kw = {} if axes is None else {"axes": axes}
    m = one_node_model(op, {"x": x}, opset=11, keepdims=keepdims, **kw)
    compare_with_ort(m, {"x": x})
    r = reduce_op(m)
    want = sorted(a % 3 for a in axes) if axes is not None else [0, 1, 2]
    assert r.attrs == {"axes": want, "keepdims": bool(keepdims)}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axes", [[1], [0, -1], None])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_axes_input(op, axes, keepdims):
    x = rand(2, 3, 4)
    inits = {} if axes is None else {"axes": np.array(axes, np.int64)}
    m = one_node_model(
        op, {"x": x}, initializers=inits, opset=AXES_INPUT_OPSET[op], keepdims=keepdims
    )
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("op", OPS)
def test_reduce_default_keepdims(op):
    x = rand(3, 5)
    m = one_node_model(op, {"x": x}, opset=13 if op == "ReduceMean" else 11, axes=[1])
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("op", OPS)
def test_reduce_noop_with_empty_axes(op):
    x = rand(2, 3)
    m = one_node_model(op, {"x": x}, opset=AXES_INPUT_OPSET[op], noop_with_empty_axes=1)
    compare_with_ort(m, {"x": x})
    assert reduce_op(m).attrs["axes"] == []


@pytest.mark.parametrize("op", OPS)
def test_reduce_empty_axes_input_means_all(op):
    x = rand(2, 3)
    m = one_node_model(
        op,
        {"x": x},
        initializers={"axes": np.array([], np.int64)},
        opset=AXES_INPUT_OPSET[op],
        keepdims=0,
    )
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("op", OPS)
def test_reduce_large_axis_accuracy(op):
    x = (rand(1, 4096) + 3.0).astype(np.float32)
    m = one_node_model(op, {"x": x}, opset=11, axes=[1])
    compare_with_ort(m, {"x": x})


def test_reduce_sum_int64():
    x = RNG.integers(-50, 50, (3, 4)).astype(np.int64)
    m = one_node_model(
        "ReduceSum", {"x": x}, initializers={"axes": np.array([0], np.int64)}, opset=13
    )
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("op", OPS)
def test_reduce_runtime_axes_is_a_clear_error(op):
    x = rand(2, 3)
    m = one_node_model(op, {"x": x, "axes": np.array([1], np.int64)}, opset=AXES_INPUT_OPSET[op])
    out = m.graph.output[0]
    out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [2, 1]))
    with pytest.raises(FrontendError, match=r"input #1 \(axes\) is computed at run time"):
        import_onnx(m)


def test_reduce_axis_out_of_range_is_an_error():
    x = rand(2, 3)
    m = one_node_model("ReduceSum", {"x": x}, opset=11, axes=[2])
    out = m.graph.output[0]
    out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [2, 3]))
    with pytest.raises(FrontendError, match="axis 2 is out of range for an input of rank 2"):
        import_onnx(m)


def test_reduce_mean_int32_truncates_like_onnxruntime():
    x = np.array([[-7, 2, 1], [5, 5, 5], [3, -1, -1]], np.int32)
    m = one_node_model("ReduceMean", {"x": x}, opset=13, axes=[1])
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float64])
def test_reduce_extremum_dtypes(op, dtype):
    x = RNG.integers(-50, 50, (3, 4, 2)).astype(dtype)
    compare_with_ort(one_node_model(op, {"x": x}, opset=13, axes=[0, 2], keepdims=0), {"x": x})


def test_reduce_max_of_an_empty_axis_is_refused():
    from cimc.ops.reduce import reduce_max

    with pytest.raises(CimcError, match="no maximum"):
        reduce_max({"axes": [1], "keepdims": True}, np.zeros((2, 0)))
