"""The cim dialect: crossbar-level ops produced by ``lower-to-mvm`` (legal at stage "cim" only).

``cim.im2col(x) {kernel_shape, strides, pads, dilations, groups = 1, rows = []}``
    ``x [N, C, *S]`` -> ``[N, *O, C * prod(kernel_shape)]``: every output position's receptive
    field as one patch vector, ordered group-major, then by kernel position (row-major), then by
    channel within the group: entry ``(g*K + k)*Cg + c`` (``Cg = C/groups``), so the patch of
    group ``g`` is a contiguous slice (:func:`cimc.ops.linalg.patches`). ``pads`` is
    ``[begin..., end...]`` (zero padding), ``O_i = (S_i + pb_i + pe_i - d_i*(k_i-1) - 1) // s_i + 1``.
    ``rows = [a, b]`` keeps entries ``a .. b-1`` of every patch (the rows of one crossbar tile):
    ``[N, *O, b - a]``, equal to slicing the whole patches; ``[]``: all of them.

``cim.mvm(x, w)``
    Matrix-vector products with a stationary weight ``w`` (an ``nn.constant``; this is what a
    crossbar holds). ``w [K, M]``: ``x [..., K] -> [..., M]``. Grouped, ``w [G, Kg, Mg]``:
    ``x [..., G*Kg] -> [..., G*Mg]``; group ``g`` multiplies slice ``g`` of ``x`` by ``w[g]``
    and writes slice ``g`` of the output (block-diagonal weight). Floats only; ``x`` and ``w``
    have the same dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cimc.errors import VerifyError
from cimc.ir.types import TensorType
from cimc.ops.linalg import patches
from cimc.ops.registry import define


def _int_list(attrs: dict[str, Any], key: str, length: int, minimum: int, op: str) -> list[int]:
    v = attrs[key]
    ok = isinstance(v, list) and len(v) == length
    ok = ok and all(isinstance(e, int) and not isinstance(e, bool) and e >= minimum for e in v)
    if not ok:
        raise VerifyError(
            f"{op}: '{key}' must be a list of {length} integers >= {minimum}, got {v!r}"
        )
    return list(v)


def im2col_geometry(
    attrs: dict[str, Any], x_shape: tuple[int, ...]
) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """Check the attributes against ``x_shape``; returns (kernel, strides, pads, dilations,
    output spatial shape)."""
    op = "cim.im2col"
    if len(x_shape) < 3:
        raise VerifyError(
            f"{op}: input must be [N, C, *spatial] with >= 1 spatial dim, got {x_shape}"
        )
    d = len(x_shape) - 2
    kernel = _int_list(attrs, "kernel_shape", d, 1, op)
    strides = _int_list(attrs, "strides", d, 1, op)
    pads = _int_list(attrs, "pads", 2 * d, 0, op)
    dil = _int_list(attrs, "dilations", d, 1, op)
    out = []
    for i in range(d):
        span = dil[i] * (kernel[i] - 1) + 1
        padded = x_shape[2 + i] + pads[i] + pads[d + i]
        if padded < span:
            raise VerifyError(
                f"{op}: spatial dim {i} of size {x_shape[2 + i]} (padded {padded}) is smaller than "
                f"the dilated kernel extent {span}"
            )
        out.append((padded - span) // strides[i] + 1)
    groups = attrs.get("groups", 1)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or x_shape[1] % groups:
        raise VerifyError(f"{op}: 'groups' must be a positive divisor of the {x_shape[1]} input "
                          f"channels, got {groups!r}")
    return kernel, strides, pads, dil, out


def im2col_rows(attrs: dict[str, Any], length: int) -> tuple[int, int] | None:
    """The entries ``[a, b)`` of each patch (of ``length``) that an im2col keeps (its ``rows``),
    or None for all of them."""
    rows = attrs.get("rows") or []
    if not rows:
        return None
    ok = isinstance(rows, list) and len(rows) == 2 and all(
        isinstance(e, int) and not isinstance(e, bool) for e in rows)
    if not ok or not 0 <= rows[0] < rows[1] <= length:
        raise VerifyError(f"cim.im2col: 'rows' must be [a, b] with 0 <= a < b <= {length} (the "
                          f"patch length), got {rows!r}")
    return rows[0], rows[1]


def _im2col_type(attrs: dict[str, Any], x: TensorType) -> TensorType:
    kernel, _, _, _, out = im2col_geometry(attrs, x.shape)
    n, c = x.shape[0], x.shape[1]
    length = c * int(np.prod(kernel))
    rows = im2col_rows(attrs, length)
    return x.with_shape((n, *out, length if rows is None else rows[1] - rows[0]))


@define(
    "cim.im2col",
    operands=1,
    attrs=("kernel_shape", "strides", "pads", "dilations"),
    optional={"groups": 1, "rows": []},
    infer=_im2col_type,
    summary="Patches of x [N, C, *S] as vectors: [N, *O, C*prod(k)], group/position-major.",
)
def im2col(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    kernel, strides, pads, dil, _ = im2col_geometry(attrs, x.shape)
    rows = im2col_rows(attrs, x.shape[1] * int(np.prod(kernel)))
    return patches(x, kernel, strides, pads, dil, attrs["groups"], rows=rows)


def _mvm_type(attrs: dict[str, Any], x: TensorType, w: TensorType) -> TensorType:
    if x.dtype != w.dtype or not x.dtype.startswith("f"):
        raise VerifyError(
            f"cim.mvm: input and weight must have the same float dtype, got {x.dtype} and {w.dtype}"
        )
    if x.rank < 1:
        raise VerifyError("cim.mvm: input must have rank >= 1 ([..., K])")
    if w.rank == 2:
        k, m = w.shape
    elif w.rank == 3:
        g, kg, mg = w.shape
        k, m = g * kg, g * mg
    else:
        raise VerifyError(f"cim.mvm: weight must be [K, M] or grouped [G, Kg, Mg], got {w}")
    if x.shape[-1] != k:
        raise VerifyError(f"cim.mvm: input {x} must end in the weight's {k} rows (weight {w})")
    return x.with_shape((*x.shape[:-1], m))


@define(
    "cim.mvm",
    operands=2,
    infer=_mvm_type,
    summary="x @ w with a stationary (constant) weight; w [K, M] or grouped [G, Kg, Mg].",
)
def mvm(attrs: dict[str, Any], x: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Accumulate f16 in f32 (as nn.matmul and onnxruntime do); f32/f64 in their own precision.
    ct = np.float32 if x.dtype == np.float16 else x.dtype
    xc, wc = x.astype(ct, copy=False), w.astype(ct, copy=False)
    if w.ndim == 2:
        # One 2-D product over every leading position (a stacked matmul is many small GEMMs).
        flat = np.ascontiguousarray(xc).reshape(-1, wc.shape[0])
        return (flat @ wc).reshape(*x.shape[:-1], wc.shape[1]).astype(x.dtype, copy=False)
    g, kg, mg = w.shape
    lead = x.shape[:-1]
    xg = xc.reshape(-1, g, kg).transpose(1, 0, 2)  # [G, B, Kg]
    y = np.matmul(xg, wc)  # [G, B, Mg]
    return (
        np.ascontiguousarray(y.transpose(1, 0, 2))
        .reshape(*lead, g * mg)
        .astype(x.dtype, copy=False)
    )
