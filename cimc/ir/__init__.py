"""The IR: structures, types, printer/parser, verifier and reference interpreter."""

from cimc.ir.core import Block, Builder, Func, Module, Op, Value
from cimc.ir.interpreter import run
from cimc.ir.parser import parse_module, read_module
from cimc.ir.printer import print_module, to_text, write_module
from cimc.ir.types import TensorType
from cimc.ir.verify import verify

__all__ = [
    "Block", "Builder", "Func", "Module", "Op", "Value", "TensorType",
    "parse_module", "read_module", "print_module", "to_text", "write_module", "verify", "run",
]
