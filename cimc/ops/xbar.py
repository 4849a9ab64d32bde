"""Crossbar-stage ops: one op per crossbar tile, and transfers between cores.

``cim.xbar_mvm(x) {levels, scale, dac_bits, dac_range, adc_bits, adc_range, tile}``
    One crossbar tile. ``levels`` is the tile's weight matrix ``[rows, cols]`` as signed conductance
    levels (integers after ``quantize``; float32 weights before it and on targets with continuous
    levels), ``scale`` the per-column float32 factor (weight = level * scale). Semantics, exactly
    those of the runtime's ``mvm`` instruction on exact devices (docs/isa.md)::

        codes, a = dac_codes(x, dac_bits, dac_range, dac_signed)   # DAC: integer codes, step a
        z = codes @ (levels * scale)                              # the array, float32
        out = adc(z, a, adc_bits, adc_range)                      # ADC

    i.e. the DAC clips to ``±dac_range`` (``[0, dac_range]`` with ``dac_signed = false``,
    inputs known to be >= 0) and quantises to ``dac_bits``, the ADC clips to ``±adc_range``
    and quantises to ``adc_bits`` (signed; 0 bits: exact); see :func:`dac_codes`,
    :func:`adc`.
    Optional attributes record where the tile came from (``weight_shape`` of its layer,
    ``utilisation`` = used cells / crossbar cells, ``groups`` packed block-diagonally, bit
    ``slices``), after ``place``, which crossbar of its core holds it (``xbar``), and on a copy
    that ``replicate`` made of a tile, its copy number (``replica`` >= 1: its own crossbar).
    ``flip`` (from ``encrypt``) lists the ``[row, col]`` weights whose sign the artifact stores
    flipped (the key undoes it); the semantics above use the true weights.

``cim.transfer(x) {from, to}``
    The identity: the value moves from core ``from`` to core ``to`` (global core ids). The op's
    own ``chip``/``core`` attributes are those of the destination. Inserted by ``schedule``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from cimc.errors import VerifyError
from cimc.ir.types import TensorType
from cimc.ops.registry import define


@functools.lru_cache(maxsize=1024)
def converter_steps(bits: int, rng: float, signed: bool = True) -> tuple[float, float]:
    """(largest code ``n``, step) of a DAC or ADC with ``bits`` over ``rng``: signed symmetric,
    ``n = 2**(bits-1) - 1`` codes each side of zero, or unsigned over ``[0, rng]``,
    ``n = 2**bits - 1``; ``step = rng / n``."""
    n = float(2 ** (bits - 1) - 1 if signed else 2**bits - 1)
    return n, rng / n


def dac_codes(x: np.ndarray, bits: int, rng: float, signed: bool = True,
              out: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The DAC: integer-valued float32 codes ``clip(rint(x / step), -n or 0, n)`` (round half
    to even; in ``out`` when given) and their step. ``bits == 0``: ``x`` itself (float32) and
    step 1."""
    if bits <= 0:
        return np.asarray(x, dtype=np.float32), 1.0
    n, step = converter_steps(bits, rng, signed)
    q = np.divide(x, np.float32(step), dtype=np.float32, out=out)
    np.rint(q, out=q)
    np.clip(q, -n if signed else 0.0, n, out=q)
    return q, step


def adc(z: np.ndarray, in_step: float, bits: int, rng: float, gain: float = 1.0) -> np.ndarray:
    """The ADC, in place on the float32 column sums ``z`` of DAC codes (each code worth
    ``in_step``): ``bits == 0``: ``z * (in_step * gain)``; else the codes
    ``q = clip(rint(z * (in_step / step)), -n, n)`` of the output, times ``step * gain``
    (every factor computed in float64 and rounded to float32 once). ``gain`` is the global
    drift compensation's."""
    if bits <= 0:
        f = in_step * gain
    else:
        n, step = converter_steps(bits, rng)
        if in_step != step:
            z *= np.float32(in_step / step)
        np.rint(z, out=z)
        np.clip(z, -n, n, out=z)
        f = step * gain
    if f != 1.0:
        z *= np.float32(f)
    return z


