"""cim.im2col and cim.mvm: types, errors, and numerics (im2col + mvm equals nn.conv)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cimc.errors import VerifyError
from cimc.ir import parse_module
from cimc.ops.registry import infer_types, lookup
from cimc.ir.types import TensorType
from cimc.ir.verify import verify


def evaluate(name: str, attrs: dict, *xs: np.ndarray) -> np.ndarray:
    opdef = lookup(name)
    return opdef.evaluate(opdef.with_defaults(attrs), *xs)


def conv_weight_matrix(w: np.ndarray, group: int) -> np.ndarray:
    """The conv weight [M, C/G, *k] as cim.mvm's [K, M] or grouped [G, Kg, Mg] matrix, rows in
    the patch order (kernel position, then channel within the group), by direct loops."""
    m, cg = w.shape[:2]
    mg = m // group
    kernel = w.shape[2:]
    out = np.zeros((group, int(np.prod(kernel)) * cg, mg), w.dtype)
    for g in range(group):
        for j in range(mg):
            for k, kp in enumerate(itertools.product(*(range(v) for v in kernel))):
                for c in range(cg):
                    out[g, k * cg + c, j] = w[(g * mg + j, c, *kp)]
    return out[0] if group == 1 else out


def naive_im2col(x, kernel, strides, pads, dil, group=1):
    """Direct loops: patch vector at each output position, group-major, then kernel position
    (row-major), then channel within the group."""
    d = len(kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[d + i]) for i in range(d)])
    out = [
        (x.shape[2 + i] + pads[i] + pads[d + i] - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        for i in range(d)
    ]
    cols = np.zeros((x.shape[0], *out, x.shape[1] * int(np.prod(kernel))), x.dtype)
    for n in range(x.shape[0]):
        for o in itertools.product(*(range(v) for v in out)):
            vec = []
            cg = x.shape[1] // group
            for g in range(group):
                for kp in itertools.product(*(range(k) for k in kernel)):
                    idx = tuple(o[i] * strides[i] + kp[i] * dil[i] for i in range(d))
                    vec += [xp[(n, g * cg + c, *idx)] for c in range(cg)]
            cols[(n, *o)] = vec
    return cols


CASES = [
    # (input shape, weight shape, strides, pads, dilations, group)
    ((2, 3, 7, 6), (4, 3, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1),
    ((1, 4, 9, 8), (6, 2, 3, 2), [2, 1], [0, 1, 2, 0], [1, 2], 2),
    ((1, 6, 8, 8), (6, 1, 3, 3), [2, 2], [1, 1, 1, 1], [2, 2], 6),  # depthwise
    ((1, 4, 5, 5), (8, 1, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 4),  # depthwise, multiplier 2
    ((2, 3, 11), (5, 3, 4), [3], [2, 1], [2], 1),  # 1-D
    ((1, 4, 10), (4, 2, 3), [1], [0, 0], [1], 2),  # 1-D grouped
    ((1, 2, 4, 5, 3), (3, 2, 2, 3, 1), [1, 2, 1], [0, 1, 1, 1, 0, 0], [1, 1, 1], 1),  # 3-D
]


@pytest.mark.parametrize("xs, ws, strides, pads, dil, group", CASES)
def test_im2col_matches_naive_loops(xs, ws, strides, pads, dil, group):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    attrs = {"kernel_shape": list(ws[2:]), "strides": strides, "pads": pads, "dilations": dil,
             "groups": group}
    got = evaluate("cim.im2col", attrs, x)
    want = naive_im2col(x, ws[2:], strides, pads, dil, group)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    (t,) = infer_types("cim.im2col", [TensorType.of(x)], attrs)
    assert t == TensorType.of(got)


@pytest.mark.parametrize("xs, ws, strides, pads, dil, group", CASES)
def test_im2col_rows_are_a_slice_of_the_whole_patches(xs, ws, strides, pads, dil, group):
    x = np.random.default_rng(2).standard_normal(xs).astype(np.float32)
    attrs = {"kernel_shape": list(ws[2:]), "strides": strides, "pads": pads, "dilations": dil,
             "groups": group}
    whole = evaluate("cim.im2col", attrs, x)
    length = whole.shape[-1]
    for a, b in {(0, length), (0, 1), (1, length), (length // 3, length - 1),
                 (length // 2, length // 2 + 1), (length - 1, length)}:
        got = evaluate("cim.im2col", {**attrs, "rows": [a, b]}, x)
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(got, whole[..., a:b])
        (t,) = infer_types("cim.im2col", [TensorType.of(x)], {**attrs, "rows": [a, b]})
        assert t == TensorType.of(got)


@pytest.mark.parametrize("xs, ws, strides, pads, dil, group", CASES)
def test_im2col_mvm_equals_conv(xs, ws, strides, pads, dil, group):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    conv_attrs = {"strides": strides, "pads": pads, "dilations": dil, "group": group}
    want = evaluate("nn.conv", conv_attrs, x, w, b)
    cols = evaluate(
        "cim.im2col",
        {"kernel_shape": list(ws[2:]), "strides": strides, "pads": pads, "dilations": dil,
         "groups": group},
        x,
    )
    y = evaluate("cim.mvm", {}, cols, conv_weight_matrix(w, group)) + b
    got = np.moveaxis(y, -1, 1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_grouped_mvm_is_block_diagonal():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 4, 2)).astype(np.float32)
    x = rng.standard_normal((2, 5, 12)).astype(np.float32)
    dense = np.zeros((12, 6), np.float32)
    for g in range(3):
        dense[4 * g : 4 * g + 4, 2 * g : 2 * g + 2] = w[g]
    got = evaluate("cim.mvm", {}, x, w)
    np.testing.assert_allclose(got, x @ dense, rtol=1e-5, atol=1e-6)
    assert infer_types("cim.mvm", [TensorType.of(x), TensorType.of(w)], {}) == [
        TensorType((2, 5, 6))
    ]


def test_mvm_vector_and_f16():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 3)).astype(np.float16)
    x = rng.standard_normal(5).astype(np.float16)
    got = evaluate("cim.mvm", {}, x, w)
    assert got.dtype == np.float16 and got.shape == (3,)
    np.testing.assert_allclose(
        got, x.astype(np.float32) @ w.astype(np.float32), rtol=2e-3, atol=2e-3
    )


@pytest.mark.parametrize(
    "x, w, match",
    [
        ((2, 5), (4, 3), "must end in the weight's 4 rows"),
        ((2, 12), (3, 5, 2), "must end in the weight's 15 rows"),
        ((2, 4), (4,), r"weight must be \[K, M\]"),
        ((), (4, 3), "rank >= 1"),
    ],
)
def test_mvm_type_errors(x, w, match):
    with pytest.raises(VerifyError, match=match):
        infer_types("cim.mvm", [TensorType(x), TensorType(w)], {})


def test_mvm_dtype_errors():
    with pytest.raises(VerifyError, match="same float dtype"):
        infer_types("cim.mvm", [TensorType((2, 4), "f32"), TensorType((4, 3), "f16")], {})
    with pytest.raises(VerifyError, match="same float dtype"):
        infer_types("cim.mvm", [TensorType((2, 4), "i8"), TensorType((4, 3), "i8")], {})


GOOD = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1]}


@pytest.mark.parametrize(
    "shape, change, match",
    [
        ((1, 2), {}, "at least|>= 1 spatial"),
        ((1, 2, 5, 5), {"kernel_shape": [3]}, "'kernel_shape' must be a list of 2"),
        ((1, 2, 5, 5), {"strides": [0, 1]}, "'strides' must be a list of 2 integers >= 1"),
        ((1, 2, 5, 5), {"pads": [0, 0]}, "'pads' must be a list of 4"),
        ((1, 2, 5, 5), {"dilations": [1.0, 1]}, "'dilations'"),
        ((1, 2, 2, 5), {}, "spatial dim 0 of size 2"),
        ((1, 2, 5, 5), {"dilations": [1, 3]}, "smaller than the dilated kernel extent 7"),
        ((1, 2, 5, 5), {"rows": [0, 19]}, r"'rows' must be \[a, b\] with 0 <= a < b <= 18"),
        ((1, 2, 5, 5), {"rows": [4, 4]}, "'rows' must be"),
        ((1, 2, 5, 5), {"rows": [3]}, "'rows' must be"),
    ],
)
def test_im2col_type_errors(shape, change, match):
    with pytest.raises(VerifyError, match=match):
        infer_types("cim.im2col", [TensorType(shape)], {**GOOD, **change})


def test_cim_ops_are_legal_only_at_stage_cim():
    body = """
  func @main(%x: tensor<1x2x4x4xf32>) -> (tensor<1x3x3x2xf32>) {
    %c = cim.im2col(%x) {dilations = [1, 1], kernel_shape = [2, 2], pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x3x3x8xf32>
    %w = nn.constant() {value = dense<[%W] : tensor<8x2xf32>>} : tensor<8x2xf32>
    %y = cim.mvm(%c, %w) : tensor<1x3x3x2xf32>
    return(%y)
  }
}
""".replace("%W", ", ".join(["0.5"] * 16))
    verify(parse_module('module attributes {stage = "cim"} {' + body))
    with pytest.raises(VerifyError, match="cim.im2col is not legal at stage 'nn'"):
        verify(parse_module('module attributes {stage = "nn"} {' + body))
