"""Pass "canonicalize": text in, text out, and the interpreter gives the same outputs before and
after (cimc.testing.check_pass)."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.ir import parse_module, to_text
from cimc.passes import PassContext
from cimc.passes.canonicalize import Canonicalize
from cimc.testing import check_pass

# Batch norm parameters chosen so that a = scale / sqrt(var + eps) = [0.5, 4.0] and
# b = bias - mean * a = [0.0, 7.0] are exact in float32.
BN_PARAMS = """\
    %s = nn.constant() {value = dense<[1.0, 2.0] : tensor<2xf32>>} : tensor<2xf32>
    %b = nn.constant() {value = dense<[0.5, -1.0] : tensor<2xf32>>} : tensor<2xf32>
    %m = nn.constant() {value = dense<[1.0, -2.0] : tensor<2xf32>>} : tensor<2xf32>
    %v = nn.constant() {value = dense<[4.0, 0.25] : tensor<2xf32>>} : tensor<2xf32>
"""
BN_PARAMS_OUT = """\
    %{0} = nn.constant() {{value = dense<[1.0, 2.0] : tensor<2xf32>>}} : tensor<2xf32>
    %{1} = nn.constant() {{value = dense<[0.5, -1.0] : tensor<2xf32>>}} : tensor<2xf32>
    %{2} = nn.constant() {{value = dense<[1.0, -2.0] : tensor<2xf32>>}} : tensor<2xf32>
    %{3} = nn.constant() {{value = dense<[4.0, 0.25] : tensor<2xf32>>}} : tensor<2xf32>
"""
W = "dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0] : tensor<2x2x2x2xf32>>"
CONV = "{dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]}"


def bn_out(first: int) -> str:
    return BN_PARAMS_OUT.format(first, first + 1, first + 2, first + 3)


# ----------------------------------------------------------------------------- batch norm


def test_bn_folds_into_conv_with_bias():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
    %cb = nn.constant() {{value = dense<[2.0, 1.0] : tensor<2xf32>>}} : tensor<2xf32>
{BN_PARAMS}    %c = nn.conv(%x, %w, %cb) {CONV} : tensor<1x2x2x2xf32>
    %y = nn.batch_norm(%c, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    return(%y)
  }}
}}
"""
    # weight rows scaled by a = [0.5, 4]; bias = [2, 1] * a + [0, 7]
    check_pass(
        src,
        "canonicalize",
        f"""module {{
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %1 = nn.constant() {{value = dense<[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, -4.0, -8.0, -12.0, -16.0, -20.0, -24.0, -28.0, -32.0] : tensor<2x2x2x2xf32>>}} : tensor<2x2x2x2xf32>
    %2 = nn.constant() {{value = dense<[1.0, 11.0] : tensor<2xf32>>}} : tensor<2xf32>
    %3 = nn.conv(%0, %1, %2) {CONV} : tensor<1x2x2x2xf32>
    return(%3)
  }}
}}
""",
    )


