"""Linear algebra: N-d grouped convolution, transposed convolution, gemm and matmul.

Layouts are ONNX's: ``x`` is ``[N, C, *spatial]``; conv weights are ``[M, C/group, *kernel]``;
conv_transpose weights are ``[C, M/group, *kernel]``. ``pads`` lists every spatial begin, then
every spatial end. Products accumulate in float32 for f16/f32 operands (f64 stays f64), as
onnxruntime does, and the result is cast back to the operand dtype.

Convolution is im2col: :func:`patches` (the ``cim.im2col`` op) copies every receptive field
into one row, then one batched matmul per group multiplies them by the reordered weights
(:func:`conv_weight_matrix`). The spatial helpers here (``check_spatial``, ``window_out_size``, ``pad_spatial``,
``kernel_taps``) are shared with the pooling ops.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cimc.errors import VerifyError
from cimc.ir.types import TensorType
from cimc.ops.registry import broadcast_shapes, define

FLOATS = ("f16", "f32", "f64")

# ----------------------------------------------------------------------------- shared helpers


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The accumulation dtype: f64 for f64, f32 for the other floats, the dtype itself for ints."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dtype
    if dtype.kind == "f":
        return np.dtype(np.float32)
    return dtype


def _int_list(attrs: dict[str, Any], key: str, n: int, op: str) -> list[int]:
    val = attrs.get(key)
    if not isinstance(val, (list, tuple)) or len(val) != n:
        raise VerifyError(f"{op}: attribute '{key}' must be a list of {n} ints, got {val!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in val):
        raise VerifyError(f"{op}: attribute '{key}' must hold ints, got {val!r}")
    return [int(v) for v in val]


def check_spatial(
    op: str, attrs: dict[str, Any], nspatial: int, keys: Sequence[str]
) -> dict[str, list[int]]:
    """Validate the spatial attributes ``keys`` (among kernel_shape, strides, dilations, pads,
    output_padding) for ``nspatial`` spatial dims; returns them as int lists."""
    out: dict[str, list[int]] = {}
    for key in keys:
        n = 2 * nspatial if key == "pads" else nspatial
        vals = _int_list(attrs, key, n, op)
        low = 0 if key in ("pads", "output_padding") else 1
        if any(v < low for v in vals):
            raise VerifyError(f"{op}: attribute '{key}' must be >= {low} everywhere, got {vals}")
        out[key] = vals
    return out


def window_out_size(
    size: int, k: int, s: int, d: int, pb: int, pe: int, ceil_mode: bool = False
) -> int:
    """Number of windows of kernel ``k`` (dilation ``d``, stride ``s``) over an axis of ``size``
    padded by ``pb``/``pe``. With ``ceil_mode`` a last partial window counts, unless it would
    start in the end padding (onnxruntime's and PyTorch's rule)."""
    span = size + pb + pe - ((k - 1) * d + 1)
    if span < 0:
        raise VerifyError(
            f"the window (kernel {k}, dilation {d}) is larger than the padded input "
            f"({size} + {pb} + {pe})"
        )
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= size + pb:
        out -= 1
    return out


def pad_spatial(x: np.ndarray, pads: Sequence[int], value: float = 0) -> np.ndarray:
    """Pad the spatial axes (all but the first two) of ``x``; ``pads`` = [begin..., end...]."""
    r = len(pads) // 2
    if not any(pads):
        return x
    if min(pads) < 0:
        raise ValueError(f"negative pads {list(pads)}")
    shape = (*x.shape[:2], *(x.shape[2 + i] + pads[i] + pads[i + r] for i in range(r)))
    out = np.full(shape, value, x.dtype)
    out[(slice(None), slice(None), *(slice(pads[i], pads[i] + x.shape[2 + i])
                                      for i in range(r)))] = x
    return out


def _float_operand(op: str, t: TensorType, what: str) -> None:
    if t.dtype not in FLOATS:
        raise VerifyError(f"{op}: {what} must be a float tensor, got {t}")


# ----------------------------------------------------------------------------- nn.conv

_CONV_KEYS = ("strides", "pads", "dilations")


def _conv_operands(op: str, attrs: dict[str, Any], x: TensorType, w: TensorType,
                   b: TensorType | None, keys: Sequence[str]
                   ) -> tuple[int, dict[str, list[int]], int]:
    """Checks shared by conv and conv_transpose: float input, weight of the input's rank, one
    dtype, spatial attributes ``keys`` and a positive int ``group``. Returns (spatial rank,
    spatial attributes, group)."""
    _float_operand(op, x, "the input")
    if x.rank < 3:
        raise VerifyError(f"{op}: the input must be [N, C, spatial...] (rank >= 3), got {x}")
    if w.rank != x.rank:
        raise VerifyError(f"{op}: the weight {w} must have the input's rank {x.rank}")
    if w.dtype != x.dtype or (b is not None and b.dtype != x.dtype):
        raise VerifyError(f"{op}: input, weight and bias must share a dtype")
    r = x.rank - 2
    sp = check_spatial(op, attrs, r, keys)
    group = attrs.get("group")
    if not isinstance(group, int) or isinstance(group, bool) or group < 1:
        raise VerifyError(f"{op}: attribute 'group' must be a positive int, got {group!r}")
    return r, sp, group


def _conv_infer(
    attrs: dict[str, Any], x: TensorType, w: TensorType, b: TensorType | None = None
) -> TensorType:
    op = "nn.conv"
    r, sp, group = _conv_operands(op, attrs, x, w, b, _CONV_KEYS)
    n, c = x.shape[:2]
    m = w.shape[0]
    if w.shape[1] * group != c:
        raise VerifyError(
            f"{op}: the input has {c} channels, the weight {w} with group={group} "
            f"expects {w.shape[1] * group}"
        )
    if m % group:
        raise VerifyError(f"{op}: {m} output channels are not divisible by group={group}")
    if b is not None and b.shape != (m,):
        raise VerifyError(f"{op}: the bias must have shape ({m},), got {b}")
    out = [
        window_out_size(
            x.shape[2 + i],
            w.shape[2 + i],
            sp["strides"][i],
            sp["dilations"][i],
            sp["pads"][i],
            sp["pads"][i + r],
        )
        for i in range(r)
    ]
    return TensorType((n, m, *out), x.dtype)


def kernel_taps(
    kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], out: Sequence[int]
) -> list[tuple[slice, ...]]:
    """For every kernel position (row-major), the strided slice of the padded input's spatial
    axes that this tap reads for all ``out`` window positions."""
    taps = []
    for kpos in itertools.product(*(range(k) for k in kernel)):
        taps.append(
            tuple(
                slice(kp * d, kp * d + s * (o - 1) + 1, s)
                for kp, s, d, o in zip(kpos, strides, dilations, out)
            )
        )
    return taps


# Memory layouts of patches (see :func:`patches`): one row per patch (C-contiguous), or a
# patch-major block ``[rows, N, *O]`` ("rows") or ``[N, rows, *O]`` ("samples").
VECTORS, ROWS, SAMPLES = "vectors", "rows", "samples"


def patches(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    groups: int = 1,
    *,
    layout: str = VECTORS,
    out: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """The patches of ``x [N, C, *S]``: ``[N, *O, C*prod(kernel)]``, every output position's
    receptive field as one vector; with ``rows = (a, b)`` only entries ``a .. b-1`` of each
    (``[N, *O, b - a]``, the ``VECTORS`` layout), as slicing the whole patches would give.
    Entry ``(g*K + k)*Cg + c`` of a patch is channel ``c`` of
    group ``g`` (``Cg = C/groups`` channels each) at kernel position ``k`` (row-major,
    ``K = prod(kernel)``): group-major, then position-major, so a group's patch is a
    contiguous slice. ``pads`` is ``[begin..., end...]`` (zeros).

    This is ``cim.im2col``, the one im2col of the op library and the runtime. ``layout`` says
    how the result is laid out in memory; the values are the same:

    - ``VECTORS``: C-contiguous ``[N, *O, rows]``, copied from a channels-last (padded) copy
      of ``x`` (``scratch``, when given and big enough, holds it), in runs of ``kernel[-1]*Cg``
      elements;
    - ``ROWS`` / ``SAMPLES`` (only for ``Cg == 1``, where the order is channel-major): a view
      of a patch-major block ``[rows, N, *O]`` / ``[N, rows, *O]``, which a product reads as
      ``[rows, vectors]`` without a copy.

    ``out`` (any array of the right size and dtype) receives the copy.
    """
    d = len(kernel)
    n, c = x.shape[:2]
    cg = c // groups
    osz = [window_out_size(x.shape[2 + i], kernel[i], strides[i], dilations[i], pads[i],
                           pads[d + i]) for i in range(d)]
    length = c * math.prod(int(k) for k in kernel)
    if layout != VECTORS:
        if rows is not None:
            raise ValueError("a row range of the patches needs the vectors layout")
        if cg != 1:
            raise ValueError(f"patch-major layouts need one channel per group, got {cg}")
        xp = pad_spatial(x, pads)
        st = xp.strides
        win = _window_view(  # [N, C, *K, *O]: every tap of every patch
            xp, (n, c, *kernel, *osz),
            (st[0], st[1], *(st[2 + i] * dilations[i] for i in range(d)),
             *(st[2 + i] * strides[i] for i in range(d))))
        shape = (n, c, *kernel, *osz) if layout == SAMPLES else (c, *kernel, n, *osz)
        block = _buffer(out, shape, x.dtype)
        dst = block if layout == SAMPLES else block.transpose(
            d + 1, *range(d + 1), *range(d + 2, 2 * d + 2))
        np.copyto(dst, win)
        if layout == SAMPLES:
            return block.reshape(n, length, *osz).transpose(0, *range(2, d + 2), 1)
        return block.reshape(length, n, *osz).transpose(*range(1, d + 2), 0)
    xl = x.transpose(0, *range(2, d + 2), 1)  # [N, *S, C]
    if any(pads) or not xl.flags.c_contiguous:
        shape = (n, *(x.shape[2 + i] + pads[i] + pads[d + i] for i in range(d)), c)
        buf = _buffer(scratch, shape, x.dtype)
        if any(pads):
            buf.fill(0)
        inner = (slice(None), *(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(d)))
        np.copyto(buf[inner], xl)
        xl = buf
    st = xl.strides
    win = _window_view(  # [N, *O, G, *K, Cg]: every tap of every patch
        xl, (n, *osz, groups, *kernel, cg),
        (st[0], *(st[1 + i] * strides[i] for i in range(d)), cg * st[-1],
         *(st[1 + i] * dilations[i] for i in range(d)), st[-1]))
    if rows is not None:  # the range as a few boxes of (group, *kernel, channel), one copy each
        a, b = rows
        dst = _buffer(out, (n, *osz, b - a), x.dtype)
        at = 0
        for box in _boxes((groups, *map(int, kernel), cg), a, b):  # cached per range
            extent = [e - s for s, e in box]
            size = math.prod(extent)
            np.copyto(dst[..., at:at + size].reshape(n, *osz, *extent),
                      win[(slice(None),) * (1 + d) + tuple(slice(s, e) for s, e in box)])
            at += size
        return dst
    dst = _buffer(out, (n, *osz, groups, *kernel, cg), x.dtype)
    np.copyto(dst, win)
    return dst.reshape(n, *osz, length)


@functools.lru_cache(maxsize=256)
def _boxes(shape: tuple[int, ...], a: int, b: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Entries ``a .. b-1`` of a row-major index space of ``shape`` as boxes (a ``(start, stop)``
    per axis), in order: a partial head, a block of whole rows of the first axis, a partial
    tail (each partial part split the same way along the next axes)."""
    if a >= b:
        return ()
    if len(shape) == 1:
        return (((a, b),),)
    inner = math.prod(shape[1:])
    (i0, r0), (i1, r1) = divmod(a, inner), divmod(b, inner)
    if i0 == i1:
        return tuple(((i0, i0 + 1), *box) for box in _boxes(shape[1:], r0, r1))
    out: list[tuple[tuple[int, int], ...]] = []
    if r0:
        out += [((i0, i0 + 1), *box) for box in _boxes(shape[1:], r0, inner)]
        i0 += 1
    if i1 > i0:
        out.append(((i0, i1), *((0, s) for s in shape[1:])))
    if r1:
        out += [((i1, i1 + 1), *box) for box in _boxes(shape[1:], 0, r1)]
    return tuple(out)


