"""A sweep's results: accuracy per chip instance (seed) and drift time, as JSON that resumes.

The file is rewritten (atomically) as each instance finishes, so it always holds every result
so far. Its fields, in order: ``format``, ``version``, ``cimc_version``, ``model``, ``artifact``
(the content hash of the compiled artifact), ``target``, ``drift_compensation``, ``data``
(``samples`` and the ``sha256`` of the inputs and labels), ``times``, ``seeds``, ``complete``,
``accuracy`` (times x seeds; null where an instance has not finished), ``summary`` (one
``{"time", "mean", "std", "min", "p5"}`` per time, over the finished instances) and ``failed``
(``{"seed", "error"}`` per instance that failed twice). Nothing in it depends on timing or on
the order in which instances finish, so a resumed sweep writes the same file as one that ran
through.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError

FORMAT = "cimc-sweep"
VERSION = 1

# The fields a resumed sweep must share with the file it resumes (seeds may differ: the
# instances both sweeps name are kept).
_IDENTITY = ("version", "cimc_version", "artifact", "target", "drift_compensation", "data", "times")


@dataclass
class SweepResult:
    """Accuracy (fraction correct) of each chip instance at each time; see the module docstring."""

    model: str
    artifact: str
    target: str
    drift_compensation: bool
    samples: int
    data_sha256: str
    times: tuple[float, ...]
    seeds: tuple[int, ...]
    cimc_version: str
    by_seed: dict[int, list[float]] = field(default_factory=dict)  # one accuracy per time
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(s in self.by_seed for s in self.seeds)

    @property
    def accuracy(self) -> list[list[float | None]]:
        """times x seeds; None where an instance has not finished."""
        return [[self.by_seed[s][i] if s in self.by_seed else None for s in self.seeds]
                for i in range(len(self.times))]

    def summary(self) -> list[dict[str, float | None]]:
        """Per time: mean, standard deviation, minimum and 5th percentile over the finished
        instances (None while none has finished)."""
        done = [self.by_seed[s] for s in self.seeds if s in self.by_seed]
        out = []
        for i, t in enumerate(self.times):
            a = np.array([acc[i] for acc in done], dtype=np.float64)
            stats = ((float(a.mean()), float(a.std()), float(a.min()),
                      float(np.percentile(a, 5))) if len(a) else (None,) * 4)
            out.append({"time": t, **dict(zip(("mean", "std", "min", "p5"), stats))})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "cimc_version": self.cimc_version,
            "model": self.model,
            "artifact": self.artifact,
            "target": self.target,
            "drift_compensation": self.drift_compensation,
            "data": {"samples": self.samples, "sha256": self.data_sha256},
            "times": list(self.times),
            "seeds": list(self.seeds),
            "complete": self.complete,
            "accuracy": self.accuracy,
            "summary": self.summary(),
            "failed": [{"seed": s, "error": self.failed[s]} for s in self.seeds
                       if s in self.failed],
        }

    def to_json(self) -> str:
        """JSON with one line per field, per row of ``accuracy`` and per ``summary`` entry."""
        lines = []
        for key, value in self.to_dict().items():
            if key in ("accuracy", "summary", "failed") and value:
                rows = ",\n".join(f"    {json.dumps(v)}" for v in value)
                lines.append(f"  {json.dumps(key)}: [\n{rows}\n  ]")
            else:
                lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def resume_from(self, path: Path) -> None:
        """Take the finished instances of the sweep in ``path`` that this one also names (failed
        ones run again); refuse a file written for another sweep."""
        old = _read(path)
        mine = self.to_dict()
        for key in _IDENTITY:
            if old.get(key) != mine[key]:
                raise CimcError(
                    f"{path}: cannot resume, it holds a sweep with {key} {json.dumps(old.get(key))}"
                    f" but this sweep has {json.dumps(mine[key])}; give another -o, or drop "
                    "--resume to start over")
        for j, seed in enumerate(old["seeds"]):
            column = [row[j] for row in old["accuracy"]]
            if seed in self.seeds and all(v is not None for v in column):
                self.by_seed[seed] = [float(v) for v in column]

    def __str__(self) -> str:
        from cimc.evaluate import format_time

        n = sum(s in self.by_seed for s in self.seeds)
        comp = f", drift compensation {'on' if self.drift_compensation else 'off'}"
        head = (f"{self.model} on {self.target}{comp}: {n} of {len(self.seeds)} chip instances, "
                f"{self.samples} samples each")
        lines = [head, f"{'time':<12}{'mean':>8}{'std':>8}{'min':>8}{'p5':>8}"]
        for row in self.summary():
            cells = "".join(f"{'-' if row[k] is None else f'{100 * row[k]:.2f}':>8}"
                            for k in ("mean", "std", "min", "p5"))
            lines.append(f"{format_time(row['time']):<12}{cells}")
        for seed, err in self.failed.items():
            lines.append(f"seed {seed} failed: {err}")
        return "\n".join(lines)


def is_sweep_file(path: Path) -> bool:
    """Whether ``path`` holds a sweep's results (which a new sweep may replace)."""
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def unfinished(path: Path) -> str | None:
    """How much of an unfinished sweep ``path`` holds ("12 of 64 instances"), or None when it
    is absent, finished, or not a sweep file."""
    try:
        d = json.loads(path.read_text())
        if d.get("format") != FORMAT or d.get("complete") is not False:
            return None
        done = sum(all(row[j] is not None for row in d["accuracy"])
                   for j in range(len(d["seeds"])))
        return f"{done} of {len(d['seeds'])} instances"
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def _read(path: Path) -> dict[str, Any]:
    """A sweep file, checked enough that resume_from can index it."""
    try:
        d = json.loads(path.read_text())
    except OSError as e:
        raise CimcError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise CimcError(f"{path}: not valid JSON ({e}); not a sweep file to resume") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CimcError(f"{path}: not a cimc sweep file (no \"format\": \"{FORMAT}\")")
    seeds, acc = d.get("seeds"), d.get("accuracy")
    ok = (isinstance(seeds, list) and all(isinstance(s, int) for s in seeds)
          and isinstance(acc, list) and len(acc) == len(d.get("times") or [])
          and all(isinstance(row, list) and len(row) == len(seeds) and all(
              v is None or isinstance(v, (int, float)) and math.isfinite(v) for v in row)
              for row in acc))
    if not ok:
        raise CimcError(f"{path}: 'seeds', 'times' and 'accuracy' do not fit together (accuracy "
                        "must be a times x seeds list of numbers or null); not resumable")
    return d
