"""Reading an artifact: ``NAME.cimc/`` directory or ``NAME.cimc.zip`` (docs/isa.md, "Artifact").

:func:`read_artifact` checks the format and version, that every file the manifest needs is
present and listed in its ``files`` table, and the sha256 of each listed file; then it parses the
manifest, the core programs and ``weights.npz`` (``allow_pickle=False``). Every failure is an
:class:`cimc.errors.ArtifactError` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cimc.errors import ArtifactError, TargetError
from cimc.runtime.program import Program, parse_program
from cimc.targets.schema import Target

FORMAT = "cimc-artifact"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, shape (batch first) and IR dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class CoreInfo:
    id: int
    chip: int
    program: str
    xbars: int


@dataclass(frozen=True)
class Artifact:
    """Everything the runtime reads from an artifact, checked and parsed."""

    path: Path
    manifest: dict[str, Any]
    target: Target
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cores: tuple[CoreInfo, ...]
    programs: dict[int, Program]  # by core id
    weights: dict[str, np.ndarray]
    files: dict[str, str]  # name -> sha256

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def batch(self) -> int | None:
        """The compiled batch size when dimension 0 of every input and output is a batch of
        independent samples the runtime may vary and split (the manifest's ``batch``); None when
        the programs must run exactly the compiled shapes. An artifact without the field (written
        by hand) is taken as batch-first with the first input's dimension 0."""
        if "batch" in self.manifest:
            b = self.manifest["batch"]
            return None if b is None else int(b)
        return self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None

    @property
    def chips(self) -> int:
        return int(self.manifest.get("chips") or (max(c.chip for c in self.cores) + 1))

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers") or [])

    @property
    def key_info(self) -> dict[str, Any] | None:
        return self.manifest.get("key")

    @property
    def content_hash(self) -> str:
        return content_hash(self.files)


def content_hash(files: dict[str, str]) -> str:
    """sha256 over the sorted (file, sha256) table: identifies an artifact's contents."""
    text = "\n".join(f"{k} {v}" for k, v in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def is_artifact(path: str | Path) -> bool:
    """``path`` is an artifact directory and holds nothing else (what ``cimc compile -o`` may
    replace without ``--force``): a cimc manifest and only the files it lists."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        listed = set(manifest["files"]) | {MANIFEST}
        return manifest["format"] == FORMAT and {p.name for p in path.iterdir()} <= listed
    except (OSError, ValueError, KeyError, TypeError):
        return False


# ------------------------------------------------------------------------------ file access


class _Files:
    """Raw bytes of the artifact's files, from a directory or a zip."""

    def __init__(self, path: Path, data: bytes | None = None) -> None:
        self.path = path
        self._zip: dict[str, bytes] | None = None
        if data is not None:  # a zip held in memory
            self._zip = self._read_zip(io.BytesIO(data), path)
            return
        if path.is_dir():
            return
        if not path.exists():
            raise ArtifactError(f"{path}: artifact not found (expected a NAME.cimc directory or a "
                                "NAME.cimc.zip file written by 'cimc compile')")
        if not zipfile.is_zipfile(path):
            raise ArtifactError(f"{path}: not an artifact (neither a directory nor a zip file)")
        self._zip = self._read_zip(path, path)

    @staticmethod
    def _read_zip(source: Path | io.BytesIO, path: Path) -> dict[str, bytes]:
        try:
            with zipfile.ZipFile(source) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
                manifests = [n for n in names if PurePosixPath(n).name == MANIFEST
                             and len(PurePosixPath(n).parts) <= 2]
                if len(manifests) != 1:
                    raise ArtifactError(
                        f"{path}: expected exactly one {MANIFEST} at the top of the zip or in "
                        f"one top-level folder, found {len(manifests)}")
                prefix = str(PurePosixPath(manifests[0]).parent)
                prefix = "" if prefix == "." else prefix + "/"
                return {n[len(prefix):]: z.read(n) for n in names if n.startswith(prefix)}
        except (zipfile.BadZipFile, OSError) as e:
            raise ArtifactError(f"{path}: cannot read the zip file ({e})") from None

    def exists(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._zip
        return (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if not self.exists(name):
            raise ArtifactError(f"{self.path}: missing file '{name}'; the artifact is incomplete, "
                                "recompile it")
        if self._zip is not None:
            return self._zip[name]
        try:
            return (self.path / name).read_bytes()
        except OSError as e:
            raise ArtifactError(f"{self.path}/{name}: cannot read ({e.strerror})") from None


# ------------------------------------------------------------------------------ manifest checks


def _err(path: Path, where: str, msg: str) -> ArtifactError:
    return ArtifactError(f"{path}/{where}: {msg}")


def _require(m: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path,
             what: str) -> Any:
    if key not in m:
        raise _err(path, MANIFEST, f"missing key '{key}' ({what})")
    value = m[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _err(path, MANIFEST, f"'{key}' must be {what}, got {json.dumps(value)[:80]}")
    return value


def _check_format(m: dict[str, Any], path: Path) -> None:
    fmt = m.get("format")
    if fmt != FORMAT:
        raise _err(path, MANIFEST, f"format is {json.dumps(fmt)}, expected \"{FORMAT}\"; this is "
                   "not a cimc artifact")
    version = m.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise _err(path, MANIFEST, f"unknown format version {json.dumps(version)}; this runtime "
                   f"reads version(s) {', '.join(map(str, SUPPORTED_VERSIONS))}: recompile the "
                   "model with this cimc, or use the cimc that wrote it")


def _safe_name(name: str, path: Path) -> str:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        raise _err(path, MANIFEST, f"'files' lists an unsafe path {name!r}")
    return name


def _check_files(m: dict[str, Any], files: _Files, path: Path) -> dict[str, str]:
    table = _require(m, "files", dict, path, "a table of file name -> sha256")
    out = {}
    for name, digest in table.items():
        _safe_name(name, path)
        if not isinstance(digest, str) or len(digest) != 64:
            raise _err(path, MANIFEST, f"files['{name}'] must be a sha256 hex digest")
        data = files.read(name)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest.lower():
            raise _err(path, name, f"sha256 mismatch (manifest says {digest[:12]}..., file has "
                       f"{actual[:12]}...): the file was modified or corrupted after "
                       "compilation; recompile or restore it")
        out[name] = actual
    return out


def _tensor_specs(m: dict[str, Any], key: str, path: Path) -> tuple[TensorSpec, ...]:
    items = _require(m, key, list, path, "a list of {name, shape, dtype}")
    out = []
    for i, item in enumerate(items):
        ok = (isinstance(item, dict) and isinstance(item.get("name"), str)
              and isinstance(item.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in item["shape"])
              and isinstance(item.get("dtype"), str))
        if not ok:
            raise _err(path, MANIFEST, f"{key}[{i}] must be {{name: str, shape: [int], dtype: "
                       f"str}}, got {json.dumps(item)[:120]}")
        out.append(TensorSpec(item["name"], tuple(item["shape"]), item["dtype"]))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise _err(path, MANIFEST, f"{key} has duplicate names: {names}")
    return tuple(out)


def _cores(m: dict[str, Any], path: Path) -> tuple[CoreInfo, ...]:
    items = _require(m, "cores", list, path, "a list of {id, chip, program, xbars}")
    out = []
    for i, c in enumerate(items):
        ok = (isinstance(c, dict) and isinstance(c.get("id"), int)
              and isinstance(c.get("program"), str) and isinstance(c.get("chip", 0), int)
              and isinstance(c.get("xbars", 0), int))
        if not ok:
            raise _err(path, MANIFEST, f"cores[{i}] must be {{id: int, chip: int, program: "
                       f"str, xbars: int}}, got {json.dumps(c)[:120]}")
        out.append(CoreInfo(c["id"], c.get("chip", 0), _safe_name(c["program"], path),
                            c.get("xbars", 0)))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise _err(path, MANIFEST, f"duplicate core ids in 'cores': {ids}")
    if not out:
        raise _err(path, MANIFEST, "'cores' is empty; an artifact needs at least one core")
    return tuple(out)


def _target(m: dict[str, Any], path: Path) -> Target:
    data = _require(m, "target", dict, path, "the resolved target description (a table)")
    try:
        return Target.from_dict(data, source=f"{path}/{MANIFEST}: target")
    except TargetError as e:
        raise ArtifactError(str(e)) from None


def _weights(name: str, data: bytes, path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise _err(path, name, f"cannot be read without pickle ({e}); artifacts hold plain "
                   "arrays only") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise _err(path, name, f"not a valid .npz file ({e})") from None


# ------------------------------------------------------------------------------ entry point


def read_artifact(path: str | Path | bytes) -> Artifact:
    """Read and check an artifact; see the module docstring. ``bytes`` are the contents of a
    ``.cimc.zip`` held in memory (an artifact sent to another machine); its errors name it
    ``<bytes>``."""
    if isinstance(path, bytes):
        files = _Files(Path("<bytes>"), path)
    else:
        files = _Files(Path(path))
    path = files.path
    raw = files.read(MANIFEST)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _err(path, MANIFEST, f"not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise _err(path, MANIFEST, "must hold a JSON object")
    _check_format(manifest, path)
    checked = _check_files(manifest, files, path)
    cores = _cores(manifest, path)
    weights_name = manifest.get("weights", "weights.npz")
    needed = [weights_name] + [c.program for c in cores]
    for name in needed:
        if name not in checked:
            if not files.exists(name):
                raise ArtifactError(f"{path}: missing file '{name}'; the artifact is "
                                    "incomplete, recompile it")
            raise _err(path, MANIFEST, f"'files' has no sha256 for '{name}'; refusing an "
                       "unchecked file")
    target = _target(manifest, path)
    programs = {}
    for c in cores:
        try:
            text = files.read(c.program).decode("utf-8")
        except UnicodeDecodeError:
            raise _err(path, c.program, "is not UTF-8 text") from None
        prog = parse_program(text, file=c.program)
        if prog.core != c.id:
            raise _err(path, c.program, f"says '.core {prog.core}' but the manifest lists it for "
                       f"core {c.id}")
        if prog.chip != c.chip:
            raise _err(path, c.program, f"says chip={prog.chip} but the manifest puts core {c.id} "
                       f"on chip {c.chip}")
        programs[c.id] = prog
    return Artifact(
        path=path,
        manifest=manifest,
        target=target,
        inputs=_tensor_specs(manifest, "inputs", path),
        outputs=_tensor_specs(manifest, "outputs", path),
        cores=cores,
        programs=programs,
        weights=_weights(weights_name, files.read(weights_name), path),
        files=checked,
    )
