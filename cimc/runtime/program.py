"""Core program text (``core_NNN.s``, docs/isa.md) to :class:`Program` and back.

A program is one item per line; ``;`` starts a comment (outside strings). Directives (``.core``,
``.xbar``, ``.const``) come first, then instructions ``mnemonic D.., S.., key=JSON`` and labels
``name:``. What each mnemonic takes is its definition's (:mod:`cimc.runtime.instructions`):
this module only knows the syntax. Every error is an :class:`cimc.errors.ArtifactError` naming
``core_003.s:LINE`` and what was expected there. :func:`format_instr` prints an instruction the
way :func:`parse_program` reads it (the emitter writes programs through it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cimc.errors import ArtifactError
from cimc.runtime.instructions import INSTRUCTIONS
from cimc.runtime.isa import INT, INTS, STR, Instr, InstrError, Instruction, Kind

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KWARG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)\Z", re.DOTALL)
_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:\Z")


@dataclass(frozen=True)
class XbarDecl:
    """``.xbar X rows=R cols=K layer="..." tile=[i, j] slices=S``."""

    index: int
    rows: int
    cols: int
    layer: str
    tile: tuple[int, ...]
    line: int
    slices: int = 1


@dataclass(frozen=True)
class ConstDecl:
    """``.const CNAME name="..."``: buffer CNAME holds ``const/<name>`` of weights.npz."""

    buffer: str
    name: str
    line: int


@dataclass
class Program:
    """A parsed core program."""

    file: str
    core: int
    chip: int
    xbars: dict[int, XbarDecl] = field(default_factory=dict)
    consts: dict[str, ConstDecl] = field(default_factory=dict)
    instrs: list[Instr] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # name -> index of its instruction


# ------------------------------------------------------------------------------ lexing


def _outside_strings(text: str) -> Iterator[tuple[int, str]]:
    """(index, character) of every character of ``text`` outside double-quoted strings (the
    quotes themselves included, backslash escapes inside strings skipped)."""
    in_str = esc = False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        else:
            in_str = ch == '"'
            yield i, ch


def _scan(text: str, stop: str) -> int:
    """Index of the first ``stop`` character outside double-quoted strings (len: none)."""
    return next((i for i, ch in _outside_strings(text) if ch in stop), len(text))


def _split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` (',' or whitespace) outside brackets and strings; drop empty parts."""
    parts, depth, start = [], 0, 0
    for i, ch in _outside_strings(text):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif depth == 0 and (ch == sep or (sep == " " and ch.isspace())):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _kwarg(token: str) -> tuple[str, Any] | None:
    m = _KWARG.match(token)
    if m is None:
        return None
    key, text = m.group(1), m.group(2)
    try:
        return key, json.loads(text)
    except json.JSONDecodeError:
        raise InstrError(
            f"value of '{key}' is not valid JSON: {text.strip()!r} (expected a number, a "
            'double-quoted string or a list, e.g. key=3, key="x", key=[1, 2])') from None


def _take(kwargs: dict[str, Any], key: str, kind: Kind, usage: str, default: Any = ...) -> Any:
    if key not in kwargs:
        if default is ...:
            raise InstrError(f"missing argument '{key}' (expected {usage})")
        return default
    value = kwargs.pop(key)
    if not kind.check(value):
        raise InstrError(f"'{key}' must be {kind.name}, got {json.dumps(value)} "
                         f"(expected {usage})")
    return value


def _no_extra(kwargs: dict[str, Any], usage: str) -> None:
    if kwargs:
        raise InstrError(f"unknown argument(s) {', '.join(map(repr, kwargs))} (expected {usage})")


# ------------------------------------------------------------------------------ directives


def _directive_args(rest: str, usage: str) -> tuple[str, dict[str, Any]]:
    tokens = _split_top(rest, " ")
    if not tokens or _kwarg(tokens[0]) is not None:
        raise InstrError(f"expected {usage}")
    kwargs: dict[str, Any] = {}
    for tok in tokens[1:]:
        kv = _kwarg(tok)
        if kv is None:
            raise InstrError(f"unexpected {tok!r}; expected key=value arguments ({usage})")
        if kv[0] in kwargs:
            raise InstrError(f"argument '{kv[0]}' given twice ({usage})")
        kwargs[kv[0]] = kv[1]
    return tokens[0], kwargs


