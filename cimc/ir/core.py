"""SSA IR: Module -> Func -> Block -> Op, with Values typed by TensorType.

A value is defined once, either as a block argument or as an op result. Ops may carry regions
(single-block, e.g. the velocity field of a neural ODE). Attributes are plain Python data:
int, float, bool, str, lists of those, and numpy arrays (dense constants).

Nothing here caches shapes outside the IR: a pass that changes a value's type sets ``value.type``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from cimc.ir.types import TensorType
from cimc.ops.registry import infer_types


class Value:
    __slots__ = ("type", "owner", "index")

    def __init__(self, type: TensorType, owner: Op | Block, index: int) -> None:
        self.type = type
        self.owner = owner
        self.index = index

    @property
    def op(self) -> Op | None:
        """The op that defines this value, or None for a block argument."""
        return self.owner if isinstance(self.owner, Op) else None

    def __repr__(self) -> str:
        where = self.owner.name if isinstance(self.owner, Op) else "arg"
        return f"<Value {where}#{self.index} : {self.type}>"


class Op:
    __slots__ = ("name", "operands", "results", "attrs", "regions", "parent", "loc")

    def __init__(
        self,
        name: str,
        operands: Sequence[Value] = (),
        result_types: Sequence[TensorType] = (),
        attrs: dict[str, Any] | None = None,
        regions: Sequence[Block] = (),
        loc: str | None = None,
    ) -> None:
        self.name = name
        self.operands: list[Value] = list(operands)
        self.results: list[Value] = [Value(t, self, i) for i, t in enumerate(result_types)]
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.regions: list[Block] = list(regions)
        for r in self.regions:
            r.parent = self
        self.parent: Block | None = None
        self.loc = loc

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"{self.name} has {len(self.results)} results, not one")
        return self.results[0]

    @property
    def dialect(self) -> str:
        return self.name.split(".", 1)[0] if "." in self.name else ""

    def walk(self) -> Iterator[Op]:
        """This op and every op nested in its regions, in order."""
        yield self
        for r in self.regions:
            yield from r.walk()

    def __repr__(self) -> str:
        return f"<Op {self.name}>"


class Block:
    """A list of ops with typed arguments. Function bodies and op regions are blocks."""

    __slots__ = ("args", "ops", "parent")

    def __init__(self, arg_types: Sequence[TensorType] = ()) -> None:
        self.args: list[Value] = [Value(t, self, i) for i, t in enumerate(arg_types)]
        self.ops: list[Op] = []
        self.parent: Op | Func | None = None

    def add_arg(self, type: TensorType) -> Value:
        v = Value(type, self, len(self.args))
        self.args.append(v)
        return v

    def append(self, op: Op) -> Op:
        op.parent = self
        self.ops.append(op)
        return op

    def insert(self, index: int, op: Op) -> Op:
        op.parent = self
        self.ops.insert(index, op)
        return op

    def remove(self, op: Op) -> None:
        self.ops.remove(op)
        op.parent = None

    @property
    def terminator(self) -> Op | None:
        return self.ops[-1] if self.ops else None

    def walk(self) -> Iterator[Op]:
        for op in list(self.ops):
            yield from op.walk()


class Func:
    """A function: a body block whose arguments are the inputs and whose last op is ``return``.

    ``input_names``/``output_names`` keep the model's tensor names (the runtime's feed names).
    """

    def __init__(
        self,
        name: str,
        arg_types: Sequence[TensorType] = (),
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.body = Block(arg_types)
        self.body.parent = self
        self.attrs: dict[str, Any] = dict(attrs or {})
        if input_names is not None:
            self.attrs["input_names"] = list(input_names)
        if output_names is not None:
            self.attrs["output_names"] = list(output_names)

    @property
    def args(self) -> list[Value]:
        return self.body.args

    @property
    def return_op(self) -> Op:
        term = self.body.terminator
        if term is None or term.name != "return":
            raise ValueError(f"function @{self.name} does not end with return")
        return term

    @property
    def outputs(self) -> list[Value]:
        return self.return_op.operands

    @property
    def input_names(self) -> list[str]:
        return list(self.attrs.get("input_names") or [f"input{i}" for i in range(len(self.args))])

    @property
    def output_names(self) -> list[str]:
        n = len(self.outputs)
        return list(self.attrs.get("output_names") or [f"output{i}" for i in range(n)])

    def walk(self) -> Iterator[Op]:
        return self.body.walk()

    def uses(self) -> dict[Value, list[Op]]:
        """Map each used value to the ops that use it (recomputed on every call)."""
        users: dict[Value, list[Op]] = {}
        for op in self.walk():
            for v in op.operands:
                users.setdefault(v, []).append(op)
        return users

    def replace_all_uses(self, old: Value, new: Value) -> None:
        for op in self.walk():
            op.operands = [new if v is old else v for v in op.operands]

    def replace_uses_map(self, mapping: dict[Value, Value]) -> None:
        """Replace many values in one walk."""
        if not mapping:
            return
        for op in self.walk():
            op.operands = [mapping.get(v, v) for v in op.operands]


class Module:
    def __init__(self, funcs: Sequence[Func] = (), attrs: dict[str, Any] | None = None) -> None:
        self.funcs: list[Func] = list(funcs)
        self.attrs: dict[str, Any] = dict(attrs or {})

    @property
    def main(self) -> Func:
        for f in self.funcs:
            if f.name == "main":
                return f
        if len(self.funcs) == 1:
            return self.funcs[0]
        raise ValueError("module has no @main function")

    def walk(self) -> Iterator[Op]:
        for f in self.funcs:
            yield from f.walk()


class Builder:
    """Creates ops at an insertion point, inferring result types from the op registry."""

    def __init__(self, block: Block, index: int | None = None, loc: str | None = None) -> None:
        self.block = block
        self.index = len(block.ops) if index is None else index
        self.loc = loc

    @staticmethod
    def before(op: Op) -> Builder:
        assert op.parent is not None
        return Builder(op.parent, op.parent.ops.index(op), loc=op.loc)

    def create(
        self,
        name: str,
        operands: Sequence[Value] = (),
        attrs: dict[str, Any] | None = None,
        result_types: Sequence[TensorType] | None = None,
        regions: Sequence[Block] = (),
    ) -> Op:
        attrs = dict(attrs or {})
        if result_types is None:
            result_types = infer_types(name, [v.type for v in operands], attrs)
        op = Op(name, operands, result_types, attrs, regions, loc=self.loc)
        self.block.insert(self.index, op)
        self.index += 1
        return op

    def constant(self, value: np.ndarray) -> Value:
        value = np.asarray(value, order="C")
        return self.create("nn.constant", [], {"value": value}, [TensorType.of(value)]).result
