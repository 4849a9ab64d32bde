"""Elementwise arithmetic and activations (numpy broadcasting semantics, as ONNX).

Every op's result keeps the dtype of its first operand exactly (``nn.cast``, the comparisons and
``nn.where``'s condition aside): float activations are computed in float64 and rounded once to the
operand's dtype, so a float32 model stays float32. Binary arithmetic (``nn.add nn.sub nn.mul
nn.div nn.max nn.min``) needs both operands of the same dtype; integer ``nn.div`` truncates toward
zero, as ONNX Div does. Comparisons (``nn.equal nn.less nn.less_equal nn.greater
nn.greater_equal``) take two operands of one dtype and give booleans (``i1``); the logical ops
(``nn.not nn.and nn.or nn.xor``) take and give booleans.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cimc.errors import VerifyError
from cimc.ir.types import DTYPES, TensorType
from cimc.ops.registry import broadcast_shapes, define, same_type

Attrs = dict[str, Any]

GELU_APPROXIMATIONS = ("none", "tanh")

# ----------------------------------------------------------------------------- infer helpers


def _binary_type(name: str) -> Callable[..., TensorType]:
    """Broadcast shape of both operands; both must have the same dtype."""

    def infer(attrs: Attrs, x: TensorType, y: TensorType) -> TensorType:
        if x.dtype != y.dtype:
            raise VerifyError(
                f"{name}: operands have different dtypes ({x} and {y}); convert one with nn.cast"
            )
        return TensorType(broadcast_shapes(x.shape, y.shape), x.dtype)

    return infer


def _compare_type(name: str) -> Callable[..., TensorType]:
    """Broadcast shape of both operands (of one dtype); the result is boolean."""
    binary = _binary_type(name)

    def infer(attrs: Attrs, x: TensorType, y: TensorType) -> TensorType:
        return binary(attrs, x, y).with_dtype("i1")

    return infer


def _logical_type(name: str) -> Callable[..., TensorType]:
    """Boolean operands, broadcast; a boolean result."""

    def infer(attrs: Attrs, *xs: TensorType) -> TensorType:
        for t in xs:
            if t.dtype != "i1":
                raise VerifyError(f"{name} takes boolean (i1) operands, got {t}")
        return TensorType(broadcast_shapes(*(t.shape for t in xs)), "i1")

    return infer


def _where_type(attrs: Attrs, cond: TensorType, x: TensorType, y: TensorType) -> TensorType:
    if cond.dtype != "i1":
        raise VerifyError(f"nn.where: the condition must be boolean (i1), got {cond}")
    if x.dtype != y.dtype:
        raise VerifyError(f"nn.where: the two branches have different dtypes ({x} and {y})")
    return TensorType(broadcast_shapes(cond.shape, x.shape, y.shape), x.dtype)


def _float_type(name: str) -> Callable[..., TensorType]:
    """Same type as the operand, which must be a float tensor."""

    def infer(attrs: Attrs, x: TensorType) -> TensorType:
        if not x.dtype.startswith("f"):
            raise VerifyError(f"{name} takes a float tensor, got {x}; convert it with nn.cast")
        return x

    return infer


def _pow_type(attrs: Attrs, x: TensorType, y: TensorType) -> TensorType:
    if x.dtype == "i1" or y.dtype == "i1":
        raise VerifyError(f"nn.pow: boolean operands are not numbers ({x}, {y})")
    return TensorType(broadcast_shapes(x.shape, y.shape), x.dtype)


def _prelu_type(attrs: Attrs, x: TensorType, slope: TensorType) -> TensorType:
    if x.dtype != slope.dtype:
        raise VerifyError(f"nn.prelu: slope {slope} must have the dtype of the input {x}")
    try:
        shape = broadcast_shapes(x.shape, slope.shape)
    except VerifyError:
        shape = None
    if shape != x.shape:
        raise VerifyError(
            f"nn.prelu: slope {slope} does not broadcast to the input {x} (unidirectional "
            f"broadcasting: the slope may only grow to the input's shape)"
        )
    return x


def _clip_type(attrs: Attrs, x: TensorType) -> TensorType:
    for key in ("min", "max"):
        if not isinstance(attrs[key], (int, float)) or isinstance(attrs[key], bool):
            raise VerifyError(f"nn.clip: attribute {key} must be a float, got {attrs[key]!r}")
    if x.dtype == "i1":
        raise VerifyError(f"nn.clip takes a numeric tensor, got {x}")
    return x


def _gelu_type(attrs: Attrs, x: TensorType) -> TensorType:
    if attrs["approximate"] not in GELU_APPROXIMATIONS:
        raise VerifyError(
            f"nn.gelu: approximate must be one of {', '.join(map(repr, GELU_APPROXIMATIONS))}, "
            f"got {attrs['approximate']!r}"
        )
    return _float_type("nn.gelu")(attrs, x)


def _cast_type(attrs: Attrs, x: TensorType) -> TensorType:
    to = attrs["to"]
    if to not in DTYPES:
        raise VerifyError(
            f"nn.cast: unknown target dtype {to!r}; expected one of {', '.join(DTYPES)}"
        )
    return x.with_dtype(to)


# ----------------------------------------------------------------------------- numeric helpers


def float_to_int(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float -> integer conversion as ONNX runtimes do it: truncate toward zero; values outside
    the target's range wrap modulo 2**bits (NaN and infinities give 0). Platform independent."""
    v = np.trunc(np.asarray(values, np.float64))
    v = np.where(np.isfinite(v), v, 0.0)
    v = np.clip(v, -(2.0**63), 2.0**63 - 1024)  # largest float64 below 2**63
    return v.astype(np.int64).astype(dtype)


