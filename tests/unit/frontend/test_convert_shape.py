"""One-node tests against onnxruntime for the shape-manipulation converters (and their errors)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.errors import CimcError, FrontendError
from cimc.frontend.onnx import import_onnx
from cimc.ir.parser import parse_module
from cimc.ir.printer import to_text
from cimc.ir.verify import verify
from cimc.testing import compare_with_ort, one_node_model

RNG = np.random.default_rng(0)
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def ops_of(model: onnx.ModelProto, shapes: dict | None = None) -> list:
    module = import_onnx(model, shapes)
    return [op for op in module.main.body.ops if op.name != "return"]


def only_op(model: onnx.ModelProto, name: str, shapes: dict | None = None):
    found = [op for op in ops_of(model, shapes) if op.name == name]
    assert len(found) == 1, [op.name for op in ops_of(model, shapes)]
    return found[0]


def with_output(model: onnx.ModelProto, elem_type: int, shape) -> onnx.ModelProto:
    """Declare the (single) graph output's type, for models whose output shape depends on a
    value only known at run time (so ONNX shape inference leaves it out)."""
    out = model.graph.output[0]
    out.CopyFrom(helper.make_tensor_value_info(out.name, elem_type, shape))
    return model


def roundtrips(model: onnx.ModelProto, shapes: dict | None = None) -> None:
    text = to_text(import_onnx(model, shapes))
    assert to_text(parse_module(text)) == text


# ----------------------------------------------------------------------------- Shape


@pytest.mark.parametrize("opset", [13, 15])
def test_shape_whole(opset):
    x = rand(2, 3, 4)
    m = one_node_model("Shape", {"x": x}, opset=opset)
    compare_with_ort(m, {"x": x})
    assert only_op(m, "nn.shape").attrs == {"start": 0, "end": 3}


@pytest.mark.parametrize(
    "start,end", [(1, None), (0, -1), (-2, None), (-10, 2), (1, 100), (2, 1), (None, -3)]
)
def test_shape_start_end(start, end):
    x = rand(2, 3, 4)
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    m = one_node_model("Shape", {"x": x}, opset=15, **attrs)
    compare_with_ort(m, {"x": x})


# ----------------------------------------------------------------------------- Reshape


@pytest.mark.parametrize("shape", [(6, 4), (0, -1), (-1,), (2, 0, 2, 2), (1, -1, 1), (4, 3, 2)])
def test_reshape(shape):
    x = rand(2, 3, 4)
    m = one_node_model("Reshape", {"x": x}, initializers={"s": i64(*shape)}, opset=13)
    compare_with_ort(m, {"x": x})
    assert all(d > 0 for d in only_op(m, "nn.reshape").attrs["shape"])


def test_reshape_opset5():
    x = rand(2, 3, 4)
    m = one_node_model("Reshape", {"x": x}, initializers={"s": i64(3, -1)}, opset=5)
    compare_with_ort(m, {"x": x})


def test_reshape_allowzero():
    x = rand(2, 3, 4)
    m = one_node_model("Reshape", {"x": x}, initializers={"s": i64(4, -1)}, opset=14, allowzero=1)
    compare_with_ort(m, {"x": x})


def test_reshape_allowzero_keeps_literal_zero():
    x = np.zeros((0, 3), np.float32)
    m = one_node_model("Reshape", {"x": x}, initializers={"s": i64(3, 0)}, opset=14, allowzero=1)
    assert only_op(m, "nn.reshape", {"x": (0, 3)}).attrs["shape"] == [3, 0]


def test_reshape_runtime_shape_is_a_clear_error():
    x = rand(2, 3, 4)
    m = with_output(
        one_node_model("Reshape", {"x": x, "s": i64(6, 4)}, opset=13), TensorProto.FLOAT, [6, 4]
    )
    with pytest.raises(
        FrontendError, match=r"reshape0.*input #1 \(shape\) is computed at run time"
    ):
        import_onnx(m)


def test_reshape_bad_shape_is_a_clear_error():
    x = rand(2, 3, 4)
    m = one_node_model("Reshape", {"x": x}, initializers={"s": i64(5, -1)}, opset=13)
    m = with_output(m, TensorProto.FLOAT, [5, 5])
    with pytest.raises(FrontendError, match=r"cannot reshape an input of shape \[2, 3, 4\]"):
        import_onnx(m)


def test_reshape_two_minus_ones_is_an_error():
    x = rand(2, 3, 4)
    m = one_node_model("Reshape", {"x": x}, initializers={"s": i64(-1, -1)}, opset=13)
    m = with_output(m, TensorProto.FLOAT, [6, 4])
    with pytest.raises(FrontendError, match="more than one -1"):
        import_onnx(m)


# ----------------------------------------------------------------------------- Flatten


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis):
    x = rand(2, 3, 4)
    m = one_node_model("Flatten", {"x": x}, opset=13, axis=axis)
    compare_with_ort(m, {"x": x})
    assert only_op(m, "nn.reshape")


def test_flatten_default_axis_opset9():
    x = rand(2, 3, 4)
    m = one_node_model("Flatten", {"x": x}, opset=9)
    compare_with_ort(m, {"x": x})


# ----------------------------------------------------------------------------- Squeeze / Unsqueeze


@pytest.mark.parametrize("axes", [[1], [-1], [1, 3], None])
def test_squeeze_attribute(axes):
    x = rand(2, 1, 3, 1)
    kw = {} if axes is None else {"axes": axes}
    m = one_node_model("Squeeze", {"x": x}, opset=11, **kw)
    compare_with_ort(m, {"x": x})
    assert only_op(m, "nn.reshape")


@pytest.mark.parametrize("axes", [[1], [-1, 1], None])
def test_squeeze_input(axes):
    x = rand(2, 1, 3, 1)
    inits = {} if axes is None else {"axes": i64(*axes)}
    m = one_node_model("Squeeze", {"x": x}, initializers=inits, opset=13)
    compare_with_ort(m, {"x": x})


def test_squeeze_non_unit_axis_is_an_error():
    x = rand(2, 1, 3)
    m = one_node_model("Squeeze", {"x": x}, initializers={"axes": i64(0)}, opset=13)
    m = with_output(m, TensorProto.FLOAT, [1, 3])
    with pytest.raises(FrontendError, match=r"cannot squeeze axes \[0\]"):
        import_onnx(m)


@pytest.mark.parametrize("axes", [[0], [0, 3], [-1], [1, -1]])
def test_unsqueeze_attribute(axes):
    x = rand(2, 3)
    m = one_node_model("Unsqueeze", {"x": x}, opset=11, axes=axes)
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("axes", [[0], [2, 0], [-1, -4]])
def test_unsqueeze_input(axes):
    x = rand(2, 3)
    m = one_node_model("Unsqueeze", {"x": x}, initializers={"axes": i64(*axes)}, opset=13)
    compare_with_ort(m, {"x": x})
    assert only_op(m, "nn.reshape")


def test_unsqueeze_runtime_axes_is_a_clear_error():
    x = rand(2, 3)
    m = one_node_model("Unsqueeze", {"x": x, "axes": i64(0)}, opset=13)
    m = with_output(m, TensorProto.FLOAT, [1, 2, 3])
    with pytest.raises(FrontendError, match=r"input #1 \(axes\) is computed at run time"):
        import_onnx(m)


# ----------------------------------------------------------------------------- Transpose, Concat


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1]])
def test_transpose(perm):
    x = rand(2, 3, 4)
    kw = {} if perm is None else {"perm": perm}
    m = one_node_model("Transpose", {"x": x}, opset=13, **kw)
    compare_with_ort(m, {"x": x})
    want = perm if perm is not None else [2, 1, 0]
    assert only_op(m, "nn.transpose").attrs["perm"] == want


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shapes = {0: [(1, 3, 4), (2, 3, 4)], 1: [(2, 1, 4), (2, 3, 4)], -1: [(2, 3, 2), (2, 3, 4)]}[
        axis
    ]
    a, b = (rand(*s) for s in shapes)
    c = rand(*shapes[1])
    m = one_node_model("Concat", {"a": a, "b": b}, initializers={"c": c}, opset=13, axis=axis)
    compare_with_ort(m, {"a": a, "b": b})
    assert only_op(m, "nn.concat").attrs["axis"] == axis % 3


def test_concat_opset4_ints():
    a, b = i64(1, 2), i64(3)
    m = one_node_model("Concat", {"a": a, "b": b}, opset=4, axis=0)
    compare_with_ort(m, {"a": a, "b": b})


def test_concat_mismatched_shapes_is_an_error():
    a, b = rand(2, 3), rand(3, 4)
    m = one_node_model("Concat", {"a": a}, initializers={"b": b}, opset=13, axis=0)
    m = with_output(m, TensorProto.FLOAT, [5, 3])
    with pytest.raises(FrontendError, match="nn.concat"):
        import_onnx(m)


# ----------------------------------------------------------------------------- Split


def _split_model(x, n, opset, inits=None, **attrs):
    outs = tuple(f"y{i}" for i in range(n))
    return one_node_model("Split", {"x": x}, outputs=outs, initializers=inits, opset=opset, **attrs)


@pytest.mark.parametrize("split", [[2, 4], [1, 2, 3], None])
def test_split_attribute(split):
    x = rand(3, 6)
    n = 3 if split is None else len(split)
    kw = {} if split is None else {"split": split}
    m = _split_model(x, n, 11, axis=1, **kw)
    compare_with_ort(m, {"x": x})


def test_split_opset2_default_axis():
    x = rand(4, 3)
    compare_with_ort(_split_model(x, 2, 10), {"x": x})


@pytest.mark.parametrize("split", [[1, 5], [3, 0, 3], None])
def test_split_input(split):
    x = rand(2, 6)
    n = 3 if split is None else len(split)
    inits = {} if split is None else {"split": i64(*split)}
    m = _split_model(x, n, 13, inits, axis=-1)
    compare_with_ort(m, {"x": x})
    assert only_op(m, "nn.split").attrs["axis"] == 1


@pytest.mark.parametrize("dim,n", [(7, 3), (6, 3), (5, 2), (9, 4)])
def test_split_num_outputs(dim, n):
    x = rand(2, dim)
    m = _split_model(x, n, 18, axis=1, num_outputs=n)
    compare_with_ort(m, {"x": x})


def test_split_opset18_input():
    x = rand(2, 7)
    m = _split_model(x, 2, 18, {"split": i64(3, 4)}, axis=1)
    compare_with_ort(m, {"x": x})


def test_split_unequal_without_sizes_is_an_error():
    x = rand(2, 7)
    m = _split_model(x, 2, 13, axis=1)
    for out in m.graph.output:
        out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [2, 3]))
    with pytest.raises(FrontendError, match="does not split into 2 equal parts"):
        import_onnx(m)


# ----------------------------------------------------------------------------- Slice

SLICE_CASES = [
    # starts, ends, axes, steps
    ([1], [3], [0], None),
    ([0, 1], [INT64_MAX, -1], [1, 2], None),
    ([-3], [INT64_MAX], [2], [2]),
    ([-1], [INT64_MIN], [1], [-1]),
    ([10], [-100], [2], [-2]),
    ([-100], [100], [2], [3]),
    ([2, 0], [0, 4], [-1, 0], [-1, 1]),
    ([0, 0, 5], [1, 3, 0], None, [1, 1, -2]),
    ([3], [1], [2], [1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICE_CASES)
def test_slice_inputs(starts, ends, axes, steps):
    x = rand(3, 4, 6)
    inits = {"starts": i64(*starts), "ends": i64(*ends)}
    names = ["x", "starts", "ends"]
    if axes is not None or steps is not None:
        inits["axes"] = i64(*(axes if axes is not None else range(len(starts))))
        names.append("axes")
    if steps is not None:
        inits["steps"] = i64(*steps)
        names.append("steps")
    m = one_node_model("Slice", {"x": x}, initializers=inits, input_names=names, opset=13)
    compare_with_ort(m, {"x": x})
    roundtrips(m)


def test_slice_opset1_attributes():
    x = rand(3, 4, 6)
    m = one_node_model("Slice", {"x": x}, opset=9, starts=[1, -4], ends=[100, -1], axes=[0, 2])
    compare_with_ort(m, {"x": x})
    m = one_node_model("Slice", {"x": x}, opset=9, starts=[0, 1], ends=[2, 3])
    compare_with_ort(m, {"x": x})


def test_slice_skipped_axes_input():
    x = rand(3, 4)
    inits = {"starts": i64(1, 0), "ends": i64(3, 3), "steps": i64(1, 2)}
    names = ["x", "starts", "ends", "", "steps"]
    m = one_node_model("Slice", {"x": x}, initializers=inits, input_names=names, opset=13)
    compare_with_ort(m, {"x": x})


def test_slice_runtime_starts_is_a_clear_error():
    x = rand(3, 4)
    m = one_node_model("Slice", {"x": x, "starts": i64(1)}, initializers={"ends": i64(2)}, opset=13)
    m = with_output(m, TensorProto.FLOAT, [1, 4])
    with pytest.raises(FrontendError, match=r"slice0.*input #1 \(starts\) is computed at run time"):
        import_onnx(m)


# ----------------------------------------------------------------------------- Pad


@pytest.mark.parametrize(
    "mode,pads",
    [
        ("constant", [0, 1, 2, 1, 0, 3]),
        ("reflect", [1, 2, 0, 0, 1, 3]),
        ("edge", [2, 0, 1, 1, 3, 0]),
        ("constant", [0, -1, 2, 0, 1, -2]),
        ("constant", [0, 0, 0, 0, 0, 0]),
    ],
)
def test_pad_inputs(mode, pads):
    x = rand(2, 4, 5)
    m = one_node_model("Pad", {"x": x}, initializers={"pads": i64(*pads)}, opset=13, mode=mode)
    compare_with_ort(m, {"x": x})


def test_pad_constant_value():
    x = rand(2, 3)
    inits = {"pads": i64(1, 0, 2, 3), "value": np.array(-1.5, np.float32)}
    m = one_node_model("Pad", {"x": x}, initializers=inits, opset=13)
    compare_with_ort(m, {"x": x})
    assert only_op(m, "nn.pad").attrs == {"pads": [1, 0, 2, 3], "mode": "constant", "value": -1.5}


def test_pad_int_input():
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    inits = {"pads": i64(1, 1, 0, 1), "value": np.array(7, np.int64)}
    m = one_node_model("Pad", {"x": x}, initializers=inits, opset=13)
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_opset2_attributes(mode):
    x = rand(1, 2, 4, 4)
    m = one_node_model(
        "Pad", {"x": x}, opset=10, mode=mode, pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5
    )
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("axes", [[1], [-1, 0]])
def test_pad_opset18_axes(axes):
    x = rand(3, 4)
    pads = i64(*([1] * len(axes) + [2] * len(axes)))
    m = one_node_model(
        "Pad",
        {"x": x},
        initializers={"pads": pads, "axes": i64(*axes)},
        input_names=["x", "pads", "", "axes"],
        opset=18,
        mode="edge",
    )
    compare_with_ort(m, {"x": x})


def test_pad_wrap_is_a_clear_error():
    x = rand(3, 4)
    m = one_node_model(
        "Pad", {"x": x}, initializers={"pads": i64(1, 1, 1, 1)}, opset=19, mode="wrap"
    )
    with pytest.raises(FrontendError, match="'wrap' is not supported"):
        import_onnx(m)


def test_pad_reflect_too_wide_is_an_error():
    x = rand(3, 2)
    m = one_node_model(
        "Pad", {"x": x}, initializers={"pads": i64(0, 2, 0, 0)}, opset=13, mode="reflect"
    )
    with pytest.raises(FrontendError, match="reflect padding"):
        import_onnx(m)


# ----------------------------------------------------------------------------- Gather


def test_gather_runtime_negative_indices():
    x = rand(5, 3)
    idx = i64(0, -1, 2, -5)
    m = one_node_model("Gather", {"x": x, "idx": idx}, opset=13, axis=0)
    compare_with_ort(m, {"x": x, "idx": idx})


@pytest.mark.parametrize("axis", [1, -1])
def test_gather_constant_2d_indices(axis):
    x = rand(2, 4, 3)
    idx = np.array([[0, -1], [2, 1], [-2, 0]], np.int32)
    m = one_node_model("Gather", {"x": x}, initializers={"idx": idx}, opset=13, axis=axis)
    compare_with_ort(m, {"x": x})


def test_gather_scalar_index():
    x = rand(4, 3)
    m = one_node_model(
        "Gather", {"x": x}, initializers={"idx": np.array(-2, np.int64)}, opset=11, axis=0
    )
    compare_with_ort(m, {"x": x})


def test_gather_out_of_range_is_a_clear_error():
    x = rand(4, 3)
    m = one_node_model("Gather", {"x": x}, initializers={"idx": i64(4)}, opset=13, axis=0)
    with pytest.raises(FrontendError, match=r"indices \[4\] out of range for axis 0 of size 4"):
        import_onnx(m)


# ----------------------------------------------------------------------------- Resize

COORD_MODES = [
    "half_pixel",
    "asymmetric",
    "align_corners",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
# (sizes or scales for the two spatial axes of a 1x2x5x7 input)
RESIZE_TARGETS = [
    ("scales", [2.0, 3.0]),
    ("scales", [0.6, 0.5]),
    ("scales", [1.7, 0.3]),
    ("sizes", [9, 4]),
    ("sizes", [10, 14]),
    ("sizes", [1, 1]),
    ("sizes", [3, 7]),
]


def _resize_model(x, kind, values, opset=19, **attrs):
    n_lead = x.ndim - len(values)
    inits = {"roi": np.array([], np.float32)}
    if kind == "scales":
        inits["scales"] = np.array([1.0] * n_lead + list(values), np.float32)
        names = ["x", "roi", "scales"]
    else:
        inits["scales"] = np.array([], np.float32)
        inits["sizes"] = np.array(list(x.shape[:n_lead]) + list(values), np.int64)
        names = ["x", "roi", "scales", "sizes"]
    return one_node_model(
        "Resize", {"x": x}, initializers=inits, input_names=names, opset=opset, **attrs
    )


@pytest.mark.parametrize("ctm", COORD_MODES)
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
def test_resize_nearest(ctm, nearest_mode):
    x = rand(1, 2, 5, 7)
    for kind, values in RESIZE_TARGETS:
        m = _resize_model(
            x,
            kind,
            values,
            mode="nearest",
            coordinate_transformation_mode=ctm,
            nearest_mode=nearest_mode,
        )
        compare_with_ort(m, {"x": x})


@pytest.mark.parametrize(
    "ctm",
    ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric"],
)
def test_resize_linear(ctm):
    x = rand(1, 2, 5, 7)
    for kind, values in RESIZE_TARGETS:
        m = _resize_model(x, kind, values, mode="linear", coordinate_transformation_mode=ctm)
        compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
def test_resize_half_pixel_symmetric_nearest(nearest_mode):
    x = rand(1, 2, 5, 7)
    for kind, values in RESIZE_TARGETS:
        m = _resize_model(
            x,
            kind,
            values,
            mode="nearest",
            nearest_mode=nearest_mode,
            coordinate_transformation_mode="half_pixel_symmetric",
        )
        compare_with_ort(m, {"x": x})


@pytest.mark.parametrize(
    "shape,values",
    [
        ((2, 6), [3.0, 0.5]),
        ((2, 3, 4), [1.0, 2.0, 1.5]),
        ((1, 1, 3, 4, 5), [1.0, 1.0, 2.0, 0.5, 1.4]),
    ],
)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_ranks(shape, values, mode):
    x = rand(*shape)
    m = _resize_model(x, "scales", values, opset=13, mode=mode)
    compare_with_ort(m, {"x": x})


def test_resize_attributes_hold_scales_and_sizes():
    x = rand(1, 2, 5, 7)
    op = only_op(_resize_model(x, "sizes", [10, 3], mode="nearest"), "nn.resize")
    assert op.attrs["sizes"] == [1, 2, 10, 3]
    assert op.attrs["scales"] == [1.0, 1.0, 2.0, float(np.float32(3) / np.float32(7))]
    op = only_op(_resize_model(x, "scales", [0.6, 2.0], mode="linear"), "nn.resize")
    assert op.attrs["sizes"] == [1, 2, 3, 14]
    assert op.attrs["scales"] == [1.0, 1.0, float(np.float32(0.6)), 2.0]
    assert set(op.attrs) == {
        "mode",
        "coordinate_transformation_mode",
        "nearest_mode",
        "scales",
        "sizes",
        "cubic_coeff_a",
    }
    roundtrips(_resize_model(x, "sizes", [10, 3], mode="nearest"))


@pytest.mark.parametrize("values", [[2.0, 3.0], [0.5, 0.6], [2.0, 0.5], [1.5, 1.0]])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_opset10(values, mode):
    x = rand(1, 2, 5, 7)
    scales = np.array([1.0, 1.0, *values], np.float32)
    m = one_node_model("Resize", {"x": x}, initializers={"scales": scales}, opset=10, mode=mode)
    compare_with_ort(m, {"x": x})


def test_resize_opset11_sizes():
    x = rand(1, 2, 5, 7)
    m = _resize_model(
        x,
        "sizes",
        [8, 5],
        opset=11,
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    compare_with_ort(m, {"x": x})


def test_resize_opset13_absent_roi_and_scales():
    x = rand(1, 2, 5, 7)
    m = one_node_model(
        "Resize",
        {"x": x},
        initializers={"sizes": i64(1, 2, 8, 3)},
        input_names=["x", "", "", "sizes"],
        opset=13,
        mode="linear",
    )
    compare_with_ort(m, {"x": x})


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("sizes", [[10, 6], [4, 20], [6, 6]])
def test_resize_opset18_axes_and_policy(policy, sizes):
    x = rand(1, 2, 5, 10)
    inits = {"sizes": i64(*sizes)}
    m = one_node_model(
        "Resize",
        {"x": x},
        initializers=inits,
        input_names=["x", "", "", "sizes"],
        opset=18,
        mode="nearest",
        axes=[2, 3],
        keep_aspect_ratio_policy=policy,
    )
    compare_with_ort(m, {"x": x})


def test_resize_opset18_axes_scales():
    x = rand(1, 2, 5, 10)
    inits = {"scales": np.array([0.5, 1.5], np.float32)}
    m = one_node_model(
        "Resize",
        {"x": x},
        initializers=inits,
        input_names=["x", "", "scales"],
        opset=18,
        mode="linear",
        axes=[-1, 2],
    )
    compare_with_ort(m, {"x": x})


def test_resize_integer_input_nearest():
    x = RNG.integers(0, 255, (1, 1, 4, 5)).astype(np.uint8)
    m = _resize_model(x, "scales", [2.0, 1.5], mode="nearest")
    compare_with_ort(m, {"x": x})


def test_resize_cubic_is_a_clear_error():
    x = rand(1, 1, 4, 4)
    with pytest.raises(FrontendError, match="'cubic' is not supported"):
        import_onnx(_resize_model(x, "scales", [2.0, 2.0], mode="cubic"))


def test_resize_tf_crop_and_resize_is_a_clear_error():
    x = rand(1, 1, 4, 4)
    m = _resize_model(
        x, "scales", [2.0, 2.0], mode="linear", coordinate_transformation_mode="tf_crop_and_resize"
    )
    with pytest.raises(FrontendError, match="tf_crop_and_resize.*not supported"):
        import_onnx(m)


def test_resize_runtime_scales_is_a_clear_error():
    x = rand(1, 1, 4, 4)
    scales = np.array([1, 1, 2, 2], np.float32)
    m = one_node_model(
        "Resize",
        {"x": x, "scales": scales},
        initializers={"roi": np.array([], np.float32)},
        input_names=["x", "roi", "scales"],
        opset=13,
        mode="nearest",
    )
    m = with_output(m, TensorProto.FLOAT, [1, 1, 8, 8])
    with pytest.raises(FrontendError, match=r"input #2 \(scales\) is computed at run time"):
        import_onnx(m)


def test_resize_antialias_downsampling_is_a_clear_error():
    x = rand(1, 1, 4, 4)
    m = _resize_model(x, "scales", [0.5, 0.5], mode="linear", antialias=1)
    with pytest.raises(FrontendError, match="antialias"):
        import_onnx(m)


# ----------------------------------------------------------------------------- shape arithmetic


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("index_from", ["constant_node", "initializer"])
def test_pytorch_flatten_chain_folds(opset, index_from):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as PyTorch exports x.view(x.size(0), -1)
    (PyTorch writes the scalar index as a Constant node; other exporters as an initializer)."""
    x = rand(2, 3, 4, 5)
    unsq_inputs = ["n"] if opset < 13 else ["n", "zero_axis"]
    unsq_attrs = {"axes": [0]} if opset < 13 else {}
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "idx0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", unsq_inputs, ["n1"], **unsq_attrs),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    index = np.array(0, np.int64)
    inits = [numpy_helper.from_array(i64(-1), "minus1")]
    if opset >= 13:
        inits.append(numpy_helper.from_array(i64(0), "zero_axis"))
    if index_from == "initializer":
        inits.append(numpy_helper.from_array(index, "idx0"))
    else:
        value = numpy_helper.from_array(index, "idx0_value")
        nodes.insert(0, helper.make_node("Constant", [], ["idx0"], value=value))
    graph = helper.make_graph(
        nodes,
        "flatten",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    got = compare_with_ort(model, {"x": x})
    assert got["y"].shape == (2, 60)
    reshapes = [
        op for op in ops_of(model) if op.name == "nn.reshape" and op.result.type.dtype == "f32"
    ]
    assert [op.attrs["shape"] for op in reshapes] == [[2, 60]]


# ----------------------------------------------------------------------------- nn ops' own checks

IR_ERRORS = [
    ("nn.reshape(%0) {shape = [-1, 4]} : tensor<6x4xf32>", "must be fully resolved"),
    ("nn.reshape(%0) {shape = [5, 4]} : tensor<5x4xf32>", "cannot reshape"),
    ("nn.transpose(%0) {perm = [0, 0, 1]} : tensor<2x2x3xf32>", "not a permutation"),
    (
        "nn.slice(%0) {axes = [0], ends = [1], starts = [0], steps = [0]} : tensor<1x3x4xf32>",
        "step of 0",
    ),
    ('nn.pad(%0) {mode = "wrap", pads = [0, 0, 0, 0, 0, 0]} : tensor<2x3x4xf32>', "'wrap'"),
    ("nn.pad(%0) {pads = [1, 1]} : tensor<2x3x4xf32>", "2\\*rank = 6 entries"),
    (
        (
            'nn.resize(%0) {mode = "cubic", scales = [1.0, 1.0, 1.0], sizes = [2, 3, 4]} '
            ": tensor<2x3x4xf32>"
        ),
        "'cubic' is not supported",
    ),
    (
        'nn.resize(%0) {mode = "linear", scales = [1.0, 1.0], sizes = [2, 3]} : tensor<2x3x4xf32>',
        "one entry per axis",
    ),
    ("nn.split(%0) {axis = 1, sizes = [1, 1]} : tensor<2x1x4xf32>, tensor<2x1x4xf32>", "add up"),
    ("nn.reduce_sum(%0) {axes = [1, -2]} : tensor<2x1x4xf32>", "name an axis twice"),
]


@pytest.mark.parametrize("op_text,message", IR_ERRORS)
def test_nn_op_verify_errors(op_text, message):
    results = "%1, %2" if "nn.split" in op_text else "%1"
    text = (
        'module attributes {stage = "nn"} {\n'
        "  func @main(%0: tensor<2x3x4xf32>) -> () {\n"
        f"    {results} = {op_text}\n"
        "    return()\n  }\n}\n"
    )
    with pytest.raises(CimcError, match=message):
        verify(parse_module(text, filename="<test>"))


# ----------------------------------------------------------------------------- Expand, Range


@pytest.mark.parametrize("x_shape,spec", [
    ((3, 1), [2, 3, 4]),     # new leading axis, a 1 grows
    ((2, 3, 4), [3, 4]),     # a shorter shape: the result keeps the input's
    ((1, 4), [5, 1]),        # a 1 in the shape keeps the input's dimension
    ((), [2, 2]),
], ids=str)
@pytest.mark.parametrize("opset", [8, 13])
def test_expand(x_shape, spec, opset):
    x = np.asarray(rand(*x_shape))
    m = one_node_model("Expand", {"x": x}, initializers={"shape": i64(*spec)}, opset=opset)
    got = compare_with_ort(m, {"x": x})
    assert only_op(m, "nn.expand").attrs["shape"] == list(got["y"].shape)
    roundtrips(m)


def test_expand_shape_from_the_input_shape_folds():
    x = rand(1, 3)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Mul", ["s", "k"], ["s2"]),
             helper.make_node("Expand", ["x", "s2"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(i64(2, 1), "k")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compare_with_ort(m, {"x": x})


def test_expand_errors():
    x = rand(2, 3)
    m = with_output(one_node_model("Expand", {"x": x}, initializers={"shape": i64(4, 3)}),
                    TensorProto.FLOAT, [4, 3])
    with pytest.raises(FrontendError, match=r"cannot be expanded to \[4, 3\]"):
        import_onnx(m)
    m = with_output(one_node_model("Expand", {"x": x, "shape": i64(2, 3)}),
                    TensorProto.FLOAT, [2, 3])
    with pytest.raises(FrontendError, match=r"input #1 \(shape\) is computed at run time"):
        import_onnx(m)


@pytest.mark.parametrize("start,limit,delta,dtype", [
    (0, 5, 1, np.int64), (10, 2, -3, np.int32), (5, 5, 1, np.int64), (3, 0, 1, np.int64),
    (0.5, 4.0, 0.7, np.float32), (-1.0, 1.0, 0.1, np.float32), (1.0, -2.0, -0.3, np.float64),
], ids=str)
def test_range(start, limit, delta, dtype):
    inits = {n: np.array(v, dtype) for n, v in (("s", start), ("l", limit), ("d", delta))}
    nodes = [helper.make_node("Range", ["s", "l", "d"], ["r"]),
             helper.make_node("Add", ["r", "x"], ["y"])]  # a graph input, so the model runs
    x = np.zeros((1,), dtype)
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", elem, [1])],
        [helper.make_tensor_value_info("y", elem, ["n"])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    got = compare_with_ort(m, {"x": x}, rtol=0, atol=0)
    assert got["y"].dtype == dtype


def test_range_of_the_input_length_folds():
    """torch's ``arange(x.shape[1])``: Shape, Gather, Range."""
    x = rand(2, 5)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["n"], axis=0),
             helper.make_node("Range", ["zero", "n", "one"], ["r"]),
             helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "rf"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("zero", 0), ("one", 1))])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compare_with_ort(m, {"x": x})


