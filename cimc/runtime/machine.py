"""The chip machine: programmed crossbars and the execution of the core programs (docs/isa.md).

:class:`Machine` is built once per chip instance. Building it

- programs every crossbar tile (weights.npz levels -> target conductances -> programming noise
  and drift exponents, drawn once from the seed, through :mod:`cimc.runtime.device`);
- compiles each core program into a list of steps with every parameter resolved, so a run does no
  parsing and no per-vector Python work.

:meth:`Machine.execute` runs the programs on one batch (the chip runs a large batch as a few
chunks, possibly in parallel: :mod:`cimc.runtime.workers`): the cores are interleaved (each
runs until it blocks on a ``recv`` whose message has not been sent), a deadlock is reported
with the cores and the instructions they wait at, and every instruction works on the whole
batch at once (one matrix product per ``mvm``, plus one more for the read-noise variance; no
Python loop over vectors).
Patches made by ``im2col`` are laid out so the product reads them without a copy (patch-major,
per sample, or position-major from a channels-last copy of the input), a DAC that every consumer
of the patches applies is applied once, before the copy, and the read noise's normals come from
a quantile table (:func:`fast_normal_f32`). Untraced runs execute each core's fused plan
(:mod:`cimc.runtime.fusion`): every mvm with the instructions that only transform its result.

Per time ``t``, :meth:`Machine.tiles_at` turns the programmed conductances into the matrices an
``mvm`` multiplies by (drift applied, scales folded in, read-noise variance, drift-compensation
gain) and caches them, so repeated runs at the same ``t`` do not redo the drift.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimc.errors import ArtifactError, CimcError, RuntimeInputError
from cimc.runtime import device
from cimc.runtime.artifact import Artifact, TensorSpec
from cimc.runtime.isa import Instr, Program

# IR dtype names (docs/isa.md, manifest inputs/outputs) -> numpy dtypes.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32), "f64": np.dtype(np.float64), "f16": np.dtype(np.float16),
    "i64": np.dtype(np.int64), "i32": np.dtype(np.int32), "i16": np.dtype(np.int16),
    "i8": np.dtype(np.int8), "u8": np.dtype(np.uint8), "i1": np.dtype(np.bool_),
}

# dop attributes whose first entry is the batch size the model was compiled for.
_BATCH_ATTRS = {"nn.reshape": "shape", "nn.resize": "sizes", "nn.expand": "shape"}

_T_CACHE_SIZE = 4


# ------------------------------------------------------------------------------ op kernels


def nn_op(name: str) -> Any:
    """The op library's definition (``cimc.ops.registry.OpDef``) of digital op ``name``: its
    numpy kernel, arity, attributes and their defaults.

    The kernels come from the op library (``cimc.ops``), which the compiler's interpreter uses
    too: one numpy semantics per op. This is the runtime's single call site.
    """
    from cimc.errors import VerifyError
    from cimc.ops.registry import get

    try:
        opdef = get(name)
    except VerifyError:  # pragma: no cover - get() returns None for unknown names
        opdef = None
    if opdef is None or opdef.regions or not name.startswith("nn."):
        raise KeyError(name)
    return opdef


# ------------------------------------------------------------------------------ fast kernels


class Workspace:
    """Scratch arrays reused from chunk to chunk and run to run (one per worker thread), so the
    large temporaries of an mvm are not allocated (and page-faulted) again every time."""

    def __init__(self) -> None:
        self._bufs: dict[Any, np.ndarray] = {}

    def get(self, key: Any, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        n = math.prod(shape)
        buf = self._bufs.get(key)
        if buf is None or buf.size < n or buf.dtype != dtype:
            buf = np.empty(max(n, 1), dtype)
            self._bufs[key] = buf
        return buf[:n].reshape(shape)


def standard_normal_f32(rng: np.random.Generator, shape: tuple[int, ...],
                        ws: Workspace | None = None) -> np.ndarray:
    """Standard normal float32 samples by the Box-Muller transform (exact in distribution).

    About twice as fast as ``Generator.standard_normal`` for float32 on large arrays. With a
    workspace the result lives in it (valid until the next call).
    """
    ws = ws or Workspace()
    n = math.prod(shape)
    half = (n + 1) // 2
    u = ws.get("normal.u", (2, half))
    rng.random(dtype=np.float32, out=u)
    r, theta = u[0], u[1]
    np.subtract(np.float32(1.0), r, out=r)  # (0, 1]: log is finite
    np.log(r, out=r)
    r *= np.float32(-2.0)
    np.sqrt(r, out=r)
    theta *= np.float32(2.0 * np.pi)
    out = ws.get("normal.z", (2 * half,))
    np.cos(theta, out=out[:half])
    np.sin(theta, out=out[half:])
    out[:half] *= r
    out[half:] *= r
    return out[:n].reshape(shape)


# Read noise draws its standard normals by inversion through a table: 16 random bits index one of
# 2^16 quantiles. See fast_normal_f32.
NORMAL_TABLE_BITS = 16


@functools.cache
def normal_table() -> np.ndarray:
    """float32 ``[2^16]``: the standard normal's quantiles at the cell midpoints
    ``(i + 1/2) / 2^16`` (made exactly symmetric), scaled by 1.00001 so that the table's
    variance is exactly 1. The largest entry, 4.325, is the tail cut-off."""
    n = 1 << NORMAL_TABLE_BITS
    nd = statistics.NormalDist()
    upper = np.array([nd.inv_cdf((i + 0.5) / n) for i in range(n // 2, n)])
    q = np.concatenate([-upper[::-1], upper])
    q /= math.sqrt(float(np.mean(q * q)))
    return q.astype(np.float32)


def fast_normal_f32(rng: np.random.Generator, shape: tuple[int, ...],
                    ws: Workspace | None = None, key: Any = "normal.z") -> np.ndarray:
    """Standard normal float32 samples by inversion through :func:`normal_table`.

    Each sample takes 16 bits of the generator's raw output (one 64-bit draw gives four) and
    looks its quantile up, about twice as fast as :func:`standard_normal_f32`. The result is a
    discrete distribution of 2^16 equally likely values that matches the normal's distribution
    function at every multiple of 2^-16, with mean 0 and variance exactly 1, and no samples
    beyond ±4.325 (the normal puts 1.5e-5 of its mass there; its kurtosis is 2.9992, not 3).
    With a workspace the result lives in it, as its array ``key`` (valid until the next call
    with that key).
    """
    n = math.prod(shape)
    raw = rng.bit_generator.random_raw((n + 3) // 4)
    out = np.empty(n, np.float32) if ws is None else ws.get(key, (n,))
    # mode="wrap" skips the bounds check; every uint16 index is in range
    np.take(normal_table(), raw.view(np.uint16)[:n], out=out, mode="wrap")
    return out.reshape(shape)


def im2col(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int],
           dilations: list[int], ws: Workspace | None = None, key: Any = None,
           per_sample: bool = False, channels_last: bool = False) -> np.ndarray:
    """``cim.im2col``: ``x [N, C, *S] -> [N, *O, C*prod(kernel)]``, channel-major patches.

    The result is a view of a patch-major block, filled by one strided copy (which runs without
    the GIL): ``[C*prod(kernel), N, *O]``, or ``[N, C*prod(kernel), *O]`` with ``per_sample``.
    :func:`mvm_operand` hands either to a matrix product without another copy. With a
    workspace, the block is the workspace's array ``key``.

    ``channels_last`` gives the same patches with their entries in another order: position-
    major (kernel positions, then channel), ``[N, *O, prod(kernel)*C]`` (see
    :func:`im2col_channels_last`).
    """
    if channels_last:
        return im2col_channels_last(x, kernel, strides, pads, dilations, ws, key)
    d = len(kernel)
    n, c = x.shape[:2]
    out = _out_size(x.shape[2:], kernel, strides, pads, dilations)
    if any(pads):
        x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[d + i]) for i in range(d)])
    rows = c * math.prod(kernel)
    shape = (n, c, *kernel, *out) if per_sample else (c, *kernel, n, *out)
    patches = np.empty(shape, x.dtype) if ws is None else ws.get(key, shape, x.dtype)
    st = x.strides
    windows = _windows(  # [N, C, *K, *O]: every tap of every patch
        x, (n, c, *kernel, *out),
        (st[0], st[1], *(st[2 + i] * dilations[i] for i in range(d)),
         *(st[2 + i] * strides[i] for i in range(d))))
    # [N, C, *K, *O] view of the patch-major block [C, *K, N, *O]
    dst = patches if per_sample else patches.transpose(d + 1, *range(d + 1),
                                                       *range(d + 2, 2 * d + 2))
    np.copyto(dst, windows)
    if per_sample:
        return patches.reshape(n, rows, *out).transpose(0, *range(2, d + 2), 1)
    return patches.reshape(rows, n, *out).transpose(*range(1, d + 2), 0)


def _out_size(spatial: tuple[int, ...], kernel: list[int], strides: list[int], pads: list[int],
              dilations: list[int]) -> list[int]:
    """Output positions per spatial axis of an im2col (the padded input must fit the kernel)."""
    d = len(kernel)
    padded = [spatial[i] + pads[i] + pads[d + i] for i in range(d)]
    out = [(padded[i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(d)]
    if min(out) < 1:
        raise ValueError(f"input spatial shape {tuple(padded)} (padded) is smaller than the "
                         f"kernel {kernel} with dilations {dilations}")
    return out


def im2col_channels_last(x: np.ndarray, kernel: list[int], strides: list[int],
                         pads: list[int], dilations: list[int], ws: Workspace | None = None,
                         key: Any = None) -> np.ndarray:
    """The patches of ``x [N, C, *S]`` position-major: ``[N, *O, prod(kernel)*C]``, entry
    ``k*C + c`` of a patch being entry ``c*prod(kernel) + k`` of :func:`im2col`'s.

    Copied from a channels-last (and padded) ``[N, *S, C]`` view or copy of ``x``, so that
    every copied run is ``kernel[-1]*C`` elements long (one row of the window over all
    channels) instead of one output row: much faster for many channels. With a workspace, the
    patches (and the channels-last copy) are its arrays ``key`` (and ``(key, "cl")``).
    """
    d = len(kernel)
    n, c = x.shape[:2]
    out = _out_size(x.shape[2:], kernel, strides, pads, dilations)
    xl = x.transpose(0, *range(2, d + 2), 1)  # [N, *S, C]
    if any(pads) or not xl.flags.c_contiguous:
        shape = (n, *(x.shape[2 + i] + pads[i] + pads[d + i] for i in range(d)), c)
        buf = np.empty(shape, x.dtype) if ws is None else ws.get((key, "cl"), shape, x.dtype)
        if any(pads):
            buf.fill(0)
        inner = (slice(None), *(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(d)))
        np.copyto(buf[inner], xl)
        xl = buf
    st = xl.strides
    windows = _windows(  # [N, *O, *K, C]: every tap of every patch
        xl, (n, *out, *kernel, c),
        (st[0], *(st[1 + i] * strides[i] for i in range(d)),
         *(st[1 + i] * dilations[i] for i in range(d)), st[-1]))
    shape = (n, *out, *kernel, c)
    patches = np.empty(shape, x.dtype) if ws is None else ws.get(key, shape, x.dtype)
    np.copyto(patches, windows)
    return patches.reshape(n, *out, c * math.prod(kernel))


def _windows(x: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only strided view of ``x`` (every window of an im2col); the view must stay inside
    ``x``. Made straight from the buffer of a C-contiguous ``x`` (a tenth of the cost of
    ``as_strided``, which matters block after block)."""
    if x.flags.c_contiguous:
        view = np.ndarray(shape, x.dtype, x, 0, strides)
        view.flags.writeable = False
        return view
    return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)


