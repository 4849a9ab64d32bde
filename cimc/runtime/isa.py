"""The core program parser: text (``core_NNN.s``) to :class:`Program` (docs/isa.md is the spec).

A program is one instruction per line; ``;`` starts a comment (outside strings). Directives
(``.core``, ``.xbar``, ``.const``) come first, then instructions ``mnemonic D.., S.., key=JSON``.
Every error is an :class:`cimc.errors.ArtifactError` naming ``core_003.s:LINE`` and what was
expected there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cimc.errors import ArtifactError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KWARG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)\Z", re.DOTALL)


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Instr:
    """One instruction: ``mnemonic dsts..., srcs..., key=value...`` at ``file:line``."""

    mnemonic: str
    dsts: tuple[str, ...]
    srcs: tuple[str, ...]
    kwargs: dict[str, Any]
    line: int
    text: str

    def where(self, file: str) -> str:
        return f"{file}:{self.line}"


@dataclass(frozen=True)
class XbarDecl:
    """``.xbar X rows=R cols=K layer="..." tile=[i, j]``."""

    index: int
    rows: int
    cols: int
    layer: str
    tile: tuple[int, ...]
    line: int


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


# ------------------------------------------------------------------------------ instruction specs

Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_ints(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


_TYPE_NAMES: dict[Check, str] = {
    _is_int: "an integer",
    _is_num: "a number",
    _is_str: "a string",
    _is_ints: "a list of integers",
    _is_bool: "true or false",
}


@dataclass(frozen=True)
class Spec:
    """Operand counts and keyword arguments of one mnemonic."""

    usage: str
    dsts: int  # -1: given by the 'results' keyword (dop)
    srcs: tuple[int, int | None]
    required: dict[str, Check] = field(default_factory=dict)
    optional: dict[str, Check] = field(default_factory=dict)
    open_kwargs: bool = False  # dop: any further keyword is an attribute of the op


SPECS: dict[str, Spec] = {
    "input": Spec('input D, name="x"', 1, (0, 0), {"name": _is_str}),
    "output": Spec('output S, name="y"', 0, (1, 1), {"name": _is_str}),
    "send": Spec("send S, to=CORE", 0, (1, 1), {"to": _is_int}),
    "recv": Spec("recv D, from=CORE", 1, (0, 0), {"from": _is_int}),
    "slice": Spec("slice D, S, start=A, stop=B", 1, (1, 1), {"start": _is_int, "stop": _is_int}),
    "im2col": Spec(
        "im2col D, S, kernel_shape=[..], strides=[..], pads=[..], dilations=[..]", 1, (1, 1),
        {"kernel_shape": _is_ints, "strides": _is_ints, "pads": _is_ints, "dilations": _is_ints},
    ),
    "mvm": Spec(
        "mvm D, S, xbar=X, dac_bits=B, dac_range=R[, dac_signed=false], adc_bits=B, adc_range=R",
        1, (1, 1),
        {"xbar": _is_int, "dac_bits": _is_int, "adc_bits": _is_int},
        {"dac_range": _is_num, "adc_range": _is_num, "dac_signed": _is_bool},
    ),
    "dop": Spec(
        'dop D.., S.., op="nn.NAME", results=N, attrs...', -1, (0, None), {"op": _is_str},
        {"results": _is_int}, open_kwargs=True,
    ),
    "halt": Spec("halt", 0, (0, 0)),
}


# ------------------------------------------------------------------------------ lexing


def _strip_comment(line: str) -> str:
    """Drop a ``;`` comment that is not inside a double-quoted string."""
    in_str = esc = False
    for i, ch in enumerate(line):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == ";":
            return line[:i]
    return line


def _split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` (',' or whitespace) outside brackets and strings; drop empty parts."""
    parts, depth, start, in_str, esc = [], 0, 0, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif depth == 0 and (ch == sep or (sep == " " and ch.isspace())):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


class _Ctx:
    """Error helper bound to one file and line."""

    def __init__(self, file: str, line: int) -> None:
        self.file, self.line = file, line

    def error(self, msg: str) -> ArtifactError:
        return ArtifactError(f"{self.file}:{self.line}: {msg}")


def _json_value(text: str, key: str, ctx: _Ctx) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ctx.error(
            f"value of '{key}' is not valid JSON: {text.strip()!r} (expected a number, a "
            'double-quoted string or a list, e.g. key=3, key="x", key=[1, 2])'
        ) from None


def _kwarg(token: str, ctx: _Ctx) -> tuple[str, Any] | None:
    m = _KWARG.match(token)
    if m is None:
        return None
    return m.group(1), _json_value(m.group(2), m.group(1), ctx)


# ------------------------------------------------------------------------------ directives


