"""One-node tests against onnxruntime: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool."""

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


def _check(op_type: str, x: np.ndarray, opset: int, **attrs) -> None:
    model = one_node_model(op_type, {"x": x}, opset=opset, **attrs)
    compare_with_ort(model, {"x": x})
    text = to_text(import_onnx(model))
    assert to_text(parse_module(text)) == text


# Forms used by the onnx package's light models (opset 9), then the attribute forms of later opsets.
WINDOW_CASES = {
    "alexnet_asym_pads": (
        (1, 3, 13, 13),
        9,
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]},
    ),
    "resnet_stem": (
        (1, 2, 16, 16),
        9,
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    ),
    "vgg": ((1, 2, 14, 14), 9, {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}),
    "stride1_same_size": (
        (2, 3, 7, 7),
        9,
        {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]},
    ),
    "inception_7x7_asym": (
        (1, 4, 7, 7),
        9,
        {"kernel_shape": [7, 7], "strides": [1, 1], "pads": [0, 0, 1, 1]},
    ),
    "no_strides_attr": ((1, 2, 7, 7), 9, {"kernel_shape": [7, 7]}),
    "rect": ((1, 2, 9, 11), 11, {"kernel_shape": [2, 3], "strides": [3, 2], "pads": [1, 0, 0, 2]}),
    "ceil": ((1, 2, 10, 9), 11, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_padded": (
        (1, 2, 8, 7),
        11,
        {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 1, 1], "ceil_mode": 1},
    ),
    "ceil_last_window_in_pad": (
        (1, 1, 6, 6),
        11,
        {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    ),
    "same_upper": (
        (1, 2, 7, 8),
        11,
        {"kernel_shape": [3, 2], "strides": [2, 3], "auto_pad": "SAME_UPPER"},
    ),
    "same_lower": (
        (1, 2, 7, 8),
        11,
        {"kernel_shape": [3, 2], "strides": [2, 3], "auto_pad": "SAME_LOWER"},
    ),
    "valid": ((1, 2, 7, 8), 11, {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "VALID"}),
    "pool1d": ((2, 3, 13), 11, {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}),
    "pool3d": (
        (1, 2, 5, 6, 7),
        11,
        {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "pads": [0, 1, 1, 1, 1, 0]},
    ),
}


@pytest.mark.parametrize("case", WINDOW_CASES)
def test_max_pool(case: str) -> None:
    shape, opset, attrs = WINDOW_CASES[case]
    _check("MaxPool", _rand(np.random.default_rng(0), *shape), opset, **attrs)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", WINDOW_CASES)
def test_avg_pool(case: str, count_include_pad: int) -> None:
    shape, opset, attrs = WINDOW_CASES[case]
    _check(
        "AveragePool",
        _rand(np.random.default_rng(0), *shape),
        opset,
        count_include_pad=count_include_pad,
        **attrs,
    )


DILATED = {
    "2d": (
        (1, 2, 11, 10),
        {"kernel_shape": [3, 2], "strides": [2, 1], "dilations": [2, 3], "pads": [1, 1, 2, 1]},
    ),
    "2d_ceil": (
        (1, 2, 10, 9),
        {
            "kernel_shape": [2, 2],
            "strides": [3, 2],
            "dilations": [2, 2],
            "pads": [1, 0, 1, 1],
            "ceil_mode": 1,
        },
    ),
    "1d": ((1, 3, 12), {"kernel_shape": [3], "strides": [2], "dilations": [3], "pads": [2, 2]}),
}


@pytest.mark.parametrize("case", DILATED)
def test_max_pool_dilations(case: str) -> None:
    shape, attrs = DILATED[case]
    _check("MaxPool", _rand(np.random.default_rng(1), *shape), 12, **attrs)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", DILATED)
