"""Tensor types: ``tensor<1x3x8x8xf32>``; a rank-0 tensor prints as ``tensor<f32>``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from cimc.errors import CimcError

# IR dtype name -> numpy dtype. The order is the order docs list them in.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "f16": np.dtype(np.float16),
    "i64": np.dtype(np.int64),
    "i32": np.dtype(np.int32),
    "i16": np.dtype(np.int16),
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "i1": np.dtype(np.bool_),
}
_BY_NUMPY = {v: k for k, v in DTYPES.items()}

# Sizes are int64 everywhere (numpy, ONNX): no dimension or element count may exceed this.
MAX_ELEMENTS = 2**63 - 1

TYPE_RE = re.compile(r"tensor<((?:\d+x)*)([a-z]+\d+)>")


def dtype_name(dtype: np.dtype | type) -> str:
    """IR name of a numpy dtype (``float32`` -> ``f32``)."""
    dt = np.dtype(dtype)
    if dt not in _BY_NUMPY:
        raise CimcError(f"dtype {dt} has no IR equivalent; supported: {', '.join(DTYPES)}")
    return _BY_NUMPY[dt]


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise CimcError(f"unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise CimcError(f"negative dimension in shape {self.shape}")
        if max(self.shape, default=0) > MAX_ELEMENTS or math.prod(self.shape) > MAX_ELEMENTS:
            raise CimcError(
                f"shape {list(self.shape)} is too large: a tensor holds at most 2^63 - 1 elements"
            )

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    def with_shape(self, shape) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        return TensorType(tuple(array.shape), dtype_name(array.dtype))

    @staticmethod
    def parse(text: str) -> TensorType:
        m = TYPE_RE.fullmatch(text)
        if not m:
            raise CimcError(f"malformed type {text!r}; expected e.g. tensor<1x3xf32>")
        dims = [int(d) for d in m.group(1).split("x") if d]
        return TensorType(tuple(dims), m.group(2))

    def __str__(self) -> str:
        return "tensor<" + "".join(f"{d}x" for d in self.shape) + self.dtype + ">"
