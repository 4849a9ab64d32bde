"""Is dimension 0 of a compiled function a batch axis?

The runtime runs an artifact on any batch size, and splits a batch into chunks, by treating
dimension 0 of every input and output as a batch of independent samples. That is only right when
the program never mixes the samples: ``MatMul [3,4] x [4,5]`` with both operands as inputs,
``Flatten(axis=0)``, a reduction or softmax over axis 0, or 0-d inputs have no batch axis at all.

:func:`batch_size` decides it conservatively on the compiled IR (any stage). Every input and
output must have rank >= 1 and the same dimension 0, ``N`` (taken from the first input). The
analysis tracks the values that carry the batch on axis 0, starting from the function's
arguments, through every op in order; each op has a rule (:data:`RULES`) saying whether its
results carry the batch when it reads a batched value, or why they do not. An op that reads no
batched value produces non-batched values. Every output must carry the batch. When in doubt the
answer is None: running the artifact at the compiled shapes only is always right.

Loops. An op with regions (a loop, such as an ODE solve, which becomes labels and branches in the
core programs) keeps the batch only when its trip count and every branch condition treat the
samples alike (a counter, not a reduction over the batch): chunks of a batch would otherwise take
different paths than the whole. Nothing here proves that yet, so such an op that reads a batched
value decides None (with its name in the reason), and its programs run whole, at the compiled
shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cimc.ir.core import Func, Op, Value
from cimc.ir.types import TensorType

# A rule looks at an op that reads at least one batched value (``batched[i]`` says whether
# operand ``i`` is batched; ``n`` is the batch size). It returns True when every result carries
# the batch on axis 0, False when the results carry no batch and do not depend on it, or a
# message saying why the op mixes or depends on the samples.
Rule = Callable[[Op, Sequence[bool], int], bool | str]

# Slice ends at or beyond this are "to the end of the axis", whatever the batch size.
OPEN_END = 2**31 - 1

# Ops without operands (their results never carry the batch) and terminators (handled apart).
NO_OPERANDS = ("nn.constant",)
TERMINATORS = ("return", "yield")


@dataclass(frozen=True)
class BatchAnalysis:
    """The outcome of :func:`analyze_batch`.

    ``size`` is the compiled batch size, or None when dimension 0 is not a batch axis; then
    ``reason`` says why (and ``op`` is the op that decided it, if one did). ``batched`` holds the
    values that carry the batch on axis 0 (empty when ``size`` is None).
    """

    size: int | None
    batched: frozenset[Value] = field(repr=False)
    reason: str = ""


# ----------------------------------------------------------------------------- helpers


def _t(v: Value) -> TensorType:
    return v.type


def _carries(t: TensorType, n: int) -> bool:
    """``t`` can hold the batch on axis 0."""
    return t.rank >= 1 and t.shape[0] == n


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _broadcasts_unbatched(t: TensorType, rank: int) -> bool:
    """A non-batched operand broadcast into a result of ``rank`` adds nothing on axis 0."""
    return t.rank < rank or t.shape[0] == 1


def _only_first_batched(op: Op, batched: Sequence[bool], n: int) -> str | None:
    """Operand 0 is batched with rank >= 2; the others (weights, parameters) are not."""
    if not batched[0]:
        return f"{op.name} reads the batch in operand #{batched.index(True)}, not in its input"
    extra = [i for i, b in enumerate(batched) if b and i > 0]
    if extra:
        return f"{op.name} reads the batch in its parameter operand #{extra[0]}"
    if _t(op.operands[0]).rank < 2:
        return f"{op.name} input {_t(op.operands[0])} has no separate batch axis (rank < 2)"
    return None


# ----------------------------------------------------------------------------- rules


def _elementwise(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    """Broadcasting ops: every batched operand has the result's rank and dimension 0 == n; every
    other operand broadcasts without a batch axis (lower rank, or dimension 0 == 1)."""
    out = _t(op.results[0])
    for i, (v, b) in enumerate(zip(op.operands, batched)):
        t = _t(v)
        if b and t.rank != out.rank:
            return f"{op.name} operand #{i} {t} broadcasts its batch axis into {out}"
        if not b and not _broadcasts_unbatched(t, out.rank):
            return f"{op.name} operand #{i} {t} differs per sample of {out} but carries no batch"
    return True


def _per_sample(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    """Ops that map each sample of operand 0 independently (conv, pools, mvm, im2col, ...)."""
    return _only_first_batched(op, batched, n) or True


def _resize(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    bad = _only_first_batched(op, batched, n)
    if bad:
        return bad
    scales, sizes = op.attrs.get("scales") or [], op.attrs.get("sizes") or []
    if not scales or float(scales[0]) != 1.0 or not sizes or int(sizes[0]) != n:
        return f"nn.resize resizes the batch axis (scales {scales}, sizes {sizes})"
    return True


def _gemm(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    """op(A) @ op(B) + C: rows of A are the samples (no trans_a), B is not batched, C is either
    batched per row or broadcast without a batch axis."""
    if not batched[0] or op.attrs.get("trans_a", False):
        return "nn.gemm mixes the samples: the batch is not on the rows of A (trans_a or B/C)"
    if batched[1]:
        return "nn.gemm reads the batch in B (a product between samples)"
    if len(op.operands) > 2:
        c = _t(op.operands[2])
        ok = (c.rank == 2 and c.shape[0] == n) if batched[2] else _broadcasts_unbatched(c, 2)
        if not ok:
            return f"nn.gemm C {c} does not broadcast per sample"
    return True


def _matmul(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    """numpy matmul. The batch may be A's rows (A [n, K] @ B [K, M]), or a leading batch
    dimension of rank >= 3 operands (both batched, or the other one broadcast without it)."""
    a, b = _t(op.operands[0]), _t(op.operands[1])
    b_rank = max(b.rank, 2)
    if batched[0] and batched[1]:
        if a.rank >= 3 and b.rank == a.rank:
            return True
        return f"nn.matmul of {a} and {b}: a product between the samples"
    if batched[0]:
        if a.rank < 2:
            return f"nn.matmul contracts the batch axis of {a}"
        if b_rank > a.rank or (b_rank == a.rank >= 3 and b.shape[0] != 1):
            return f"nn.matmul: {b} puts its own leading dimension before the batch of {a}"
        return True
    if b.rank < 3:
        return f"nn.matmul contracts (or transposes) the batch axis of its second operand {b}"
    if a.rank > b.rank or (a.rank == b.rank and a.shape[0] != 1):
        return f"nn.matmul: {a} puts its own leading dimension before the batch of {b}"
    return True


def _softmax(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    x = _t(op.operands[0])
    if _axis(int(op.attrs["axis"]), x.rank) == 0:
        return f"{op.name} normalises over the batch axis"
    return True


def _layer_norm(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    bad = _only_first_batched(op, batched, n)
    if bad:
        return bad
    if _axis(int(op.attrs["axis"]), _t(op.operands[0]).rank) == 0:
        return "nn.layer_norm normalises over the batch axis"
    return True


def _reduce(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    rank = _t(op.operands[0]).rank
    if 0 in {_axis(int(a), rank) for a in op.attrs["axes"]}:
        return f"{op.name} reduces over the batch axis"
    return True


def _concat(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    if not all(batched):
        i = list(batched).index(False)
        return f"nn.concat joins the batch with operand #{i}, which carries none"
    if _axis(int(op.attrs["axis"]), _t(op.operands[0]).rank) == 0:
        return "nn.concat joins along the batch axis"
    return True


def _split(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    if _axis(int(op.attrs["axis"]), _t(op.operands[0]).rank) == 0:
        return "nn.split cuts the batch axis"
    return True


def _slice(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    rank = _t(op.operands[0]).rank
    a = op.attrs
    for start, end, axis, step in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        whole = start == 0 and step == 1 and end >= OPEN_END
        if _axis(int(axis), rank) == 0 and not whole:
            return f"nn.slice cuts the batch axis ({start}:{end}:{step})"
    return True


def _gather(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    """Batched data gathered along another axis, or (an embedding lookup) a constant table
    indexed along axis 0 by batched indices."""
    x, idx = _t(op.operands[0]), _t(op.operands[1])
    axis = _axis(int(op.attrs["axis"]), x.rank)
    if batched[0] and not batched[1] and axis != 0:
        return True
    if batched[1] and not batched[0] and axis == 0 and idx.rank >= 1:
        return True
    return f"nn.gather along axis {axis} mixes the samples"


def _expand(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    """The batch comes from the input: same rank, so dimension 0 is the input's (the runtime
    puts the run's batch size into the shape attribute)."""
    x, out = _t(op.operands[0]), _t(op.results[0])
    if x.rank != out.rank:
        return f"nn.expand {x} -> {out} adds axes before the batch"
    return True


