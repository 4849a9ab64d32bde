"""The onnx package's backend test cases, run against cimc through ``cimc.backend.CimcBackend``.

Each selected case is compiled for the ``ideal`` target into an artifact, loaded by the runtime
and executed (the emitted core programs), and its outputs are compared with the case's reference
outputs. Selected: the node tests of every op cimc has a converter for (``NODE_PATTERNS``, one
entry per converter op; a test below keeps that table in step with the converter registry),
node tests of ONNX functions whose expanded bodies use only such ops, and the pytorch-converted
and pytorch-operator models made of such ops.

``EXCLUDE`` lists cases that test features cimc does not have, each with its reason; the
compiler refuses them with a clear error (or the runtime refuses their inputs by design).
"""

from __future__ import annotations

import re
import warnings

import onnx
import onnx.backend.test
import pytest

from cimc.backend import CimcBackend
from cimc.frontend.onnx.registry import all_converters

# --------------------------------------------------------------------------- selection

# ONNX op -> pattern of its node tests (the onnx package's names; "_expanded" variants, which
# test an op's function body instead of the op, are left out below).
NODE_PATTERNS: dict[str, str] = {
    "Add": r"^test_add_",
    "And": r"^test_and(\d|_bcast)",
    "AveragePool": r"^test_averagepool_",
    "BatchNormalization": r"^test_batchnorm_",
    "Cast": r"^test_cast_",
    "Clip": r"^test_clip_",
    "Concat": r"^test_concat_",
    "Constant": r"^test_constant_cpu$",
    "ConstantOfShape": r"^test_constantofshape_",
    "Conv": r"^test_(basic_conv|conv_with)_",
    "ConvTranspose": r"^test_convtranspose_",
    "Div": r"^test_div_",
    "Dropout": r"^test_(training_)?dropout_",
    "Equal": r"^test_equal_",
    "Erf": r"^test_erf_",
    "Exp": r"^test_exp_(example_)?cpu$",
    "Expand": r"^test_expand_",
    "Flatten": r"^test_flatten_",
    "GRU": r"^test_gru_",
    "Gather": r"^test_gather_(\d|2d_indices|negative_indices)",
    "Gelu": r"^test_gelu_",
    "Gemm": r"^test_gemm_",
    "GlobalAveragePool": r"^test_globalaveragepool_",
    "GlobalMaxPool": r"^test_globalmaxpool_",
    "Greater": r"^test_greater_(bcast_|cpu|u?int)",
    "GreaterOrEqual": r"^test_greater_equal_",
    "HardSigmoid": r"^test_hardsigmoid_",
    "HardSwish": r"^test_hardswish_",
    "Identity": r"^test_identity_",
    "LRN": r"^test_lrn_",
    "LSTM": r"^test_lstm_",
    "LayerNormalization": r"^test_layer_normalization_",
    "LeakyRelu": r"^test_leakyrelu_",
    "Less": r"^test_less_(bcast_|cpu|u?int)",
    "LessOrEqual": r"^test_less_equal_",
    "LogSoftmax": r"^test_logsoftmax_",
    "MatMul": r"^test_matmul_",
    "Max": r"^test_max_",
    "MaxPool": r"^test_maxpool_",
    "Min": r"^test_min_",
    "Mul": r"^test_mul_",
    "Neg": r"^test_neg_",
    "Not": r"^test_not_",
    "Or": r"^test_or(\d|_bcast)",
    "PRelu": r"^test_prelu_",
    "Pad": r"^test_(constant|edge|reflect|wrap)_pad_",
    "Pow": r"^test_pow_",
    "Range": r"^test_range_",
    "Reciprocal": r"^test_reciprocal_",
    "ReduceMax": r"^test_reduce_max_",
    "ReduceMean": r"^test_reduce_mean_",
    "ReduceMin": r"^test_reduce_min_",
    "ReduceSum": r"^test_reduce_sum_(?!square)",
    "Relu": r"^test_relu_cpu$",
    "Reshape": r"^test_reshape_",
    "Resize": r"^test_resize_",
    "Shape": r"^test_shape_",
    "Sigmoid": r"^test_sigmoid_",
    "Slice": r"^test_slice_",
    "Softmax": r"^test_softmax_",
    "Split": r"^test_split_(?!to_sequence)",
    "Sqrt": r"^test_sqrt_",
    "Squeeze": r"^test_squeeze_",
    "Sub": r"^test_sub_",
    "Sum": r"^test_sum_",
    "Tile": r"^test_tile",
    "Tanh": r"^test_tanh_",
    "Transpose": r"^test_transpose_",
    "Unsqueeze": r"^test_unsqueeze_",
    "Where": r"^test_where_",
    "Xor": r"^test_xor(\d|_bcast)",
}