def test_bn_folds_into_conv_without_bias_and_keeps_layer():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
{BN_PARAMS}    %c = nn.conv(%x, %w) {{dilations = [1, 1], group = 1, layer = "c1", pads = [0, 0, 0, 0], strides = [1, 1]}} : tensor<1x2x2x2xf32>
    %y = nn.batch_norm(%c, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    return(%y)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {
    %1 = nn.constant() {value = dense<[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, -4.0, -8.0, -12.0, -16.0, -20.0, -24.0, -28.0, -32.0] : tensor<2x2x2x2xf32>>} : tensor<2x2x2x2xf32>
    %2 = nn.constant() {value = dense<[0.0, 7.0] : tensor<2xf32>>} : tensor<2xf32>
    %3 = nn.conv(%0, %1, %2) {dilations = [1, 1], group = 1, layer = "c1", pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    return(%3)
  }
}
""",
    )


def test_bn_not_folded_when_conv_has_another_user():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
{BN_PARAMS}    %c = nn.conv(%x, %w) {CONV} : tensor<1x2x2x2xf32>
    %y = nn.batch_norm(%c, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    %r = nn.relu(%c) : tensor<1x2x2x2xf32>
    return(%y, %r)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        f"""module {{
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32>) {{
    %1 = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
{bn_out(2)}    %6 = nn.conv(%0, %1) {CONV} : tensor<1x2x2x2xf32>
    %7 = nn.batch_norm(%6, %2, %3, %4, %5) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    %8 = nn.relu(%6) : tensor<1x2x2x2xf32>
    return(%7, %8)
  }}
}}
""",
    )


def test_bn_not_folded_when_conv_result_is_also_returned():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
{BN_PARAMS}    %c = nn.conv(%x, %w) {CONV} : tensor<1x2x2x2xf32>
    %y = nn.batch_norm(%c, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    return(%y, %c)
  }}
}}
"""
    out = check_pass(src, "canonicalize")
    assert "nn.batch_norm(%6, %2, %3, %4, %5)" in out and "return(%7, %6)" in out


