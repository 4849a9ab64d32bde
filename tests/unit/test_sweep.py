"""Monte Carlo sweeps (cimc.montecarlo) on a real Dask LocalCluster of 2 worker processes: the
numbers against in-process runs, resuming, failures, the command line, and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cimc
from cimc.cli import main
from cimc.errors import CimcError
from cimc.evaluate import top1
from cimc.montecarlo import SweepResult, parse_seeds, parse_times, plot_sweep
from cimc.montecarlo.driver import instance_accuracy, prepare, run_sweep

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"
TIMES = (0.0, 86400.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The digits example compiled for pcm40 (calibrated on its first 60 images), and test data:
    the next 100 images."""
    d = tmp_path_factory.mktemp("sweep")
    with np.load(DIGITS / "test.npz") as z:
        x, y = z["x"], z["y"]
    np.savez(d / "calib.npz", input=x[:60])
    np.savez(d / "data.npz", x=x[60:160], y=y[60:160])
    cimc.compile(DIGITS / "model.onnx", "pcm40", d / "digits.cimc",
                 input_shapes={"input": (1, 1, 8, 8)}, calib=d / "calib.npz")
    return {"dir": d, "art": d / "digits.cimc", "data": d / "data.npz", "calib": d / "calib.npz"}


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster of 2 worker processes, shared by the tests that name its scheduler."""
    from cimc.montecarlo.engine import local_cluster

    with local_cluster(2) as cluster:
        yield cluster.scheduler_address


def test_sweep_matches_in_process_runs(files, scheduler):
    out = files["dir"] / "match.json"
    result = cimc.sweep(files["art"], files["data"], seeds=[0, 1, 2], times=TIMES,
                        scheduler=scheduler, output=out)
    with np.load(files["data"]) as z:
        x, y = z["x"], z["y"]
    for j, seed in enumerate(result.seeds):
        chip = cimc.load(files["art"], seed=seed, workers=1)
        want = [top1(chip.run({"input": x}, t=t)["logits"], y) for t in TIMES]
        assert [row[j] for row in result.accuracy] == want
    d = json.loads(out.read_text())
    assert d == result.to_dict() and d["complete"] and d["failed"] == []
    assert (d["target"], d["times"], d["seeds"]) == ("pcm40", list(TIMES), [0, 1, 2])
    assert d["cimc_version"] == cimc.__version__ and d["data"]["samples"] == 100
    for row, summary in zip(d["accuracy"], d["summary"]):
        a = np.array(row)
        assert summary == {"time": summary["time"], "mean": a.mean(), "std": a.std(),
                           "min": a.min(), "p5": np.percentile(a, 5)}
    assert min(d["summary"][0]["min"], d["summary"][1]["min"]) > 0.9  # the digits CNN works


def test_interrupted_sweep_resumes_to_the_same_json(files, scheduler, monkeypatch):
    """Every file the sweep writes on its way is a sweep that resumes to the final one."""
    import cimc.atomic

    written: list[str] = []
    real = cimc.atomic.write_text
    monkeypatch.setattr(cimc.atomic, "write_text",
                        lambda path, text: (written.append(text), real(path, text)))
    out = files["dir"] / "full.json"
    plan = prepare(files["art"], files["data"], seeds=range(4), times=TIMES)
    run_sweep(plan, scheduler=scheduler, output=out)
    final = out.read_text()
    assert len(written) == 5 and written[-1] == final  # the empty sweep, then one per instance
    partial = json.loads(written[2])
    assert not partial["complete"]
    assert sum(v is not None for v in partial["accuracy"][0]) == 2
    resumed = files["dir"] / "resumed.json"
    resumed.write_text(written[2])
    with pytest.raises(CimcError, match="unfinished sweep .2 of 4 instances.*--resume"):
        run_sweep(prepare(files["art"], files["data"], seeds=range(4), times=TIMES),
                  scheduler=scheduler, output=resumed)
    written.clear()
    run_sweep(prepare(files["art"], files["data"], seeds=range(4), times=TIMES),
              scheduler=scheduler, output=resumed, resume=True)
    assert resumed.read_text() == final
    assert len(written) == 3  # only the two unfinished instances ran
    resumed.write_text(written[2])  # --force starts over
    run_sweep(plan, scheduler=scheduler, output=resumed, force=True)
    assert resumed.read_text() == final

    with pytest.raises(CimcError, match="cannot resume.*times \\[0.0, 86400.0\\].*\\[0.0\\]"):
        run_sweep(prepare(files["art"], files["data"], seeds=range(4), times=[0.0]),
                  scheduler=scheduler, output=resumed, resume=True)


def test_failing_instance_is_retried_once_then_reported_with_its_seed(files, scheduler, tmp_path):
    def flaky(artifact, x, y, seed, times, compensation):
        with open(tmp_path / f"seed{seed}", "a") as f:  # one line per attempt
            f.write("try\n")
        tries = (tmp_path / f"seed{seed}").read_text().count("try")
        if seed == 1 or (seed == 2 and tries == 1):
            raise RuntimeError(f"boom on seed {seed}")
        return instance_accuracy(artifact, x, y, seed, times, compensation)

    out = tmp_path / "sweep.json"
    plan = prepare(files["art"], files["data"], seeds=range(4), times=TIMES)
    result = run_sweep(plan, scheduler=scheduler, output=out, task=flaky)
    assert result.failed == {1: "RuntimeError: boom on seed 1"}
    assert sorted(result.by_seed) == [0, 2, 3]
    tries = {s: (tmp_path / f"seed{s}").read_text().count("try") for s in range(4)}
    assert tries == {0: 1, 1: 2, 2: 2, 3: 1}
    d = json.loads(out.read_text())
    assert d["failed"] == [{"seed": 1, "error": "RuntimeError: boom on seed 1"}]
    assert not d["complete"] and d["accuracy"][0][1] is None
    assert "seed 1 failed: RuntimeError: boom on seed 1" in str(result)


def test_cli_sweeps_an_onnx_model_on_a_local_cluster(files):
    out, png = files["dir"] / "cli.json", files["dir"] / "cli.png"
    r = CliRunner().invoke(main, [
        "sweep", str(DIGITS / "model.onnx"), "--data", str(files["data"]), "--target", "pcm40",
        "--calib", str(files["calib"]), "--seeds", "0:2", "--time", "0,86400", "--workers", "2",
        "-o", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "1 day" in r.output and "2 of 2 chip instances" in r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    d = json.loads(out.read_text())
    # compiled here as the fixture compiled it: the same artifact
    assert d["artifact"] == prepare(files["art"], files["data"]).result.artifact
    assert d["model"] == "model.onnx" and len(d["accuracy"]) == 2


def test_parse_seeds_and_times():
    assert parse_seeds("0:4") == (0, 1, 2, 3)
    assert parse_seeds("7, 0:2,10") == (7, 0, 1, 10)
    assert parse_times("0,3600,2.6e6") == (0.0, 3600.0, 2.6e6)
    for text, msg in [("a:b", "'a:b' is not N or A:B"), ("5:5", "range '5:5' is empty"),
                      ("0:3,2", "\\[2\\] given more than once"),
                      ("-1", "seed must be an integer >= 0, got -1")]:
        with pytest.raises(CimcError, match=msg):
            parse_seeds(text)
    for text, msg in [("0,x", "comma-separated"), ("-5", ">= 0, got -5.0"),
                      ("1,1", "more than once")]:
        with pytest.raises(CimcError, match=msg):
            parse_times(text)


def test_bad_input_is_refused_before_anything_runs(files, tmp_path):
    art, data = files["art"], files["data"]
    np.savez(tmp_path / "wrong_shape.npz", x=np.zeros((3, 1, 9, 9), np.float32), y=np.zeros(3))
    np.savez(tmp_path / "no_labels.npz", x=np.zeros((3, 1, 8, 8), np.float32))
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 1, 8, 8), np.float32), y=np.zeros(2))
    nan = np.zeros((3, 1, 8, 8), np.float32)
    nan[1, 0, 2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan, y=np.zeros(3))
    bad = {name: tmp_path / f"{name}.npz" for name in ("wrong_shape", "no_labels", "short", "nan")}
    cases = [
        ({"data": bad["wrong_shape"]}, "wrong_shape.npz: input 'input' has shape"),
        ({"data": bad["no_labels"]}, "no_labels.npz: no labels: expected an array named y"),
        ({"data": bad["short"]}, "the inputs hold 3 samples but the labels 2"),
        ({"data": bad["nan"]}, "nan.npz: .*NaN"),
        ({"model": tmp_path / "none.onnx"}, "none.onnx: not found"),
        ({"model": DIGITS / "model.onnx"}, "needs a target .--target"),
        ({"target": "hermes64"}, "compiled for target pcm40, not hermes64"),
        ({"calib": files["calib"]}, "calib applies only to an ONNX model"),
        ({"workers": 2, "scheduler": "tcp://a:1"}, "not both"),
        ({"workers": 0}, "at least one worker"),
        ({"resume": True}, "resume needs the output file"),
        ({"seeds": []}, "at least one chip instance"),
        ({"scheduler": "bogus"}, "cannot connect to the Dask scheduler"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(CimcError, match=msg):
            cimc.sweep(**{"model": art, "data": data, **kwargs})
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(CimcError, match="other.json: not a cimc sweep file"):
        cimc.sweep(art, data, output=tmp_path / "other.json", resume=True)
    with pytest.raises(CimcError, match="other.json: a file is already there.*--force"):
        cimc.sweep(art, data, output=tmp_path / "other.json")
    with pytest.raises(CimcError, match="would replace the input"):
        cimc.sweep(art, data, output=data)


def test_cli_errors_are_one_line(files, tmp_path, monkeypatch):
    base = ["sweep", str(files["art"]), "--data", str(files["data"]),
            "-o", str(tmp_path / "o.json")]
    for extra, msg in [(["--seeds", "3:1"], "the range '3:1' is empty"),
                       (["--plot", str(tmp_path / "p.gif")], "written as .png, .pdf or .svg")]:
        r = CliRunner().invoke(main, base + extra)
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = CliRunner().invoke(main, base + ["--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 1 and "needs matplotlib: pip install 'cimc[bench]'" in r.output
    assert not (tmp_path / "o.json").exists()


def test_plot_of_a_partial_sweep(tmp_path):
    result = SweepResult(model="m.onnx", artifact="0" * 64, target="pcm40",
                         drift_compensation=True, samples=10, data_sha256="0" * 64,
                         times=(0.0, 60.0, 3.15e7), seeds=(0, 1, 2), cimc_version="x",
                         by_seed={0: [0.9, 0.8, 0.7], 2: [0.95, 0.85, 0.6]})
    for name in ("p.svg", "p.pdf", "p.png"):  # a second plot replaces the first
        assert plot_sweep(result, tmp_path / name) == plot_sweep(result, tmp_path / name)
    assert (tmp_path / "p.svg").read_text().startswith("<?xml")
    (tmp_path / "other.png").write_bytes(b"\x89PNG not ours")
    with pytest.raises(CimcError, match="other.png: a file is already there.*--force"):
        plot_sweep(result, tmp_path / "other.png")
    assert plot_sweep(result, tmp_path / "other.png", force=True).read_bytes() != b"\x89PNG"
    assert [r["mean"] for r in result.summary()] == pytest.approx([0.925, 0.825, 0.65])
    empty = SweepResult(**{**result.__dict__, "by_seed": {}})
    assert empty.summary()[0]["mean"] is None
    with pytest.raises(CimcError, match="no chip instance has finished"):
        plot_sweep(empty, tmp_path / "q.png")