def _buffer(buf: np.ndarray | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``buf`` viewed as ``shape`` when it holds exactly that many ``dtype`` elements (the
    caller's reusable storage), else a new array."""
    size = math.prod(int(s) for s in shape)
    if buf is not None and buf.dtype == dtype and buf.size == size and buf.flags.c_contiguous:
        return buf.reshape(shape)
    return np.empty(shape, dtype)


def _window_view(x: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only strided view of ``x`` (every window of an im2col), staying inside ``x``;
    made straight from the buffer of a C-contiguous ``x`` (much cheaper than as_strided)."""
    if x.flags.c_contiguous:
        view = np.ndarray(shape, x.dtype, x, 0, strides)
        view.flags.writeable = False
        return view
    return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)


def conv_weight_matrix(w: np.ndarray, groups: int) -> np.ndarray:
    """A conv weight ``[M, C/groups, *kernel]`` as the matrix that multiplies :func:`patches`:
    ``[K*Cg, M]`` (rows ordered like a patch) for ``groups == 1``, else ``[G, K*Cg, M/G]``."""
    m, cg = w.shape[:2]
    d = w.ndim - 2
    wg = w.reshape(groups, m // groups, cg, *w.shape[2:])  # [G, Mg, Cg, *K]
    wm = wg.transpose(0, *range(3, 3 + d), 2, 1).reshape(groups, -1, m // groups)
    return wm[0] if groups == 1 else wm


def _conv_work(attrs: dict[str, Any], operands: list[tuple[int, ...]],
               results: list[tuple[int, ...]]) -> int:
    """Multiply-accumulates: every output element sums C/group * prod(kernel) products."""
    w = operands[1]
    return math.prod(results[0]) * math.prod(w[1:])


@define(
    "nn.conv",
    operands=(2, 3),
    attrs=("strides", "pads", "dilations", "group"),
    infer=_conv_infer,
    work=_conv_work,
    summary="N-d grouped convolution (ONNX Conv): x [N,C,*S], w [M,C/group,*k], optional bias [M].",
)
def conv(
    attrs: dict[str, Any], x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
) -> np.ndarray:
    ct = compute_dtype(x.dtype)
    r = x.ndim - 2
    kernel = w.shape[2:]
    s, d, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    out = [
        window_out_size(x.shape[2 + i], kernel[i], s[i], d[i], pads[i], pads[i + r])
        for i in range(r)
    ]
    n = x.shape[0]
    g = attrs["group"]
    m = w.shape[0]
    cols = patches(x.astype(ct, copy=False), kernel, s, pads, d, g)  # [N, *O, G*K*Cg]
    wm = conv_weight_matrix(w.astype(ct, copy=False), g).reshape(g, -1, m // g)
    y = np.matmul(cols.reshape(-1, g, wm.shape[1]).transpose(1, 0, 2), wm)  # [G, N*P, Mg]
    y = np.ascontiguousarray(y.reshape(g, n, -1, m // g).transpose(1, 0, 3, 2)).reshape(n, m, *out)
    if b is not None:
        y += b.astype(ct, copy=False).reshape(m, *([1] * r))
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- nn.conv_transpose

_CONVT_KEYS = ("strides", "pads", "dilations", "output_padding")


def conv_transpose_out_size(size: int, k: int, s: int, d: int, pb: int, pe: int, op: int) -> int:
    return s * (size - 1) + op + (k - 1) * d + 1 - pb - pe


def _conv_transpose_infer(
    attrs: dict[str, Any], x: TensorType, w: TensorType, b: TensorType | None = None
) -> TensorType:
    op = "nn.conv_transpose"
    r, sp, group = _conv_operands(op, attrs, x, w, b, _CONVT_KEYS)
    n, c = x.shape[:2]
    if w.shape[0] != c or c % group:
        raise VerifyError(
            f"{op}: the weight {w} must be [C={c}, M/group, *kernel] "
            f"with C divisible by group={group}"
        )
    m = w.shape[1] * group
    if b is not None and b.shape != (m,):
        raise VerifyError(f"{op}: the bias must have shape ({m},), got {b}")
    out = []
    for i in range(r):
        o = conv_transpose_out_size(
            x.shape[2 + i],
            w.shape[2 + i],
            sp["strides"][i],
            sp["dilations"][i],
            sp["pads"][i],
            sp["pads"][i + r],
            sp["output_padding"][i],
        )
        if o <= 0:
            raise VerifyError(
                f"{op}: spatial axis {i} would have size {o}; the pads {sp['pads']} are too large"
            )
        out.append(o)
    return TensorType((n, m, *out), x.dtype)


def _conv_transpose_work(attrs: dict[str, Any], operands: list[tuple[int, ...]],
                         results: list[tuple[int, ...]]) -> int:
    """Multiply-accumulates: every input element scatters M/group * prod(kernel) products."""
    return math.prod(operands[0]) * math.prod(operands[1][1:])


@define(
    "nn.conv_transpose",
    operands=(2, 3),
    attrs=("strides", "pads", "dilations", "group", "output_padding"),
    infer=_conv_transpose_infer,
    work=_conv_transpose_work,
    summary="N-d grouped transposed convolution (ONNX ConvTranspose): w [C,M/group,*k].",
)
def conv_transpose(
    attrs: dict[str, Any], x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
) -> np.ndarray:
    ct = compute_dtype(x.dtype)
    r = x.ndim - 2
    n, c = x.shape[:2]
    size = x.shape[2:]
    kernel = w.shape[2:]
    g = attrs["group"]
    mg = w.shape[1]
    s, d, pads, opad = attrs["strides"], attrs["dilations"], attrs["pads"], attrs["output_padding"]
    # columns: [N, G, Mg*K, L] = w_g^T @ x_g
    wm = w.astype(ct, copy=False).reshape(g, c // g, -1).transpose(0, 2, 1)
    cols = np.matmul(wm, x.astype(ct, copy=False).reshape(n, g, c // g, -1))
    full = [s[i] * (size[i] - 1) + (kernel[i] - 1) * d[i] + 1 + opad[i] for i in range(r)]
    y = np.zeros((n, g * mg, *full), dtype=ct)
    cols = cols.reshape(n, g * mg, -1, *size)
    for i, tap in enumerate(kernel_taps(kernel, s, d, size)):  # col2im: scatter-add each tap
        y[(slice(None), slice(None), *tap)] += cols[:, :, i]
    crop = tuple(slice(pads[i], full[i] - pads[i + r]) for i in range(r))
    y = y[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape(-1, *([1] * r))
    return np.ascontiguousarray(y).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- nn.gemm


def _gemm_infer(
    attrs: dict[str, Any], a: TensorType, b: TensorType, c: TensorType | None = None
) -> TensorType:
    op = "nn.gemm"
    for key in ("trans_a", "trans_b"):
        if not isinstance(attrs.get(key), bool):
            raise VerifyError(f"{op}: attribute '{key}' must be a bool, got {attrs.get(key)!r}")
    for key in ("alpha", "beta"):
        if not isinstance(attrs.get(key), float):
            raise VerifyError(f"{op}: attribute '{key}' must be a float, got {attrs.get(key)!r}")
    if a.rank != 2 or b.rank != 2:
        raise VerifyError(f"{op}: both operands must be matrices, got {a} and {b}")
    if a.dtype != b.dtype or (c is not None and c.dtype != a.dtype):
        raise VerifyError(
            f"{op}: operands must share a dtype, got {a}, {b}" + (f", {c}" if c else "")
        )
    m, k = a.shape[::-1] if attrs["trans_a"] else a.shape
    k2, n = b.shape[::-1] if attrs["trans_b"] else b.shape
    if k != k2:
        raise VerifyError(
            f"{op}: inner dimensions differ: op(A) is {m}x{k}, op(B) is {k2}x{n} "
            f"(trans_a={attrs['trans_a']}, trans_b={attrs['trans_b']})"
        )
    if c is not None and (c.rank > 2 or broadcast_shapes(c.shape, (m, n)) != (m, n)):
        raise VerifyError(f"{op}: C {c} does not broadcast to the result shape ({m}, {n})")
    return TensorType((m, n), a.dtype)


def _gemm_work(attrs: dict[str, Any], operands: list[tuple[int, ...]],
               results: list[tuple[int, ...]]) -> int:
    """Multiply-accumulates: M * N * K."""
    a = operands[0]
    return math.prod(results[0]) * (a[0] if attrs["trans_a"] else a[1])


@define(
    "nn.gemm",
    operands=(2, 3),
    attrs=("alpha", "beta", "trans_a", "trans_b"),
    infer=_gemm_infer,
    work=_gemm_work,
    summary="alpha * op(A) @ op(B) + beta * C (ONNX Gemm); C optional, broadcast to [M, N].",
)
def gemm(
    attrs: dict[str, Any], a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None
) -> np.ndarray:
    ct = compute_dtype(a.dtype)
    am = a.astype(ct, copy=False)
    bm = b.astype(ct, copy=False)
    y = (am.T if attrs["trans_a"] else am) @ (bm.T if attrs["trans_b"] else bm)
    if attrs["alpha"] != 1.0:
        y = y * ct.type(attrs["alpha"]) if ct.kind == "f" else y * attrs["alpha"]
    if c is not None and attrs["beta"] != 0.0:
        cc = c.astype(ct, copy=False)
        y = y + (cc * ct.type(attrs["beta"]) if ct.kind == "f" else cc * attrs["beta"])
    return np.asarray(y).astype(a.dtype, copy=False)


# ----------------------------------------------------------------------------- nn.matmul


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy.matmul's result shape; VerifyError when the operands do not fit."""
    if not a or not b:
        raise VerifyError("nn.matmul: operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise VerifyError(f"nn.matmul: inner dimensions differ: {a} @ {b}")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul_infer(attrs: dict[str, Any], a: TensorType, b: TensorType) -> TensorType:
    if a.dtype != b.dtype:
        raise VerifyError(f"nn.matmul: operands must share a dtype, got {a} and {b}")
    return TensorType(matmul_shape(a.shape, b.shape), a.dtype)


def _matmul_work(attrs: dict[str, Any], operands: list[tuple[int, ...]],
                 results: list[tuple[int, ...]]) -> int:
    """Multiply-accumulates: every output element sums K products."""
    return math.prod(results[0]) * operands[0][-1]


@define(
    "nn.matmul",
    operands=2,
    infer=_matmul_infer,
    work=_matmul_work,
    summary="numpy.matmul (ONNX MatMul): batched, broadcasting.",
)
def matmul(attrs: dict[str, Any], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ct = compute_dtype(a.dtype)
    y = np.matmul(a.astype(ct, copy=False), b.astype(ct, copy=False))
    return np.asarray(y).astype(a.dtype, copy=False)
