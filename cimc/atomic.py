"""Outputs: nothing lost, nothing half-written.

- :func:`check_output` is the one rule for every path cimc is asked to write (``compile -o``,
  ``run -o``, ``opt -o``, ``import -o``, ``--dump-dir``, ``cimc.compile(output=...)``): a path
  that is the current directory or above it, or that holds one of the command's inputs, is
  refused; nothing there, an empty directory, or an output of the same kind that cimc wrote
  (its ``ours`` test: an artifact, an IR file, ...) is fine; anything else is refused, naming
  it, unless ``force``.
- :func:`atomic_path` writes to a temporary sibling and renames it into place when complete: if
  the body raises, the temporary is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cimc.errors import CimcError


def _describe(path: Path) -> str:
    if path.is_dir():
        n = sum(1 for _ in path.iterdir())
        return f"a directory holding {n} entr{'y' if n == 1 else 'ies'}"
    return "a file" if path.is_file() else "something that is not a file"


def check_output(
    path: str | Path,
    what: str,
    *,
    ours: Callable[[Path], bool] | None = None,
    force: bool = False,
    inputs: Iterable[str | Path] = (),
    option: str = "-o",
) -> Path:
    """Check that writing ``what`` (e.g. "the artifact") to ``path`` loses nothing; returns
    ``path``. ``option`` names the flag the path came from in messages."""
    path = Path(path)
    here = Path.cwd().resolve()
    full = path.resolve()
    if path.name in ("", ".", "..") or full == here or full in here.parents:
        raise CimcError(
            f"{option} {path}: {what} would replace the current directory or one above it; "
            "name a new path instead"
        )
    for source in inputs:
        src = Path(source).resolve()
        if src == full or full in src.parents:
            raise CimcError(
                f"{option} {path}: writing {what} there would replace the input {source}; name "
                "another path"
            )
    if not path.exists() and not path.is_symlink():
        return path
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return path
    if force or (ours is not None and ours(path)):
        return path
    raise CimcError(
        f"{option} {path}: {_describe(path)} is already there and it is not {what} cimc wrote; "
        "choose another path, or pass --force to replace it"
    )


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (a file, or a directory with ``directory``); on
    success it replaces whatever ``path`` held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink() or directory and path.exists():
            # a rename cannot replace a directory (or put one over a file): move the old aside
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            path.rename(old / path.name)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
