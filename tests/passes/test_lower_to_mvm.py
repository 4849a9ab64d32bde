"""Pass "lower-to-mvm": text in, text out, and the interpreter gives the same outputs before and
after (cimc.testing.check_pass); plus a small ONNX model against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.frontend.onnx import import_onnx
from cimc.ir import parse_module, to_text
from cimc.ir.core import Builder, Func, Module
from cimc.ir.interpreter import run
from cimc.ir.types import TensorType
from cimc.passes import PassContext, run_pipeline
from cimc.passes.lower_to_mvm import LowerToMvm
from cimc.testing import check_pass, compare_with_ort, ort_run

W = "dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0] : tensor<2x2x2x2xf32>>"

# ----------------------------------------------------------------------------- conv


def test_conv_becomes_im2col_mvm_bias_add_transpose():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
    %b = nn.constant() {{value = dense<[0.5, -0.5] : tensor<2xf32>>}} : tensor<2xf32>
    %c = nn.conv(%x, %w, %b) {{dilations = [1, 1], group = 1, pads = [1, 1, 0, 0], strides = [2, 2]}} : tensor<1x2x2x2xf32>
    return(%c)
  }}
}}
"""
    # weight [M, C, kh, kw] -> [kh*kw*C, M]: row (kh, kw, c), column m
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {
    %1 = nn.constant() {value = dense<[0.5, -0.5] : tensor<2xf32>>} : tensor<2xf32>
    %2 = cim.im2col(%0) {dilations = [1, 1], kernel_shape = [2, 2], layer = "conv0", pads = [1, 1, 0, 0], strides = [2, 2]} : tensor<1x2x2x8xf32>
    %3 = nn.constant() {value = dense<[1.0, -1.0, 5.0, -5.0, 2.0, -2.0, 6.0, -6.0, 3.0, -3.0, 7.0, -7.0, 4.0, -4.0, 8.0, -8.0] : tensor<8x2xf32>>} : tensor<8x2xf32>
    %4 = cim.mvm(%2, %3) {layer = "conv0"} : tensor<1x2x2x2xf32>
    %5 = nn.add(%4, %1) {layer = "conv0"} : tensor<1x2x2x2xf32>
    %6 = nn.transpose(%5) {layer = "conv0", perm = [0, 3, 1, 2]} : tensor<1x2x2x2xf32>
    return(%6)
  }
}
""",
    )


def test_grouped_conv_1d_becomes_grouped_mvm():
    src = """module {
  func @main(%x: tensor<1x4x3xf32>) -> (tensor<1x2x3xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0] : tensor<2x2x2xf32>>} : tensor<2x2x2xf32>
    %c = nn.conv(%x, %w) {dilations = [1], group = 2, pads = [1, 0], strides = [1]} : tensor<1x2x3xf32>
    return(%c)
  }
}
"""
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<1x4x3xf32>) -> (tensor<1x2x3xf32>) {
    %1 = cim.im2col(%0) {dilations = [1], groups = 2, kernel_shape = [2], layer = "conv0", pads = [1, 0], strides = [1]} : tensor<1x3x8xf32>
    %2 = nn.constant() {value = dense<[1.0, 3.0, 2.0, 4.0, 5.0, 7.0, 6.0, 8.0] : tensor<2x4x1xf32>>} : tensor<2x4x1xf32>
    %3 = cim.mvm(%1, %2) {layer = "conv0"} : tensor<1x3x2xf32>
    %4 = nn.transpose(%3) {layer = "conv0", perm = [0, 2, 1]} : tensor<1x2x3xf32>
    return(%4)
  }
}
""",
    )


