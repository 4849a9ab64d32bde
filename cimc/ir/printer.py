"""Canonical printer. Values are numbered in definition order, attributes sorted, floats written
in their shortest round-trip form; arrays above ``inline_limit`` elements print as
``dense_resource<"rN" : type>`` and are returned beside the text (the sidecar ``.npz``).

``parse_module(*print_module(m))`` rebuilds ``m``, and printing that again gives the same text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimc.ir.core import Block, Func, Module, Op, Value
from cimc.ir.types import TensorType

INLINE_LIMIT = 16
INDENT = "  "


@dataclass
class Printed:
    text: str
    resources: dict[str, np.ndarray] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.text, self.resources))


def format_scalar(x: Any) -> str:
    """One number in its shortest form that parses back to the same bits."""
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, np.floating):
        s = str(x)
    else:
        s = repr(float(x))
    if s in ("inf", "-inf", "nan"):
        return s
    if "." not in s and "e" not in s:
        s += ".0"
    return s


class _Printer:
    def __init__(self, inline_limit: int) -> None:
        self.inline_limit = inline_limit
        self.names: dict[Value, str] = {}
        self.resources: dict[str, np.ndarray] = {}
        self.lines: list[str] = []

    def name(self, v: Value) -> str:
        n = self.names.get(v)
        if n is None:
            raise ValueError(f"value {v!r} used before it is defined")
        return n

    def define(self, v: Value) -> str:
        n = f"%{len(self.names)}"
        self.names[v] = n
        return n

    def attr(self, x: Any) -> str:
        if isinstance(x, np.ndarray):
            t = TensorType.of(x)
            if x.size <= self.inline_limit:
                flat = ", ".join(format_scalar(e) for e in x.reshape(-1))
                return f"dense<[{flat}] : {t}>"
            key = f"r{len(self.resources)}"
            self.resources[key] = x
            return f'dense_resource<"{key}" : {t}>'
        if isinstance(x, str):
            return json.dumps(x)
        if isinstance(x, (list, tuple)):
            return "[" + ", ".join(self.attr(e) for e in x) + "]"
        if isinstance(x, (bool, np.bool_, int, np.integer, float, np.floating)):
            return format_scalar(x)
        raise TypeError(f"cannot print attribute of type {type(x).__name__}")

    def attr_dict(self, attrs: dict[str, Any]) -> str:
        if not attrs:
            return ""
        return "{" + ", ".join(f"{k} = {self.attr(attrs[k])}" for k in sorted(attrs)) + "}"

    def block(self, block: Block, depth: int) -> None:
        for op in block.ops:
            self.op(op, depth)

    def op(self, op: Op, depth: int) -> None:
        operands = ", ".join(self.name(v) for v in op.operands)
        # Regions are printed before results are numbered: results are defined after the op.
        head = f"{op.name}({operands})"
        attrs = self.attr_dict(op.attrs)
        if attrs:
            head += " " + attrs
        pad = INDENT * depth
        if op.regions:
            self.lines.append(pad + "<<placeholder>>")
            at = len(self.lines) - 1
            for i, region in enumerate(op.regions):
                args = ", ".join(f"{self.define(a)}: {a.type}" for a in region.args)
                self.lines.append(pad + INDENT + f"^bb({args}):" if args else pad + INDENT + "^bb:")
                self.block(region, depth + 2)
                self.lines.append(pad + ("}, {" if i < len(op.regions) - 1 else "})"))
            results = ", ".join(self.define(r) for r in op.results)
            prefix = f"{results} = " if results else ""
            self.lines[at] = pad + prefix + head + " ({"
            if op.results:
                self.lines[-1] += " : " + ", ".join(str(r.type) for r in op.results)
            return
        results = ", ".join(self.define(r) for r in op.results)
        line = pad + (f"{results} = " if results else "") + head
        if op.results:
            line += " : " + ", ".join(str(r.type) for r in op.results)
        self.lines.append(line)

    def func(self, f: Func) -> None:
        args = ", ".join(f"{self.define(a)}: {a.type}" for a in f.args)
        try:
            rtypes = ", ".join(str(v.type) for v in f.outputs)
        except ValueError:
            rtypes = ""
        head = f"{INDENT}func @{f.name}({args}) -> ({rtypes})"
        if f.attrs:
            head += " attributes " + self.attr_dict(f.attrs)
        self.lines.append(head + " {")
        self.block(f.body, 2)
        self.lines.append(INDENT + "}")

    def module(self, m: Module) -> str:
        head = "module"
        if m.attrs:
            head += " attributes " + self.attr_dict(m.attrs)
        self.lines.append(head + " {")
        for f in m.funcs:
            self.names = {}
            self.func(f)
        self.lines.append("}")
        return "\n".join(self.lines) + "\n"


def print_module(module: Module, *, inline_limit: int = INLINE_LIMIT) -> Printed:
    p = _Printer(inline_limit)
    text = p.module(module)
    return Printed(text, p.resources)


def to_text(module: Module, *, inline_limit: int = INLINE_LIMIT) -> str:
    """Text alone (resources are named but not kept): for display, dumps to a terminal, tests."""
    return print_module(module, inline_limit=inline_limit).text


def is_ir_file(path) -> bool:
    """``path`` holds textual IR as cimc writes it (it starts with ``module``)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip().startswith(b"module")
    except OSError:
        return False


def is_sidecar(path) -> bool:
    """``path`` is a constants sidecar as write_module writes it: an .npz of r0, r1, ..."""
    import re

    from cimc.data import npz_names

    names = npz_names(path)
    return names is not None and all(re.fullmatch(r"r\d+", n) for n in names)


def check_ir_output(path, *, force: bool = False, inputs=(), option: str = "-o") -> None:
    """The output rule (cimc.atomic.check_output) for an IR file and its sidecar."""
    from cimc.atomic import check_output
    from cimc.ir.parser import sidecar_path

    check_output(path, "an IR file", ours=is_ir_file, force=force, inputs=inputs, option=option)
    check_output(sidecar_path(path), "the constants sidecar of an IR file", ours=is_sidecar,
                 force=force, inputs=inputs, option=f"{option} {path}: its sidecar")


def write_module(
    module: Module, path, *, inline_limit: int = INLINE_LIMIT, force: bool = False
) -> None:
    """Write ``path`` (.cir) and, when there are large constants, its sidecar ``.npz``. An
    existing file there that cimc did not write is refused unless ``force``."""
    from pathlib import Path

    from cimc.atomic import atomic_path, write_text
    from cimc.ir.parser import sidecar_path

    path = Path(path)
    check_ir_output(path, force=force)
    printed = print_module(module, inline_limit=inline_limit)
    side = sidecar_path(path)
    if printed.resources:
        with atomic_path(side) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **printed.resources)
    elif side.is_file() and is_sidecar(side):
        side.unlink()
    write_text(path, printed.text)
