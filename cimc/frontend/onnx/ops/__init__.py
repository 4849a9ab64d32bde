"""Converter families. Importing this package registers every converter."""

from cimc.frontend.onnx.ops import elementwise  # noqa: F401
