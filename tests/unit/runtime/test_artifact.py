"""Reading artifacts (cimc.runtime.artifact): format, version, files, checksums, weights."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from runtime_kit import single_mvm, target_dict, write_artifact

from cimc.errors import ArtifactError
from cimc.runtime import load, read_artifact

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


@pytest.fixture
def art(tmp_path: Path) -> Path:
    return single_mvm(tmp_path / "m.cimc", W)


def _rewrite_manifest(path: Path, **changes) -> None:
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))


def _error(path) -> str:
    with pytest.raises(ArtifactError) as e:
        read_artifact(path)
    return str(e.value)


def test_reads_a_directory(art):
    a = read_artifact(art)
    assert a.name == "m.cimc" and a.target.name == "ideal"
    assert [s.name for s in a.inputs] == ["x"] and a.inputs[0].shape == (1, 4)
    assert a.outputs[0].dtype == "f32"
    assert [c.program for c in a.cores] == ["core_000.s"]
    assert a.programs[0].xbars[0].rows == 4
    np.testing.assert_array_equal(a.weights["xbar/0/0/levels"], W)
    assert set(a.files) == {"core_000.s", "weights.npz"}
    assert len(a.content_hash) == 64


@pytest.mark.parametrize("folder", [True, False])
def test_reads_a_zip_with_or_without_top_folder(tmp_path, art, folder):
    zpath = tmp_path / "m.cimc.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in art.iterdir():
            z.write(f, f"m.cimc/{f.name}" if folder else f.name)
    chip = load(zpath)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(chip.run({"x": x})["y"], x @ W, rtol=1e-6)


def test_reads_a_zip_held_in_memory(art):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in art.iterdir():
            z.write(f, f.name)
    a = read_artifact(buf.getvalue())
    assert a.content_hash == read_artifact(art).content_hash and a.name == "<bytes>"
    assert "<bytes>: cannot read the zip file" in _error(b"not a zip")
    with zipfile.ZipFile(buf := io.BytesIO(), "w") as z:
        z.writestr("manifest.json", (art / "manifest.json").read_text())
    assert "<bytes>: missing file" in _error(buf.getvalue())


def test_tampered_file_is_named(art):
    p = art / "core_000.s"
    p.write_text(p.read_text().replace("halt", "halt ; edited"))
    msg = _error(art)
    assert "core_000.s: sha256 mismatch" in msg and "modified" in msg


def test_tampered_weights_are_named(art):
    buf = io.BytesIO()
    np.savez(buf, **{"xbar/0/0/levels": W * 2, "xbar/0/0/scale": np.ones(3, np.float32)})
    (art / "weights.npz").write_bytes(buf.getvalue())
    assert "weights.npz: sha256 mismatch" in _error(art)


def test_missing_file_is_named(art):
    (art / "core_000.s").unlink()
    assert "missing file 'core_000.s'" in _error(art)


def test_missing_manifest(tmp_path):
    (tmp_path / "e.cimc").mkdir()
    assert "missing file 'manifest.json'" in _error(tmp_path / "e.cimc")


def test_not_an_artifact(tmp_path):
    assert "artifact not found" in _error(tmp_path / "nope.cimc")
    (tmp_path / "f.txt").write_text("hello")
    assert "not an artifact" in _error(tmp_path / "f.txt")


def test_unknown_version(art):
    _rewrite_manifest(art, version=99)
    msg = _error(art)
    assert "manifest.json: unknown format version 99" in msg and "reads version(s) 1" in msg


def test_wrong_format(art):
    _rewrite_manifest(art, format="something-else")
    assert 'expected "cimc-artifact"' in _error(art)


def test_manifest_not_json(art):
    (art / "manifest.json").write_text("{nope")
    assert "manifest.json: not valid JSON" in _error(art)


def test_unlisted_file_is_refused(art):
    m = json.loads((art / "manifest.json").read_text())
    del m["files"]["core_000.s"]
    (art / "manifest.json").write_text(json.dumps(m))
    assert "no sha256 for 'core_000.s'" in _error(art)


def test_unsafe_path_is_refused(art):
    m = json.loads((art / "manifest.json").read_text())
    m["files"]["../x"] = "0" * 64
    (art / "manifest.json").write_text(json.dumps(m))
    assert "unsafe path" in _error(art)


def test_bad_manifest_entries(art):
    _rewrite_manifest(art, inputs=[{"name": "x", "shape": "1x4", "dtype": "f32"}])
    assert "inputs[0] must be" in _error(art)
    _rewrite_manifest(art, inputs=[{"name": "x", "shape": [1, 4], "dtype": "f32"}],
                      cores=[{"id": "zero", "program": "core_000.s"}])
    assert "cores[0] must be" in _error(art)


def test_bad_target_is_named(art):
    t = target_dict("ideal")
    t["crossbar"]["rows"] = "many"
    _rewrite_manifest(art, target=t)
    assert "target: crossbar.rows: expected an integer" in _error(art)


def test_program_for_wrong_core(tmp_path):
    prog = ".core 7\n input a0, name=\"x\"\n output a0, name=\"y\"\n halt\n"
    path = write_artifact(tmp_path / "w.cimc", {0: prog}, {"const/z": np.zeros(1)},
                          [("x", (1, 2), "f32")], [("y", (1, 2), "f32")])
    assert "core_000.s: says '.core 7'" in _error(path)


def test_program_on_wrong_chip(tmp_path):
    prog = ".core 0 chip=1\n input a0, name=\"x\"\n output a0, name=\"y\"\n halt\n"
    path = write_artifact(tmp_path / "c.cimc", {0: prog}, {"const/z": np.zeros(1)},
                          [("x", (1, 2), "f32")], [("y", (1, 2), "f32")])
    assert "core_000.s: says chip=1 but the manifest puts core 0 on chip 0" in _error(path)


def test_program_syntax_error_names_line(tmp_path):
    prog = ".core 0\n input a0, name=\"x\"\n bogus a0\n halt\n"
    path = write_artifact(tmp_path / "s.cimc", {0: prog}, {"const/z": np.zeros(1)},
                          [("x", (1, 2), "f32")], [("y", (1, 2), "f32")])
    assert "core_000.s:3: unknown instruction 'bogus'" in _error(path)


def test_pickled_weights_are_refused(tmp_path):
    prog = ".core 0\n input a0, name=\"x\"\n output a0, name=\"y\"\n halt\n"
    path = write_artifact(tmp_path / "p.cimc", {0: prog}, {"const/z": np.zeros(1)},
                          [("x", (1, 2), "f32")], [("y", (1, 2), "f32")])
    buf = io.BytesIO()
    np.savez(buf, obj=np.array([{"a": 1}], dtype=object))
    data = buf.getvalue()
    (path / "weights.npz").write_bytes(data)
    m = json.loads((path / "manifest.json").read_text())
    m["files"]["weights.npz"] = hashlib.sha256(data).hexdigest()
    (path / "manifest.json").write_text(json.dumps(m))
    msg = _error(path)
    assert "weights.npz: cannot be read without pickle" in msg


def test_missing_weight_entry_is_named(tmp_path):
    prog = ".core 0\n.xbar 0 rows=2 cols=2\n input a0, name=\"x\"\n" \
           " mvm a1, a0, xbar=0, dac_bits=0, adc_bits=0\n output a1, name=\"y\"\n halt\n"
    path = write_artifact(tmp_path / "n.cimc", {0: prog}, {"const/z": np.zeros(1)},
                          [("x", (1, 2), "f32")], [("y", (1, 2), "f32")])
    with pytest.raises(ArtifactError, match="missing 'xbar/0/0/levels'"):
        load(path)
