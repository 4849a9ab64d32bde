"""The instructions of the core ISA, one definition each (see :mod:`cimc.runtime.isa`).

Each class below is the whole of one instruction: operands, arguments, reference semantics
(``execute``, plain numpy), cost (``work`` and ``charge``, from the target's ``costs``) and the
text of its row in docs/isa.md. Every subclass of :class:`~cimc.runtime.isa.Instruction` defined
here is an instruction of the ISA (:data:`INSTRUCTIONS`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cimc.errors import CimcError
from cimc.ops import registry
from cimc.ops.linalg import patches
from cimc.ops.ode import record_stats, solver_error
from cimc.ops.xbar import adc, dac_codes
from cimc.runtime.device import normal_f32
from cimc.runtime.isa import (
    BLOCKED,
    BOOL,
    HALT,
    INT,
    INTS,
    NUM,
    STR,
    Core,
    ExecError,
    Instr,
    InstrError,
    Instruction,
    Run,
    Timeline,
)

if TYPE_CHECKING:
    from cimc.runtime.program import Program


# ------------------------------------------------------------------------------ graph I/O


def _io(amount: float, core: int, timeline: Timeline) -> None:
    c = timeline.costs
    timeline.spend(core, c.chip_link_latency_ns + amount / c.chip_link_bytes_per_ns,
                   amount * c.chip_link_pj_per_byte * 1e-3, "io")


class Input(Instruction):
    mnemonic = "input"
    usage = 'input D, name="x"'
    semantics = "D = the graph input `x`"
    cost_doc = "its bytes over the chip's I/O link (`chip_link_*`)"
    dsts, srcs = 1, (0, 0)
    required = {"name": STR}

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        core.env[ins.dst] = run.inputs[ins.kwargs["name"]]

    def work(self, ins: Instr, core: Core) -> float:
        return float(core.env[ins.dst].nbytes)

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        _io(amount, core, timeline)


class Output(Instruction):
    mnemonic = "output"
    usage = 'output S, name="y"'
    semantics = "the graph output `y` = S"
    cost_doc = "its bytes over the chip's I/O link (`chip_link_*`)"
    dsts, srcs = 0, (1, 1)
    required = {"name": STR}

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        run.outputs[ins.kwargs["name"]] = core.env[ins.src]

    def work(self, ins: Instr, core: Core) -> float:
        return float(np.asarray(core.env[ins.src]).nbytes)

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        _io(amount, core, timeline)


# ------------------------------------------------------------------------------ transfers


class Send(Instruction):
    mnemonic = "send"
    usage = "send S, to=CORE"
    semantics = ("send buffer S to core CORE (same or other chip); messages from one core to "
                 "another arrive in the order sent")
    cost_doc = ("the sender's link is busy `bytes / link_bytes_per_ns` and the message arrives "
                "`link_latency_ns` later (`chip_link_*` between chips), `link_pj_per_byte` per "
                "byte; free to the same core")
    dsts, srcs = 0, (1, 1)
    required = {"to": INT}
    peer = "to"

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        run.queues.setdefault((core.id, ins.kwargs["to"]), deque()).append(core.env[ins.src])

    def work(self, ins: Instr, core: Core) -> float:
        return float(np.asarray(core.env[ins.src]).nbytes)

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        peer = ins.kwargs["to"]
        arrival = timeline.arrivals.setdefault((core, peer), deque())
        if peer == core:
            arrival.append(timeline.clock[core])
            return
        c = timeline.costs
        if timeline.chips[core] == timeline.chips[peer]:
            busy, latency, pj = amount / c.link_bytes_per_ns, c.link_latency_ns, c.link_pj_per_byte
        else:
            busy, latency = amount / c.chip_link_bytes_per_ns, c.chip_link_latency_ns
            pj = c.chip_link_pj_per_byte
        timeline.spend(core, busy, amount * pj * 1e-3, "link")
        arrival.append(timeline.clock[core] + latency)


class Recv(Instruction):
    mnemonic = "recv"
    usage = "recv D, from=CORE"
    semantics = "D = the next buffer sent from core CORE to this core; waits until it is sent"
    cost_doc = "free, but the core's clock moves on to the message's arrival when that is later"
    dsts, srcs = 1, (0, 0)
    required = {"from": INT}
    peer = "from"

    def execute(self, ins: Instr, core: Core, run: Run) -> int | None:
        q = run.queues.get((ins.kwargs["from"], core.id))
        if not q:
            return BLOCKED
        core.env[ins.dst] = q.popleft()
        return None

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        timeline.wait_until(core, timeline.arrivals[(ins.kwargs["from"], core)].popleft())


# ------------------------------------------------------------------------------ data movement


class Slice(Instruction):
    mnemonic = "slice"
    usage = "slice D, S, start=A, stop=B"
    semantics = "D = S[..., A:B] (the last axis)"
    cost_doc = "per output element, digital (`digital_ns_per_element`, `digital_pj_per_element`)"
    dsts, srcs = 1, (1, 1)
    required = {"start": INT, "stop": INT}

    def check(self, kwargs: Mapping[str, Any]) -> None:
        if not 0 <= kwargs["start"] <= kwargs["stop"]:
            raise InstrError(f"slice needs 0 <= start <= stop, got start={kwargs['start']} "
                             f"stop={kwargs['stop']}")

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        x = core.env[ins.src]
        start, stop = ins.kwargs["start"], ins.kwargs["stop"]
        if np.ndim(x) < 2 or stop > x.shape[-1]:
            raise ExecError(f"slice {start}:{stop} of a buffer of shape {list(np.shape(x))}; the "
                            "last axis is too short")
        core.env[ins.dst] = x[..., start:stop]

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        self.digital(amount, core, timeline)


@dataclass(frozen=True)
class Im2colArgs:
    kernel: list[int]
    strides: list[int]
    pads: list[int]
    dilations: list[int]
    groups: int
    rows: tuple[int, int] | None = None  # the entries of each patch kept; None: all


class Im2col(Instruction):
    mnemonic = "im2col"
    usage = ("im2col D, S, kernel_shape=[..], strides=[..], pads=[..], dilations=[..]"
             "[, groups=G][, rows=[A, B]]")
    semantics = ("the `cim.im2col` op: S `[N, C, *spatial]` -> D `[N, *out, C*prod(kernel)]`, "
                 "each patch ordered by group, then kernel position (row-major), then channel "
                 "within the group: entry `(g*K + k)*C/G + c`; with `rows=[A, B]` only entries "
                 "A..B-1 of each patch, D `[N, *out, B-A]`")
    cost_doc = "per output element, digital"
    dsts, srcs = 1, (1, 1)
    required = {"kernel_shape": INTS, "strides": INTS, "pads": INTS, "dilations": INTS}
    optional = {"groups": INT, "rows": INTS}

    def check(self, kwargs: Mapping[str, Any]) -> None:
        rows = kwargs.get("rows")
        if rows is not None and (len(rows) != 2 or not 0 <= rows[0] < rows[1]):
            raise InstrError(f"im2col rows must be [A, B] with 0 <= A < B, got {rows}")
        k = len(kwargs["kernel_shape"])
        if k == 0 or len(kwargs["strides"]) != k or len(kwargs["dilations"]) != k \
                or len(kwargs["pads"]) != 2 * k:
            raise InstrError("im2col needs kernel_shape, strides and dilations of one length n "
                             f"and pads of length 2n, got {dict(kwargs)}")
        if min(kwargs["kernel_shape"] + kwargs["strides"] + kwargs["dilations"]) < 1 \
                or min(kwargs["pads"]) < 0 or kwargs.get("groups", 1) < 1:
            raise InstrError("im2col kernel_shape, strides, dilations and groups must be >= 1 "
                             "and pads >= 0")

    def decode(self, kwargs: Mapping[str, Any], program: Program) -> Im2colArgs:
        rows = kwargs.get("rows")
        return Im2colArgs(kwargs["kernel_shape"], kwargs["strides"], kwargs["pads"],
                          kwargs["dilations"], kwargs.get("groups", 1),
                          None if rows is None else (rows[0], rows[1]))

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        a: Im2colArgs = ins.args
        x = self.operand(ins, core)
        try:
            core.env[ins.dst] = patches(x, a.kernel, a.strides, a.pads, a.dilations, a.groups,
                                        rows=a.rows)
        except CimcError as e:
            raise ExecError(str(e)) from None

    @staticmethod
    def operand(ins: Instr, core: Core) -> np.ndarray:
        """The source buffer, checked against the kernel's rank and the groups."""
        a: Im2colArgs = ins.args
        x = core.env[ins.src]
        d = len(a.kernel)
        if np.ndim(x) != 2 + d or x.shape[1] % a.groups:
            raise ExecError(f"im2col with a {d}-d kernel and {a.groups} group(s) needs a buffer "
                            f"[N, C, {d} spatial dims] with C divisible by the groups, got "
                            f"{list(np.shape(x))}")
        if a.rows is not None and a.rows[1] > x.shape[1] * math.prod(a.kernel):
            raise ExecError(f"im2col rows {list(a.rows)} go past the patch length "
                            f"{x.shape[1] * math.prod(a.kernel)} of a buffer {list(np.shape(x))}")
        return x

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        self.digital(amount, core, timeline)