def _round_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float64 results back to ``dtype`` (floats round, integers truncate and wrap)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(values).astype(dtype)
    if dtype.kind == "b":
        return np.asarray(values) != 0
    return float_to_int(values, dtype)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64)


_ERF = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised float64 error function (``math.erf`` per element: exact to float64, about
    0.1 s per million elements)."""
    return np.asarray(_ERF(_f64(x)), dtype=np.float64)


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float64."""
    x = _f64(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _clip_bounds(dtype: np.dtype, lo: float, hi: float) -> tuple[Any, Any]:
    """Float bounds as values of an integer ``dtype`` (ceil of min, floor of max, saturated)."""
    info = np.iinfo(dtype)
    lo_i = info.min if math.isinf(lo) or lo <= info.min else max(info.min, math.ceil(lo))
    hi_i = info.max if math.isinf(hi) or hi >= info.max else min(info.max, math.floor(hi))
    return dtype.type(lo_i), dtype.type(hi_i)


def _trunc_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero (C semantics); division by zero gives 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.floor_divide(x, y)
        r = np.remainder(x, y)
    negative = (x < 0) != (y < 0)
    return q + ((r != 0) & negative).astype(q.dtype)


# ----------------------------------------------------------------------------- binary arithmetic


@define("nn.add", operands=2, infer=_binary_type("nn.add"), summary="x + y with broadcasting")
def add(attrs, x, y):
    return np.add(x, y).astype(x.dtype, copy=False)


@define("nn.sub", operands=2, infer=_binary_type("nn.sub"), summary="x - y with broadcasting")
def sub(attrs, x, y):
    return np.subtract(x, y).astype(x.dtype, copy=False)


@define("nn.mul", operands=2, infer=_binary_type("nn.mul"), summary="x * y with broadcasting")
def mul(attrs, x, y):
    return np.multiply(x, y).astype(x.dtype, copy=False)


@define(
    "nn.div",
    operands=2,
    infer=_binary_type("nn.div"),
    summary="x / y with broadcasting; integer division truncates toward zero (as ONNX Div)",
)
def div(attrs, x, y):
    if x.dtype.kind in "iu":
        return _trunc_div(x, y).astype(x.dtype, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(x, y).astype(x.dtype, copy=False)


@define(
    "nn.pow",
    operands=2,
    infer=_pow_type,
    summary="x ** y with broadcasting; the result has x's dtype (y may have another dtype)",
)
def pow_(attrs, x, y):
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        # exact integer powers where the exponent is non-negative; x ** -n via float64 (0, 1, -1)
        xb, yb = np.broadcast_arrays(x, y)
        exact = np.power(xb, np.maximum(yb, 0).astype(x.dtype))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            via_float = _round_to(np.power(_f64(xb), _f64(yb)), x.dtype)
        return np.where(yb >= 0, exact, via_float).astype(x.dtype, copy=False)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _round_to(np.power(_f64(x), _f64(y)), x.dtype)


@define(
    "nn.max",
    operands=2,
    infer=_binary_type("nn.max"),
    summary="elementwise maximum with broadcasting (NaN wins, as numpy.maximum)",
)
def max_(attrs, x, y):
    return np.maximum(x, y).astype(x.dtype, copy=False)


@define(
    "nn.min",
    operands=2,
    infer=_binary_type("nn.min"),
    summary="elementwise minimum with broadcasting (NaN wins, as numpy.minimum)",
)
def min_(attrs, x, y):
    return np.minimum(x, y).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- comparisons, logic

@define("nn.not", infer=_logical_type("nn.not"), summary="logical not of a boolean tensor")
def not_(attrs, x):
    return np.logical_not(x)


# Binary ops with a boolean (i1) result: name -> (numpy function, type rule, summary).
_BOOLEAN_RESULTS = {
    "nn.equal": (np.equal, _compare_type, "x == y"),
    "nn.less": (np.less, _compare_type, "x < y"),
    "nn.less_equal": (np.less_equal, _compare_type, "x <= y"),
    "nn.greater": (np.greater, _compare_type, "x > y"),
    "nn.greater_equal": (np.greater_equal, _compare_type, "x >= y"),
    "nn.and": (np.logical_and, _logical_type, "x and y of booleans"),
    "nn.or": (np.logical_or, _logical_type, "x or y of booleans"),
    "nn.xor": (np.logical_xor, _logical_type, "x xor y of booleans"),
}


def _define_boolean(name: str, fn: np.ufunc, infer: Callable, text: str) -> None:
    def evaluate(attrs, x, y):
        return np.asarray(fn(x, y), dtype=np.bool_)

    define(name, operands=2, infer=infer(name),
           summary=f"{text} with broadcasting; a boolean (i1) result")(evaluate)


for _name, (_fn, _infer, _text) in _BOOLEAN_RESULTS.items():
    _define_boolean(_name, _fn, _infer, _text)


@define(
    "nn.where",
    operands=3,
    infer=_where_type,
    summary="x where cond else y, all three broadcast; cond is boolean (i1)",
)
def where(attrs, cond, x, y):
    return np.where(cond, x, y).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- activations


@define("nn.relu", infer=same_type, summary="max(x, 0)")
def relu(attrs, x):
    return np.maximum(x, 0).astype(x.dtype, copy=False)


@define(
    "nn.leaky_relu",
    attrs=("alpha",),
    infer=_float_type("nn.leaky_relu"),
    summary="x if x >= 0 else alpha * x",
)
def leaky_relu(attrs, x):
    x64 = _f64(x)
    return _round_to(np.where(x64 >= 0, x64, x64 * float(attrs["alpha"])), x.dtype)


@define(
    "nn.prelu",
    operands=2,
    infer=_prelu_type,
    summary="x if x >= 0 else slope * x; slope broadcasts to x's shape (unidirectional)",
)
def prelu(attrs, x, slope):
    return np.where(x < 0, x * slope, x).astype(x.dtype, copy=False)


@define("nn.sigmoid", infer=_float_type("nn.sigmoid"), summary="1 / (1 + exp(-x))")
def sigmoid(attrs, x):
    return _round_to(_sigmoid64(x), x.dtype)


@define("nn.tanh", infer=_float_type("nn.tanh"), summary="tanh(x)")
def tanh(attrs, x):
    return _round_to(np.tanh(_f64(x)), x.dtype)


@define(
    "nn.hard_sigmoid",
    attrs=("alpha", "beta"),
    infer=_float_type("nn.hard_sigmoid"),
    summary="max(0, min(1, alpha * x + beta))",
)
def hard_sigmoid(attrs, x):
    y = float(attrs["alpha"]) * _f64(x) + float(attrs["beta"])
    return _round_to(np.clip(y, 0.0, 1.0), x.dtype)


@define(
    "nn.hard_swish",
    infer=_float_type("nn.hard_swish"),
    summary="x * max(0, min(1, x / 6 + 1/2))",
)
def hard_swish(attrs, x):
    x64 = _f64(x)
    return _round_to(x64 * np.clip(x64 / 6.0 + 0.5, 0.0, 1.0), x.dtype)


@define(
    "nn.clip",
    optional={"min": -math.inf, "max": math.inf},
    infer=_clip_type,
    summary="min(max(x, min), max); if min > max every element becomes max",
)
def clip(attrs, x):
    lo, hi = float(attrs["min"]), float(attrs["max"])
    if x.dtype.kind in "iu":
        lo_v, hi_v = _clip_bounds(x.dtype, lo, hi)
        return np.minimum(np.maximum(x, lo_v), hi_v).astype(x.dtype, copy=False)
    with np.errstate(over="ignore"):
        lo_v, hi_v = x.dtype.type(lo), x.dtype.type(hi)
    return np.minimum(np.maximum(x, lo_v), hi_v).astype(x.dtype, copy=False)


@define("nn.erf", infer=same_type, summary="the Gauss error function")
def erf_(attrs, x):
    return _round_to(erf(x), x.dtype)


@define(
    "nn.gelu",
    attrs=("approximate",),
    infer=_gelu_type,
    summary='x * Phi(x); approximate "tanh" uses the tanh formula',
)
def gelu(attrs, x):
    x64 = _f64(x)
    if attrs["approximate"] == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
        y = 0.5 * x64 * (1.0 + np.tanh(inner))
    else:
        y = 0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))
    return _round_to(y, x.dtype)