def test_avg_pool_dilations(case: str, count_include_pad: int) -> None:
    shape, attrs = DILATED[case]
    x = _rand(np.random.default_rng(1), *shape)
    _check("AveragePool", x, 19, count_include_pad=count_include_pad, **attrs)


@pytest.mark.parametrize("opset", [7, 8])
def test_pools_at_old_opsets(opset: int) -> None:
    x = _rand(np.random.default_rng(2), 1, 3, 9, 9)
    _check("MaxPool", x, opset, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0])
    _check("AveragePool", x, opset, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_max_pool_integer(dtype: type) -> None:
    x = (
        np.random.default_rng(3)
        .integers(-100 if dtype == np.int8 else 0, 100, (1, 2, 7, 7))
        .astype(dtype)
    )
    _check("MaxPool", x, 12, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 4, 6, 7), (1, 2, 3, 4, 5)])
def test_global_pools(op_type: str, shape: tuple[int, ...]) -> None:
    _check(op_type, _rand(np.random.default_rng(4), *shape), 17)


def test_max_pool_indices_output_is_an_error() -> None:
    x = _rand(np.random.default_rng(0), 1, 2, 6, 6)
    model = one_node_model("MaxPool", {"x": x}, outputs=("y", "idx"), kernel_shape=[2, 2])
    with pytest.raises(FrontendError, match="the Indices output .*'idx'.* is not supported"):
        import_onnx(model)


def test_pool_same_with_dilations_is_an_error() -> None:
    x = _rand(np.random.default_rng(0), 1, 2, 7, 7)
    model = one_node_model(
        "MaxPool", {"x": x}, opset=12, kernel_shape=[2, 2], dilations=[2, 2], auto_pad="SAME_UPPER"
    )
    with pytest.raises(FrontendError, match="maxpool0.*give explicit pads instead"):
        import_onnx(model)


def test_pool_infer_errors() -> None:
    attrs = {
        "kernel_shape": [3, 3],
        "strides": [1, 1],
        "pads": [3, 0, 0, 0],
        "dilations": [1, 1],
        "ceil_mode": False,
    }
    with pytest.raises(VerifyError, match="must be smaller than the window"):
        infer_types("nn.max_pool", [TensorType((1, 1, 5, 5))], attrs)
    attrs = dict(attrs, pads=[0, 0, 0, 0], kernel_shape=[3])
    with pytest.raises(VerifyError, match="'kernel_shape' must be a list of 2 ints"):
        infer_types("nn.max_pool", [TensorType((1, 1, 5, 5))], attrs)


def test_avg_pool_ir_defaults_dilations() -> None:
    """nn.avg_pool written without dilations (hand-written IR) means dilations of 1."""
    attrs = (
        "ceil_mode = false, count_include_pad = false, kernel_shape = [2, 2], "
        "pads = [0, 0, 0, 0], strides = [2, 2]"
    )
    text = (
        "module {\n"
        "  func @main(%0: tensor<1x1x4x4xf32>) -> (tensor<1x1x2x2xf32>) "
        'attributes {input_names = ["x"], output_names = ["y"]} {\n'
        f"    %1 = nn.avg_pool(%0) {{{attrs}}} : tensor<1x1x2x2xf32>\n"
        "    return(%1)\n"
        "  }\n"
        "}\n"
    )
    from cimc.ir.interpreter import run

    module = parse_module(text)
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y = run(module, {"x": x})["y"]
    np.testing.assert_allclose(
        y, x.reshape(1, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).mean(axis=(4, 5))
    )


@pytest.mark.parametrize(
    "op_type", ["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]
)
def test_pools_float16(op_type: str) -> None:
    x = np.random.default_rng(6).standard_normal((1, 3, 6, 7)).astype(np.float16)
    attrs = {} if op_type.startswith("Global") else {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1]}
    model = one_node_model(op_type, {"x": x}, **attrs)
    got = compare_with_ort(model, {"x": x}, rtol=1e-3, atol=1e-3)
    assert got["y"].dtype == np.float16