def _directive_args(rest: str, usage: str, ctx: _Ctx) -> tuple[str, dict[str, Any]]:
    tokens = _split_top(rest, " ")
    if not tokens or _kwarg(tokens[0], ctx) is not None:
        raise ctx.error(f"expected {usage}")
    kwargs: dict[str, Any] = {}
    for tok in tokens[1:]:
        kv = _kwarg(tok, ctx)
        if kv is None:
            raise ctx.error(f"unexpected {tok!r}; expected key=value arguments ({usage})")
        if kv[0] in kwargs:
            raise ctx.error(f"argument '{kv[0]}' given twice ({usage})")
        kwargs[kv[0]] = kv[1]
    return tokens[0], kwargs


def _take(kwargs: dict[str, Any], key: str, check: Check, usage: str, ctx: _Ctx,
          default: Any = ...) -> Any:
    if key not in kwargs:
        if default is ...:
            raise ctx.error(f"missing argument '{key}' (expected {usage})")
        return default
    value = kwargs.pop(key)
    if not check(value):
        raise ctx.error(f"'{key}' must be {_TYPE_NAMES[check]}, got {json.dumps(value)} "
                        f"(expected {usage})")
    return value


def _no_extra(kwargs: dict[str, Any], usage: str, ctx: _Ctx) -> None:
    if kwargs:
        raise ctx.error(f"unknown argument(s) {', '.join(map(repr, kwargs))} (expected {usage})")


def _int_token(tok: str, what: str, usage: str, ctx: _Ctx) -> int:
    if not re.fullmatch(r"\d+", tok):
        raise ctx.error(f"{what} must be a non-negative integer, got {tok!r} (expected {usage})")
    return int(tok)


def _parse_directive(name: str, rest: str, prog: Program, seen_core: bool, ctx: _Ctx) -> None:
    if name == ".core":
        usage = ".core ID chip=C"
        if seen_core:
            raise ctx.error("a second .core directive; a program has exactly one, on its first "
                            "line")
        first, kw = _directive_args(rest, usage, ctx)
        prog.core = _int_token(first, "the core id", usage, ctx)
        prog.chip = _take(kw, "chip", _is_int, usage, ctx, 0)
        _no_extra(kw, usage, ctx)
        return
    if not seen_core:
        raise ctx.error("expected '.core ID chip=C' before any other line")
    if name == ".xbar":
        usage = '.xbar X rows=R cols=K layer="..." tile=[i, j]'
        first, kw = _directive_args(rest, usage, ctx)
        index = _int_token(first, "the crossbar index", usage, ctx)
        if index in prog.xbars:
            raise ctx.error(f"crossbar {index} declared twice (first at line "
                            f"{prog.xbars[index].line})")
        rows = _take(kw, "rows", _is_int, usage, ctx)
        cols = _take(kw, "cols", _is_int, usage, ctx)
        layer = _take(kw, "layer", _is_str, usage, ctx, "")
        tile = tuple(_take(kw, "tile", _is_ints, usage, ctx, []))
        _no_extra(kw, usage, ctx)
        if rows < 1 or cols < 1:
            raise ctx.error(f"rows and cols must be >= 1, got rows={rows} cols={cols}")
        prog.xbars[index] = XbarDecl(index, rows, cols, layer, tile, ctx.line)
        return
    if name == ".const":
        usage = '.const CNAME name="..."'
        first, kw = _directive_args(rest, usage, ctx)
        if not _NAME.match(first):
            raise ctx.error(f"{first!r} is not a buffer name (expected {usage})")
        if first in prog.consts:
            raise ctx.error(f"constant buffer '{first}' declared twice")
        cname = _take(kw, "name", _is_str, usage, ctx)
        _no_extra(kw, usage, ctx)
        prog.consts[first] = ConstDecl(first, cname, ctx.line)
        return
    raise ctx.error(f"unknown directive '{name}'; expected one of .core, .xbar, .const")


# ------------------------------------------------------------------------------ instructions