def test_range_errors():
    def model(inputs, inits):
        node = helper.make_node("Range", ["s", "l", "d"], ["y"])
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info(n, TensorProto.INT64, []) for n in inputs],
            [helper.make_tensor_value_info("y", TensorProto.INT64, ["n"])],
            [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in inits.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    with pytest.raises(FrontendError, match=r"input #1 \(limit\) is computed at run time"):
        import_onnx(model(["l"], {"s": 0, "d": 1}))
    with pytest.raises(FrontendError, match="delta is 0"):
        import_onnx(model([], {"s": 0, "l": 4, "d": 0}))
    with pytest.raises(FrontendError, match="more than cimc folds"):
        import_onnx(model([], {"s": 0, "l": 2**40, "d": 1}))


@pytest.mark.parametrize("x_shape,reps", [((2, 3), [1, 2]), ((2, 1, 3), [3, 2, 1]), ((4,), [1])],
                         ids=str)
@pytest.mark.parametrize("opset", [6, 13])
def test_tile(x_shape, reps, opset):
    x = rand(*x_shape)
    m = one_node_model("Tile", {"x": x}, initializers={"r": i64(*reps)}, opset=opset)
    compare_with_ort(m, {"x": x})
    roundtrips(m)


def test_tile_repeats_must_fit_the_input():
    x = rand(2, 3)
    m = with_output(one_node_model("Tile", {"x": x}, initializers={"r": i64(2)}),
                    TensorProto.FLOAT, [4, 3])
    with pytest.raises(FrontendError, match="one positive count per axis"):
        import_onnx(m)
