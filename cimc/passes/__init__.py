"""Passes over the IR: the registry, pipelines and the pass manager."""

from cimc.passes.base import Pass, PassContext, PassManager, parse_pipeline, pipeline_spec
from cimc.passes.registry import PASSES, available_passes, run_pipeline

__all__ = [
    "PASSES", "Pass", "PassContext", "PassManager", "available_passes", "parse_pipeline",
    "pipeline_spec", "run_pipeline",
]
