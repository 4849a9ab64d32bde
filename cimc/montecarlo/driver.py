"""``sweep()``: top-1 accuracy of many programmed chip instances at several drift times.

One task is one chip instance (one seed) scored at every time, so its programming noise and
drift exponents are drawn once; its runs go through the times in order. The model is compiled
(an ONNX model) or read (an artifact) once, here; the tasks get the artifact as zip bytes.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.montecarlo.results import SweepResult, is_sweep_file, unfinished

# 0, 1 hour, 1 day, 1 month, 1 year
DEFAULT_TIMES = (0.0, 3600.0, 86400.0, 2.6e6, 3.15e7)


def instance_accuracy(artifact: bytes, x: np.ndarray, y: np.ndarray, seed: int,
                      times: Sequence[float], compensation: bool) -> list[float]:
    """The task: program chip instance ``seed`` from the artifact's zip bytes and score it on
    ``(x, y)`` at each of ``times`` (one worker, no process pool of its own)."""
    from cimc.evaluate import top1
    from cimc.runtime import Chip, read_artifact

    chip = Chip(read_artifact(artifact), seed=seed, drift_compensation=compensation, workers=1)
    name = chip.artifact.inputs[0].name
    return [top1(next(iter(chip.run({name: x}, t=t).values())), y) for t in times]


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: what every task gets, and its empty result (run_sweep fills a copy)."""

    artifact: bytes
    x: np.ndarray
    y: np.ndarray
    result: SweepResult


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0:64"`` (64 excluded), ``"3"``, or comma-separated mixtures: ``"0:8,100,200:204"``."""
    seeds: list[int] = []
    for item in text.split(","):
        a, colon, b = item.strip().partition(":")
        try:
            lo = int(a)
            hi = int(b) if colon else lo + 1
        except ValueError:
            raise CimcError(f"--seeds {text!r}: {item.strip()!r} is not N or A:B (B excluded), "
                            "e.g. 0:64 or 0,5,9") from None
        if hi <= lo:
            raise CimcError(f"--seeds {text!r}: the range {item.strip()!r} is empty")
        seeds.extend(range(lo, hi))
    return _check_seeds(seeds)


def parse_times(text: str) -> tuple[float, ...]:
    """Comma-separated seconds since programming: ``"0,3600,86400,2.6e6,3.15e7"``."""
    try:
        times = [float(v) for v in text.split(",")]
    except ValueError:
        raise CimcError(f"--time {text!r}: expected seconds since programming, comma-separated, "
                        "e.g. 0,3600,86400") from None
    return _check_times(times)


def _check_seeds(seeds: Iterable[int]) -> tuple[int, ...]:
    from cimc.errors import check_seed

    out = tuple(check_seed(s) for s in seeds)
    if not out:
        raise CimcError("seeds: none given; a sweep needs at least one chip instance")
    if len(set(out)) != len(out):
        twice = sorted({s for s in out if out.count(s) > 1})
        raise CimcError(f"seeds: {twice[:5]} given more than once; each seed is one chip instance")
    return out


def _check_times(times: Iterable[float]) -> tuple[float, ...]:
    from cimc.runtime.device import check_time

    out = tuple(check_time(t) for t in times)
    if not out:
        raise CimcError("times: none given; a sweep needs at least one time")
    if len(set(out)) != len(out):
        raise CimcError(f"times: {list(out)} has a time more than once")
    return out


def _zip_directory(path: Path) -> bytes:
    """An artifact directory as the bytes of its ``.cimc.zip`` (files stored, not deflated:
    the weights are compressed already)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            z.write(f, f.relative_to(path).as_posix())
    return buf.getvalue()


def _is_artifact(model: Path) -> bool:
    if not model.exists():
        raise CimcError(f"{model}: not found (expected an ONNX model, a NAME.cimc directory or "
                        "a NAME.cimc.zip)")
    return model.is_dir() or zipfile.is_zipfile(model)


def _compile(model: Path, target: Any, options: Mapping[str, Any]) -> bytes:
    """The zip bytes of ``model`` (ONNX) compiled for ``target`` with compile's ``options``."""
    import cimc

    with tempfile.TemporaryDirectory(prefix="cimc-sweep-") as tmp:
        result = cimc.compile(model, target, Path(tmp) / "model.cimc", **options)
        return _zip_directory(result.artifact)


