"""The importer itself: unsupported ops, invalid files, input shapes, opset normalisation."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cimc.errors import FrontendError
from cimc.frontend.onnx import import_onnx
from cimc.frontend.onnx.registry import find, schema_version


def _model(nodes, inputs, outputs, opset=17, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_two_unsupported_ops_give_one_error_naming_both():
    m = _model(
        [helper.make_node("Relu", ["x"], ["a"], name="ok"),
         helper.make_node("NonMaxSuppression", ["a", "a"], ["b"], name="nms"),
         helper.make_node("Det", ["b"], ["y"], name="det")],
        [_vi("x", [2, 2])], [_vi("y", [])])
    with pytest.raises(FrontendError) as e:
        import_onnx(m)
    msg = str(e.value)
    assert "2 node(s) use ops cimc does not support" in msg
    assert "(NonMaxSuppression, opset 17, node 'nms')" in msg
    assert "(Det, opset 17, node 'det')" in msg
    assert "Relu" not in msg


def test_custom_domain_op_is_reported_with_its_domain():
    m = _model([helper.make_node("Foo", ["x"], ["y"], name="f", domain="com.acme")],
               [_vi("x", [1])], [_vi("y", [1])])
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    with pytest.raises(FrontendError, match=r"\(com\.acme\.Foo, opset 1, node 'f'\)"):
        import_onnx(m)


def test_invalid_file_is_named(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(FrontendError, match=rf"{bad}: not a valid ONNX model"):
        import_onnx(bad)
    with pytest.raises(FrontendError, match=r"no such file"):
        import_onnx(tmp_path / "missing.onnx")


def test_dynamic_batch_defaults_to_one_with_a_note():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["batch", 3])], [_vi("y", ["batch", 3])])
    with pytest.warns(UserWarning, match=r"input 'x' has a dynamic batch dimension 'batch': using 1, "
                      r"as --input-shape x=1x3 would"):
        mod = import_onnx(m)
    assert mod.main.args[0].type.shape == (1, 3)
    mod = import_onnx(m, {"x": (5, 3)})
    assert mod.main.args[0].type.shape == (5, 3)
    with pytest.raises(FrontendError, match=r"contradicts the model's static shape"):
        import_onnx(m, {"x": (5, 4)})
    with pytest.raises(FrontendError, match=r"names nope, which are not inputs"):
        import_onnx(m, {"nope": (1, 3)})


def test_other_dynamic_dimensions_need_a_shape_and_the_hint_works_when_pasted():
    from cimc.cli import _parse_input_shapes

    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["N", 3, "H", "W"])],
               [_vi("y", ["N", 3, "H", "W"])])
    with pytest.raises(FrontendError, match=r"input 'x' has a dynamic shape \[N, 3, H, W\]") as e:
        import_onnx(m)
    hint = re.search(r"--input-shape (\S+)", str(e.value)).group(1)
    assert hint == "x=1x3x1x1" and "in place of the 1 at H, W" in str(e.value)
    assert import_onnx(m, _parse_input_shapes((hint,))).main.args[0].type.shape == (1, 3, 1, 1)


@pytest.mark.parametrize("shape", [(1.5, 3), (True, 3), (-1, 3), "1x3", (None, 3)])
def test_given_shapes_must_be_integers(shape):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["N", 3])], [_vi("y", ["N", 3])])
    with pytest.raises(FrontendError, match=r"the shape given for input 'x' is .*an integer >= 0"):
        import_onnx(m, {"x": shape})


def test_opset_is_normalised_with_schema_since_version():
    # Relu's schema changed at opsets 6, 13, 14: opset 12 resolves to the since-6 schema.
    assert schema_version("Relu", 12) == 6
    assert find("Relu", 12) is not None and find("Relu", 12).since <= 6
    assert find("NoSuchOp", 17) is None


def test_initializers_become_constants_and_outputs_keep_names():
    w = onnx.numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["out"])], [_vi("x", [1, 2])], [_vi("out", [1, 2])],
               inits=[w])
    mod = import_onnx(m)
    assert mod.main.input_names == ["x"] and mod.main.output_names == ["out"]
    assert any(op.name == "nn.constant" and op.result.type.shape == (2, 2) for op in mod.walk())


def _with_bytes(model, old: bytes, new: bytes, tmp_path):
    """``model`` saved with ``old`` replaced by ``new`` in its bytes (the proto API refuses to set
    a string that is not UTF-8)."""
    data = model.SerializeToString()
    assert data.count(old) == 1
    path = tmp_path / "m.onnx"
    path.write_bytes(data.replace(old, new))
    return path


def test_an_op_type_that_is_not_utf8_is_named(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x", [1, 2])], [_vi("y", [1, 2])])
    path = _with_bytes(m, b"Relu", b"R\xffl\xfe", tmp_path)
    with pytest.raises(FrontendError, match=r"m\.onnx: not a valid ONNX model: "
                       r"model\.graph\.node\[0\]\.op_type is not UTF-8 text \(b'R\\xffl\\xfe'\)"):
        import_onnx(path)


def test_a_string_attribute_that_is_not_utf8_is_named(tmp_path):
    pads = onnx.numpy_helper.from_array(np.array([0, 0, 1, 1], np.int64), "pads")
    m = _model([helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect")],
               [_vi("x", [2, 2])], [_vi("y", [2, 4])], inits=[pads])
    path = _with_bytes(m, b"reflect", b"refl\xe9ct", tmp_path)
    with pytest.raises(FrontendError, match=r"node 'pad' \(Pad\): attribute 'mode' cannot be read "
                       r"\(UnicodeDecodeError"):
        import_onnx(path)


def test_a_constant_too_large_to_compute_is_refused():
    shape = onnx.numpy_helper.from_array(np.array([2**20, 2**20], np.int64), "shape")
    m = _model([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="big")], [],
               [_vi("y", [2**20, 2**20])], inits=[shape])
    with pytest.raises(FrontendError, match=r"node 'big' \(ConstantOfShape\): the constant has "
                       r"shape \[1048576, 1048576\] \(1099511627776 elements\); cimc computes"):
        import_onnx(m)


def test_a_tensor_attribute_of_an_unknown_type_is_named():
    node = helper.make_node("Constant", [], ["y"], name="c",
                            value=onnx.numpy_helper.from_array(np.ones(2, np.float32)))
    node.attribute[0].t.data_type = 74  # no such TensorProto type (found by the fuzzer)
    m = _model([node], [], [_vi("y", [2])])
    with pytest.raises(FrontendError, match=r"node 'c' \(Constant\): attribute 'value' cannot be "
                       r"read \(KeyError: 74\)"):
        import_onnx(m)
