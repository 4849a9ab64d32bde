"""Elementwise arithmetic, activations, casts and constants.

Converters write every attribute of the nn op explicitly (ONNX defaults resolved here). Operands
that ONNX allows to be tensors but cimc needs as attributes (Clip's min/max from opset 11, Dropout's
training_mode, ConstantOfShape's shape) must be known at compile time.
"""

from __future__ import annotations

import numpy as np
import onnx

from cimc.errors import CimcError
from cimc.frontend.onnx.dtypes import ONNX_DTYPES
from cimc.frontend.onnx.registry import converter, register_for
from cimc.ir.types import DTYPES, TensorType, dtype_name

# Clip-6's attribute defaults: numeric_limits<float>::lowest() / max().
_FLT_MAX = float(np.finfo(np.float32).max)

# ----------------------------------------------------------------------------- helpers


def _onnx_type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"#{elem_type}"


def _supported_onnx_types() -> str:
    return ", ".join(_onnx_type_name(t) for t in ONNX_DTYPES)


def _binary(ctx, node, nn_name: str):
    return ctx.emit1(nn_name, [ctx.input(node, 0), ctx.input(node, 1)])


def _legacy_broadcast_ok(a: tuple[int, ...], b: tuple[int, ...], axis: int | None) -> bool:
    """Whether opset < 7 broadcasting of B into A (B a contiguous run of A's dims starting at
    ``axis``, suffix when unset, or a one-element B) is numpy broadcasting too."""
    if int(np.prod(b, dtype=np.int64)) == 1 and len(b) <= len(a):
        return True
    if len(b) > len(a) or tuple(a[len(a) - len(b) :]) != tuple(b):
        return False
    return axis is None or axis in (len(a) - len(b), len(a) - len(b) - len(a))


def _legacy_binary(ctx, node, attrs, nn_name: str):
    """Opset < 7 binary ops: without ``broadcast`` the shapes must match; with it, only the
    forms that mean the same as numpy broadcasting are accepted."""
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    sa, sb = a.type.shape, b.type.shape
    if not attrs.get("broadcast", 0):
        if sa != sb:
            raise ctx.error(
                f"inputs of shapes {list(sa)} and {list(sb)} need broadcasting, which this opset "
                f"(< 7) allows only with broadcast=1; fix the model or re-export it at opset >= 7"
            )
    elif not _legacy_broadcast_ok(sa, sb, attrs.get("axis")):
        raise ctx.error(
            f"legacy broadcasting (opset < 7, broadcast=1, axis={attrs.get('axis')}) of shape "
            f"{list(sb)} into {list(sa)} is not supported: it aligns B at an axis that numpy "
            f"broadcasting cannot express; re-export the model at opset >= 7"
        )
    return [ctx.emit1(nn_name, [a, b])]


def _float_attr(ctx, node, i: int, what: str, dtype: np.dtype) -> float | None:
    """Optional input ``i`` (a one-element compile-time constant) as a float; None if absent."""
    if ctx.input(node, i) is None:
        return None
    value = ctx.const(node, i)
    if value is None:
        raise ctx.error(
            f"input #{i} ({what}) is computed at run time; cimc needs it at compile time. Make "
            f"it a constant (an initializer or a Constant node)"
        )
    value = np.asarray(value)
    if value.size != 1:
        raise ctx.error(f"input #{i} ({what}) must hold one value, got shape {list(value.shape)}")
    scalar = value.reshape(-1)[0]
    result = float(scalar)
    if np.dtype(dtype).kind in "iu" and int(scalar) != result:
        raise ctx.error(
            f"input #{i} ({what}) = {int(scalar)} cannot be represented exactly as a float "
            f"attribute; use a bound of magnitude below 2**53"
        )
    return result


def _ir_dtype(ctx, elem_type: int | str, what: str) -> str:
    """An ONNX elem type (an int, or a name as Cast-1's string ``to``) as an IR dtype name."""
    if isinstance(elem_type, str):
        try:
            elem_type = onnx.TensorProto.DataType.Value(elem_type.upper())
        except ValueError:
            raise ctx.error(f"{what}: unknown ONNX data type {elem_type!r}") from None
    if elem_type not in ONNX_DTYPES:
        raise ctx.error(
            f"{what}: data type {_onnx_type_name(elem_type)} is not supported by cimc; "
            f"supported: {_supported_onnx_types()}"
        )
    return ONNX_DTYPES[elem_type]


