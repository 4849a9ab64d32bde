"""ONNX model -> IR at stage "nn".

Steps: load and check the model; resolve every graph input's shape (a dynamic dimension needs an
explicit shape); scan every node and report ALL unsupported ops in one error; turn initializers
into constants; convert node by node with the registered converters, inferring each result's
type from the op registry (that is the frontend's shape inference); verify.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cimc.errors import CimcError, FrontendError
from cimc.frontend.onnx import registry
from cimc.frontend.onnx.dtypes import ONNX_DTYPES
from cimc.ir.core import Builder, Func, Module, Op, Value
from cimc.ir.types import TensorType, dtype_name
from cimc.ir.verify import verify
from cimc.ops import registry as op_registry

# The largest value (elements) computed at import: constants a model builds (ConstantOfShape,
# folded shape arithmetic). A quarter of a billion: 1 GiB of float32, beyond any weight matrix.
MAX_FOLDED_ELEMENTS = 2**28


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> (1, 3, 224, 224)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise CimcError(f"malformed shape {text!r}; expected dimensions joined by 'x', e.g. 1x3x224x224") from None
    if any(d <= 0 for d in dims):
        raise CimcError(f"malformed shape {text!r}: every dimension must be positive")
    return dims


class ConvertContext:
    """What a converter sees: the values of ONNX tensor names, constant folding, an op builder."""

    def __init__(self, func: Func, source: str, opset: int) -> None:
        self.func = func
        self.source = source
        self.opset = opset
        self.values: dict[str, Value] = {}
        self.builder = Builder(func.body)
        self.node: onnx.NodeProto | None = None
        self._folded: dict[Value, np.ndarray | None] = {}

    # --- naming
    def where(self, node: onnx.NodeProto | None = None) -> str:
        node = node or self.node
        if node is None:
            return self.source
        return f"{self.source}: node '{node.name or node.output[0]}' ({node.op_type})"

    def error(self, msg: str) -> FrontendError:
        return FrontendError(f"{self.where()}: {msg}")

    # --- inputs
    def input(self, node: onnx.NodeProto, i: int) -> Value | None:
        """The value of input ``i``; None when the input is absent or empty (optional)."""
        if i >= len(node.input) or node.input[i] == "":
            return None
        name = node.input[i]
        if name not in self.values:
            raise self.error(f"input {name!r} is not defined before this node")
        return self.values[name]

    def const(self, node: onnx.NodeProto, i: int) -> np.ndarray | None:
        """The value of input ``i`` if it is known at compile time (constant or foldable)."""
        v = self.input(node, i)
        return None if v is None else self.fold(v)

    def require_const(self, node: onnx.NodeProto, i: int, what: str) -> np.ndarray:
        v = self.const(node, i)
        if v is None:
            raise self.error(f"input #{i} ({what}) must be known at compile time, but it is computed at run time")
        return v

    def fold(self, v: Value) -> np.ndarray | None:
        """Evaluate ``v`` if every op it depends on has constant inputs (``nn.shape`` of a
        statically shaped value counts as constant). Results are cached."""
        if v in self._folded:
            return self._folded[v]
        op = v.op
        result = None
        if op is not None and not op.regions:
            self.check_size(v.type.shape, f"{op.name} result")
            if op.name == "nn.shape":
                opdef = op_registry.lookup(op.name)
                shaped = np.broadcast_to(np.empty((), np.float32), op.operands[0].type.shape)
                result = np.asarray(opdef.evaluate(opdef.with_defaults(op.attrs), shaped))
            else:
                ins = [self.fold(x) for x in op.operands]
                if all(x is not None for x in ins):
                    opdef = op_registry.lookup(op.name)
                    out = opdef.evaluate(opdef.with_defaults(op.attrs), *ins)
                    outs = out if isinstance(out, (list, tuple)) else [out]
                    result = np.asarray(outs[v.index]).astype(v.type.np_dtype)
        self._folded[v] = result
        return result

    def check_size(self, shape: Sequence[int], what: str) -> None:
        """Refuse to compute a value of ``shape`` at compile time when it is absurdly large (a
        model's shape arithmetic gone wrong would otherwise exhaust the memory)."""
        n = TensorType(tuple(shape)).numel
        if n > MAX_FOLDED_ELEMENTS:
            raise self.error(
                f"{what} has shape {list(shape)} ({n} elements); cimc computes values at compile "
                f"time only up to {MAX_FOLDED_ELEMENTS} elements"
            )

    # --- building
    def emit(self, name: str, operands: Sequence[Value], attrs: Mapping[str, Any] | None = None) -> Op:
        """Create an op at the end of the function; result types come from the op registry."""
        self.builder.loc = self.where()
        try:
            return self.builder.create(name, list(operands), dict(attrs or {}))
        except FrontendError:
            raise
        except CimcError as e:
            raise self.error(str(e)) from None

    def emit1(self, name: str, operands: Sequence[Value], attrs: Mapping[str, Any] | None = None) -> Value:
        return self.emit(name, operands, attrs).result

    def constant(self, array: np.ndarray) -> Value:
        self.builder.loc = self.where()
        v = self.builder.constant(np.asarray(array))
        self._folded[v] = np.asarray(array)
        return v


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """ONNX attributes as plain Python: strings decoded, tensors as numpy arrays."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        try:
            val = helper.get_attribute_value(a)
            if isinstance(val, bytes):
                val = val.decode()
            elif isinstance(val, onnx.TensorProto):
                val = numpy_helper.to_array(val)
            elif isinstance(val, list) and val and isinstance(val[0], bytes):
                val = [x.decode() for x in val]
        except (ValueError, TypeError, KeyError) as e:  # the onnx package cannot read it
            raise FrontendError(
                f"attribute '{a.name}' cannot be read ({type(e).__name__}: {e})"
            ) from None
        out[a.name] = val
    return out


def load_model(model: onnx.ModelProto | str | Path) -> tuple[onnx.ModelProto, str, Path | None]:
    """A model (a path or a ModelProto) as (proto, name for messages, path or None)."""
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<model>", None
    path = Path(model)
    if not path.is_file():
        raise FrontendError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path))
    except Exception as e:
        raise FrontendError(f"{path}: not a valid ONNX model ({type(e).__name__}: {e})") from None
    if not proto.graph.node and not proto.graph.output:
        raise FrontendError(f"{path}: not a valid ONNX model (the file has no graph)")
    return proto, str(path), path


def _text_fields(msg: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every string field of a protobuf message, recursively, as (dotted path, value)."""
    for fd, value in msg.ListFields():
        if fd.type not in (fd.TYPE_MESSAGE, fd.TYPE_STRING):
            continue
        single = hasattr(value, "ListFields") or isinstance(value, (str, bytes))
        items = [(f"{where}.{fd.name}", value)] if single else [
            (f"{where}.{fd.name}[{i}]", v) for i, v in enumerate(value)]
        for path, v in items:
            if fd.type == fd.TYPE_MESSAGE:
                yield from _text_fields(v, path)
            else:
                yield path, v


def _check_text(proto: onnx.ModelProto, source: str) -> None:
    """Names, op types and other string fields must be UTF-8 text (protobuf hands over the raw
    bytes of one that is not, and the ONNX checker then fails deep inside)."""
    for where, value in _text_fields(proto, "model"):
        if isinstance(value, bytes):
            raise FrontendError(
                f"{source}: not a valid ONNX model: {where} is not UTF-8 text ({value[:40]!r})"
            )


def _check(proto: onnx.ModelProto, source: str, path: Path | None) -> None:
    try:
        # Checking by path lets the C++ checker read the file itself (no re-serialisation).
        onnx.checker.check_model(str(path) if path is not None else proto)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "validation failed"
        raise FrontendError(f"{source}: not a valid ONNX model: {first}") from None


def _opset(proto: onnx.ModelProto, source: str) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise FrontendError(f"{source}: the model imports no version of the default ONNX domain")


def _scan_unsupported(proto: onnx.ModelProto, opset: int, source: str) -> None:
    domains = {imp.domain: imp.version for imp in proto.opset_import}
    bad: list[str] = []
    for i, node in enumerate(proto.graph.node):
        version = domains.get(node.domain, opset)
        if registry.find(node.op_type, version, node.domain) is None:
            dom = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
            bad.append(f"  ({dom}{node.op_type}, opset {version}, node '{node.name or f'#{i}'}')")
    if bad:
        raise FrontendError(
            f"{source}: {len(bad)} node(s) use ops cimc does not support "
            f"(see docs/supported_ops.md):\n" + "\n".join(bad)
        )


def _given_shape(
    source: str, name: str, shape: Sequence[int], declared: list[int | str]
) -> tuple[int, ...]:
    """An explicit input shape (``--input-shape``/``input_shapes``), checked against the model."""
    if isinstance(shape, (str, bytes)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise FrontendError(
            f"{source}: the shape given for input '{name}' is {shape!r}; every dimension must be "
            "an integer >= 0"
        )
    dims = tuple(int(d) for d in shape)
    if declared and len(dims) != len(declared):
        raise FrontendError(
            f"{source}: --input-shape {name} has rank {len(dims)}, the model's input has rank "
            f"{len(declared)}"
        )
    for given, want in zip(dims, declared):
        if isinstance(want, int) and want > 0 and want != given:
            raise FrontendError(
                f"{source}: --input-shape {name}={'x'.join(map(str, dims))} contradicts the "
                f"model's static shape {declared}"
            )
    return dims


def _dims(tt: onnx.TypeProto.Tensor) -> list[int | str] | None:
    """An input's declared dimensions: sizes, or names for dynamic ones; None without a shape."""
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]


def _declared_shape(source: str, name: str, dims: list[int | str] | None) -> tuple[int, ...]:
    """The model's own shape of an input; a dynamic leading (batch) dimension becomes 1."""
    if dims is None:
        raise FrontendError(
            f"{source}: input '{name}' has no shape in the model; give it with "
            f"--input-shape {name}=DIMS, its dimensions joined by 'x' (e.g. {name}=1x3x224x224)"
        )
    bad = [d for d in dims if isinstance(d, int) and d <= 0]
    if bad:
        why = "cimc does not support empty tensors" if bad[0] == 0 else "sizes must be positive"
        raise FrontendError(
            f"{source}: input '{name}' has a dimension of size {bad[0]} (shape {dims}); {why}. If "
            f"it marks an unknown size, give the shape explicitly with --input-shape {name}=..."
        )
    dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if any(i > 0 for i in dynamic):
        shown = "[" + ", ".join(map(str, dims)) + "]"
        fill = tuple(1 if i in dynamic else d for i, d in enumerate(dims))
        later = ", ".join(str(dims[i]) for i in dynamic if i > 0)
        raise FrontendError(
            f"{source}: input '{name}' has a dynamic shape {shown}; give it explicitly, e.g. "
            f"--input-shape {name}={'x'.join(map(str, fill))} with the sizes you will run in "
            f"place of the 1 at {later} (API: input_shapes={{{name!r}: {fill}}})"
        )
    if dynamic:
        shape = "x".join(["1", *map(str, dims[1:])])
        warnings.warn(
            f"input '{name}' has a dynamic batch dimension '{dims[0]}': using 1, as "
            f"--input-shape {name}={shape} would; a compiled artifact still runs any batch size "
            "when the model keeps the samples of a batch apart",
            stacklevel=4,
        )
    return tuple(1 if isinstance(d, str) else d for d in dims)


def _input_types(
    proto: onnx.ModelProto, source: str, input_shapes: Mapping[str, Sequence[int]]
) -> list[tuple[str, TensorType]]:
    inits = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    names = {i.name for i in graph_inputs}
    unknown = sorted(set(input_shapes) - names)
    if unknown:
        raise FrontendError(
            f"{source}: --input-shape names {', '.join(unknown)}, which are not inputs of the model "
            f"(its inputs: {', '.join(sorted(names))})"
        )
    out = []
    for i in graph_inputs:
        tt = i.type.tensor_type
        if not i.type.HasField("tensor_type") or tt.elem_type not in ONNX_DTYPES:
            raise FrontendError(f"{source}: input '{i.name}' has an unsupported type")
        if i.name in input_shapes:
            shape = _given_shape(source, i.name, input_shapes[i.name], _dims(tt) or [])
        else:
            shape = _declared_shape(source, i.name, _dims(tt))
        out.append((i.name, TensorType(shape, ONNX_DTYPES[tt.elem_type])))
    return out


def import_onnx(
    model: onnx.ModelProto | str | Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Module:
    """Import an ONNX model (a path or a ModelProto) into a verified IR module at stage "nn"."""
    proto, source, path = load_model(model)
    _check_text(proto, source)
    opset = _opset(proto, source)
    _scan_unsupported(proto, opset, source)
    _check(proto, source, path)
    inputs = _input_types(proto, source, dict(input_shapes or {}))

    func = Func("main", [t for _, t in inputs], input_names=[n for n, _ in inputs])
    ctx = ConvertContext(func, source, opset)
    for (name, _), v in zip(inputs, func.args):
        ctx.values[name] = v
    for init in proto.graph.initializer:
        try:
            arr = numpy_helper.to_array(init)
            dtype_name(arr.dtype)
        except Exception as e:
            raise FrontendError(f"{source}: initializer '{init.name}' cannot be read: {e}") from None
        ctx.values[init.name] = ctx.constant(arr)

    for node in proto.graph.node:
        ctx.node = node
        conv = registry.find(node.op_type, opset, node.domain)
        assert conv is not None  # the scan above guarantees it
        try:
            outs = conv.fn(ctx, node, node_attrs(node))
        except CimcError as e:
            msg = str(e)
            raise (e if msg.startswith(source) else ctx.error(msg)) from None
        if len(outs) < len([o for o in node.output if o]):
            outs = list(outs) + [None] * (len(node.output) - len(outs))
        for name, v in zip(node.output, outs):
            if name and v is not None:
                ctx.values[name] = v
            elif name and v is None:
                ctx.values.pop(name, None)
    ctx.node = None

    outputs = []
    for o in proto.graph.output:
        if o.name not in ctx.values:
            raise FrontendError(f"{source}: graph output '{o.name}' is never computed")
        outputs.append(ctx.values[o.name])
    Builder(func.body).create("return", outputs, result_types=[])
    func.attrs["output_names"] = [o.name for o in proto.graph.output]
    module = Module([func], {"stage": "nn"})
    verify(module)
    return module
