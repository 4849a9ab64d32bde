"""Pass "encrypt": flip the sign bits of a few weights so that the model is useless without the key.

The method is SNNGX (ICCAD 2024, arXiv 2407.15152): a genetic algorithm (``cimc/passes/sign_ga.py``)
picks, among candidate weights, the fewest whose sign flips bring the accuracy down to chance.
The chip decrypts at no cost: a flipped sign swaps the roles of the G+ and G- devices, so the
runtime negates the flipped levels before programming when it has the key.

The IR keeps the true weights: the pass records the flipped positions of each tile as its
``flip`` attribute (a list of ``[row, col]``), and only the emitter writes the flipped levels to
the artifact and the masks to the key (``docs/isa.md``). So the interpreter still computes the
true model, and every pass after this one is checked as usual.

Data. The GA scores genomes on ``samples`` samples of ``ctx.encrypt_data`` (``--encrypt-data
FILE.npz``: one array per model input, batch first, and ``labels``, one integer class per
sample): the fitness uses top-1 accuracy. Without ``labels`` (or without encryption data, on the
calibration inputs ``ctx.calib``) it uses top-1 agreement with the unencrypted model instead,
which the pass pushes down to chance all the same.

Candidates. The whole network is searched (``layers``: ``+``-separated layer names, default all):
each layer contributes its ``ceil(CANDIDATES_PER_BIT * epsilon / layers)`` weights of largest
expected effect, ``|w| * mean|x|`` (the weight's magnitude times the mean magnitude of the input
its row multiplies, on the samples; zero weights never). So every layer can take part, the
genome stays short enough for the GA to converge in its generations, and a flip moves its
column's output as much as a flip can. The input statistics also make the choice harder to
guess for someone who sees only the weights (an attacker who flips back the largest weights
undoes fewer of the flips; benchmarks/encryption.py measures it).

The GA minimises SNNGX's fitness (``epsilon * a`` within the bit budget ``epsilon``, else
``d * (1 + a)``); then flips that can be undone without raising the accuracy are undone. The
result should leave at most ``target_acc`` (default: chance + 5 points, chance being one over the
number of classes); the pass warns when it does not. Everything random comes from ``seed`` (-1:
the pipeline's seed): the same seed gives the same key.
``ctx.encryption`` (an :class:`EncryptSummary`) says what was found (bits per layer, accuracy
before and after on the samples, candidates, evaluations, the GA's time).

Stage: cim (placed, quantised) -> cim (the same, tiles with ``flip``).
Test: tests/passes/test_encrypt.py.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cimc.errors import CimcError
from cimc.ir.core import Func, Module, Op
from cimc.passes.base import Pass, PassContext
from cimc.passes.flip_eval import FlipEvaluator, TileGenes, weight_matrix
from cimc.passes.place import Place
from cimc.passes.quantize import calibration_inputs
from cimc.passes.sign_ga import GAConfig, drop_spare_flips, evolve

# Candidate sign bits per bit of the budget, over the whole network.
CANDIDATES_PER_BIT = 8
LABELS = "labels"


@dataclass
class EncryptionData:
    """The samples the GA scores on: one array per function argument, and the label of each
    sample (None: agreement with the unencrypted model)."""

    inputs: list[np.ndarray]
    labels: np.ndarray | None
    description: str


def encryption_data(func: Func, data: Mapping[str, np.ndarray] | None,
                    calib: Mapping[str, np.ndarray] | None, samples: int) -> EncryptionData:
    """The GA's samples from ``data`` (inputs and ``labels``) or, without it, ``calib``."""
    if data is None and calib is None:
        raise CimcError("encrypt needs data: --encrypt-data FILE.npz with one array per model "
                        f"input ({', '.join(func.input_names)}) and '{LABELS}' (or, without "
                        "labels, it uses the calibration inputs --calib)")
    source = data if data is not None else calib
    assert source is not None
    cal = calibration_inputs(func, source, samples, seed=0, who="encrypt")
    labels = None
    if data is not None and LABELS in data:
        labels = np.asarray(data[LABELS])
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise CimcError(f"encrypt: '{LABELS}' must be a 1-D integer array (one class per "
                            f"sample), got {labels.dtype} {list(labels.shape)}")
        if len(labels) < cal.samples:
            raise CimcError(f"encrypt: '{LABELS}' has {len(labels)} entries for "
                            f"{cal.samples} samples")
        labels = labels[:cal.samples]
    what = "labels" if labels is not None else "top-1 agreement with the unencrypted model"
    where = "--encrypt-data" if data is not None else "the calibration inputs"
    return EncryptionData(cal.arrays, labels, f"{cal.samples} samples of {where}, scored by {what}")