def _constant(ctx, array: np.ndarray):
    """An nn.constant of exactly ``array``'s shape. (Not ``ctx.constant``: ``Builder.constant``
    passes the value through ``np.ascontiguousarray``, which turns a 0-d array into shape (1,).)"""
    value = np.array(array, order="C", copy=True)
    return ctx.emit1("nn.constant", [], {"value": value})


def _check_array(ctx, array: np.ndarray, what: str) -> np.ndarray:
    try:
        dtype_name(array.dtype)
    except CimcError:
        raise ctx.error(
            f"{what} has data type {array.dtype}, which cimc does not support; supported: "
            f"{_supported_onnx_types()}"
        ) from None
    return array


# ----------------------------------------------------------------------------- binary arithmetic


def _modern_binary(ctx, node, attrs, nn_name: str):
    return [_binary(ctx, node, nn_name)]


def _register_binary(op_type: str, nn_name: str) -> None:
    register_for(op_type, 1, f"{nn_name} (opset < 7: equal shapes, or broadcast=1 forms that "
                 "match numpy broadcasting)", _legacy_binary, nn_name)
    register_for(op_type, 7, f"{nn_name} (numpy broadcasting)", _modern_binary, nn_name)


_register_binary("Add", "nn.add")
_register_binary("Sub", "nn.sub")
_register_binary("Mul", "nn.mul")
_register_binary("Div", "nn.div")


# comparisons and logic: the same legacy (opset < 7) broadcasting rules as the arithmetic
_register_binary("Equal", "nn.equal")
_register_binary("Less", "nn.less")
_register_binary("Greater", "nn.greater")
_register_binary("And", "nn.and")
_register_binary("Or", "nn.or")
_register_binary("Xor", "nn.xor")


register_for("LessOrEqual", 12, "nn.less_equal (numpy broadcasting)", _modern_binary,
             "nn.less_equal")
register_for("GreaterOrEqual", 12, "nn.greater_equal (numpy broadcasting)", _modern_binary,
             "nn.greater_equal")


@converter("Not", since=1)
def not_(ctx, node, attrs):
    """nn.not"""
    return [ctx.emit1("nn.not", [ctx.input(node, 0)])]


@converter("Where", since=9)
def where(ctx, node, attrs):
    """nn.where (numpy broadcasting of the condition and both branches)"""
    return [ctx.emit1("nn.where", [ctx.input(node, i) for i in range(3)])]


def _variadic(ctx, node, attrs, nn_name: str, same_shapes: bool):
    """Sum/Max/Min of any number of inputs: a chain of binary nn ops (one input: identity)."""
    values = [ctx.input(node, i) for i in range(len(node.input))]
    values = [v for v in values if v is not None]
    if not values:
        raise ctx.error(f"{node.op_type} needs at least one input")
    shapes = {v.type.shape for v in values}
    if same_shapes and len(shapes) > 1:
        raise ctx.error(
            f"inputs of shapes {sorted(map(list, shapes))} need broadcasting, which "
            f"{node.op_type} allows only from opset 8; re-export the model at opset >= 8"
        )
    if len(values) == 1:
        return [ctx.emit1("nn.identity", values)]
    acc = values[0]
    for v in values[1:]:
        acc = ctx.emit1(nn_name, [acc, v])
    return [acc]


register_for("Sum", 1, "chain of nn.add (one input: nn.identity)", _variadic, "nn.add", False)
for _op_type, _nn_name in (("Max", "nn.max"), ("Min", "nn.min")):
    register_for(_op_type, 1, f"chain of {_nn_name} (opset < 8: inputs of one shape; one input: "
                 "nn.identity)", _variadic, _nn_name, True)
    register_for(_op_type, 8, f"chain of {_nn_name} (numpy broadcasting; one input: "
                 "nn.identity)", _variadic, _nn_name, False)


@converter("Pow", since=1)
def pow_legacy(ctx, node, attrs):
    """nn.pow (opset < 7: equal shapes, or broadcast=1 forms that match numpy broadcasting)"""
    return _legacy_binary(ctx, node, attrs, "nn.pow")


@converter("Pow", since=7)
def pow_(ctx, node, attrs):
    """nn.pow (numpy broadcasting; the exponent may have another dtype)"""
    return [_binary(ctx, node, "nn.pow")]


# ----------------------------------------------------------------------------- activations


@converter("Relu", since=1)
def relu(ctx, node, attrs):
    """nn.relu"""
    return [ctx.emit1("nn.relu", [ctx.input(node, 0)])]


@converter("LeakyRelu", since=1)
def leaky_relu(ctx, node, attrs):
    """nn.leaky_relu {alpha} (default 0.01)"""
    alpha = float(attrs.get("alpha", 0.01))
    return [ctx.emit1("nn.leaky_relu", [ctx.input(node, 0)], {"alpha": alpha})]