@define("nn.sqrt", infer=_float_type("nn.sqrt"), summary="square root (NaN for x < 0)")
def sqrt(attrs, x):
    with np.errstate(invalid="ignore"):
        return np.sqrt(x).astype(x.dtype, copy=False)


@define("nn.reciprocal", infer=_float_type("nn.reciprocal"), summary="1 / x")
def reciprocal(attrs, x):
    with np.errstate(divide="ignore", over="ignore"):
        return _round_to(1.0 / _f64(x), x.dtype)


@define("nn.exp", infer=_float_type("nn.exp"), summary="exp(x)")
def exp(attrs, x):
    with np.errstate(over="ignore"):
        return _round_to(np.exp(_f64(x)), x.dtype)


@define("nn.neg", infer=same_type, summary="-x")
def neg(attrs, x):
    return np.negative(x).astype(x.dtype, copy=False)


@define(
    "nn.cast",
    attrs=("to",),
    infer=_cast_type,
    summary="convert to dtype `to`; float to int truncates toward zero (out of range wraps)",
)
def cast(attrs, x):
    target = DTYPES[attrs["to"]]
    if x.dtype.kind == "f" and target.kind in "iu":
        return float_to_int(x, target)
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(target)


@define("nn.identity", infer=same_type, summary="x (Identity, and Dropout at inference)")
def identity(attrs, x):
    return x