def _int_token(tok: str, what: str, usage: str) -> int:
    if not re.fullmatch(r"\d+", tok):
        raise InstrError(f"{what} must be a non-negative integer, got {tok!r} (expected {usage})")
    return int(tok)


def _parse_directive(name: str, rest: str, prog: Program, line: int) -> None:
    if name == ".core":
        usage = ".core ID chip=C"
        if prog.core >= 0:
            raise InstrError("a second .core directive; a program has exactly one, on its first "
                             "line")
        first, kw = _directive_args(rest, usage)
        prog.core = _int_token(first, "the core id", usage)
        prog.chip = _take(kw, "chip", INT, usage, 0)
        _no_extra(kw, usage)
        return
    if prog.core < 0:
        raise InstrError("expected '.core ID chip=C' before any other line")
    if name == ".xbar":
        usage = '.xbar X rows=R cols=K layer="..." tile=[i, j][ slices=S]'
        first, kw = _directive_args(rest, usage)
        index = _int_token(first, "the crossbar index", usage)
        if index in prog.xbars:
            raise InstrError(f"crossbar {index} declared twice (first at line "
                             f"{prog.xbars[index].line})")
        rows = _take(kw, "rows", INT, usage)
        cols = _take(kw, "cols", INT, usage)
        layer = _take(kw, "layer", STR, usage, "")
        tile = tuple(_take(kw, "tile", INTS, usage, []))
        slices = _take(kw, "slices", INT, usage, 1)
        _no_extra(kw, usage)
        if rows < 1 or cols < 1 or slices < 1:
            raise InstrError(f"rows, cols and slices must be >= 1, got rows={rows} cols={cols} "
                             f"slices={slices}")
        prog.xbars[index] = XbarDecl(index, rows, cols, layer, tile, line, slices)
        return
    if name == ".const":
        usage = '.const CNAME name="..."'
        first, kw = _directive_args(rest, usage)
        if not _NAME.match(first):
            raise InstrError(f"{first!r} is not a buffer name (expected {usage})")
        if first in prog.consts:
            raise InstrError(f"constant buffer '{first}' declared twice")
        cname = _take(kw, "name", STR, usage)
        _no_extra(kw, usage)
        prog.consts[first] = ConstDecl(first, cname, line)
        return
    raise InstrError(f"unknown directive '{name}'; expected one of .core, .xbar, .const")


# ------------------------------------------------------------------------------ instructions


def _parse_instr(text: str, prog: Program, line: int) -> Instr:
    head, _, rest = text.partition(" ")
    op = INSTRUCTIONS.get(head.strip())
    if op is None:
        raise InstrError(f"unknown instruction '{head.strip()}'; expected one of "
                         + ", ".join(INSTRUCTIONS))
    operands: list[str] = []
    kwargs: dict[str, Any] = {}
    for tok in _split_top(rest, ","):
        kv = _kwarg(tok)
        if kv is None:
            if kwargs:
                raise InstrError(f"operand {tok!r} after keyword arguments (expected {op.usage})")
            if not _NAME.match(tok):
                raise InstrError(f"{tok!r} is not a buffer name (expected {op.usage})")
            operands.append(tok)
        else:
            if kv[0] in kwargs:
                raise InstrError(f"argument '{kv[0]}' given twice (expected {op.usage})")
            kwargs[kv[0]] = kv[1]
    checked: dict[str, Any] = {}
    for key, kind in op.required.items():
        checked[key] = _take(kwargs, key, kind, op.usage)
    for key, kind in op.optional.items():
        if key in kwargs:
            checked[key] = _take(kwargs, key, kind, op.usage)
    if op.open_kwargs:
        checked.update(kwargs)
    else:
        _no_extra(kwargs, op.usage)
    n_dst = _dst_count(op, checked)
    lo, hi = op.srcs
    n_src = len(operands) - n_dst
    if n_src < lo or (hi is not None and n_src > hi):
        want = n_dst + lo if hi == lo else f"at least {n_dst + lo}"
        raise InstrError(f"{op.mnemonic} takes {want} buffer operand(s), got {len(operands)} "
                         f"(expected {op.usage})")
    op.check(checked)
    return Instr(op, tuple(operands[:n_dst]), tuple(operands[n_dst:]), checked,
                 op.decode(checked, prog), prog.file, line, text)