@converter("PRelu", since=1)
def prelu_legacy(ctx, node, attrs):
    """nn.prelu (opset < 7: a one-element slope or one of the input's shape)"""
    x, slope = ctx.input(node, 0), ctx.input(node, 1)
    if slope.type.numel != 1 and slope.type.shape != x.type.shape:
        raise ctx.error(
            f"PRelu before opset 7 with slope shape {list(slope.type.shape)} and input shape "
            f"{list(x.type.shape)} has no defined broadcasting; re-export the model at opset >= 7"
        )
    if slope.type.rank > x.type.rank:
        slope = ctx.emit1("nn.reshape", [slope], {"shape": [1] * x.type.rank})
    return [ctx.emit1("nn.prelu", [x, slope])]


@converter("PRelu", since=7)
def prelu(ctx, node, attrs):
    """nn.prelu (slope broadcasts unidirectionally to the input)"""
    return [ctx.emit1("nn.prelu", [ctx.input(node, 0), ctx.input(node, 1)])]


@converter("Sigmoid", since=1)
def sigmoid(ctx, node, attrs):
    """nn.sigmoid"""
    return [ctx.emit1("nn.sigmoid", [ctx.input(node, 0)])]


@converter("Tanh", since=1)
def tanh(ctx, node, attrs):
    """nn.tanh"""
    return [ctx.emit1("nn.tanh", [ctx.input(node, 0)])]


@converter("HardSigmoid", since=1)
def hard_sigmoid(ctx, node, attrs):
    """nn.hard_sigmoid {alpha, beta} (defaults 0.2, 0.5)"""
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return [ctx.emit1("nn.hard_sigmoid", [ctx.input(node, 0)], {"alpha": alpha, "beta": beta})]


@converter("HardSwish", since=14)
def hard_swish(ctx, node, attrs):
    """nn.hard_swish"""
    return [ctx.emit1("nn.hard_swish", [ctx.input(node, 0)])]


@converter("Clip", since=1)
def clip_attrs(ctx, node, attrs):
    """nn.clip {min, max} from attributes (defaults: the float32 range, as Clip-6)"""
    lo, hi = float(attrs.get("min", -_FLT_MAX)), float(attrs.get("max", _FLT_MAX))
    return [ctx.emit1("nn.clip", [ctx.input(node, 0)], {"min": lo, "max": hi})]


@converter("Clip", since=11)
def clip(ctx, node, attrs):
    """nn.clip {min, max} from optional compile-time constant inputs (absent: -inf / inf)"""
    x = ctx.input(node, 0)
    lo = _float_attr(ctx, node, 1, "min", x.type.np_dtype)
    hi = _float_attr(ctx, node, 2, "max", x.type.np_dtype)
    bounds = {"min": -np.inf if lo is None else lo, "max": np.inf if hi is None else hi}
    return [ctx.emit1("nn.clip", [x], {k: float(v) for k, v in bounds.items()})]


@converter("Erf", since=9)
def erf(ctx, node, attrs):
    """nn.erf"""
    return [ctx.emit1("nn.erf", [ctx.input(node, 0)])]


