"""Data files the way users have them: ``.npz`` archives of inputs, and of inputs with labels.

One rule finds a model's inputs in an archive (``--calib`` of compile and opt, ``--data`` of
evaluate): for a model with one input, the array named after that input, or else the only array
that is not a label array (``y``, ``labels``), so ``examples/mnist/test.npz`` (``x``, ``y``)
calibrates the MNIST model as it is; for several inputs, one array named after each. Anything
else is an error that lists what the archive holds.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cimc.errors import CimcError

LABEL_KEYS = ("y", "labels")


def load_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (no pickled objects); ``what`` names the file's
    role in messages (e.g. "calibration data")."""
    path = Path(path)
    if not path.is_file():
        raise CimcError(f"{path}: {what} file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise CimcError(f"{path}: {what} must be an .npz archive of named arrays, not one "
                            "array (.npy); save it with numpy.savez")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise CimcError(f"{path}: cannot read {what} as .npz ({type(e).__name__}: {e})") from None


def npz_names(path: str | Path) -> set[str] | None:
    """The array names in the .npz at ``path`` without reading the arrays; None if it is not
    an .npz."""
    try:
        with zipfile.ZipFile(path) as z:
            return {n.removesuffix(".npy") for n in z.namelist()}
    except (OSError, zipfile.BadZipFile):
        return None


def _holds(arrays: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {list(np.shape(v))}" for k, v in arrays.items()) or "no arrays"


def input_arrays(
    arrays: Mapping[str, np.ndarray], input_names: Sequence[str], source: str
) -> dict[str, np.ndarray]:
    """The arrays of ``arrays`` that feed a model with inputs ``input_names`` (module rule)."""
    names = list(input_names)
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if len(names) == 1:
        rest = [k for k in arrays if k not in LABEL_KEYS]
        if len(rest) == 1:
            return {names[0]: arrays[rest[0]]}
        raise CimcError(
            f"{source}: cannot tell which array holds the model's input '{names[0]}': it holds "
            f"{_holds(arrays)}; name the array '{names[0]}', or keep one array besides the labels "
            f"({', '.join(LABEL_KEYS)})"
        )
    missing = [n for n in names if n not in arrays]
    raise CimcError(
        f"{source}: no array for the model's input(s) {', '.join(missing)}: it holds "
        f"{_holds(arrays)}; a model with several inputs needs one array named after each"
    )


def label_array(arrays: Mapping[str, np.ndarray], source: str) -> np.ndarray:
    """The labels of a labelled data file: the array named ``y`` or ``labels``."""
    for key in LABEL_KEYS:
        if key in arrays:
            return arrays[key]
    raise CimcError(
        f"{source}: no labels: expected an array named {' or '.join(LABEL_KEYS)}; it holds "
        f"{_holds(arrays)}"
    )