def prepare(model: str | Path, data: str | Path, target: Any = None,
            seeds: Iterable[int] = range(64), times: Iterable[float] = DEFAULT_TIMES, *,
            drift_compensation: bool | None = None, **compile_options: Any) -> SweepPlan:
    """Check the sweep's inputs, compile or read the model, and load the data; see sweep()."""
    from cimc import __version__
    from cimc.compiler import resolve_target
    from cimc.data import input_arrays, label_array, load_npz
    from cimc.evaluate import single_input
    from cimc.frontend.onnx.importer import load_model
    from cimc.runtime import read_artifact
    from cimc.runtime.machine import DTYPES, check_finite, check_inputs

    seeds, times = _check_seeds(seeds), _check_times(times)
    model = Path(model)
    arrays = load_npz(data, "data")
    y = label_array(arrays, str(data))
    if _is_artifact(model):
        given = [k for k, v in compile_options.items() if v]
        if given:
            raise CimcError(f"{model} is a compiled artifact; {', '.join(given)} appl"
                            f"{'ies' if len(given) == 1 else 'y'} only to an ONNX model")
        art_bytes = _zip_directory(model) if model.is_dir() else model.read_bytes()
        art = read_artifact(art_bytes)
        if target is not None and (wanted := resolve_target(target).name) != art.target.name:
            raise CimcError(f"{model} was compiled for target {art.target.name}, not {wanted}; "
                            "drop --target or recompile")
        if len(art.inputs) != 1:
            raise CimcError(f"{model}: a sweep needs a model with one input, this one has "
                            f"{[s.name for s in art.inputs]}")
        x = input_arrays(arrays, [art.inputs[0].name], str(data))[art.inputs[0].name]
    else:
        if target is None:
            raise CimcError(f"{model}: a sweep of an ONNX model needs a target (--target, a "
                            "profile name such as pcm40, or a .toml)")
        proto, source, _ = load_model(model)
        name = single_input(proto, source, "sweep")
        x = input_arrays(arrays, [name], str(data))[name]
        options = dict(compile_options)
        if not options.get("input_shapes"):  # as evaluate: batch 1 of the data's samples
            options["input_shapes"] = {name: (1, *x.shape[1:])}
        art_bytes = _compile(model, target, options)
        art = read_artifact(art_bytes)
    if len(x) != len(y):
        raise CimcError(f"{data}: the inputs hold {len(x)} samples but the labels {len(y)}")
    if art.key_info is not None:
        raise CimcError(f"{model} is encrypted; a sweep runs unencrypted artifacts only")
    spec = art.inputs[0]
    dtype = DTYPES.get(spec.dtype)
    if dtype is not None and x.dtype.kind == "f" and dtype.kind == "f":
        x = x.astype(dtype, copy=False)
    try:
        check_inputs(art.inputs, {spec.name: x}, art.batch is not None)
        check_finite({spec.name: x})
    except CimcError as e:
        raise CimcError(f"{data}: {e}") from None
    comp = art.target.device.drift_compensation if drift_compensation is None \
        else bool(drift_compensation)
    digest = hashlib.sha256()
    for a in (x, y):
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    result = SweepResult(
        model=model.name, artifact=art.content_hash, target=art.target.name,
        drift_compensation=comp, samples=len(x), data_sha256=digest.hexdigest(),
        times=times, seeds=seeds, cimc_version=__version__)
    return SweepPlan(art_bytes, x, y, result)