def channels_last_rows(channels: int, positions: int) -> np.ndarray:
    """For position-major patches (:func:`im2col_channels_last`): entry ``k*C + c`` is
    channel-major entry ``c*K + k``; the result maps the first index to the second."""
    return np.arange(channels * positions).reshape(channels, positions).T.ravel()


# The ADC of an mvm left to its caller: (DAC step, or None when the result is in ADC steps
# already; drift-compensation gain), the arguments of MvmStep.finish_adc.
AdcArgs = tuple[float | None, float]

# How an mvm multiplies: "vectors" [V, rows] @ W; "rows" [rows, V].T @ W (patch-major im2col);
# "samples" W.T @ [N, rows, P] per sample (per-sample patch-major im2col).
VECTORS, ROWS, SAMPLES = "vectors", "rows", "samples"


def mvm_operand(x: np.ndarray, rows: int, prefer: str | None = None) -> tuple[np.ndarray, str]:
    """``x [..., rows]`` as the operand of one matrix product, without copying a view that
    :func:`im2col` made: ``([V, rows], VECTORS)``, ``([rows, V], ROWS)`` or
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


def _matmul_per_sample(x: np.ndarray, w: np.ndarray, n: int,
                       out: np.ndarray | None = None) -> np.ndarray:
    """``x [V, K] @ w [K, M] -> [V, M]`` as ``n`` products of ``V/n`` rows each (the same
    numbers; small products run without the packing a single huge one needs)."""
    rows, cols = w.shape
    y = np.matmul(x.reshape(n, -1, rows), w,
                  out=None if out is None else out.reshape(n, -1, cols))
    return y.reshape(-1, cols)


def _inner_contiguous(x: np.ndarray, first: int) -> bool:
    """Axes ``first..`` of ``x`` form one C-contiguous block (so they merge into one axis)."""
    step = x.itemsize
    for size, stride in zip(reversed(x.shape[first:]), reversed(x.strides[first:])):
        if size != 1 and stride != step:
            return False
        step *= size
    return True


def dac_codes(x: np.ndarray, bits: int, max_abs: float, signed: bool = True,
              out: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """DAC codes (integer-valued float32; a new array or ``out``) and the step they are in."""
    n, step = _quant_params(bits, max_abs, signed)
    xq = np.divide(x, np.float32(step), dtype=np.float32, out=out)
    np.rint(xq, out=xq)
    np.clip(xq, -n if signed else 0.0, n, out=xq)
    return xq, step


def dac_values(x: np.ndarray, bits: int, max_abs: float, signed: bool = True) -> np.ndarray:
    """The DAC's output in input units: codes times step (float32, a new array)."""
    xq, step = dac_codes(x, bits, max_abs, signed)
    xq *= np.float32(step)
    return xq


