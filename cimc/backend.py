"""An ONNX backend (``onnx.backend.base.Backend``) over compile + load + run, so the onnx package's
backend test cases run against cimc. Defaults to the ``ideal`` target (exact float crossbars).

    from cimc.backend import CimcBackend
    rep = CimcBackend.prepare(model)          # compiles to a temporary artifact, programs a chip
    outputs = rep.run([x])
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep


class CimcBackendRep(BackendRep):
    def __init__(self, chip: Any, input_names: list[str], output_names: list[str], t: float) -> None:
        self.chip = chip
        self.input_names = input_names
        self.output_names = output_names
        self.t = t

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            # numpy scalars (e.g. np.float32(0.5)) become 0-d arrays, as the runtime requires
            feeds = {n: np.asarray(v) for n, v in zip(self.input_names, inputs)}
        outs = self.chip.run(feeds, t=kwargs.get("t", self.t))
        return tuple(outs[n] for n in self.output_names)


class CimcBackend(Backend):
    target = "ideal"

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> CimcBackendRep:
        import cimc

        super().prepare(model, device, **kwargs)
        target = kwargs.pop("target", cls.target)
        seed = kwargs.pop("seed", 0)
        t = kwargs.pop("t", 0.0)
        tmp = Path(tempfile.mkdtemp(prefix="cimc-backend-"))
        try:
            result = cimc.compile(model, target, tmp / "model.cimc", **kwargs)
            chip = cimc.load(result.artifact, seed=seed)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        inits = {i.name for i in model.graph.initializer}
        inputs = [i.name for i in model.graph.input if i.name not in inits]
        return CimcBackendRep(chip, inputs, [o.name for o in model.graph.output], t)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info: Any = None, opset: int = 17, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run one node: wrapped into a one-node model whose inputs are ``inputs``."""
        from onnx import helper

        from cimc.frontend.onnx.dtypes import onnx_elem_type

        arrays = [np.asarray(x) for x in inputs]
        names = [n for n in node.input if n]
        g_in = [helper.make_tensor_value_info(n, onnx_elem_type(a.dtype), a.shape) for n, a in zip(names, arrays)]
        g_out = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
        graph = helper.make_graph([node], "run_node", g_in, g_out)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        inferred = onnx.shape_inference.infer_shapes(model)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        return cls.prepare(model, device, **kwargs).run(arrays)

prepare = CimcBackend.prepare
run_model = CimcBackend.run_model
supports_device = CimcBackend.supports_device
