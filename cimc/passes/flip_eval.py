"""Accuracy of many sign-flip sets at once: the fitness evaluation of the ``encrypt`` pass.

A *genome* is a boolean vector over candidate weights (genes), True where the weight's sign is
flipped. :class:`FlipEvaluator` scores a population of genomes on a fixed set of samples with the
op library's numpy semantics (the interpreter's): ``cim.xbar_mvm`` is DAC -> ``levels * scale``
with the genome's signs flipped -> ADC (``cimc.ops.xbar``). Only the order of the float32 sums
in a tile's product differs from a plain run of the flipped module (see below), which can move
an output across an ADC step on rare ties.

It recomputes as little as it can:

- The unencrypted function runs once, when the evaluator is built, and every value it computes
  is kept for the samples (they are few): a value is recomputed for a genome only when the genome
  flips a gene that the value depends on. So a genome that flips signs only in the last layer
  costs one small product; the activations before the first layer with a flip are reused.
- Within a chunk of genomes, a value is computed once per distinct setting of the genes it
  depends on: genomes that agree on the first layers' genes share those layers' activations.
  The population is sorted so that such genomes share chunks.
- A value's distinct settings are stacked along the batch axis, so every digital op runs once
  over all of them: vectorised over the population.
- A tile computes ``z0 = codes @ W`` (``codes``: its DAC's output) once per distinct input, and
  each setting of its own genes as ``z0 + codes[:, R] @ D``, where ``R`` are the rows holding
  genes and ``D`` has ``-2 w`` at each flipped weight: one matrix product for all settings that
  share the input. A tile reading an im2col gets its DAC codes made before the im2col (the DAC
  is element-wise and maps 0 to 0; the patches are several times larger).

It needs a function whose dimension 0 is a batch axis (``cimc.targets.batching``), which is how it
stacks several settings' samples in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Self

import numpy as np

from cimc.errors import CimcError
from cimc.ir.core import Func, Op, Value
from cimc.ops.xbar import adc, converter_steps, dac_codes
from cimc.passes.quantize import BatchMismatch, evaluate_at_batch
from cimc.targets.batching import analyze_batch

# Largest stacked value of a chunk of genomes, in float32 elements (bounds memory).
CHUNK_ELEMENTS = 1 << 20
# A batch of genomes is cut into at least this many chunks (that many threads can share it).
SPLIT = 4
# The unencrypted activations kept for the samples, at most (bytes).
KEEP_BYTES = 2 << 30


@dataclass(frozen=True, eq=False)
class TileGenes:
    """The candidate weights of one tile: ``rows[i], cols[i]`` is gene ``start + i``."""

    op: Op
    rows: np.ndarray
    cols: np.ndarray
    start: int

    @property
    def stop(self) -> int:
        return self.start + len(self.rows)


def weight_matrix(op: Op) -> np.ndarray:
    """The float32 weights of a ``cim.xbar_mvm`` exactly as its semantics compute them."""
    return op.attrs["levels"].astype(np.float32) * op.attrs["scale"][None, :]


@dataclass
class _Stacked:
    """A value for a chunk of genomes: distinct settings stacked on axis 0, ``samples`` rows
    each; genome ``g`` has block ``index[g]``, or the unencrypted value where that is -1."""

    array: np.ndarray
    index: np.ndarray


@dataclass
class _TileInput:
    """A tile's DAC output for one input block, flattened to ``[M, rows]``, and its products
    with the unencrypted weights."""

    xq: np.ndarray
    y0: np.ndarray  # xq @ W, [M, cols]
    xr: np.ndarray  # xq[:, gene rows]


class FlipEvaluator:
    """Scores genomes: the share of the samples whose top-1 class equals the target's."""

    def __init__(self, func: Func, tiles: Sequence[TileGenes], inputs: Sequence[np.ndarray],
                 targets: np.ndarray | None = None, threads: int = 1) -> None:
        """``inputs``: one array per function argument, the samples along axis 0; ``targets``:
        the label of each sample, or None to score top-1 agreement with the unencrypted
        function; ``threads``: chunks of genomes scored at once (``close()`` stops them)."""
        analysis = analyze_batch(func)
        if analysis.size is None:
            raise CimcError(f"encrypt: the model's dimension 0 is not a batch axis "
                            f"({analysis.reason}); the fitness evaluation needs one")
        self.func = func
        self.compiled = analysis.size
        self.batched = analysis.batched
        self.tiles = {t.op: t for t in tiles}
        self.n_genes = max((t.stop for t in tiles), default=0)
        self.samples = int(inputs[0].shape[0])
        self.ops = [op for op in func.body.ops if op.name != "return"]
        self._deps = self._dependencies()
        self._last = self._last_uses()
        self._predac = self._dac_first()
        self._weights = {t.op: weight_matrix(t.op) for t in tiles}
        self._gene_rows = {t.op: np.unique(t.rows, return_inverse=True) for t in tiles}
        self.base = self._baseline(inputs)
        self.reference = self.predictions(self.base[func.outputs[0]])
        self.targets = self.reference if targets is None else np.asarray(targets)
        self._shared: dict[Op, _TileInput] = {}
        self._chunk = max(1, CHUNK_ELEMENTS // self._peak_per_genome())
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    # ---- set-up
    def _dependencies(self) -> dict[Value, np.ndarray]:
        """For each value, the genes it depends on (ascending)."""
        deps: dict[Value, frozenset[TileGenes]] = {a: frozenset() for a in self.func.args}
        for op in self.ops:
            d: frozenset[TileGenes] = frozenset()
            for inner in op.walk():
                for v in inner.operands:
                    d = d | deps.get(v, frozenset())
            if op in self.tiles:
                if op.parent is not self.func.body:
                    raise CimcError(f"encrypt: tile {op.attrs.get('layer', '')} lies inside a "
                                    "region; only top-level tiles can hold key bits")
                d = d | {self.tiles[op]}
            if d and op.regions:
                raise CimcError(f"encrypt: {op.name} has regions and reads encrypted values; "
                                "choose layers after it (the 'layers' option)")
            for r in op.results:
                deps[r] = d
        empty = np.zeros(0, dtype=np.intp)  # (tiles sharing a crossbar share their genes)
        return {v: np.unique(np.concatenate([empty] + [np.arange(t.start, t.stop) for t in d]))
                for v, d in deps.items()}

    def _last_uses(self) -> dict[int, list[Value]]:
        last: dict[Value, int] = {}
        for i, op in enumerate(self.ops):
            for v in op.operands:
                last[v] = i
        freed: dict[int, list[Value]] = {}
        for v, i in last.items():
            if v not in self.func.outputs:
                freed.setdefault(i, []).append(v)
        return freed

    def _baseline(self, inputs: Sequence[np.ndarray]) -> dict[Value, np.ndarray]:
        """Run the unencrypted function on the samples; keep every value a gene-dependent op
        reads or makes, every tile's input (and the first output)."""
        env: dict[Value, np.ndarray] = dict(zip(self.func.args, inputs))
        keep = {self.func.outputs[0]}
        for op in self.ops:
            if self._deps[op.results[0]].size:
                keep.update(op.operands)
                keep.update(op.results)
            elif op.name == "cim.xbar_mvm":
                keep.add(op.operands[0])
        need = self.samples * sum(np.dtype(v.type.np_dtype).itemsize
                                  * int(np.prod(v.type.shape[1:], dtype=np.int64)) for v in keep)
        if need > KEEP_BYTES:
            raise CimcError(f"encrypt: the activations of {self.samples} samples take "
                            f"{need / 2**30:.1f} GiB; lower 'samples' or encrypt later layers "
                            "only ('layers')")
        for i, op in enumerate(self.ops):
            outs = self._eval(op, [env[v] for v in op.operands], self.samples)
            env.update(zip(op.results, outs))
            for v in self._last.get(i, ()):
                if v not in keep:
                    env.pop(v, None)
        return {v: a for v, a in env.items() if v in keep}

    def _peak_per_genome(self) -> int:
        """The largest gene-dependent value of one genome, in elements."""
        peak = 1
        for op in self.ops:
            for r in op.results:
                if self._deps[r].size:
                    per_sample = int(np.prod(r.type.shape[1:], dtype=np.int64))
                    peak = max(peak, per_sample * self.samples)
        return peak

    def _dac_first(self) -> dict[Value, tuple[int, float, bool]]:
        """The im2col results read only by tiles with one DAC setting: the DAC, element-wise
        with DAC(0) = 0, is applied to the im2col's input instead of its (several times
        larger) patches; the same numbers."""
        users: dict[Value, list[Op]] = {}
        for op in self.ops:
            for v in op.operands:
                users.setdefault(v, []).append(op)
        out = {}
        for op in self.ops:
            if op.name != "cim.im2col":
                continue
            readers = users.get(op.result, [])
            dacs = {(r.attrs["dac_bits"], r.attrs["dac_range"], r.attrs.get("dac_signed", True))
                    for r in readers if r.name == "cim.xbar_mvm"}
            if (readers and len(dacs) == 1 and op.result not in self.func.outputs
                    and all(r.name == "cim.xbar_mvm" for r in readers)):
                out[op.result] = dacs.pop()
        return out

    def _eval(self, op: Op, inputs: list[np.ndarray], batch: int) -> list[np.ndarray]:
        """``op`` with the op library's semantics on a batch of ``batch`` (an im2col feeding
        tiles makes DAC codes, and those tiles take them as such: :meth:`_dac_first`)."""
        if op.results and op.results[0] in self._predac:
            inputs = [dac_codes(inputs[0], *self._predac[op.results[0]])[0]]
        if op.name == "cim.xbar_mvm" and op.operands[0] in self._predac:
            a, codes = op.attrs, inputs[0]
            z = self._dac(op, codes) @ weight_matrix(op)
            z = adc(z, self._dac_step(op), a["adc_bits"], a["adc_range"])
            return [z.reshape(*codes.shape[:-1], z.shape[-1])]
        try:
            return evaluate_at_batch(op, inputs, {}, batch, self.compiled)
        except BatchMismatch:
            raise CimcError(f"encrypt: {op.name} does not follow the batch size; the fitness "
                            "evaluation stacks the samples of several genomes in one batch"
                            ) from None

    def row_activity(self, op: Op) -> np.ndarray:
        """Mean |input| of each row of the top-level tile ``op`` over the samples (unencrypted)."""
        x = self.base[op.operands[0]]
        act = np.abs(x).reshape(-1, x.shape[-1]).mean(axis=0)
        return act * self._dac_step(op) if op.operands[0] in self._predac else act

    # ---- scoring
    def predictions(self, output: np.ndarray) -> np.ndarray:
        return output.reshape(output.shape[0], -1).argmax(axis=1)

    def baseline_accuracy(self) -> float:
        return float(np.mean(self.reference == self.targets))

    def accuracy(self, genomes: np.ndarray) -> np.ndarray:
        """The accuracy of each genome (rows of a boolean ``[n, n_genes]`` array)."""
        genomes = np.asarray(genomes, dtype=bool).reshape(-1, self.n_genes)
        out = np.empty(len(genomes))
        # lexicographic, first genes (first layers) first: shared prefixes share chunks
        order = np.lexsort(genomes.T[::-1]) if self.n_genes else np.arange(len(genomes))
        # at least SPLIT chunks, whatever the number of threads: a genome's numbers never
        # depend on the threads (only on the chunk it shares)
        size = max(1, min(self._chunk, -(-len(order) // SPLIT)))
        chunks = [order[k:k + size] for k in range(0, len(order), size)]
        if self._pool is None or len(chunks) == 1:
            accs = [self._chunk_accuracy(genomes[idx]) for idx in chunks]
        else:  # numpy releases the interpreter lock in the heavy work: threads share the cores
            accs = list(self._pool.map(lambda idx: self._chunk_accuracy(genomes[idx]), chunks))
        for idx, a in zip(chunks, accs):
            out[idx] = a
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _chunk_accuracy(self, genomes: np.ndarray) -> np.ndarray:
        env: dict[Value, _Stacked] = {}
        for i, op in enumerate(self.ops):
            genes = self._deps[op.results[0]]
            if genes.size:
                reps, index = _distinct(genomes[:, genes])
                flipped = genomes[reps][:, genes].any(axis=1)
                if flipped.any():  # else: every genome here leaves this op unencrypted
                    remap = np.where(flipped, np.cumsum(flipped) - 1, -1)
                    reps = reps[flipped]
                    if op in self.tiles:
                        outs = [self._tile(op, env.get(op.operands[0]), genomes, reps)]
                    else:
                        inputs = [self._operand(v, env, reps) for v in op.operands]
                        outs = self._eval(op, inputs, len(reps) * self.samples)
                    for r, a in zip(op.results, outs):
                        env[r] = _Stacked(a, remap[index])
            for v in self._last.get(i, ()):
                env.pop(v, None)
        st = env.get(self.func.outputs[0])
        if st is None:
            return np.full(len(genomes), self.baseline_accuracy())
        pred = self.predictions(st.array).reshape(-1, self.samples)
        per_block = np.append(np.mean(pred == self.targets[None, :], axis=1),
                              self.baseline_accuracy())
        return per_block[st.index]  # index -1: the unencrypted accuracy, last

    def _blocks(self, v: Value, st: _Stacked | None, reps: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, int]:
        """``v``'s blocks ``[B, samples, ...]``, for each genome in ``reps`` its block, and the
        block holding the unencrypted value (-1 if none does)."""
        if st is None:
            return self.base[v][None], np.zeros(len(reps), dtype=np.intp), 0
        blocks = st.array.reshape(-1, self.samples, *st.array.shape[1:])
        index = st.index[reps]
        if not (index < 0).any():
            return blocks, index, -1
        blocks = np.concatenate([blocks, self.base[v][None]])
        return blocks, np.where(index < 0, len(blocks) - 1, index), len(blocks) - 1

    def _operand(self, v: Value, env: dict[Value, _Stacked], reps: np.ndarray) -> np.ndarray:
        """Operand ``v`` for the genomes ``reps``, their samples stacked on axis 0."""
        if v not in self.batched:  # a constant or other batch-free value
            return self.base[v] if v in self.base else _constant(v)
        blocks, index, _ = self._blocks(v, env.get(v), reps)
        if len(index) == len(blocks) and np.array_equal(index, np.arange(len(blocks))):
            return blocks.reshape(-1, *blocks.shape[2:])
        return blocks[index].reshape(-1, *blocks.shape[2:])

    def _tile(self, op: Op, x: _Stacked | None, genomes: np.ndarray, reps: np.ndarray
              ) -> np.ndarray:
        """A tile with genes for the genomes ``reps``: DAC, the products with their flips,
        ADC (cim.xbar_mvm's semantics)."""
        t, a = self.tiles[op], op.attrs
        w = self._weights[op]
        cols = w.shape[1]
        gene_rows, row_of_gene = self._gene_rows[op]
        blocks, index, base = self._blocks(op.operands[0], x, reps)
        lead = blocks.shape[2:-1]
        pre = np.empty((len(reps), blocks[0].size // w.shape[0], cols), np.float32)
        flips = genomes[reps, t.start:t.stop]
        for b in np.unique(index):
            which = np.flatnonzero(index == b)
            if b != base and len(which) == 1:  # one genome on this input: one product
                wu = w.copy()
                on = flips[which[0]]
                wu[t.rows[on], t.cols[on]] *= np.float32(-1)
                pre[which[0]] = self._dac(op, blocks[b]) @ wu
                continue
            inp = (self._shared_input(op, blocks[b]) if b == base
                   else self._products(op, blocks[b]))
            d = np.zeros((len(gene_rows), len(which), cols), np.float32)
            g, k = np.nonzero(flips[which])
            d[row_of_gene[k], g, t.cols[k]] = np.float32(-2) * w[t.rows[k], t.cols[k]]
            delta = inp.xr @ d.reshape(len(gene_rows), -1)
            pre[which] = inp.y0[None] + delta.reshape(-1, len(which), cols).transpose(1, 0, 2)
        out = adc(pre, self._dac_step(op), a["adc_bits"], a["adc_range"])
        return out.reshape(-1, *lead, cols)

    def _dac(self, op: Op, x: np.ndarray) -> np.ndarray:
        """The tile's DAC codes of its input, flattened to ``[M, rows]`` (made already when the
        input is an im2col's patches: see :meth:`_dac_first`)."""
        if op.operands[0] not in self._predac:
            a = op.attrs
            x = dac_codes(x, a["dac_bits"], a["dac_range"], a.get("dac_signed", True))[0]
        return x.reshape(-1, x.shape[-1])

    @staticmethod
    def _dac_step(op: Op) -> float:
        """What one DAC code of the tile is worth (1 without a DAC)."""
        a = op.attrs
        if a["dac_bits"] <= 0:
            return 1.0
        return converter_steps(a["dac_bits"], a["dac_range"], a.get("dac_signed", True))[1]

    def _products(self, op: Op, x: np.ndarray) -> _TileInput:
        xq = self._dac(op, x)
        return _TileInput(xq, xq @ self._weights[op], xq[:, self._gene_rows[op][0]])

    def _shared_input(self, op: Op, x: np.ndarray) -> _TileInput:
        """The tile's unencrypted input and its products, computed once."""
        hit = self._shared.get(op)
        if hit is None:
            hit = self._shared[op] = self._products(op, x)
        return hit


def _constant(v: Value) -> np.ndarray:
    if v.op is not None and v.op.name == "nn.constant":
        return v.op.attrs["value"]
    raise AssertionError(f"value {v} is neither computed nor a constant")


def _distinct(sub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the distinct rows of a boolean matrix: the first row holding each, and for every row
    the index of its distinct row."""
    packed = np.packbits(sub, axis=1)
    keys = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, index = np.unique(keys, return_index=True, return_inverse=True)
    return first, index.ravel()
