"""Verifier: structure, arity, attributes, stage legality and result types of every op.

Errors name the op's location (``file:line:col`` for parsed IR, the ONNX node for imported IR).
"""

from __future__ import annotations

from cimc.errors import CimcError, VerifyError
from cimc.ops import registry
from cimc.ir.core import Block, Func, Module, Op, Value


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
        raise VerifyError(f"{_where(op)}{op.name}: {e}") from None
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
    _check_block(func.body, stage, set(), "return")
    names = func.attrs.get("input_names")
    if names is not None and len(names) != len(func.args):
        raise VerifyError(f"@{func.name} has {len(func.args)} arguments but {len(names)} input_names")
    names = func.attrs.get("output_names")
    if names is not None and len(names) != len(func.outputs):
        raise VerifyError(f"@{func.name} returns {len(func.outputs)} values but has {len(names)} output_names")


def verify(module: Module) -> None:
    """Verify ``module`` at the stage named by its ``stage`` attribute (no stage: any op)."""
    stage = module.attrs.get("stage")
    if stage is not None and stage not in registry.STAGES:
        raise VerifyError(f"unknown stage {stage!r}; expected one of {', '.join(registry.STAGES)}")
    seen = set()
    for f in module.funcs:
        if f.name in seen:
            raise VerifyError(f"function @{f.name} is defined twice")
        seen.add(f.name)
        verify_func(f, stage)