def test_depthwise_conv_with_multiplier_is_a_grouped_mvm():
    src = """module {
  func @main(%x: tensor<2x3x4x4xf32>) -> (tensor<2x6x4x4xf32>) {
    %w = nn.constant() {value = dense<[1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 0.5, -0.5, 0.25, -0.25, 1.5, -1.5] : tensor<6x1x1x2xf32>>} : tensor<6x1x1x2xf32>
    %c = nn.conv(%x, %w) {dilations = [1, 3], group = 3, pads = [0, 1, 0, 2], strides = [1, 1]} : tensor<2x6x4x4xf32>
    return(%c)
  }
}
"""
    # group g: [Kg = 2 taps, Mg = 2 output channels]
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x3x4x4xf32>) -> (tensor<2x6x4x4xf32>) {
    %1 = cim.im2col(%0) {dilations = [1, 3], groups = 3, kernel_shape = [1, 2], layer = "conv0", pads = [0, 1, 0, 2], strides = [1, 1]} : tensor<2x4x4x6xf32>
    %2 = nn.constant() {value = dense<[1.0, 2.0, -1.0, -2.0, 3.0, 0.5, -3.0, -0.5, 0.25, 1.5, -0.25, -1.5] : tensor<3x2x2xf32>>} : tensor<3x2x2xf32>
    %3 = cim.mvm(%1, %2) {layer = "conv0"} : tensor<2x4x4x6xf32>
    %4 = nn.transpose(%3) {layer = "conv0", perm = [0, 3, 1, 2]} : tensor<2x6x4x4xf32>
    return(%4)
  }
}
""",
    )


def test_conv_with_run_time_weight_stays():
    src = """module {
  func @main(%x: tensor<1x2x3x3xf32>, %w: tensor<2x2x2x2xf32>) -> (tensor<1x2x2x2xf32>) {
    %c = nn.conv(%x, %w) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    return(%c)
  }
}
"""
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<1x2x3x3xf32>, %1: tensor<2x2x2x2xf32>) -> (tensor<1x2x2x2xf32>) {
    %2 = nn.conv(%0, %1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    return(%2)
  }
}
""",
    )


def _dense(a: np.ndarray) -> str:
    flat = ", ".join(repr(float(v)) for v in a.reshape(-1))
    return f"dense<[{flat}] : tensor<{'x'.join(map(str, a.shape))}xf32>>"


def _t(shape) -> str:
    return f"tensor<{'x'.join(map(str, shape))}xf32>"


CONV_CASES = [
    # x shape, weight shape, strides, pads, dilations, group, bias
    ((2, 3, 7, 6), (4, 3, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1, True),
    ((1, 4, 9, 8), (6, 2, 3, 2), [2, 1], [0, 1, 2, 0], [1, 2], 2, True),
    ((1, 6, 8, 8), (6, 1, 3, 3), [2, 2], [1, 1, 1, 1], [2, 2], 6, False),
    ((2, 3, 11), (5, 3, 4), [3], [2, 1], [2], 1, True),
    ((1, 4, 10), (4, 1, 3), [1], [1, 1], [1], 4, True),
    ((1, 2, 4, 5, 3), (3, 2, 2, 3, 1), [1, 2, 1], [0, 1, 1, 1, 0, 0], [1, 1, 1], 1, True),
]


@pytest.mark.parametrize("xs, ws, strides, pads, dil, group, bias", CONV_CASES)
def test_lowered_conv_matches_nn_conv(xs, ws, strides, pads, dil, group, bias):
    from cimc.ops.registry import infer_types
    from cimc.ir.types import TensorType

    rng = np.random.default_rng(len(xs) * 10 + group)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "group": group}
    types = [TensorType(xs), TensorType(ws)] + ([TensorType((ws[0],))] if bias else [])
    (out,) = infer_types("nn.conv", types, attrs)
    a = f"{{dilations = {dil}, group = {group}, pads = {pads}, strides = {strides}}}"
    src = f"""module {{
  func @main(%x: {_t(xs)}) -> ({out}) {{
    %w = nn.constant() {{value = {_dense(w)}}} : {_t(ws)}
    %b = nn.constant() {{value = {_dense(b)}}} : {_t(b.shape)}
    %c = nn.conv(%x, %w{", %b" if bias else ""}) {a} : {out}
    return(%c)
  }}
}}
"""
    text = check_pass(src, "lower-to-mvm", rtol=1e-5, atol=1e-5)
    assert "nn.conv" not in text and text.count("cim.mvm(") == 1
    assert ("nn.add(" in text) == bias


# ----------------------------------------------------------------------------- gemm