def candidate_genes(tiles: list[Op], per_layer: int,
                    activity: Mapping[Op, np.ndarray] | None = None) -> list[TileGenes]:
    """Each layer's ``per_layer`` nonzero weights of largest ``|w|`` (times the mean |input| of
    their row, ``activity[tile]``, when given), as genes in tile order. Tiles on one crossbar
    (the steps of an unrolled recurrent layer) share its genes."""
    first: dict[tuple[Any, Any], Op] = {}
    for op in tiles:
        first.setdefault((op.attrs.get("core"), op.attrs.get("xbar")), op)
    by_layer: dict[str, list[Op]] = {}
    for op in first.values():
        by_layer.setdefault(str(op.attrs.get("layer", "")), []).append(op)
    chosen: dict[Op, np.ndarray] = {}
    for ops in by_layer.values():
        mags = [(np.abs(weight_matrix(op)) if activity is None else
                 np.abs(weight_matrix(op)) * activity[op][:, None]).ravel() for op in ops]
        tile_of = np.concatenate([np.full(m.size, i) for i, m in enumerate(mags)])
        flat = np.concatenate([np.arange(m.size) for m in mags])
        allm = np.concatenate(mags)
        order = np.argsort(-allm, kind="stable")
        order = order[allm[order] > 0][:per_layer]
        for i, op in enumerate(ops):
            chosen[op] = np.sort(flat[order[tile_of[order] == i]])
    genes: list[TileGenes] = []
    made: dict[Op, TileGenes] = {}
    start = 0
    for op in tiles:
        owner = first[(op.attrs.get("core"), op.attrs.get("xbar"))]
        if owner in made:
            genes.append(TileGenes(op, made[owner].rows, made[owner].cols, made[owner].start))
            continue
        idx = chosen[owner]
        if not idx.size:
            continue
        rows, cols = np.unravel_index(idx, op.attrs["levels"].shape)
        made[owner] = TileGenes(op, rows, cols, start)
        genes.append(made[owner])
        start += idx.size
    return genes


def _threads() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, min(os.cpu_count() or 1, 8))


@dataclass(frozen=True)
class EncryptSummary:
    """What the encrypt pass found: the flipped sign bits (in all and per layer), the accuracy
    (or agreement) on its samples before and after, the target, and what the search cost."""

    bits: int
    candidates: int
    data: str  # the samples the genomes were scored on
    accuracy_before: float
    accuracy_after: float
    target_acc: float
    chance: float
    bits_per_layer: dict[str, int]
    evaluations: int  # distinct genomes scored
    seed: int
    seconds: float  # wall time of the search
    cpu_seconds: float  # its CPU time, all threads

    @property
    def reached(self) -> bool:
        return self.accuracy_after <= self.target_acc


