"""The op registry: for every op name, its arity, attributes, legal stages, type inference
(``infer``) and numpy semantics (``evaluate``).

``infer(attrs, *operand_types)`` returns a TensorType or a list of them;
``evaluate(attrs, *arrays)`` returns an array or a list of them; the optional
``work(attrs, operand_shapes, result_shapes)`` counts the elements of digital work one execution
costs (the runtime's report charges it): the multiply-accumulates of products such as
``nn.matmul``; without it, the result elements. Ops with regions get a
keyword argument ``regions``: one callable per region, taking and returning lists of arrays.
``attrs`` passed to both has every optional attribute filled in with its default.

Op families live in ``cimc/ops/``; importing ``cimc.ops`` registers them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cimc.errors import CimcError, VerifyError
from cimc.ir.types import TensorType

# Stages, in pipeline order. "nn": after import and canonicalisation; "cim": crossbar-level work
# (mvm on constant weights, im2col, tiles) mixed with digital nn ops.
STAGES = ("nn", "cim")

# Attributes any op may carry: "layer" names the model layer an op came from (for reports);
# "chip" and "core" say where a placed op runs.
COMMON_ATTRS = ("layer", "chip", "core")


@dataclass(frozen=True)
class OpDef:
    name: str
    infer: Callable[..., Any]
    evaluate: Callable[..., Any]
    operands: tuple[int, int | None] = (1, 1)
    attrs: tuple[str, ...] = ()
    optional: dict[str, Any] = field(default_factory=dict)
    stages: frozenset[str] = frozenset(STAGES)
    regions: int = 0
    summary: str = ""
    work: Callable[..., int] | None = None

    def work_of(self, attrs: dict[str, Any], operands: list[tuple[int, ...]],
                results: list[tuple[int, ...]]) -> int:
        """Elements of digital work of one execution (see the module docstring)."""
        if self.work is not None:
            return int(self.work(attrs, operands, results))
        return sum(math.prod(s) for s in results)

    def with_defaults(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not self.optional:
            return attrs
        full = dict(self.optional)
        full.update(attrs)
        return full


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name} registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def define(
    name: str,
    *,
    operands: int | tuple[int, int | None] = 1,
    attrs: tuple[str, ...] = (),
    optional: dict[str, Any] | None = None,
    stages: tuple[str, ...] | None = None,
    regions: int = 0,
    infer: Callable[..., Any],
    summary: str,
    work: Callable[..., int] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form: ``@define("nn.relu", infer=same_type, summary=...)`` on the evaluate fn."""

    def deco(evaluate: Callable[..., Any]) -> Callable[..., Any]:
        n = (operands, operands) if isinstance(operands, int) else operands
        default_stages = ("cim",) if name.startswith("cim.") else STAGES
        register(
            OpDef(
                name=name,
                infer=infer,
                evaluate=evaluate,
                operands=n,
                attrs=attrs,
                optional=dict(optional or {}),
                stages=frozenset(stages or default_stages),
                regions=regions,
                summary=summary,
                work=work,
            )
        )
        return evaluate

    return deco


def _load() -> None:
    import cimc.ops  # noqa: F401  (registers every op family)


def get(name: str) -> OpDef | None:
    if not _REGISTRY:
        _load()
    return _REGISTRY.get(name)


def lookup(name: str) -> OpDef:
    opdef = get(name)
    if opdef is None:
        raise VerifyError(f"unknown op '{name}'")
    return opdef


def all_ops() -> dict[str, OpDef]:
    if not _REGISTRY:
        _load()
    return dict(sorted(_REGISTRY.items()))


def infer_types(name: str, types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    """The result types of op ``name`` on operands of ``types``. Attributes come from files and
    models: an infer function that trips over one it did not expect (a number where it wants a
    list, ...) makes a VerifyError here, for every op, rather than a traceback."""
    opdef = lookup(name)
    try:
        out = opdef.infer(opdef.with_defaults(attrs), *types)
    except CimcError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, ZeroDivisionError) as e:
        raise VerifyError(
            f"{name}: its attributes or operand types are not valid for it "
            f"({type(e).__name__}: {e})"
        ) from None
    return [out] if isinstance(out, TensorType) else list(out)


# ----------------------------------------------------------------------------- infer helpers


def same_type(attrs: dict[str, Any], x: TensorType, *rest: TensorType) -> TensorType:
    """Result has the type of the first operand."""
    return x


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise VerifyError(f"shapes {', '.join(map(str, shapes))} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_type(attrs: dict[str, Any], *types: TensorType) -> TensorType:
    """Numpy broadcasting of all operands; dtype of the first."""
    return TensorType(broadcast_shapes(*(t.shape for t in types)), types[0].dtype)


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise VerifyError(f"{what} {axis} out of range for rank {rank}")
    return axis % rank if rank else 0
