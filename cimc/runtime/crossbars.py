"""The crossbars of a chip instance, and the matrices an ``mvm`` multiplies by at a time ``t``.

:func:`declare_crossbars` reads every crossbar the programs declare, with its levels (an
encryption key's sign flips applied) and scales, and checks them against the target. A noisy
crossbar's programmed state (programming noise and each device's drift exponent, drawn through
the device model of :mod:`cimc.runtime.device`) is a fixed function of the chip's seed and the
crossbar: it comes from the crossbar's own random stream (``streams(core, index)``), so the
crossbars can be drawn in any order, on any number of threads, with the same result.

:func:`crossbar_at` freezes one crossbar at time ``t``: it programs the crossbar from its stream,
applies drift, folds the column scale in (weight units), works out the variance of one read of
each device and the global drift compensation's gain, and keeps only those matrices. The
programmed state itself is not kept: a chip holds one set of matrices per time, not the
several arrays per device its state would take, and a later time draws the same state again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from cimc.errors import ArtifactError
from cimc.runtime import device
from cimc.runtime.artifact import Artifact

# The random stream of one crossbar's programming: (core, crossbar index) -> generator.
Streams = Callable[[int, int], np.random.Generator]


@dataclass
class DeclaredCrossbar:
    """One crossbar of a chip instance: its levels per bit slice and the factor from levels
    (noiseless devices) or conductances (noisy ones) to weight units per column."""

    core: int
    index: int
    rows: int
    cols: int
    layer: str
    base: int  # slice s of a weight is worth base**s
    levels: np.ndarray  # [slices, rows, cols] as stored in the artifact (key flips applied)
    scale: np.ndarray  # [cols] float32: level -> weight units
    max_level: float  # the largest |level| a device pair holds
    model: device.DeviceModel
    gdc_ref: float | None = None  # the compensation's reference, once worked out
    _exact: tuple[np.ndarray, ...] | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.core, self.index)

    @property
    def noisy(self) -> bool:
        return not self.model.noiseless

    @property
    def out_scale(self) -> np.ndarray:
        """[cols] float32: µS -> weight units."""
        return (self.scale * np.float32(self.max_level / self.model.g_max)).astype(np.float32)

    def exact(self) -> tuple[np.ndarray, ...]:
        """Per slice, the weights on noiseless devices (float32, made once)."""
        if self._exact is None:
            self._exact = tuple((s.astype(np.float32) * self.scale).astype(np.float32)
                                for s in self.levels)
        return self._exact


@dataclass(frozen=True, eq=False)
class CrossbarAt:
    """A crossbar frozen at one time: what every ``mvm`` of a run multiplies by."""

    weights: tuple[np.ndarray, ...]  # per slice [rows, cols] float32, weight units
    read_vars: tuple[np.ndarray | None, ...]  # per slice: variance of one read, weight units²
    gain: float  # global drift compensation factor, applied by the ADC
    base: int = 1

    @property
    def slices(self) -> int:
        return len(self.weights)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.weights, *self.read_vars) if a is not None)


def _levels_and_scale(art: Artifact, core: int, x: int, shape: tuple[int, ...], where: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    lk, sk = f"xbar/{core}/{x}/levels", f"xbar/{core}/{x}/scale"
    for k in (lk, sk):
        if k not in art.weights:
            raise ArtifactError(f"{art.path}/weights.npz: missing '{k}' (declared at {where})")
    levels = np.asarray(art.weights[lk])
    scale = np.asarray(art.weights[sk])
    if levels.shape != shape:
        raise ArtifactError(f"{art.path}/weights.npz: '{lk}' has shape {list(levels.shape)}, "
                            f"but {where} declares {list(shape)} ([slices,] rows, cols)")
    if scale.shape != (shape[-1],):
        raise ArtifactError(f"{art.path}/weights.npz: '{sk}' has shape {list(scale.shape)}, "
                            f"expected [{shape[-1]}]")
    if levels.dtype.kind not in "iuf" or scale.dtype.kind != "f":
        raise ArtifactError(f"{art.path}/weights.npz: '{lk}' must be integer or float and "
                            f"'{sk}' float, got {levels.dtype} and {scale.dtype}")
    if not (np.isfinite(levels).all() and np.isfinite(scale).all()):
        raise ArtifactError(f"{art.path}/weights.npz: '{lk}' or '{sk}' holds NaN or Inf")
    return levels, scale.astype(np.float32)


def declare_crossbars(art: Artifact, flips: Mapping[str, np.ndarray] | None = None
                      ) -> dict[tuple[int, int], DeclaredCrossbar]:
    """Every crossbar of the artifact, checked (cores and crossbars in ascending order).
    ``flips`` (an encryption key's masks) negate the stored levels they mark."""
    target = art.target
    model = device.DeviceModel.from_target(target)
    crossbars: dict[tuple[int, int], DeclaredCrossbar] = {}
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
            if decl.slices != target.slices:
                raise ArtifactError(f"{where}: crossbar {x} holds {decl.slices} bit slice(s), "
                                    f"but the target slices weights over {target.slices}")
            shape = (decl.rows, decl.cols) if decl.slices == 1 else (decl.slices, decl.rows,
                                                                     decl.cols)
            levels, scale = _levels_and_scale(art, core, x, shape, where)
            name = f"xbar/{core}/{x}/flip"
            flip = None if flips is None else flips.get(name)
            if flip is not None:
                unused.discard(name)
                if np.shape(flip) != (decl.rows, decl.cols):
                    raise ArtifactError(f"key: '{name}' has shape {list(np.shape(flip))}, "
                                        f"expected {[decl.rows, decl.cols]}")
                # levels * ±1 (a select on a scattered mask is many times slower)
                levels = levels * (1 - 2 * np.asarray(flip, dtype=bool).astype(np.int8))
            slices = levels.reshape(decl.slices, decl.rows, decl.cols)
            max_level = 1.0
            if not model.noiseless:
                top = float(np.max(np.abs(slices), initial=0.0))
                lmax = target.slice_max_level
                max_level = float(lmax) if lmax > 0 else (top or 1.0)
                if top > max_level * (1 + 1e-6):
                    raise ArtifactError(f"{where}: crossbar {x} holds levels up to {top:g}, "
                                        f"beyond the target's ±{max_level:g}")
            xb = DeclaredCrossbar(core, x, decl.rows, decl.cols, decl.layer or f"core{core}/xbar{x}",
                          target.slice_base if decl.slices > 1 else 1, slices, scale,
                          max_level, model)
            crossbars[xb.key] = xb
    if unused:
        raise ArtifactError(f"key: {', '.join(sorted(unused)[:3])} name(s) no crossbar of "
                            f"{art.path.name}; is it the key of another artifact?")
    return crossbars


def _combined(xb: DeclaredCrossbar, g_effs: list[np.ndarray]) -> np.ndarray:
    """The effective conductances of the whole weights: the slices shifted and added."""
    if len(g_effs) == 1:
        return g_effs[0]
    return sum(np.float32(xb.base ** s) * g for s, g in enumerate(g_effs))


# Rows of a crossbar programmed at a time: about this many devices per polarity, so that the
# arrays of a block stay in the cache.
BLOCK_DEVICES = 1 << 14


def _slices(xb: DeclaredCrossbar, streams: Streams
            ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per bit slice, in order: the levels as indices into their table, the table, and the
    standard normals that program them (drawn from the crossbar's stream)."""
    rng = streams(xb.core, xb.index)
    for levels in xb.levels:
        index, values = device.level_index(levels, xb.max_level)
        yield index, xb.model.level_table(values, xb.max_level), xb.model.normals(rng,
                                                                                 levels.shape)


def programmed(xb: DeclaredCrossbar, streams: Streams) -> list[device.ProgrammedArray]:
    """A noisy crossbar's slices as programmed: its devices' conductances and drift
    exponents (what :func:`crossbar_at` makes block by block and does not keep)."""
    return [xb.model.program(index, table, z) for index, table, z in _slices(xb, streams)]


# Where crossbar_at may write a noisy crossbar's matrices: per slice a weight matrix and a read
# variance matrix, float32 [rows, cols] (cimc.runtime.forkfill: views of shared memory).
Out = tuple[list[np.ndarray], list[np.ndarray]]


def crossbar_at(xb: DeclaredCrossbar, t: float, compensate: bool, streams: Streams,
                out: Out | None = None) -> CrossbarAt:
    """The matrices one crossbar multiplies by at time ``t`` (seconds since programming): its
    slices programmed from its stream (see the module docstring), block of rows by block of
    rows; into ``out`` when given (a noisy crossbar)."""
    if not xb.noisy:
        exact = xb.exact()
        return CrossbarAt(exact, (None,) * len(exact), 1.0, xb.base)
    model = xb.model
    out_scale = xb.out_scale
    var_scale = np.square(out_scale)
    step = max(1, BLOCK_DEVICES // (xb.cols * model.units))
    weights, variances, g_prog, g_now = [], [], [], []
    shape = (xb.rows, xb.cols)
    for s, (index, table, z) in enumerate(_slices(xb, streams)):
        w = np.empty(shape, np.float32) if out is None else out[0][s]
        var = None if model.read is None else np.empty(shape, np.float32) if out is None \
            else out[1][s]
        g0, g1 = (np.empty(shape, np.float32) for _ in range(2)) if compensate \
            else (None, None)
        for r in range(0, xb.rows, step):
            rows = slice(r, r + step)
            array = model.program(index[rows], table, z[:, :, rows])
            state = array.at(t)
            if g0 is not None:
                g0[rows], g1[rows] = array.g_programmed, state.g_eff
            np.multiply(state.g_eff, out_scale, out=w[rows])
            if var is not None:
                np.multiply(state.read_var, var_scale, out=var[rows])
        weights.append(w)
        variances.append(None if var is None or not var.any() else var)
        g_prog.append(g0)
        g_now.append(g1)
    gain = 1.0
    if compensate:
        if xb.gdc_ref is None:  # the same for every time: worked out once
            xb.gdc_ref = device.gdc_reference(_combined(xb, g_prog))
        gain = device.gdc_factor(xb.gdc_ref, _combined(xb, g_now))
    return CrossbarAt(tuple(weights), tuple(variances), float(gain), xb.base)