# Node tests of ONNX functions without a converter whose expanded bodies use only supported ops.
EXPANDED_PATTERNS = [
    r"^test_(depthtospace|spacetodepth)_\w*expanded_",
    r"^test_mvn_expanded",
    r"^test_group_normalization_\w+_expanded_",
    r"^test_rotary_embedding_\w*expanded_",
]

# pytorch-converted / pytorch-operator models (and the onnx "simple" relu model) of supported ops.
MODEL_PATTERNS = [
    r"^test_(AvgPool|BatchNorm|Conv|ConvTranspose|Embedding|GLU|LeakyReLU|Linear|LogSoftmax)",
    r"^test_(MaxPool|PReLU|PixelShuffle|PoissonNLLLLoss|ReLU|Sigmoid|Softmax|Softmin|Tanh)",
    r"^test_(Constant|Reflection|Replication|Zero)Pad2d_",
    r"^test_(log_)?softmax_(functional_dim3|dim3|lastdim)_",
    r"^test_operator_(add|addconstant|addmm|basic|chunk|clip|concat2|conv|convtranspose|exp)_",
    r"^test_operator_(flatten|index|max|maxpool|min|mm|non_float_params|pad|params|permute2)_",
    r"^test_operator_(pow|repeat)_",
    r"^test_operator_(reduced_mean|reduced_sum|sqrt|symbolic_override_nested|view)",
    r"^test_single_relu_model_",
]

# Cases that test what cimc does not support (pattern, reason). The compiler refuses each with
# an error naming the node and what to change; the runtime refuses non-finite inputs by design.
EXCLUDE: list[tuple[str, str]] = [
    (r"^test_training_dropout", "training mode: cimc compiles for inference"),
    (r"^test_batchnorm_\w+_training_mode", "training mode: cimc compiles for inference"),
    (r"^test_cast_\w*(BFLOAT16|FLOAT8|FLOAT4|INT4|UINT4|INT2|UINT2|STRING)",
     "dtype outside cimc's IR (f32 f64 f16 i64 i32 i16 i8 u8 i1)"),
    (r"^test_cast_(FLOAT|FLOAT16|DOUBLE)_to_(FLOAT|FLOAT16|DOUBLE)_",
     "inputs hold NaN/Inf, which the runtime refuses by design (issue 3)"),
    (r"^test_(add|sub|mul|div)_uint(16|32|64)_", "uint16/32/64 are not IR dtypes"),
    (r"^test_pow_types_float32_uint(32|64)_", "uint32/64 are not IR dtypes"),
    (r"^test_(equal|greater|less|max|min)_\w*uint(16|32|64)_", "uint16/32/64 are not IR dtypes"),
    (r"^test_equal_string", "string tensors are not supported"),
    (r"^test_expand_", "the target shape is a run-time input (needed at compile time)"),
    (r"^test_range_", "start, limit and delta are run-time inputs (needed at compile time)"),
    (r"^test_tile", "the repeats are a run-time input (needed at compile time)"),
    (r"^test_lstm_with_peepholes_",
     "sequence_lens is a run-time input (cimc runs every sample over the whole sequence)"),
    (r"^test_identity_(sequence|opt)_", "sequence and optional types are not supported"),
    (r"^test_maxpool_with_argmax_", "the Indices output of MaxPool is refused"),
    (r"^test_clip_(example|inbounds|outbounds|splitbounds|min_greater_than_max)_",
     "Clip min/max given as run-time inputs (cimc needs them at compile time)"),
    (r"^test_clip_(cpu|default_(int8_)?(min|max)_)",
     "Clip min/max given as run-time inputs (cimc needs them at compile time)"),
    (r"^test_constantofshape_", "the shape is a run-time input (needed at compile time)"),
    (r"^test_(constant|edge|reflect|wrap)_pad_",
     "pads/constant_value are run-time inputs (needed at compile time)"),
    (r"^test_reduce_(mean|sum|max|min)_\w*(keepdims|noop|bool_inputs)",
     "opset-18 axes given as a run-time input (needed at compile time)"),
    (r"^test_reshape_(?!allowzero)", "the target shape is a run-time input (needed at compile time)"),
    (r"^test_resize_", "scales/sizes are run-time inputs (needed at compile time)"),
    (r"^test_slice_", "starts/ends/axes/steps are run-time inputs (needed at compile time)"),
    (r"^test_split_variable_parts_\w+_opset(13|18)_",
     "split sizes are a run-time input (needed at compile time)"),
    (r"^test_(un)?squeeze_", "axes are a run-time input (needed at compile time)"),
    (r"^test_(reduce_(sum|max|min)_empty_set|split_zero_size_splits|reshape_allowzero)",
     "empty (zero-size) tensors are not supported"),
    (r"^test_PReLU_\dd_multiparam_",
     "opset-6 PRelu with a per-channel slope has no defined broadcasting; refused"),
    (r"^test_operator_add_size1_(singleton_)?broadcast_",
     "opset < 7 broadcast=1 with axis alignment numpy cannot express; refused"),
]

