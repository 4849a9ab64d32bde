"""Parser for the textual IR (``grammar.lark``), the inverse of ``printer.print_module``.

Errors name ``file:line:col`` and what was expected there. Value names in the text are free
(``%x``, ``%3``); a name must be defined before it is used and only once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import lark
import numpy as np

from cimc.errors import ParseError
from cimc.ir.core import Block, Func, Module, Op, Value
from cimc.ir.types import TensorType

_TOKEN_NAMES = {
    "VALUE": "a value (%name)",
    "OPNAME": "an op name",
    "TYPE": "a type like tensor<1x3xf32>",
    "KEY": "an attribute name",
    "SYMBOL": "a function name (@name)",
    "INT": "an integer",
    "FLOAT": "a float",
    "STRING": "a string",
    "RBRACE": "'}'",
    "LBRACE": "'{'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "MORETHAN": "'>'",
    "LESSTHAN": "'<'",
    "__ANON_0": "'->'",
}


@functools.cache
def _lark() -> lark.Lark:
    grammar = importlib_resources.files("cimc.ir").joinpath("grammar.lark").read_text()
    return lark.Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _describe(expected: set[str]) -> str:
    names = sorted({_TOKEN_NAMES.get(e, repr(e.strip('"').lower())) for e in expected})
    return ", ".join(names)


class _Builder:
    def __init__(self, filename: str, resources: Mapping[str, np.ndarray] | None) -> None:
        self.filename = filename
        self.resources = resources if resources is not None else {}
        self.scopes: list[dict[str, Value]] = []

    def error(self, node: lark.Tree | lark.Token, msg: str) -> ParseError:
        line = getattr(node, "line", None) or getattr(getattr(node, "meta", None), "line", "?")
        col = getattr(node, "column", None) or getattr(getattr(node, "meta", None), "column", "?")
        return ParseError(f"{self.filename}:{line}:{col}: {msg}")

    def loc(self, node: lark.Tree | lark.Token) -> str:
        meta = getattr(node, "meta", node)
        return f"{self.filename}:{meta.line}:{meta.column}"

    # --- values
    def lookup(self, tok: lark.Token) -> Value:
        for scope in reversed(self.scopes):
            if tok in scope:
                return scope[tok]
        raise self.error(tok, f"use of undefined value {tok}")

    def bind(self, tok: lark.Token, v: Value) -> None:
        for scope in self.scopes:
            if tok in scope:
                raise self.error(tok, f"value {tok} is defined twice")
        self.scopes[-1][str(tok)] = v

    def type_(self, tok: lark.Token) -> TensorType:
        try:
            return TensorType.parse(str(tok))
        except Exception as e:
            raise self.error(tok, str(e)) from None

    # --- attributes
    def string(self, tok: lark.Token) -> str:
        try:
            return json.loads(tok)
        except json.JSONDecodeError as e:
            raise self.error(
                tok, f"malformed string {str(tok)[:40]!r}: {e.msg} (at character {e.pos}); "
                "write control characters as escapes such as \\n or \\u0007"
            ) from None

    def attr(self, node: Any) -> Any:
        if isinstance(node, lark.Token):
            if node.type == "INT":
                return int(node)
            if node.type == "FLOAT":
                return float(node)
            raise self.error(node, f"unexpected {node}")
        kind = node.data
        if kind == "int_attr":
            return int(node.children[0])
        if kind == "float_attr":
            return float(node.children[0])
        if kind == "str_attr":
            return self.string(node.children[0])
        if kind == "true_attr":
            return True
        if kind == "false_attr":
            return False
        if kind == "list_attr":
            return [self.attr(c) for c in node.children if c is not None]
        if kind == "dense_attr":
            *vals, ttok = [c for c in node.children if c is not None]
            t = self.type_(ttok)
            flat = [self.attr(v) for v in vals]
            if len(flat) != t.numel:
                raise self.error(node, f"dense constant has {len(flat)} values but {t} needs {t.numel}")
            return self.dense(node, flat, t)
        if kind == "resource_attr":
            stok, ttok = node.children
            key = self.string(stok)
            t = self.type_(ttok)
            if key not in self.resources:
                raise self.error(
                    stok, f"resource {key!r} not found in the sidecar (.npz beside the .cir file)"
                )
            arr = np.asarray(self.resources[key])
            if TensorType.of(arr) != t:
                raise self.error(stok, f"resource {key!r} is {TensorType.of(arr)} but the text says {t}")
            return arr
        raise self.error(node, f"unexpected attribute {kind}")

    def dense(self, node: lark.Tree, flat: list[Any], t: TensorType) -> np.ndarray:
        """The array of a ``dense<[...]>`` constant; every value must fit the element type."""
        dt = t.np_dtype
        if dt.kind == "f":
            try:
                with np.errstate(over="ignore"):
                    return np.array(flat, np.float64).astype(dt).reshape(t.shape)
            except OverflowError:
                bad = max((v for v in flat if isinstance(v, int)), key=abs)
                raise self.error(node, f"dense value {bad} is too large for {t.dtype}") from None
        lo, hi = (0, 1) if dt.kind == "b" else (np.iinfo(dt).min, np.iinfo(dt).max)
        for v in flat:
            if not isinstance(v, int) or not lo <= v <= hi:
                raise self.error(node, f"dense value {v!r} does not fit {t.dtype} ({lo}..{hi})")
        return np.array(flat, dtype=np.int64 if dt.kind != "u" else np.uint64).astype(dt).reshape(
            t.shape)

    def attr_dict(self, node: lark.Tree | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if node is None:
            return out
        for entry in node.children:
            if entry is None:
                continue
            key, val = entry.children
            if str(key) in out:
                raise self.error(key, f"attribute {key} given twice")
            out[str(key)] = self.attr(val)
        return out

    # --- structure
    def block_args(self, block: Block, args: list[lark.Tree]) -> None:
        for a in args:
            name, ttok = a.children
            self.bind(name, block.add_arg(self.type_(ttok)))

    def ops(self, block: Block, nodes: list[lark.Tree]) -> None:
        for node in nodes:
            block.append(self.op(node))

    def op(self, node: lark.Tree) -> Op:
        result_toks: list[lark.Token] = []
        name_tok = None
        operand_toks: list[lark.Token] = []
        type_toks: list[lark.Token] = []
        attrs_node = None
        regions_node = None
        for c in node.children:
            if c is None:
                continue
            if isinstance(c, lark.Tree):
                if c.data == "results":
                    result_toks = list(c.children)
                elif c.data == "attr_dict":
                    attrs_node = c
                elif c.data == "regions":
                    regions_node = c
            elif c.type == "OPNAME":
                name_tok = c
            elif c.type == "VALUE":
                operand_toks.append(c)
            elif c.type == "TYPE":
                type_toks.append(c)
        operands = [self.lookup(t) for t in operand_toks]
        attrs = self.attr_dict(attrs_node)
        regions: list[Block] = []
        if regions_node is not None:
            for rnode in regions_node.children:
                block = Block()
                self.scopes.append({})
                body = []
                for c in rnode.children:
                    if c is None:
                        continue
                    if c.data == "block_head":
                        self.block_args(block, [a for a in c.children if a is not None])
                    else:
                        body.append(c)
                self.ops(block, body)
                self.scopes.pop()
                regions.append(block)
        if len(type_toks) != len(result_toks):
            raise self.error(
                name_tok,
                f"{name_tok} defines {len(result_toks)} results but lists {len(type_toks)} types",
            )
        op = Op(str(name_tok), operands, [self.type_(t) for t in type_toks], attrs, regions)
        op.loc = self.loc(name_tok)
        for tok, v in zip(result_toks, op.results):
            self.bind(tok, v)
        return op

    def func(self, node: lark.Tree) -> Func:
        sym = node.children[0]
        args = [c for c in node.children if isinstance(c, lark.Tree) and c.data == "arg"]
        rtypes = [c for c in node.children if isinstance(c, lark.Token) and c.type == "TYPE"]
        attr_nodes = [c for c in node.children if isinstance(c, lark.Tree) and c.data == "attr_dict"]
        ops = [c for c in node.children if isinstance(c, lark.Tree) and c.data == "op"]
        f = Func(str(sym)[1:], attrs=self.attr_dict(attr_nodes[0] if attr_nodes else None))
        self.scopes = [{}]
        self.block_args(f.body, args)
        self.ops(f.body, ops)
        term = f.body.terminator
        if term is None or term.name != "return":
            raise self.error(sym, f"function {sym} must end with return(...)")
        got = [str(v.type) for v in term.operands]
        want = [str(self.type_(t)) for t in rtypes]
        if got != want:
            raise self.error(
                sym, f"function {sym} declares results ({', '.join(want)}) but returns ({', '.join(got)})"
            )
        return f

    def module(self, node: lark.Tree) -> Module:
        attr_nodes = [c for c in node.children if isinstance(c, lark.Tree) and c.data == "attr_dict"]
        funcs = [self.func(c) for c in node.children if isinstance(c, lark.Tree) and c.data == "func"]
        return Module(funcs, self.attr_dict(attr_nodes[0] if attr_nodes else None))


def decode_text(data: bytes, filename: str = "<string>") -> str:
    """IR file contents as text: UTF-8, or a ParseError naming the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - data.rfind(b"\n", 0, e.start)
        raise ParseError(
            f"{filename}:{line}:{col}: byte 0x{data[e.start]:02x} is not UTF-8 text; IR files are "
            "UTF-8"
        ) from None


