"""Seeded mutators for the fuzz tests: textual IR (bytes) and ONNX models (protos and bytes).

Every mutator takes a ``numpy.random.Generator`` and returns a new object; the same seed gives
the same mutant, so a failing case is replayed from its seed alone.
"""

from __future__ import annotations

import contextlib
import re
import signal
import traceback
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

# Odd characters a user's file may hold: controls, a NUL, a BOM, bidi marks, non-ASCII letters.
ODD_TEXT = ["\x00", "\x07", "\x1b", "\t", "\r", "\u00e9", "\u202e", "\ufeff", "\U0001f600",
            "\u0301", "\ud7ff", "\u2028", "\\", '"', "%", "@", "{", "}", "<", ">", ":"]
# Numbers at and beyond every limit an IR integer or float field may hit.
HUGE_NUMBERS = ["99999999999999999999", "-99999999999999999999", "9223372036854775807",
                "9223372036854775808", "-9223372036854775809", "4294967296", "2147483648", "-1",
                "0", "1e308", "1e999", "-1e999", "inf", "nan", "-0", "1.5", "65536"]
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[%@]?[\w.]+|->|\S')


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


# ----------------------------------------------------------------------------- text / bytes


def flip_byte(rng: np.random.Generator, data: bytes) -> bytes:
    if not data:
        return data
    i = int(rng.integers(len(data)))
    return data[:i] + bytes([int(rng.integers(256))]) + data[i + 1:]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def delete_line(rng: np.random.Generator, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[int(rng.integers(len(lines)))]
    return b"\n".join(lines)


def duplicate_line(rng: np.random.Generator, data: bytes) -> bytes:
    lines = _lines(data)
    i = int(rng.integers(len(lines)))
    lines.insert(int(rng.integers(len(lines) + 1)), lines[i])
    return b"\n".join(lines)


def swap_lines(rng: np.random.Generator, data: bytes) -> bytes:
    lines = _lines(data)
    i, j = (int(k) for k in rng.integers(len(lines), size=2))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _tokens(data: bytes) -> list[re.Match]:
    return list(_TOKEN.finditer(data))


def _replace(data: bytes, m: re.Match, new: bytes) -> bytes:
    return data[:m.start()] + new + data[m.end():]


def swap_tokens(rng: np.random.Generator, data: bytes) -> bytes:
    toks = _tokens(data)
    if len(toks) < 2:
        return data
    a, b = sorted(int(k) for k in rng.choice(len(toks), size=2, replace=False))
    ta, tb = toks[a], toks[b]
    return (data[:ta.start()] + tb.group() + data[ta.end():tb.start()] + ta.group()
            + data[tb.end():])


def delete_token(rng: np.random.Generator, data: bytes) -> bytes:
    toks = _tokens(data)
    return _replace(data, _pick(rng, toks), b"") if toks else data


def insert_odd_text(rng: np.random.Generator, data: bytes) -> bytes:
    """An odd character anywhere, or inside a quoted string (where the printer never puts one)."""
    odd = _pick(rng, ODD_TEXT).encode("utf-8", "surrogatepass")
    strings = [m for m in _tokens(data) if m.group().startswith(b'"')]
    if strings and rng.random() < 0.5:
        m = _pick(rng, strings)
        i = m.start() + 1 + int(rng.integers(len(m.group()) - 1))
    else:
        i = int(rng.integers(len(data) + 1))
    return data[:i] + odd + data[i:]


def _swap_match(rng: np.random.Generator, data: bytes, pattern: re.Pattern[bytes],
                choices: list[bytes]) -> bytes:
    """One match of ``pattern`` in ``data`` replaced by one of ``choices``."""
    found = list(pattern.finditer(data))
    return _replace(data, _pick(rng, found), _pick(rng, choices)) if found else data


def _texts(pattern: re.Pattern[bytes], data: bytes) -> list[bytes]:
    return [m.group() for m in pattern.finditer(data)]


# Values an attribute may be given instead of its own: other kinds, empty, nested, huge.
ODD_VALUES = ["[1, 2]", "[]", "[[1]]", '"x"', '""', "true", "1.5", "-1", "0", "[-1, -1]",
              "99999999999999999999", "[99999999999999999999]", "dense<[1.0] : tensor<1xf32>>",
              "dense<[] : tensor<0xf32>>", "[1.5, 2.5]", '["a"]', "nan"]
_ATTR_VALUE = re.compile(rb"(?<=\w = )(\[[^\[\]]*\]|dense<[^>]*>>|[^,}\s]+)")
_OP_NAME = re.compile(rb"\b(?:nn|cim)\.\w+")
_VALUE_REF = re.compile(rb"%\w+")
_DTYPE = re.compile(rb"(?<=x|<)(f32|f64|f16|i64|i32|i16|i8|u8|i1)(?=>)")
_NUMBER = re.compile(rb"(?<![\w.%@])[-+]?\d[\w.+-]*")
_DIMENSION = re.compile(rb"(?<=[<x])\d+(?=x)")


def huge_number(rng: np.random.Generator, data: bytes) -> bytes:
    return _swap_match(rng, data, _NUMBER, [n.encode() for n in HUGE_NUMBERS])


def bad_dimension(rng: np.random.Generator, data: bytes) -> bytes:
    """A dimension of a tensor type replaced by 0 or a huge number."""
    return _swap_match(rng, data, _DIMENSION,
                       [b"0", b"99999999999999999999", b"9223372036854775807", b"4294967296"])


def replace_attribute_value(rng: np.random.Generator, data: bytes) -> bytes:
    return _swap_match(rng, data, _ATTR_VALUE, [v.encode() for v in ODD_VALUES])


def replace_op_name(rng: np.random.Generator, data: bytes) -> bytes:
    """One op renamed to another op of the text (or to an unknown one)."""
    return _swap_match(rng, data, _OP_NAME, _texts(_OP_NAME, data)
                       + [b"nn.nosuch", b"cim.xbar_mvm", b"nn.constant"])


def replace_value_ref(rng: np.random.Generator, data: bytes) -> bytes:
    """One value use (or definition) replaced by another value of the text."""
    return _swap_match(rng, data, _VALUE_REF, _texts(_VALUE_REF, data))


def change_dtype(rng: np.random.Generator, data: bytes) -> bytes:
    return _swap_match(rng, data, _DTYPE, [b"f32", b"f64", b"i64", b"i1", b"u8"])


# Edits that keep the syntax (mostly) and so reach the verifier; the others mostly break it.
SEMANTIC_MUTATORS = [huge_number, bad_dimension, replace_attribute_value, replace_op_name,
                     replace_value_ref, change_dtype]
TEXT_MUTATORS = [flip_byte, delete_line, duplicate_line, swap_lines, swap_tokens, delete_token,
                 insert_odd_text, *SEMANTIC_MUTATORS]


def mutate_text(rng: np.random.Generator, data: bytes) -> bytes:
    """One to three edits: half the cases only syntax-keeping ones, the others from all."""
    pool = SEMANTIC_MUTATORS if rng.random() < 0.5 else TEXT_MUTATORS
    for _ in range(int(rng.integers(1, 4))):
        data = _pick(rng, pool)(rng, data)
    return data


# ----------------------------------------------------------------------------- ONNX protos

_INTS = [0, -1, 1, 2, 3, 7, 2**31, 2**62, -(2**62), 2**63 - 1]
_FLOATS = [0.0, -1.0, 1e30, float("inf"), float("nan")]
_OP_TYPES = ["Relu", "Conv", "Reshape", "Gemm", "MaxPool", "Add", "Concat", "Slice", "Pad",
             "Resize", "Softmax", "Transpose", "Gather", "NoSuchOp", "", "Split", "Flatten",
             "BatchNormalization", "Constant", "ConstantOfShape", "Cast", "Squeeze"]
_DTYPES = [TensorProto.FLOAT, TensorProto.INT64, TensorProto.DOUBLE, TensorProto.STRING,
           TensorProto.BOOL, TensorProto.UINT8, TensorProto.FLOAT16, TensorProto.COMPLEX64,
           TensorProto.UNDEFINED, 999]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _node(rng: np.random.Generator, m: onnx.ModelProto) -> onnx.NodeProto | None:
    nodes = m.graph.node
    return nodes[int(rng.integers(len(nodes)))] if len(nodes) else None


def drop_node(rng, m):
    if len(m.graph.node):
        del m.graph.node[int(rng.integers(len(m.graph.node)))]


def duplicate_node(rng, m):
    n = _node(rng, m)
    if n is not None:
        m.graph.node.insert(int(rng.integers(len(m.graph.node) + 1)), n)


def swap_nodes(rng, m):
    nodes = m.graph.node
    if len(nodes) >= 2:
        i, j = (int(k) for k in rng.choice(len(nodes), size=2, replace=False))
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(nodes[i])
        b.CopyFrom(nodes[j])
        nodes[i].CopyFrom(b)
        nodes[j].CopyFrom(a)


def change_op_type(rng, m):
    n = _node(rng, m)
    if n is not None:
        n.op_type = _pick(rng, _OP_TYPES)


def rewire_input(rng, m):
    n = _node(rng, m)
    if n is None:
        return
    names = [i.name for i in m.graph.input] + [t.name for t in m.graph.initializer] + [
        o for x in m.graph.node for o in x.output] + ["", "nosuch"]
    choice = int(rng.integers(3))
    if choice == 0 and len(n.input):
        del n.input[int(rng.integers(len(n.input)))]
    elif choice == 1:
        n.input.append(_pick(rng, names))
    elif len(n.input):
        n.input[int(rng.integers(len(n.input)))] = _pick(rng, names)


def rewire_output(rng, m):
    n = _node(rng, m)
    if n is None:
        return
    choice = int(rng.integers(3))
    if choice == 0 and len(n.output):
        n.output[int(rng.integers(len(n.output)))] = _pick(rng, ["", "nosuch", m.graph.input[0].name])
    elif choice == 1:
        n.output.append("extra_out")
    elif len(n.output):
        del n.output[int(rng.integers(len(n.output)))]


def mutate_attribute(rng, m):
    nodes = [n for n in m.graph.node if len(n.attribute)]
    if not nodes:
        return
    n = _pick(rng, nodes)
    a = n.attribute[int(rng.integers(len(n.attribute)))]
    choice = int(rng.integers(6))
    if choice == 0:
        n.attribute.remove(a)
    elif choice == 1:  # another type, same name
        new = helper.make_attribute(a.name, _pick(rng, [3, 1.5, "x", [1, 2], [0.5], b"\x00"]))
        n.attribute.remove(a)
        n.attribute.append(new)
    elif choice == 2 and a.type == AttributeProto.INT:
        a.i = _pick(rng, _INTS)
    elif choice == 2 and a.type == AttributeProto.INTS and len(a.ints):
        a.ints[int(rng.integers(len(a.ints)))] = _pick(rng, _INTS)
    elif choice == 3 and a.type == AttributeProto.INTS:
        if len(a.ints) and rng.random() < 0.5:
            del a.ints[int(rng.integers(len(a.ints)))]
        else:
            a.ints.append(_pick(rng, _INTS))
    elif choice == 3 and a.type in (AttributeProto.FLOAT, AttributeProto.FLOATS):
        if a.type == AttributeProto.FLOAT:
            a.f = _pick(rng, _FLOATS)
        elif len(a.floats):
            a.floats[0] = _pick(rng, _FLOATS)
    elif choice == 4 and a.type == AttributeProto.TENSOR:
        mutate_tensor(rng, a.t)
    else:  # an attribute the op does not have
        n.attribute.append(helper.make_attribute(_pick(rng, ["bogus", "axis", "pads", "mode"]),
                                                 _pick(rng, [1, [1, 1], "edge", 0.5])))


def mutate_tensor(rng, t: TensorProto) -> None:
    choice = int(rng.integers(4))
    if choice == 0 and len(t.dims):
        t.dims[int(rng.integers(len(t.dims)))] = _pick(rng, [0, 3, 2**40, 2**62])
    elif choice == 1:
        t.data_type = _pick(rng, _DTYPES)
    elif choice == 2:
        t.dims.append(2)
    elif t.raw_data:
        t.raw_data = t.raw_data[: len(t.raw_data) // 2]
    else:
        t.ClearField("float_data")
        t.ClearField("int64_data")


def mutate_constant_value(rng, m):
    """One element of an integer constant (a shape, slice bounds, pads, axes) set to an odd value."""
    tensors = [t for t in m.graph.initializer if t.data_type == TensorProto.INT64] + [
        a.t for n in m.graph.node for a in n.attribute
        if a.type == AttributeProto.TENSOR and a.t.data_type == TensorProto.INT64]
    if not tensors:
        return
    t = _pick(rng, tensors)
    try:
        arr = numpy_helper.to_array(t).copy()
    except ValueError:  # an earlier edit left its data and dims apart
        return
    if arr.size:
        arr.flat[int(rng.integers(arr.size))] = _pick(rng, _INTS)
    t.CopyFrom(numpy_helper.from_array(arr, t.name))


def mutate_initializer(rng, m):
    if len(m.graph.initializer):
        mutate_tensor(rng, m.graph.initializer[int(rng.integers(len(m.graph.initializer)))])


def mutate_graph_io(rng, m):
    vals = list(m.graph.input) + list(m.graph.output)
    v = _pick(rng, vals)
    tt = v.type.tensor_type
    choice = int(rng.integers(5))
    if choice == 0 and len(tt.shape.dim):
        d = tt.shape.dim[int(rng.integers(len(tt.shape.dim)))]
        value = _pick(rng, [0, 2**40, 2**63 - 1, "batch", "", "N"])
        if isinstance(value, str):
            d.dim_param = value
        else:
            d.dim_value = value
    elif choice == 1:
        tt.elem_type = _pick(rng, _DTYPES)
    elif choice == 2:
        tt.ClearField("shape")
    elif choice == 3 and len(tt.shape.dim):
        del tt.shape.dim[int(rng.integers(len(tt.shape.dim)))]
    elif v in list(m.graph.output):
        m.graph.output.remove(v)
    else:
        v.name = _pick(rng, ["renamed", "", v.name + "_"])


def change_opset(rng, m):
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = _pick(rng, [1, 6, 9, 11, 13, 21, 99, 0, -1])
            return


def change_domain(rng, m):
    n = _node(rng, m)
    if n is not None:
        n.domain = _pick(rng, ["com.microsoft", "ai.onnx.ml", "bogus"])


# Attribute and constant edits mostly pass the ONNX checker and so reach the converters.
PROTO_MUTATORS = [drop_node, duplicate_node, swap_nodes, change_op_type, rewire_input,
                  rewire_output, mutate_attribute, mutate_attribute, mutate_initializer,
                  mutate_constant_value, mutate_constant_value, mutate_graph_io, change_opset,
                  change_domain]


def mutate_model(rng: np.random.Generator, model: onnx.ModelProto) -> onnx.ModelProto:
    """One to three structural edits drawn from PROTO_MUTATORS."""
    m = _copy(model)
    for _ in range(int(rng.integers(1, 4))):
        _pick(rng, PROTO_MUTATORS)(rng, m)
    return m


def corrupt_strings(rng: np.random.Generator, data: bytes, strings: list[str]) -> bytes:
    """Serialised bytes with one occurrence of a string (an op type, an attribute's string value,
    a name) replaced, byte for byte, by invalid UTF-8 (the proto API refuses to set it)."""
    present = [s.encode() for s in strings if s and s.encode() in data]
    if not present:
        return flip_byte(rng, data)
    s = _pick(rng, present)
    bad = bytes([0xFF, 0xFE, 0xC3, 0x28][i % 4] for i in range(len(s)))
    i = data.find(s)
    return data[:i] + bad + data[i + len(s):]


def model_strings(model: onnx.ModelProto) -> list[str]:
    out = []
    for n in model.graph.node:
        out += [n.op_type, n.name, *n.input, *n.output]
        out += [a.s.decode() for a in n.attribute if a.type == AttributeProto.STRING]
    return out


# ----------------------------------------------------------------------------- running cases


@contextlib.contextmanager
def deadline(seconds: float, what: str):
    """Raise TimeoutError if the body runs longer than ``seconds`` (a hang, not a slow case: the
    limit is far above any case's time). POSIX only; elsewhere it just runs the body."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"{what} still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cases(seeds, case, check, expected: type[BaseException]) -> list[str]:
    """Build ``case(seed)`` for every seed and run ``check`` on it; returns one line per seed that
    raised anything but ``expected`` (or hung), naming the seed so it can be replayed."""
    failures = []
    for seed in seeds:
        subject = case(seed)
        try:
            with deadline(30.0, f"seed {seed}"):
                check(subject)
        except expected:
            pass
        except BaseException as e:  # the point is to catch anything else
            if isinstance(e, KeyboardInterrupt):
                raise
            where = traceback.extract_tb(e.__traceback__)[-1]
            failures.append(f"seed {seed}: {type(e).__name__} at {Path(where.filename).name}:"
                            f"{where.lineno}: {str(e)[:200]}")
    return failures
