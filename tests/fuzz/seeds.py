"""The real inputs the fuzz tests mutate: ONNX models and the IR dumps of compiling them."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits" / "model.onnx"


def _const(name: str, array) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array)))


@functools.cache
def attribute_rich_model() -> onnx.ModelProto:
    """A small model whose nodes carry every kind of attribute the importer reads (ints, floats,
    strings, tensors) and shapes known only through constant folding."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bn = [numpy_helper.from_array(np.full(4, v, np.float32), n)
          for n, v in (("scale", 1.0), ("bias", 0.1), ("mean", 0.0), ("var", 1.0))]
    fc = numpy_helper.from_array(rng.standard_normal((5, 64)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1],
                         strides=[1, 1], dilations=[1, 1], group=1, kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"],
                         name="bn", epsilon=1e-5),
        helper.make_node("LeakyRelu", ["b"], ["r"], name="lrelu", alpha=0.1),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0),
        _const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        helper.make_node("Pad", ["p", "pads"], ["pp"], name="pad", mode="reflect"),
        _const("scales", np.array([1, 1, 0.5, 0.5], np.float32)),
        helper.make_node("Resize", ["pp", "", "scales"], ["rs"], name="resize", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Shape", ["rs"], ["shp"], name="shape"),
        _const("idx", np.array([0], np.int64)),
        helper.make_node("Gather", ["shp", "idx"], ["n"], name="gather", axis=0),
        _const("rest", np.array([-1], np.int64)),
        helper.make_node("Concat", ["n", "rest"], ["newshape"], name="cat", axis=0),
        helper.make_node("Reshape", ["rs", "newshape"], ["flat"], name="reshape"),
        _const("starts", np.array([0], np.int64)),
        _const("ends", np.array([64], np.int64)),
        _const("axes", np.array([1], np.int64)),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["sl"], name="slice"),
        helper.make_node("Gemm", ["sl", "fc"], ["g"], name="gemm", transB=1, alpha=0.5),
        helper.make_node("Transpose", ["g"], ["t"], name="transpose", perm=[1, 0]),
        helper.make_node("Softmax", ["t"], ["s"], name="softmax", axis=0),
        _const("zshape", np.array([5, 1], np.int64)),
        helper.make_node("ConstantOfShape", ["zshape"], ["z"], name="zeros",
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Add", ["s", "z"], ["sz"], name="add"),
        helper.make_node("Unsqueeze", ["sz", "idx"], ["u"], name="unsqueeze"),
        helper.make_node("Squeeze", ["u", "idx"], ["sq"], name="squeeze"),
        _const("parts", np.array([2, 3], np.int64)),
        helper.make_node("Split", ["sq", "parts"], ["s0", "s1"], name="split", axis=0),
        helper.make_node("Concat", ["s1", "s0"], ["sc"], name="cat2", axis=0),
        helper.make_node("Cast", ["sc"], ["y"], name="cast", to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "attribute_rich",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1])],
        [w, *bn, fc],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@functools.cache
def seed_models() -> tuple[onnx.ModelProto, ...]:
    return onnx.load(str(DIGITS)), attribute_rich_model()


@functools.cache
def seed_dumps() -> tuple[tuple[bytes, dict[str, np.ndarray]], ...]:
    """The IR before and after every pass of compiling the seed models for hermes64, as
    (text, sidecar constants)."""
    from cimc.compiler import compile as compile_model
    from cimc.ir.printer import print_module
    from cimc.passes.base import Instrument

    dumps: list[tuple[bytes, dict[str, np.ndarray]]] = []

    class Collect(Instrument):
        def before_pipeline(self, module) -> None:
            self.after_pass(0, None, module, 0.0)

        def after_pass(self, index, p, module, seconds) -> None:
            printed = print_module(module, inline_limit=4)
            dumps.append((printed.text.encode(), dict(printed.resources)))

    for model in seed_models():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no calibration data: not what this is about
            compile_model(model, "hermes64", instruments=[Collect()])
    return tuple(dumps)
