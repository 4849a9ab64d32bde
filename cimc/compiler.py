"""The compile driver: ONNX model -> IR -> pass pipeline -> artifact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from cimc.atomic import check_output
from cimc.data import LABEL_KEYS, input_arrays, label_array, load_npz
from cimc.errors import CimcError, check_seed
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
from cimc.passes.encrypt import EncryptSummary
from cimc.passes.ode_unroll import OdeInfo
from cimc.passes.pipelines import compile_pipeline
from cimc.passes.prune_similar import PruneSummary
from cimc.passes.registry import available_passes
from cimc.passes.replicate import MODES
from cimc.runtime.artifact import is_artifact


@dataclass
class CompileResult:
    """The compiled module, the artifact written (if any), the pipeline as a spec string, and
    the pipeline's context: its passes' records (``context.placement``, ``context.pruning``,
    ...)."""

    module: Module
    artifact: Path | None
    pipeline: str
    context: PassContext
    key: Path | None = None  # the key of an encrypted artifact (beside it)

    @property
    def pruning(self) -> PruneSummary | None:
        return self.context.pruning

    @property
    def encryption(self) -> EncryptSummary | None:
        return self.context.encryption

    @property
    def ode(self) -> OdeInfo | None:
        return self.context.ode


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
    force: bool = False,
    prune: str | Mapping[str, Any] | None = None,
    encrypt: str | Mapping[str, Any] | None = None,
    encrypt_data: Mapping[str, np.ndarray] | str | Path | None = None,
    ode: str | Mapping[str, Any] | None = None,
    replicate: str | None = None,
) -> CompileResult:
    """Compile an ONNX model for ``target``; write the artifact to ``output`` when given.

    An existing artifact at ``output`` is replaced; anything else there is refused unless
    ``force`` (:func:`cimc.atomic.check_output`). ``calib`` is an .npz path or arrays by name,
    read by :func:`cimc.data.input_arrays`'s rule.

    ``chips=0`` spreads a model over as many chips as it needs; ``chips=N`` refuses a model that
    needs more. ``pipeline`` overrides the default pass pipeline (a spec string or pass list).
    ``prune`` adds prune-similar with these options (``{"ratio": 0.3}`` or ``"ratio=0.3"``) to
    the default pipeline; its summary goes to the manifest and ``result.pruning``.
    ``encrypt`` adds the encrypt pass with these options (``{"epsilon": 64}`` or
    ``"epsilon=64"``; ``{}`` for its defaults), which scores keys on ``encrypt_data`` (an .npz
    path or arrays: the inputs by the same rule as ``calib``, and labels ``y`` or ``labels``;
    without labels, agreement with the unencrypted model); the key is written beside the
    artifact, ``OUTPUT.key`` (``result.key``).
    ``ode`` (``{"t1": 1.0, "rtol": 1e-3}`` or ``"t1=1.0,rtol=1e-3"``) compiles the model as the
    vector field of an ODE solve (:func:`cimc.frontend.ode.wrap_ode`, docs/ode.md); ``calib``
    then holds initial states.
    ``replicate`` (``"auto"``, the default, or ``"none"``) is the default pipeline's replicate
    mode: copies of the layers that bound the latency on the spare crossbars of the chips used
    (``result.context.replication``, the manifest's ``replication``).
    """
    seed = check_seed(seed)
    if output is not None:
        check_output(output, "an artifact", ours=is_artifact, force=force,
                     inputs=[p for p in (model, calib, encrypt_data)
                             if isinstance(p, (str, Path))])
    tgt = resolve_target(target)
    calib_source = str(calib) if isinstance(calib, (str, Path)) else "calibration data"
    if isinstance(calib, (str, Path)):
        calib = load_npz(calib, "calibration data")
    module = import_onnx(model, input_shapes)
    if ode is not None:
        from cimc.frontend.ode import wrap_ode

        module = wrap_ode(module, ode, tgt)
    func = module.main
    for name, arg in zip(func.input_names, func.args):
        if 0 in arg.type.shape:
            raise CimcError(f"input '{name}' has shape {list(arg.type.shape)}: cimc compiles only "
                            "inputs whose every dimension is >= 1 (a batch of at least 1)")
    if calib is not None:
        calib = input_arrays(calib, func.input_names, calib_source)
    if encrypt_data is not None:
        encrypt_data = _encryption_data(encrypt_data, func.input_names)
    if replicate is not None and replicate not in MODES:
        raise CimcError(f"replicate={replicate!r}: expected one of {', '.join(MODES)}")
    if pipeline is None:
        passes = compile_pipeline(chips=chips, prune=prune, encrypt=encrypt,
                                  ode=ode is not None, replicate=replicate or "auto")
    elif prune is not None or encrypt is not None or replicate is not None:
        raise CimcError("give prune-similar's, encrypt's or replicate's options in the pipeline "
                        "itself when you give a pipeline, not as prune=, encrypt= or replicate=")
    elif isinstance(pipeline, str):
        passes = parse_pipeline(pipeline, available_passes())
    else:
        passes = list(pipeline)
    ctx = PassContext(target=tgt, calib=calib, seed=seed, encrypt_data=encrypt_data)
    PassManager(passes, [*instruments, Progress(total=len(passes))]).run(module, ctx)
    spec = pipeline_spec(passes)
    artifact = key = None
    if output is not None:
        from cimc.runtime.key import key_path
        from cimc.targets.emit import emit_artifact

        artifact = emit_artifact(module, tgt, Path(output), pipeline=spec, ctx=ctx)
        if any(op.attrs.get("flip") for op in module.main.walk()):
            key = key_path(artifact)
    return CompileResult(module, artifact, spec, ctx, key)


def _encryption_data(data: Mapping[str, np.ndarray] | str | Path, input_names: Sequence[str]
                     ) -> dict[str, np.ndarray]:
    """The encrypt pass's samples: the model's inputs by name, and ``labels`` when given."""
    source = str(data) if isinstance(data, (str, Path)) else "encryption data"
    if isinstance(data, (str, Path)):
        data = load_npz(data, "encryption data")
    out = dict(input_arrays(data, input_names, source))
    if any(k in data for k in LABEL_KEYS):
        out["labels"] = label_array(data, source)
    return out
