"""The fast executor: a plan built from each core program that gives the reference machine's
numbers (bit for bit without read noise; in distribution with it) faster.

:func:`plan_core` reads a :class:`~cimc.runtime.program.Program` and builds its own steps; it
never changes the program's instructions. What it plans:

- an ``im2col`` whose patches only ``mvm`` instructions read keeps them in a reused scratch
  buffer, applies the DAC every reader shares once to its (smaller) input, and lays them out
  for the product: channels-last copies for several channels per group, patch-major blocks
  (``[rows, vectors]`` or per sample ``[rows, positions]``) for one;
- an ``mvm`` multiplies in whatever layout its input has and draws the read noise's normals
  into scratch buffers;
- :mod:`cimc.runtime.fusion` then joins each ``mvm`` with the instructions that only transform
  its result (and with the ``im2col`` in front of it).

Every other instruction runs as the reference does (:class:`~cimc.runtime.reference.InstrStep`).
A matrix product gives the same bits as the reference's ``codes @ W`` (a C-contiguous
``[vectors, rows]`` operand) when it is that product over other rows, or one of the other forms
:func:`same_bits` has checked on this machine's BLAS for the shape at hand.

Programs with an instruction that reads the chip clock are not planned: the reference machine
runs them (it keeps the clock).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ops.linalg import ROWS, SAMPLES, VECTORS, patches
from cimc.ops.xbar import adc, converter_steps, dac_codes
from cimc.runtime.crossbars import CrossbarAt
from cimc.runtime.device import normal_f32
from cimc.runtime.instructions import Im2col, Im2colArgs, MvmArgs
from cimc.runtime.isa import Core, ExecError, Instr, Run

# A product over the vectors of one sample at a time ([N, P, rows] @ W).
PER_SAMPLE = "per_sample"


class Workspace:
    """Scratch arrays reused from chunk to chunk and run to run (one per thread that runs
    chunks), so the large temporaries of an mvm are not allocated again every time."""

    def __init__(self) -> None:
        self._bufs: dict[Any, np.ndarray] = {}

    def get(self, key: Any, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        n = math.prod(shape)
        buf = self._bufs.get(key)
        if buf is None or buf.size < n or buf.dtype != dtype:
            buf = np.empty(max(n, 1), dtype)
            self._bufs[key] = buf
        return buf[:n].reshape(shape)


class Matrices:
    """A crossbar at one time as the fast products want it: its weights and read variances,
    and the two transposed (contiguous) when a product asks for that, made once."""

    def __init__(self, at: CrossbarAt) -> None:
        self.at = at
        self._transposed: tuple[np.ndarray, np.ndarray | None] | None = None

    @property
    def noisy(self) -> bool:
        return self.at.read_vars[0] is not None

    def get(self, transposed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(weight, read variance), both transposed when asked."""
        w, var = self.at.weights[0], self.at.read_vars[0]
        if not transposed:
            return w, var
        if self._transposed is None:
            self._transposed = (np.ascontiguousarray(w.T),
                                None if var is None else np.ascontiguousarray(var.T))
        return self._transposed


@dataclass
class FastRun(Run):
    """A run of fast plans: the crossbars' matrices, scratch buffers, and whether other chunks
    run on threads of this process at the same time (fused steps then use larger blocks)."""

    matrices: Mapping[tuple[int, int], Matrices] = field(default_factory=dict)
    ws: Workspace = field(default_factory=Workspace)
    threaded: bool = False