def run_sweep(plan: SweepPlan, *, workers: int | None = None, scheduler: str | None = None,
              output: str | Path | None = None, resume: bool = False, force: bool = False,
              progress: bool | None = None,
              task: Callable[..., list[float]] = instance_accuracy) -> SweepResult:
    """Run the plan's instances on Dask (those not already in ``output`` with ``resume``),
    rewriting ``output`` as each finishes. ``task`` is :func:`instance_accuracy` or a stand-in
    with its signature (the tests make one fail)."""
    from cimc.atomic import write_text
    from cimc.montecarlo.engine import dask_client, default_workers, run_tasks
    from cimc.progress import progress as progress_bar

    check_run_options(workers, scheduler, output, resume, force)
    result = replace(plan.result, by_seed={}, failed={})

    def save() -> None:
        if output is not None:
            try:
                write_text(output, result.to_json())
            except OSError as e:
                raise CimcError(f"{output}: cannot write the results ({e.strerror})") from None

    if output is not None:
        output = Path(output)
        if resume and output.exists():
            result.resume_from(output)
        save()
    todo = [s for s in result.seeds if s not in result.by_seed]
    if not todo:
        return result
    n = min(workers or default_workers(), len(todo))
    with dask_client(None if scheduler else n, scheduler, result.cimc_version) as client, \
            progress_bar(len(todo), f"sweep on {result.target}", progress) as bar:
        for seed, accs, error in run_tasks(client, task, todo, (plan.artifact, plan.x, plan.y),
                                           (result.times, result.drift_compensation)):
            if error is None:
                result.by_seed[seed] = accs
            else:
                result.failed[seed] = error
                bar.set_postfix_str(f"{len(result.failed)} failed")
            save()
            bar.update()
    return result


def check_run_options(workers: int | None, scheduler: str | None, output: str | Path | None,
                      resume: bool, force: bool = False, inputs: Sequence[str | Path] = ()
                      ) -> None:
    """Refuse contradictory options, and an output that is not a sweep's results (unless
    ``force``) or holds an unfinished one (unless ``resume`` or ``force``), before anything is
    compiled."""
    from cimc.atomic import check_output

    if workers is not None and scheduler is not None:
        raise CimcError("give either a number of local workers or a scheduler address, not both")
    if workers is not None and workers < 1:
        raise CimcError(f"workers: {workers}; a sweep needs at least one worker")
    if resume and output is None:
        raise CimcError("resume needs the output file of the sweep to resume")
    if output is None or resume:
        return
    if not force and (left := unfinished(Path(output))):
        raise CimcError(f"{output} holds an unfinished sweep ({left}); continue it with "
                        "--resume, or pass --force to start over")
    check_output(output, "a sweep's results", ours=is_sweep_file, force=force, inputs=inputs)


def sweep(model: str | Path, data: str | Path, target: Any = None,
          seeds: Iterable[int] = range(64), times: Iterable[float] = DEFAULT_TIMES, *,
          drift_compensation: bool | None = None,
          input_shapes: Mapping[str, Sequence[int]] | None = None,
          calib: Mapping[str, np.ndarray] | str | Path | None = None, chips: int = 0,
          workers: int | None = None, scheduler: str | None = None,
          output: str | Path | None = None, resume: bool = False, force: bool = False,
          progress: bool | None = None) -> SweepResult:
    """Top-1 accuracy of chip instances ``seeds`` at each of ``times`` (seconds since
    programming) on the labelled ``data`` (an ``.npz`` with ``x`` and ``y``, as evaluate).

    ``model`` is an ONNX model, compiled here for ``target`` (with ``input_shapes``, ``calib``
    and ``chips`` as :func:`cimc.compile`; the input shape defaults to batch 1 of the data's
    samples), or a compiled artifact (``.cimc`` directory or ``.cimc.zip``). ``drift_compensation``
    overrides the target's default. The instances run on Dask: a ``LocalCluster`` of
    ``workers`` processes (default: this machine's CPUs), or the cluster of the scheduler at
    ``scheduler`` (``tcp://HOST:PORT``). With ``output``, the results so far are written there
    (JSON, see :mod:`cimc.montecarlo.results`) as each instance finishes; ``resume`` continues
    the sweep already there; anything else there is refused unless ``force``. An instance that
    fails twice is listed in ``result.failed``.
    """
    check_run_options(workers, scheduler, output, resume, force, inputs=[model, data])
    plan = prepare(model, data, target, seeds, times, drift_compensation=drift_compensation,
                   input_shapes=input_shapes, calib=calib, chips=chips)
    return run_sweep(plan, workers=workers, scheduler=scheduler, output=output, resume=resume,
                     force=force, progress=progress)
