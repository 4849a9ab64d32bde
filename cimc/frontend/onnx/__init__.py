"""ONNX frontend: ``import_onnx(model_or_path, input_shapes=None) -> Module``."""

from cimc.frontend.onnx.importer import import_onnx

__all__ = ["import_onnx"]
