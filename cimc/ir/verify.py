"""Verifier: structure, arity, attributes, stage legality and result types of every op.

Errors name the op's location (``file:line:col`` for parsed IR, the ONNX node for imported IR).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cimc.errors import CimcError, VerifyError
from cimc.ir.core import Block, Func, Module, Op, Value
from cimc.ops import registry


def _is_count(x: Any, least: int) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= least


def _is_names(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(n, str) for n in x)


Kind = tuple[Callable[[Any], bool], str]
_STRING: Kind = (lambda x: isinstance(x, str), "a string")
_INDEX: Kind = (lambda x: _is_count(x, 0), "an integer >= 0")
_COUNT: Kind = (lambda x: _is_count(x, 1), "an integer >= 1")
_NAMES: Kind = (_is_names, "a list of strings")

# Attributes the IR gives a meaning beyond any one op, and what each must hold (the passes and
# the emitter read them as such).
OP_ATTR_KINDS: dict[str, Kind] = {"layer": _STRING, "chip": _INDEX, "core": _INDEX}
FUNC_ATTR_KINDS: dict[str, Kind] = {"input_names": _NAMES, "output_names": _NAMES}
MODULE_ATTR_KINDS: dict[str, Kind] = {"stage": _STRING, "chips": _COUNT, "cores_per_chip": _COUNT}


def _check_kinds(attrs: Mapping[str, Any], kinds: Mapping[str, Kind], where: str) -> None:
    for key, (ok, what) in kinds.items():
        if key in attrs and not ok(attrs[key]):
            raise VerifyError(f"{where}attribute '{key}' must be {what}, got {attrs[key]!r:.60}")


def _where(op: Op) -> str:
    return f"{op.loc}: " if op.loc else ""


def _check_op(op: Op, stage: str | None, defined: set[Value]) -> None:
    for i, v in enumerate(op.operands):
        if v not in defined:
            raise VerifyError(f"{_where(op)}{op.name} operand #{i} is used before it is defined")
    opdef = registry.get(op.name)
    if opdef is None:
        raise VerifyError(f"{_where(op)}unknown op '{op.name}'")
    lo, hi = opdef.operands
    n = len(op.operands)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
        raise VerifyError(f"{_where(op)}{op.name} takes {want} operands, got {n}")
    missing = [a for a in opdef.attrs if a not in op.attrs]
    if missing:
        raise VerifyError(f"{_where(op)}{op.name} is missing attribute(s) {', '.join(missing)}")
    known = set(opdef.attrs) | set(opdef.optional) | set(registry.COMMON_ATTRS)
    unknown = sorted(set(op.attrs) - known)
    if unknown:
        raise VerifyError(
            f"{_where(op)}{op.name} has unknown attribute(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(known)) or 'none'}"
        )
    _check_kinds(op.attrs, OP_ATTR_KINDS, f"{_where(op)}{op.name}: ")
    if len(op.regions) != opdef.regions:
        raise VerifyError(f"{_where(op)}{op.name} needs {opdef.regions} region(s), has {len(op.regions)}")
    if stage is not None and stage not in opdef.stages:
        raise VerifyError(
            f"{_where(op)}{op.name} is not legal at stage '{stage}' "
            f"(legal at: {', '.join(sorted(opdef.stages))})"
        )
    try:
        want = registry.infer_types(op.name, [v.type for v in op.operands], op.attrs)
    except CimcError as e:
        msg = str(e) if str(e).startswith(op.name) else f"{op.name}: {e}"
        raise VerifyError(f"{_where(op)}{msg}") from None
    got = [r.type for r in op.results]
    if got != want:
        raise VerifyError(
            f"{_where(op)}{op.name} result types ({', '.join(map(str, got))}) do not match the "
            f"inferred ({', '.join(map(str, want))})"
        )


def _check_block(block: Block, stage: str | None, defined: set[Value], terminator: str) -> None:
    defined = set(defined) | set(block.args)
    for i, op in enumerate(block.ops):
        if op.name in ("return", "yield"):
            if i != len(block.ops) - 1:
                raise VerifyError(f"{_where(op)}{op.name} must be the last op of its block")
            if op.name != terminator:
                raise VerifyError(f"{_where(op)}expected {terminator}, found {op.name}")
        for r in op.regions:
            _check_block(r, stage, defined, "yield")
        _check_op(op, stage, defined)
        defined.update(op.results)
    if not block.ops or block.ops[-1].name != terminator:
        raise VerifyError(f"block must end with {terminator}(...)")


def verify_func(func: Func, stage: str | None = None) -> None:
    _check_kinds(func.attrs, FUNC_ATTR_KINDS, f"@{func.name}: ")
    _check_block(func.body, stage, set(), "return")
    names = func.attrs.get("input_names")
    if names is not None and len(names) != len(func.args):
        raise VerifyError(f"@{func.name} has {len(func.args)} arguments but {len(names)} input_names")
    names = func.attrs.get("output_names")
    if names is not None and len(names) != len(func.outputs):
        raise VerifyError(f"@{func.name} returns {len(func.outputs)} values but has {len(names)} output_names")


def verify(module: Module) -> None:
    """Verify ``module`` at the stage named by its ``stage`` attribute (no stage: any op)."""
    _check_kinds(module.attrs, MODULE_ATTR_KINDS, "module: ")
    stage = module.attrs.get("stage")
    if stage is not None and stage not in registry.STAGES:
        raise VerifyError(f"unknown stage {stage!r}; expected one of {', '.join(registry.STAGES)}")
    seen = set()
    for f in module.funcs:
        if f.name in seen:
            raise VerifyError(f"function @{f.name} is defined twice")
        seen.add(f.name)
        verify_func(f, stage)
