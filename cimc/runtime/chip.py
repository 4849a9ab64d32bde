"""The public runtime entry: ``load(artifact, seed, key) -> Chip``; ``Chip.run``; ``Chip.report``.

A :class:`Chip` is one simulated chip instance: the artifact plus a seed. Programming noise and
each device's drift exponent are drawn once, when the instance is loaded; read noise is redrawn
at every MVM of every run (its random stream also comes from the seed, so the same seed and the
same sequence of runs give the same numbers); ``t`` is the time since programming, in seconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import ArtifactError, RuntimeInputError
from cimc.runtime.artifact import Artifact, read_artifact
from cimc.runtime.machine import Machine, RunContext, Trace, check_inputs
from cimc.runtime.report import Report, build_report

KeyLike = str | Path | Mapping[str, Any] | None

# Random streams derived from the seed: programming (load) and read noise (runs).
_PROGRAM_STREAM, _READ_STREAM = 0, 1

# A run is split into chunks of the batch whose largest buffer holds about this many elements:
# the temporaries stay in cache-sized, reusable blocks, and chunks run on parallel threads.
CHUNK_ELEMENTS = 1 << 20


def _default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=path)))


def _load_key(key: KeyLike, art: Artifact) -> dict[str, np.ndarray] | None:
    """The sign-flip masks of an encrypted artifact (``xbar/<core>/<x>/flip``), checked."""
    info = art.key_info
    required = bool(info and info.get("required"))
    if key is None:
        if required:
            raise ArtifactError(f"{art.path}: the weights are encrypted; load it with "
                                "key=PATH_TO_KEY.npz (the key made at compile time)")
        return None
    if not required:
        raise ArtifactError(f"{art.path}: this artifact is not encrypted; load it without a key")
    if isinstance(key, str | Path):
        try:
            with np.load(key, allow_pickle=False) as z:
                key = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{key}: cannot read the key as .npz ({e})") from None
    masks = {str(k): np.asarray(v) for k, v in key.items()}
    want = info.get("artifact_hash")
    have = masks.pop("artifact_hash", None)
    if want and have is not None and str(have) != want:
        raise ArtifactError(f"{art.path}: the key belongs to artifact {str(have)[:12]}..., not to "
                            f"this one ({want[:12]}...)")
    bad = [k for k in masks if not (k.startswith("xbar/") and k.endswith("/flip"))]
    if bad:
        raise ArtifactError(f"key: unexpected entries {bad[:3]}; a key holds "
                            "'xbar/<core>/<x>/flip' masks and 'artifact_hash'")
    return masks


class Chip:
    """A programmed chip instance; see the module docstring."""

    def __init__(self, art: Artifact, seed: int = 0, key: KeyLike = None,
                 drift_compensation: bool | None = None, threads: int | None = None) -> None:
        self.artifact = art
        self.target = art.target
        self.seed = int(seed)
        self.drift_compensation = (art.target.device.drift_compensation
                                   if drift_compensation is None else bool(drift_compensation))
        self.machine = Machine(art, _rng(self.seed, _PROGRAM_STREAM), _load_key(key, art))
        self.threads = _default_threads() if threads is None else max(1, int(threads))
        self.runs = 0
        self._trace: Trace | None = None
        self._last_batch = 1
        self._peak_per_sample: float | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def inputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {s.name: (s.shape, s.dtype) for s in self.artifact.inputs}

    @property
    def outputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {s.name: (s.shape, s.dtype) for s in self.artifact.outputs}

    def run(self, inputs: Mapping[str, np.ndarray], t: float = 0.0, *,
            drift_compensation: bool | None = None, noise: bool = True) -> dict[str, np.ndarray]:
        """Execute the core programs on ``inputs`` (name -> array, batch first) at ``t`` seconds
        after programming. ``drift_compensation`` overrides the instance's setting for this run;
        ``noise=False`` skips read noise (programming noise and drift stay).

        The batch is cut into chunks (a fixed function of the batch size, so results do not
        depend on the number of threads); each chunk draws its read noise from its own stream.
        """
        feeds = check_inputs(self.artifact.inputs, inputs)
        comp = self.drift_compensation if drift_compensation is None else bool(drift_compensation)
        tiles = self.machine.tiles_at(t, comp)
        run_index = self.runs
        self.runs += 1
        batch = next(iter(feeds.values())).shape[0] if feeds else 1
        bounds = self._chunks(batch)
        traces = [Trace(b - a) if i == 0 else None for i, (a, b) in enumerate(bounds)]

        def one(i: int) -> dict[str, np.ndarray]:
            a, b = bounds[i]
            ctx = RunContext(tiles, _rng(self.seed, _READ_STREAM, run_index, i), noise)
            return self.machine.execute({k: v[a:b] for k, v in feeds.items()}, ctx, traces[i])

        if len(bounds) == 1:
            parts = [one(0)]
        else:
            parts = list(self._executor().map(one, range(len(bounds))))
        self._trace, self._last_batch = traces[0], batch  # report() scales the first chunk's
        return {s.name: _join([p[s.name] for p in parts]) for s in self.artifact.outputs}

    def _chunks(self, batch: int) -> list[tuple[int, int]]:
        if self._peak_per_sample is None:
            self._peak_per_sample = max(self._dry_trace().peak_per_sample, 1.0)
        size = max(1, int(CHUNK_ELEMENTS // self._peak_per_sample))
        n = math.ceil(batch / size)
        size = math.ceil(batch / n)
        return [(a, min(a + size, batch)) for a in range(0, batch, size)]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cimc-chip")
        return self._pool

    def report(self, batch: int | None = None) -> Report:
        """Crossbars, cores, utilisation, instruction counts, latency, energy and area for a
        batch of ``batch`` inputs (default: the last run's batch, or 1 before any run)."""
        trace = self._trace or self._dry_trace()
        if batch is None:
            batch = self._last_batch
        if batch < 1:
            raise RuntimeInputError(f"report batch must be >= 1, got {batch}")
        return build_report(self.machine, trace, int(batch))

    def _dry_trace(self) -> Trace:
        """Trace one noiseless run on zeros of batch 1 (for shapes; no random stream used)."""
        from cimc.runtime.machine import DTYPES

        feeds = {s.name: np.zeros((1, *s.shape[1:]), DTYPES[s.dtype])
                 for s in self.artifact.inputs}
        ctx = RunContext(self.machine.tiles_at(0.0, False), _rng(0, 99), noise=False)
        trace = Trace(1)
        self.machine.execute(feeds, ctx, trace)
        return trace

    def __repr__(self) -> str:
        return (f"Chip({self.artifact.name!r}, target={self.target.name!r}, seed={self.seed}, "
                f"cores={len(self.machine.codes)}, crossbars={len(self.machine.tiles)})")


def _join(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if np.ndim(parts[0]) == 0:
        return parts[0]
    return np.concatenate(parts, axis=0)


def load(path: str | Path, seed: int = 0, key: KeyLike = None, *,
         drift_compensation: bool | None = None, threads: int | None = None) -> Chip:
    """Read an artifact (``NAME.cimc/`` or ``.cimc.zip``) and program a chip instance.

    ``seed`` fixes the programming noise and drift exponents (and the read-noise stream);
    ``key`` unlocks encrypted weights; ``drift_compensation`` overrides the target's default
    (on for PCM targets); ``threads`` sets how many chunks of a batch run in parallel (default:
    the CPUs available, at most 8).
    """
    return Chip(read_artifact(path), seed=seed, key=key, drift_compensation=drift_compensation,
                threads=threads)
