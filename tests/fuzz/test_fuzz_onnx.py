"""Fuzzing the ONNX importer: mutated real models import or give a CimcError, nothing else.

Three quarters of the cases are structural edits of the proto (mutate.mutate_model: nodes
dropped, duplicated, swapped, retyped and rewired; attributes removed, retyped, set to odd and
huge values; constants, initializers, graph inputs and outputs, opsets and domains changed);
the others are the saved bytes with a string made invalid UTF-8 or a byte flipped, imported from
a file. Replay a failing seed with ``case``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from mutate import corrupt_strings, flip_byte, model_strings, mutate_model, run_cases
from seeds import seed_models

from cimc.errors import CimcError
from cimc.frontend.onnx import import_onnx

CASES = 3000


def case(seed: int, directory: Path) -> onnx.ModelProto | Path:
    rng = np.random.default_rng(seed)
    models = seed_models()
    model = models[seed % len(models)]
    kind = rng.random()
    if kind < 0.75:
        return mutate_model(rng, model)
    data = model.SerializeToString()
    if kind < 0.9:
        data = corrupt_strings(rng, data, model_strings(model))
    else:
        data = flip_byte(rng, data)
    path = directory / f"case{seed}.onnx"
    path.write_bytes(data)
    return path


def _import(subject: onnx.ModelProto | Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamic batch notes
        import_onnx(subject)


def test_every_seed_model_imports():
    for model in seed_models():
        _import(model)


@pytest.mark.parametrize("part", range(3))
def test_mutated_models_give_cimc_errors_only(part, tmp_path):
    seeds = range(part * CASES // 3, (part + 1) * CASES // 3)
    failures = run_cases(seeds, lambda s: case(s, tmp_path), _import, CimcError)
    assert not failures, f"{len(failures)} case(s) raised something else:\n" + "\n".join(failures[:20])
