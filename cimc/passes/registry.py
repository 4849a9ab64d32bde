"""The explicit list of passes. A test checks each has a docstring and a test file."""

from __future__ import annotations

from collections.abc import Sequence

from cimc.ir.core import Module
from cimc.passes.base import Instrument, Pass, PassContext, PassManager, parse_pipeline
from cimc.passes.canonicalize import Canonicalize
from cimc.passes.dce import DCE
from cimc.passes.drift_step_schedule import DriftStepSchedule
from cimc.passes.encrypt import Encrypt
from cimc.passes.lower_to_mvm import LowerToMvm
from cimc.passes.ode_unroll import OdeUnroll
from cimc.passes.place import Place
from cimc.passes.prune_similar import PruneSimilar
from cimc.passes.quantize import Quantize
from cimc.passes.replicate import Replicate
from cimc.passes.schedule import Schedule
from cimc.passes.tile import Tile

PASSES: list[type[Pass]] = [
    Canonicalize,
    DCE,
    PruneSimilar,
    LowerToMvm,
    DriftStepSchedule,
    OdeUnroll,
    Tile,
    Quantize,
    Place,
    Replicate,
    Schedule,
    Encrypt,
]


def available_passes() -> dict[str, type[Pass]]:
    return {p.name: p for p in PASSES}


def run_pipeline(
    module: Module,
    spec: str,
    ctx: PassContext | None = None,
    instruments: Sequence[Instrument] = (),
) -> Module:
    """Parse ``spec`` (``"a,b{opt=1}"``) and run it on ``module`` in place."""
    passes = parse_pipeline(spec, available_passes())
    return PassManager(passes, instruments).run(module, ctx)
