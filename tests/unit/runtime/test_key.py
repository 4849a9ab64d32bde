"""Keys of encrypted artifacts (cimc/runtime/key.py): the key unlocks the true weights; without it
the chip runs the scrambled ones and the report says so; a key for another artifact, a damaged
key or one that fits no crossbar is refused before anything is programmed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from runtime_kit import single_mvm, write_artifact

import cimc.runtime.chip as chip_module
from cimc.errors import ArtifactError
from cimc.runtime import load
from cimc.runtime.artifact import read_artifact
from cimc.runtime.key import Encryption, key_digest, key_path, write_key

RNG = np.random.default_rng(7)
W = RNG.standard_normal((5, 3)).astype(np.float32)
FLIP = np.zeros((5, 3), bool)
FLIP[[0, 2, 4], [1, 0, 2]] = True
PROG = """
    .core 0
    .xbar 0 rows=5 cols=3
    input a0, name="x"
    mvm a1, a0, xbar=0, dac_bits=0, adc_bits=0
    output a1, name="y"
    halt
"""
X = RNG.standard_normal((4, 5)).astype(np.float32)


def _encrypted(path: Path, target: str = "ideal") -> tuple[Path, str]:
    """An artifact storing W with FLIP's signs flipped, its manifest naming its own hash."""
    weights = {"xbar/0/0/levels": np.where(FLIP, -W, W), "xbar/0/0/scale": np.ones(3, np.float32)}
    key = {"required": True, "bits": int(FLIP.sum())}
    args = (path, {0: PROG}, weights, [("x", (1, 5), "f32")], [("y", (1, 3), "f32")])
    write_artifact(*args, key=key, target=target)
    h = read_artifact(path).content_hash  # the manifest is not part of it
    write_artifact(*args, key={**key, "artifact_hash": h}, target=target)
    assert read_artifact(path).content_hash == h
    return path, h


def test_the_key_unlocks_the_true_weights(tmp_path):
    path, h = _encrypted(tmp_path / "k.cimc")
    write_key(key_path(path), {"xbar/0/0/flip": FLIP}, h)
    assert key_path(path).name == "k.cimc.key"
    for key in (key_path(path), str(key_path(path)), {"xbar/0/0/flip": FLIP}):
        chip = load(path, key=key)
        np.testing.assert_allclose(chip.run({"x": X})["y"], X @ W, rtol=1e-5, atol=1e-6)
        assert "key given: the true weights" in str(chip.report())
    with np.load(key_path(path), allow_pickle=False) as z:  # plain data, no pickle
        assert sorted(z.files) == ["artifact_hash", "digest", "xbar/0/0/flip"]


def test_without_the_key_the_chip_runs_the_scrambled_weights(tmp_path):
    path, _ = _encrypted(tmp_path / "k.cimc")
    chip = load(path)
    np.testing.assert_allclose(chip.run({"x": X})["y"], X @ np.where(FLIP, -W, W), rtol=1e-5,
                               atol=1e-6)
    report = chip.report()
    assert "NO KEY: the chip runs the scrambled weights" in str(report)
    enc = report.to_dict()["encryption"]
    assert enc["bits"] == 3 and enc["weights"] == 15 and enc["weight_bits"] == 32
    assert enc["fraction"] == pytest.approx(3 / (15 * 32)) and not enc["unlocked"]
    assert enc["key_space_bits"] == pytest.approx(math.log2(math.comb(15, 3)))
    assert load(single_mvm(tmp_path / "p.cimc", W)).report().to_dict()["encryption"] is None


def test_bad_keys_are_refused_before_anything_is_programmed(tmp_path, monkeypatch):
    path, h = _encrypted(tmp_path / "k.cimc")
    monkeypatch.setattr(chip_module, "Machine", lambda *a: pytest.fail("programmed"))

    def refused(key, match):
        with pytest.raises(ArtifactError, match=match):
            load(path, key=key)

    other = "0" * 64
    refused({"xbar/0/0/flip": FLIP, "artifact_hash": np.array(other)}, "belongs to artifact 0000")
    refused({"xbar/0/0/flip": FLIP[:2]}, r"'xbar/0/0/flip' is bool \[2, 3\], expected")
    refused({"xbar/0/0/flip": FLIP.astype(np.int8) * 3}, "values other than 0 and 1")
    refused({"xbar/0/0/flip": FLIP, "xbar/3/0/flip": FLIP}, "'xbar/3/0/flip' names no crossbar")
    refused({"xbar/0/0/flip": FLIP, "weights": FLIP}, "unexpected entries")
    refused(tmp_path / "none.key", "key file not found")
    # a key whose masks no longer match its digest (the same count of flips: only the digest
    # tells)
    with open(tmp_path / "edited.key", "wb") as fh:
        np.savez(fh, **{"xbar/0/0/flip": np.roll(FLIP, 1, axis=1), "artifact_hash": np.array(h),
                        "digest": np.array(key_digest(h, {"xbar/0/0/flip": FLIP}))})
    refused(tmp_path / "edited.key", "the key is damaged")
    # a key file with damaged bytes
    write_key(tmp_path / "good.key", {"xbar/0/0/flip": FLIP}, h)
    data = bytearray((tmp_path / "good.key").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (tmp_path / "bad.key").write_bytes(bytes(data))
    refused(tmp_path / "bad.key", "cannot read the key|the key is damaged")


def test_a_key_for_a_plain_artifact_is_refused(tmp_path):
    path = single_mvm(tmp_path / "plain.cimc", np.ones((2, 2), np.float32))
    with pytest.raises(ArtifactError, match="not encrypted"):
        load(path, key={"xbar/0/0/flip": np.zeros((2, 2), bool)})


def test_key_space_and_share():
    e = Encryption(bits=35, weights=44190, weight_bits=5, unlocked=False)
    assert e.fraction == pytest.approx(35 / 220950)
    assert e.key_space_bits == pytest.approx(math.log2(math.comb(44190, 35)))
    assert "0.0158% of 220,950 weight bits" in str(e)
