"""The similarity rule for filter pruning, as plain numpy (usable from any training loop).

The rule comes from digital RRAM compute-in-memory work (arXiv 2506.13151, "similarity-based
dynamic pruning"). For one layer with ``N`` filters (``weights[i]`` is filter ``i``, any shape):

1. the distance ``d(i, j)`` of every pair of filters, by ``metric``:

   - ``"hamming"``: filters binarised by sign (bit 1 where ``w >= 0``), then the number of bits
     that differ (XOR + popcount, what the chip computes in memory);
   - ``"l2"``: the Euclidean distance between the float filters;
   - ``"cosine"``: ``1 - cos(angle)`` between the float filters (an all-zero filter is at
     distance 1 from every other); it ignores a filter's scale, so a filter and a scaled copy
     of it are at distance 0;

2. ``mu`` and ``var``, the mean and the variance of the ``N (N - 1) / 2`` pair distances;
3. a pair is *close* when ``d(i, j) < mu - b * var``;
4. a filter close to more than ``c * (N - 1)`` others is pruned.

Published defaults (:data:`DEFAULTS`): Hamming ``c = 0.15, b = 0.146``; L2 ``c = 0.45, b = 0.01``.
The paper gives none for cosine; cimc uses ``c = 0.15, b = 4.0`` (Hamming's c): on the trained MNIST
LeNet the cosine distances of a layer's filters have a variance of 0.02 to 0.07, so ``b * var``
puts the "close" threshold 0.1 to 0.3 below the mean, about one standard deviation.

``similarity_mask`` returns the keep-mask for one layer; a training loop zeroes (or masks) the
filters where it is False and keeps training, which is the "dynamic" part. The compile-time pass
``prune-similar`` (``cimc/passes/prune_similar.py``) applies the same rule to trained weights and
removes the filters instead of zeroing them.
"""

from __future__ import annotations

import numpy as np

from cimc.errors import CimcError

METRICS = ("hamming", "l2", "cosine")

# metric -> (c, b): the published defaults (Hamming, L2) and cimc's choice for cosine.
DEFAULTS: dict[str, tuple[float, float]] = {
    "hamming": (0.15, 0.146),
    "l2": (0.45, 0.01),
    "cosine": (0.15, 4.0),
}


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise CimcError(f"unknown similarity metric {metric!r}; choose one of {', '.join(METRICS)}")


def rule_parameters(metric: str, c: float | None = None, b: float | None = None
                    ) -> tuple[float, float]:
    """``(c, b)`` for ``metric``, each taken from :data:`DEFAULTS` when None."""
    _check_metric(metric)
    dc, db = DEFAULTS[metric]
    return (dc if c is None else float(c)), (db if b is None else float(b))


def filter_matrix(weights: np.ndarray) -> np.ndarray:
    """``weights [N, ...]`` as a float64 matrix ``[N, D]``, one filter per row."""
    w = np.asarray(weights)
    if w.ndim < 1:
        raise CimcError(f"filter weights must be [filters, ...], got a scalar of shape {w.shape}")
    return w.reshape(w.shape[0], -1).astype(np.float64)


def pairwise_distances(weights: np.ndarray, metric: str = "hamming") -> np.ndarray:
    """The ``[N, N]`` matrix of distances between the filters ``weights[i]`` (zero diagonal)."""
    _check_metric(metric)
    w = filter_matrix(weights)
    if metric == "hamming":
        signs = np.where(w >= 0, 1.0, -1.0).astype(np.float32)  # exact: integers below 2**24
        d = (w.shape[1] - (signs @ signs.T).astype(np.float64)) / 2  # agree - differ = D - 2 XOR
    elif metric == "l2":
        sq = np.einsum("ij,ij->i", w, w)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (w @ w.T), 0.0))
    else:
        norm = np.linalg.norm(w, axis=1)
        safe = np.where(norm > 0, norm, 1.0)
        cos = (w / safe[:, None]) @ (w / safe[:, None]).T
        d = 1.0 - np.clip(cos, -1.0, 1.0)
        zero = norm == 0
        d[zero, :] = 1.0
        d[:, zero] = 1.0
    np.fill_diagonal(d, 0.0)
    return d


def close_threshold(d: np.ndarray, b: float) -> float:
    """``mu - b * var`` over the pairs ``i < j`` of the distance matrix ``d``."""
    pairs = d[np.triu_indices(len(d), k=1)]
    return float(pairs.mean() - b * pairs.var())


def close_counts(d: np.ndarray, b: float) -> np.ndarray:
    """For every filter, how many others are close to it (``d < mu - b * var``)."""
    n = len(d)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    close = d < close_threshold(d, b)
    np.fill_diagonal(close, False)
    return close.sum(axis=1)


def similarity_mask(
    weights: np.ndarray, metric: str = "hamming", c: float | None = None, b: float | None = None
) -> np.ndarray:
    """The keep-mask of one layer's filters under the similarity rule (module docstring).

    ``weights`` is ``[N, ...]`` (a conv weight ``[out, in, kh, kw]``, a dense weight
    ``[out, in]``); ``c`` and ``b`` default to the metric's :data:`DEFAULTS`. Returns a bool
    array of ``N``: True keeps the filter, False prunes it. A layer keeps at least one filter:
    when the rule marks them all, the one with the fewest close filters (the first of those)
    stays; a layer of fewer than two filters keeps them all.
    """
    c, b = rule_parameters(metric, c, b)
    if c < 0:
        raise CimcError(f"the similarity rule's c must be >= 0, got {c}")
    n = filter_matrix(weights).shape[0]
    if n < 2:
        return np.ones(n, dtype=bool)
    counts = close_counts(pairwise_distances(weights, metric), b)
    keep = counts <= c * (n - 1)
    if not keep.any():
        keep[int(counts.argmin())] = True
    return keep
