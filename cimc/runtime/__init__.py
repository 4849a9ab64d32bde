"""The functional chip runtime: reads only an artifact, never imports the compiler.

    from cimc.runtime import load
    chip = load("model.cimc", seed=0)          # programs a chip instance (noise drawn once)
    outputs = chip.run({"input": x}, t=86400)  # t: seconds since programming
    print(chip.report())
"""

from cimc.runtime.artifact import FORMAT, VERSION, Artifact, read_artifact
from cimc.runtime.chip import Chip, load
from cimc.runtime.report import Report

__all__ = ["FORMAT", "VERSION", "Artifact", "Chip", "Report", "load", "read_artifact"]
