"""One-node tests against onnxruntime: Conv, ConvTranspose, Gemm, MatMul."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import FrontendError, VerifyError
from cimc.frontend.onnx import import_onnx
from cimc.ir import parse_module, to_text
from cimc.ops.registry import infer_types
from cimc.ir.types import TensorType
from cimc.testing import compare_with_ort, one_node_model


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _check(op_type: str, inputs: dict, initializers: dict, opset: int = 17, **attrs) -> None:
    model = one_node_model(op_type, inputs, initializers=initializers, opset=opset, **attrs)
    compare_with_ort(model, inputs)
    # the imported IR prints and parses back to the same text (attribute types are canonical)
    text = to_text(
        import_onnx(model, {k: v.shape for k, v in inputs.items()}), inline_limit=1 << 30
    )
    assert to_text(parse_module(text), inline_limit=1 << 30) == text


# ----------------------------------------------------------------------------- Conv

CONV_CASES = {
    "basic": ((1, 3, 8, 8), (4, 3, 3, 3), True, {}),
    "no_bias": ((2, 3, 7, 6), (5, 3, 3, 2), False, {}),
    "strided_padded": (
        (1, 3, 9, 10),
        (4, 3, 3, 3),
        True,
        {"strides": [2, 3], "pads": [1, 0, 2, 1]},
    ),
    "dilated": ((1, 2, 11, 9), (3, 2, 3, 2), True, {"dilations": [2, 3], "pads": [2, 2, 2, 2]}),
    "grouped": ((2, 4, 8, 8), (6, 2, 3, 3), True, {"group": 2, "pads": [1, 1, 1, 1]}),
    "depthwise": (
        (1, 6, 7, 7),
        (6, 1, 3, 3),
        True,
        {"group": 6, "strides": [2, 2], "pads": [1, 1, 1, 1]},
    ),
    "kernel_shape_given": ((1, 3, 6, 6), (2, 3, 2, 2), True, {"kernel_shape": [2, 2]}),
    "pointwise": ((1, 8, 5, 5), (4, 8, 1, 1), True, {}),
    "valid": ((1, 2, 7, 8), (3, 2, 3, 3), True, {"auto_pad": "VALID", "strides": [2, 2]}),
    "same_upper": ((1, 2, 7, 8), (3, 2, 2, 3), True, {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    "same_lower": ((1, 2, 7, 8), (3, 2, 2, 3), True, {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    "same_upper_stride1": ((1, 2, 6, 6), (2, 2, 4, 4), False, {"auto_pad": "SAME_UPPER"}),
    "conv1d": ((2, 3, 15), (4, 3, 5), True, {"strides": [2], "pads": [2, 1], "dilations": [2]}),
    "conv3d": (
        (1, 2, 5, 6, 7),
        (4, 2, 2, 3, 2),
        True,
        {"strides": [1, 2, 1], "pads": [1, 0, 1, 0, 1, 1]},
    ),
    "conv3d_grouped": (
        (1, 4, 4, 5, 6),
        (4, 1, 3, 3, 3),
        False,
        {"group": 4, "dilations": [1, 2, 1]},
    ),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv(case: str) -> None:
    xs, ws, bias, attrs = CONV_CASES[case]
    rng = np.random.default_rng(0)
    inits = {"w": _rand(rng, *ws)}
    if bias:
        inits["b"] = _rand(rng, ws[0])
    _check("Conv", {"x": _rand(rng, *xs)}, inits, **attrs)


def test_conv_runtime_weight_and_old_opset() -> None:
    rng = np.random.default_rng(1)
    inputs = {"x": _rand(rng, 1, 3, 6, 6), "w": _rand(rng, 2, 3, 3, 3)}
    _check("Conv", inputs, {}, opset=9, pads=[1, 1, 1, 1])


def test_conv_ir_attributes_are_canonical() -> None:
    rng = np.random.default_rng(0)
    model = one_node_model(
        "Conv",
        {"x": _rand(rng, 1, 2, 7, 8)},
        initializers={"w": _rand(rng, 3, 2, 2, 3)},
        auto_pad="SAME_LOWER",
        strides=[2, 3],
    )
    conv = next(op for op in import_onnx(model).main.body.ops if op.name == "nn.conv")
    assert conv.attrs == {"strides": [2, 3], "pads": [1, 1, 0, 0], "dilations": [1, 1], "group": 1}


def test_conv_vgg_sized_layer_matches_ort() -> None:
    """A full-size 224x224 layer (the im2col path at scale), checked against onnxruntime."""
    rng = np.random.default_rng(2)
    inits = {"w": _rand(rng, 16, 8, 3, 3) * 0.1, "b": _rand(rng, 16)}
    _check("Conv", {"x": _rand(rng, 1, 8, 224, 224)}, inits, pads=[1, 1, 1, 1])


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"auto_pad": "SAME_UPPER", "dilations": [2, 2]}, "auto_pad=SAME_UPPER with dilations"),
        ({"kernel_shape": [3, 3]}, "does not match the weight's spatial shape"),
        ({"auto_pad": "FOO"}, "auto_pad 'FOO' is not one of"),
    ],
)
def test_conv_unsupported_forms_raise_clear_errors(attrs: dict, message: str) -> None:
    rng = np.random.default_rng(0)
    model = one_node_model(
        "Conv", {"x": _rand(rng, 1, 2, 6, 6)}, initializers={"w": _rand(rng, 2, 2, 2, 2)}, **attrs
    )
    with pytest.raises(FrontendError, match=message) as info:
        import_onnx(model)
    assert "conv0" in str(info.value)  # names the node


def test_conv_infer_rejects_channel_mismatch() -> None:
    attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
    with pytest.raises(VerifyError, match="3 channels"):
        infer_types("nn.conv", [TensorType((1, 3, 5, 5)), TensorType((2, 4, 3, 3))], attrs)
    with pytest.raises(VerifyError, match="larger than the padded input"):
        infer_types("nn.conv", [TensorType((1, 3, 2, 2)), TensorType((2, 3, 3, 3))], attrs)


# ----------------------------------------------------------------------------- ConvTranspose

CONVT_CASES = {
    "basic": ((1, 3, 5, 5), (3, 2, 3, 3), True, {}),
    "strided": ((2, 2, 4, 5), (2, 3, 3, 2), True, {"strides": [2, 3]}),
    "padded_output_padding": (
        (1, 2, 4, 4),
        (2, 2, 3, 3),
        True,
        {"strides": [2, 2], "pads": [1, 0, 1, 1], "output_padding": [1, 0]},
    ),
    "dilated": ((1, 2, 4, 5), (2, 2, 2, 3), False, {"dilations": [2, 1], "strides": [1, 2]}),
    "grouped": (
        (1, 4, 4, 4),
        (4, 3, 3, 3),
        True,
        {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]},
    ),
    "output_shape": (
        (1, 2, 5, 6),
        (2, 2, 2, 2),
        True,
        {"strides": [3, 3], "output_shape": [13, 16]},
    ),
    "output_shape_odd_total": (
        (1, 2, 5, 6),
        (2, 2, 2, 2),
        True,
        {"strides": [3, 3], "output_shape": [11, 16]},
    ),
    "output_shape_past_natural": (
        (1, 2, 5, 5),
        (2, 1, 2, 2),
        True,
        {"strides": [2, 2], "output_shape": [11, 10]},
    ),
    "output_shape_same_upper": (
        (1, 2, 5, 5),
        (2, 2, 3, 3),
        True,
        {
            "strides": [3, 3],
            "dilations": [2, 2],
            "output_shape": [10, 11],
            "auto_pad": "SAME_UPPER",
        },
    ),
    "same_upper": ((1, 2, 5, 6), (2, 2, 3, 3), True, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same_lower": ((1, 2, 5, 6), (2, 2, 3, 3), True, {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "valid": ((1, 2, 3, 3), (2, 2, 3, 3), True, {"strides": [2, 2], "auto_pad": "VALID"}),
    "convt1d": ((2, 3, 7), (3, 2, 4), True, {"strides": [2], "pads": [1, 2]}),
    "convt3d": ((1, 2, 3, 4, 3), (2, 2, 2, 2, 3), True, {"strides": [2, 1, 2]}),
}


@pytest.mark.parametrize("case", CONVT_CASES)
def test_conv_transpose(case: str) -> None:
    xs, ws, bias, attrs = CONVT_CASES[case]
    rng = np.random.default_rng(0)
    inits = {"w": _rand(rng, *ws)}
    if bias:
        inits["b"] = _rand(rng, ws[1] * attrs.get("group", 1))
    _check("ConvTranspose", {"x": _rand(rng, *xs)}, inits, **attrs)


def test_conv_transpose_inconsistent_output_shape_is_an_error() -> None:
    rng = np.random.default_rng(0)
    model = one_node_model(
        "ConvTranspose",
        {"x": _rand(rng, 1, 2, 5, 5)},
        initializers={"w": _rand(rng, 2, 2, 2, 2)},
        output_shape=[12, 6],
    )
    with pytest.raises(FrontendError, match="output_shape .* is inconsistent with the input"):
        import_onnx(model)


# ----------------------------------------------------------------------------- Gemm

GEMM_C = {
    "none": None,
    "full": (4, 5),
    "row": (5,),
    "row2d": (1, 5),
    "col": (4, 1),
    "scalar": (),
    "one": (1,),
}


@pytest.mark.parametrize("c_shape", GEMM_C)
@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm(c_shape: str, trans_a: int, trans_b: int) -> None:
    rng = np.random.default_rng(0)
    a = _rand(rng, *((3, 4) if trans_a else (4, 3)))
    b = _rand(rng, *((5, 3) if trans_b else (3, 5)))
    inits = {"b": b}
    if GEMM_C[c_shape] is not None:
        inits["c"] = _rand(rng, *GEMM_C[c_shape])
    _check("Gemm", {"a": a}, inits, transA=trans_a, transB=trans_b, alpha=0.5, beta=1.5)


@pytest.mark.parametrize("opset", [7, 9, 11, 13])
def test_gemm_defaults_across_opsets(opset: int) -> None:
    rng = np.random.default_rng(3)
    _check(
        "Gemm",
        {"a": _rand(rng, 2, 8)},
        {"b": _rand(rng, 6, 8), "c": _rand(rng, 6)},
        opset=opset,
        transB=1,
    )


def test_gemm_runtime_operands() -> None:
    rng = np.random.default_rng(4)
    inputs = {"a": _rand(rng, 3, 4), "b": _rand(rng, 4, 2), "c": _rand(rng, 3, 2)}
    _check("Gemm", inputs, {}, beta=0.0)


# ----------------------------------------------------------------------------- MatMul

MATMUL_CASES = {
    "2d": ((3, 4), (4, 5)),
    "batched": ((2, 3, 4), (2, 4, 5)),
    "broadcast_batch": ((2, 1, 3, 4), (3, 4, 5)),
    "matrix_rhs": ((2, 3, 3, 4), (4, 2)),
    "vector_lhs": ((4,), (2, 4, 5)),
    "vector_rhs": ((2, 3, 4), (4,)),
    "vectors": ((4,), (4,)),
}


@pytest.mark.parametrize("case", MATMUL_CASES)
@pytest.mark.parametrize("opset", [9, 13])
def test_matmul(case: str, opset: int) -> None:
    a_shape, b_shape = MATMUL_CASES[case]
    rng = np.random.default_rng(0)
    _check("MatMul", {"a": _rand(rng, *a_shape)}, {"b": _rand(rng, *b_shape)}, opset=opset)


def test_matmul_infer_rejects_mismatch() -> None:
    with pytest.raises(VerifyError, match="inner dimensions differ"):
        infer_types("nn.matmul", [TensorType((3, 4)), TensorType((5, 2))], {})


# ----------------------------------------------------------------------------- other dtypes

DTYPE_CASES = [
    ("MatMul", np.float64, {}),
    ("MatMul", np.float16, {}),
    ("MatMul", np.int32, {}),
    ("MatMul", np.int64, {}),
    ("Gemm", np.float64, {"alpha": 0.5, "transB": 1}),
    ("Gemm", np.float16, {"alpha": 0.5, "transB": 1}),
    ("Conv", np.float16, {"pads": [1, 1, 1, 1]}),
    ("ConvTranspose", np.float16, {"strides": [2, 2]}),
]


@pytest.mark.parametrize(("op_type", "dtype", "attrs"), DTYPE_CASES)
def test_other_dtypes(op_type: str, dtype: type, attrs: dict) -> None:
    rng = np.random.default_rng(5)
    shapes = {
        "MatMul": ((3, 4), (4, 5)),
        "Gemm": ((3, 4), (5, 4)),
        "Conv": ((1, 2, 5, 5), (3, 2, 3, 3)),
        "ConvTranspose": ((1, 2, 4, 4), (2, 3, 3, 3)),
    }[op_type]
    scale = 4 if np.dtype(dtype).kind == "i" else 1
    x, w = ((rng.standard_normal(s) * scale).astype(dtype) for s in shapes)
    model = one_node_model(op_type, {"x": x}, initializers={"w": w}, **attrs)
    # float16 results round differently when the sum is formed in another order
    tol = {"rtol": 2e-3, "atol": 2e-3} if dtype == np.float16 else {}
    got = compare_with_ort(model, {"x": x}, **tol)
    assert got["y"].dtype == dtype
