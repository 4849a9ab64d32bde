"""Issue 2's proof: all nine light ImageNet models import, canonicalise and lower; the interpreter
matches onnxruntime (rtol 1e-4, atol 1e-5) before and after the passes; every dump file written on
the way parses back to itself."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.frontend.onnx import import_onnx
from cimc.ir import read_module, to_text
from cimc.ir.interpreter import run
from cimc.passes import run_pipeline
from cimc.passes.base import DumpDir
from cimc.testing import ort_run

from light_models import LIGHT_MODELS, light_inputs, light_model

RTOL, ATOL = 1e-4, 1e-5


def _assert_matches(got, want, stage):
    assert list(got) == list(want), stage
    for k in want:
        assert got[k].shape == want[k].shape, f"{stage}: {k} shape"
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=f"{stage}: {k}")


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_import_canonicalize_lower(name, tmp_path):
    model, inputs = light_model(name), light_inputs(name)
    want = ort_run(model, inputs)
    module = import_onnx(model)
    _assert_matches(run(module, inputs), want, "after import")
    dump = DumpDir(tmp_path)
    run_pipeline(module, "canonicalize,lower-to-mvm,canonicalize", instruments=[dump])
    assert module.attrs["stage"] == "cim"
    assert not [op for op in module.walk() if op.name in ("nn.conv", "nn.gemm")
                and op.operands[1].op is not None and op.operands[1].op.name == "nn.constant"]
    assert any(op.name == "cim.mvm" for op in module.walk())
    _assert_matches(run(module, inputs), want, "after lowering")
    assert len(dump.written) == 4
    for path in dump.written:
        text = path.read_text()
        assert to_text(read_module(path)) == text, f"{path.name} does not round-trip"