def _tile(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    if int(op.attrs["repeats"][0]) != 1:
        return "nn.tile repeats the batch axis"
    return True


def _sequence_first(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    return f"{op.name} runs over axis 0 of its input (sequence first; the batch is axis 1)"


def _transpose(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    perm = op.attrs["perm"]
    if not perm or int(perm[0]) != 0:
        return f"nn.transpose moves the batch axis (perm {perm})"
    return True


def _reshape(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    x, out = _t(op.operands[0]), _t(op.results[0])
    if not _carries(out, n):
        return f"nn.reshape {x} -> {out} does not keep dimension 0 (the batch of {n})"
    return True


def _pad(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    rank = _t(op.operands[0]).rank
    pads = op.attrs["pads"]
    if pads[0] != 0 or pads[rank] != 0:
        return f"nn.pad pads the batch axis (pads {pads})"
    return True


def _shape(op: Op, batched: Sequence[bool], n: int) -> bool | str:
    """The shape of a batched value without its dimension 0 does not depend on the batch."""
    rank = _t(op.operands[0]).rank
    start = _axis(int(op.attrs.get("start", 0)), rank)
    end = _axis(int(op.attrs.get("end", rank)), rank)
    start, end = min(max(start, 0), rank), min(max(end, 0), rank)
    if start < 1 and end > start:
        return "nn.shape reads the batch size"
    return False


ELEMENTWISE = (
    "nn.add", "nn.sub", "nn.mul", "nn.div", "nn.pow", "nn.prelu", "nn.relu", "nn.leaky_relu",
    "nn.sigmoid", "nn.tanh", "nn.hard_sigmoid", "nn.hard_swish", "nn.clip", "nn.erf",
    "nn.gelu", "nn.sqrt", "nn.exp", "nn.neg", "nn.cast", "nn.identity", "cim.transfer",
    "nn.max", "nn.min", "nn.reciprocal", "nn.where", "nn.equal", "nn.less", "nn.less_equal",
    "nn.greater", "nn.greater_equal", "nn.not", "nn.and", "nn.or", "nn.xor",
)
PER_SAMPLE = (
    "nn.conv", "nn.conv_transpose", "nn.max_pool", "nn.avg_pool", "nn.global_avg_pool",
    "nn.global_max_pool", "nn.lrn", "nn.batch_norm", "cim.im2col", "cim.mvm", "cim.xbar_mvm",
)

RULES: dict[str, Rule] = {
    **{name: _elementwise for name in ELEMENTWISE},
    **{name: _per_sample for name in PER_SAMPLE},
    "nn.resize": _resize,
    "nn.gemm": _gemm,
    "nn.matmul": _matmul,
    "nn.softmax": _softmax,
    "nn.log_softmax": _softmax,
    "nn.layer_norm": _layer_norm,
    "nn.reduce_sum": _reduce,
    "nn.reduce_mean": _reduce,
    "nn.reduce_max": _reduce,
    "nn.reduce_min": _reduce,
    "nn.expand": _expand,
    "nn.tile": _tile,
    "nn.lstm": _sequence_first,
    "nn.gru": _sequence_first,
    "nn.concat": _concat,
    "nn.split": _split,
    "nn.slice": _slice,
    "nn.gather": _gather,
    "nn.transpose": _transpose,
    "nn.reshape": _reshape,
    "nn.pad": _pad,
    "nn.shape": _shape,
}


# ----------------------------------------------------------------------------- analysis


def _reads(op: Op, batched: set[Value]) -> bool:
    """Whether ``op`` (or any op in its regions) reads a batched value."""
    return any(v in batched for inner in op.walk() for v in inner.operands)


def _op_result(op: Op, batched: set[Value], n: int) -> bool | str:
    if op.regions:
        return f"{op.name} has regions; their batch behaviour is not analysed"
    rule = RULES.get(op.name)
    if rule is None:
        return f"{op.name} has no batching rule"
    keeps = rule(op, [v in batched for v in op.operands], n)
    if keeps is True:
        for r in op.results:
            if not _carries(_t(r), n):
                return f"{op.name} result {_t(r)} has no batch axis of size {n}"
    return keeps


def _fail(reason: str, op: Op | None = None) -> BatchAnalysis:
    where = f" (at {op.loc})" if op is not None and op.loc else ""
    return BatchAnalysis(None, frozenset(), reason + where)


def analyze_batch(func: Func) -> BatchAnalysis:
    """Decide whether dimension 0 of ``func``'s inputs and outputs is a batch axis; see the
    module docstring for the rules."""
    if not func.args:
        return _fail("the function has no inputs")
    names = func.input_names
    for i, a in enumerate(func.args):
        if _t(a).rank == 0:
            return _fail(f"input '{names[i]}' is 0-d: it has no dimension 0")
    n = _t(func.args[0]).shape[0]
    if n < 1:
        return _fail(f"input '{names[0]}' {_t(func.args[0])} is empty in dimension 0")
    for i, a in enumerate(func.args):
        if not _carries(_t(a), n):
            return _fail(
                f"input '{names[i]}' {_t(a)} does not share dimension 0 with input "
                f"'{names[0]}' {_t(func.args[0])}"
            )
    batched: set[Value] = set(func.args)
    for op in func.body.ops:
        if op.name in TERMINATORS or not _reads(op, batched):
            continue
        keeps = _op_result(op, batched, n)
        if isinstance(keeps, str):
            return _fail(keeps, op)
        if keeps:
            batched.update(op.results)
    out_names = func.output_names
    for i, v in enumerate(func.outputs):
        if v not in batched:
            return _fail(f"output '{out_names[i]}' {_t(v)} does not carry the batch of {n}")
    return BatchAnalysis(n, frozenset(batched))


def batch_size(func: Func) -> int | None:
    """The compiled batch size N when dimension 0 of every input and output is a batch axis the
    runtime may vary and split into chunks; None otherwise (run at the compiled shapes only)."""
    return analyze_batch(func).size
