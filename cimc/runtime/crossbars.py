"""The crossbars of a chip instance: programmed once from the artifact's levels, then read at a
time ``t`` as the matrices an ``mvm`` multiplies by.

:func:`program_crossbars` programs every crossbar the programs declare (cores and crossbars in
ascending order, bit slices least significant first: the order the seed's draws follow), through
the device model of :mod:`cimc.runtime.device`. :func:`crossbar_at` freezes one at time ``t``:
drift applied, the column scale folded in (weight units), the variance of one read of each
device, and the global drift compensation's gain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cimc.errors import ArtifactError
from cimc.runtime import device
from cimc.runtime.artifact import Artifact


@dataclass
class ProgrammedCrossbar:
    """One programmed crossbar of a chip instance: one array per bit slice (exact weights on
    noiseless devices), with the factor from conductance to weight units per column."""

    core: int
    index: int
    rows: int
    cols: int
    layer: str
    base: int  # slice s of a weight is worth base**s
    exact: tuple[np.ndarray, ...] = ()  # per slice, weight units (noiseless devices)
    arrays: tuple[device.ProgrammedArray, ...] = ()
    out_scale: np.ndarray | None = None  # [cols]: µS -> weight units
    gdc_ref: float = 0.0

    @property
    def key(self) -> tuple[int, int]:
        return (self.core, self.index)

    @property
    def noisy(self) -> bool:
        return bool(self.arrays)


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


def program_crossbars(art: Artifact, rng: np.random.Generator,
                      flips: Mapping[str, np.ndarray] | None = None
                      ) -> dict[tuple[int, int], ProgrammedCrossbar]:
    """Program every crossbar of the artifact. ``flips`` (an encryption key's masks) negate
    the stored levels they mark before programming."""
    target = art.target
    model = device.DeviceModel.from_target(target)
    crossbars: dict[tuple[int, int], ProgrammedCrossbar] = {}
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
                levels = np.where(np.asarray(flip, dtype=bool), -levels, levels)
            slices = levels.reshape(decl.slices, decl.rows, decl.cols)
            xb = ProgrammedCrossbar(core, x, decl.rows, decl.cols,
                                    decl.layer or f"core{core}/xbar{x}",
                                    target.slice_base if decl.slices > 1 else 1)
            if model.kind == "ideal":
                xb.exact = tuple((s.astype(np.float32) * scale).astype(np.float32)
                                 for s in slices)
            else:
                _program(xb, slices, scale, target.slice_max_level, model, rng, where)
            crossbars[xb.key] = xb
    if unused:
        raise ArtifactError(f"key: {', '.join(sorted(unused)[:3])} name(s) no crossbar of "
                            f"{art.path.name}; is it the key of another artifact?")
    return crossbars


def _program(xb: ProgrammedCrossbar, slices: np.ndarray, scale: np.ndarray, max_level: int,
             model: device.DeviceModel, rng: np.random.Generator, where: str) -> None:
    top = float(np.max(np.abs(slices), initial=0.0))
    lmax = float(max_level) if max_level > 0 else (top or 1.0)
    if top > lmax * (1 + 1e-6):
        raise ArtifactError(f"{where}: crossbar {xb.index} holds levels up to {top:g}, beyond "
                            f"the target's ±{lmax:g}")
    arrays = []
    for digits in slices:
        g_plus, g_minus = device.levels_to_conductance(digits.astype(np.float32), lmax,
                                                       model.g_max)
        arrays.append(model.program(g_plus, g_minus, rng))
    xb.arrays = tuple(arrays)
    xb.out_scale = (scale * np.float32(lmax / model.g_max)).astype(np.float32)
    xb.gdc_ref = device.gdc_reference(_combined(xb, [a.at(0.0).g_eff for a in arrays]))


def _combined(xb: ProgrammedCrossbar, g_effs: list[np.ndarray]) -> np.ndarray:
    """The effective conductances of the whole weights: the slices shifted and added."""
    if len(g_effs) == 1:
        return g_effs[0]
    return sum(np.float32(xb.base ** s) * g for s, g in enumerate(g_effs))


def crossbar_at(xb: ProgrammedCrossbar, t: float, compensate: bool) -> CrossbarAt:
    """The matrices one crossbar multiplies by at time ``t`` (seconds since programming)."""
    if not xb.noisy:
        return CrossbarAt(xb.exact, (None,) * len(xb.exact), 1.0, xb.base)
    states = [a.at(t) for a in xb.arrays]
    weights = tuple((s.g_eff * xb.out_scale).astype(np.float32) for s in states)
    var = tuple(None if s.read_var is None or not np.any(s.read_var > 0)
                else (s.read_var * np.square(xb.out_scale)).astype(np.float32) for s in states)
    gain = device.gdc_factor(xb.gdc_ref, _combined(xb, [s.g_eff for s in states])) \
        if compensate else 1.0
    return CrossbarAt(weights, var, float(gain), xb.base)