def parse_module(
    text: str | bytes,
    resources: Mapping[str, np.ndarray] | None = None,
    filename: str = "<string>",
) -> Module:
    """Parse IR text (or UTF-8 bytes). ``resources`` resolves ``dense_resource<"key" : ...>``
    constants."""
    if isinstance(text, bytes):
        text = decode_text(text, filename)
    try:
        tree = _lark().parse(text)
    except lark.exceptions.UnexpectedCharacters as e:
        raise ParseError(
            f"{filename}:{e.line}:{e.column}: unexpected character {text[e.pos_in_stream]!r}; "
            f"expected {_describe(set(e.allowed or ()))}"
        ) from None
    except lark.exceptions.UnexpectedToken as e:
        got = "end of input" if e.token.type == "$END" else repr(str(e.token))
        raise ParseError(
            f"{filename}:{e.line}:{e.column}: unexpected {got}; expected {_describe(e.expected)}"
        ) from None
    except lark.exceptions.UnexpectedEOF as e:
        raise ParseError(f"{filename}: unexpected end of input; expected {_describe(set(e.expected))}") from None
    return _Builder(filename, resources).module(tree.children[0])


def sidecar_path(path: Path) -> Path:
    """The ``.npz`` that holds a ``.cir`` file's large constants."""
    return Path(path).with_suffix(".npz")


def read_module(path: str | Path) -> Module:
    """Read a ``.cir`` file and its sidecar ``.npz`` (if any)."""
    path = Path(path)
    if not path.is_file():
        raise ParseError(f"{path}: no such IR file")
    text = decode_text(path.read_bytes(), str(path))
    side = sidecar_path(path)
    res: dict[str, np.ndarray] = {}
    if side.is_file():
        try:
            with np.load(side, allow_pickle=False) as z:
                res = {k: z[k] for k in z.files}
        except Exception as e:  # a corrupt sidecar is a user-facing error
            raise ParseError(f"{side}: cannot read the constants sidecar: {e}") from None
    return parse_module(text, res, filename=str(path))
