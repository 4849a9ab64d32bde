"""Accuracy of a classifier on a simulated chip beside onnxruntime's, at several drift times.

The data file is an ``.npz`` of inputs (batch first) and integer labels (``y`` or ``labels``; the
inputs are found by :func:`cimc.data.input_arrays`, e.g. ``x`` beside ``y``). The first
``calib_count`` samples calibrate the DAC/ADC ranges and are left out of every accuracy figure, so
calibration never sees the data it is scored on.

The model may also be a compiled artifact (``NAME.cimc`` or ``.cimc.zip``): it is scored as it
is, on its own target, on the same samples (the first ``calib_count`` left out) and without an
onnxruntime row; ``key`` unlocks an encrypted one (without it, its scrambled weights are scored).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cimc.data import input_arrays, label_array, load_npz
from cimc.errors import CimcError, check_seed


@dataclass(frozen=True)
class AccuracyRow:
    label: str
    accuracy: float  # fraction correct, mean over chip instances
    spread: float = 0.0  # standard deviation over chip instances
    t: float | None = None
    drift_compensation: bool | None = None


@dataclass
class Evaluation:
    target: str
    n_test: int
    n_calib: int
    seeds: tuple[int, ...]
    rows: list[AccuracyRow]

    def __str__(self) -> str:
        n = len(self.seeds)
        lines = [
            f"target {self.target}: {self.n_test} test samples ({self.n_calib} more calibrated the "
            f"converters), {n} chip instance{'s' if n > 1 else ''} (seed{'s' if n > 1 else ''} "
            f"{', '.join(map(str, self.seeds))})",
            f"{'':<44}{'top-1':>8}",
        ]
        for r in self.rows:
            spread = f"  ± {100 * r.spread:.2f}" if n > 1 and r.t is not None else ""
            lines.append(f"{r.label:<44}{100 * r.accuracy:>7.2f}%{spread}")
        return "\n".join(lines)


def format_time(t: float) -> str:
    for unit, s in (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("min", 60)):
        if t >= s:
            v = t / s
            return f"{v:g} {unit}{'s' if v != 1 and unit != 'min' else ''}"
    return f"{t:g} s"


def single_input(proto: Any, source: str, command: str) -> str:
    """The name of the ONNX model's one input (initializers aside); ``command`` needs one."""
    inits = {i.name for i in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in inits]
    if len(names) != 1:
        raise CimcError(f"{source}: {command} needs a model with one input, this one has {names}")
    return names[0]


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of samples whose largest score is at their label's index."""
    hits = np.argmax(logits.reshape(len(labels), -1), axis=1) == labels.reshape(-1)
    return float(np.mean(hits))


def evaluate_accuracy(
    model: str | Path,
    data: str | Path,
    target: str = "pcm40",
    times: Sequence[float] = (0.0,),
    seeds: Sequence[int] = (0,),
    calib_count: int = 100,
    progress: bool | None = None,
    prune: str | None = None,
    key: str | Path | None = None,
) -> Evaluation:
    """Compile ``model`` for ``target`` and score it on the chip at each time in ``times``
    (with and without drift compensation where the target drifts) beside onnxruntime.

    ``data`` is an .npz of inputs and labels (:mod:`cimc.data`'s rule). ``progress``: a bar on
    stderr (None: when it is a terminal and the evaluation lasts more than a couple of seconds).
    ``prune``: prune-similar's options (the calibration samples also fit its compensation).
    ``model`` may be an artifact instead, ``key`` its key (see the module docstring).
    """
    import cimc
    from cimc.compiler import resolve_target
    from cimc.frontend.onnx.importer import load_model
    from cimc.progress import progress as progress_bar
    from cimc.runtime.device import check_time
    from cimc.testing import ort_run

    seeds = [check_seed(s) for s in seeds]
    times = [check_time(t) for t in times]  # before the work, not after compiling
    if not seeds:
        raise CimcError("evaluate needs at least one chip instance seed")
    compiled = Path(model).is_dir() or str(model).endswith(".zip")
    if compiled:
        if prune is not None:
            raise CimcError(f"{model} is compiled already: prune it when compiling")
        probe = cimc.load(model, key=key)
        if len(probe.inputs) != 1:
            raise CimcError(f"{model}: evaluate needs a model with one input, this one has "
                            f"{list(probe.inputs)}")
        (name, _), = probe.inputs.items()
    else:
        if key is not None:
            raise CimcError("a key unlocks a compiled artifact: evaluate NAME.cimc --key "
                            "NAME.cimc.key")
        proto, source, _ = load_model(model)
        name = single_input(proto, source, "evaluate")
    arrays = load_npz(data, "data")
    x = input_arrays(arrays, [name], str(data))[name]
    y = label_array(arrays, str(data))
    if len(x) != len(y):
        raise CimcError(f"{data}: the inputs hold {len(x)} samples but the labels {len(y)}")
    if not 0 <= calib_count < len(x):
        raise CimcError(
            f"calibration count {calib_count} must be below the {len(x)} samples in {data}")
    x = x.astype(np.float32, copy=False)
    x_cal, x_test, y_test = x[:calib_count], x[calib_count:], y[calib_count:]

    def accuracy(logits: np.ndarray) -> float:
        return top1(logits, y_test)

    tgt = probe.target if compiled else resolve_target(target)
    encrypted = compiled and probe.artifact.key_info and key is None
    scrambled = "encrypted, no key: " if encrypted else ""
    drifts = tgt.device.kind == "pcm"

    def modes(t: float) -> list[bool | None]:  # drift compensation on and off, where it matters
        return [True, False] if drifts and t > 0 else [None]

    steps = (0 if compiled else 2) + len(seeds) * (1 + sum(len(modes(t)) for t in times))
    with progress_bar(steps, "evaluate", progress) as bar, \
            tempfile.TemporaryDirectory(prefix="cimc-eval-") as tmp:
        rows, artifact = [], model
        if not compiled:
            bar.set_postfix_str("onnxruntime")
            ref = next(iter(ort_run(proto, {name: x_test}).values()))
            rows.append(AccuracyRow("onnxruntime (fp32)", accuracy(ref)))
            bar.update()
            bar.set_postfix_str("compiling")
            artifact = cimc.compile(
                proto, tgt, Path(tmp) / "model.cimc",
                input_shapes={name: (1, *x.shape[1:])},
                calib={name: x_cal} if calib_count else None, prune=prune,
            ).artifact
            bar.update()
        chips = []
        for s in seeds:
            bar.set_postfix_str(f"programming chip {s}")
            chips.append(cimc.load(artifact, seed=s, key=key))
            bar.update()
        for t in times:
            for comp in modes(t):
                label = f"{scrambled}chip, t = {format_time(t)}"
                if comp is not None:
                    label += f" (drift compensation {'on' if comp else 'off'})"
                accs = []
                for s, chip in zip(seeds, chips):
                    bar.set_postfix_str(f"{label}, seed {s}")
                    out = chip.run({name: x_test}, t=t, drift_compensation=comp)
                    accs.append(accuracy(next(iter(out.values()))))
                    bar.update()
                rows.append(AccuracyRow(label, float(np.mean(accs)), float(np.std(accs)), t, comp))
    return Evaluation(tgt.name, len(x_test), calib_count, tuple(seeds), rows)
