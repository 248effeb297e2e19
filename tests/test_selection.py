"""Fast best-of-N selection against the plain pandas reference and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from morm_explorer.objectives import Constraint, best_of_n, scalarize, violation
from morm_explorer.selection import Selector, embed_grid, simplex_grid


def reference_winners(utility, groups, shortfall=None) -> dict:
    ref = best_of_n(utility, groups, shortfall)
    return dict(zip(ref["group"], ref["winner"], strict=True))


LAYOUTS = {
    "blocks": lambda rng, n: np.repeat(np.arange(n // 5), 5),
    "shuffled": lambda rng, n: rng.permutation(np.repeat(np.arange(n // 5), 5)),
    "ragged": lambda rng, n: rng.integers(0, n // 4, n),
    "strings": lambda rng, n: np.array([f"p{i}" for i in rng.integers(0, 30, n)]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_winners_match_reference_with_ties_and_constraints(layout):
    rng = np.random.default_rng(1)
    n = 400
    groups = LAYOUTS[layout](rng, n)
    scores = rng.integers(0, 4, (n, 3)).astype(float)  # many ties and duplicate points
    sel = Selector(groups)
    for method in ("weighted_sum", "chebyshev", "min"):
        u = scalarize(scores, np.array([0.5, 0.3, 0.2]), method)
        ref = reference_winners(u, groups)
        assert dict(zip(sel.prompt_ids, sel.winners(u), strict=True)) == ref
        short = violation(scores, ["a", "b", "c"], [Constraint("a", 2), Constraint("c", 3)])
        ref = reference_winners(u, groups, short)
        got = sel.winners(u, sel.eligible(short))
        assert dict(zip(sel.prompt_ids, got, strict=True)) == ref


def test_prompts_in_first_seen_order_and_hand_case():
    groups = np.array(["b", "a", "b", "a", "c"])
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [2.0, 0.0], [0.0, 0.0]])
    sel = Selector(groups)
    assert sel.prompt_ids.tolist() == ["b", "a", "c"]
    assert sel.winners(scores @ np.array([1.0, 0.0])).tolist() == [0, 3, 4]
    assert sel.winners(scores @ np.array([0.0, 1.0])).tolist() == [2, 1, 4]
    # a tie goes to the candidate that comes first
    assert sel.winners(np.zeros(5)).tolist() == [0, 1, 4]
    # constraint "x >= 1.5": b has no feasible candidate, its least-violating one wins
    short = violation(scores, ["x", "y"], [Constraint("x", 1.5)])
    assert sel.winners(scores @ np.array([0.0, 1.0]), sel.eligible(short)).tolist() \
        == [0, 3, 4]


@pytest.mark.parametrize("layout", ["blocks", "shuffled", "ragged"])
@pytest.mark.parametrize("method", ["weighted_sum", "chebyshev", "min"])
def test_sweep_equals_one_selection_per_grid_point(layout, method):
    rng = np.random.default_rng(2)
    n = 300
    groups = LAYOUTS[layout](rng, n)
    scores = rng.normal(size=(n, 4))
    sel = Selector(groups)
    grid = embed_grid(simplex_grid(3, 5), np.array([0.1, 0.2, 0.3, 0.4]), [0, 2, 3])
    short = violation(scores, list("abcd"), [Constraint("b", 0.0)])
    eligible = sel.eligible(short)
    winners = sel.sweep(scores, grid, method, eligible=eligible)
    assert winners.shape == (sel.n_prompts, len(grid))
    for g, w in enumerate(grid):
        u = scalarize(scores.astype(np.float32), w.astype(np.float32), method)
        assert (sel.winners(u, eligible) == winners[:, g]).all()
    means = sel.mean_scores(scores, winners)
    assert np.allclose(means[3], scores[winners[:, 3]].mean(0))


def test_simplex_grid_and_embedding():
    grid = simplex_grid(3, 10)
    assert grid.shape == (66, 3)
    assert np.allclose(grid.sum(1), 1) and (grid >= 0).all()
    assert len({tuple(r) for r in grid.round(6)}) == 66
    assert simplex_grid(4, 4).shape == (35, 4)
    full = embed_grid(grid, np.array([0.1, 0.2, 0.3, 0.4]), [1, 2, 3])
    assert np.allclose(full[:, 0], 0.1) and np.allclose(full.sum(1), 1)
