"""The IR: structures, types, printer/parser, verifier (cimc.ir.verify.verify) and interpreter.

Names are loaded lazily, so that ``cimc.ops.registry`` and ``cimc.ops`` (the op semantics, which
the runtime shares) import without the parser, printer and the rest of the compiler.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Block": "cimc.ir.core", "Builder": "cimc.ir.core", "Func": "cimc.ir.core",
    "Module": "cimc.ir.core", "Op": "cimc.ir.core", "Value": "cimc.ir.core",
    "TensorType": "cimc.ir.types",
    "parse_module": "cimc.ir.parser", "read_module": "cimc.ir.parser",
    "print_module": "cimc.ir.printer", "to_text": "cimc.ir.printer", "write_module": "cimc.ir.printer",
    "run": "cimc.ir.interpreter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cimc.ir' has no attribute {name!r}")
