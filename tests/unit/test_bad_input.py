"""Bad values given to the API and the command line are CimcErrors (or click usage errors), never
tracebacks: seeds, batch sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cimc
from cimc.cli import main
from cimc.errors import CimcError

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "d.cimc"
    return cimc.compile(DIGITS / "model.onnx", "ideal", out, input_shapes={"input": (1, 1, 8, 8)}).artifact


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3", None])
def test_api_seeds_must_be_integers_from_zero(seed, artifact):
    with pytest.raises(CimcError, match=r"seed must be an integer >= 0, got"):
        cimc.load(artifact, seed=seed)
    with pytest.raises(CimcError, match=r"seed must be an integer >= 0, got"):
        cimc.compile(DIGITS / "model.onnx", "ideal", seed=seed)
    assert cimc.load(artifact, seed=np.int64(3)).seed == 3


def test_cli_seeds_must_be_integers_from_zero(artifact, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    for args in (["run", str(artifact), "--input", f"input={tmp_path / 'x.npy'}", "-o",
                  str(tmp_path / "y.npz"), "--seed", "-1"],
                 ["evaluate", str(DIGITS / "model.onnx"), "--data", str(DIGITS / "test.npz"),
                  "--seed", "-1"],
                 ["run", str(artifact), "--input", f"input={tmp_path / 'x.npy'}", "-o",
                  str(tmp_path / "y.npz"), "--seed", "1.5"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "Invalid value for '--seed'" in r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)


def test_an_empty_batch_is_refused_by_the_api_as_by_the_cli():
    with pytest.raises(CimcError, match=r"input 'input' has shape \[0, 1, 8, 8\]: cimc compiles only "
                       r"inputs whose every dimension is >= 1"):
        cimc.compile(DIGITS / "model.onnx", "ideal", input_shapes={"input": (0, 1, 8, 8)})
    r = CliRunner().invoke(main, ["compile", str(DIGITS / "model.onnx"), "--input-shape",
                                  "input=0x1x8x8"])
    assert r.exit_code == 1 and "every dimension must be positive" in r.output


def test_evaluate_names_a_missing_model():
    r = CliRunner().invoke(main, ["evaluate", "nosuch.onnx", "--data", str(DIGITS / "test.npz")])
    assert r.exit_code == 1 and "nosuch.onnx: no such file" in r.output
