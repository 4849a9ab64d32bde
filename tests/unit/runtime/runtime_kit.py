"""Hand-written artifacts for the runtime tests: manifest + core programs + weights.npz, with the
right sha256 of every file (docs/isa.md, "Artifact")."""

from __future__ import annotations

import hashlib
import io
import json
import textwrap
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cimc.targets.schema import load_target


def target_dict(name: str = "ideal", **sections: Mapping[str, Any]) -> dict[str, Any]:
    """A bundled target as a dict, with sections updated: ``costs={"mvm_ns": 1.0}``."""
    d = load_target(name).to_dict()
    for sec, values in sections.items():
        d[sec] = {**d[sec], **values}
    return d


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_artifact(
    path: Path,
    programs: Mapping[int, str],
    weights: Mapping[str, np.ndarray],
    inputs: Sequence[tuple[str, Sequence[int], str]],
    outputs: Sequence[tuple[str, Sequence[int], str]],
    *,
    target: str | dict[str, Any] = "ideal",
    chips: Mapping[int, int] | None = None,
    version: int = 1,
    key: dict[str, Any] | None = None,
    as_zip: bool = False,
    extra_manifest: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``path`` (a NAME.cimc dir, or NAME.cimc.zip with ``as_zip``); programs by core id."""
    files: dict[str, bytes] = {}
    cores = []
    chips = dict(chips or {})
    for core, text in sorted(programs.items()):
        name = f"core_{core:03d}.s"
        files[name] = textwrap.dedent(text).strip("\n").encode() + b"\n"
        n_xbars = sum(1 for line in text.splitlines() if line.strip().startswith(".xbar"))
        cores.append({"id": core, "chip": chips.get(core, 0), "program": name, "xbars": n_xbars})
    files["weights.npz"] = npz_bytes(weights)
    tgt = target_dict(target) if isinstance(target, str) else target
    manifest = {
        "format": "cimc-artifact",
        "version": version,
        "target": tgt,
        "inputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in inputs],
        "outputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in outputs],
        "chips": max(chips.values(), default=0) + 1,
        "cores": cores,
        "layers": [],
        "weights": "weights.npz",
        "key": key,
        "compiler": {"version": "test", "pipeline": ""},
        "files": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())},
        **dict(extra_manifest or {}),
    }
    files["manifest.json"] = json.dumps(manifest, indent=1).encode()
    if as_zip:
        with zipfile.ZipFile(path, "w") as z:
            for name, data in files.items():
                z.writestr(f"{path.name.removesuffix('.zip')}/{name}", data)
        return path
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def single_mvm(path: Path, w: np.ndarray, *, target: str | dict[str, Any] = "ideal",
               dac: tuple[int, float] = (0, 0.0), adc: tuple[int, float] = (0, 0.0),
               levels: np.ndarray | None = None, scale: np.ndarray | None = None) -> Path:
    """One core, one crossbar: ``y = mvm(x)`` with x [N, rows]; w given as float weights
    (levels = w, scale = 1) unless ``levels``/``scale`` are given."""
    rows, cols = w.shape
    lv = w.astype(np.float32) if levels is None else levels
    sc = np.ones(cols, np.float32) if scale is None else scale
    conv = f"dac_bits={dac[0]}, dac_range={dac[1]}, adc_bits={adc[0]}, adc_range={adc[1]}"
    prog = f"""
        .core 0 chip=0
        .xbar 0 rows={rows} cols={cols} layer="fc" tile=[0, 0]
          input a0, name="x"
          mvm   p0, a0, xbar=0, {conv}
          output p0, name="y"
          halt
    """
    return write_artifact(path, {0: prog}, {"xbar/0/0/levels": lv, "xbar/0/0/scale": sc},
                          [("x", (1, rows), "f32")], [("y", (1, cols), "f32")], target=target)
