"""The key of an encrypted artifact (docs/isa.md, "Artifact"): written by the compiler, read here.

An encrypted artifact stores a few weights with their sign flipped; its manifest says
``key = {"required": true, "artifact_hash": H, "bits": d}``. The key lives outside the
artifact (``NAME.cimc.key`` beside ``NAME.cimc``), as a plain ``.npz``:

- ``xbar/<core>/<x>/flip``: a boolean ``[rows, cols]`` mask per encrypted crossbar (True: the
  stored level's sign is flipped, so the runtime negates it before programming);
- ``artifact_hash``: the artifact's content hash (:func:`cimc.runtime.artifact.content_hash`),
  which must equal the artifact's own;
- ``digest``: the sha256 of the hash and the masks, so a damaged key is refused.

Loading an encrypted artifact without its key works: the chip runs the scrambled weights (that
is what someone who reads the conductances gets). A key for another artifact, a damaged key or a
mask that fits no crossbar is refused before anything is programmed.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import ArtifactError
from cimc.runtime.artifact import Artifact

KeyLike = str | Path | Mapping[str, Any] | None

HASH, DIGEST = "artifact_hash", "digest"
FLOAT_WEIGHT_BITS = 32  # a weight stored as a float (targets with weight_bits = 0)


def key_path(artifact: str | Path) -> Path:
    """Where the compiler writes the key of ``artifact``: ``NAME.cimc.key`` beside it."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".key")


