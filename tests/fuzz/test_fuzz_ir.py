"""Fuzzing the IR parser and verifier: mutated real dumps give a CimcError or verify, nothing else.

The dumps are the IR before and after every pass of compiling the seed models (seeds.py). Each
case applies one to three seeded edits (mutate.mutate_text: byte flips, deleted, duplicated and
swapped lines, swapped and deleted tokens, odd characters, huge numbers and dimensions, other
attribute values, op names, value references and dtypes). Replay a failing seed with ``case``.
"""

from __future__ import annotations

import numpy as np
import pytest
from mutate import mutate_text, run_cases
from seeds import seed_dumps

from cimc.errors import CimcError
from cimc.ir.parser import parse_module
from cimc.ir.verify import verify

CASES = 1200


def _dumps() -> list[tuple[bytes, dict[str, np.ndarray]]]:
    return list({text: (text, res) for text, res in seed_dumps()}.values())


def case(seed: int) -> tuple[bytes, dict[str, np.ndarray]]:
    dumps = _dumps()
    text, resources = dumps[seed % len(dumps)]
    return mutate_text(np.random.default_rng(seed), text), resources


def _parse_and_verify(subject: tuple[bytes, dict[str, np.ndarray]]) -> None:
    data, resources = subject
    verify(parse_module(data, resources, filename="fuzz.cir"))


def test_every_seed_dump_parses_and_verifies():
    dumps = _dumps()
    assert len(dumps) >= 10
    for text, resources in dumps:
        _parse_and_verify((text, resources))


@pytest.mark.parametrize("part", range(3))
def test_mutated_dumps_give_cimc_errors_only(part):
    seeds = range(part * CASES // 3, (part + 1) * CASES // 3)
    failures = run_cases(seeds, case, _parse_and_verify, CimcError)
    assert not failures, f"{len(failures)} case(s) raised something else:\n" + "\n".join(failures[:20])
