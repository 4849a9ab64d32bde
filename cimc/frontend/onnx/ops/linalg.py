"""Conv, ConvTranspose, Gemm and MatMul.

Every attribute of the nn op is written explicitly: ``auto_pad`` and ConvTranspose's
``output_shape`` are resolved to ``pads`` at import, from the (static) input shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cimc.frontend.onnx.registry import converter

AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def spatial_list(ctx, attrs: dict[str, Any], key: str, n: int, default: int) -> list[int]:
    """Attribute ``key`` as ``n`` ints (``default`` everywhere when absent).

    Raises a FrontendError naming the node when the attribute has the wrong length."""
    val = attrs.get(key)
    if val is None or (isinstance(val, list) and not val):
        return [default] * n
    val = [int(v) for v in val]
    if len(val) != n:
        r = n // 2 if key == "pads" else n
        raise ctx.error(
            f"attribute '{key}' = {val} has {len(val)} values; "
            f"an input with {r} spatial axes needs {n}"
        )
    return val


def same_pads(
    auto_pad: str,
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """Pads for SAME_UPPER / SAME_LOWER: the output has ceil(size / stride) positions; an odd
    total padding puts the extra element at the end (UPPER) or the beginning (LOWER)."""
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin + end


def window_pads(
    ctx,
    attrs: dict[str, Any],
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """Explicit pads of a windowed op (Conv, pooling) from ``auto_pad`` and ``pads``."""
    r = len(sizes)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise ctx.error(f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}")
    if auto_pad == "VALID":
        return [0] * (2 * r)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if any(d != 1 for d in dilations):
            raise ctx.error(
                f"auto_pad={auto_pad} with dilations {list(dilations)} is not supported "
                "(onnxruntime refuses it for Conv and disagrees with the ONNX spec for pooling); "
                "give explicit pads instead"
            )
        return same_pads(auto_pad, sizes, kernel, strides, dilations)
    pads = spatial_list(ctx, attrs, "pads", 2 * r, 0)
    if any(p < 0 for p in pads):
        raise ctx.error(f"negative pads {pads} are not supported; slice the input instead")
    return pads


def _conv_common(
    ctx, node, attrs: dict[str, Any], kernel_axis_from: int
) -> tuple[Any, Any, Any, list[int], list[int], list[int], int]:
    x, w, b = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    if x.type.rank < 3:
        raise ctx.error(f"the input must be [N, C, spatial...] (rank >= 3), got {x.type}")
    r = x.type.rank - 2
    if w.type.rank != r + 2:
        raise ctx.error(f"the weight {w.type} must have rank {r + 2} like the input {x.type}")
    kernel = list(w.type.shape[kernel_axis_from:])
    given = attrs.get("kernel_shape")
    if given and [int(k) for k in given] != kernel:
        raise ctx.error(
            f"kernel_shape {list(given)} does not match the weight's spatial shape {kernel}"
        )
    strides = spatial_list(ctx, attrs, "strides", r, 1)
    dilations = spatial_list(ctx, attrs, "dilations", r, 1)
    group = int(attrs.get("group", 1))
    if group < 1:
        raise ctx.error(f"group must be >= 1, got {group}")
    return x, w, b, kernel, strides, dilations, group


@converter("Conv", since=1)
def conv(ctx, node, attrs):
    """nn.conv (N-d, groups, dilations; auto_pad resolved to pads)"""
    x, w, b, kernel, strides, dilations, group = _conv_common(ctx, node, attrs, 2)
    pads = window_pads(ctx, attrs, x.type.shape[2:], kernel, strides, dilations)
    operands = [x, w] if b is None else [x, w, b]
    return [
        ctx.emit1(
            "nn.conv",
            operands,
            {"strides": strides, "pads": pads, "dilations": dilations, "group": group},
        )
    ]


def _output_shape(ctx, attrs: dict[str, Any], r: int) -> list[int] | None:
    shape = attrs.get("output_shape")
    if not shape:
        return None
    shape = [int(v) for v in shape]
    if len(shape) != r:
        raise ctx.error(
            f"output_shape {shape} must list the {r} spatial output sizes (and nothing else)"
        )
    return shape


def transpose_pads(
    ctx,
    auto_pad: str,
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
    target: Sequence[int] | None,
) -> tuple[list[int], list[int]]:
    """Pads (and output_padding) of a ConvTranspose given ``output_shape`` (``target``) or
    auto_pad SAME_*, as onnxruntime resolves them.

    The total padding is the unpadded output size minus the wanted size (``target``, or
    size * stride for SAME_*). An odd total puts the extra element at the end for SAME_UPPER
    and at the beginning otherwise. A target up to stride - 1 beyond the unpadded output grows
    output_padding; SAME_* never pads negatively."""
    begin, end, opad = [], [], list(output_padding)
    for i, (size, k, s, d) in enumerate(zip(sizes, kernel, strides, dilations)):
        natural = s * (size - 1) + output_padding[i] + (k - 1) * d + 1
        total = natural - (target[i] if target is not None else size * s)
        if total < 0 and target is not None:
            if -total >= s:
                raise ctx.error(
                    f"output_shape {list(target)} is inconsistent with the input: spatial axis "
                    f"{i} can be at most {natural + s - 1} long (input {size}, kernel {k}, "
                    f"stride {s}, dilation {d})"
                )
            opad[i] -= total
        total = max(total, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin + end, opad


@converter("ConvTranspose", since=1)
def conv_transpose(ctx, node, attrs):
    """nn.conv_transpose (N-d, groups, output_padding; output_shape/auto_pad resolved to pads)"""
    x, w, b, kernel, strides, dilations, group = _conv_common(ctx, node, attrs, 2)
    r = len(kernel)
    output_padding = spatial_list(ctx, attrs, "output_padding", r, 0)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise ctx.error(f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}")
    target = _output_shape(ctx, attrs, r)
    if target is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads, output_padding = transpose_pads(
            ctx, auto_pad, x.type.shape[2:], kernel, strides, dilations, output_padding, target
        )
    elif auto_pad == "VALID":
        pads = [0] * (2 * r)
    else:
        pads = spatial_list(ctx, attrs, "pads", 2 * r, 0)
    if any(p < 0 for p in pads):
        raise ctx.error(f"negative pads {pads} are not supported")
    operands = [x, w] if b is None else [x, w, b]
    nn_attrs = {
        "strides": strides,
        "pads": pads,
        "dilations": dilations,
        "group": group,
        "output_padding": output_padding,
    }
    return [ctx.emit1("nn.conv_transpose", operands, nn_attrs)]


@converter("Gemm", since=1)
def gemm(ctx, node, attrs):
    """nn.gemm (transA/transB, alpha/beta; C optional and broadcast to [M, N])"""
    a, b, c = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    nn_attrs = {
        "alpha": float(attrs.get("alpha", 1.0)),
        "beta": float(attrs.get("beta", 1.0)),
        "trans_a": bool(attrs.get("transA", 0)),
        "trans_b": bool(attrs.get("transB", 0)),
    }
    return [ctx.emit1("nn.gemm", [a, b] if c is None else [a, b, c], nn_attrs)]


@converter("MatMul", since=1)
def matmul(ctx, node, attrs):
    """nn.matmul (numpy matmul semantics: batched, broadcasting, 1-D operands)"""
    return [ctx.emit1("nn.matmul", [ctx.input(node, 0), ctx.input(node, 1)])]