def test_gemm_trans_a_trans_b_alpha_and_constant_c():
    src = """module {
  func @main(%a: tensor<3x2xf32>) -> (tensor<2x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<2x3xf32>>} : tensor<2x3xf32>
    %c = nn.constant() {value = dense<[1.0, -1.0] : tensor<2xf32>>} : tensor<2xf32>
    %g = nn.gemm(%a, %w, %c) {alpha = 2.0, beta = 0.5, trans_a = true, trans_b = true} : tensor<2x2xf32>
    return(%g)
  }
}
"""
    # weight = alpha * B^T; the constant C is folded with beta
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<3x2xf32>) -> (tensor<2x2xf32>) {
    %1 = nn.transpose(%0) {layer = "gemm0", perm = [1, 0]} : tensor<2x3xf32>
    %2 = nn.constant() {value = dense<[2.0, 8.0, 4.0, 10.0, 6.0, 12.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %3 = cim.mvm(%1, %2) {layer = "gemm0"} : tensor<2x2xf32>
    %4 = nn.constant() {value = dense<[0.5, -0.5] : tensor<2xf32>>} : tensor<2xf32>
    %5 = nn.add(%3, %4) {layer = "gemm0"} : tensor<2x2xf32>
    return(%5)
  }
}
""",
    )


def test_gemm_without_c_uses_its_weight_as_it_is():
    src = """module {
  func @main(%a: tensor<2x3xf32>) -> (tensor<2x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %g = nn.gemm(%a, %w) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false} : tensor<2x2xf32>
    return(%g)
  }
}
"""
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x3xf32>) -> (tensor<2x2xf32>) {
    %1 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %2 = cim.mvm(%0, %1) {layer = "gemm0"} : tensor<2x2xf32>
    return(%2)
  }
}
""",
    )


GEMM_RUNTIME_C = """module {
  func @main(%a: tensor<2x3xf32>, %c: tensor<2x2xf32>) -> (tensor<2x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %g = nn.gemm(%a, %w, %c) {alpha = 1.0, beta = BETA, trans_a = false, trans_b = false} : tensor<2x2xf32>
    return(%g)
  }
}
"""
GEMM_RUNTIME_C_HEAD = """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x3xf32>, %1: tensor<2x2xf32>) -> (tensor<2x2xf32>) {
    %2 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %3 = cim.mvm(%0, %2) {layer = "gemm0"} : tensor<2x2xf32>
"""


@pytest.mark.parametrize(
    "beta, tail",
    [
        (
            "1.0",
            """    %4 = nn.add(%3, %1) {layer = "gemm0"} : tensor<2x2xf32>
    return(%4)
""",
        ),
        (
            "0.5",
            """    %4 = nn.constant() {value = dense<[0.5] : tensor<f32>>} : tensor<f32>
    %5 = nn.mul(%1, %4) {layer = "gemm0"} : tensor<2x2xf32>
    %6 = nn.add(%3, %5) {layer = "gemm0"} : tensor<2x2xf32>
    return(%6)
""",
        ),
        (
            "0.0",
            """    return(%3)
""",
        ),
    ],
)
def test_gemm_with_run_time_c(beta, tail):
    check_pass(
        GEMM_RUNTIME_C.replace("BETA", beta),
        "lower-to-mvm",
        GEMM_RUNTIME_C_HEAD + tail + "  }\n}\n",
    )


def test_gemm_of_two_activations_stays():
    src = """module {
  func @main(%a: tensor<2x3xf32>, %w: tensor<3x2xf32>) -> (tensor<2x2xf32>) {
    %g = nn.gemm(%a, %w) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false} : tensor<2x2xf32>
    return(%g)
  }
}
"""
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x3xf32>, %1: tensor<3x2xf32>) -> (tensor<2x2xf32>) {
    %2 = nn.gemm(%0, %1) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false} : tensor<2x2xf32>
    return(%2)
  }
}
""",
    )


# ----------------------------------------------------------------------------- matmul


def test_matmul_with_constant_2d_weight_lowers_others_stay_digital():
    src = """module {
  func @main(%a: tensor<2x5x3xf32>, %b: tensor<3x4xf32>) -> (tensor<2x5x2xf32>, tensor<2x5x4xf32>, tensor<2x5x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %w3 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0] : tensor<2x3x2xf32>>} : tensor<2x3x2xf32>
    %m = nn.matmul(%a, %w) : tensor<2x5x2xf32>
    %n = nn.matmul(%a, %b) : tensor<2x5x4xf32>
    %o = nn.matmul(%a, %w3) : tensor<2x5x2xf32>
    return(%m, %n, %o)
  }
}
"""
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x5x3xf32>, %1: tensor<3x4xf32>) -> (tensor<2x5x2xf32>, tensor<2x5x4xf32>, tensor<2x5x2xf32>) {
    %2 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %3 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0] : tensor<2x3x2xf32>>} : tensor<2x3x2xf32>
    %4 = cim.mvm(%0, %2) {layer = "matmul0"} : tensor<2x5x2xf32>
    %5 = nn.matmul(%0, %1) : tensor<2x5x4xf32>
    %6 = nn.matmul(%0, %3) : tensor<2x5x2xf32>
    return(%4, %5, %6)
  }
}
""",
    )