# Cases the compiler handles but the runtime (cimc/runtime) cannot run yet (pattern, cause).
# --------------------------------------------------------------------------- the cases


class Selection:
    """A ``BackendTest`` of ``backend`` with the patterns applied; ``cases`` is its
    ``test_cases`` without the thousands of cases never selected (they would all be reported as
    skipped), so what pytest collects is the selection, excluded cases skipped with their pattern.
    """

    def __init__(self, backend: type, include: list[str]) -> None:
        with warnings.catch_warnings():  # the onnx package's case generators overflow on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            bt = onnx.backend.test.BackendTest(backend, __name__)
        for pattern in include:
            bt.include(pattern)
        for pattern, _reason in EXCLUDE:
            bt.exclude(pattern)
        self.selected: set[str] = set()
        self.excluded: set[str] = set()
        self.cases: dict[str, type] = {}
        for name, case in bt.test_cases.items():
            for attr in [a for a in vars(case) if a.startswith("test_")]:
                if attr.endswith("_cuda") or not any(re.search(p, attr) for p in include):
                    delattr(case, attr)
                    continue
                self.selected.add(attr)
                if any(re.search(p, attr) for p, _ in EXCLUDE):
                    self.excluded.add(attr)
            if any(a.startswith("test_") for a in vars(case)):
                self.cases[name] = case

    @property
    def executed(self) -> set[str]:
        return self.selected - self.excluded


# The node tests of an op's expanded function body (`..._expanded`) test other ops.
_OWN = [r"^(?!.*expanded)" + p.removeprefix("^") for p in NODE_PATTERNS.values()]
CIMC = Selection(CimcBackend, [*_OWN, *EXPANDED_PATTERNS, *MODEL_PATTERNS])
globals().update(CIMC.cases)


# --------------------------------------------------------------------------- the selection itself


def test_every_converter_op_has_a_node_test_pattern() -> None:
    assert sorted(NODE_PATTERNS) == sorted(all_converters())


@pytest.mark.parametrize("op", sorted(NODE_PATTERNS))
def test_node_pattern_selects_cases(op: str) -> None:
    assert any(re.search(NODE_PATTERNS[op], n) for n in CIMC.selected), op


@pytest.mark.parametrize("pattern", [*EXPANDED_PATTERNS, *MODEL_PATTERNS])
def test_other_pattern_selects_cases(pattern: str) -> None:
    assert any(re.search(pattern, n) for n in CIMC.selected), pattern


@pytest.mark.parametrize("pattern", [p for p, _ in EXCLUDE])
def test_exclusion_patterns_are_not_stale(pattern: str) -> None:
    assert any(re.search(pattern, n) for n in CIMC.selected), pattern