@functools.lru_cache(maxsize=1024)
def _quant_params(bits: int, max_abs: float, signed: bool = True) -> tuple[float, float]:
    """(largest code, step) of a converter: signed symmetric (2^(bits-1) - 1 steps per side)
    or unsigned over [0, max_abs] (2^bits - 1 steps)."""
    n = float(2 ** (bits - 1) - 1 if signed else 2**bits - 1)
    return n, max_abs / n


# ------------------------------------------------------------------------------ crossbar tiles


@dataclass
class Tile:
    """One programmed crossbar of a chip instance."""

    core: int
    index: int
    rows: int
    cols: int
    layer: str
    weight: np.ndarray | None = None  # exact float weights (noiseless devices)
    array: device.ProgrammedArray | None = None
    out_scale: np.ndarray | None = None  # [cols]: µS -> weight units
    gdc_ref: float = 0.0

    @property
    def key(self) -> tuple[int, int]:
        return (self.core, self.index)


@dataclass(frozen=True, eq=False)
class TileAt:
    """A tile frozen at time t: what each mvm multiplies by."""

    weight: np.ndarray  # [rows, cols] float32, weight units (scale folded in)
    read_var: np.ndarray | None  # [rows, cols] float32, variance of one read in weight units²
    gain: float  # global drift compensation factor, applied after the ADC

    @functools.cached_property
    def _variants(self) -> dict[Any, tuple[np.ndarray, np.ndarray | None]]:
        return {}

    def matrices(self, order: bytes | None, scale: float | None, transposed: bool
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """(weight, read_var) with their rows in ``order`` (the bytes of an intp index array,
        hashed once; None: as they are), weight times ``scale`` and read_var times its square
        (None: unscaled), both transposed when asked (contiguous; cached per variant)."""
        key = (order, scale, transposed)
        hit = self._variants.get(key)
        if hit is None:
            w, var = self.weight, self.read_var
            if order is not None:
                rows = np.frombuffer(order, np.intp)
                w, var = w[rows], (None if var is None else var[rows])
            if scale is not None:
                w = w * np.float32(scale)
                var = None if var is None else var * np.float32(scale * scale)
            if transposed:
                w, var = w.T, (None if var is None else var.T)
            hit = (np.ascontiguousarray(w), None if var is None else np.ascontiguousarray(var))
            self._variants[key] = hit
        return hit


def _levels_and_scale(art: Artifact, core: int, x: int, rows: int, cols: int, where: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    lk, sk = f"xbar/{core}/{x}/levels", f"xbar/{core}/{x}/scale"
    for k in (lk, sk):
        if k not in art.weights:
            raise ArtifactError(f"{art.path}/weights.npz: missing '{k}' (declared at {where})")
    levels = np.asarray(art.weights[lk])
    scale = np.asarray(art.weights[sk])
    if levels.shape != (rows, cols):
        raise ArtifactError(f"{art.path}/weights.npz: '{lk}' has shape {list(levels.shape)}, "
                            f"but {where} declares rows={rows} cols={cols}")
    if scale.shape != (cols,):
        raise ArtifactError(f"{art.path}/weights.npz: '{sk}' has shape {list(scale.shape)}, "
                            f"expected [{cols}]")
    if levels.dtype.kind not in "iuf" or scale.dtype.kind != "f":
        raise ArtifactError(f"{art.path}/weights.npz: '{lk}' must be integer or float and "
                            f"'{sk}' float, got {levels.dtype} and {scale.dtype}")
    if not (np.isfinite(levels).all() and np.isfinite(scale).all()):
        raise ArtifactError(f"{art.path}/weights.npz: '{lk}' or '{sk}' holds NaN or Inf")
    return levels, scale.astype(np.float32)


def program_tiles(art: Artifact, rng: np.random.Generator,
                  flips: Mapping[str, np.ndarray] | None = None) -> dict[tuple[int, int], Tile]:
    """Program every crossbar of the artifact (cores and crossbars in ascending order)."""
    target = art.target
    model = device.DeviceModel.from_target(target)
    max_level = target.slice_max_level
    tiles: dict[tuple[int, int], Tile] = {}
    unused = set(flips or ())
    for core in sorted(art.programs):
        prog = art.programs[core]
        for x in sorted(prog.xbars):
            decl = prog.xbars[x]
            where = f"{prog.file}:{decl.line}"
            if decl.rows > target.crossbar.rows or decl.cols > target.weight_cols:
                raise ArtifactError(
                    f"{where}: crossbar {x} uses {decl.rows}x{decl.cols} weights, more than the "
                    f"target's {target.crossbar.rows}x{target.weight_cols}")
            levels, scale = _levels_and_scale(art, core, x, decl.rows, decl.cols, where)
            flip = None if flips is None else flips.get(f"xbar/{core}/{x}/flip")
            if flip is not None:
                unused.discard(f"xbar/{core}/{x}/flip")
                if np.shape(flip) != levels.shape:
                    raise ArtifactError(f"key: 'xbar/{core}/{x}/flip' has shape "
                                        f"{list(np.shape(flip))}, expected {list(levels.shape)}")
                levels = np.where(np.asarray(flip, dtype=bool), -levels, levels)
            tile = Tile(core, x, decl.rows, decl.cols, decl.layer)
            if model.kind == "ideal":
                tile.weight = (levels.astype(np.float32) * scale).astype(np.float32)
            else:
                _program_tile(tile, levels, scale, max_level, model, rng, where)
            tiles[tile.key] = tile
    if unused:
        raise ArtifactError(f"key: {', '.join(sorted(unused)[:3])} name(s) no crossbar of "
                            f"{art.path.name}; is it the key of another artifact?")
    return tiles


def _program_tile(tile: Tile, levels: np.ndarray, scale: np.ndarray, max_level: int,
                  model: device.DeviceModel, rng: np.random.Generator, where: str) -> None:
    lmax = float(max_level) if max_level > 0 else float(np.max(np.abs(levels), initial=0.0))
    lmax = lmax or 1.0
    if np.max(np.abs(levels), initial=0.0) > lmax * (1 + 1e-6):
        raise ArtifactError(f"{where}: crossbar {tile.index} holds levels up to "
                            f"{np.max(np.abs(levels)):g}, beyond the target's ±{lmax:g}")
    g_plus, g_minus = device.levels_to_conductance(levels.astype(np.float32), lmax, model.g_max)
    tile.array = model.program(g_plus, g_minus, rng)
    tile.out_scale = (scale * np.float32(lmax / model.g_max)).astype(np.float32)
    tile.gdc_ref = device.gdc_reference(tile.array.at(0.0).g_eff)


def tile_at(tile: Tile, t: float, compensate: bool) -> TileAt:
    """The matrices one tile multiplies by at time t."""
    if tile.weight is not None:
        return TileAt(tile.weight, None, 1.0)
    state = tile.array.at(t)
    weight = (state.g_eff * tile.out_scale).astype(np.float32)
    var = None
    if state.read_var is not None and np.any(state.read_var > 0):
        var = (state.read_var * np.square(tile.out_scale)).astype(np.float32)
    gain = device.gdc_factor(tile.gdc_ref, state.g_eff) if compensate else 1.0
    return TileAt(weight, var, float(gain))


# ------------------------------------------------------------------------------ steps


class ExecError(Exception):
    """Raised inside a step; the scheduler adds the location of ``step`` (the instruction that
    failed; None: the step being executed)."""

    def __init__(self, message: str, step: Step | None = None) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class RunContext:
    """What the steps of one execution share."""

    tiles: Mapping[tuple[int, int], TileAt]
    rng: np.random.Generator
    noise: bool = True
    ws: Workspace = field(default_factory=Workspace)
    # Set when other chunks run on threads of this process at the same time (each numpy call
    # then hands the GIL over; fused steps use larger blocks: cimc.runtime.fusion).
    threaded: bool = False


class Step:
    """A compiled instruction. ``run`` reads and writes the core's buffer environment."""

    kind = ""

    def __init__(self, core: int, ins: Instr, file: str) -> None:
        self.core = core
        self.ins = ins
        self.where = f"{file}:{ins.line}"
        self.dst = ins.dsts[0] if ins.dsts else ""
        self.src = ins.srcs[0] if ins.srcs else ""

    def run(self, env: dict[str, Any], ctx: RunContext) -> None:  # pragma: no cover
        raise NotImplementedError

    def size(self, env: dict[str, Any]) -> int:
        """The amount of work the report charges: output elements (digital ops)."""
        return int(env[self.dst].size) if self.dst else 0


class InputStep(Step):
    kind = "input"

    def __init__(self, core: int, ins: Instr, file: str) -> None:
        super().__init__(core, ins, file)
        self.name = ins.kwargs["name"]

    def run(self, env: dict[str, Any], ctx: RunContext) -> None:  # fed by the scheduler
        raise AssertionError("input is executed by the scheduler")

    def size(self, env: dict[str, Any]) -> int:
        return int(env[self.dst].nbytes)


class OutputStep(Step):
    kind = "output"

    def __init__(self, core: int, ins: Instr, file: str) -> None:
        super().__init__(core, ins, file)
        self.name = ins.kwargs["name"]

    def size(self, env: dict[str, Any]) -> int:
        return int(env[self.src].nbytes)


class SendStep(Step):
    kind = "send"

    def __init__(self, core: int, ins: Instr, file: str) -> None:
        super().__init__(core, ins, file)
        self.peer = ins.kwargs["to"]

    def size(self, env: dict[str, Any]) -> int:
        return int(env[self.src].nbytes)


class RecvStep(Step):
    kind = "recv"

    def __init__(self, core: int, ins: Instr, file: str) -> None:
        super().__init__(core, ins, file)
        self.peer = ins.kwargs["from"]

    def size(self, env: dict[str, Any]) -> int:
        return int(env[self.dst].nbytes)


class HaltStep(Step):
    kind = "halt"


class SliceStep(Step):
    kind = "slice"

    def __init__(self, core: int, ins: Instr, file: str) -> None:
        super().__init__(core, ins, file)
        self.start, self.stop = ins.kwargs["start"], ins.kwargs["stop"]

    def run(self, env: dict[str, Any], ctx: RunContext) -> None:
        x = env[self.src]
        if x.ndim < 2 or self.stop > x.shape[-1]:
            raise ExecError(f"slice {self.start}:{self.stop} of a buffer of shape "
                            f"{list(x.shape)}; the last axis is too short")
        env[self.dst] = x[..., self.start:self.stop]


class Im2colStep(Step):
    kind = "im2col"

    def __init__(self, core: int, ins: Instr, file: str) -> None:
        super().__init__(core, ins, file)
        kw = ins.kwargs
        self.params = (kw["kernel_shape"], kw["strides"], kw["pads"], kw["dilations"])
        # (bits, range, signed) of the DAC every consumer applies, folded in here (see
        # _fold_dacs): quantising the input before copying it into patches is the same as
        # quantising the patches, on far fewer elements.
        self.dac: tuple[int, float, bool] | None = None
        # True when only mvms read the patches (see _fold_dacs): they can live in the workspace.
        self.private = False
        # Most columns among the crossbars that read the patches; few columns and many
        # positions make the per-sample layout the faster one (see _per_sample).
        self.cols = 0
        # Patches position-major (im2col_channels_last; see _fold_dacs): only mvms that read
        # them whole, with their crossbar rows in the same order, read them.
        self.channels_last = False
        # Set when a fused step makes the patches block by block (cimc.runtime.fusion): then
        # they do not count towards the largest buffer of a run (Trace.peak).
        self.blocked = False

    def positions(self, x_shape: tuple[int, ...]) -> int:
        """Patches per sample of an input of ``x_shape``."""
        try:
            return math.prod(_out_size(x_shape[2:], *self.params))
        except ValueError as e:  # the kernel does not fit
            raise ExecError(str(e), self) from None

    def _per_sample(self, x: np.ndarray) -> bool:
        """Per-sample products (W.T @ [rows, P] for each sample) beat one product over all
        vectors when a crossbar has few columns and a sample many positions."""
        return self.positions(x.shape) >= 4 * max(self.cols, 1)

    def run(self, env: dict[str, Any], ctx: RunContext) -> None:
        env[self.dst] = self.patches(self.input(env), ctx)

    def input(self, env: dict[str, Any]) -> np.ndarray:
        """The source buffer, checked, with the folded DAC applied."""
        x = env[self.src]
        if x.ndim != 2 + len(self.params[0]):
            raise ExecError(f"im2col with a {len(self.params[0])}-d kernel needs a buffer "
                            f"[N, C, {len(self.params[0])} spatial dims], got {list(x.shape)}",
                            self)
        if self.dac is not None:
            x = dac_values(x, *self.dac)
        return x

    def patches(self, x: np.ndarray, ctx: RunContext) -> np.ndarray:
        """The patches of ``x`` (from :meth:`input`), in the workspace when private."""
        try:
            if self.channels_last:
                return im2col_channels_last(x, *self.params, ws=ctx.ws,
                                            key=(id(self), "patches"))
            if self.private:
                return im2col(x, *self.params, ws=ctx.ws, key=(id(self), "patches"),
                              per_sample=self._per_sample(x))
            return im2col(x, *self.params)
        except ValueError as e:
            raise ExecError(str(e), self) from None


class MvmStep(Step):
    kind = "mvm"

    def __init__(self, core: int, ins: Instr, file: str, rows: int, cols: int) -> None:
        super().__init__(core, ins, file)
        kw = ins.kwargs
        self.key = (core, kw["xbar"])
        self.rows, self.cols = rows, cols
        self.dac_bits, self.adc_bits = kw["dac_bits"], kw["adc_bits"]
        self.dac_range = float(kw.get("dac_range", 0.0))
        self.dac_signed = bool(kw.get("dac_signed", True))
        self.pre_quantised = False  # set when the producing im2col applies this DAC
        # set when this mvm is the only reader of its (private, workspace) input, so the read
        # noise may square the input in place (see _fold_dacs)
        self.owns_input = False
        # set when the input is position-major patches: the crossbar's rows in their order
        # (the bytes of an intp index array: a key TileAt.matrices hashes once)
        self.row_order: bytes | None = None
        self.adc_range = float(kw.get("adc_range", 0.0))

    def size(self, env: dict[str, Any]) -> int:
        """Input vectors: one crossbar MVM each."""
        x = env[self.dst]
        return int(x.size // max(x.shape[-1], 1))

    def run(self, env: dict[str, Any], ctx: RunContext) -> None:
        env[self.dst] = self.compute(env, ctx)[0]

    def compute(self, env: dict[str, Any], ctx: RunContext,
                defer_adc: bool = False) -> tuple[np.ndarray, AdcArgs | None]:
        """The mvm's result (a fresh array, or a view of one) and, with ``defer_adc``, the
        arguments of the ADC left to the caller (``finish_adc``; None when it was applied).
        Every map of the ADC is non-decreasing, so a max-pool may run before it, exactly."""
        x = env[self.src]
        y, how, deferred = self.product(x, ctx, defer_adc)
        return self.result_view(x.shape, y, how), deferred

    def product(self, x: np.ndarray, ctx: RunContext, defer_adc: bool = False,
                out: np.ndarray | None = None, prefer: str | None = None
                ) -> tuple[np.ndarray, str, AdcArgs | None]:
        """ADC(DAC(x) @ W) as the product lays it out: ``[N, cols, P]`` (SAMPLES) or
        ``[V, cols]``, written to ``out`` when given; the layout; the deferred ADC (see
        :meth:`compute`). ``prefer=SAMPLES`` keeps a per-sample operand per sample even for a
        batch of one.

        With read noise the scaling from DAC codes to ADC codes is folded into the matrices
        (``x @ (W a)`` for ``(x @ W) a``: the same up to float32 rounding, far below the
        noise); without it the arithmetic is exactly docs/isa.md's."""
        if x.ndim < 2 or x.shape[-1] != self.rows:
            raise ExecError(f"mvm on crossbar {self.key[1]} ({self.rows} rows) got a buffer of "
                            f"shape {list(x.shape)}; its last axis must be {self.rows}")
        tile = ctx.tiles[self.key]
        m, how = mvm_operand(x, self.rows, prefer)
        xq, in_step, owned = self._dac(m, ctx.ws)
        noisy = ctx.noise and tile.read_var is not None
        pre = None
        if noisy:
            pre = in_step / _quant_params(self.adc_bits, self.adc_range)[1] \
                if self.adc_bits else in_step
        weight, read_var = tile.matrices(self.row_order, pre, how == SAMPLES)
        # position-major patches: one small product per sample (no packing of a huge operand)
        per = x.shape[0] if how == VECTORS and self.row_order is not None and x.ndim > 2 \
            else None
        if how == SAMPLES:  # [N, rows, P] -> y [N, cols, P]
            y = np.matmul(weight, xq, out=out)
        elif per is not None:  # [N, P, rows] -> y [N * P, cols]
            y = _matmul_per_sample(xq, weight, per, out)
        else:  # -> y [V, cols]
            y = np.matmul(xq.T if how == ROWS else xq, weight, out=out)
        if noisy:
            self._read_noise(xq, how, read_var, y, ctx, owned or self.owns_input, per)
        args = (None if noisy else in_step, tile.gain)
        if defer_adc and tile.gain > 0 and in_step > 0:
            return y, how, args
        self.finish_adc(y, *args)
        return y, how, None

    def result_view(self, shape: tuple[int, ...], y: np.ndarray, how: str) -> np.ndarray:
        """The product ``y`` of an input of ``shape`` as the instruction's result
        ``[*shape[:-1], cols]`` (a view)."""
        lead = shape[:-1]
        if how == SAMPLES:
            nd = len(shape)
            return y.reshape(shape[0], self.cols, *lead[1:]).transpose(0, *range(2, nd), 1)
        return y.reshape(*lead, self.cols)

    @staticmethod
    def _read_noise(xq: np.ndarray, how: str, var: np.ndarray, y: np.ndarray,
                    ctx: RunContext, in_place: bool, per: int | None = None) -> None:
        """y += N(0, (x*x) @ var) per output: independent noise on every read of every vector
        (``var`` transposed for SAMPLES; ``per``: products per sample, see product). With
        ``in_place`` the input is squared where it lies (nothing reads it afterwards)."""
        sq = np.square(xq, out=xq if in_place else ctx.ws.get("mvm.sq", xq.shape))
        std = ctx.ws.get("mvm.std", y.shape)
        if how == SAMPLES:
            np.matmul(var, sq, out=std)
        elif per is not None:
            _matmul_per_sample(sq, var, per, std)
        else:
            np.matmul(sq.T if how == ROWS else sq, var, out=std)
        np.sqrt(std, out=std)
        std *= fast_normal_f32(ctx.rng, std.shape, ctx.ws)
        y += std

    def _dac(self, x: np.ndarray, ws: Workspace) -> tuple[np.ndarray, float, bool]:
        """The DAC: integer-valued codes and their step (1 when exact), and whether the codes
        live in this step's own scratch array (the workspace's)."""
        if not self.dac_bits or self.pre_quantised:
            if x.dtype == np.float32:
                return x, 1.0, False
            return x.astype(np.float32), 1.0, True
        xq, step = dac_codes(x, self.dac_bits, self.dac_range, self.dac_signed,
                             out=ws.get("mvm.xq", x.shape))
        return xq, step, True

    @property
    def dac(self) -> tuple[int, float, bool]:
        return (self.dac_bits, self.dac_range, self.dac_signed)

    def finish_adc(self, y: np.ndarray, in_step: float | None, gain: float) -> None:
        """The ADC, in place: scale back by the DAC step (``in_step`` None: ``y`` is in ADC
        steps already, see :meth:`product`); clip and quantise; drift-compensation gain."""
        if not self.adc_bits:
            f = gain if in_step is None else in_step * gain
        else:
            n, step = _quant_params(self.adc_bits, self.adc_range)
            if in_step is not None:
                y *= np.float32(in_step / step)
            np.rint(y, out=y)
            np.clip(y, -n, n, out=y)
            f = step * gain
        if f != 1.0:
            y *= np.float32(f)


class DopStep(Step):
    kind = "dop"

    def __init__(self, core: int, ins: Instr, file: str, batch: int | None) -> None:
        super().__init__(core, ins, file)
        self.op = ins.kwargs["op"]
        self.attrs = {k: v for k, v in ins.kwargs.items() if k not in ("op", "results")}
        self.batch_attr = _BATCH_ATTRS.get(self.op)
        self.compiled_batch = batch
        try:
            opdef = nn_op(self.op)
        except KeyError:
            raise ArtifactError(f"{self.where}: unknown digital op '{self.op}' (expected an nn.* "
                                "op the runtime knows)") from None
        self.fn = opdef.evaluate
        self.work = opdef.work_of
        lo, hi = opdef.operands
        n = len(ins.srcs)
        if n < lo or (hi is not None and n > hi):
            raise ArtifactError(f"{self.where}: {self.op} takes {lo}" + (
                "" if hi == lo else f" to {hi if hi is not None else 'any'}")
                + f" operand(s), got {n}")
        missing = [a for a in opdef.attrs if a not in self.attrs]
        if missing:
            raise ArtifactError(f"{self.where}: {self.op} needs attribute(s) "
                                f"{', '.join(missing)}")
        self.attrs = opdef.with_defaults(self.attrs)  # once, not at every call

    def size(self, env: dict[str, Any]) -> int:
        """Elements of work: the op library's count (multiply-accumulates of a product)."""
        return self.work(self.attrs, [np.shape(env[s]) for s in self.ins.srcs],
                         [np.shape(env[d]) for d in self.ins.dsts])

    def run(self, env: dict[str, Any], ctx: RunContext) -> None:
        outs = self.call([env[s] for s in self.ins.srcs])
        for d, v in zip(self.ins.dsts, outs):
            env[d] = v

    def call(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """The kernel on the operand arrays ``xs``: one array per destination."""
        attrs = self._attrs(xs)
        try:
            out = self.fn(attrs, *xs)
        except CimcError as e:
            raise ExecError(f"{self.op} failed: {e}", self) from None
        except (ValueError, IndexError, TypeError) as e:
            shapes = ", ".join(str(list(np.shape(x))) for x in xs)
            raise ExecError(f"{self.op} on operands of shapes {shapes} failed: {e}",
                            self) from None
        outs = out if isinstance(out, list | tuple) else [out]
        if len(outs) != len(self.ins.dsts):
            raise ExecError(f"{self.op} gives {len(outs)} result(s) but the instruction names "
                            f"{len(self.ins.dsts)}", self)
        return outs

    def _attrs(self, xs: list[np.ndarray]) -> dict[str, Any]:
        """The attributes, with a compiled batch size replaced by the run's."""
        key = self.batch_attr
        if key is None or self.compiled_batch is None or not xs or np.ndim(xs[0]) == 0:
            return self.attrs
        val = self.attrs.get(key)
        batch = xs[0].shape[0]
        if isinstance(val, list) and val and val[0] == self.compiled_batch != batch:
            return {**self.attrs, key: [batch, *val[1:]]}
        return self.attrs


# ------------------------------------------------------------------------------ compile


@dataclass
class CoreCode:
    core: int
    chip: int
    file: str
    steps: list[Step]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    # the steps with each mvm fused with the instructions that only transform its result
    # (cimc.runtime.fusion); what untraced runs execute
    plan: list[Step] = field(default_factory=list)


def _compile_core(prog: Program, art: Artifact, batch: int | None) -> CoreCode:
    consts = {}
    for buf, decl in prog.consts.items():
        key = f"const/{decl.name}"
        if key not in art.weights:
            raise ArtifactError(f"{prog.file}:{decl.line}: .const {buf} names '{decl.name}', "
                                f"but weights.npz has no '{key}'")
        consts[buf] = art.weights[key]
    steps: list[Step] = []
    for ins in prog.instrs:
        m = ins.mnemonic
        if m == "mvm":
            x = prog.xbars[ins.kwargs["xbar"]]
            steps.append(MvmStep(prog.core, ins, prog.file, x.rows, x.cols))
        elif m == "dop":
            steps.append(DopStep(prog.core, ins, prog.file, batch))
        else:
            cls = {"input": InputStep, "output": OutputStep, "send": SendStep, "recv": RecvStep,
                   "slice": SliceStep, "im2col": Im2colStep, "halt": HaltStep}[m]
            steps.append(cls(prog.core, ins, prog.file))
    code = CoreCode(prog.core, prog.chip, prog.file, steps, consts)
    _fold_dacs(code)
    from cimc.runtime.fusion import plan_core  # fusion builds on this module's steps

    code.plan = plan_core(code)
    return code


def _mvm_consumers(steps: list[Step], start: int, buf: str, lo: float = 0.0,
                   hi: float = math.inf) -> list[tuple[MvmStep, float, float]] | None:
    """The mvm steps that read ``buf`` (directly or through slices) after ``start``, until
    ``buf`` is written again, each with the range of ``buf``'s last axis it reads (``lo``/``hi``
    place ``buf`` in its base buffer); None when anything else reads it."""
    found: list[tuple[MvmStep, float, float]] = []
    for j in range(start + 1, len(steps)):
        st = steps[j]
        if buf in st.ins.srcs:
            if isinstance(st, MvmStep):
                found.append((st, lo, hi))
            elif isinstance(st, SliceStep):
                sub = _mvm_consumers(steps, j, st.dst, lo + st.start,
                                     min(hi, lo + st.stop))
                if sub is None:
                    return None
                found += sub
            else:
                return None
        if buf in st.ins.dsts:
            break
    return found


def _fold_dacs(code: CoreCode) -> None:
    """Quantise at the im2col when every consumer of its patches is an mvm with one DAC; let an
    mvm that alone reads its part of private patches square it in place (read noise)."""
    for i, st in enumerate(code.steps):
        if not isinstance(st, Im2colStep):
            continue
        readers = _mvm_consumers(code.steps, i, st.dst)
        mvms = [m for m, _, _ in readers or ()]
        st.private = bool(mvms)
        st.cols = max((m.cols for m in mvms), default=0)
        for k, (m, lo, hi) in enumerate(readers or ()):
            m.owns_input = all(h <= lo or hi <= lo2 for j, (_, lo2, h) in enumerate(readers)
                               if j != k)
        _choose_channels_last(st, readers or [])
        if not mvms or len({m.dac for m in mvms}) != 1 or not mvms[0].dac_bits:
            continue
        st.dac = mvms[0].dac
        for m in mvms:
            m.pre_quantised = True


# Position-major patches copy runs of kernel[-1] * C elements; below this many the
# channel-major layouts (runs of one output row) are usually as fast.
_CHANNELS_LAST_RUN = 16


def _choose_channels_last(st: Im2colStep, readers: list[tuple[MvmStep, float, float]]) -> None:
    """Make the patches position-major when only mvms read them, each the whole patch, and a
    window row over all channels is long enough to copy fast (see im2col_channels_last)."""
    kernel = st.params[0]
    positions = math.prod(kernel)
    if not readers or any(m.src != st.dst for m, _, _ in readers):
        return
    rows = readers[0][0].rows
    channels = rows // positions
    if channels < 2 or channels * positions != rows or channels * kernel[-1] < _CHANNELS_LAST_RUN:
        return
    st.channels_last = True
    order = channels_last_rows(channels, positions).astype(np.intp).tobytes()
    for m, _, _ in readers:
        m.row_order = order


def _check_links(codes: dict[int, CoreCode], art: Artifact) -> None:
    """send/recv name existing cores; inputs/outputs match the manifest."""
    in_names = {s.name for s in art.inputs}
    produced: dict[str, str] = {}
    for code in codes.values():
        for st in code.steps:
            if isinstance(st, SendStep | RecvStep) and st.peer not in codes:
                raise ArtifactError(f"{st.where}: {st.kind} names core {st.peer}, which the "
                                    f"artifact does not have (cores: {sorted(codes)})")
            if isinstance(st, InputStep) and st.name not in in_names:
                raise ArtifactError(f"{st.where}: input '{st.name}' is not a graph input of the "
                                    f"manifest ({', '.join(sorted(in_names))})")
            if isinstance(st, OutputStep):
                if st.name in produced:
                    raise ArtifactError(f"{st.where}: output '{st.name}' is also written at "
                                        f"{produced[st.name]}")
                produced[st.name] = st.where
    missing = [s.name for s in art.outputs if s.name not in produced]
    extra = sorted(set(produced) - {s.name for s in art.outputs})
    if missing:
        raise ArtifactError(f"{art.path}: no core program writes graph output(s) "
                            f"{', '.join(missing)}")
    if extra:
        raise ArtifactError(f"{produced[extra[0]]}: output '{extra[0]}' is not a graph output "
                            "of the manifest")


# ------------------------------------------------------------------------------ the machine


@dataclass
class Trace:
    """What one execution did, in execution order: (core, step index, size) per instruction."""

    batch: int
    events: list[tuple[int, int, int]] = field(default_factory=list)
    peak: int = 0  # the most elements one instruction wrote (patches made in blocks aside)

    @property
    def peak_per_sample(self) -> float:
        return self.peak / max(self.batch, 1)


class Machine:
    """A programmed chip instance: tiles plus compiled core programs."""

    def __init__(self, art: Artifact, rng: np.random.Generator,
                 flips: Mapping[str, np.ndarray] | None = None) -> None:
        self.art = art
        # The compiled batch size, or None when the programs run exactly the compiled shapes.
        self.batch = art.batch
        self.codes = {c: _compile_core(p, art, self.batch) for c, p in sorted(art.programs.items())}
        _check_links(self.codes, art)
        self.tiles = program_tiles(art, rng, flips)
        self._cache: OrderedDict[tuple[float, bool], dict[tuple[int, int], TileAt]] = \
            OrderedDict()

    @property
    def noisy(self) -> bool:
        return any(t.array is not None for t in self.tiles.values())

    def tiles_at(self, t: float, compensate: bool) -> dict[tuple[int, int], TileAt]:
        """Per-tile matrices at time t (cached for the last few (t, compensate) pairs)."""
        key = (device.check_time(t), bool(compensate))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        states = {k: tile_at(tile, key[0], key[1]) for k, tile in self.tiles.items()}
        self._cache[key] = states
        while len(self._cache) > _T_CACHE_SIZE:
            self._cache.popitem(last=False)
        return states

    def execute(self, inputs: Mapping[str, np.ndarray], ctx: RunContext,
                trace: Trace | None = None, fused: bool = True) -> dict[str, np.ndarray]:
        """Run every core program on one batch; returns the graph outputs. Traced runs (and
        ``fused=False``) execute the instructions one by one, others the fused plans."""
        progs = {c: code.steps if trace is not None or not fused else code.plan
                 for c, code in self.codes.items()}
        envs = {c: dict(code.consts) for c, code in self.codes.items()}
        pcs = dict.fromkeys(self.codes, 0)
        queues: dict[tuple[int, int], deque] = {}
        outputs: dict[str, np.ndarray] = {}
        live = list(self.codes)
        while live:
            progressed = False
            for core in list(live):
                steps, env = progs[core], envs[core]
                pc = pcs[core]
                while True:
                    st = steps[pc]
                    kind = st.kind
                    if kind == "recv":
                        q = queues.get((st.peer, core))
                        if not q:
                            break
                        env[st.dst] = q.popleft()
                    elif kind == "halt":
                        live.remove(core)
                        pc += 1
                        progressed = True
                        break
                    elif kind == "send":
                        queues.setdefault((core, st.peer), deque()).append(env[st.src])
                    elif kind == "input":
                        env[st.dst] = inputs[st.name]
                    elif kind == "output":
                        outputs[st.name] = env[st.src]
                    else:
                        try:
                            st.run(env, ctx)
                        except ExecError as e:
                            at = e.step or st
                            raise ArtifactError(f"{at.where}: {at.ins.text}: {e}") from None
                    if trace is not None:
                        trace.events.append((core, pc, st.size(env)))
                        if not getattr(st, "blocked", False):
                            for d in st.ins.dsts:
                                trace.peak = max(trace.peak, int(np.size(env[d])))
                    pc += 1
                    progressed = True
                pcs[core] = pc
            if not progressed:
                raise ArtifactError(self._deadlock_message(live, pcs, progs))
        return outputs

    @staticmethod
    def _deadlock_message(live: list[int], pcs: dict[int, int],
                          progs: dict[int, list[Step]]) -> str:
        waits = []
        for core in live:
            st = progs[core][pcs[core]]
            waits.append(f"core {core} waits at {st.where} ({st.ins.text})")
        return ("deadlock: no core can proceed; " + "; ".join(waits)
                + ". Every recv needs a matching earlier send from the named core; the artifact "
                "is inconsistent, recompile it")


# ------------------------------------------------------------------------------ inputs


def check_inputs(specs: tuple[TensorSpec, ...], inputs: Mapping[str, Any],
                 flexible: bool = True) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes (finiteness: :func:`all_finite`, :func:`check_finite`,
    which a run applies chunk by chunk). With ``flexible`` the batch dimension (0) may differ
    from the compiled one, the same for every input; otherwise shapes are exact."""
    if not isinstance(inputs, Mapping):
        raise RuntimeInputError(f"inputs must be a dict of name -> array, got "
                                f"{type(inputs).__name__}")
    want = {s.name: s for s in specs}
    unknown = [k for k in inputs if k not in want]
    if unknown:
        raise RuntimeInputError(f"unknown input name(s) {', '.join(map(repr, unknown))}; the "
                                f"model's inputs are: {_describe_specs(specs)}")
    missing = [s.name for s in specs if s.name not in inputs]
    if missing:
        raise RuntimeInputError(f"missing input(s) {', '.join(map(repr, missing))}; the model's "
                                f"inputs are: {_describe_specs(specs)}")
    out = {}
    batch = None
    for s in specs:
        arr = _check_one(s, inputs[s.name], flexible)
        if flexible:
            if batch is not None and arr.shape[0] != batch:
                raise RuntimeInputError(f"input '{s.name}' has batch size {arr.shape[0]}, but "
                                        f"another input has {batch}; all inputs share the batch "
                                        "size")
            batch = arr.shape[0]
        out[s.name] = arr
    return out


def _describe_specs(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name} {_fmt_shape(s.shape)} {_dtype_name(s.dtype)}" for s in specs)


def _dtype_name(ir_dtype: str) -> str:
    return DTYPES[ir_dtype].name if ir_dtype in DTYPES else ir_dtype


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[N" + "".join(f", {d}" for d in shape[1:]) + "]" if shape else "[]"


def _check_one(spec: TensorSpec, value: Any, flexible: bool = True) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise RuntimeInputError(f"input '{spec.name}' must be a numpy array, got "
                                f"{type(value).__name__}")
    dtype = DTYPES.get(spec.dtype)
    if dtype is None:
        raise ArtifactError(f"manifest input '{spec.name}' has unknown dtype '{spec.dtype}'")
    expected = f"{_fmt_shape(spec.shape)} {dtype.name}"
    if value.dtype != dtype:
        raise RuntimeInputError(f"input '{spec.name}' has dtype {value.dtype}, expected "
                                f"{dtype.name} (shape {expected}); convert it with "
                                f".astype(np.{dtype.name})")
    if not flexible:
        if tuple(value.shape) != tuple(spec.shape):
            raise RuntimeInputError(f"input '{spec.name}' has shape {list(value.shape)}, expected "
                                    f"exactly {list(spec.shape)} {dtype.name} (this model's first "
                                    "dimension is not a batch the runtime may vary)")
    elif value.ndim != len(spec.shape) or value.shape[1:] != spec.shape[1:] or (
            value.ndim and value.shape[0] < 1):
        raise RuntimeInputError(f"input '{spec.name}' has shape {list(value.shape)}, expected "
                                f"{expected} (N = any batch size >= 1)")
    return value


def all_finite(inputs: Mapping[str, np.ndarray]) -> bool:
    """Whether every float input is free of NaN and Inf (a quick scan; see check_finite)."""
    return all(v.dtype.kind != "f" or bool(np.isfinite(v).all()) for v in inputs.values())


def check_finite(inputs: Mapping[str, np.ndarray]) -> None:
    """Raise for the first input holding NaN or Inf, naming the count and first index."""
    for name, value in inputs.items():
        if value.dtype.kind != "f":
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise RuntimeInputError(f"input '{name}' holds {int(bad.sum())} NaN/Inf "
                                    f"value(s), the first at index {list(idx)}; inputs must be "
                                    "finite")