def _parse_instr(text: str, ctx: _Ctx) -> Instr:
    head, _, rest = text.partition(" ")
    mnemonic = head.strip()
    spec = SPECS.get(mnemonic)
    if spec is None:
        raise ctx.error(f"unknown instruction '{mnemonic}'; expected one of "
                        + ", ".join(SPECS))
    operands: list[str] = []
    kwargs: dict[str, Any] = {}
    for tok in _split_top(rest, ","):
        kv = _kwarg(tok, ctx)
        if kv is None:
            if kwargs:
                raise ctx.error(f"operand {tok!r} after keyword arguments (expected {spec.usage})")
            if not _NAME.match(tok):
                raise ctx.error(f"{tok!r} is not a buffer name (expected {spec.usage})")
            operands.append(tok)
        else:
            if kv[0] in kwargs:
                raise ctx.error(f"argument '{kv[0]}' given twice (expected {spec.usage})")
            kwargs[kv[0]] = kv[1]
    checked: dict[str, Any] = {}
    for key, check in spec.required.items():
        checked[key] = _take(kwargs, key, check, spec.usage, ctx)
    for key, check in spec.optional.items():
        if key in kwargs:
            checked[key] = _take(kwargs, key, check, spec.usage, ctx)
    if spec.open_kwargs:
        checked.update(kwargs)
    else:
        _no_extra(kwargs, spec.usage, ctx)
    n_dst = spec.dsts
    if n_dst < 0:
        n_dst = checked.get("results", 1)
        if n_dst < 1:
            raise ctx.error(f"'results' must be >= 1, got {n_dst}")
    lo, hi = spec.srcs
    n_src = len(operands) - n_dst
    if n_src < lo or (hi is not None and n_src > hi):
        want = n_dst + lo if hi == lo else f"at least {n_dst + lo}"
        raise ctx.error(f"{mnemonic} takes {want} buffer operand(s), got {len(operands)} "
                        f"(expected {spec.usage})")
    _check_instr_values(mnemonic, checked, spec, ctx)
    return Instr(mnemonic, tuple(operands[:n_dst]), tuple(operands[n_dst:]), checked, ctx.line,
                 text)


def _check_instr_values(mnemonic: str, kw: dict[str, Any], spec: Spec, ctx: _Ctx) -> None:
    if mnemonic == "mvm":
        for side in ("dac", "adc"):
            bits = kw[f"{side}_bits"]
            if bits < 0 or bits == 1 or bits > 24:
                raise ctx.error(f"{side}_bits must be 0 (exact) or 2..24, got {bits}")
            rng = kw.get(f"{side}_range")
            if bits and rng is None:
                raise ctx.error(f"missing argument '{side}_range' ({side}_bits={bits} needs a "
                                f"range; expected {spec.usage})")
            if bits and not rng > 0:
                raise ctx.error(f"{side}_range must be > 0, got {rng}")
    elif mnemonic == "slice" and not 0 <= kw["start"] <= kw["stop"]:
        raise ctx.error(f"slice needs 0 <= start <= stop, got start={kw['start']} "
                        f"stop={kw['stop']}")
    elif mnemonic == "im2col":
        k = len(kw["kernel_shape"])
        if k == 0 or len(kw["strides"]) != k or len(kw["dilations"]) != k \
                or len(kw["pads"]) != 2 * k:
            raise ctx.error("im2col needs kernel_shape, strides and dilations of one length n "
                            f"and pads of length 2n, got {kw}")
        if min(kw["kernel_shape"] + kw["strides"] + kw["dilations"]) < 1 or min(kw["pads"]) < 0:
            raise ctx.error("im2col kernel_shape, strides, dilations must be >= 1 and pads >= 0")


# ------------------------------------------------------------------------------ program


def parse_program(text: str, file: str = "<program>") -> Program:
    """Parse one core program; errors name ``file:line`` and what was expected."""
    prog = Program(file=file, core=-1, chip=0)
    seen_core = halted = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        ctx = _Ctx(file, lineno)
        if line.startswith("."):
            if prog.instrs:
                raise ctx.error("directives must come before the first instruction")
            name, _, rest = line.partition(" ")
            _parse_directive(name, rest, prog, seen_core, ctx)
            seen_core = True
            continue
        if not seen_core:
            raise ctx.error("expected '.core ID chip=C' before any instruction")
        if halted:
            raise ctx.error("instruction after 'halt'; halt must be the last instruction")
        instr = _parse_instr(line, ctx)
        prog.instrs.append(instr)
        halted = instr.mnemonic == "halt"
    if not seen_core:
        raise ArtifactError(f"{file}: empty program; expected '.core ID chip=C' and instructions")
    if not halted:
        raise ArtifactError(f"{file}: the program does not end with 'halt'")
    _check_defs(prog)
    return prog


def _check_defs(prog: Program) -> None:
    """Every source buffer is defined earlier (or is a constant); crossbars are declared."""
    defined = set(prog.consts)
    for ins in prog.instrs:
        ctx = _Ctx(prog.file, ins.line)
        for s in ins.srcs:
            if s not in defined:
                raise ctx.error(f"{ins.mnemonic} reads buffer '{s}' before any instruction "
                                "writes it (and no .const declares it)")
        if ins.mnemonic == "mvm" and ins.kwargs["xbar"] not in prog.xbars:
            raise ctx.error(f"mvm uses crossbar {ins.kwargs['xbar']}, which no .xbar directive "
                            f"declares (declared: {sorted(prog.xbars) or 'none'})")
        for d in ins.dsts:
            if d in prog.consts:
                raise ctx.error(f"{ins.mnemonic} writes '{d}', a constant buffer")
        defined.update(ins.dsts)