def test_matmul_of_a_vector():
    src = """module {
  func @main(%a: tensor<3xf32>) -> (tensor<2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %m = nn.matmul(%a, %w) : tensor<2xf32>
    return(%m)
  }
}
"""
    assert 'cim.mvm(%0, %1) {layer = "matmul0"} : tensor<2xf32>' in check_pass(src, "lower-to-mvm")


# ----------------------------------------------------------------------------- layer names


def test_layer_names_kept_or_generated_without_clashes():
    src = """module {
  func @main(%a: tensor<2x3xf32>) -> (tensor<2x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %v = nn.constant() {value = dense<[1.0, 0.0, 0.0, 1.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %m = nn.matmul(%a, %w) : tensor<2x2xf32>
    %n = nn.matmul(%m, %v) {layer = "matmul1"} : tensor<2x2xf32>
    %o = nn.gemm(%n, %v) {alpha = 1.0, beta = 1.0, layer = "fc", trans_a = false, trans_b = false} : tensor<2x2xf32>
    %p = nn.matmul(%o, %v) : tensor<2x2xf32>
    %q = nn.relu(%p) {layer = "matmul0"} : tensor<2x2xf32>
    return(%q)
  }
}
"""
    check_pass(
        src,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x3xf32>) -> (tensor<2x2xf32>) {
    %1 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %2 = nn.constant() {value = dense<[1.0, 0.0, 0.0, 1.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %3 = cim.mvm(%0, %1) {layer = "matmul2"} : tensor<2x2xf32>
    %4 = cim.mvm(%3, %2) {layer = "matmul1"} : tensor<2x2xf32>
    %5 = cim.mvm(%4, %2) {layer = "fc"} : tensor<2x2xf32>
    %6 = cim.mvm(%5, %2) {layer = "matmul3"} : tensor<2x2xf32>
    %7 = nn.relu(%6) {layer = "matmul0"} : tensor<2x2xf32>
    return(%7)
  }
}
""",
    )


def test_generated_names_are_stable_across_runs():
    src = """module {
  func @main(%a: tensor<2x3xf32>) -> (tensor<2x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %v = nn.constant() {value = dense<[1.0, 0.0, 0.0, 1.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %m = nn.gemm(%a, %w) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false} : tensor<2x2xf32>
    %n = nn.gemm(%m, %v) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false} : tensor<2x2xf32>
    return(%n)
  }
}
"""
    outs = set()
    for _ in range(2):
        m = parse_module(src)
        LowerToMvm().run(m, PassContext())
        outs.add(tuple(op.attrs.get("layer") for op in m.main.body.ops))
    assert outs == {(None, None, "gemm0", "gemm1", None)}


# ----------------------------------------------------------------------------- pipeline


def test_canonicalize_lower_canonicalize_pipeline():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
    %s = nn.constant() {{value = dense<[1.0, 2.0] : tensor<2xf32>>}} : tensor<2xf32>
    %b = nn.constant() {{value = dense<[0.5, -1.0] : tensor<2xf32>>}} : tensor<2xf32>
    %m = nn.constant() {{value = dense<[1.0, -2.0] : tensor<2xf32>>}} : tensor<2xf32>
    %v = nn.constant() {{value = dense<[4.0, 0.25] : tensor<2xf32>>}} : tensor<2xf32>
    %c = nn.conv(%x, %w) {{dilations = [1, 1], group = 1, layer = "stem", pads = [0, 0, 0, 0], strides = [1, 1]}} : tensor<1x2x2x2xf32>
    %d = nn.identity(%c) : tensor<1x2x2x2xf32>
    %y = nn.batch_norm(%d, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    %r = nn.relu(%y) : tensor<1x2x2x2xf32>
    return(%r)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize,lower-to-mvm,canonicalize",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {
    %1 = nn.constant() {value = dense<[0.0, 7.0] : tensor<2xf32>>} : tensor<2xf32>
    %2 = cim.im2col(%0) {dilations = [1, 1], kernel_shape = [2, 2], layer = "stem", pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x8xf32>
    %3 = nn.constant() {value = dense<[0.5, -4.0, 2.5, -20.0, 1.0, -8.0, 3.0, -24.0, 1.5, -12.0, 3.5, -28.0, 2.0, -16.0, 4.0, -32.0] : tensor<8x2xf32>>} : tensor<8x2xf32>
    %4 = cim.mvm(%2, %3) {layer = "stem"} : tensor<1x2x2x2xf32>
    %5 = nn.add(%4, %1) {layer = "stem"} : tensor<1x2x2x2xf32>
    %6 = nn.transpose(%5) {layer = "stem", perm = [0, 3, 1, 2]} : tensor<1x2x2x2xf32>
    %7 = nn.relu(%6) : tensor<1x2x2x2xf32>
    return(%7)
  }
}
""",
    )


