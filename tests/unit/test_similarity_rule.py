"""cimc.pruning: the similarity rule (arXiv 2506.13151) as numpy, checked on hand-made filters."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.pruning import (
    DEFAULTS,
    close_counts,
    pairwise_distances,
    rule_parameters,
    similarity_mask,
)


def test_published_defaults():
    assert DEFAULTS["hamming"] == (0.15, 0.146)
    assert DEFAULTS["l2"] == (0.45, 0.01)
    assert rule_parameters("l2") == (0.45, 0.01)
    assert rule_parameters("hamming", c=0.3) == (0.3, 0.146)


def test_hamming_is_xor_popcount_of_the_sign_bits():
    w = np.array([[1.0, -2.0, 3.0, 0.0], [-1.0, -2.0, 3.0, 5.0], [-1.0, 2.0, -3.0, -5.0]])
    # sign bits (w >= 0): 1010 (0 counts as non-negative: 1011), 0011, 0100
    d = pairwise_distances(w, "hamming")
    np.testing.assert_array_equal(d, [[0, 1, 4], [1, 0, 3], [4, 3, 0]])


def test_l2_and_cosine_distances():
    w = np.array([[3.0, 4.0], [6.0, 8.0], [0.0, 0.0], [-4.0, 3.0]])
    d = pairwise_distances(w, "l2")
    assert d[0, 1] == pytest.approx(5.0) and d[0, 2] == pytest.approx(5.0)
    c = pairwise_distances(w, "cosine")
    assert c[0, 1] == pytest.approx(0.0, abs=1e-12)  # a scaled copy
    assert c[0, 3] == pytest.approx(1.0)  # orthogonal
    assert c[0, 2] == 1.0 and c[2, 2] == 0.0  # the zero filter: 1 from the others


def test_close_pairs_lie_below_mean_minus_b_variance():
    # four filters on a line at 0, 1, 2, 10: pair distances 1,2,10,1,9,8; mean 31/6
    w = np.array([[0.0], [1.0], [2.0], [10.0]])
    d = pairwise_distances(w, "l2")
    pairs = np.array([1, 2, 10, 1, 9, 8.0])
    b = 0.1
    threshold = pairs.mean() - b * pairs.var()
    assert threshold == pytest.approx(31 / 6 - 0.1 * pairs.var())
    np.testing.assert_array_equal(close_counts(d, b), (d < threshold).sum(1) - (threshold > 0))


def test_a_filter_close_to_more_than_c_n_minus_1_others_is_pruned():
    # 1-D filters: a cluster of three near 0, five more 10 apart
    w = np.array([0.0, 0.001, 0.002, 10, 20, 30, 40, 50]).reshape(8, 1)
    pairs = pairwise_distances(w, "l2")[np.triu_indices(8, k=1)]
    b = (pairs.mean() - 1.0) / pairs.var()  # "close" means closer than 1
    keep = similarity_mask(w, "l2", c=0.2, b=b)  # close to more than 1.4 others: the cluster
    np.testing.assert_array_equal(keep, [False, False, False, True, True, True, True, True])
    assert similarity_mask(w, "l2", c=1.0, b=b).all()  # nobody is close to more than N - 1


def test_one_filter_is_always_kept_and_bad_input_is_refused():
    assert similarity_mask(np.ones((1, 4))).tolist() == [True]
    # b = 0 and c = 0: every filter closer than the mean to another is marked; one stays
    w = np.array([0.0, 1.0, 2.0, 3.0]).reshape(4, 1)
    assert similarity_mask(w, "l2", c=0.0, b=0.0).tolist() == [True, False, False, False]
    with pytest.raises(CimcError, match="unknown similarity metric 'dot'"):
        similarity_mask(np.ones((3, 4)), "dot")
    with pytest.raises(CimcError, match="c must be >= 0"):
        similarity_mask(np.ones((3, 4)), c=-1)
