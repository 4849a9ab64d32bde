"""ONNX element types and the IR's dtypes, both ways (the importer and the converters share it)."""

from __future__ import annotations

import numpy as np
import onnx

from cimc.ir.types import dtype_name

# ONNX elem_type -> IR dtype
ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "f32",
    onnx.TensorProto.DOUBLE: "f64",
    onnx.TensorProto.FLOAT16: "f16",
    onnx.TensorProto.INT64: "i64",
    onnx.TensorProto.INT32: "i32",
    onnx.TensorProto.INT16: "i16",
    onnx.TensorProto.INT8: "i8",
    onnx.TensorProto.UINT8: "u8",
    onnx.TensorProto.BOOL: "i1",
}
_ELEM_TYPES = {v: k for k, v in ONNX_DTYPES.items()}


def onnx_elem_type(dtype: np.dtype | type) -> int:
    """The ONNX TensorProto elem_type of a numpy dtype."""
    return _ELEM_TYPES[dtype_name(dtype)]