def _xbar_mvm_type(attrs: dict[str, Any], x: TensorType) -> TensorType:
    levels, scale = attrs["levels"], attrs["scale"]
    if not isinstance(levels, np.ndarray) or levels.ndim != 2:
        raise VerifyError("cim.xbar_mvm: 'levels' must be a dense 2-D array [rows, cols]")
    if levels.dtype.kind not in "if":
        raise VerifyError(f"cim.xbar_mvm: 'levels' must be integer or float, not {levels.dtype}")
    rows, cols = levels.shape
    if not isinstance(scale, np.ndarray) or scale.shape != (cols,) or scale.dtype != np.float32:
        raise VerifyError(f"cim.xbar_mvm: 'scale' must be a dense f32 array of shape [{cols}]")
    if x.rank < 1 or x.shape[-1] != rows:
        raise VerifyError(f"cim.xbar_mvm: input {x} must end in the tile's {rows} rows")
    if x.dtype != "f32":
        raise VerifyError(f"cim.xbar_mvm: input must be f32, not {x.dtype}")
    for kind in ("dac", "adc"):
        bits, rng = attrs[f"{kind}_bits"], attrs[f"{kind}_range"]
        is_int = isinstance(bits, int) and not isinstance(bits, bool)
        if not is_int or not (bits == 0 or 2 <= bits <= 24):
            raise VerifyError(
                f"cim.xbar_mvm: {kind}_bits must be 0 (exact) or an integer in 2..24, not {bits!r}"
            )
        if not isinstance(rng, float) or not np.isfinite(rng) or rng < 0:
            raise VerifyError(
                f"cim.xbar_mvm: {kind}_range must be a finite float >= 0, not {rng!r}"
            )
        if bits > 0 and rng <= 0:
            raise VerifyError(f"cim.xbar_mvm: {kind}_bits={bits} needs {kind}_range > 0")
    if not isinstance(attrs["dac_signed"], bool):
        raise VerifyError(
            f"cim.xbar_mvm: dac_signed must be true or false, not {attrs['dac_signed']!r}"
        )
    replica = attrs.get("replica", 0)
    if not isinstance(replica, int) or isinstance(replica, bool) or replica < 0:
        raise VerifyError(f"cim.xbar_mvm: 'replica' must be an integer >= 0, not {replica!r}")
    _check_flip(attrs["flip"], rows, cols)
    tile = attrs["tile"]
    if not (isinstance(tile, list) and len(tile) == 2 and all(isinstance(t, int) for t in tile)):
        raise VerifyError(f"cim.xbar_mvm: 'tile' must be [row_block, col_block], not {tile!r}")
    return x.with_shape((*x.shape[:-1], cols))


def _check_flip(flip: Any, rows: int, cols: int) -> None:
    ok = isinstance(flip, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(i, int) for i in p)
        and 0 <= p[0] < rows and 0 <= p[1] < cols for p in flip)
    if not ok:
        raise VerifyError(f"cim.xbar_mvm: 'flip' must be a list of [row, col] inside the tile's "
                          f"{rows}x{cols} weights, not {str(flip)[:80]}")
    if len({tuple(p) for p in flip}) != len(flip):
        raise VerifyError("cim.xbar_mvm: 'flip' names a weight twice")


@define(
    "cim.xbar_mvm",
    operands=1,
    attrs=("levels", "scale", "dac_bits", "dac_range", "adc_bits", "adc_range", "tile"),
    optional={"dac_signed": True, "weight_shape": [], "utilisation": 0.0, "groups": 1,
              "slices": 1, "xbar": -1, "flip": [], "replica": 0},
    infer=_xbar_mvm_type,
    summary="One crossbar tile: ADC(DAC(x) @ (levels * scale)).",
)
def xbar_mvm(attrs, x):
    codes, step = dac_codes(x, attrs["dac_bits"], attrs["dac_range"], attrs["dac_signed"])
    w = attrs["levels"].astype(np.float32) * attrs["scale"][None, :]
    rows, cols = w.shape
    # one 2-D matrix product over every leading position (numpy's batched matmul is far slower)
    z = np.matmul(np.ascontiguousarray(codes).reshape(-1, rows), w)
    return adc(z, step, attrs["adc_bits"], attrs["adc_range"]).reshape(*x.shape[:-1], cols)


def _transfer_type(attrs: dict[str, Any], x: TensorType) -> TensorType:
    for key in ("from", "to"):
        v = attrs[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise VerifyError(f"cim.transfer: '{key}' must be a core id (int >= 0), not {v!r}")
    if attrs["from"] == attrs["to"]:
        raise VerifyError(f"cim.transfer: from and to are the same core ({attrs['to']})")
    return x


@define(
    "cim.transfer",
    operands=1,
    attrs=("from", "to"),
    infer=_transfer_type,
    summary="Move a value from core 'from' to core 'to' (identity).",
)
def transfer(attrs, x):
    return x


__all__ = ["adc", "converter_steps", "dac_codes"]
