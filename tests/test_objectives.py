"""Scalarizers and best-of-N: hand-computed cases and a plain loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from morm_explorer.errors import MormError
from morm_explorer.objectives import (
    Constraint,
    best_of_n,
    scalarize,
    standardize,
    violation,
    weight_vector,
)

OBJS = ["helpful", "harmless", "honest"]


def test_weight_vector_normalises_and_validates():
    np.testing.assert_allclose(weight_vector({"helpful": 2, "harmless": 2}, OBJS), [.5, .5, 0])
    np.testing.assert_allclose(weight_vector({"helpful": 2}, OBJS, simplex=False), [2, 0, 0])
    for bad, field in [({"funny": 1}, "weights"), ({"helpful": math.nan}, "weights.helpful"),
                       ({"helpful": math.inf}, "weights.helpful"),
                       ({"helpful": -1}, "weights.helpful"), ({"helpful": 0}, "weights"),
                       ({"helpful": "1"}, "weights.helpful")]:
        with pytest.raises(MormError) as e:
            weight_vector(bad, OBJS)
        assert e.value.field == field


def test_scalarizers_hand_computed():
    s = np.array([[1.0, 0.0, 0.5], [0.6, 0.6, 0.6]])
    w = np.array([0.5, 0.5, 0.0])
    np.testing.assert_allclose(scalarize(s, w), [0.5, 0.6])
    # ideal point z = (1, .6, .6); Chebyshev: -max_k w_k (z_k - s_k)
    np.testing.assert_allclose(scalarize(s, w, "chebyshev"), [-0.3, -0.2])
    np.testing.assert_allclose(scalarize(s, w, "min"), [0.0, 0.6])  # honest has weight 0
    with pytest.raises(MormError):
        scalarize(s, w, "max")


def test_chebyshev_reaches_non_convex_front_point():
    # (0.45, 0.45) lies in a dent of the front: no weighted sum prefers it over both corners,
    # Chebyshev with equal weights does.
    s = np.array([[1.0, 0.0], [0.0, 1.0], [0.45, 0.45]])
    sums = [scalarize(s, np.array([a, 1 - a])).argmax() for a in np.linspace(0, 1, 101)]
    assert 2 not in sums
    assert scalarize(s, np.array([0.5, 0.5]), "chebyshev").argmax() == 2


def test_standardize():
    s = np.array([[1.0, 10.0], [3.0, 30.0]])
    z = standardize(s, {"mean": [2.0, 20.0], "std": [1.0, 10.0]})
    np.testing.assert_allclose(z, [[-1, -1], [1, 1]])


def test_best_of_n_with_constraints_matches_loop():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 3))
    groups = np.repeat(np.arange(40), 5)
    u = scalarize(s, weight_vector({"helpful": 1, "honest": 1}, OBJS))
    v = violation(s, OBJS, [Constraint("harmless", 0.5)])
    got = best_of_n(u, groups, v)
    for g, row in zip(range(40), got.itertuples(), strict=True):
        idx = np.flatnonzero(groups == g)
        feas = idx[v[idx] == 0]
        want = feas[u[feas].argmax()] if len(feas) else idx[np.lexsort((-u[idx], v[idx]))[0]]
        assert row.group == g and row.winner == want and row.feasible == bool(len(feas))
    assert (~got["feasible"]).any() and got["feasible"].any()


def test_constraint_validation():
    with pytest.raises(MormError):
        Constraint("harmless", math.nan)
    with pytest.raises(MormError):
        violation(np.zeros((1, 3)), OBJS, [Constraint("funny", 0.0)])
