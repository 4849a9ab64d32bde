"""cimc: a compiler and functional chip runtime for analog compute-in-memory chips.

    import cimc
    result = cimc.compile("model.onnx", target="pcm40", output="model.cimc")
    chip = cimc.load("model.cimc", seed=0)
    outputs = chip.run({"input": x}, t=86400.0)
    print(chip.report())
    sweep = cimc.sweep("model.onnx", "test.npz", target="pcm40", seeds=range(64))
"""

from __future__ import annotations

__version__ = "0.1.0"


def compile(*args, **kwargs):
    """Compile an ONNX model; see :func:`cimc.compiler.compile`."""
    from cimc.compiler import compile as _compile

    return _compile(*args, **kwargs)


def load(path, seed: int = 0, key=None, **kwargs):
    """Program a chip instance from an artifact; see :func:`cimc.runtime.load`."""
    from cimc.runtime import load as _load

    return _load(path, seed=seed, key=key, **kwargs)


def sweep(*args, **kwargs):
    """Accuracy of many chip instances at several drift times, on Dask; see
    :func:`cimc.montecarlo.sweep`."""
    from cimc.montecarlo import sweep as _sweep

    return _sweep(*args, **kwargs)


__all__ = ["__version__", "compile", "load", "sweep"]
