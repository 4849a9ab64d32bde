"""Accuracy of a classifier on a simulated chip beside onnxruntime's, at several drift times.

The data file is an ``.npz`` with ``x`` (inputs, batch first) and ``y`` (integer labels). The first
``calib_count`` samples calibrate the DAC/ADC ranges and are left out of every accuracy figure, so
calibration never sees the data it is scored on.

The model may also be a compiled artifact (``NAME.cimc`` or ``.cimc.zip``): then it is scored as
it is, on its own target, with ``key`` for an encrypted one (without the key, its scrambled
weights), on the same samples (the first ``calib_count`` left out), and without an
onnxruntime row.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from cimc.errors import CimcError


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


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """The share of samples whose largest output is their label."""
    return float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=1) == labels))


def load_labelled(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise CimcError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise CimcError(f"{path}: expected arrays 'x' (inputs) and 'y' (labels), found {z.files}")
            return z["x"], z["y"]
    except CimcError:
        raise
    except Exception as e:
        raise CimcError(f"{path}: cannot read as .npz ({e})") from None


def evaluate_accuracy(
    model: str | Path,
    data: str | Path,
    target: str = "pcm40",
    times: Sequence[float] = (0.0,),
    seeds: Sequence[int] = (0,),
    calib_count: int = 100,
    key: str | Path | None = None,
) -> Evaluation:
    """Compile ``model`` for ``target`` and score it on the chip at each time in ``times``
    (with and without drift compensation where the target drifts) beside onnxruntime; or score
    an artifact (with ``key`` when it is encrypted); see the module docstring."""
    import cimc
    from cimc.testing import ort_run

    x, y = load_labelled(data)
    if len(x) != len(y):
        raise CimcError(f"{data}: x has {len(x)} samples but y has {len(y)}")
    if not 0 <= calib_count < len(x):
        raise CimcError(f"calibration count {calib_count} must be below the {len(x)} samples in {data}")
    if Path(model).is_dir() or str(model).endswith(".zip"):
        chips = [cimc.load(model, seed=s, key=key) for s in seeds]
        (name, _), = chips[0].inputs.items()
        x_test, y_test = x[calib_count:].astype(np.float32, copy=False), y[calib_count:]
        rows = _chip_rows(chips, name, x_test, y_test, times)
        return Evaluation(chips[0].target.name, len(x_test), calib_count, tuple(seeds), rows)
    if key is not None:
        raise CimcError("a key unlocks a compiled artifact: evaluate NAME.cimc --key NAME.cimc.key")
    proto = onnx.load(str(model))
    inits = {i.name for i in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in inits]
    if len(names) != 1:
        raise CimcError(f"{model}: evaluate needs a model with one input, this one has {names}")
    name = names[0]
    x = x.astype(np.float32, copy=False)
    x_cal, x_test, y_test = x[:calib_count], x[calib_count:], y[calib_count:]

    ref = next(iter(ort_run(proto, {name: x_test}).values()))
    rows = [AccuracyRow("onnxruntime (fp32)", top1(ref, y_test))]
    with tempfile.TemporaryDirectory(prefix="cimc-eval-") as tmp:
        result = cimc.compile(
            proto, target, Path(tmp) / "model.cimc",
            input_shapes={name: (1, *x.shape[1:])},
            calib={name: x_cal} if calib_count else None,
        )
        chips = [cimc.load(result.artifact, seed=s) for s in seeds]
        rows += _chip_rows(chips, name, x_test, y_test, times)
    return Evaluation(chips[0].target.name, len(x_test), calib_count, tuple(seeds), rows)


def _chip_rows(chips: list, name: str, x_test: np.ndarray, y_test: np.ndarray,
               times: Sequence[float]) -> list[AccuracyRow]:
    """Accuracy of the chip instances at each time (with and without drift compensation where
    the target drifts)."""
    rows = []
    drifts = chips[0].target.device.kind == "pcm"
    scrambled = "encrypted, no key: " if chips[0].artifact.key_info and not chips[0].unlocked else ""
    for t in times:
        modes = [True, False] if drifts and t > 0 else [None]
        for comp in modes:
            accs = []
            for chip in chips:
                out = chip.run({name: x_test}, t=float(t), drift_compensation=comp)
                accs.append(top1(next(iter(out.values())), y_test))
            label = f"{scrambled}chip, t = {format_time(float(t))}"
            if comp is not None:
                label += f" (drift compensation {'on' if comp else 'off'})"
            rows.append(AccuracyRow(label, float(np.mean(accs)), float(np.std(accs)), float(t), comp))
    return rows