@functools.cache
def same_bits(form: str, rows: int, cols: int, positions: int) -> bool:
    """Whether a product in ``form`` (ROWS, SAMPLES, PER_SAMPLE) of ``positions`` vectors of
    ``rows`` by a ``[rows, cols]`` matrix gives exactly the bits of the reference product
    ``X @ W`` (X C-contiguous ``[vectors, rows]``) on this machine's BLAS. Checked on random
    numbers: a kernel that sums in another order differs on most of them."""
    rng = np.random.default_rng(0)
    x = rng.random((2, positions, rows), np.float32) - np.float32(0.5)
    w = rng.random((rows, cols), np.float32) - np.float32(0.5)
    want = x.reshape(-1, rows) @ w
    if form == ROWS:
        got = np.ascontiguousarray(x.reshape(-1, rows).T).T @ w
    elif form == SAMPLES:
        got = np.matmul(np.ascontiguousarray(w.T), np.ascontiguousarray(x.transpose(0, 2, 1)))
        got = got.transpose(0, 2, 1).reshape(-1, cols)
    else:
        got = np.matmul(x, w).reshape(-1, cols)
    return bool(np.array_equal(got, want))


def mvm_operand(x: np.ndarray, rows: int, prefer: str | None = None) -> tuple[np.ndarray, str]:
    """``x [..., rows]`` as the operand of one matrix product, without copying a view that
    :func:`~cimc.ops.linalg.patches` made: ``([V, rows], VECTORS)``, ``([rows, V], ROWS)`` or
    ``([N, rows, P], SAMPLES)`` (first when ``prefer`` says so and it applies)."""
    nd = x.ndim
    if nd > 2:
        xs = x.transpose(0, nd - 1, *range(1, nd - 1))  # [N, rows, *O]
        if prefer == SAMPLES and _inner_contiguous(xs, 2):
            return xs.reshape(x.shape[0], rows, -1), SAMPLES
        xt = x.transpose(nd - 1, *range(nd - 1))
        if xt.flags.c_contiguous:
            return xt.reshape(rows, -1), ROWS
        if _inner_contiguous(xs, 2):
            return xs.reshape(x.shape[0], rows, -1), SAMPLES
    return x.reshape(-1, rows), VECTORS


def _inner_contiguous(x: np.ndarray, first: int) -> bool:
    """Axes ``first..`` of ``x`` form one C-contiguous block (so they merge into one axis)."""
    step = x.itemsize
    for size, stride in zip(reversed(x.shape[first:]), reversed(x.strides[first:])):
        if size != 1 and stride != step:
            return False
        step *= size
    return True


# ------------------------------------------------------------------------------ planned steps


class PlannedIm2col:
    """An ``im2col`` whose patches only mvms read (``private``: they live in the workspace)
    or not; with the DAC every reader applies folded in (``dac``)."""

    def __init__(self, ins: Instr, readers: list[PlannedMvm] | None) -> None:
        self.ins, self.where, self.text = ins, ins.where, ins.text
        self.args: Im2colArgs = ins.args
        self.readers = readers or []
        self.private = bool(readers)
        # the DAC every reader applies: quantising the input before copying it into patches is
        # the same as quantising the patches, on far fewer elements
        dacs = {m.args.dac for m in self.readers}
        self.dac = dacs.pop() if len(dacs) == 1 and self.readers[0].args.dac_bits else None
        self.cols = max((m.args.cols for m in self.readers), default=0)
        self.blocked = False  # set by the fused step that makes the patches block by block

    def execute(self, core: Core, run: FastRun) -> None:
        core.env[self.ins.dst] = self.patches(self.input(core), run)

    def input(self, core: Core) -> np.ndarray:
        """The source buffer, checked; its DAC codes when the DAC is folded in (the readers
        then take the patches as codes)."""
        x = Im2col.operand(self.ins, core)
        return x if self.dac is None else dac_codes(x, *self.dac)[0]

    def positions(self, x_shape: tuple[int, ...]) -> int:
        """Patches per sample of an input of ``x_shape``."""
        a = self.args
        d = len(a.kernel)
        out = 1
        for i in range(d):
            span = x_shape[2 + i] + a.pads[i] + a.pads[d + i] - a.dilations[i] * (
                a.kernel[i] - 1) - 1
            if span < 0:
                raise ExecError(f"input spatial shape {list(x_shape[2:])} is smaller than the "
                                f"kernel {a.kernel} with dilations {a.dilations}", self)
            out *= span // a.strides[i] + 1
        return out

    def layout(self, x: np.ndarray) -> str:
        """How to lay the patches of ``x`` out: channel-major blocks need one channel per
        group and whole patches; per sample when a crossbar has few columns and a sample many
        positions (and the product in that form gives the reference's bits)."""
        if not self.private or x.shape[1] != self.args.groups or self.args.rows is not None:
            return VECTORS
        p = self.positions(x.shape)
        if p >= 4 * max(self.cols, 1) and all(same_bits(SAMPLES, m.args.rows, m.args.cols, p)
                                             for m in self.readers):
            return SAMPLES
        if all(same_bits(ROWS, m.args.rows, m.args.cols, p) for m in self.readers):
            return ROWS
        return VECTORS

    def patches(self, x: np.ndarray, run: FastRun) -> np.ndarray:
        """The patches of ``x`` (from :meth:`input`), in the workspace when private."""
        a = self.args
        layout = self.layout(x)
        out = scratch = None
        if self.private:
            rows = x.shape[1] * math.prod(a.kernel) if a.rows is None else a.rows[1] - a.rows[0]
            out = run.ws.get((id(self), "patches"), (x.shape[0] * self.positions(x.shape) * rows,),
                             x.dtype)
            if layout == VECTORS:
                d = len(a.kernel)
                padded = [x.shape[2 + i] + a.pads[i] + a.pads[d + i] for i in range(d)]
                size = x.shape[0] * math.prod(padded) * x.shape[1]
                scratch = run.ws.get((id(self), "cl"), (size,), x.dtype)
        try:
            return patches(x, a.kernel, a.strides, a.pads, a.dilations, a.groups, layout=layout,
                           out=out, scratch=scratch, rows=a.rows)
        except CimcError as e:
            raise ExecError(str(e), self) from None


