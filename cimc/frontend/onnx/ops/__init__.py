"""Converter families. Importing this package registers every converter."""

from cimc.frontend.onnx.ops import (  # noqa: F401
    elementwise,
    linalg,
    norm,
    pool,
    recurrent,
    reduce,
    shape,
)