# ------------------------------------------------------------------------------ crossbars


@dataclass(frozen=True)
class MvmArgs:
    xbar: int
    rows: int
    cols: int
    layer: str  # the .xbar directive's layer, or core<c>/xbar<x>
    dac_bits: int
    dac_range: float
    dac_signed: bool
    adc_bits: int
    adc_range: float

    @property
    def dac(self) -> tuple[int, float, bool]:
        return (self.dac_bits, self.dac_range, self.dac_signed)


class Mvm(Instruction):
    mnemonic = "mvm"
    usage = "mvm D, S, xbar=X, dac_bits=B, dac_range=R[, dac_signed=false], adc_bits=B, adc_range=R"
    semantics = (
        "D = ADC(DAC(S) · W_X): S `[..., rows]` -> D `[..., cols]`. "
        "DAC: `codes, a = dac_codes(S)`: `q = 2^(bits-1) - 1` (with `dac_signed=false`, for "
        "inputs the compiler proved >= 0: `q = 2^bits - 1` over `[0, dac_range]`), step "
        "`a = dac_range / q`, `codes = clip(rint(S / a), -q (0), q)` (float32, round half to "
        "even); `dac_bits=0`: `codes = S`, `a = 1`. "
        "Array: for each bit slice s of crossbar X (one unless its `.xbar` says `slices=S`; "
        "digit s of every weight in balanced base `B = 2·levels - 1` of the target, each digit "
        "in ±(levels-1)): `z_s = codes @ W_s + e_s`, "
        "`W_s` the programmed conductances of slice s at the run's time (programming noise "
        "and drift), in weight units (column scale folded in), `e_s ~ N(0, codes² @ V_s)` "
        "per output, `V_s` the variance of one read of each device (read noise, drawn anew "
        "for every vector, standard normals from `device.normal_f32` in the order of "
        "`z_s [vectors, cols]`). "
        "ADC: `adc(z_s, a·B^s)`: the codes `clip(rint(z_s · (a·B^s / step)), -n, n)` "
        "with `n = 2^(adc_bits-1) - 1`, `step = adc_range / n`, times `step · gain` (each "
        "factor rounded to float32 once; `adc_bits=0`: `z_s · (a·B^s · gain)`): slice s is "
        "converted over `adc_range / B^s`, its share of the output's range; "
        "`gain` is the global drift compensation's factor (1 without). "
        "D = the sum of the slices' results, in order.")
    cost_doc = "one core-MVM per input vector (`mvm_ns`, `mvm_nj`), every slice at once"
    dsts, srcs = 1, (1, 1)
    required = {"xbar": INT, "dac_bits": INT, "adc_bits": INT}
    optional = {"dac_range": NUM, "dac_signed": BOOL, "adc_range": NUM}

    def check(self, kwargs: Mapping[str, Any]) -> None:
        for side in ("dac", "adc"):
            bits = kwargs[f"{side}_bits"]
            if bits < 0 or bits == 1 or bits > 24:
                raise InstrError(f"{side}_bits must be 0 (exact) or 2..24, got {bits}")
            rng = kwargs.get(f"{side}_range")
            if bits and rng is None:
                raise InstrError(f"missing argument '{side}_range' ({side}_bits={bits} needs a "
                                 f"range; expected {self.usage})")
            if bits and not rng > 0:
                raise InstrError(f"{side}_range must be > 0, got {rng}")

    def decode(self, kwargs: Mapping[str, Any], program: Program) -> MvmArgs | None:
        decl = program.xbars.get(kwargs["xbar"])
        if decl is None:  # reported with the line by the program's name check
            return None
        return MvmArgs(kwargs["xbar"], decl.rows, decl.cols,
                       decl.layer or f"core{program.core}/xbar{decl.index}",
                       kwargs["dac_bits"], float(kwargs.get("dac_range", 0.0)),
                       bool(kwargs.get("dac_signed", True)), kwargs["adc_bits"],
                       float(kwargs.get("adc_range", 0.0)))

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        a: MvmArgs = ins.args
        x = core.env[ins.src]
        if np.ndim(x) < 2 or x.shape[-1] != a.rows:
            raise ExecError(f"mvm on crossbar {a.xbar} ({a.rows} rows) got a buffer of shape "
                            f"{list(np.shape(x))}; its last axis must be {a.rows}")
        xb = run.crossbars[(core.id, a.xbar)]
        codes, step = dac_codes(np.ascontiguousarray(x, np.float32).reshape(-1, a.rows), *a.dac)
        y = None
        for s, (w, var) in enumerate(zip(xb.weights, xb.read_vars)):
            z = codes @ w
            if run.noise and var is not None:
                std = np.sqrt(np.square(codes) @ var)
                z += std * normal_f32(run.rng, z.size).reshape(z.shape)
            ys = adc(z, step * xb.base ** s, a.adc_bits, a.adc_range, xb.gain)
            y = ys if y is None else y + ys
        core.env[ins.dst] = y.reshape(*x.shape[:-1], a.cols)

    def work(self, ins: Instr, core: Core) -> float:
        y = core.env[ins.dst]
        return float(y.size // max(y.shape[-1], 1))

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        c = timeline.costs
        ns = amount * c.mvm_ns
        timeline.spend(core, ns, amount * c.mvm_nj, "mvm")
        timeline.layer_vectors[ins.args.layer] += amount
        timeline.layer_ns[ins.args.layer] += ns


# ------------------------------------------------------------------------------ digital ops

# dop attributes whose first entry is the batch size the model was compiled for.
BATCH_ATTRS = {"nn.reshape": "shape", "nn.resize": "sizes", "nn.expand": "shape"}


@dataclass(frozen=True)
class DopArgs:
    op: str
    kernel: Any  # the op library's evaluate(attrs, *operands)
    attrs: dict[str, Any]  # every attribute, defaults filled in


class Dop(Instruction):
    mnemonic = "dop"
    usage = 'dop D.., S.., op="nn.NAME", results=N, attrs...'
    semantics = (
        "a digital op: D = the numpy kernel of `nn.NAME` (the op library's, which the IR "
        "interpreter uses too) on the operands, with the given attributes. Several results are "
        "listed first and counted by `results` (default 1). An `nn.reshape` or `nn.expand` whose "
        "`shape` (or `nn.resize` whose `sizes`) starts with the batch size the model was "
        "compiled for gets the run's batch size there")
    cost_doc = ("per element of work, digital: the output elements, or a product's "
                "multiply-accumulates (`nn.matmul`, `nn.gemm`, `nn.conv`, `nn.lstm`, ...: the op "
                "library's count)")
    dsts, srcs = -1, (0, None)
    required = {"op": STR}
    optional = {"results": INT}
    open_kwargs = True

    def decode(self, kwargs: Mapping[str, Any], program: Program) -> DopArgs:
        name = kwargs["op"]
        opdef = registry.get(name) if name.startswith("nn.") else None
        if opdef is None or opdef.regions:
            raise InstrError(f"unknown digital op '{name}' (expected an nn.* op the runtime "
                             "knows)")
        attrs = {k: v for k, v in kwargs.items() if k not in ("op", "results")}
        missing = [a for a in opdef.attrs if a not in attrs]
        if missing:
            raise InstrError(f"{name} needs attribute(s) {', '.join(missing)}")
        return DopArgs(name, opdef.evaluate, opdef.with_defaults(attrs))

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        outs = self.call(ins, [core.env[s] for s in ins.srcs], run.batch)
        for d, v in zip(ins.dsts, outs):
            core.env[d] = v

    @staticmethod
    def call(ins: Instr, xs: list[Any], batch: int | None) -> list[np.ndarray]:
        """The kernel on the operand arrays ``xs``: one array per destination."""
        a: DopArgs = ins.args
        attrs = _run_batch(a, xs, batch)
        lo, hi = registry.lookup(a.op).operands
        if len(xs) < lo or (hi is not None and len(xs) > hi):
            raise ExecError(f"{a.op} takes {lo}" + ("" if hi == lo else
                            f" to {hi if hi is not None else 'any'}")
                            + f" operand(s), got {len(xs)}")
        try:
            out = a.kernel(attrs, *xs)
        except CimcError as e:
            raise ExecError(f"{a.op} failed: {e}") from None
        except (ValueError, IndexError, TypeError) as e:
            shapes = ", ".join(str(list(np.shape(x))) for x in xs)
            raise ExecError(f"{a.op} on operands of shapes {shapes} failed: {e}") from None
        outs = out if isinstance(out, list | tuple) else [out]
        if len(outs) != len(ins.dsts):
            raise ExecError(f"{a.op} gives {len(outs)} result(s) but the instruction names "
                            f"{len(ins.dsts)}")
        return outs

    def work(self, ins: Instr, core: Core) -> float:
        a: DopArgs = ins.args
        return float(registry.lookup(a.op).work_of(
            a.attrs, [np.shape(core.env[s]) for s in ins.srcs],
            [np.shape(core.env[d]) for d in ins.dsts]))

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        self.digital(amount, core, timeline)


def _run_batch(a: DopArgs, xs: list[Any], batch: int | None) -> dict[str, Any]:
    """The attributes, with a compiled batch size replaced by the run's."""
    key = BATCH_ATTRS.get(a.op)
    if key is None or batch is None or not xs or np.ndim(xs[0]) == 0:
        return a.attrs
    val = a.attrs.get(key)
    n = np.shape(xs[0])[0]
    if isinstance(val, list) and val and val[0] == batch != n:
        return {**a.attrs, key: [n, *val[1:]]}
    return a.attrs


# ------------------------------------------------------------------------------ control


class _ToLabel(Instruction):
    """What the control instructions share: a ``label`` argument, one digital operation each
    (no mnemonic: not an instruction itself)."""

    cost_doc = "one digital operation"
    required = {"label": STR}
    labels = ("label",)

    def work(self, ins: Instr, core: Core) -> float:
        return 1.0

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        self.digital(amount, core, timeline)


class Jump(_ToLabel):
    mnemonic = "jump"
    usage = 'jump label="L"'
    semantics = "continue at label L (a line `L:` of this program)"

    def execute(self, ins: Instr, core: Core, run: Run) -> int:
        return core.labels[ins.kwargs["label"]]


class Branch(_ToLabel):
    mnemonic = "branch"
    usage = 'branch S, label="L"'
    semantics = ("continue at label L when the one element of S (e.g. a reduction a `dop` "
                 "computed) is nonzero, else with the next instruction")
    srcs = (1, 1)

    def execute(self, ins: Instr, core: Core, run: Run) -> int | None:
        cond = np.asarray(core.env[ins.src])
        if cond.size != 1:
            raise ExecError(f"branch needs a buffer of one element, got shape {list(cond.shape)}")
        return core.labels[ins.kwargs["label"]] if cond.reshape(()).item() else None


class Time(Instruction):
    mnemonic = "time"
    usage = "time D"
    semantics = ("D = the chip time at this core's clock, in seconds since programming "
                 "(float64, no batch dimension): the run's `t` plus the modelled time of the "
                 "instructions this core has executed so far")
    dsts = 1
    reads_clock = True

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        core.env[ins.dst] = np.array(run.now(core.id), np.float64)


# ------------------------------------------------------------------------------ ODE solves


def _one(ins: Instr, core: Core, buf: str) -> float:
    """The one element of buffer ``buf``."""
    v = np.asarray(core.env[buf])
    if v.size != 1:
        raise ExecError(f"{ins.mnemonic} needs a buffer of one element, got shape "
                        f"{list(v.shape)}")
    return float(v.reshape(()))


def _cells(ins: Instr, run: Run) -> Any:
    if run.step_cells is None:
        raise ExecError("this target has no step cell ([step_cell] in its description)")
    return run.step_cells


class CellWrite(Instruction):
    mnemonic = "cellw"
    usage = "cellw G, EN, rows=R"
    semantics = (
        "when the one element of EN is nonzero, write the step cell's next row (rows 0..R-1 in "
        "rotation) to the conductance G·G_max (G: one element, a fraction of the step cell's "
        "G_max; `G_prog = max(G_T + σ(G_T)·ξ, 0)` with the target's `step_cell."
        "programming_noise`) with a drift exponent `ν = |ν_mean(G) + ν_std(G)·ξ|`, both `ξ` "
        "drawn from the run's random stream, at this core's clock; the row's write count goes "
        "up by one (docs/ode.md)")
    cost_doc = "a write (`step_cell.write_ns`, `step_cell.write_nj`) when it writes, else free"
    srcs = (2, 2)
    required = {"rows": INT}
    reads_clock = True

    def check(self, kwargs: Mapping[str, Any]) -> None:
        if kwargs["rows"] < 1:
            raise InstrError(f"cellw needs rows >= 1, got {kwargs['rows']}")

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        cells = _cells(ins, run)
        g, enable = _one(ins, core, ins.srcs[0]), _one(ins, core, ins.srcs[1])
        rows = ins.kwargs["rows"]
        if rows > cells.model.rows:
            raise ExecError(f"cellw rotates over {rows} rows, but the step cell has "
                            f"{cells.model.rows}")
        if enable:
            cells.write(g, run.now(core.id), rows, run.rng)

    def work(self, ins: Instr, core: Core) -> float:
        return 1.0 if _one(ins, core, ins.srcs[1]) else 0.0

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        cell = timeline.step_cell
        if cell is not None and amount:
            timeline.spend(core, amount * cell.write_ns, amount * cell.write_nj, "cell")


class CellRead(Instruction):
    mnemonic = "cellr"
    usage = "cellr D"
    semantics = (
        "D = the conductance of the step cell's last written row at this core's clock, a "
        "fraction of its G_max: `G_prog·(max(τ, τ0)/τ0)^(−ν)/G_max`, τ the time since that "
        "write, τ0 the target's `step_cell.t0_s` (float64, no batch dimension)")
    cost_doc = "a read (`step_cell.read_ns`, `step_cell.read_nj`)"
    dsts = 1
    reads_clock = True

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        cells = _cells(ins, run)
        if not cells.written:
            raise ExecError("cellr reads the step cell before any cellw wrote it")
        core.env[ins.dst] = np.array(cells.read(run.now(core.id)), np.float64)

    def work(self, ins: Instr, core: Core) -> float:
        return 1.0

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        cell = timeline.step_cell
        if cell is not None:
            timeline.spend(core, amount * cell.read_ns, amount * cell.read_nj, "cell")


class Stat(Instruction):
    mnemonic = "stat"
    usage = 'stat S, name="steps"[, append=true]'
    semantics = ("record the one element of S as the run's statistic `name` "
                 "(`chip.last_stats`), or with `append=true` append it to the list of that name; "
                 "nothing else changes")
    cost_doc = "free (the host reads a register)"
    srcs = (1, 1)
    required = {"name": STR}
    optional = {"append": BOOL}

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        record_stats(run.stats, [ins.kwargs["name"]], [_one(ins, core, ins.src)],
                     ins.kwargs.get("append", False))

    def work(self, ins: Instr, core: Core) -> float:
        return 0.0


class Trap(Instruction):
    mnemonic = "trap"
    usage = 'trap S, V, message="..."'
    semantics = ("stop the run with an error (`cimc.errors.SolverError`) when the one element "
                 "of S is nonzero, its message with `{}` replaced by the value of V (one "
                 "element)")
    cost_doc = "one digital operation"
    srcs = (2, 2)
    required = {"message": STR}

    def execute(self, ins: Instr, core: Core, run: Run) -> None:
        if _one(ins, core, ins.srcs[0]):
            raise solver_error(ins.kwargs["message"], _one(ins, core, ins.srcs[1]))

    def work(self, ins: Instr, core: Core) -> float:
        return 1.0

    def charge(self, ins: Instr, amount: float, core: int, timeline: Timeline) -> None:
        self.digital(amount, core, timeline)


class Halt(Instruction):
    mnemonic = "halt"
    usage = "halt"
    semantics = "end of the program (its last line)"

    def execute(self, ins: Instr, core: Core, run: Run) -> int:
        return HALT


def _definitions() -> list[type[Instruction]]:
    found, todo = [], list(Instruction.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.mnemonic]


# Every instruction of the ISA, by mnemonic, in the order defined.
INSTRUCTIONS: dict[str, Instruction] = {cls.mnemonic: cls() for cls in _definitions()}
