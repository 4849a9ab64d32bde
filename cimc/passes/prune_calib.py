"""Calibration statistics for ``prune-similar``: how well one channel's values explain another's.

:func:`observe` runs calibration inputs through the unpruned function in the reference
interpreter and accumulates, at the input of every consumer it is asked about, the first and
second moments of the channel runs (:class:`Moments`, one per run length: a flattened channel is
a run of features, paired element by element with another run of the same length). From them:

:func:`least_squares_fits` finds, for each pruned run ``p``, the kept run ``k`` that explains it
best by least squares, ``y_p ~= alpha * y_k + beta`` (the largest squared correlation), or fits
``y_p`` from all kept runs at once; ``y_p ~= beta`` when no kept run helps (a constant channel).

Stage: nn. Tests: tests/passes/test_prune_similar.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cimc.ir.core import Func, Value
from cimc.ir.interpreter import run_block
from cimc.passes.prune_channels import Layout
from cimc.passes.quantize import calibration_inputs


@dataclass
class Moments:
    """Sums over calibration rows of the runs of one length along a layout's axis: ``starts``
    (element index of each run) with ``chans``; ``s1`` and ``s2`` are the sums of the run values
    and of their outer products, over ``n`` rows (a row: one sample, position and run element)."""

    length: int
    starts: list[int]
    chans: list[int]
    n: int = 0
    s1: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    s2: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def add(self, x: np.ndarray) -> None:
        """``x``: ``[rows, axis size]`` values of the observed tensor."""
        idx = np.asarray(self.starts)[None, :] + np.arange(self.length)[:, None]
        z = x[:, idx].reshape(-1, len(self.starts))  # rows x run element, one run per column
        if self.s1 is None:
            self.s1, self.s2 = z.sum(axis=0), z.T @ z
        else:
            self.s1 += z.sum(axis=0)
            self.s2 += z.T @ z
        self.n += len(z)

    @property
    def mean(self) -> np.ndarray:
        return self.s1 / max(self.n, 1)

    @property
    def cov(self) -> np.ndarray:
        m = self.mean
        return self.s2 / max(self.n, 1) - np.outer(m, m)


def layout_moments(layout: Layout) -> list[Moments]:
    """Empty moments for ``layout``: one per run length."""
    groups: dict[int, Moments] = {}
    for start, seg in zip(layout.starts(), layout.segs):
        m = groups.setdefault(seg.length, Moments(seg.length, [], []))
        m.starts.append(start)
        m.chans.append(seg.chan)
    return list(groups.values())


def observe(func: Func, values: Sequence[Value], layouts: dict[Value, Layout],
            calib: dict | None, samples: int, seed: int) -> dict[Value, list[Moments]]:
    """Moments of each value in ``values`` (its channels as ``layouts`` says) over calibration
    inputs run through ``func`` by the reference interpreter; ``calib`` as ``ctx.calib``
    (None: the quantize pass's documented default, with a warning)."""
    cal = calibration_inputs(func, calib, samples, seed, who="prune-similar")
    if calib is None:
        warnings.warn(f"prune-similar: no calibration data; {cal.description}", stacklevel=3)
    stats = {v: layout_moments(layouts[v]) for v in values}
    ret = func.return_op
    saved = ret.operands
    ret.operands = list(values)  # the interpreter returns what the terminator reads
    try:
        for args in cal.batches(cal.batch):
            for v, a in zip(values, run_block(func.body, args, {})):
                axis = layouts[v].axis
                x = np.moveaxis(np.asarray(a, np.float64), axis, -1).reshape(-1, a.shape[axis])
                for m in stats[v]:
                    m.add(x)
    finally:
        ret.operands = saved
    return stats


@dataclass(frozen=True)
class Fit:
    """``y_p ~= sum(alphas[i] * y_ks[i]) + beta`` for the runs starting at ``p`` and ``ks``
    (``length`` elements each) of a consumer's input; no ``ks``: ``y_p ~= beta``."""

    p: int
    ks: tuple[int, ...]
    alphas: tuple[float, ...]
    length: int
    beta: float


# Ridge term of the many-partner fit, relative to the mean variance of the partners.
RIDGE = 1e-6
# A run that one kept run explains this well (squared correlation) is fitted from that run
# alone, exactly, even with partners = 0 (a duplicated or scaled filter): the ridge would
# otherwise leave a small error there.
EXACT_R2 = 1.0 - 1e-6


def least_squares_fits(stats: list[Moments], pruned: Callable[[int], bool],
                       partners: int = 1) -> list[Fit]:
    """For every pruned run, the least-squares fit from the kept runs of its length: from the
    single run that explains it best (``partners = 1``: the largest squared correlation), or
    from all of them at once (``partners = 0``, a slightly ridged regression; from the best
    single run when that one explains it to within EXACT_R2)."""
    out = []
    for m in stats:
        gone = [i for i, c in enumerate(m.chans) if pruned(c)]
        if not gone:
            continue
        cov, mean = m.cov, m.mean
        var = np.maximum(np.diag(cov), 0.0)
        tiny = 1e-12 * (mean**2 + 1.0)
        kept = [j for j, c in enumerate(m.chans) if not pruned(c) and var[j] > tiny[j]]
        if partners == 0 and kept:
            ckk = cov[np.ix_(kept, kept)]
            ckk = ckk + RIDGE * float(np.trace(ckk)) / len(kept) * np.eye(len(kept))
            alphas = np.linalg.solve(ckk, cov[np.ix_(kept, gone)])  # [kept, gone]
        for n, i in enumerate(gone):
            if var[i] <= tiny[i] or not kept:
                out.append(Fit(m.starts[i], (), (), m.length, float(mean[i])))
                continue
            r2 = cov[i, kept] ** 2 / (var[i] * var[kept])
            if partners == 0 and r2.max() < EXACT_R2:
                a = alphas[:, n]
                out.append(Fit(m.starts[i], tuple(m.starts[j] for j in kept),
                               tuple(float(x) for x in a), m.length,
                               float(mean[i] - a @ mean[kept])))
            else:
                j = kept[int(r2.argmax())]
                alpha = float(cov[i, j] / var[j])
                out.append(Fit(m.starts[i], (m.starts[j],), (alpha,), m.length,
                               float(mean[i] - alpha * mean[j])))
    return out
