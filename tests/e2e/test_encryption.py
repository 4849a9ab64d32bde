"""Encrypted artifacts end to end: ONNX -> compile with --encrypt -> artifact + key -> runtime.

With the key the chip's outputs are bit-identical to those of the same model compiled without
encryption (same seed), on ideal and on pcm40; without it the accuracy is at or below the
target; the command line writes the key beside the artifact and takes it back with --key; the
same seed gives the same key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.cli import main
from cimc.errors import ArtifactError

ENCRYPT = {"epsilon": 16, "generations": 40, "population": 30}
CLASSES = 4


def _mlp() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """A 16-32-4 perceptron with seeded weights, 300 inputs and its own top-1 as their labels."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32) * 0.4
    b1 = rng.standard_normal(32).astype(np.float32) * 0.1
    w2 = rng.standard_normal((32, CLASSES)).astype(np.float32) * 0.4
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((300, 16)).astype(np.float32)
    labels = (np.maximum(x @ w1 + b1, 0) @ w2).argmax(axis=1)
    return model, x, labels


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The MLP compiled for ideal and pcm40, plain and encrypted (first 150 samples calibrate
    and encrypt; the rest score)."""
    model, x, labels = _mlp()
    tmp = tmp_path_factory.mktemp("enc")
    out = {}
    for target in ("ideal", "pcm40"):
        common = {"input_shapes": {"x": (1, 16)}, "calib": {"x": x[:150]}}
        plain = cimc.compile(model, target, tmp / f"{target}.cimc", **common)
        enc = cimc.compile(model, target, tmp / f"{target}_enc.cimc", encrypt=ENCRYPT,
                           encrypt_data={"x": x[:150], "labels": labels[:150]}, **common)
        out[target] = (plain, enc)
    return model, x, labels, out, tmp


@pytest.mark.parametrize("target", ["ideal", "pcm40"])
def test_with_the_key_outputs_equal_the_unencrypted_artifact(compiled, target):
    _, x, _, out, _ = compiled
    plain, enc = out[target]
    assert plain.key is None and enc.key == enc.artifact.with_name(enc.artifact.name + ".key")
    assert enc.key.is_file() and enc.key.parent == enc.artifact.parent  # outside the artifact
    manifest = json.loads((enc.artifact / "manifest.json").read_text())
    assert manifest["key"]["required"] and manifest["key"]["bits"] == enc.encryption.bits
    assert json.loads((plain.artifact / "manifest.json").read_text())["key"] is None
    for seed, t in ((0, 0.0), (3, 3600.0)):
        want = cimc.load(plain.artifact, seed=seed).run({"x": x[150:]}, t=t)["y"]
        got = cimc.load(enc.artifact, seed=seed, key=enc.key).run({"x": x[150:]}, t=t)["y"]
        assert np.array_equal(got, want)


@pytest.mark.parametrize("target", ["ideal", "pcm40"])
def test_without_the_key_accuracy_is_at_most_the_target(compiled, target):
    _, x, labels, out, _ = compiled
    plain, enc = out[target]
    rep = enc.encryption
    assert 1 <= rep.bits <= ENCRYPT["epsilon"] and rep.target_acc == 1 / CLASSES + 0.05

    def accuracy(artifact, key=None):
        y = cimc.load(artifact, seed=1, key=key).run({"x": x[150:]})["y"]
        return float(np.mean(y.argmax(axis=1) == labels[150:]))

    assert accuracy(plain.artifact) > 0.8
    assert accuracy(enc.artifact, enc.key) == accuracy(plain.artifact)
    assert accuracy(enc.artifact) <= rep.target_acc


def test_a_key_from_another_artifact_is_refused(compiled):
    _, _, _, out, _ = compiled
    with pytest.raises(ArtifactError, match="belongs to artifact|names no crossbar"):
        cimc.load(out["pcm40"][1].artifact, key=out["ideal"][1].key)
    with pytest.raises(ArtifactError, match="not encrypted"):
        cimc.load(out["pcm40"][0].artifact, key=out["pcm40"][1].key)


def test_command_line_writes_and_takes_the_key(compiled):
    model, x, labels, out, tmp = compiled
    onnx.save(model, tmp / "mlp.onnx")
    np.savez(tmp / "enc.npz", x=x[:150], labels=labels[:150])
    np.savez(tmp / "cal.npz", x=x[:150])
    np.savez(tmp / "test.npz", x=x, y=labels)
    np.save(tmp / "x.npy", x[150:])
    art = tmp / "cli.cimc"
    opts = ",".join(f"{k}={v}" for k, v in ENCRYPT.items())
    run = CliRunner().invoke
    r = run(main, ["compile", str(tmp / "mlp.onnx"), "--target", "pcm40", "--input-shape",
                   "x=1x16", "--calib", str(tmp / "cal.npz"), "--encrypt", opts,
                   "--encrypt-data", str(tmp / "enc.npz"), "-o", str(art)])
    assert r.exit_code == 0, r.output
    assert "cli.cimc.key (the key:" in r.output
    # the same model, data and seed as the API's compile: the same key
    with np.load(f"{art}.key") as a, np.load(out["pcm40"][1].key) as b:
        assert a.files == b.files
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k.startswith("xbar/"))
    r = run(main, ["run", str(art), "--input", f"x={tmp / 'x.npy'}", "-o", str(tmp / "y.npz"),
                   "--key", f"{art}.key"])
    assert r.exit_code == 0, r.output
    want = cimc.load(out["pcm40"][0].artifact).run({"x": x[150:]})["y"]
    assert np.array_equal(np.load(tmp / "y.npz")["y"], want)
    r = run(main, ["report", str(art), "--json"])
    enc = json.loads(r.output)["encryption"]
    assert enc["bits"] == out["pcm40"][1].encryption.bits and not enc["unlocked"]
    assert enc["fraction"] == pytest.approx(enc["bits"] / ((16 * 32 + 32 * 4) * 5))
    assert enc["key_space_bits"] > 20
    r = run(main, ["report", str(art), "--key", f"{art}.key"])
    assert "key given" in r.output
    r = run(main, ["evaluate", str(art), "--data", str(tmp / "test.npz"), "--calib-count", "150"])
    assert r.exit_code == 0, r.output
    assert "encrypted, no key: chip, t = 0 s" in r.output
    r = run(main, ["evaluate", str(art), "--data", str(tmp / "test.npz"), "--calib-count", "150",
                   "--key", f"{art}.key"])
    assert r.exit_code == 0 and "no key" not in r.output
    r = run(main, ["run", str(art), "--input", f"x={tmp / 'x.npy'}", "-o", str(tmp / "z.npz"),
                   "--key", str(tmp / "cal.npz")])
    assert r.exit_code == 1 and "unexpected entries" in r.output and "Traceback" not in r.output
    assert not (tmp / "z.npz").exists()


@pytest.mark.filterwarnings("ignore:encrypt:UserWarning")
def test_the_copies_of_an_encrypted_crossbar_count_once(tmp_path):
    # replicate copies the digits CNN's convolutions, flips included; the manifest, the report
    # and the share count each of the model's weights once, as without copies
    digits = Path(__file__).resolve().parents[2] / "examples" / "digits"
    with np.load(digits / "test.npz") as z:
        x, y = z["x"][:64].astype(np.float32), z["y"][:64]
    common = {"input_shapes": {"input": (1, 1, 8, 8)}, "calib": {"input": x},
              "encrypt": {"epsilon": 4, "generations": 3, "population": 6},
              "encrypt_data": {"input": x, "labels": y}}
    copied = cimc.compile(digits / "model.onnx", "pcm40", tmp_path / "copied.cimc", **common)
    alone = cimc.compile(digits / "model.onnx", "pcm40", tmp_path / "alone.cimc",
                         replicate="none", **common)
    assert copied.context.replication.layers and not alone.context.replication
    manifest = json.loads((copied.artifact / "manifest.json").read_text())
    assert manifest["key"]["bits"] == copied.encryption.bits
    reports = [cimc.load(r.artifact).report().encryption for r in (copied, alone)]
    assert reports[0].weights == reports[1].weights == 16 * 9 + 32 * 144 + 10 * 512
    assert reports[0].bits == reports[1].bits == copied.encryption.bits
    with np.load(copied.key) as key:
        masks = {k: key[k] for k in key.files if k.endswith("/flip")}
    art = cimc.load(copied.artifact).artifact
    by_tile: dict = {}
    for c, prog in art.programs.items():
        for i, d in prog.xbars.items():
            mask = masks.get(f"xbar/{c}/{i}/flip", np.zeros((d.rows, d.cols), bool))
            first = by_tile.setdefault((d.layer, d.tile), mask)
            assert np.array_equal(mask, first), (c, i, d.layer)
    assert sum(int(m.sum()) for m in masks.values()) > copied.encryption.bits
