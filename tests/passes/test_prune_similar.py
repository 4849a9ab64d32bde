"""Pass "prune-similar": text in, text out on the five channel paths (conv -> relu -> pool -> conv,
conv -> flatten -> gemm, a residual block, a concat, a depthwise conv); exact compensation of
duplicated filters (outputs unchanged to 1e-5); the identity when nothing is pruned; a bounded
error when real filters go (check_pass's lossy mode); the channel rule table's completeness; the
choice of filters, the summary and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError, PassError
from cimc.ir import parse_module, to_text
from cimc.ir.interpreter import run
from cimc.ops.registry import all_ops
from cimc.passes import PassContext, run_pipeline
from cimc.passes.prune_channels import NO_OPERANDS, RULES, TERMINATORS, analyze
from cimc.targets import load_target
from cimc.testing import check_pass

CONV = "dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]"
POOL = ("ceil_mode = false, dilations = [1, 1], kernel_shape = [2, 2], pads = [0, 0, 0, 0], "
        "strides = [1, 1]")


def const(name: str, values) -> str:
    a = np.asarray(values, np.float32)
    t = "tensor<" + "x".join(map(str, a.shape)) + "xf32>"
    vals = ", ".join(repr(float(v)) for v in a.reshape(-1))
    return f"    %{name} = nn.constant() {{value = dense<[{vals}] : {t}>}} : {t}"


def module(arg: str, lines: list[str], out: str) -> str:
    body = "\n".join(line if line.startswith("    ") else "    " + line for line in lines)
    return (f'module attributes {{stage = "nn"}} {{\n  func @main(%x: tensor<{arg}xf32>) -> '
            f'(tensor<{out}xf32>) attributes {{input_names = ["x"], output_names = ["y"]}} {{\n'
            f"{body}\n  }}\n}}\n")


def calib_ctx(shape: tuple[int, ...], n: int = 8, **kw) -> PassContext:
    """Seeded standard-normal calibration inputs for the input ``x`` (compiled batch 1)."""
    x = np.random.default_rng(5).standard_normal((n, *shape[1:])).astype(np.float32)
    return PassContext(calib={"x": x}, **kw)


def ints(*shape: int, seed: int = 0) -> np.ndarray:
    """Small distinct weights that print exactly (quarters in [-2, 2])."""
    return np.random.default_rng(seed).integers(-8, 9, shape) / 4.0


# ----------------------------------------------------------------------------- the five paths


def chain_source() -> str:
    """conv (3 filters, #0 duplicates #2) -> relu -> max_pool -> conv."""
    w0 = ints(3, 1, 2, 2)
    w0[0] = w0[2]
    return module("1x1x4x4", [
        const("w0", w0), const("b0", [0.5, -0.25, 0.5]),
        const("w1", ints(2, 3, 2, 2, seed=1)), const("b1", [1.0, -1.0]),
        f"%c0 = nn.conv(%x, %w0, %b0) {{{CONV}}} : tensor<1x3x3x3xf32>",
        "%r0 = nn.relu(%c0) : tensor<1x3x3x3xf32>",
        f"%p0 = nn.max_pool(%r0) {{{POOL}}} : tensor<1x3x2x2xf32>",
        f"%y = nn.conv(%p0, %w1, %b1) {{{CONV}}} : tensor<1x2x1x1xf32>",
        "return(%y)",
    ], "1x2x1x1")


CHAIN_PRUNED = """module attributes {stage = "nn"} {
  func @main(%0: tensor<1x1x4x4xf32>) -> (tensor<1x2x1x1xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %1 = nn.constant() {value = dense<[1.0, -1.0] : tensor<2xf32>>} : tensor<2xf32>
    %2 = nn.constant() {value = dense<[-0.75, -2.0, -1.75, -2.0, -1.5, 1.25, 0.75, 1.75] : tensor<2x1x2x2xf32>>} : tensor<2x1x2x2xf32>
    %3 = nn.constant() {value = dense<[-0.25, 0.5] : tensor<2xf32>>} : tensor<2xf32>
    %4 = nn.conv(%0, %2, %3) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x3x3xf32>
    %5 = nn.relu(%4) : tensor<1x2x3x3xf32>
    %6 = nn.max_pool(%5) {ceil_mode = false, dilations = [1, 1], kernel_shape = [2, 2], pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    %7 = nn.constant() {value = dense<[-2.0, -1.5, 1.25, 2.0, -1.0, -0.75, 2.5, 1.75, 0.5, 0.25, -1.75, -2.0, 0.5, 2.5, 0.5, -0.25] : tensor<2x2x2x2xf32>>} : tensor<2x2x2x2xf32>
    %8 = nn.conv(%6, %7, %1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x1x1xf32>
    return(%8)
  }
}
"""


def test_conv_relu_pool_conv_drops_the_duplicate_and_folds_it_into_the_next_conv():
    src = chain_source()
    ctx = calib_ctx((1, 1, 4, 4))
    out = check_pass(src, "prune-similar{ratio=0.3}", CHAIN_PRUNED, ctx=ctx)
    assert "tensor<1x2x3x3xf32>" in out
    lay = {entry.name: entry for entry in ctx.pruning.layers}
    assert (lay["conv0"].filters_before, lay["conv0"].filters_after) == (3, 2)
    # conv0: 9 positions x 4 taps x 3 -> 2 filters; conv1: 4 taps x 3 -> 2 inputs x 2 filters
    assert (lay["conv0"].macs_before, lay["conv0"].macs_after) == (108, 72)
    assert (lay["conv1"].macs_before, lay["conv1"].macs_after) == (24, 16)
    assert ctx.pruning.macs_removed_fraction == pytest.approx(44 / 132)


def flatten_source() -> str:
    """conv (3 filters, #1 a scaled copy of #0: relu and pools commute with it) -> flatten ->
    gemm."""
    w0 = ints(3, 1, 2, 2, seed=2)
    w0[1] = 2 * w0[0]
    return module("1x1x3x3", [
        const("w0", w0), const("b0", [0.0, 0.0, 0.25]),
        const("wg", ints(12, 2, seed=3)), const("cg", [0.5, -0.5]),
        f"%c0 = nn.conv(%x, %w0, %b0) {{{CONV}}} : tensor<1x3x2x2xf32>",
        "%r0 = nn.relu(%c0) : tensor<1x3x2x2xf32>",
        "%f = nn.reshape(%r0) {shape = [1, 12]} : tensor<1x12xf32>",
        ("%y = nn.gemm(%f, %wg, %cg) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false}"
        " : tensor<1x2xf32>"),
        "return(%y)",
    ], "1x2")


FLATTEN_PRUNED = """module attributes {stage = "nn"} {
  func @main(%0: tensor<1x1x3x3xf32>) -> (tensor<1x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %1 = nn.constant() {value = dense<[0.5, -0.5] : tensor<2xf32>>} : tensor<2xf32>
    %2 = nn.constant() {value = dense<[3.0, -2.0, -3.5, -1.5, -0.75, 0.5, 1.25, 1.0] : tensor<2x1x2x2xf32>>} : tensor<2x1x2x2xf32>
    %3 = nn.constant() {value = dense<[0.0, 0.25] : tensor<2xf32>>} : tensor<2xf32>
    %4 = nn.conv(%0, %2, %3) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    %5 = nn.relu(%4) : tensor<1x2x2x2xf32>
    %6 = nn.reshape(%5) {shape = [1, 8]} : tensor<1x8xf32>
    %7 = nn.constant() {value = dense<[-1.375, -2.625, -1.375, -0.75, -0.125, 0.625, -0.25, -1.375, 0.75, 1.0, -2.0, -1.75, -0.25, -0.5, 1.75, 0.0] : tensor<8x2xf32>>} : tensor<8x2xf32>
    %8 = nn.gemm(%6, %7, %1) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = false} : tensor<1x2xf32>
    return(%8)
  }
}
"""


def test_conv_flatten_gemm_removes_a_block_of_features():
    out = check_pass(flatten_source(), "prune-similar{ratio=0.3,metric=cosine}", FLATTEN_PRUNED,
                     ctx=calib_ctx((1, 1, 3, 3)))
    assert "shape = [1, 8]" in out


def residual_source() -> str:
    """x -> conv_a (2 filters) -> add(conv_b(x), conv_a) -> relu -> conv_c: conv_a's and conv_b's
    channels meet in the add; channel 2 duplicates channel 0 in both."""
    wa, wb = ints(3, 2, 1, 1, seed=4), ints(3, 2, 1, 1, seed=5)
    wa[2], wb[2] = wa[0], wb[0]
    return module("1x2x2x2", [
        const("wa", wa), const("ba", [0.25, 0.0, 0.25]),
        const("wb", wb), const("bb", [0.5, -0.5, 0.5]),
        const("wc", ints(2, 3, 1, 1, seed=6)),
        f"%a = nn.conv(%x, %wa, %ba) {{{CONV}}} : tensor<1x3x2x2xf32>",
        f"%b = nn.conv(%x, %wb, %bb) {{{CONV}}} : tensor<1x3x2x2xf32>",
        "%s = nn.add(%b, %a) : tensor<1x3x2x2xf32>",
        "%r = nn.relu(%s) : tensor<1x3x2x2xf32>",
        f"%y = nn.conv(%r, %wc) {{{CONV}}} : tensor<1x2x2x2xf32>",
        "return(%y)",
    ], "1x2x2x2")


RESIDUAL_PRUNED = """module attributes {stage = "nn"} {
  func @main(%0: tensor<1x2x2x2xf32>) -> (tensor<1x2x2x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %1 = nn.constant() {value = dense<[1.5, 0.0, 1.0, 2.0] : tensor<2x2x1x1xf32>>} : tensor<2x2x1x1xf32>
    %2 = nn.constant() {value = dense<[0.0, 0.25] : tensor<2xf32>>} : tensor<2xf32>
    %3 = nn.conv(%0, %1, %2) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    %4 = nn.constant() {value = dense<[-2.0, 1.25, 0.75, 1.25] : tensor<2x2x1x1xf32>>} : tensor<2x2x1x1xf32>
    %5 = nn.constant() {value = dense<[-0.5, 0.5] : tensor<2xf32>>} : tensor<2xf32>
    %6 = nn.conv(%0, %4, %5) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    %7 = nn.add(%6, %3) : tensor<1x2x2x2xf32>
    %8 = nn.relu(%7) : tensor<1x2x2x2xf32>
    %9 = nn.constant() {value = dense<[0.25, -0.25, 2.0, -1.25] : tensor<2x2x1x1xf32>>} : tensor<2x2x1x1xf32>
    %10 = nn.conv(%8, %9) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    return(%10)
  }
}
"""


def test_residual_add_prunes_jointly_across_both_producers():
    ctx = calib_ctx((1, 2, 2, 2))
    check_pass(residual_source(), "prune-similar{ratio=0.2}", RESIDUAL_PRUNED, ctx=ctx)
    joint, output = ctx.pruning.groups
    assert joint.layers == ("conv0", "conv1") and joint.via == ("nn.add",)
    assert (joint.channels, joint.pruned, joint.status) == (3, 1, "pruned jointly")
    assert output.layers == ("conv2",) and output.status == "left alone: feeds the model output"


def concat_source() -> str:
    """conv_a (2 filters) and conv_b (3 filters, #2 duplicates #1) concatenated -> conv_c."""
    wb = ints(3, 1, 2, 2, seed=8)
    wb[2] = wb[1]
    return module("1x1x3x3", [
        const("wa", ints(2, 1, 2, 2, seed=7)), const("wb", wb),
        const("wc", ints(1, 5, 2, 2, seed=9)),
        f"%a = nn.conv(%x, %wa) {{{CONV}}} : tensor<1x2x2x2xf32>",
        f"%b = nn.conv(%x, %wb) {{{CONV}}} : tensor<1x3x2x2xf32>",
        "%cat = nn.concat(%a, %b) {axis = 1} : tensor<1x5x2x2xf32>",
        f"%y = nn.conv(%cat, %wc) {{{CONV}}} : tensor<1x1x1x1xf32>",
        "return(%y)",
    ], "1x1x1x1")


CONCAT_PRUNED = """module attributes {stage = "nn"} {
  func @main(%0: tensor<1x1x3x3xf32>) -> (tensor<1x1x1x1xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %1 = nn.constant() {value = dense<[2.0, 0.5, 0.75, 1.75, 0.25, 1.25, 1.5, -1.25] : tensor<2x1x2x2xf32>>} : tensor<2x1x2x2xf32>
    %2 = nn.conv(%0, %1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    %3 = nn.constant() {value = dense<[1.0, -0.75, -1.25, 2.0, -1.5, -0.75, 0.5, 1.25] : tensor<2x1x2x2xf32>>} : tensor<2x1x2x2xf32>
    %4 = nn.conv(%0, %3) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    %5 = nn.concat(%2, %4) {axis = 1} : tensor<1x4x2x2xf32>
    %6 = nn.constant() {value = dense<[-0.25, 1.5, 2.0, -1.0, -1.75, 0.5, 0.75, 1.25, 0.5, 1.0, 1.75, 1.75, -0.25, -0.5, 2.25, 1.5] : tensor<1x4x2x2xf32>>} : tensor<1x4x2x2xf32>
    %7 = nn.conv(%5, %6) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x1x1x1xf32>
    return(%7)
  }
}
"""


def test_concat_offsets_the_second_operands_channels():
    check_pass(concat_source(), "prune-similar{ratio=0.15,layers=conv1}", CONCAT_PRUNED,
               ctx=calib_ctx((1, 1, 3, 3)))


def depthwise_source() -> str:
    """conv (3 filters, #2 duplicates #0) -> depthwise conv (#2 duplicates #0) -> conv."""
    w0, wd = ints(3, 1, 1, 1, seed=10), ints(3, 1, 2, 2, seed=11)
    w0[2], wd[2] = w0[0], wd[0]
    return module("1x1x3x3", [
        const("w0", w0), const("wd", wd), const("bd", [0.25, -0.25, 0.25]),
        const("w2", ints(2, 3, 1, 1, seed=12)),
        f"%a = nn.conv(%x, %w0) {{{CONV}}} : tensor<1x3x3x3xf32>",
        ("%d = nn.conv(%a, %wd, %bd) {dilations = [1, 1], group = 3, pads = [0, 0, 0, 0], "
        "strides = [1, 1]} : tensor<1x3x2x2xf32>"),
        f"%y = nn.conv(%d, %w2) {{{CONV}}} : tensor<1x2x2x2xf32>",
        "return(%y)",
    ], "1x2x2x2")


DEPTHWISE_PRUNED = """module attributes {stage = "nn"} {
  func @main(%0: tensor<1x1x3x3xf32>) -> (tensor<1x2x2x2xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %1 = nn.constant() {value = dense<[2.0, 1.25] : tensor<2x1x1x1xf32>>} : tensor<2x1x1x1xf32>
    %2 = nn.conv(%0, %1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x3x3xf32>
    %3 = nn.constant() {value = dense<[0.5, 0.5, 1.0, -2.0, -1.5, -1.5, 1.25, 0.0] : tensor<2x1x2x2xf32>>} : tensor<2x1x2x2xf32>
    %4 = nn.constant() {value = dense<[-0.25, 0.25] : tensor<2xf32>>} : tensor<2xf32>
    %5 = nn.conv(%2, %3, %4) {dilations = [1, 1], group = 2, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    %6 = nn.constant() {value = dense<[-1.0, 2.5, -1.75, 0.75] : tensor<2x2x1x1xf32>>} : tensor<2x2x1x1xf32>
    %7 = nn.conv(%5, %6) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x2x2x2xf32>
    return(%7)
  }
}
"""


def test_depthwise_conv_loses_the_group_of_its_pruned_input_channel():
    ctx = calib_ctx((1, 1, 3, 3))
    check_pass(depthwise_source(), "prune-similar{ratio=0.3}", DEPTHWISE_PRUNED, ctx=ctx)
    lay = {entry.name: entry for entry in ctx.pruning.layers}
    assert (lay["conv1"].filters_before, lay["conv1"].filters_after) == (3, 2)
    joint = ctx.pruning.groups[0]
    assert joint.layers == ("conv0", "conv1") and joint.via == ("depthwise conv",)
    assert (joint.channels, joint.pruned, joint.status) == (3, 1, "pruned jointly")


# ----------------------------------------------------------------------------- identity, lossy


def test_nothing_to_prune_is_the_identity():
    src = chain_source()
    canonical = to_text(parse_module(src), inline_limit=1 << 30)
    ctx = PassContext()
    # c = 1: the rule marks nothing (a filter cannot be close to more than N - 1 others)
    check_pass(src, "prune-similar{c=1}", canonical, ctx=ctx)
    assert ctx.pruning.macs_removed_fraction == 0.0


def mlp_source(hidden: int = 12, seed: int = 20) -> str:
    """x [1, 6] -> gemm (hidden) -> relu -> gemm (hidden) -> relu -> gemm (3)."""
    rng = np.random.default_rng(seed)
    w = [rng.standard_normal(s) * 0.5 for s in ((hidden, 6), (hidden, hidden), (3, hidden))]
    return module("1x6", [
        const("w0", w[0]), const("w1", w[1]), const("w2", w[2]),
        const("c0", rng.standard_normal(hidden) * 0.1),
        ("%g0 = nn.gemm(%x, %w0, %c0) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = true}"
        f" : tensor<1x{hidden}xf32>"),
        f"%r0 = nn.relu(%g0) : tensor<1x{hidden}xf32>",
        ("%g1 = nn.gemm(%r0, %w1) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = true}"
        f" : tensor<1x{hidden}xf32>"),
        f"%r1 = nn.relu(%g1) : tensor<1x{hidden}xf32>",
        ("%y = nn.gemm(%r1, %w2) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = true}"
        " : tensor<1x3xf32>"),
        "return(%y)",
    ], "1x3")


def test_lossy_pruning_keeps_a_bounded_error_and_fails_the_exact_check():
    src = mlp_source()
    ctx = calib_ctx((1, 6), n=64)
    out = check_pass(src, "prune-similar{ratio=0.3,metric=l2}", lossy=0.5, ctx=ctx)
    assert ctx.pruning.macs_removed_fraction >= 0.3
    assert "tensor<1x12xf32>" not in out.split("return")[0].split("nn.gemm")[1]
    with pytest.raises(AssertionError):
        check_pass(src, "prune-similar{ratio=0.3,metric=l2}", ctx=calib_ctx((1, 6), n=64))


def test_compensation_shrinks_the_error_of_plain_removal():
    def error(spec: str) -> float:
        before, after = parse_module(mlp_source()), parse_module(mlp_source())
        run_pipeline(after, spec, calib_ctx((1, 6), n=256))
        errs = []
        for i in range(64):
            xi = np.random.default_rng(i).standard_normal((1, 6)).astype(np.float32)
            errs.append(np.abs(run(after, {"x": xi})["y"] - run(before, {"x": xi})["y"]).max())
        return float(np.mean(errs))

    plain = error("prune-similar{ratio=0.4,compensate=false}")
    fitted = error("prune-similar{ratio=0.4,partners=1}")
    every = error("prune-similar{ratio=0.4}")  # partners=0, the default
    assert every < fitted < 0.8 * plain


# ----------------------------------------------------------------------------- rule table


def test_every_registered_op_has_a_channel_rule():
    names = set(all_ops())
    handled = set(RULES) | set(NO_OPERANDS) | set(TERMINATORS)
    assert names <= handled, f"ops without a channel rule: {sorted(names - handled)}"
    assert handled <= names, f"rules for unknown ops: {sorted(handled - names)}"


def fixed_reasons(src: str) -> set[str]:
    an = analyze(parse_module(src).main)
    return {an.channels.reason[an.channels.find(c)] for p in an.producers.values()
            for c in p.chans if an.channels.fixed(c)}


def test_a_softmax_over_the_channels_stops_them_and_says_so():
    src = module("1x6", [
        const("w", ints(4, 6)),
        ("%g = nn.gemm(%x, %w) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = true}"
        " : tensor<1x4xf32>"),
        "%y = nn.softmax(%g) {axis = 1} : tensor<1x4xf32>",
        "return(%y)",
    ], "1x4")
    assert fixed_reasons(src) == {"nn.softmax at <string>:5:10 normalises over the channel axis"}
    with pytest.raises(PassError, match="no layer can be pruned: gemm0: nn.softmax"):
        run_pipeline(parse_module(src), "prune-similar{ratio=0.1}")


def test_grouped_conv_is_left_alone_and_reported():
    src = module("1x1x3x3", [
        const("w0", ints(4, 1, 1, 1)), const("wg", ints(4, 2, 1, 1, seed=1)),
        const("w1", ints(2, 4, 1, 1, seed=2)),
        f"%a = nn.conv(%x, %w0) {{{CONV}}} : tensor<1x4x3x3xf32>",
        ("%g = nn.conv(%a, %wg) {dilations = [1, 1], group = 2, pads = [0, 0, 0, 0], "
        "strides = [1, 1]} : tensor<1x4x3x3xf32>"),
        f"%y = nn.conv(%g, %w1) {{{CONV}}} : tensor<1x2x3x3xf32>",
        "return(%y)",
    ], "1x2x3x3")
    assert fixed_reasons(src) == {("grouped conv (group=2) at <string>:7:10: its groups would "
                                  "lose different channels"), "feeds the model output"}


# ----------------------------------------------------------------------------- choosing


def test_all_zero_filters_go_and_their_constant_output_moves_into_a_matmul_bias():
    """A gemm filter of zeros outputs relu(bias), a constant: the matmul after it gets an add."""
    w0 = ints(4, 6)
    w0[1] = 0.0
    src = module("1x6", [
        const("w0", w0), const("c0", [0.5, 0.75, -0.25, 0.25]), const("w1", ints(4, 3, seed=3)),
        ("%g = nn.gemm(%x, %w0, %c0) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = true}"
        " : tensor<1x4xf32>"),
        "%r = nn.relu(%g) : tensor<1x4xf32>",
        "%y = nn.matmul(%r, %w1) : tensor<1x3xf32>",
        "return(%y)",
    ], "1x3")
    ctx = calib_ctx((1, 6))
    out = check_pass(src, "prune-similar{c=1}", ctx=ctx)
    assert "tensor<3x3xf32>" in out and "nn.add" in out
    assert [lay.filters_after for lay in ctx.pruning.layers] == [3, 3]


def test_the_rule_prunes_what_similarity_mask_marks():
    from cimc.pruning import similarity_mask

    src = mlp_source(hidden=16)
    ctx = calib_ctx((1, 6))
    run_pipeline(parse_module(src), "prune-similar{metric=l2}", ctx)
    w0 = parse_module(src).main.body.ops[0].attrs["value"]
    w1 = parse_module(src).main.body.ops[1].attrs["value"]
    kept = [lay.filters_after for lay in ctx.pruning.layers]
    assert kept[:2] == [int(similarity_mask(w0, "l2").sum()), int(similarity_mask(w1, "l2").sum())]
    assert kept[2] == 3  # the output layer stays


def test_ratio_counts_macs_and_of_two_duplicates_prunes_one():
    w = ints(6, 6, seed=4)
    w[3] = w[0]
    src = module("1x6", [
        const("w0", w), const("w1", ints(2, 6, seed=5)),
        ("%g = nn.gemm(%x, %w0) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = true}"
        " : tensor<1x6xf32>"),
        ("%y = nn.gemm(%g, %w1) {alpha = 1.0, beta = 1.0, trans_a = false, trans_b = true}"
        " : tensor<1x2xf32>"),
        "return(%y)",
    ], "1x2")
    ctx = calib_ctx((1, 6))
    check_pass(src, "prune-similar{ratio=0.1}", ctx=ctx)  # exact: the duplicate folds back
    assert [lay.filters_after for lay in ctx.pruning.layers] == [5, 2]
    assert ctx.pruning.macs_before == 48 and ctx.pruning.macs_after == 40


def test_summary_counts_crossbars_with_the_tilers_rule():
    ctx = calib_ctx((1, 6), target=load_target("pcm40"))
    run_pipeline(parse_module(mlp_source()), "prune-similar{ratio=0.3}", ctx)
    d = ctx.pruning.to_dict()
    assert d["crossbars_before"] == 3 and d["crossbars_saved"] == 0  # each fits one crossbar
    assert set(d) >= {"macs_removed_fraction", "crossbars_saved", "layers", "groups", "spec"}
    assert d["spec"] == "prune-similar{ratio=0.3}"


@pytest.mark.parametrize("spec,message", [
    ("prune-similar{layers=conv7}", "layers='conv7' matches no layer; the layers are gemm0"),
    ("prune-similar{ratio=1.5}", "ratio=1.5 must be in [0, 1)"),
    ("prune-similar{ratio=0.3,c=0.2}", "give either ratio or c/b"),
    ("prune-similar{metric=jaccard}", "metric 'jaccard' is not one of hamming, l2, cosine"),
    ("prune-similar{partners=3}", "partners=3 must be 1"),
    ("prune-similar{ratio=0.99}", "ratio=0.99 cannot be reached: at most 96.0%"),
])
def test_bad_options_are_clear_errors(spec, message):
    with pytest.raises(CimcError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        run_pipeline(parse_module(mlp_source()), spec, calib_ctx((1, 6)))


def test_runs_only_before_lowering():
    m = parse_module(mlp_source())
    run_pipeline(m, "lower-to-mvm")
    with pytest.raises(PassError, match="run it before lower-to-mvm"):
        run_pipeline(m, "prune-similar{ratio=0.3}")