def _onnx_model() -> onnx.ModelProto:
    """Conv -> BatchNorm -> Relu -> depthwise Conv -> Flatten -> Gemm(transB) -> MatMul, plus
    a MatMul of two activations that must stay digital."""
    rng = np.random.default_rng(7)

    def init(name, *shape, positive=False):
        a = rng.uniform(0.5, 1.5, shape) if positive else rng.standard_normal(shape) * 0.5
        return numpy_helper.from_array(a.astype(np.float32), name)

    inits = [
        init("w1", 4, 3, 3, 3),
        init("b1", 4),
        init("s", 4, positive=True),
        init("bb", 4),
        init("mu", 4),
        init("var", 4, positive=True),
        init("w2", 4, 1, 3, 3),
        init("wg", 5, 4 * 3 * 3),
        init("bg", 5),
        init("wm", 5, 3),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "s", "bb", "mu", "var"], ["n1"], epsilon=1e-5
        ),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=4, strides=[2, 2]),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["g"], transB=1, alpha=0.5),
        helper.make_node("MatMul", ["g", "wm"], ["y"]),
        helper.make_node("MatMul", ["g", "z"], ["yz"]),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 7, 7]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [5, 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("yz", TensorProto.FLOAT, [2, 2]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_small_onnx_model_matches_onnxruntime_after_lowering():
    model = _onnx_model()
    rng = np.random.default_rng(0)
    inputs = {
        "x": rng.standard_normal((2, 3, 7, 7)).astype(np.float32),
        "z": rng.standard_normal((5, 2)).astype(np.float32),
    }
    compare_with_ort(model, inputs, passes="canonicalize,lower-to-mvm,canonicalize")
    module = import_onnx(model)
    run_pipeline(module, "canonicalize,lower-to-mvm,canonicalize")
    names = [op.name for op in module.walk()]
    assert module.attrs["stage"] == "cim"
    assert names.count("cim.mvm") == 4 and names.count("cim.im2col") == 2
    assert "nn.batch_norm" not in names and "nn.conv" not in names and "nn.gemm" not in names
    assert names.count("nn.matmul") == 1  # the product of two activations
    layers = [op.attrs["layer"] for op in module.walk() if op.name == "cim.mvm"]
    assert len(set(layers)) == 4
    want = ort_run(model, inputs)
    got = run(module, inputs)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- recurrent layers

GRU_SRC = """module {
  func @main(%x: tensor<2x1x1xf32>) -> (tensor<2x1x1x1xf32>, tensor<1x1x1xf32>) {
    %w = nn.constant() {value = dense<[0.5, -1.0, 2.0] : tensor<1x3x1xf32>>} : tensor<1x3x1xf32>
    %r = nn.constant() {value = dense<[1.5, 0.25, -0.5] : tensor<1x3x1xf32>>} : tensor<1x3x1xf32>
    %b = nn.constant() {value = dense<[0.1, 0.2, 0.3, 0.0, 0.0, -0.4] : tensor<1x6xf32>>} : tensor<1x6xf32>
    %h0 = nn.constant() {value = dense<[0.0] : tensor<1x1x1xf32>>} : tensor<1x1x1xf32>
    %y, %yh = nn.gru(%x, %w, %r, %b, %h0) {activation_alpha = [0.0, 0.0], activation_beta = [0.0, 0.0], activations = ["Sigmoid", "Tanh"], clip = inf, direction = "forward", linear_before_reset = true} : tensor<2x1x1x1xf32>, tensor<1x1x1xf32>
    return(%y, %yh)
  }
}
"""


def test_gru_unrolls_onto_input_and_recurrent_crossbars():
    """Two steps, a zero initial state: step 0 has no recurrent product; the recurrent weight is
    one constant for every step; linear_before_reset keeps Rbh inside r * (...)."""
    check_pass(
        GRU_SRC,
        "lower-to-mvm",
        """module attributes {stage = "cim"} {
  func @main(%0: tensor<2x1x1xf32>) -> (tensor<2x1x1x1xf32>, tensor<1x1x1xf32>) {
    %1 = nn.constant() {value = dense<[0.5, -1.0, 2.0] : tensor<1x3xf32>>} : tensor<1x3xf32>
    %2 = cim.mvm(%0, %1) {layer = "gru0.input"} : tensor<2x1x3xf32>
    %3 = nn.constant() {value = dense<[0.1, 0.2, 0.3] : tensor<3xf32>>} : tensor<3xf32>
    %4 = nn.add(%2, %3) {layer = "gru0"} : tensor<2x1x3xf32>
    %5 = nn.constant() {value = dense<[-0.4] : tensor<1xf32>>} : tensor<1xf32>
    %6 = nn.slice(%4) {axes = [0], ends = [1], layer = "gru0", starts = [0], steps = [1]} : tensor<1x1x3xf32>
    %7 = nn.reshape(%6) {layer = "gru0", shape = [1, 3]} : tensor<1x3xf32>
    %8, %9 = nn.split(%7) {axis = 1, layer = "gru0", sizes = [2, 1]} : tensor<1x2xf32>, tensor<1x1xf32>
    %10 = nn.sigmoid(%8) {layer = "gru0"} : tensor<1x2xf32>
    %11, %12 = nn.split(%10) {axis = 1, layer = "gru0", sizes = [1, 1]} : tensor<1x1xf32>, tensor<1x1xf32>
    %13 = nn.mul(%12, %5) {layer = "gru0"} : tensor<1x1xf32>
    %14 = nn.add(%9, %13) {layer = "gru0"} : tensor<1x1xf32>
    %15 = nn.tanh(%14) {layer = "gru0"} : tensor<1x1xf32>
    %16 = nn.constant() {value = dense<[1.0] : tensor<f32>>} : tensor<f32>
    %17 = nn.sub(%16, %11) {layer = "gru0"} : tensor<1x1xf32>
    %18 = nn.mul(%17, %15) {layer = "gru0"} : tensor<1x1xf32>
    %19 = nn.slice(%4) {axes = [0], ends = [2], layer = "gru0", starts = [1], steps = [1]} : tensor<1x1x3xf32>
    %20 = nn.reshape(%19) {layer = "gru0", shape = [1, 3]} : tensor<1x3xf32>
    %21, %22 = nn.split(%20) {axis = 1, layer = "gru0", sizes = [2, 1]} : tensor<1x2xf32>, tensor<1x1xf32>
    %23 = nn.constant() {value = dense<[1.5, 0.25, -0.5] : tensor<1x3xf32>>} : tensor<1x3xf32>
    %24 = cim.mvm(%18, %23) {layer = "gru0.recurrent"} : tensor<1x3xf32>
    %25, %26 = nn.split(%24) {axis = 1, layer = "gru0", sizes = [2, 1]} : tensor<1x2xf32>, tensor<1x1xf32>
    %27 = nn.add(%21, %25) {layer = "gru0"} : tensor<1x2xf32>
    %28 = nn.sigmoid(%27) {layer = "gru0"} : tensor<1x2xf32>
    %29, %30 = nn.split(%28) {axis = 1, layer = "gru0", sizes = [1, 1]} : tensor<1x1xf32>, tensor<1x1xf32>
    %31 = nn.add(%26, %5) {layer = "gru0"} : tensor<1x1xf32>
    %32 = nn.mul(%30, %31) {layer = "gru0"} : tensor<1x1xf32>
    %33 = nn.add(%22, %32) {layer = "gru0"} : tensor<1x1xf32>
    %34 = nn.tanh(%33) {layer = "gru0"} : tensor<1x1xf32>
    %35 = nn.sub(%16, %29) {layer = "gru0"} : tensor<1x1xf32>
    %36 = nn.mul(%35, %34) {layer = "gru0"} : tensor<1x1xf32>
    %37 = nn.mul(%29, %18) {layer = "gru0"} : tensor<1x1xf32>
    %38 = nn.add(%36, %37) {layer = "gru0"} : tensor<1x1xf32>
    %39 = nn.reshape(%18) {layer = "gru0", shape = [1, 1, 1, 1]} : tensor<1x1x1x1xf32>
    %40 = nn.reshape(%38) {layer = "gru0", shape = [1, 1, 1, 1]} : tensor<1x1x1x1xf32>
    %41 = nn.concat(%39, %40) {axis = 0, layer = "gru0"} : tensor<2x1x1x1xf32>
    %42 = nn.reshape(%38) {layer = "gru0", shape = [1, 1, 1]} : tensor<1x1x1xf32>
    return(%41, %42)
  }
}
""",
    )


def _recurrent_text(name: str, *, directions: int = 1, states: str = "zero", peepholes=False,
                    **attrs) -> str:
    """@main(x) running one nn.lstm / nn.gru with seeded random constant weights; ``states``:
    "zero" (constants), "random" (constants) or "input" (function arguments)."""
    s, n, i, h, g = 3, 2, 3, 4, 4 if name == "nn.lstm" else 3
    rng = np.random.default_rng(0)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    n_states = 2 if name == "nn.lstm" else 1
    args = [TensorType((s, n, i))] + [TensorType((directions, n, h))] * (
        n_states if states == "input" else 0)
    f = Func("main", args, input_names=[f"a{k}" for k in range(len(args))])
    b = Builder(f.body)
    operands = [f.args[0]] + [b.constant(a) for a in (
        rand(directions, g * h, i), rand(directions, g * h, h), rand(directions, 2 * g * h))]
    for k in range(n_states):
        if states == "input":
            operands.append(f.args[1 + k])
        else:
            value = rand(directions, n, h) if states == "random" else np.zeros((directions, n, h))
            operands.append(b.constant(value.astype(np.float32)))
    if name == "nn.lstm":
        p = rand(directions, 3 * h) if peepholes else np.zeros((directions, 3 * h), np.float32)
        operands.append(b.constant(p))
    k = 3 if name == "nn.lstm" else 2
    acts = (["Sigmoid", "Tanh", "Tanh"] if name == "nn.lstm" else ["Sigmoid", "Tanh"])
    attrs = {"direction": "bidirectional" if directions == 2 else "forward",
             "activations": acts * directions, "activation_alpha": [0.0] * k * directions,
             "activation_beta": [0.0] * k * directions, "clip": float("inf"), **attrs}
    op = b.create(name, operands, attrs)
    b.create("return", list(op.results), result_types=[])
    f.attrs["output_names"] = [f"y{k}" for k in range(len(op.results))]
    return to_text(Module([f], {"stage": "nn"}), inline_limit=1 << 30)


@pytest.mark.parametrize("name,kw", [
    ("nn.lstm", {"directions": 2, "states": "input", "peepholes": True, "input_forget": False}),
    ("nn.lstm", {"states": "random", "clip": 0.5, "input_forget": True}),
    ("nn.gru", {"directions": 2, "states": "random", "linear_before_reset": False}),
    ("nn.gru", {"states": "input", "clip": 0.4, "linear_before_reset": True}),
], ids=str)
def test_recurrent_unrolling_keeps_the_semantics(name, kw):
    text = check_pass(_recurrent_text(name, **kw), "lower-to-mvm")
    assert "cim.mvm" in text and "nn.lstm" not in text and "nn.gru" not in text
