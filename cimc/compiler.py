"""The compile driver: ONNX model -> IR -> pass pipeline -> artifact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from cimc.errors import CimcError
from cimc.frontend.onnx import import_onnx
from cimc.ir.core import Module
from cimc.passes.base import (
    Instrument,
    Pass,
    PassContext,
    PassManager,
    Progress,
    parse_pipeline,
    pipeline_spec,
)
from cimc.passes.pipelines import compile_pipeline
from cimc.passes.registry import available_passes


@dataclass
class CompileResult:
    module: Module
    artifact: Path | None
    pipeline: str
    reports: dict[str, Any] = field(default_factory=dict)
    key: Path | None = None  # the key of an encrypted artifact (beside it)


def load_calibration(path: str | Path, what: str = "calibration") -> dict[str, np.ndarray]:
    """Calibration (or ``what``) inputs from an ``.npz`` (one array per model input name, batch
    first)."""
    path = Path(path)
    if not path.is_file():
        raise CimcError(f"{path}: {what} file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        raise CimcError(f"{path}: cannot read {what} data as .npz ({e})") from None


def resolve_target(target: Any):
    """A Target, a bundled profile name, or a path to a .toml."""
    from cimc.targets import load_target

    if target is None or hasattr(target, "to_dict"):
        return target
    return load_target(str(target))


def compile(
    model: onnx.ModelProto | str | Path,
    target: Any = "ideal",
    output: str | Path | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    calib: Mapping[str, np.ndarray] | str | Path | None = None,
    chips: int = 0,
    pipeline: str | Sequence[Pass] | None = None,
    instruments: Sequence[Instrument] = (),
    seed: int = 0,
    encrypt: Mapping[str, Any] | str | None = None,
    encrypt_data: Mapping[str, np.ndarray] | str | Path | None = None,
) -> CompileResult:
    """Compile an ONNX model for ``target``; write the artifact to ``output`` when given.

    ``chips=0`` spreads a model over as many chips as it needs; ``chips=N`` refuses a model that
    needs more. ``pipeline`` overrides the default pass pipeline (a spec string or pass list).
    ``encrypt`` (the 'encrypt' pass's options: ``{"epsilon": 64}`` or ``"epsilon=64"``; ``{}``
    for its defaults) encrypts the weights with the samples ``encrypt_data`` (inputs and
    ``labels``; an ``.npz`` path or arrays); the key is written to ``OUTPUT.key``
    (``result.key``).
    """
    tgt = resolve_target(target)
    if isinstance(calib, (str, Path)):
        calib = load_calibration(calib, "calibration")
    if isinstance(encrypt_data, (str, Path)):
        encrypt_data = load_calibration(encrypt_data, "encryption")
    if isinstance(encrypt, Mapping):
        encrypt = ",".join(f"{k}={v}" for k, v in encrypt.items())
    module = import_onnx(model, input_shapes)
    if pipeline is None:
        passes = compile_pipeline(chips=chips, encrypt=encrypt)
    elif isinstance(pipeline, str):
        passes = parse_pipeline(pipeline, available_passes())
    else:
        passes = list(pipeline)
    ctx = PassContext(target=tgt, calib=dict(calib) if calib is not None else None, seed=seed,
                      encrypt_data=dict(encrypt_data) if encrypt_data is not None else None)
    PassManager(passes, [*instruments, Progress(total=len(passes))]).run(module, ctx)
    spec = pipeline_spec(passes)
    artifact = key = None
    if output is not None:
        from cimc.runtime.key import key_path
        from cimc.targets.emit import emit_artifact

        artifact = emit_artifact(module, tgt, Path(output), pipeline=spec, reports=ctx.reports)
        if any(op.attrs.get("flip") for op in module.main.walk()):
            key = key_path(artifact)
    return CompileResult(module, artifact, spec, ctx.reports, key)