def _dst_count(op: Instruction, kwargs: Mapping[str, Any]) -> int:
    if op.dsts >= 0:
        return op.dsts
    n = kwargs.get("results", 1)
    if n < 1:
        raise InstrError(f"'results' must be >= 1, got {n}")
    return n


# ------------------------------------------------------------------------------ program


def parse_program(text: str, file: str = "<program>") -> Program:
    """Parse one core program; errors name ``file:line`` and what was expected."""
    prog = Program(file=file, core=-1, chip=0)
    halted = False
    pending: dict[str, int] = {}  # labels waiting for their instruction: name -> line
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw[:_scan(raw, ";")].strip()
        if not line:
            continue
        try:
            if line.startswith("."):
                if prog.instrs or pending:
                    raise InstrError("directives must come before the first instruction")
                name, _, rest = line.partition(" ")
                _parse_directive(name, rest, prog, lineno)
                continue
            if prog.core < 0:
                raise InstrError("expected '.core ID chip=C' before any instruction")
            if halted:
                raise InstrError("instruction after 'halt'; halt must be the last instruction")
            label = _LABEL.match(line)
            if label is not None:
                name = label.group(1)
                if name in prog.labels or name in pending:
                    raise InstrError(f"label '{name}' defined twice")
                pending[name] = lineno
                continue
            instr = _parse_instr(line, prog, lineno)
        except InstrError as e:
            raise ArtifactError(f"{file}:{lineno}: {e}") from None
        for name in pending:
            prog.labels[name] = len(prog.instrs)
        pending.clear()
        prog.instrs.append(instr)
        halted = instr.mnemonic == "halt"
    if prog.core < 0:
        raise ArtifactError(f"{file}: empty program; expected '.core ID chip=C' and instructions")
    if not halted:
        raise ArtifactError(f"{file}: the program does not end with 'halt'")
    _check_names(prog)
    return prog


def _check_names(prog: Program) -> None:
    """Every source buffer is written earlier in the text (or is a constant), crossbars are
    declared, labels exist."""
    defined = set(prog.consts)
    for ins in prog.instrs:
        def error(msg: str, ins: Instr = ins) -> ArtifactError:
            return ArtifactError(f"{ins.where}: {msg}")

        for s in ins.srcs:
            if s not in defined:
                raise error(f"{ins.mnemonic} reads buffer '{s}' before any instruction writes it "
                            "(and no .const declares it)")
        xbar = ins.kwargs.get("xbar") if ins.mnemonic == "mvm" else None
        if xbar is not None and xbar not in prog.xbars:
            raise error(f"mvm uses crossbar {xbar}, which no .xbar directive declares "
                        f"(declared: {sorted(prog.xbars) or 'none'})")
        for key in ins.op.labels:
            if ins.kwargs[key] not in prog.labels:
                raise error(f"{ins.mnemonic} names label '{ins.kwargs[key]}', which the program "
                            f"does not define (labels: {', '.join(prog.labels) or 'none'})")
        for d in ins.dsts:
            if d in prog.consts:
                raise error(f"{ins.mnemonic} writes '{d}', a constant buffer")
        defined.update(ins.dsts)


# ------------------------------------------------------------------------------ printing


def format_instr(mnemonic: str, dsts: Sequence[str] = (), srcs: Sequence[str] = (),
                 kwargs: Mapping[str, Any] | None = None) -> str:
    """One instruction as program text (what :func:`parse_program` reads): the mnemonic, the
    operands, then the keyword arguments in the order of the definition's ``usage`` (others
    after them, in the order given). A value of None is left out."""
    op = INSTRUCTIONS[mnemonic]
    kwargs = {k: v for k, v in (kwargs or {}).items() if v is not None}
    if op.dsts < 0 and len(dsts) > 1:
        kwargs["results"] = len(dsts)
    order = sorted((k for k in [*op.required, *op.optional] if f"{k}=" in op.usage),
                   key=lambda k: op.usage.index(f"{k}="))
    keys = [k for k in order if k in kwargs] + [k for k in kwargs if k not in order]
    parts = [*dsts, *srcs, *(f"{k}={json.dumps(kwargs[k])}" for k in keys)]
    return f"{mnemonic:<7} {', '.join(parts)}".rstrip()