def is_key(path: str | Path) -> bool:
    """``path`` is a key file cimc wrote (an .npz with an artifact hash and a digest)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = {n.removesuffix(".npy") for n in z.namelist()}
    except (OSError, zipfile.BadZipFile):
        return False
    return {HASH, DIGEST} <= names


def mask_name(core: int, xbar: int) -> str:
    return f"xbar/{core}/{xbar}/flip"


def distinct_weights(xbars: Iterable[tuple[int, int, str, Sequence[int]]]) -> set[tuple[int, int]]:
    """Of the crossbars ``(core, index, layer, tile)``, those that hold each weight of the model
    once, as ``(core, index)``: the copies the replicate pass makes of a tile (the same layer
    and tile position, the same weights and flips) count once. A crossbar without a layer name
    counts alone."""
    first: dict[tuple[Any, ...], tuple[int, int]] = {}
    for core, index, layer, tile in xbars:
        group = (layer, tuple(tile)) if layer else (core, index)
        first.setdefault(group, (core, index))
    return set(first.values())


def distinct_crossbars(art: Artifact) -> dict[tuple[int, int], Any]:
    """The declarations (``.xbar``) of the crossbars of ``art`` that hold each weight of the
    model once (:func:`distinct_weights`), by ``(core, index)`` in order."""
    decls = {(c, x): d for c, prog in art.programs.items() for x, d in prog.xbars.items()}
    kept = distinct_weights((c, x, d.layer, d.tile) for (c, x), d in decls.items())
    return {k: decls[k] for k in sorted(kept)}


def flipped_bits(flips: Mapping[str, np.ndarray],
                 xbars: Iterable[tuple[int, int, str, Sequence[int]]]) -> int:
    """The model's weights whose signs ``flips`` (masks by :func:`mask_name`) flip, each once
    (:func:`distinct_weights`)."""
    return int(sum(int(flips[mask_name(c, x)].sum()) for c, x in distinct_weights(xbars)
                   if mask_name(c, x) in flips))


def key_digest(artifact_hash: str, masks: Mapping[str, np.ndarray]) -> str:
    """sha256 over the artifact hash and every mask (name, shape and bits), in name order."""
    h = hashlib.sha256(artifact_hash.encode())
    for name in sorted(masks):
        m = np.asarray(masks[name], dtype=bool)
        h.update(f"\n{name} {list(m.shape)}\n".encode())
        h.update(np.packbits(m).tobytes())
    return h.hexdigest()


def write_key(path: str | Path, masks: Mapping[str, np.ndarray], artifact_hash: str) -> None:
    """Write the key file (``.npz``: masks, the artifact hash and the digest) at ``path``."""
    arrays: dict[str, np.ndarray] = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
    arrays[HASH] = np.array(artifact_hash)
    arrays[DIGEST] = np.array(key_digest(artifact_hash, masks))
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def read_key(key: KeyLike, art: Artifact) -> dict[str, np.ndarray] | None:
    """The flip masks of ``key`` (a path to the ``.npz`` or a dict of arrays) for ``art``,
    checked; None without a key."""
    info = art.key_info
    if key is None:
        return None
    if not (info and info.get("required")):
        raise ArtifactError(f"{art.path}: this artifact is not encrypted; load it without a key")
    where = str(key) if isinstance(key, str | Path) else "key"
    if isinstance(key, str | Path):
        if not Path(key).is_file():
            raise ArtifactError(f"{key}: key file not found")
        try:
            with np.load(key, allow_pickle=False) as z:
                key = {k: z[k] for k in z.files}
        except Exception as e:
            raise ArtifactError(f"{where}: cannot read the key as .npz ({e}); is it damaged?"
                                ) from None
    masks = {str(k): np.asarray(v) for k, v in key.items()}
    have, digest = masks.pop(HASH, None), masks.pop(DIGEST, None)
    if have is not None and str(have) != art.content_hash:
        raise ArtifactError(f"{where}: the key belongs to artifact {str(have)[:12]}..., not to "
                            f"{art.path.name} ({art.content_hash[:12]}...)")
    bad = [k for k in masks if not (k.startswith("xbar/") and k.endswith("/flip"))]
    if bad:
        raise ArtifactError(f"{where}: unexpected entries {bad[:3]}; a key holds "
                            f"'xbar/<core>/<x>/flip' masks, '{HASH}' and '{DIGEST}'")
    shapes = {mask_name(c, x): (d.rows, d.cols)
              for c, prog in art.programs.items() for x, d in prog.xbars.items()}
    for name, m in masks.items():
        if name not in shapes:
            raise ArtifactError(f"{where}: '{name}' names no crossbar of {art.path.name}; is it "
                                "the key of another artifact?")
        if m.shape != shapes[name] or m.dtype.kind not in "biu":
            raise ArtifactError(f"{where}: '{name}' is {m.dtype} {list(m.shape)}, expected a "
                                f"boolean mask {list(shapes[name])}")
        if m.dtype.kind != "b" and not np.isin(m, (0, 1)).all():
            raise ArtifactError(f"{where}: '{name}' holds values other than 0 and 1")
    masks = {k: v.astype(bool) for k, v in masks.items()}
    if digest is not None and str(digest) != key_digest(str(have or ""), masks):
        raise ArtifactError(f"{where}: the key is damaged (its digest does not match its masks)")
    return masks


@dataclass(frozen=True)
class Encryption:
    """How an artifact's weights are encrypted, for the report."""

    bits: int  # the model's weights stored with their sign flipped (copies count once)
    weights: int  # the model's weights on the crossbars (each has a sign bit; copies once)
    weight_bits: int  # bits per weight on the target
    unlocked: bool  # the chip was programmed with the key

    @property
    def fraction(self) -> float:
        """The encrypted bits' share of all weight bits."""
        total = self.weights * self.weight_bits
        return self.bits / total if total else 0.0

    @property
    def key_space_bits(self) -> float:
        """log2 of the number of ways to choose ``bits`` flipped signs among the weights."""
        n, k = self.weights, self.bits
        if not 0 <= k <= n:
            return 0.0
        return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)

    def to_dict(self) -> dict[str, Any]:
        return {"bits": self.bits, "weights": self.weights, "weight_bits": self.weight_bits,
                "fraction": self.fraction, "key_space_bits": self.key_space_bits,
                "unlocked": self.unlocked}

    def __str__(self) -> str:
        state = ("key given: the true weights are programmed" if self.unlocked else
                 "NO KEY: the chip runs the scrambled weights")
        return (f"encrypted: {self.bits} sign bits flipped, {100 * self.fraction:.4f}% of "
                f"{self.weights * self.weight_bits:,} weight bits, key space "
                f"{self.key_space_bits:.0f} bits; {state}")


def encryption_info(art: Artifact, unlocked: bool) -> Encryption | None:
    """The encryption of ``art`` (None when it is not encrypted)."""
    info = art.key_info
    if not (info and info.get("required")):
        return None
    weights = sum(d.rows * d.cols for d in distinct_crossbars(art).values())
    bits = int(art.target.crossbar.weight_bits) or FLOAT_WEIGHT_BITS
    return Encryption(int(info.get("bits", 0)), weights, bits, unlocked)