@dataclass
class Encrypt(Pass):
    """Flip the fewest weight signs (picked by a GA) that make the model useless without its key.

    Options: ``epsilon`` (the bit budget), ``target_acc`` (-1: chance + 5 points), ``generations``,
    ``population``, ``samples`` (scored per genome), ``layers`` (``+``-separated names; empty:
    all), ``seed`` (-1: the pipeline's). Data: ``ctx.encrypt_data`` (inputs and ``labels``), else
    ``ctx.calib`` (label-free). Writes ``flip`` on the tiles and ``ctx.encryption``.

    Stage: cim (placed, quantised) -> cim (tiles with ``flip``). Test: tests/passes/test_encrypt.py.
    """

    name = "encrypt"
    requires = (Place,)
    epsilon: int = 64
    target_acc: float = -1.0
    generations: int = 125
    population: int = 100
    samples: int = 128
    layers: str = ""
    seed: int = -1

    @classmethod
    def applied_to(cls, module: Module) -> bool:
        return any(op.attrs.get("flip") for op in module.main.walk())

    def check(self) -> None:
        for key, low in (("epsilon", 1), ("generations", 0), ("population", 2), ("samples", 1)):
            if getattr(self, key) < low:
                raise CimcError(f"encrypt: {key}={getattr(self, key)}; expected at least {low}")
        if self.target_acc != -1.0 and not 0.0 <= self.target_acc <= 1.0:
            raise CimcError(f"encrypt: target_acc={self.target_acc}; expected a share in [0, 1] "
                            "(or -1: chance + 0.05)")

    def run(self, module: Module, ctx: PassContext) -> None:
        self.check()
        func = module.main
        tiles = self._tiles(func)
        data = encryption_data(func, ctx.encrypt_data, ctx.calib, self.samples)
        classes = int(np.prod(func.outputs[0].type.shape[1:], dtype=np.int64)) or 1
        chance = 1.0 / classes
        target = chance + 0.05 if self.target_acc == -1.0 else float(self.target_acc)
        n_layers = len({str(op.attrs.get("layer", "")) for op in tiles})
        per_layer = math.ceil(CANDIDATES_PER_BIT * self.epsilon / n_layers)
        seed = ctx.seed if self.seed == -1 else self.seed
        cfg = GAConfig(self.epsilon, self.population, self.generations, seed=seed)
        start, cpu = time.perf_counter(), time.process_time()
        with threadpool_limits(limits=1, user_api="blas"):
            probe = FlipEvaluator(func, [], data.inputs, data.labels)
            genes = candidate_genes(tiles, per_layer, {op: probe.row_activity(op) for op in tiles})
            n_genes = max((t.stop for t in genes), default=0)
            with FlipEvaluator(func, genes, data.inputs, data.labels, _threads()) as ev:
                before = ev.baseline_accuracy()
                result = evolve(n_genes, ev.accuracy, cfg)
                genome, after = drop_spare_flips(result.genome, ev.accuracy, result.accuracy)
        bits_per_layer: dict[str, int] = {}
        for t in genes:
            on = genome[t.start:t.stop]
            if on.any():
                t.op.attrs["flip"] = sorted([int(r), int(c)] for r, c in
                                            zip(t.rows[on], t.cols[on]))
        for t in {t.start: t for t in genes}.values():  # a shared crossbar once
            layer = str(t.op.attrs.get("layer", ""))
            bits_per_layer[layer] = bits_per_layer.get(layer, 0) + int(genome[t.start:t.stop].sum())
        ctx.encryption = EncryptSummary(
            int(genome.sum()), n_genes, data.description, before, after, target, chance,
            bits_per_layer, result.evaluations, seed, time.perf_counter() - start,
            time.process_time() - cpu)
        if after > target:
            warnings.warn(f"encrypt: {int(genome.sum())} flipped sign bits leave {100 * after:.1f}% "
                          f"on {data.description}, above the target {100 * target:.1f}%; raise "
                          "epsilon, generations or population", stacklevel=2)

    def _tiles(self, func: Func) -> list[Op]:
        tiles = [op for op in func.body.ops if op.name == "cim.xbar_mvm"]
        if not tiles:
            raise CimcError("encrypt: the module has no crossbar tiles; run it after 'tile', "
                            "'place' and 'quantize'")
        unplaced = [op for op in tiles if int(op.attrs.get("xbar", -1)) < 0]
        if unplaced:
            raise CimcError("encrypt: the tiles are not placed on crossbars (the key's masks are "
                            "per crossbar); run 'place' before 'encrypt'")
        if any("flip" in op.attrs for op in tiles):
            raise CimcError("encrypt: the module is already encrypted (tiles carry 'flip')")
        if self.layers:
            names = {str(op.attrs.get("layer", "")) for op in tiles}
            wanted = [n.strip() for n in self.layers.split("+") if n.strip()]
            unknown = [n for n in wanted if n not in names]
            if unknown:
                raise CimcError(f"encrypt: layers {unknown} not found; the crossbar layers are "
                                f"{', '.join(sorted(names))}")
            tiles = [op for op in tiles if str(op.attrs.get("layer", "")) in wanted]
        return tiles