def test_bn_not_folded_when_conv_weight_is_not_constant():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>, %w: tensor<2x2x2x2xf32>) -> (tensor<1x2x2x2xf32>) {{
{BN_PARAMS}    %c = nn.conv(%x, %w) {CONV} : tensor<1x2x2x2xf32>
    %y = nn.batch_norm(%c, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    return(%y)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        f"""module {{
  func @main(%0: tensor<1x2x3x3xf32>, %1: tensor<2x2x2x2xf32>) -> (tensor<1x2x2x2xf32>) {{
{bn_out(2)}    %6 = nn.conv(%0, %1) {CONV} : tensor<1x2x2x2xf32>
    %7 = nn.batch_norm(%6, %2, %3, %4, %5) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    return(%7)
  }}
}}
""",
    )


def test_bn_not_folded_when_its_parameters_are_not_constant():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>, %s: tensor<2xf32>) -> (tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
    %b = nn.constant() {{value = dense<[0.5, -1.0] : tensor<2xf32>>}} : tensor<2xf32>
    %m = nn.constant() {{value = dense<[1.0, -2.0] : tensor<2xf32>>}} : tensor<2xf32>
    %v = nn.constant() {{value = dense<[4.0, 0.25] : tensor<2xf32>>}} : tensor<2xf32>
    %c = nn.conv(%x, %w) {CONV} : tensor<1x2x2x2xf32>
    %y = nn.batch_norm(%c, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    return(%y)
  }}
}}
"""
    out = check_pass(src, "canonicalize")
    assert "nn.batch_norm(%6, %1, %3, %4, %5)" in out


def test_bn_after_a_non_linear_op_stays():
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x3x3xf32>) {{
{BN_PARAMS}    %r = nn.relu(%x) : tensor<1x2x3x3xf32>
    %y = nn.batch_norm(%r, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x3x3xf32>
    return(%y)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        f"""module {{
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x3x3xf32>) {{
{bn_out(1)}    %5 = nn.relu(%0) : tensor<1x2x3x3xf32>
    %6 = nn.batch_norm(%5, %1, %2, %3, %4) {{epsilon = 0.0}} : tensor<1x2x3x3xf32>
    return(%6)
  }}
}}
""",
    )


GEMM_BN = f"""module {{
  func @main(%a: tensor<3x2xf32>) -> (tensor<3x2xf32>) {{
    %w = nn.constant() {{value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>}} : tensor<2x2xf32>
    %c = nn.constant() {{value = dense<[1.0, 1.0] : tensor<2xf32>>}} : tensor<2xf32>
{BN_PARAMS}    %g = nn.gemm(%a, %w, %c) {{alpha = 2.0, beta = 0.5, trans_a = false, trans_b = TB}} : tensor<3x2xf32>
    %y = nn.batch_norm(%g, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<3x2xf32>
    return(%y)
  }}
}}
"""


@pytest.mark.parametrize(
    "trans_b, weight",
    [("false", "[0.5, 8.0, 1.5, 16.0]"), ("true", "[0.5, 1.0, 12.0, 16.0]")],
)
def test_bn_folds_into_gemm(trans_b, weight):
    # B's columns (its rows when trans_b) scaled by a; C = beta * C * a + b, beta = 1.
    check_pass(
        GEMM_BN.replace("TB", trans_b),
        "canonicalize",
        f"""module {{
  func @main(%0: tensor<3x2xf32>) -> (tensor<3x2xf32>) {{
    %1 = nn.constant() {{value = dense<{weight} : tensor<2x2xf32>>}} : tensor<2x2xf32>
    %2 = nn.constant() {{value = dense<[0.25, 9.0] : tensor<2xf32>>}} : tensor<2xf32>
    %3 = nn.gemm(%0, %1, %2) {{alpha = 2.0, beta = 1.0, trans_a = false, trans_b = {trans_b}}} : tensor<3x2xf32>
    return(%3)
  }}
}}
""",
    )


def test_bn_folds_into_gemm_without_c():
    src = f"""module {{
  func @main(%a: tensor<2x3xf32>) -> (tensor<3x2xf32>) {{
    %w = nn.constant() {{value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>}} : tensor<2x2xf32>
{BN_PARAMS}    %g = nn.gemm(%a, %w) {{alpha = 1.0, beta = 0.0, trans_a = true, trans_b = false}} : tensor<3x2xf32>
    %y = nn.batch_norm(%g, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<3x2xf32>
    return(%y)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<2x3xf32>) -> (tensor<3x2xf32>) {
    %1 = nn.constant() {value = dense<[0.5, 8.0, 1.5, 16.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %2 = nn.constant() {value = dense<[0.0, 7.0] : tensor<2xf32>>} : tensor<2xf32>
    %3 = nn.gemm(%0, %1, %2) {alpha = 1.0, beta = 1.0, trans_a = true, trans_b = false} : tensor<3x2xf32>
    return(%3)
  }
}
""",
    )


def test_bn_not_folded_into_gemm_with_run_time_c():
    src = f"""module {{
  func @main(%a: tensor<3x2xf32>, %c: tensor<3x2xf32>) -> (tensor<3x2xf32>) {{
    %w = nn.constant() {{value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>}} : tensor<2x2xf32>
{BN_PARAMS}    %g = nn.gemm(%a, %w, %c) {{alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false}} : tensor<3x2xf32>
    %y = nn.batch_norm(%g, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<3x2xf32>
    return(%y)
  }}
}}
"""
    out = check_pass(src, "canonicalize")
    assert "nn.batch_norm(%7, %3, %4, %5, %6)" in out


def test_bn_folds_into_matmul_with_constant_weight():
    src = f"""module {{
  func @main(%a: tensor<3x2xf32>) -> (tensor<3x2xf32>) {{
    %w = nn.constant() {{value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>}} : tensor<2x2xf32>
{BN_PARAMS}    %g = nn.matmul(%a, %w) {{layer = "fc"}} : tensor<3x2xf32>
    %y = nn.batch_norm(%g, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<3x2xf32>
    return(%y)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<3x2xf32>) -> (tensor<3x2xf32>) {
    %1 = nn.constant() {value = dense<[0.5, 8.0, 1.5, 16.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %2 = nn.matmul(%0, %1) {layer = "fc"} : tensor<3x2xf32>
    %3 = nn.constant() {value = dense<[0.0, 7.0] : tensor<2xf32>>} : tensor<2xf32>
    %4 = nn.add(%2, %3) {layer = "fc"} : tensor<3x2xf32>
    return(%4)
  }
}
""",
    )


def test_bn_not_folded_into_matmul_of_two_activations():
    src = f"""module {{
  func @main(%a: tensor<3x2xf32>, %w: tensor<2x2xf32>) -> (tensor<3x2xf32>) {{
{BN_PARAMS}    %g = nn.matmul(%a, %w) : tensor<3x2xf32>
    %y = nn.batch_norm(%g, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<3x2xf32>
    return(%y)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        f"""module {{
  func @main(%0: tensor<3x2xf32>, %1: tensor<2x2xf32>) -> (tensor<3x2xf32>) {{
{bn_out(2)}    %6 = nn.matmul(%0, %1) : tensor<3x2xf32>
    %7 = nn.batch_norm(%6, %2, %3, %4, %5) {{epsilon = 0.0}} : tensor<3x2xf32>
    return(%7)
  }}
}}
""",
    )


def _dense(a: np.ndarray) -> str:
    flat = ", ".join(repr(float(v)) for v in a.reshape(-1))
    shape = "x".join(map(str, a.shape))
    return f"dense<[{flat}] : tensor<{shape}xf32>>"


@pytest.mark.parametrize("group", [1, 2, 4])
def test_bn_fold_preserves_semantics_with_random_parameters(group):
    rng = np.random.default_rng(group)
    w = rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32)
    cb = rng.standard_normal(4).astype(np.float32)
    s, b, m = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    v = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    consts = "".join(
        f"    %{n} = nn.constant() {{value = {_dense(a)}}} : tensor<{'x'.join(map(str, a.shape))}xf32>\n"
        for n, a in [("w", w), ("cb", cb), ("s", s), ("b", b), ("m", m), ("v", v)]
    )
    src = f"""module {{
  func @main(%x: tensor<2x4x5x5xf32>) -> (tensor<2x4x3x2xf32>) {{
{consts}    %c = nn.conv(%x, %w, %cb) {{dilations = [1, 1], group = {group}, pads = [1, 0, 1, 1], strides = [2, 2]}} : tensor<2x4x3x2xf32>
    %y = nn.batch_norm(%c, %s, %b, %m, %v) {{epsilon = 1e-05}} : tensor<2x4x3x2xf32>
    return(%y)
  }}
}}
"""
    out = check_pass(src, "canonicalize", rtol=1e-4, atol=1e-5)
    assert "nn.batch_norm" not in out and out.count("nn.conv(") == 1


# ----------------------------------------------------------------------------- folding


def test_constant_ops_fold_into_one_constant():
    src = """module {
  func @main(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>) {
    %a = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %t = nn.transpose(%a) {perm = [1, 0]} : tensor<2x3xf32>
    %one = nn.constant() {value = dense<[1.0] : tensor<1xf32>>} : tensor<1xf32>
    %u = nn.add(%t, %one) : tensor<2x3xf32>
    %r = nn.relu(%u) : tensor<2x3xf32>
    %y = nn.add(%x, %r) : tensor<2x3xf32>
    return(%y)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<2x3xf32>) -> (tensor<2x3xf32>) {
    %1 = nn.constant() {value = dense<[2.0, 4.0, 6.0, 3.0, 5.0, 7.0] : tensor<2x3xf32>>} : tensor<2x3xf32>
    %2 = nn.add(%0, %1) : tensor<2x3xf32>
    return(%2)
  }
}
""",
    )


BROADCAST = """module {
  func @main(%x: tensor<3x4xf32>) -> (tensor<3x4xf32>) {
    %a = nn.constant() {value = dense<[1.0, 2.0, 3.0] : tensor<3x1xf32>>} : tensor<3x1xf32>
    %b = nn.constant() {value = dense<[10.0, 20.0, 30.0, 40.0] : tensor<1x4xf32>>} : tensor<1x4xf32>
    %c = nn.add(%a, %b) : tensor<3x4xf32>
    %y = nn.add(%x, %c) : tensor<3x4xf32>
    return(%y)
  }
}
"""


def test_small_broadcast_folds():
    check_pass(
        BROADCAST,
        "canonicalize",
        """module {
  func @main(%0: tensor<3x4xf32>) -> (tensor<3x4xf32>) {
    %1 = nn.constant() {value = dense<[11.0, 21.0, 31.0, 41.0, 12.0, 22.0, 32.0, 42.0, 13.0, 23.0, 33.0, 43.0] : tensor<3x4xf32>>} : tensor<3x4xf32>
    %2 = nn.add(%0, %1) : tensor<3x4xf32>
    return(%2)
  }
}
""",
    )


def test_broadcast_beyond_fold_limit_is_not_folded():
    # 12 result elements > max(3 + 4 input elements, fold_limit = 8): stays an op.
    out = check_pass(BROADCAST, "canonicalize{fold_limit=8}")
    assert "%3 = nn.add(%1, %2) : tensor<3x4xf32>" in out
    # 12 <= 12: folds.
    assert "nn.add(%1, %2)" not in check_pass(BROADCAST, "canonicalize{fold_limit=12}")


def test_default_limit_keeps_large_broadcasts_as_ops():
    # [8, 1] + [1] folds (8 <= 9 elements); [8, 1] + [1, 200] would make 1600 > 1024: stays.
    row = ", ".join(f"{i}.0" for i in range(200))
    src = f"""module {{
  func @main(%x: tensor<8x200xf32>) -> (tensor<8x200xf32>) {{
    %z = nn.constant() {{value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0] : tensor<8x1xf32>>}} : tensor<8x1xf32>
    %h = nn.constant() {{value = dense<[0.5] : tensor<1xf32>>}} : tensor<1xf32>
    %a = nn.add(%z, %h) : tensor<8x1xf32>
    %r = nn.constant() {{value = dense<[{row}] : tensor<1x200xf32>>}} : tensor<1x200xf32>
    %c = nn.add(%a, %r) : tensor<8x200xf32>
    %y = nn.add(%x, %c) : tensor<8x200xf32>
    return(%y)
  }}
}}
"""
    out = check_pass(src, "canonicalize")
    assert "dense<[1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5] : tensor<8x1xf32>>" in out
    assert "%3 = nn.add(%1, %2) : tensor<8x200xf32>" in out
    assert "nn.add(%1, %2)" not in check_pass(src, "canonicalize{fold_limit=1600}")


def test_fold_to_a_scalar_keeps_rank_zero():
    src = """module {
  func @main(%x: tensor<3xf32>) -> (tensor<3xf32>) {
    %a = nn.constant() {value = dense<[1.0, 2.0, 3.5] : tensor<3xf32>>} : tensor<3xf32>
    %s = nn.reduce_sum(%a) {axes = [0], keepdims = false} : tensor<f32>
    %y = nn.mul(%x, %s) : tensor<3xf32>
    return(%y)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<3xf32>) -> (tensor<3xf32>) {
    %1 = nn.constant() {value = dense<[6.5] : tensor<f32>>} : tensor<f32>
    %2 = nn.mul(%0, %1) : tensor<3xf32>
    return(%2)
  }
}
""",
    )


def test_shape_of_static_value_folds_and_feeds_further_folding():
    src = """module {
  func @main(%x: tensor<2x3x4xf32>) -> (tensor<2xi64>, tensor<1xi64>, tensor<24xf32>) {
    %s = nn.shape(%x) {end = -1, start = 0} : tensor<2xi64>
    %i = nn.constant() {value = dense<[2] : tensor<1xi64>>} : tensor<1xi64>
    %t = nn.shape(%x) : tensor<3xi64>
    %g = nn.gather(%t, %i) {axis = 0} : tensor<1xi64>
    %f = nn.reshape(%x) {shape = [24]} : tensor<24xf32>
    return(%s, %g, %f)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<2x3x4xf32>) -> (tensor<2xi64>, tensor<1xi64>, tensor<24xf32>) {
    %1 = nn.constant() {value = dense<[2, 3] : tensor<2xi64>>} : tensor<2xi64>
    %2 = nn.constant() {value = dense<[4] : tensor<1xi64>>} : tensor<1xi64>
    %3 = nn.reshape(%0) {shape = [24]} : tensor<24xf32>
    return(%1, %2, %3)
  }
}
""",
    )


# ----------------------------------------------------------------------------- cleanups


def test_reshape_chains_merge_and_no_op_reshapes_go():
    src = """module {
  func @main(%x: tensor<2x3x4xf32>) -> (tensor<4x6xf32>, tensor<2x3x4xf32>, tensor<6x4xf32>) {
    %a = nn.reshape(%x) {shape = [6, 4]} : tensor<6x4xf32>
    %b = nn.reshape(%a) {shape = [24]} : tensor<24xf32>
    %c = nn.reshape(%b) {shape = [4, 6]} : tensor<4x6xf32>
    %d = nn.reshape(%x) {shape = [2, 3, 4]} : tensor<2x3x4xf32>
    %e = nn.relu(%d) : tensor<2x3x4xf32>
    %f = nn.reshape(%e) {shape = [6, 4]} : tensor<6x4xf32>
    %g = nn.reshape(%f) {shape = [2, 3, 4]} : tensor<2x3x4xf32>
    return(%c, %g, %a)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<2x3x4xf32>) -> (tensor<4x6xf32>, tensor<2x3x4xf32>, tensor<6x4xf32>) {
    %1 = nn.reshape(%0) {shape = [6, 4]} : tensor<6x4xf32>
    %2 = nn.reshape(%0) {shape = [4, 6]} : tensor<4x6xf32>
    %3 = nn.relu(%0) : tensor<2x3x4xf32>
    return(%2, %3, %1)
  }
}
""",
    )


def test_transpose_chains_compose_and_identity_permutations_go():
    src = """module {
  func @main(%x: tensor<2x3x4xf32>) -> (tensor<4x2x3xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>) {
    %a = nn.transpose(%x) {perm = [1, 2, 0]} : tensor<3x4x2xf32>
    %b = nn.transpose(%a) {perm = [1, 2, 0]} : tensor<4x2x3xf32>
    %c = nn.transpose(%b) {perm = [1, 2, 0]} : tensor<2x3x4xf32>
    %d = nn.transpose(%x) {perm = [0, 1, 2]} : tensor<2x3x4xf32>
    return(%b, %c, %d)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<2x3x4xf32>) -> (tensor<4x2x3xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>) {
    %1 = nn.transpose(%0) {perm = [2, 0, 1]} : tensor<4x2x3xf32>
    return(%1, %0, %0)
  }
}
""",
    )


def test_transpose_of_transpose_with_another_user_keeps_the_inner_one():
    src = """module {
  func @main(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<3x2xf32>) {
    %a = nn.transpose(%x) {perm = [1, 0]} : tensor<3x2xf32>
    %r = nn.relu(%a) : tensor<3x2xf32>
    %b = nn.transpose(%a) {perm = [1, 0]} : tensor<2x3xf32>
    return(%b, %r)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<3x2xf32>) {
    %1 = nn.transpose(%0) {perm = [1, 0]} : tensor<3x2xf32>
    %2 = nn.relu(%1) : tensor<3x2xf32>
    return(%0, %2)
  }
}
""",
    )


def test_dead_ops_are_removed():
    src = """module {
  func @main(%x: tensor<4xf32>) -> (tensor<4xf32>) {
    %a = nn.relu(%x) : tensor<4xf32>
    %b = nn.add(%a, %a) : tensor<4xf32>
    %c = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<4xf32>>} : tensor<4xf32>
    %y = nn.add(%x, %x) : tensor<4xf32>
    return(%y)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<4xf32>) -> (tensor<4xf32>) {
    %1 = nn.add(%0, %0) : tensor<4xf32>
    return(%1)
  }
}
""",
    )


def test_already_canonical_ir_is_unchanged_and_stage_kept():
    src = """module attributes {stage = "cim"} {
  func @main(%0: tensor<4xf32>) -> (tensor<4xf32>) {
    %1 = nn.relu(%0) : tensor<4xf32>
    return(%1)
  }
}
"""
    assert check_pass(src, "canonicalize", src) == src
    m = parse_module(src)
    Canonicalize().run(m, PassContext())
    assert to_text(m) == src


def test_identity_is_removed():
    src = """module {
  func @main(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
    %a = nn.identity(%x) : tensor<4xf32>
    %b = nn.relu(%a) : tensor<4xf32>
    %c = nn.identity(%b) : tensor<4xf32>
    %d = nn.identity(%c) : tensor<4xf32>
    return(%d, %a)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
    %1 = nn.relu(%0) : tensor<4xf32>
    return(%1, %0)
  }
}
""",
    )


def test_cast_to_own_dtype_is_removed_other_casts_stay():
    src = """module {
  func @main(%x: tensor<4xf32>) -> (tensor<4xi32>) {
    %a = nn.cast(%x) {to = "f32"} : tensor<4xf32>
    %b = nn.cast(%a) {to = "i32"} : tensor<4xi32>
    %c = nn.cast(%b) {to = "i32"} : tensor<4xi32>
    return(%c)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<4xf32>) -> (tensor<4xi32>) {
    %1 = nn.cast(%0) {to = "i32"} : tensor<4xi32>
    return(%1)
  }
}
""",
    )


def test_expand_to_own_shape_is_removed_other_expands_stay():
    src = """module {
  func @main(%x: tensor<2x1xf32>) -> (tensor<2x3xf32>) {
    %a = nn.expand(%x) {shape = [2, 1]} : tensor<2x1xf32>
    %b = nn.expand(%a) {shape = [2, 3]} : tensor<2x3xf32>
    return(%b)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<2x1xf32>) -> (tensor<2x3xf32>) {
    %1 = nn.expand(%0) {shape = [2, 3]} : tensor<2x3xf32>
    return(%1)
  }
}
""",
    )


def test_rewrites_reach_a_fixed_point():
    # Dropout (identity) between conv and BN: once it is gone, the BN folds; the reshape pair
    # and the transposes behind it collapse too.
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
{BN_PARAMS}    %c = nn.conv(%x, %w) {CONV} : tensor<1x2x2x2xf32>
    %d = nn.identity(%c) : tensor<1x2x2x2xf32>
    %y = nn.batch_norm(%d, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x2x2xf32>
    %f = nn.reshape(%y) {{shape = [8]}} : tensor<8xf32>
    %g = nn.reshape(%f) {{shape = [1, 2, 2, 2]}} : tensor<1x2x2x2xf32>
    %t = nn.transpose(%g) {{perm = [0, 2, 3, 1]}} : tensor<1x2x2x2xf32>
    %u = nn.transpose(%t) {{perm = [0, 3, 1, 2]}} : tensor<1x2x2x2xf32>
    return(%u)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        f"""module {{
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %1 = nn.constant() {{value = dense<[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, -4.0, -8.0, -12.0, -16.0, -20.0, -24.0, -28.0, -32.0] : tensor<2x2x2x2xf32>>}} : tensor<2x2x2x2xf32>
    %2 = nn.constant() {{value = dense<[0.0, 7.0] : tensor<2xf32>>}} : tensor<2xf32>
    %3 = nn.conv(%0, %1, %2) {CONV} : tensor<1x2x2x2xf32>
    return(%3)
  }}
}}
""",
    )


def test_per_channel_scale_and_shift_fold_into_conv():
    # Caffe2's "scale" layers: conv -> mul by [C, 1, 1] -> add [C, 1, 1] (constant on either side)
    src = f"""module {{
  func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %w = nn.constant() {{value = {W}}} : tensor<2x2x2x2xf32>
    %k = nn.constant() {{value = dense<[0.5, 4.0] : tensor<2x1x1xf32>>}} : tensor<2x1x1xf32>
    %h = nn.constant() {{value = dense<[0.0, 7.0] : tensor<2x1x1xf32>>}} : tensor<2x1x1xf32>
    %c = nn.conv(%x, %w) {CONV} : tensor<1x2x2x2xf32>
    %m = nn.mul(%k, %c) : tensor<1x2x2x2xf32>
    %a = nn.add(%m, %h) : tensor<1x2x2x2xf32>
    return(%a)
  }}
}}
"""
    check_pass(
        src,
        "canonicalize",
        f"""module {{
  func @main(%0: tensor<1x2x3x3xf32>) -> (tensor<1x2x2x2xf32>) {{
    %1 = nn.constant() {{value = dense<[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, -4.0, -8.0, -12.0, -16.0, -20.0, -24.0, -28.0, -32.0] : tensor<2x2x2x2xf32>>}} : tensor<2x2x2x2xf32>
    %2 = nn.constant() {{value = dense<[0.0, 7.0] : tensor<2xf32>>}} : tensor<2xf32>
    %3 = nn.conv(%0, %1, %2) {CONV} : tensor<1x2x2x2xf32>
    return(%3)
  }}
}}
""",
    )


def test_scalar_scale_folds_into_gemm_but_not_a_per_element_shift():
    src = """module {
  func @main(%a: tensor<3x2xf32>) -> (tensor<3x2xf32>) {
    %w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %k = nn.constant() {value = dense<[2.0] : tensor<f32>>} : tensor<f32>
    %h = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %g = nn.gemm(%a, %w) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false} : tensor<3x2xf32>
    %m = nn.mul(%g, %k) : tensor<3x2xf32>
    %y = nn.add(%m, %h) : tensor<3x2xf32>
    return(%y)
  }
}
"""
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<3x2xf32>) -> (tensor<3x2xf32>) {
    %1 = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>} : tensor<3x2xf32>
    %2 = nn.constant() {value = dense<[2.0, 4.0, 6.0, 8.0] : tensor<2x2xf32>>} : tensor<2x2xf32>
    %3 = nn.gemm(%0, %2) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false} : tensor<3x2xf32>
    %4 = nn.add(%3, %1) : tensor<3x2xf32>
    return(%4)
  }
}
""",
    )


def test_scale_and_shift_fold_into_a_batch_norm_that_stays():
    src = f"""module {{
  func @main(%x: tensor<1x2x3xf32>) -> (tensor<1x2x3xf32>) {{
{BN_PARAMS}    %k = nn.constant() {{value = dense<[2.0, -1.0] : tensor<2x1xf32>>}} : tensor<2x1xf32>
    %h = nn.constant() {{value = dense<[1.0, 1.0] : tensor<2x1xf32>>}} : tensor<2x1xf32>
    %r = nn.relu(%x) : tensor<1x2x3xf32>
    %y = nn.batch_norm(%r, %s, %b, %m, %v) {{epsilon = 0.0}} : tensor<1x2x3xf32>
    %p = nn.mul(%y, %k) : tensor<1x2x3xf32>
    %q = nn.add(%p, %h) : tensor<1x2x3xf32>
    return(%q)
  }}
}}
"""
    # scale * k = [2, -2]; bias * k + h = [2, 2]
    check_pass(
        src,
        "canonicalize",
        """module {
  func @main(%0: tensor<1x2x3xf32>) -> (tensor<1x2x3xf32>) {
    %1 = nn.constant() {value = dense<[1.0, -2.0] : tensor<2xf32>>} : tensor<2xf32>
    %2 = nn.constant() {value = dense<[4.0, 0.25] : tensor<2xf32>>} : tensor<2xf32>
    %3 = nn.relu(%0) : tensor<1x2x3xf32>
    %4 = nn.constant() {value = dense<[2.0, -2.0] : tensor<2xf32>>} : tensor<2xf32>
    %5 = nn.constant() {value = dense<[2.0, 2.0] : tensor<2xf32>>} : tensor<2xf32>
    %6 = nn.batch_norm(%3, %4, %5, %1, %2) {epsilon = 0.0} : tensor<1x2x3xf32>
    return(%6)
  }
}
""",
    )
