"""Nothing lost: the one output rule (cimc.atomic.check_output) on every command that writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cimc
from cimc.atomic import atomic_path, check_output
from cimc.cli import main
from cimc.errors import CimcError

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A directory holding a user's model and data, as the current directory."""
    shutil.copy(DIGITS / "model.onnx", tmp_path / "model.onnx")
    shutil.copy(DIGITS / "test.npz", tmp_path / "test.npz")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ----------------------------------------------------------------------------- the rule


def test_the_rule(work):
    (work / "empty").mkdir()
    (work / "full").mkdir()
    (work / "full" / "notes.txt").write_text("mine")
    assert check_output("new/out", "x") == Path("new/out")
    assert check_output("empty", "x") == Path("empty")
    assert check_output("full", "x", ours=lambda p: True) == Path("full")
    assert check_output("full", "x", force=True) == Path("full")
    with pytest.raises(CimcError, match=r"^-o full: a directory holding 1 entry is already there "
                       r"and it is not x cimc wrote; choose another path, or pass --force"):
        check_output("full", "x")
    with pytest.raises(CimcError, match=r"^--out test\.npz: a file is already there"):
        check_output("test.npz", "x", option="--out")
    for here in (".", "./", str(work), str(work.parent), "full/.."):
        with pytest.raises(CimcError, match="would replace the current directory or one above it"):
            check_output(here, "x", force=True)
    with pytest.raises(CimcError, match=r"writing x there would replace the input full/notes\.txt"):
        check_output("full", "x", force=True, inputs=["full/notes.txt"])


def test_atomic_path_replaces_whatever_was_there_only_on_success(work):
    (work / "d").mkdir()
    (work / "d" / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_path("d", directory=True) as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError("half-way")
    assert [p.name for p in (work / "d").iterdir()] == ["old"]
    with atomic_path("d", directory=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in (work / "d").iterdir()] == ["new"]
    with atomic_path("d") as tmp:  # a file where a directory was (what --force asks for)
        tmp.write_text("file")
    assert (work / "d").read_text() == "file"
    assert sorted(os.listdir(work)) == ["d", "model.onnx", "test.npz"]  # no temporaries left


# ----------------------------------------------------------------------------- the commands


def test_compile_replaces_an_artifact_and_keeps_anything_else(work):
    r = _invoke("compile", "model.onnx", "-o", "out.cimc")
    assert r.exit_code == 0, r.output
    first = json.loads((work / "out.cimc" / "manifest.json").read_text())
    r = _invoke("compile", "model.onnx", "--target", "hermes64", "-o", "out.cimc")
    assert r.exit_code == 0, r.output
    assert json.loads((work / "out.cimc" / "manifest.json").read_text())["target"] != first["target"]
    # the case: the output directory holds the model itself
    r = _invoke("compile", "model.onnx", "-o", ".")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "-o .: an artifact would replace the current directory" in r.output
    (work / "models").mkdir()
    shutil.move(work / "model.onnx", work / "models" / "model.onnx")
    for force in ((), ("--force",)):
        r = _invoke("compile", "models/model.onnx", "-o", "models", *force)
        assert r.exit_code == 1
        assert "-o models: writing an artifact there would replace the input models/model.onnx" in r.output
    assert (work / "models" / "model.onnx").is_file()
    (work / "out.cimc" / "notes.txt").write_text("mine")  # no longer only an artifact
    r = _invoke("compile", "models/model.onnx", "-o", "out.cimc")
    assert r.exit_code == 1 and "-o out.cimc: a directory holding" in r.output
    assert (work / "out.cimc" / "notes.txt").read_text() == "mine"


def test_the_api_refuses_to_replace_what_is_not_an_artifact(work):
    (work / "data").mkdir()
    (work / "data" / "x.npy").write_bytes(b"precious")
    with pytest.raises(CimcError, match=r"-o data: a directory holding 1 entry is already there"):
        cimc.compile("model.onnx", "ideal", "data", input_shapes={"input": (1, 1, 8, 8)})
    assert (work / "data" / "x.npy").read_bytes() == b"precious"
    result = cimc.compile("model.onnx", "ideal", "data", input_shapes={"input": (1, 1, 8, 8)},
                          force=True)
    assert (result.artifact / "manifest.json").is_file()


def test_run_replaces_its_own_outputs_only(work):
    cimc.compile("model.onnx", "ideal", "m.cimc", input_shapes={"input": (1, 1, 8, 8)})
    with np.load("test.npz") as z:
        np.save("x.npy", z["x"][:4])
    for _ in range(2):  # a rerun replaces the outputs it wrote
        r = _invoke("run", "m.cimc", "--input", "input=x.npy", "-o", "y.npz")
        assert r.exit_code == 0, r.output
    before = (work / "test.npz").read_bytes()
    r = _invoke("run", "m.cimc", "--input", "input=x.npy", "-o", "test.npz")
    assert r.exit_code == 1 and "-o test.npz: a file is already there" in r.output
    r = _invoke("run", "m.cimc", "--input", "input=x.npy", "-o", "x.npy", "--force")
    assert r.exit_code == 1 and "would replace the input x.npy" in r.output
    assert (work / "test.npz").read_bytes() == before


def test_import_and_opt_keep_a_users_npz_beside_the_ir(work):
    r = _invoke("import", "model.onnx", "-o", "test.cir")  # its sidecar would be test.npz
    assert r.exit_code == 1
    assert "-o test.cir: its sidecar test.npz: a file is already there" in r.output
    assert not (work / "test.cir").exists()
    for _ in range(2):
        r = _invoke("import", "model.onnx", "-o", "m.cir")
        assert r.exit_code == 0, r.output
    r = _invoke("opt", "m.cir", "-p", "dce", "-o", "test.cir")
    assert r.exit_code == 1 and "its sidecar test.npz" in r.output
    r = _invoke("opt", "m.cir", "-p", "dce", "-o", "m.cir", "--force")  # inputs stay
    assert r.exit_code == 1 and "-o m.cir: writing an IR file there would replace the input" in r.output
    r = _invoke("opt", "m.cir", "-p", "dce", "-o", "o.cir")
    assert r.exit_code == 0, r.output


def test_dump_dir_replaces_an_earlier_dump_and_keeps_other_files(work):
    _invoke("import", "model.onnx", "-o", "m.cir")
    r = _invoke("opt", "m.cir", "-p", "dce,dce", "--dump-dir", "dumps")
    assert r.exit_code == 0, r.output
    r = _invoke("opt", "m.cir", "-p", "dce", "--dump-dir", "dumps")
    assert r.exit_code == 0, r.output
    assert sorted(p.stem for p in (work / "dumps").glob("*.cir")) == ["000_input", "001_dce"]
    (work / "notes").mkdir()
    (work / "notes" / "todo.txt").write_text("mine")
    r = _invoke("opt", "m.cir", "-p", "dce", "--dump-dir", "notes")
    assert r.exit_code == 1 and "--dump-dir notes: a directory holding 1 entry" in r.output
    r = _invoke("opt", "m.cir", "-p", "dce", "--dump-dir", "notes", "--force")
    assert r.exit_code == 0, r.output
    assert (work / "notes" / "todo.txt").read_text() == "mine"
    assert (work / "notes" / "001_dce.cir").is_file()
