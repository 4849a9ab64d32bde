"""One-node tests against onnxruntime: BatchNormalization, LayerNormalization, LRN, Softmax,
LogSoftmax."""

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


def _check(
    op_type: str,
    inputs: dict,
    initializers: dict | None = None,
    opset: int = 17,
    outputs: tuple[str, ...] = ("y",),
    **attrs,
) -> None:
    model = one_node_model(
        op_type, inputs, outputs, initializers=initializers or {}, opset=opset, **attrs
    )
    compare_with_ort(model, inputs)
    text = to_text(import_onnx(model), inline_limit=1 << 30)
    assert to_text(parse_module(text), inline_limit=1 << 30) == text


# ----------------------------------------------------------------------------- BatchNormalization


def _bn_params(rng: np.random.Generator, c: int) -> dict[str, np.ndarray]:
    return {
        "scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "bias": _rand(rng, c),
        "mean": _rand(rng, c),
        "var": rng.uniform(0.1, 2.0, c).astype(np.float32),
    }


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (1, 4, 5, 6), (1, 2, 3, 4, 5)])
def test_batch_norm(opset: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    _check(
        "BatchNormalization",
        {"x": _rand(rng, *shape)},
        _bn_params(rng, shape[1]),
        opset=opset,
        epsilon=1e-3,
    )


def test_batch_norm_opset6_inference() -> None:
    # onnxruntime has no opset-6 kernels; the reference is the formula itself. The
    # pytorch-converted backend cases (test_BatchNorm*_eval) are opset-6 models like this one.
    from cimc.ir.interpreter import run

    rng = np.random.default_rng(2)
    p = _bn_params(rng, 3)
    x = _rand(rng, 2, 3, 4, 5)
    model = one_node_model("BatchNormalization", {"x": x}, initializers=p, opset=6,
                           is_test=1, epsilon=1e-3)
    (y,) = run(import_onnx(model), {"x": x}).values()
    m, v, s, b = (p[k].reshape(1, 3, 1, 1) for k in ("mean", "var", "scale", "bias"))
    want = (x - m) / np.sqrt(v + 1e-3) * s + b
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_batch_norm_opset6_training_is_an_error() -> None:
    rng = np.random.default_rng(0)
    model = one_node_model("BatchNormalization", {"x": _rand(rng, 1, 2, 3, 3)},
                           initializers=_bn_params(rng, 2), opset=6)  # is_test defaults to 0
    with pytest.raises(FrontendError, match="is_test=0 .*training mode.*eval mode"):
        import_onnx(model)


def test_batch_norm_default_epsilon_and_runtime_stats() -> None:
    rng = np.random.default_rng(1)
    params = _bn_params(rng, 3)
    inputs = {"x": _rand(rng, 1, 3, 4, 4), **params}
    _check("BatchNormalization", inputs, opset=15)


def test_batch_norm_training_mode_is_an_error() -> None:
    rng = np.random.default_rng(0)
    model = one_node_model(
        "BatchNormalization",
        {"x": _rand(rng, 1, 2, 3, 3)},
        ("y", "running_mean", "running_var"),
        initializers=_bn_params(rng, 2),
        opset=15,
        training_mode=1,
    )
    with pytest.raises(FrontendError, match="training_mode=1 is not supported.*eval mode"):
        import_onnx(model)


def test_batch_norm_spatial_0_is_an_error() -> None:
    rng = np.random.default_rng(0)
    model = one_node_model(
        "BatchNormalization",
        {"x": _rand(rng, 1, 2, 3, 3)},
        initializers=_bn_params(rng, 2),
        opset=7,
        spatial=0,
    )
    with pytest.raises(FrontendError, match="spatial=0"):
        import_onnx(model)


def test_batch_norm_infer_checks_parameter_shapes() -> None:
    t = TensorType((3,))
    with pytest.raises(VerifyError, match=r"mean must have shape \(4,\)"):
        infer_types(
            "nn.batch_norm",
            [TensorType((1, 4, 2, 2)), TensorType((4,)), TensorType((4,)), t, t],
            {"epsilon": 1e-5},
        )


# ----------------------------------------------------------------------------- LayerNormalization

LN_CASES = {
    "last_axis": ((2, 3, 8), -1, True),
    "two_axes": ((2, 3, 4, 5), 2, True),
    "axis_1": ((2, 3, 4), 1, False),
    "axis_0": ((3, 4), 0, True),
}


@pytest.mark.parametrize("case", LN_CASES)
def test_layer_norm(case: str) -> None:
    shape, axis, bias = LN_CASES[case]
    rng = np.random.default_rng(0)
    norm_shape = shape[axis:]
    inits = {"scale": _rand(rng, *norm_shape)}
    if bias:
        inits["bias"] = _rand(rng, *norm_shape)
    _check("LayerNormalization", {"x": _rand(rng, *shape) * 3 + 1}, inits, axis=axis, epsilon=1e-4)


def test_layer_norm_broadcast_scale_default_attrs() -> None:
    rng = np.random.default_rng(1)
    _check("LayerNormalization", {"x": _rand(rng, 2, 4, 6)}, {"scale": _rand(rng, 1, 6)})


def test_layer_norm_mean_and_inv_std_outputs() -> None:
    rng = np.random.default_rng(2)
    _check(
        "LayerNormalization",
        {"x": _rand(rng, 2, 3, 5) * 2 - 1},
        {"scale": _rand(rng, 3, 5)},
        outputs=("y", "mean", "inv_std"),
        axis=1,
    )


# ----------------------------------------------------------------------------- LRN


@pytest.mark.parametrize(
    "attrs",
    [
        {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0},  # AlexNet, Inception v1
        {"size": 5, "alpha": 5e-4, "beta": 0.75, "bias": 2.0},  # ZFNet-512
        {"size": 1, "alpha": 0.5, "beta": 1.0, "bias": 1.0},
        {"size": 3},  # defaults
    ],
)
@pytest.mark.parametrize("opset", [9, 13])
def test_lrn(attrs: dict, opset: int) -> None:
    rng = np.random.default_rng(0)
    _check("LRN", {"x": _rand(rng, 2, 7, 4, 5) * 3}, opset=opset, **attrs)


def _lrn_spec(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX spec's formula, channel by channel (float64)."""
    x = x.astype(np.float64)
    out = np.empty_like(x)
    c = x.shape[1]
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c - 1, i + size // 2)
        square_sum = (x[:, lo : hi + 1] ** 2).sum(axis=1)
        out[:, i] = x[:, i] / (bias + alpha / size * square_sum) ** beta
    return out


@pytest.mark.parametrize(
    ("shape", "size"), [((1, 6, 9), 3), ((2, 7, 3, 4), 4), ((1, 5, 2, 2, 3), 2)]
)
def test_lrn_forms_onnxruntime_lacks(shape: tuple[int, ...], size: int) -> None:
    """onnxruntime runs LRN on 4-D inputs with an odd size only; the spec allows any rank and
    size (an even size has a window reaching one channel further after than before)."""
    from cimc.ir.interpreter import run

    x = _rand(np.random.default_rng(1), *shape) * 3
    model = one_node_model("LRN", {"x": x}, size=size, alpha=0.1, beta=0.5, bias=1.5)
    got = run(import_onnx(model), {"x": x})["y"]
    np.testing.assert_allclose(got, _lrn_spec(x, size, 0.1, 0.5, 1.5), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Softmax, LogSoftmax

SOFTMAX_CASES = [
    # (shape, opset, axis or None for the default)
    ((2, 10), 9, None),  # the light models' classifier head
    ((2, 3, 4), 9, None),  # opset < 13 default axis 1: coerced over axes 1 and 2
    ((2, 3, 4, 5), 11, 2),  # coerced over axes 2 and 3
    ((2, 3, 4), 11, 0),  # coerced over everything
    ((2, 3, 4), 11, -2),
    ((2, 3, 4), 11, -1),
    ((2, 3, 4), 13, None),  # opset >= 13 default axis -1
    ((2, 3, 4), 13, 1),  # single axis, not coerced
    ((2, 3, 4), 13, 0),
    ((7,), 13, None),
]


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(("shape", "opset", "axis"), SOFTMAX_CASES)
def test_softmax(op_type: str, shape: tuple[int, ...], opset: int, axis: int | None) -> None:
    attrs = {} if axis is None else {"axis": axis}
    x = _rand(np.random.default_rng(0), *shape) * 4
    _check(op_type, {"x": x}, opset=opset, **attrs)


def test_softmax_opset11_emits_reshapes_only_when_needed() -> None:
    x = _rand(np.random.default_rng(0), 2, 3, 4)

    def names(model) -> list[str]:
        return [op.name for op in import_onnx(model).main.body.ops]

    assert names(one_node_model("Softmax", {"x": x}, opset=11, axis=2)) == ["nn.softmax", "return"]
    assert names(one_node_model("Softmax", {"x": x}, opset=11, axis=1)) == [
        "nn.reshape",
        "nn.softmax",
        "nn.reshape",
        "return",
    ]
    assert names(one_node_model("Softmax", {"x": x}, opset=13, axis=1)) == ["nn.softmax", "return"]


def test_softmax_is_stable_for_large_inputs() -> None:
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1001.0]], np.float32)
    got = compare_with_ort(one_node_model("LogSoftmax", {"x": x}), {"x": x})
    assert np.isfinite(got["y"]).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize(
    "op_type", ["BatchNormalization", "LayerNormalization", "Softmax", "LogSoftmax"]
)
def test_norm_other_float_types(op_type: str, dtype: type) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    inits = {}
    if op_type == "BatchNormalization":
        inits = {k: v.astype(dtype) for k, v in _bn_params(rng, 3).items()}
    elif op_type == "LayerNormalization":
        inits = {"scale": rng.standard_normal(4).astype(dtype)}
    model = one_node_model(op_type, {"x": x}, initializers=inits)
    tol = {"rtol": 2e-3, "atol": 2e-3} if dtype == np.float16 else {}
    got = compare_with_ort(model, {"x": x}, **tol)
    assert got["y"].dtype == dtype
