"""Named pipelines. ``cimc compile`` runs ``compile_pipeline()``; ``--print-pipeline`` prints it as a
spec string that ``cimc opt -p`` replays."""

from __future__ import annotations

from cimc.passes.base import Pass, parse_pipeline
from cimc.passes.registry import available_passes

# The front half: ONNX-level clean-up and lowering to matrix-vector products.
LOWERING = "canonicalize,lower-to-mvm,canonicalize"
# The back half: crossbar mapping (needs a target in the pass context).
# place runs before quantize so that a model too large for --chips N is refused before the
# (slow) calibration run.
MAPPING = "tile,place,quantize,schedule"


def compile_pipeline(*, chips: int = 0) -> list[Pass]:
    """The full pipeline of ``cimc compile``: lowering, then mapping onto the target."""
    passes = parse_pipeline(LOWERING + "," + MAPPING, available_passes())
    for p in passes:
        if p.name == "place":
            p.chips = chips  # type: ignore[attr-defined]
    return passes
