"""Reference interpreter: runs a module with each op's numpy semantics from the registry.

This is what every pass is checked against: run the module before and after, compare outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cimc.errors import CimcError
from cimc.ops import registry
from cimc.ir.core import Block, Func, Module, Op, Value


def _last_uses(block: Block) -> dict[int, list[Value]]:
    """For each op index, the values whose last use in this block is that op (to free memory)."""
    last: dict[Value, int] = {}
    for i, op in enumerate(block.ops):
        for inner in op.walk():
            for v in inner.operands:
                last[v] = i
    out: dict[int, list[Value]] = {}
    for v, i in last.items():
        out.setdefault(i, []).append(v)
    return out


Observer = Callable[[Op, list[np.ndarray], list[np.ndarray]], None]


def run_block(block: Block, args: Sequence[np.ndarray], env: dict[Value, np.ndarray],
              observe: Observer | None = None) -> list[np.ndarray]:
    """Execute ``block`` with ``args`` bound to its arguments; returns the terminator's operands.
    ``observe(op, inputs, results)`` sees every op executed, in regions too (calibration)."""
    env = dict(env)
    for v, a in zip(block.args, args):
        env[v] = a
    frees = _last_uses(block)
    for i, op in enumerate(block.ops):
        if op.name in ("return", "yield"):
            return [env[v] for v in op.operands]
        opdef = registry.lookup(op.name)
        attrs = opdef.with_defaults(op.attrs)
        inputs = [env[v] for v in op.operands]
        try:
            if op.regions:
                runners = [functools.partial(run_block, r, env=env, observe=observe)
                           for r in op.regions]
                out = opdef.evaluate(attrs, *inputs, regions=runners)
            else:
                out = opdef.evaluate(attrs, *inputs)
        except CimcError:
            raise
        except Exception as e:
            where = f" at {op.loc}" if op.loc else ""
            raise CimcError(f"interpreter: {op.name}{where} failed: {e}") from e
        outs = out if isinstance(out, (list, tuple)) else [out]
        if len(outs) != len(op.results):
            raise CimcError(f"interpreter: {op.name} produced {len(outs)} results, expected {len(op.results)}")
        for v, a in zip(op.results, outs):
            a = np.asarray(a)
            if a.dtype != v.type.np_dtype:
                a = a.astype(v.type.np_dtype)
            env[v] = a
        if observe is not None:
            observe(op, inputs, [env[v] for v in op.results])
        for v in frees.get(i, ()):
            env.pop(v, None)  # env is this block's own copy: dropping a dead value frees it
    raise CimcError("interpreter: block has no terminator")


def run_func(func: Func, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``func`` on inputs given by name (or in order); returns outputs by name."""
    names = func.input_names
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise CimcError(f"interpreter: missing inputs {missing}; the function takes {names}")
        args = [inputs[n] for n in names]
    else:
        args = list(inputs)
    for name, v, a in zip(names, func.args, args):
        if tuple(np.shape(a)) != v.type.shape:
            raise CimcError(f"interpreter: input {name!r} has shape {np.shape(a)}, expected {v.type.shape}")
    args = [np.asarray(a, dtype=v.type.np_dtype) for a, v in zip(args, func.args)]
    outs = run_block(func.body, args, {})
    return dict(zip(func.output_names, outs))


def run(module: Module, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    return run_func(module.main, inputs)