# The ADC of an mvm left to its caller: (the DAC step, the drift-compensation gain).
AdcArgs = tuple[float, float]


class PlannedMvm:
    """An ``mvm``: the reference's numbers by faster products (see the module docstring)."""

    def __init__(self, ins: Instr) -> None:
        self.ins, self.where, self.text = ins, ins.where, ins.text
        self.args: MvmArgs = ins.args
        self.key = (0, self.args.xbar)  # the core is set by plan_core
        self.pre_quantised = False  # the producing im2col applied this DAC
        self.owns_input = False  # only reader of its private input: noise squares it in place

    def execute(self, core: Core, run: FastRun) -> None:
        core.env[self.ins.dst] = self.compute(core.env[self.ins.src], run)[0]

    def compute(self, x: np.ndarray, run: FastRun, defer_adc: bool = False
                ) -> tuple[np.ndarray, AdcArgs | None]:
        """The result (a fresh array or a view of one) and, with ``defer_adc``, the ADC left to
        the caller (:meth:`finish_adc`; None when it was applied). Every map of the ADC is
        non-decreasing, so a max-pool may run before it, exactly."""
        y, how, deferred = self.product(x, run, defer_adc)
        return self.result_view(x.shape, y, how), deferred

    def check(self, x: np.ndarray) -> None:
        a = self.args
        if x.ndim < 2 or x.shape[-1] != a.rows:
            raise ExecError(f"mvm on crossbar {a.xbar} ({a.rows} rows) got a buffer of shape "
                            f"{list(x.shape)}; its last axis must be {a.rows}", self)

    def product(self, x: np.ndarray, run: FastRun, defer_adc: bool = False,
                out: np.ndarray | None = None, prefer: str | None = None,
                normals: np.ndarray | None = None) -> tuple[np.ndarray, str, AdcArgs | None]:
        """ADC(DAC(x) @ W) as the product lays it out: ``[N, cols, P]`` (SAMPLES) or
        ``[V, cols]``, written to ``out`` when given; the layout; the deferred ADC (see
        :meth:`compute`). ``normals``: the read noise's standard normals, one per output
        (drawn here when None)."""
        self.check(x)
        a = self.args
        mats = run.matrices[self.key]
        m, how = mvm_operand(x, a.rows, prefer)
        xq, in_step, owned = self._dac(m, run.ws)
        noisy = run.noise and mats.noisy
        weight, read_var = mats.get(how == SAMPLES)
        per = x.shape[0] if how == VECTORS and x.ndim > 2 and self._per_sample(x) else None
        if how == SAMPLES:  # [N, rows, P] -> y [N, cols, P]
            y = np.matmul(weight, xq, out=out)
        elif per is not None:  # [N, P, rows] -> y [N * P, cols]
            y = np.matmul(xq.reshape(per, -1, a.rows), weight,
                          out=None if out is None else out.reshape(per, -1, a.cols))
            y = y.reshape(-1, a.cols)
        else:  # -> y [V, cols]
            y = np.matmul(xq.T if how == ROWS else xq, weight, out=out)
        if noisy:
            self._read_noise(xq, how, read_var, y, run, owned or self.owns_input, per, normals)
        args = (in_step, mats.at.gain)
        if defer_adc and mats.at.gain > 0 and in_step > 0:
            return y, how, args
        self.finish_adc(y, *args)
        return y, how, None

    def _per_sample(self, x: np.ndarray) -> bool:
        """Position-major patches [N, P, rows]: one small product per sample (no packing of a
        huge operand), where that gives the reference's bits."""
        p = x.size // (x.shape[0] * self.args.rows)
        return p > 1 and same_bits(PER_SAMPLE, self.args.rows, self.args.cols, p)

    def result_view(self, shape: tuple[int, ...], y: np.ndarray, how: str) -> np.ndarray:
        """The product ``y`` of an input of ``shape`` as the instruction's result
        ``[*shape[:-1], cols]`` (a view)."""
        lead = shape[:-1]
        cols = self.args.cols
        if how == SAMPLES:
            nd = len(shape)
            return y.reshape(shape[0], cols, *lead[1:]).transpose(0, *range(2, nd), 1)
        return y.reshape(*lead, cols)

    @staticmethod
    def _read_noise(xq: np.ndarray, how: str, var: np.ndarray, y: np.ndarray, run: FastRun,
                    in_place: bool, per: int | None = None, normals: np.ndarray | None = None
                    ) -> None:
        """y += N(0, (x*x) @ var) per output: independent noise on every read of every vector
        (``var`` transposed for SAMPLES). With ``in_place`` the input is squared where it lies
        (nothing reads it afterwards)."""
        sq = np.square(xq, out=xq if in_place else run.ws.get("mvm.sq", xq.shape))
        std = run.ws.get("mvm.std", y.shape)
        if how == SAMPLES:
            np.matmul(var, sq, out=std)
        elif per is not None:
            np.matmul(sq.reshape(per, -1, var.shape[0]), var,
                      out=std.reshape(per, -1, var.shape[1]))
        else:
            np.matmul(sq.T if how == ROWS else sq, var, out=std)
        np.sqrt(std, out=std)
        if normals is None:
            normals = normal_f32(run.rng, std.size, run.ws.get("normal.z", (std.size,)))
        std *= normals.reshape(std.shape)
        y += std

    def _dac(self, x: np.ndarray, ws: Workspace) -> tuple[np.ndarray, float, bool]:
        """The DAC: integer-valued codes and their step (1 when exact), and whether the codes
        live in this step's own scratch array."""
        a = self.args
        if self.pre_quantised:  # the im2col made the patches of DAC codes
            return x, converter_steps(*a.dac)[1], False
        if not a.dac_bits:
            if x.dtype == np.float32:
                return x, 1.0, False
            return x.astype(np.float32), 1.0, True
        xq, step = dac_codes(x, *a.dac, out=ws.get("mvm.xq", x.shape))
        return xq, step, True

    def finish_adc(self, y: np.ndarray, in_step: float, gain: float) -> None:
        """The ADC, in place."""
        a = self.args
        adc(y, in_step, a.adc_bits, a.adc_range, gain)
