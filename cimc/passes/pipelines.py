"""Named pipelines. ``cimc compile`` runs ``compile_pipeline()``; ``--print-pipeline`` prints it as a
spec string that ``cimc opt -p`` replays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cimc.passes.base import Pass, parse_pipeline
from cimc.passes.registry import available_passes

# The front half: ONNX-level clean-up and lowering to matrix-vector products.
LOWERING = "canonicalize,lower-to-mvm,canonicalize"
# The back half: crossbar mapping (needs a target in the pass context).
# place runs before quantize so that a model too large for --chips N is refused before the
# (slow) calibration run; replicate copies quantised tiles onto the placement's spare crossbars.
MAPPING = "tile,place,quantize,replicate,schedule"


def configured_pass(name: str, options: str | Mapping[str, Any]) -> Pass:
    """Pass ``name`` with ``options``: ``"ratio=0.3"`` or ``{"ratio": 0.3}``."""
    if not isinstance(options, str):
        options = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                           for k, v in options.items())
    spec = name + (f"{{{options}}}" if options.strip() else "")
    return parse_pipeline(spec, available_passes())[0]


# Between the two for an ODE solve (``--ode``): its field is lowered once, then unrolled.
ODE = "drift-step-schedule,ode-unroll"


def compile_pipeline(*, chips: int = 0, prune: str | Mapping[str, Any] | None = None,
                     encrypt: str | Mapping[str, Any] | None = None, ode: bool = False,
                     replicate: str = "auto") -> list[Pass]:
    """The full pipeline of ``cimc compile``: lowering, then mapping onto the target. With
    ``prune`` (prune-similar's options), prune-similar runs after the first canonicalize, on
    nn-stage IR with the batch norms folded, before lower-to-mvm. With ``encrypt`` (the encrypt
    pass's options, e.g. ``"epsilon=64"``), encrypt runs after quantize (so replicate copies
    the flips with the tiles). With ``ode`` (an ODE solve), drift-step-schedule and ode-unroll
    run between lowering and mapping. ``replicate`` is replicate's mode (``auto`` or
    ``none``)."""
    passes = parse_pipeline(LOWERING + ("," + ODE if ode else "") + "," + MAPPING,
                            available_passes())
    if prune is not None:
        passes.insert(1, configured_pass("prune-similar", prune))
    if encrypt is not None:
        at = next(i for i, p in enumerate(passes) if p.name == "quantize") + 1
        passes.insert(at, configured_pass("encrypt", encrypt))
    for p in passes:
        if p.name == "place":
            p.chips = chips  # type: ignore[attr-defined]
        if p.name == "replicate":
            p.mode = replicate  # type: ignore[attr-defined]
    return passes
