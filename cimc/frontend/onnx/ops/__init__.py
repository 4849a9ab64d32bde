"""Converter families. Importing this package registers every converter."""

from cimc.frontend.onnx.ops import elementwise, linalg, norm, pool, reduce, shape  # noqa: F401
