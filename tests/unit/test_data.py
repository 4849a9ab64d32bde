"""Data files the way users have them: one rule finds a model's inputs (compile/opt --calib,
evaluate --data), and labels are y or labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cimc.cli import main
from cimc.data import input_arrays, label_array, load_npz
from cimc.errors import CimcError

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"
X, Y, Z = np.zeros((2, 3)), np.zeros(2), np.ones((2, 3))


@pytest.mark.parametrize("arrays, want", [
    ({"input": X, "x": Z, "y": Y}, X),  # named after the input
    ({"x": X, "y": Y}, X),  # the only array besides the labels
    ({"images": X, "labels": Y}, X),
    ({"x": X}, X),
])
def test_one_input_takes_its_name_or_the_only_array_that_is_not_labels(arrays, want):
    assert input_arrays(arrays, ["input"], "d.npz")["input"] is want


def test_otherwise_the_error_lists_what_the_file_holds():
    with pytest.raises(CimcError, match=r"^d\.npz: cannot tell which array holds the model's input "
                       r"'input': it holds a \[2, 3\], b \[2, 3\], y \[2\]; name the array 'input'"):
        input_arrays({"a": X, "b": Z, "y": Y}, ["input"], "d.npz")
    with pytest.raises(CimcError, match=r"it holds y \[2\]"):
        input_arrays({"y": Y}, ["input"], "d.npz")
    with pytest.raises(CimcError, match=r"^d\.npz: no array for the model's input\(s\) mask: it "
                       r"holds x \[2, 3\]; a model with several inputs needs one array named after"):
        input_arrays({"x": X}, ["x", "mask"], "d.npz")
    assert set(input_arrays({"x": X, "mask": Z, "y": Y}, ["x", "mask"], "d.npz")) == {"x", "mask"}


def test_labels_and_unreadable_files(tmp_path):
    assert label_array({"x": X, "labels": Y}, "d") is Y
    with pytest.raises(CimcError, match=r"^d: no labels: expected an array named y or labels"):
        label_array({"x": X}, "d")
    np.save(tmp_path / "a.npy", X)
    with pytest.raises(CimcError, match=r"must be an \.npz archive of named arrays, not one array"):
        load_npz(tmp_path / "a.npy", "calibration data")
    (tmp_path / "b.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CimcError, match=r"b\.npz: cannot read calibration data as \.npz"):
        load_npz(tmp_path / "b.npz", "calibration data")
    with pytest.raises(CimcError, match=r"c\.npz: data file not found"):
        load_npz(tmp_path / "c.npz", "data")


def test_compile_calibrates_with_the_examples_test_file_as_it_is(tmp_path):
    r = CliRunner().invoke(main, ["compile", str(DIGITS / "model.onnx"), "--target", "hermes64",
                                  "--calib", str(DIGITS / "test.npz"), "-o", str(tmp_path / "d.cimc")])
    assert r.exit_code == 0, r.output
    assert "no calibration data" not in r.output
    manifest = json.loads((tmp_path / "d.cimc" / "manifest.json").read_text())
    assert manifest["mapping"]["calibration"] == "calibration data: 64 sample(s)"


def test_evaluate_reads_inputs_and_labels_by_the_same_rule(tmp_path):
    with np.load(DIGITS / "test.npz") as z:
        np.savez(tmp_path / "d.npz", images=z["x"][:140], labels=z["y"][:140])
        np.savez(tmp_path / "bad.npz", a=z["x"][:140], b=z["x"][:140], labels=z["y"][:140])
    r = CliRunner().invoke(main, ["evaluate", str(DIGITS / "model.onnx"), "--data",
                                  str(tmp_path / "d.npz"), "--target", "ideal"])
    assert r.exit_code == 0, r.output
    assert "40 test samples (100 more calibrated" in r.output
    r = CliRunner().invoke(main, ["evaluate", str(DIGITS / "model.onnx"), "--data",
                                  str(tmp_path / "bad.npz"), "--target", "ideal"])
    assert r.exit_code == 1 and "it holds a [140, 1, 8, 8], b [140, 1, 8, 8], labels [140]" in r.output
