"""Pass "dce": dead-code elimination."""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir.core import Block, Module
from cimc.ops import registry
from cimc.passes.base import Pass, PassContext


def remove_dead_ops(block: Block) -> int:
    """Remove ops of ``block`` (and nested regions) whose results are all unused and that have
    no side effects (terminators and the ops the registry marks with ``effects`` have). Returns
    how many were removed."""
    removed = 0
    used: set = set()
    for op in reversed(block.ops):
        kept = op.name in ("return", "yield") or registry.lookup(op.name).effects
        if not kept and op.results and not any(r in used for r in op.results):
            block.remove(op)
            removed += 1
            continue
        for r in op.regions:
            removed += remove_dead_ops(r)
        for inner in op.walk():
            used.update(inner.operands)
    return removed


@dataclass
class DCE(Pass):
    """Remove ops whose results are never used.

    Stage: any -> same. Test: tests/passes/test_dce.py.
    """

    name = "dce"

    def run(self, module: Module, ctx: PassContext) -> None:
        for f in module.funcs:
            remove_dead_ops(f.body)
