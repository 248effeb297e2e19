"""Pareto fronts of per-objective scores (all objectives maximised), by moocore.

Non-dominated sets and ranks over the whole set or within each prompt's candidates, the
candidates that dominate a given one, and hypervolume against a reference point. moocore's C
implementations (O(n log n) for K <= 3) replace any hand-written O(n^2) loop.
"""

from __future__ import annotations

import moocore
import numpy as np

from morm_explorer.errors import MormError


def _check(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[1] < 1:
        raise MormError(f"scores must be an (N, K) array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise MormError("scores contain NaN or infinite values")
    return s


def nondominated(scores: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """(N,) True where no other candidate (of the same group, if given) is at least as good on
    every objective and better on one. Duplicates of a front point all count as on the front."""
    s = _check(scores)
    if len(s) == 0:
        return np.zeros(0, dtype=bool)
    if s.shape[1] == 1:  # one objective (moocore wants two): the front is the best score
        codes = (np.zeros(len(s), dtype=int) if groups is None
                 else np.unique(np.asarray(groups), return_inverse=True)[1].ravel())
        best = np.full(codes.max() + 1, -np.inf)
        np.maximum.at(best, codes, s[:, 0])
        return s[:, 0] == best[codes]
    if groups is None:
        return moocore.is_nondominated(s, maximise=True, keep_weakly=True)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    return moocore.is_nondominated_within_sets(s, sets=codes, maximise=True, keep_weakly=True)


def pareto_ranks(scores: np.ndarray) -> np.ndarray:
    """(N,) non-dominated sorting: 0 for the front, 1 for the front of the rest, ..."""
    s = _check(scores)
    return moocore.pareto_rank(s, maximise=True) if len(s) else np.zeros(0, dtype=int)


def dominators(scores: np.ndarray, i: int) -> np.ndarray:
    """Indices of the candidates that dominate candidate ``i`` (>= everywhere, > somewhere)."""
    s = _check(scores)
    ge = (s >= s[i]).all(axis=1)
    gt = (s > s[i]).any(axis=1)
    return np.flatnonzero(ge & gt)


def hypervolume(scores: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by the candidates and bounded below by ``reference`` (K,), which every
    counted point must exceed on all objectives (points that do not are ignored)."""
    s = _check(scores)
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (s.shape[1],) or not np.isfinite(ref).all():
        raise MormError(f"reference point must be {s.shape[1]} finite numbers, got {ref}")
    inside = (s > ref).all(axis=1)
    if not inside.any():
        return 0.0
    return float(moocore.hypervolume(s[inside], ref=ref, maximise=True))
