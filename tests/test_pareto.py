"""Pareto fronts: hand-computed cases and checks against a plain loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from morm_explorer.errors import MormError
from morm_explorer.pareto import dominators, hypervolume, nondominated, pareto_ranks


def loop_nondominated(s: np.ndarray) -> np.ndarray:
    return np.array([not any((s[j] >= s[i]).all() and (s[j] > s[i]).any()
                             for j in range(len(s))) for i in range(len(s))])


def test_hand_case():
    s = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4], [1.0, 0.0]])
    assert nondominated(s).tolist() == [True, True, True, False, True]
    assert pareto_ranks(s).tolist() == [0, 0, 0, 1, 0]
    assert dominators(s, 3).tolist() == [2]
    assert dominators(s, 0).tolist() == []


@pytest.mark.parametrize("k", [2, 3, 4])
def test_matches_loop(k):
    rng = np.random.default_rng(k)
    s = rng.integers(0, 5, size=(60, k)).astype(float)  # many ties and duplicates
    np.testing.assert_array_equal(nondominated(s), loop_nondominated(s))
    for i in range(len(s)):
        want = [j for j in range(len(s)) if (s[j] >= s[i]).all() and (s[j] > s[i]).any()]
        assert dominators(s, i).tolist() == want


def test_within_groups():
    s = np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    groups = np.array(["p1", "p1", "p2", "p1"])
    assert nondominated(s, groups).tolist() == [False, False, True, True]


def test_one_objective():
    """A reward model with one output: the front is every candidate with the best score (of
    its group), ties included; ranks and hypervolume as with more objectives."""
    s = np.array([[1.0], [3.0], [3.0], [2.0], [0.5]])
    np.testing.assert_array_equal(nondominated(s), loop_nondominated(s))
    assert nondominated(s).tolist() == [False, True, True, False, False]
    groups = np.array(["p1", "p1", "p2", "p2", "p3"])
    assert nondominated(s, groups).tolist() == [False, True, True, False, True]
    assert pareto_ranks(s).tolist() == [2, 0, 0, 1, 3]
    assert hypervolume(s, np.array([0.0])) == pytest.approx(3.0)


def test_hypervolume_hand_computed():
    s = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    # union of rectangles from (0, 0): 1*3 + 1*2 + 1*1 = 6
    assert hypervolume(s, np.zeros(2)) == pytest.approx(6.0)
    assert hypervolume(s, np.array([5.0, 5.0])) == 0.0
    cube = np.array(list(itertools.product([1.0], repeat=3)))
    assert hypervolume(cube, np.zeros(3)) == pytest.approx(1.0)


def test_bad_input():
    with pytest.raises(MormError):
        nondominated(np.array([[np.nan, 1.0]]))
    with pytest.raises(MormError):
        hypervolume(np.ones((2, 2)), np.zeros(3))
