"""print(parse(text)) == text, checked on generated modules (hypothesis) and on edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cimc.ir import Block, Func, Module, Op, TensorType, parse_module, print_module, to_text
from cimc.ir.types import DTYPES
from cimc.ir.verify import verify

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
_scalar = st.one_of(st.integers(-(2**40), 2**40), _floats, st.booleans(), st.text(max_size=12))
_attr = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


@st.composite
def _array(draw):
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == "i1":
        arr = rng.integers(0, 2, n).astype(bool)
    elif dtype.startswith("f"):
        with np.errstate(over="ignore"):
            arr = (rng.standard_normal(n) * 10 ** draw(st.integers(-6, 6))).astype(DTYPES[dtype])
        if n and draw(st.booleans()):
            arr[0] = draw(st.sampled_from([np.inf, -np.inf, np.nan, 0.0, -0.0]))
    else:
        info = np.iinfo(DTYPES[dtype])
        arr = rng.integers(info.min, int(info.max) + 1, n, dtype=np.int64).astype(DTYPES[dtype])
    return arr.reshape(shape)


@st.composite
def modules(draw):
    """Random well-formed modules of generic ops (no registry needed for printing/parsing)."""
    n_args = draw(st.integers(0, 3))
    types = [TensorType(tuple(draw(st.lists(st.integers(1, 5), max_size=3))), draw(st.sampled_from(sorted(DTYPES))))
             for _ in range(n_args)]
    f = Func("main", types, input_names=[f"in{i}" for i in range(n_args)])
    values = list(f.args)

    def build(block: Block, values: list, depth: int) -> None:
        for _ in range(draw(st.integers(0, 5))):
            operands = draw(st.lists(st.sampled_from(values), max_size=3)) if values else []
            n_res = draw(st.integers(0, 2))
            rtypes = [TensorType((draw(st.integers(1, 4)),), "f32") for _ in range(n_res)]
            attrs = draw(st.dictionaries(_names, st.one_of(_attr, _array()), max_size=3))
            regions = []
            if depth < 2 and draw(st.integers(0, 4)) == 0:
                r = Block([TensorType((2,), "f32")])
                build(r, values + r.args, depth + 1)
                r.append(Op("yield", r.args[:1]))
                regions.append(r)
            op = Op(draw(st.sampled_from(["nn.x", "cim.y_z", "test.op3"])), operands, rtypes, attrs, regions)
            block.append(op)
            values.extend(op.results)

    build(f.body, values, 0)
    f.body.append(Op("return", draw(st.lists(st.sampled_from(values), max_size=2)) if values else []))
    f.attrs["output_names"] = [f"out{i}" for i in range(len(f.body.ops[-1].operands))]
    mattrs = draw(st.dictionaries(_names, _attr, max_size=2))
    return Module([f], mattrs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modules(), st.integers(0, 20))
def test_print_parse_print_is_identity(module, inline_limit):
    printed = print_module(module, inline_limit=inline_limit)
    again = print_module(parse_module(printed.text, printed.resources), inline_limit=inline_limit)
    assert again.text == printed.text
    assert again.resources.keys() == printed.resources.keys()
    for k in printed.resources:
        np.testing.assert_array_equal(again.resources[k], printed.resources[k])
        assert again.resources[k].dtype == printed.resources[k].dtype


def test_float_attrs_keep_exact_bits():
    vals = [0.1, 1e-300, 5e-324, 1.7976931348623157e308, -0.0, 1.0, 3.0e10]
    f = Func("main")
    f.body.append(Op("return", []))
    m = Module([f], {"xs": vals, "f32": np.array([0.1, 1 / 3, 1e-38, 3.4e38], np.float32)})
    back = parse_module(to_text(m))
    assert [np.float64(x).tobytes() for x in back.attrs["xs"]] == [np.float64(x).tobytes() for x in vals]
    assert back.attrs["f32"].tobytes() == m.attrs["f32"].tobytes()


def test_resource_missing_from_sidecar_is_an_error():
    text = 'module {\n  func @main() -> (tensor<20xf32>) {\n    %0 = nn.constant() {value = dense_resource<"r0" : tensor<20xf32>>} : tensor<20xf32>\n    return(%0)\n  }\n}\n'
    with pytest.raises(Exception, match=r"m\.cir:3:.*resource 'r0' not found"):
        parse_module(text, {}, filename="m.cir")
    with pytest.raises(Exception, match=r"is tensor<3xf32> but the text says tensor<20xf32>"):
        parse_module(text, {"r0": np.zeros(3, np.float32)}, filename="m.cir")
    m = parse_module(text, {"r0": np.arange(20, dtype=np.float32)})
    verify(m)