@converter("Gelu", since=20)
def gelu(ctx, node, attrs):
    """nn.gelu {approximate} ("none" or "tanh")"""
    approximate = attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ctx.error(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return [ctx.emit1("nn.gelu", [ctx.input(node, 0)], {"approximate": approximate})]


@converter("Sqrt", since=1)
def sqrt(ctx, node, attrs):
    """nn.sqrt"""
    return [ctx.emit1("nn.sqrt", [ctx.input(node, 0)])]


@converter("Reciprocal", since=1)
def reciprocal(ctx, node, attrs):
    """nn.reciprocal"""
    return [ctx.emit1("nn.reciprocal", [ctx.input(node, 0)])]


@converter("Exp", since=1)
def exp(ctx, node, attrs):
    """nn.exp"""
    return [ctx.emit1("nn.exp", [ctx.input(node, 0)])]


@converter("Neg", since=1)
def neg(ctx, node, attrs):
    """nn.neg"""
    return [ctx.emit1("nn.neg", [ctx.input(node, 0)])]


# ----------------------------------------------------------------------------- casts and copies


@converter("Cast", since=1)
def cast(ctx, node, attrs):
    """nn.cast {to} (IR dtypes f32 f64 f16 i64 i32 i16 i8 u8 i1)"""
    if "to" not in attrs:
        raise ctx.error("Cast needs the 'to' attribute")
    to = _ir_dtype(ctx, attrs["to"], "Cast 'to'")
    return [ctx.emit1("nn.cast", [ctx.input(node, 0)], {"to": to})]


@converter("Identity", since=1)
def identity(ctx, node, attrs):
    """nn.identity"""
    return [ctx.emit1("nn.identity", [ctx.input(node, 0)])]


def _dropout(ctx, node, mask_dtype: str | None):
    """Inference Dropout: the data passes unchanged; a named mask output is all ones."""
    x = ctx.input(node, 0)
    y = ctx.emit1("nn.identity", [x])
    wants_mask = len(node.output) > 1 and node.output[1] != ""
    if not wants_mask:
        return [y]
    dtype = DTYPES[mask_dtype or x.type.dtype]
    return [y, _constant(ctx, np.ones(x.type.shape, dtype))]


@converter("Dropout", since=1)
def dropout_legacy(ctx, node, attrs):
    """nn.identity (inference; a used mask output becomes a constant of ones of x's dtype)"""
    return _dropout(ctx, node, None)


@converter("Dropout", since=10)
def dropout(ctx, node, attrs):
    """nn.identity (inference; a used mask output becomes a constant of ones, i1)"""
    return _dropout(ctx, node, "i1")


@converter("Dropout", since=12)
def dropout_inputs(ctx, node, attrs):
    """nn.identity (inference; training_mode must be absent or a constant false; mask: ones, i1)"""
    if ctx.input(node, 2) is not None:
        mode = ctx.const(node, 2)
        if mode is None:
            raise ctx.error(
                "input #2 (training_mode) is computed at run time; cimc compiles for inference, "
                "so make it a constant false (or drop it)"
            )
        if bool(np.asarray(mode).reshape(-1)[0]):
            raise ctx.error(
                "training_mode is true: cimc compiles for inference only; set training_mode to "
                "false (or drop the input) before compiling"
            )
    return _dropout(ctx, node, "i1")


# ----------------------------------------------------------------------------- constants


_CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")
_UNSUPPORTED_CONSTANT_ATTRS = ("sparse_value", "value_string", "value_strings")


@converter("Constant", since=1)
def constant(ctx, node, attrs):
    """nn.constant (value, value_float(s) or value_int(s) attribute)"""
    bad = [a for a in _UNSUPPORTED_CONSTANT_ATTRS if a in attrs]
    if bad:
        raise ctx.error(
            f"Constant with attribute {bad[0]!r} is not supported; cimc handles "
            f"{', '.join(_CONSTANT_ATTRS)}"
        )
    given = [a for a in _CONSTANT_ATTRS if a in attrs]
    if len(given) != 1:
        raise ctx.error(
            f"Constant needs exactly one of the attributes {', '.join(_CONSTANT_ATTRS)}, "
            f"got {', '.join(attrs) or 'none'}"
        )
    key = given[0]
    raw = attrs[key]
    if key == "value":
        array = np.asarray(raw)
    elif key in ("value_float", "value_floats"):
        array = np.asarray(raw, dtype=np.float32)
    else:
        array = np.asarray(raw, dtype=np.int64)
    return [_constant(ctx, _check_array(ctx, array, f"Constant attribute {key!r}"))]


@converter("ConstantOfShape", since=9)
def constant_of_shape(ctx, node, attrs):
    """nn.constant filled with `value` (default float32 0); shape known at compile time"""
    if ctx.input(node, 0) is None:
        raise ctx.error("ConstantOfShape needs its shape input")
    shape_value = ctx.const(node, 0)
    if shape_value is None:
        raise ctx.error(
            "input #0 (shape) is computed at run time; cimc needs it at compile time. Make it a "
            "constant, or give static input shapes (--input-shape) so it can be folded"
        )
    shape_value = np.asarray(shape_value)
    if shape_value.dtype.kind not in "iu" or shape_value.ndim > 1:
        raise ctx.error(
            f"input #0 (shape) must be a 1-D integer tensor, got {TensorType.of(shape_value)}"
        )
    shape = [int(d) for d in shape_value.reshape(-1)]
    if any(d < 0 for d in shape):
        raise ctx.error(f"shape {shape} has a negative dimension")
    ctx.check_size(shape, "the constant")
    fill = attrs.get("value")
    if fill is None:
        fill = np.zeros(1, np.float32)
    fill = _check_array(ctx, np.asarray(fill), "ConstantOfShape attribute 'value'")
    if fill.size != 1:
        raise ctx.error(f"attribute 'value' must hold one element, got shape {list(fill.shape)}")
    return [_constant(ctx, np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype))]
