"""The genetic algorithm that picks which sign bits to flip (SNNGX, ICCAD 2024, arXiv 2407.15152).

One gene per candidate sign bit (True: flipped). As in the authors' code:

- the initial population is every candidate flipped, then mutated;
- mutation is one-directional: each flipped gene reverts with probability ``mutation`` (0.05);
  it never flips a gene that is not flipped;
- the fitness, minimised, is ``epsilon * a`` when the genome flips ``d <= epsilon`` bits, else
  ``d * (1 + a)``, where ``a`` is the accuracy (or agreement) the genome leaves;
- each generation keeps the best ``keep`` share (60 %) and fills the population with children
  of two of them (uniform crossover), mutated.

Survivors keep their genomes and fitness, so each generation evaluates only its children (and a
genome seen before is not evaluated again). Everything random comes from ``seed``: the same seed
and the same fitness function give the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Scores a batch of genomes ([n, genes] bool) -> accuracy of each, in [0, 1].
Accuracy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GAConfig:
    epsilon: int
    population: int = 100
    generations: int = 125
    keep: float = 0.6
    mutation: float = 0.05
    seed: int = 0


@dataclass
class GAResult:
    genome: np.ndarray  # the best genome of the last generation
    accuracy: float
    evaluations: int  # genomes scored (distinct)
    history: list[tuple[int, float]] = field(default_factory=list)  # best (bits, accuracy) per gen

    @property
    def bits(self) -> int:
        return int(self.genome.sum())


def fitness(bits: np.ndarray, acc: np.ndarray, epsilon: int) -> np.ndarray:
    """SNNGX's fitness, minimised: ``epsilon * a`` within the bit budget, ``d * (1 + a)`` above."""
    bits = np.asarray(bits, dtype=np.float64)
    return np.where(bits <= epsilon, epsilon * acc, bits * (1.0 + acc))


class _Scored:
    """Accuracy of genomes, each distinct genome evaluated once."""

    def __init__(self, accuracy: Accuracy) -> None:
        self.accuracy = accuracy
        self.seen: dict[bytes, float] = {}

    def __call__(self, genomes: np.ndarray) -> np.ndarray:
        keys = [np.packbits(g).tobytes() for g in genomes]
        todo = {k: i for i, k in enumerate(keys) if k not in self.seen}
        if todo:
            accs = self.accuracy(genomes[list(todo.values())])
            self.seen.update(zip(todo, (float(a) for a in accs)))
        return np.array([self.seen[k] for k in keys])


def evolve(n_genes: int, accuracy: Accuracy, cfg: GAConfig) -> GAResult:
    """Run the GA over ``n_genes`` candidate sign bits; see the module docstring."""
    rng = np.random.default_rng(cfg.seed)
    scored = _Scored(accuracy)
    pop_size = max(2, cfg.population)
    n_keep = min(pop_size - 1, max(2, round(cfg.keep * pop_size)))

    def mutate(genomes: np.ndarray) -> np.ndarray:
        return genomes & (rng.random(genomes.shape) >= cfg.mutation)

    pop = mutate(np.ones((pop_size, n_genes), dtype=bool))
    acc = scored(pop)
    history = []
    for _ in range(cfg.generations):
        order = np.argsort(fitness(pop.sum(axis=1), acc, cfg.epsilon), kind="stable")
        pop, acc = pop[order[:n_keep]], acc[order[:n_keep]]
        history.append((int(pop[0].sum()), float(acc[0])))
        n_child = pop_size - n_keep
        parents = rng.integers(0, n_keep, size=(n_child, 2))
        take_first = rng.random((n_child, n_genes)) < 0.5
        children = mutate(np.where(take_first, pop[parents[:, 0]], pop[parents[:, 1]]))
        pop = np.concatenate([pop, children])
        acc = np.concatenate([acc, scored(children)])
    best = int(np.argsort(fitness(pop.sum(axis=1), acc, cfg.epsilon), kind="stable")[0])
    return GAResult(pop[best].copy(), float(acc[best]), len(scored.seen), history)


def drop_spare_flips(genome: np.ndarray, accuracy: Accuracy, limit: float
                     ) -> tuple[np.ndarray, float]:
    """Fewer bits for the same effect: undo the flips of ``genome`` whose undoing keeps the
    accuracy at or below ``limit``, trying first those that matter least alone (scored in one
    batch), then one at a time; at most twice as many evaluations as flips. Returns the genome
    and its accuracy."""
    genome = genome.copy()
    acc = float(accuracy(genome[None])[0])
    on = np.flatnonzero(genome)
    if acc > limit or len(on) < 2:
        return genome, acc
    trials = np.repeat(genome[None], len(on), axis=0)
    trials[np.arange(len(on)), on] = False
    alone = accuracy(trials)
    for k in on[np.argsort(alone, kind="stable")]:
        if genome.sum() == 1:
            break
        trial = genome.copy()
        trial[k] = False
        a = float(accuracy(trial[None])[0])
        if a <= limit:
            genome, acc = trial, a
    return genome, acc
