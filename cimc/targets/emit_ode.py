"""The ODE part of the emitter (:mod:`cimc.targets.emit`): ``ode.loop`` and the other ``ode.*``
ops as core programs (docs/ode.md, docs/isa.md).

An ``ode.loop`` on core C becomes, in the global order of its body's ops:

- on C, a copy (``dop nn.identity``) of each initial value into the buffer of its carried value;
- on every core that takes part (C, the cores of the body's ops, the senders of its transfers),
  the label ``loopN:`` before its first instruction of the body;
- the body's ops, each on its core;
- on C, copies of the yielded values into the carried buffers (through a temporary when a
  carried value is yielded in another's place); then the condition is sent to every other core
  that takes part, and each core, C last, branches back on it.

The loop's results are the carried buffers on C. The step cell's state (the carried value named
``cell`` and what ``ode.cell_write`` makes) stays in the chip: it has no buffer. ``ode.clock`` is
``time``, ``ode.cell_read`` ``cellr``, ``ode.cell_write`` ``cellw``, ``ode.check`` ``trap`` and
``ode.stat`` one ``stat`` per value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cimc.errors import CimcError
from cimc.ir.core import Op

if TYPE_CHECKING:
    from cimc.targets.emit import _Emitter


def emit_ode(em: _Emitter, op: Op) -> None:
    """The instructions of one ``ode.*`` op."""
    if op.name == "ode.loop":
        _loop(em, op)
        return
    core = em.op_core(op)
    if op.name == "ode.clock":
        core.add("time", [em.define(core, op.result)], [])
    elif op.name == "ode.cell_read":
        core.add("cellr", [em.define(core, op.result)], [])
    elif op.name == "ode.cell_write":
        srcs = [em.read(core, v, op) for v in op.operands[1:3]]
        core.add("cellw", [], srcs, rows=int(op.attrs["rows"]))
        em.tokens.add(op.result)
    elif op.name == "ode.check":
        srcs = [em.read(core, v, op) for v in op.operands]
        core.add("trap", [], srcs, message=op.attrs["message"])
    elif op.name == "ode.stat":
        append = True if op.attrs.get("append") else None
        for name, v in zip(op.attrs["names"], op.operands):
            core.add("stat", [], [em.read(core, v, op)], name=name, append=append)
    else:
        raise CimcError(f"{op.name} has no instruction; run ode-unroll (it expands ode.solve) "
                        "before emitting")


def _loop(em: _Emitter, op: Op) -> None:
    core = em.op_core(op)
    body = op.regions[0]
    names = list(op.attrs.get("carried") or [])
    tokens = {i for i, n in enumerate(names) if n == "cell"}
    tokens |= {i for i, v in enumerate(op.operands) if v in em.tokens}
    for i, (init, arg) in enumerate(zip(op.operands, body.args)):
        if i in tokens:
            em.tokens.add(arg)
            continue
        core.add("dop", [em.define(core, arg)], [em.read(core, init, op)], op="nn.identity")
    cores = {core.id}
    for inner in body.walk():
        if "core" in inner.attrs:
            cores.add(inner.attrs["core"])
        if inner.name == "cim.transfer":
            cores.add(inner.attrs["from"])
    label = f"loop{em.loops}"
    em.loops += 1
    for c in sorted(cores):
        em.core(c).instrs.append({"text": f"{label}:", "comment": "", "label": True})
    for inner in body.ops[:-1]:
        em.op(inner)
    end = body.ops[-1]
    cond = em.read(core, end.operands[0], end)
    copies = []
    for i, (v, arg) in enumerate(zip(end.operands[1:], body.args)):
        if i in tokens or v is arg:
            continue
        src = em.read(core, v, end)
        if v in body.args:  # another carried value: keep it before the copies overwrite it
            tmp = core.new("a")
            core.add("dop", [tmp], [src], op="nn.identity")
            src = tmp
        copies.append((core.buffers[arg], src))
    for dst, src in copies:
        core.add("dop", [dst], [src], op="nn.identity")
    for c in sorted(cores - {core.id}):
        core.add("send", [], [cond], to=c)
        other = em.core(c)
        buf = other.new("b")
        other.add("recv", [buf], [], **{"from": core.id})
        other.add("branch", [], [buf], label=label)
    core.add("branch", [], [cond], label=label)
    for i, (r, arg) in enumerate(zip(op.results, body.args)):
        if i in tokens:
            em.tokens.add(r)
        else:
            core.buffers[r] = core.buffers[arg]
