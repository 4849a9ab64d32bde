"""Pass "ode-unroll": every ``ode.solve`` becomes its solver's stages inside an ``ode.loop``.

The algorithm is :class:`cimc.ops.ode.Solver`, the one ``ode.solve``'s semantics run eagerly;
here it runs over an IR builder (:class:`IRBackend`), so the loop computes exactly what the op
did (docs/ode.md):

- before the loop: the carried state (the state ``x``, time ``t``, step ``h`` or the step cell's
  level and state, counters; ``k1`` for first-same-as-last tableaus) and, for drift control, the
  cell's first write;
- the loop body, one try of a step: the step size (read from the cell at the chip's clock for
  drift control), every stage's f-call and axpy, the error estimate
  ``RMS(h sum_i e_i k_i / (atol + rtol max(|x|, |x_new|)))``, accept or reject, the next step
  size (the classic controller, or the cell's grow and shrink writes), a check that the state
  is finite, the statistics, and the condition ``t < t1 and steps < max_steps [and not steady]``;
- after it: the max_steps check and the final statistics.

Each f-call is a copy of the field's ops (its ``layer`` names kept); the field's constants move
out of the loop first, so every copy reads the same weights: ``tile`` and ``place`` then put
all stages of all iterations on the crossbars of one evaluation. Scalars are ``f64``, the
state keeps its dtype. The solve's options go to ``ctx.ode`` (the manifest's ``ode``).

Stage: nn or cim (ode.solve) -> the same (ode.loop). Test: tests/passes/test_ode_unroll.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.core import Block, Builder, Func, Module, Op, Value
from cimc.ops import registry
from cimc.ops.ode import OdeConfig, Solver
from cimc.passes.base import Pass, PassContext


@dataclass
class OdeInfo:
    """The compiled ODE solve, for the manifest's ``ode`` (what ``cimc report`` shows): the
    solve's options (ode-unroll) and the drift schedule with how it was chosen
    (drift-step-schedule)."""

    solve: dict[str, Any] = field(default_factory=dict)
    schedule: Any = None  # drift_step_schedule.DriftReport

    def to_dict(self) -> dict[str, Any]:
        return {**self.solve, "schedule": None if self.schedule is None
                else self.schedule.to_dict()}


def clone_ops(ops: list[Op], builder: Builder, mapping: dict[Value, Value]) -> None:
    """Copy ``ops`` (and their regions) to ``builder``, reading ``mapping[v]`` for ``v``;
    ``mapping`` is extended with the copies' results."""
    for op in ops:
        regions = [_clone_block(r, mapping) for r in op.regions]
        new = builder.create(op.name, [mapping.get(v, v) for v in op.operands], dict(op.attrs),
                             [r.type for r in op.results], regions)
        new.loc = op.loc
        mapping.update(zip(op.results, new.results))


def _clone_block(block: Block, mapping: dict[Value, Value]) -> Block:
    new = Block([a.type for a in block.args])
    mapping.update(zip(block.args, new.args))
    clone_ops(block.ops, Builder(new), mapping)
    return new


@dataclass
class IRBackend:
    """The :class:`~cimc.ops.ode.Backend` that builds IR: ops at ``builder``, constants (one
    per value) at ``consts``, f-calls as copies of ``region``."""

    builder: Builder
    consts: Builder
    region: Block
    cache: dict[tuple[str, tuple[int, ...], bytes], Value] = field(default_factory=dict)

    def op(self, name: str, *operands: Value, **attrs: Any) -> Value:
        return self.builder.create(name, list(operands), attrs).result

    def effect(self, name: str, *operands: Value, **attrs: Any) -> None:
        self.builder.create(name, list(operands), attrs, result_types=[])

    def const(self, value: np.ndarray) -> Value:
        value = np.asarray(value)
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self.cache:
            self.cache[key] = self.consts.constant(value)
        return self.cache[key]

    def field(self, x: Value, t: Value | None) -> Value:
        mapping = {self.region.args[0]: x}
        if t is not None:
            mapping[self.region.args[1]] = t
        body = self.region.ops
        clone_ops(body[:-1], self.builder, mapping)
        return mapping.get(body[-1].operands[0], body[-1].operands[0])


def hoist_constants(region: Block, before: Op) -> None:
    """Move the region's constants (and those of regions nested in it) before ``before``."""
    b = Builder.before(before)
    for op in list(region.walk()):
        if op.name == "nn.constant":
            op.parent.remove(op)
            b.block.insert(b.index, op)
            b.index += 1


def unroll(func: Func, op: Op) -> Op:
    """Replace one ``ode.solve`` of ``func``'s body by its loop; returns the ode.loop."""
    attrs = registry.lookup(op.name).with_defaults(op.attrs)
    cfg = OdeConfig.from_attrs(attrs)
    region = op.regions[0]
    if not region.ops or region.ops[-1].name != "yield" or len(region.ops[-1].operands) != 1:
        raise CimcError("ode-unroll: the ode.solve region must end with yield(dx)")
    hoist_constants(region, op)
    x0 = op.operands[0]
    solver = Solver(cfg, x0.type.np_dtype, x0.type.rank)
    top = Builder.before(op)
    outer = IRBackend(top, top, region)
    state = solver.init(outer, x0)
    names = list(state)
    body = Block([v.type for v in state.values()])
    inner = IRBackend(Builder(body), top, region, outer.cache)
    cond, nxt = solver.iteration(inner, dict(zip(names, body.args)))
    Builder(body).create("yield", [cond, *(nxt[k] for k in names)], result_types=[])
    loop = top.create("ode.loop", list(state.values()), {"carried": names}, regions=[body])
    x = solver.finish(outer, dict(zip(names, loop.results)))
    func.replace_all_uses(op.result, x)
    op.parent.remove(op)
    return loop


@dataclass
class OdeUnroll(Pass):
    """Expand every ode.solve into its solver's stages inside an ode.loop.

    Stage: nn or cim (ode.solve) -> the same (ode.loop with f-calls, axpys, the error estimate
    and the step control). Test: tests/passes/test_ode_unroll.py.
    """

    name = "ode-unroll"

    def run(self, module: Module, ctx: PassContext) -> None:
        for func in module.funcs:
            for op in [o for o in func.body.ops if o.name == "ode.solve"]:
                attrs = registry.lookup(op.name).with_defaults(op.attrs)
                if ctx.ode is None:
                    ctx.ode = OdeInfo()
                ctx.ode.solve = {k: v for k, v in attrs.items() if k not in ("cell_g", "cell_nu")}
                unroll(func, op)
            nested = next((o for o in func.walk() if o.name == "ode.solve"), None)
            if nested is not None:
                raise CimcError("ode-unroll: an ode.solve inside another op's region; only "
                                "ode.solve in a function body can be unrolled")
