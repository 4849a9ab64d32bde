"""Converter registry: one converter per (ONNX op type, since_version).

A model's opset is normalised with the ONNX schema's ``since_version``: for a node of op type T
in a model of opset N, the schema in force is ``get_schema(T, N).since_version``, and the
converter used is the one registered with the largest ``since`` not above that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx
import onnx.defs


@dataclass(frozen=True)
class Converter:
    op_type: str
    since: int
    fn: Callable
    doc: str


_CONVERTERS: dict[str, list[Converter]] = {}


def converter(op_type: str, since: int = 1) -> Callable[[Callable], Callable]:
    """Register ``fn(ctx, node, attrs) -> list[Value | None]`` for ONNX ``op_type``, opset >= since."""

    def deco(fn: Callable) -> Callable:
        lst = _CONVERTERS.setdefault(op_type, [])
        if any(c.since == since for c in lst):
            raise ValueError(f"converter for {op_type} since {since} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        lst.append(Converter(op_type, since, fn, doc))
        lst.sort(key=lambda c: c.since)
        return fn

    return deco


def register_for(op_type: str, since: int, doc: str, impl: Callable, *args: object) -> None:
    """Register ``impl(ctx, node, attrs, *args)`` for ``op_type`` from opset ``since``, with
    ``doc`` as its docs/supported_ops.md line (one implementation serving several ops)."""

    def fn(ctx, node, attrs):
        return impl(ctx, node, attrs, *args)

    fn.__doc__ = doc
    converter(op_type, since)(fn)


def _load() -> None:
    import cimc.frontend.onnx.ops  # noqa: F401  (registers every converter family)


def all_converters() -> dict[str, list[Converter]]:
    _load()
    return {k: list(v) for k, v in sorted(_CONVERTERS.items())}


def schema_version(op_type: str, opset: int, domain: str = "") -> int | None:
    """The since_version of the schema of ``op_type`` in force at ``opset``; None if unknown."""
    try:
        return onnx.defs.get_schema(op_type, opset, domain).since_version
    except onnx.defs.SchemaError:
        return None


def find(op_type: str, opset: int, domain: str = "") -> Converter | None:
    _load()
    if domain not in ("", "ai.onnx"):
        return None
    version = schema_version(op_type, opset)
    if version is None:
        return None
    best = None
    for c in _CONVERTERS.get(op_type, ()):
        if c.since <= version:
            best = c
    return best
