"""cimc.targets.batching: is dimension 0 a batch axis the runtime may vary and split?

Every rule is checked on small IR texts with both outcomes. Each text module the analysis calls
batchable (with a batch of 2 or more) is also run by the interpreter to check that the samples
really are independent: changing sample 0 of the inputs leaves the other samples of every output
alone. Then the real thing: ONNX models whose dimension 0 is no batch, two light models and the
MNIST example through the compile pipeline.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from light_models import light_model

from cimc.compiler import compile as compile_model
from cimc.frontend.onnx import import_onnx
from cimc.ir import parse_module
from cimc.ir.core import Module
from cimc.ir.interpreter import run
from cimc.ops.registry import all_ops
from cimc.ir.verify import verify
from cimc.passes import PassContext, run_pipeline
from cimc.passes.pipelines import LOWERING, MAPPING
from cimc.targets import load_target
from cimc.targets.batching import (
    NO_OPERANDS,
    RULES,
    TERMINATORS,
    analyze_batch,
    batch_size,
)
from cimc.testing import one_node_model

MNIST = Path(__file__).resolve().parents[3] / "examples" / "mnist" / "model.onnx"

# ----------------------------------------------------------------------------- helpers


def const(name: str, shape: str, dtype: str = "f32") -> str:
    """An nn.constant line ``%name`` of type ``tensor<{shape}x{dtype}>`` with distinct values."""
    dims = [int(d) for d in shape.split("x")] if shape else []
    n = math.prod(dims)
    if dtype.startswith("f"):
        vals = ", ".join(f"{0.25 + 0.5 * i:.2f}" for i in range(n))
    else:
        vals = ", ".join(str(i % 2) for i in range(n))
    t = f"tensor<{shape}x{dtype}>" if shape else f"tensor<{dtype}>"
    return f"%{name} = nn.constant() {{value = dense<[{vals}] : {t}>}} : {t}"


def ir(args: str, lines: list[str], outs: str, stage: str | None = None) -> Module:
    """A verified module: ``func @main(args) -> (outs)`` with the given body lines (the last is
    the return)."""
    attrs = f" attributes {{stage = {stage!r}}}".replace("'", '"') if stage else ""
    body = "\n".join(f"    {line}" for line in lines)
    text = f"module{attrs} {{\n  func @main({args}) -> ({outs}) {{\n{body}\n  }}\n}}\n"
    module = parse_module(text)
    verify(module)
    return module


def samples_independent(module: Module, seed: int = 0) -> bool:
    """Changing sample 0 of every input leaves samples 1.. of every output unchanged."""
    rng = np.random.default_rng(seed)
    func = module.main
    feeds = {}
    for name, a in zip(func.input_names, func.args):
        if a.type.dtype.startswith("f"):
            feeds[name] = rng.standard_normal(a.type.shape).astype(a.type.np_dtype)
        else:
            feeds[name] = rng.integers(0, 2, a.type.shape).astype(a.type.np_dtype)
    changed = {}
    for name, x in feeds.items():
        y = x.copy()
        y[0] = y[0] + 1 if y.dtype.kind == "f" else 1 - y[0]
        changed[name] = y
    before, after = run(module, feeds), run(module, changed)
    return all(np.array_equal(before[k][1:], after[k][1:], equal_nan=True) for k in before)


def batchable(module: Module) -> int | None:
    n = batch_size(module.main)
    if n is not None and n >= 2:
        assert samples_independent(module), "analysis says batchable, but the samples mix"
    return n


def test_the_independence_check_sees_mixing():
    mixing = ir("%x: tensor<3x4xf32>", ["%y = nn.softmax(%x) {axis = 0} : tensor<3x4xf32>",
                                        "return(%y)"], "tensor<3x4xf32>")
    assert not samples_independent(mixing)
    per_row = ir("%x: tensor<3x4xf32>", ["%y = nn.softmax(%x) {axis = 1} : tensor<3x4xf32>",
                                         "return(%y)"], "tensor<3x4xf32>")
    assert samples_independent(per_row)


def why(module: Module) -> str:
    analysis = analyze_batch(module.main)
    assert analysis.size is None and analysis.batched == frozenset()
    return analysis.reason


# ----------------------------------------------------------------------------- the op table


def test_every_registered_op_has_a_rule():
    names = set(all_ops())
    handled = set(RULES) | set(NO_OPERANDS) | set(TERMINATORS)
    assert names <= handled, f"ops without a batching rule: {sorted(names - handled)}"
    assert handled <= names, f"rules for unknown ops: {sorted(handled - names)}"


# ----------------------------------------------------------------------------- inputs, outputs


def test_plain_batch_and_batched_values():
    m = ir("%x: tensor<3x4xf32>", ["%y = nn.relu(%x) : tensor<3x4xf32>", "return(%y)"],
           "tensor<3x4xf32>")
    assert batchable(m) == 3
    analysis = analyze_batch(m.main)
    assert analysis.size == 3 and analysis.reason == ""
    assert analysis.batched == {m.main.args[0], m.main.outputs[0]}


def test_model_without_inputs():
    m = ir("", [const("c", "2x2"), "return(%c)"], "tensor<2x2xf32>")
    assert "no inputs" in why(m)


def test_zero_d_input():
    m = ir("%x: tensor<f32>", ["%y = nn.relu(%x) : tensor<f32>", "return(%y)"], "tensor<f32>")
    assert "0-d" in why(m)


def test_inputs_with_different_dimension_0():
    m = ir("%a: tensor<3x4xf32>, %b: tensor<4x5xf32>",
           ["%y = nn.matmul(%a, %b) : tensor<3x5xf32>", "return(%y)"], "tensor<3x5xf32>")
    assert "does not share dimension 0" in why(m)


def test_output_without_the_batch():
    m = ir("%x: tensor<3x4xf32>", [const("c", "3x4"), "return(%x, %c)"],
           "tensor<3x4xf32>, tensor<3x4xf32>")
    assert "output 'output1'" in why(m)


def test_0d_output():
    m = ir("%x: tensor<3x4xf32>",
           ["%y = nn.reduce_sum(%x) {axes = [0, 1], keepdims = false} : tensor<f32>",
            "return(%y)"], "tensor<f32>")
    assert why(m)


def test_ops_that_read_no_batched_value_give_constants():
    m = ir("%x: tensor<3x4xf32>",
           [const("c", "4"), "%d = nn.neg(%c) : tensor<4xf32>",
            "%y = nn.add(%x, %d) : tensor<3x4xf32>", "return(%y)"], "tensor<3x4xf32>")
    assert batchable(m) == 3
    assert m.main.body.ops[1].result not in analyze_batch(m.main).batched


def test_unknown_op_reading_the_batch():
    text = (
        "module {\n  func @main(%x: tensor<3x4xf32>) -> (tensor<3x4xf32>) {\n"
        "    %y = test.op(%x) : tensor<3x4xf32>\n    return(%y)\n  }\n}\n"
    )
    assert "no batching rule" in why(parse_module(text))


def test_op_with_a_region_reading_the_batch():
    text = (
        "module {\n  func @main(%x: tensor<3x4xf32>) -> (tensor<3x4xf32>) {\n"
        "    %y = nn.identity(%x) : tensor<3x4xf32>\n"
        "    %z = test.loop() ({\n    ^bb(%i: tensor<3x4xf32>):\n"
        "      %w = nn.add(%i, %y) : tensor<3x4xf32>\n      yield(%w)\n    }) : tensor<3x4xf32>\n"
        "    return(%z)\n  }\n}\n"
    )
    assert "regions" in why(parse_module(text))


# ----------------------------------------------------------------------------- elementwise

ELEMENTWISE_OK = [
    ("3x4", "4"), ("3x4", "1x4"), ("3x4", ""), ("3x1x4", "5x1"),
]


@pytest.mark.parametrize("xs,cs", ELEMENTWISE_OK)
@pytest.mark.parametrize("op", ["nn.add", "nn.sub", "nn.mul", "nn.div", "nn.pow"])
def test_broadcasting_a_constant_without_batch_axis(op, xs, cs):
    out = "3x5x4" if cs == "5x1" else xs
    m = ir(f"%x: tensor<{xs}xf32>",
           [const("c", cs), f"%y = {op}(%x, %c) : tensor<{out}xf32>", "return(%y)"],
           f"tensor<{out}xf32>")
    assert batchable(m) == 3


def test_constant_operand_with_the_batch_dimension():
    m = ir("%x: tensor<3x4xf32>",
           [const("c", "3x4"), "%y = nn.add(%x, %c) : tensor<3x4xf32>", "return(%y)"],
           "tensor<3x4xf32>")
    assert "carries no batch" in why(m)


def test_batched_operand_broadcast_into_a_higher_rank():
    # x [3] is the batch, but it is added along the last axis of a [2, 3] result
    m = ir("%x: tensor<3xf32>",
           [const("c", "2x3"), "%y = nn.mul(%x, %c) : tensor<2x3xf32>", "return(%y)"],
           "tensor<2x3xf32>")
    assert why(m)


def test_two_batched_operands():
    m = ir("%a: tensor<2x4xf32>, %b: tensor<2x4xf32>",
           ["%y = nn.sub(%a, %b) : tensor<2x4xf32>", "return(%y)"], "tensor<2x4xf32>")
    assert batchable(m) == 2
    m = ir("%a: tensor<2x4xf32>, %b: tensor<2x1xf32>",
           ["%y = nn.add(%a, %b) : tensor<2x4xf32>", "return(%y)"], "tensor<2x4xf32>")
    assert batchable(m) == 2
    # b [2] broadcasts along a's last axis: sample i of a meets every sample of b
    m = ir("%a: tensor<2x2xf32>, %b: tensor<2xf32>",
           ["%y = nn.add(%a, %b) : tensor<2x2xf32>", "return(%y)"], "tensor<2x2xf32>")
    assert why(m)


@pytest.mark.parametrize("line", [
    "%y = nn.relu(%x) : tensor<2x4xf32>",
    "%y = nn.leaky_relu(%x) {alpha = 0.1} : tensor<2x4xf32>",
    "%y = nn.sigmoid(%x) : tensor<2x4xf32>",
    "%y = nn.tanh(%x) : tensor<2x4xf32>",
    "%y = nn.hard_sigmoid(%x) {alpha = 0.2, beta = 0.5} : tensor<2x4xf32>",
    "%y = nn.hard_swish(%x) : tensor<2x4xf32>",
    "%y = nn.clip(%x) {max = 1.0, min = -1.0} : tensor<2x4xf32>",
    "%y = nn.erf(%x) : tensor<2x4xf32>",
    '%y = nn.gelu(%x) {approximate = "none"} : tensor<2x4xf32>',
    "%y = nn.exp(%x) : tensor<2x4xf32>",
    "%y = nn.neg(%x) : tensor<2x4xf32>",
    '%y = nn.cast(%x) {to = "f64"} : tensor<2x4xf64>',
    "%y = nn.identity(%x) : tensor<2x4xf32>",
])
def test_unary_ops(line):
    out = line.rsplit(": ", 1)[1]
    m = ir("%x: tensor<2x4xf32>", [line, "return(%y)"], out)
    assert batchable(m) == 2


def test_sqrt_and_prelu():
    m = ir("%x: tensor<2x4xf32>",
           ["%a = nn.mul(%x, %x) : tensor<2x4xf32>", "%y = nn.sqrt(%a) : tensor<2x4xf32>",
            const("s", "4"), "%z = nn.prelu(%y, %s) : tensor<2x4xf32>", "return(%z)"],
           "tensor<2x4xf32>")
    assert batchable(m) == 2
    # a slope per sample is a constant tied to the compiled batch
    m = ir("%x: tensor<2x4xf32>",
           [const("s", "2x4"), "%z = nn.prelu(%x, %s) : tensor<2x4xf32>", "return(%z)"],
           "tensor<2x4xf32>")
    assert why(m)


def test_transfer():
    m = ir("%x: tensor<2x4xf32>",
           ["%y = cim.transfer(%x) {from = 0, to = 1} : tensor<2x4xf32>", "return(%y)"],
           "tensor<2x4xf32>", stage="cim")
    assert batchable(m) == 2


# ----------------------------------------------------------------------------- per sample

CONV = "dilations = [1, 1], group = 1, pads = [1, 1, 1, 1], strides = [1, 1]"


def test_conv_with_constant_weights():
    m = ir("%x: tensor<2x3x4x4xf32>",
           [const("w", "2x3x3x3"), const("b", "2"),
            f"%y = nn.conv(%x, %w, %b) {{{CONV}}} : tensor<2x2x4x4xf32>", "return(%y)"],
           "tensor<2x2x4x4xf32>")
    assert batchable(m) == 2


def test_conv_with_a_weight_input():
    m = ir("%x: tensor<2x3x4x4xf32>, %w: tensor<2x3x3x3xf32>",
           [f"%y = nn.conv(%x, %w) {{{CONV}}} : tensor<2x2x4x4xf32>", "return(%y)"],
           "tensor<2x2x4x4xf32>")
    assert "parameter operand #1" in why(m)


def test_conv_transpose():
    attrs = "dilations = [1], group = 1, output_padding = [0], pads = [0, 0], strides = [2]"
    m = ir("%x: tensor<2x3x4xf32>",
           [const("w", "3x2x2"), f"%y = nn.conv_transpose(%x, %w) {{{attrs}}} : tensor<2x2x8xf32>",
            "return(%y)"], "tensor<2x2x8xf32>")
    assert batchable(m) == 2


@pytest.mark.parametrize("line,out", [
    (("%y = nn.max_pool(%x) {ceil_mode = false, dilations = [1, 1], kernel_shape = [2, 2], "
     "pads = [0, 0, 0, 0], strides = [2, 2]}"), "2x3x2x2"),
    (("%y = nn.avg_pool(%x) {ceil_mode = false, count_include_pad = false, kernel_shape = [2, 2], "
     "pads = [1, 1, 1, 1], strides = [2, 2]}"), "2x3x3x3"),
    ("%y = nn.global_avg_pool(%x)", "2x3x1x1"),
    ("%y = nn.global_max_pool(%x)", "2x3x1x1"),
    ("%y = nn.lrn(%x) {alpha = 0.0001, beta = 0.75, bias = 1.0, size = 3}", "2x3x4x4"),
])
def test_pools_and_lrn(line, out):
    m = ir("%x: tensor<2x3x4x4xf32>", [f"{line} : tensor<{out}xf32>", "return(%y)"],
           f"tensor<{out}xf32>")
    assert batchable(m) == 2


def test_batch_norm():
    params = [const(n, "3") for n in ("s", "b", "m")]
    m = ir("%x: tensor<2x3x4xf32>",
           [*params, const("v", "3"),
            "%y = nn.batch_norm(%x, %s, %b, %m, %v) {epsilon = 1e-05} : tensor<2x3x4xf32>",
            "return(%y)"], "tensor<2x3x4xf32>")
    assert batchable(m) == 2
    # a parameter fed as an input (it happens to have 3 = N entries)
    m = ir("%x: tensor<3x3x4xf32>, %s: tensor<3xf32>",
           [*params[1:], const("v", "3"),
            "%y = nn.batch_norm(%x, %s, %b, %m, %v) {epsilon = 1e-05} : tensor<3x3x4xf32>",
            "return(%y)"], "tensor<3x3x4xf32>")
    assert why(m)


def test_im2col_and_mvm():
    m = ir("%x: tensor<2x3x4x4xf32>",
           [("%p = cim.im2col(%x) {dilations = [1, 1], kernel_shape = [3, 3], pads = [0, 0, 0, 0], "
            "strides = [1, 1]} : tensor<2x2x2x27xf32>"),
            const("w", "27x5"), "%y = cim.mvm(%p, %w) : tensor<2x2x2x5xf32>", "return(%y)"],
           "tensor<2x2x2x5xf32>", stage="cim")
    assert batchable(m) == 2


def test_mvm_over_the_batch_axis():
    # a 1-D input: its only axis is the one the crossbar contracts
    m = ir("%x: tensor<4xf32>",
           [const("w", "4x2"), "%y = cim.mvm(%x, %w) : tensor<2xf32>", "return(%y)"],
           "tensor<2xf32>", stage="cim")
    assert "rank < 2" in why(m)


def test_xbar_mvm():
    levels = "dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0] : tensor<3x2xf32>>"
    attrs = (f"adc_bits = 0, adc_range = 0.0, dac_bits = 0, dac_range = 0.0, levels = {levels}, "
             "scale = dense<[1.0, 0.5] : tensor<2xf32>>, tile = [0, 0]")
    m = ir("%x: tensor<2x3xf32>", [f"%y = cim.xbar_mvm(%x) {{{attrs}}} : tensor<2x2xf32>",
                                   "return(%y)"], "tensor<2x2xf32>", stage="cim")
    assert batchable(m) == 2
    m = ir("%x: tensor<3xf32>", [f"%y = cim.xbar_mvm(%x) {{{attrs}}} : tensor<2xf32>",
                                 "return(%y)"], "tensor<2xf32>", stage="cim")
    assert why(m)


RESIZE = 'coordinate_transformation_mode = "asymmetric", mode = "nearest"'


def test_resize():
    m = ir("%x: tensor<2x1x2x2xf32>",
           [(f"%y = nn.resize(%x) {{{RESIZE}, scales = [1.0, 1.0, 2.0, 2.0], sizes = [2, 1, 4, 4]}}"
            " : tensor<2x1x4x4xf32>"), "return(%y)"], "tensor<2x1x4x4xf32>")
    assert batchable(m) == 2
    m = ir("%x: tensor<2x1x2x2xf32>",
           [(f"%y = nn.resize(%x) {{{RESIZE}, scales = [2.0, 1.0, 1.0, 1.0], sizes = [4, 1, 2, 2]}}"
            " : tensor<4x1x2x2xf32>"), "return(%y)"], "tensor<4x1x2x2xf32>")
    assert "batch axis" in why(m)


# ----------------------------------------------------------------------------- gemm, matmul

GEMM = "alpha = 1.0, beta = 1.0, trans_a = false, trans_b = {tb}"


def test_gemm_rows_are_samples():
    m = ir("%a: tensor<3x4xf32>",
           [const("b", "5x4"), const("c", "5"),
            f"%y = nn.gemm(%a, %b, %c) {{{GEMM.format(tb='true')}}} : tensor<3x5xf32>",
            "return(%y)"], "tensor<3x5xf32>")
    assert batchable(m) == 3
    m = ir("%a: tensor<3x4xf32>, %c: tensor<3x5xf32>",
           [const("b", "4x5"),
            f"%y = nn.gemm(%a, %b, %c) {{{GEMM.format(tb='false')}}} : tensor<3x5xf32>",
            "return(%y)"], "tensor<3x5xf32>")
    assert batchable(m) == 3


def test_gemm_mixing_the_samples():
    m = ir("%a: tensor<3x4xf32>",
           [const("b", "3x5"),
            ("%y = nn.gemm(%a, %b) {alpha = 1.0, beta = 1.0, trans_a = true, trans_b = false}"
            " : tensor<4x5xf32>"), "return(%y)"], "tensor<4x5xf32>")
    assert "trans_a" in why(m)
    m = ir("%a: tensor<4x4xf32>, %b: tensor<4x4xf32>",
           [f"%y = nn.gemm(%a, %b) {{{GEMM.format(tb='false')}}} : tensor<4x4xf32>",
            "return(%y)"], "tensor<4x4xf32>")
    assert "in B" in why(m)
    m = ir("%a: tensor<3x4xf32>",
           [const("b", "4x5"), const("c", "3x5"),
            f"%y = nn.gemm(%a, %b, %c) {{{GEMM.format(tb='false')}}} : tensor<3x5xf32>",
            "return(%y)"], "tensor<3x5xf32>")
    assert "C tensor<3x5xf32>" in why(m)


@pytest.mark.parametrize("args,consts,out", [
    ("%a: tensor<3x4xf32>", [const("b", "4x5")], "3x5"),
    ("%a: tensor<3x4xf32>", [const("b", "4")], "3"),
    ("%a: tensor<2x3x4xf32>", [const("b", "4x5")], "2x3x5"),
    ("%a: tensor<2x3x4xf32>", [const("b", "1x4x5")], "2x3x5"),
    ("%a: tensor<2x3x4xf32>, %b: tensor<2x4x5xf32>", [], "2x3x5"),
    ("%b: tensor<2x4x5xf32>", [const("a", "3x4")], "2x3x5"),
    ("%b: tensor<2x4x5xf32>", [const("a", "4")], "2x5"),
])
def test_matmul_per_sample(args, consts, out):
    m = ir(args, [*consts, f"%y = nn.matmul(%a, %b) : tensor<{out}xf32>", "return(%y)"],
           f"tensor<{out}xf32>")
    assert batchable(m) == int(out.split("x")[0])


@pytest.mark.parametrize("args,consts,out", [
    ("%a: tensor<4x4xf32>, %b: tensor<4x4xf32>", [], "4x4"),  # [4,4] x [4,4], both inputs
    ("%a: tensor<4xf32>", [const("b", "4x5")], "5"),  # the batch is contracted
    ("%b: tensor<4x5xf32>", [const("a", "3x4")], "3x5"),  # B's rows are contracted
    ("%a: tensor<2x4xf32>", [const("b", "3x4x5")], "3x2x5"),  # B adds a leading axis
    ("%a: tensor<2x3x4xf32>", [const("b", "2x4x5")], "2x3x5"),  # B per sample, constant
    ("%a: tensor<4x3x4xf32>, %b: tensor<4x5xf32>", [], "4x3x5"),  # b's batch is contracted
])
def test_matmul_mixing_the_samples(args, consts, out):
    m = ir(args, [*consts, f"%y = nn.matmul(%a, %b) : tensor<{out}xf32>", "return(%y)"],
           f"tensor<{out}xf32>")
    assert "nn.matmul" in why(m)


# ----------------------------------------------------------------------------- axis ops


@pytest.mark.parametrize("op", ["nn.softmax", "nn.log_softmax"])
def test_softmax(op):
    for axis in (1, -1):
        m = ir("%x: tensor<3x4xf32>", [f"%y = {op}(%x) {{axis = {axis}}} : tensor<3x4xf32>",
                                       "return(%y)"], "tensor<3x4xf32>")
        assert batchable(m) == 3
    for axis in (0, -2):
        m = ir("%x: tensor<3x4xf32>", [f"%y = {op}(%x) {{axis = {axis}}} : tensor<3x4xf32>",
                                       "return(%y)"], "tensor<3x4xf32>")
        assert "over the batch axis" in why(m)


def test_layer_norm():
    m = ir("%x: tensor<3x4xf32>",
           [const("s", "4"), const("b", "4"),
            "%y = nn.layer_norm(%x, %s, %b) {axis = -1, epsilon = 1e-05} : tensor<3x4xf32>",
            "return(%y)"], "tensor<3x4xf32>")
    assert batchable(m) == 3
    m = ir("%x: tensor<3x4xf32>",
           [const("s", "3x4"),
            "%y = nn.layer_norm(%x, %s) {axis = 0, epsilon = 1e-05} : tensor<3x4xf32>",
            "return(%y)"], "tensor<3x4xf32>")
    assert "over the batch axis" in why(m)


@pytest.mark.parametrize("op", ["nn.reduce_sum", "nn.reduce_mean"])
def test_reductions(op):
    for axes, keep, out in (([1], "false", "3"), ([-1], "true", "3x1"), ([], "true", "3x4")):
        m = ir("%x: tensor<3x4xf32>",
               [f"%y = {op}(%x) {{axes = {axes}, keepdims = {keep}}} : tensor<{out}xf32>",
                "return(%y)"], f"tensor<{out}xf32>")
        assert batchable(m) == 3
    for axes, keep, out in (([0], "true", "1x4"), ([-2], "false", "4"), ([0, 1], "true", "1x1")):
        m = ir("%x: tensor<3x4xf32>",
               [f"%y = {op}(%x) {{axes = {axes}, keepdims = {keep}}} : tensor<{out}xf32>",
                "return(%y)"], f"tensor<{out}xf32>")
        assert "reduces over the batch axis" in why(m)


def test_concat():
    m = ir("%a: tensor<2x3xf32>, %b: tensor<2x1xf32>",
           ["%y = nn.concat(%a, %b) {axis = 1} : tensor<2x4xf32>", "return(%y)"],
           "tensor<2x4xf32>")
    assert batchable(m) == 2
    m = ir("%a: tensor<2x3xf32>, %b: tensor<2x3xf32>",
           ["%y = nn.concat(%a, %b) {axis = 0} : tensor<4x3xf32>", "return(%y)"],
           "tensor<4x3xf32>")
    assert "along the batch axis" in why(m)
    m = ir("%a: tensor<2x3xf32>",
           [const("c", "2x1"), "%y = nn.concat(%a, %c) {axis = -1} : tensor<2x4xf32>",
            "return(%y)"], "tensor<2x4xf32>")
    assert "carries none" in why(m)


def test_split():
    m = ir("%x: tensor<2x4xf32>",
           ["%a, %b = nn.split(%x) {axis = 1, sizes = [1, 3]} : tensor<2x1xf32>, tensor<2x3xf32>",
            "return(%a, %b)"], "tensor<2x1xf32>, tensor<2x3xf32>")
    assert batchable(m) == 2
    m = ir("%x: tensor<2x4xf32>",
           ["%a, %b = nn.split(%x) {axis = 0, sizes = [1, 1]} : tensor<1x4xf32>, tensor<1x4xf32>",
            "return(%a, %b)"], "tensor<1x4xf32>, tensor<1x4xf32>")
    assert "cuts the batch axis" in why(m)


def test_slice():
    def sliced(starts, ends, axes, out):
        return ir("%x: tensor<3x4xf32>",
                  [(f"%y = nn.slice(%x) {{axes = {axes}, ends = {ends}, starts = {starts}, "
                   f"steps = [1]}} : tensor<{out}xf32>"), "return(%y)"], f"tensor<{out}xf32>")

    assert batchable(sliced([1], [3], [1], "3x2")) == 3
    assert batchable(sliced([0], [9223372036854775807], [0], "3x4")) == 3  # all of axis 0
    assert "cuts the batch axis" in why(sliced([1], [3], [0], "2x4"))
    assert "cuts the batch axis" in why(sliced([0], [3], [-2], "3x4"))  # ends at the compiled N


def test_gather():
    m = ir("%x: tensor<2x5xf32>",
           [const("i", "3", "i64"), "%y = nn.gather(%x, %i) {axis = 1} : tensor<2x3xf32>",
            "return(%y)"], "tensor<2x3xf32>")
    assert batchable(m) == 2
    m = ir("%x: tensor<2x5xf32>",
           [const("i", "1", "i64"), "%y = nn.gather(%x, %i) {axis = 0} : tensor<1x5xf32>",
            "return(%y)"], "tensor<1x5xf32>")
    assert "mixes the samples" in why(m)
    # an embedding lookup: batched indices into a constant table
    m = ir("%i: tensor<2x3xi64>",
           [const("t", "4x5"), "%y = nn.gather(%t, %i) {axis = 0} : tensor<2x3x5xf32>",
            "return(%y)"], "tensor<2x3x5xf32>")
    assert batchable(m) == 2
    m = ir("%i: tensor<2xi64>",
           [const("t", "4x5"), "%y = nn.gather(%t, %i) {axis = 1} : tensor<4x2xf32>",
            "return(%y)"], "tensor<4x2xf32>")
    assert why(m)


def test_transpose():
    m = ir("%x: tensor<2x3x4xf32>",
           ["%y = nn.transpose(%x) {perm = [0, 2, 1]} : tensor<2x4x3xf32>", "return(%y)"],
           "tensor<2x4x3xf32>")
    assert batchable(m) == 2
    m = ir("%x: tensor<2x3xf32>",
           ["%y = nn.transpose(%x) {perm = [1, 0]} : tensor<3x2xf32>", "return(%y)"],
           "tensor<3x2xf32>")
    assert "moves the batch axis" in why(m)


@pytest.mark.parametrize("shape,out", [([2, 2, 3], "2x2x3"), ([2, 6], "2x6")])
def test_reshape_keeping_the_batch(shape, out):
    m = ir("%x: tensor<2x3x2xf32>",
           [f"%y = nn.reshape(%x) {{shape = {shape}}} : tensor<{out}xf32>", "return(%y)"],
           f"tensor<{out}xf32>")
    assert batchable(m) == 2


@pytest.mark.parametrize("shape,out", [([12], "12"), ([1, 12], "1x12"), ([6, 2], "6x2")])
def test_reshape_across_the_batch(shape, out):
    m = ir("%x: tensor<2x3x2xf32>",
           [f"%y = nn.reshape(%x) {{shape = {shape}}} : tensor<{out}xf32>", "return(%y)"],
           f"tensor<{out}xf32>")
    assert "does not keep dimension 0" in why(m)


def test_pad():
    m = ir("%x: tensor<2x3xf32>",
           ["%y = nn.pad(%x) {pads = [0, 1, 0, 2]} : tensor<2x6xf32>", "return(%y)"],
           "tensor<2x6xf32>")
    assert batchable(m) == 2
    m = ir("%x: tensor<2x3xf32>",
           ["%y = nn.pad(%x) {pads = [0, 0, 1, 0]} : tensor<3x3xf32>", "return(%y)"],
           "tensor<3x3xf32>")
    assert "pads the batch axis" in why(m)


def test_shape():
    # the shape without dimension 0 does not depend on the batch
    m = ir("%x: tensor<2x3x4xf32>",
           ["%s = nn.shape(%x) {start = 1} : tensor<2xi64>", "return(%x)"], "tensor<2x3x4xf32>")
    assert batchable(m) == 2
    assert m.main.body.ops[0].result not in analyze_batch(m.main).batched
    m = ir("%x: tensor<2x3x4xf32>",
           ["%s = nn.shape(%x) {end = 1} : tensor<1xi64>", "return(%x)"], "tensor<2x3x4xf32>")
    assert "reads the batch size" in why(m)


# ----------------------------------------------------------------------------- ONNX models


def _onnx(op_type, inputs, **kw):
    return batch_size(import_onnx(one_node_model(op_type, inputs, **kw)).main)


def test_onnx_models_without_a_batch_axis():
    f32 = np.float32
    assert _onnx("MatMul", {"a": np.zeros((3, 4), f32), "b": np.zeros((4, 5), f32)}) is None
    assert _onnx("MatMul", {"a": np.zeros((4, 4), f32), "b": np.zeros((4, 4), f32)}) is None
    assert _onnx("Flatten", {"x": np.zeros((3, 4), f32)}, axis=0) is None
    assert _onnx("ReduceSum", {"x": np.zeros((3, 4), f32)},
                 initializers={"axes": np.array([0])}) is None
    assert _onnx("Relu", {"x": np.zeros((), f32)}) is None
    assert _onnx("Softmax", {"x": np.zeros((3, 4), f32)}, axis=0) is None


def test_onnx_models_with_a_batch_axis():
    f32 = np.float32
    assert _onnx("Flatten", {"x": np.zeros((3, 4, 2), f32)}, axis=1) == 3
    assert _onnx("Softmax", {"x": np.zeros((3, 4), f32)}, axis=1) == 3
    assert _onnx("MatMul", {"a": np.zeros((3, 4), f32)},
                 initializers={"b": np.ones((4, 5), f32)}) == 3


# ----------------------------------------------------------------------------- compiled models


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet"])
def test_light_models_compiled_for_ideal_are_batchable(name):
    module = import_onnx(light_model(name))
    assert batch_size(module.main) == 1
    run_pipeline(module, LOWERING)
    run_pipeline(module, MAPPING, PassContext(target=load_target("ideal")))
    analysis = analyze_batch(module.main)
    assert analysis.size == 1, analysis.reason
    # every op result that depends on the input carries the batch
    assert {op.name for op in module.walk() for r in op.results if r in analysis.batched} >= {
        "cim.im2col", "cim.xbar_mvm", "cim.transfer", "nn.concat", "nn.relu",
    }


@pytest.mark.parametrize("batch", [1, 4])
def test_mnist_example_is_batchable(batch):
    result = compile_model(MNIST, "ideal", None, input_shapes={"input": (batch, 1, 28, 28)})
    assert batch_size(result.module.main) == batch
