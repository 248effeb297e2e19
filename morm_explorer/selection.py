"""Best-of-N selection per prompt, fast enough to run on every slider move.

A `Selector` is built once per candidate set: it lays the candidates out as a padded
(P prompts, M slots) grid in prompt order, so that picking each prompt's winner is one
``argmax`` over an axis instead of a group-by. On that layout:

- `Selector.winners`: the winner of every prompt under one utility vector (N,);
- `Selector.eligible`: with constraints, the candidates allowed to win: the feasible ones, or
  where a prompt has none, its least-violating ones (the same rule as `objectives.best_of_n`);
- `Selector.sweep`: the winners under every weight vector of a grid at once, (P, G), and
  `Selector.mean_scores` the mean per-objective score of those winners, (G, K): the data of the
  weight-simplex map ("what would every other choice of weights have selected?").

Ties go to the candidate that comes first in the set, as in `objectives.best_of_n`.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from morm_explorer.errors import MormError
from morm_explorer.objectives import SCALARIZERS


def simplex_grid(k: int = 3, steps: int = 10) -> np.ndarray:
    """Every weight vector (G, k) with entries in {0, 1/steps, ..., 1} summing to 1;
    G = C(steps + k - 1, k - 1) (66 for k=3, steps=10). Built by stars and bars."""
    if k < 1 or steps < 1:
        raise MormError(f"simplex grid needs k >= 1 and steps >= 1, got k={k}, steps={steps}")
    rows = []
    for bars in combinations(range(steps + k - 1), k - 1):
        edges = (-1, *bars, steps + k - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.asarray(rows, dtype=float) / steps


def embed_grid(grid: np.ndarray, weights: np.ndarray, axes: list[int]) -> np.ndarray:
    """Grid points (G, 3) over three objectives ``axes`` as full weight vectors (G, K): the
    other objectives keep their weight in ``weights`` (K,), the three share what is left."""
    w = np.asarray(weights, dtype=float)
    rest = np.delete(np.arange(len(w)), axes)
    out = np.zeros((len(grid), len(w)))
    out[:, rest] = w[rest]
    out[:, axes] = grid * max(0.0, 1.0 - w[rest].sum())
    return out


class Selector:
    """The padded layout of one candidate set's prompts. ``groups`` (N,) names each
    candidate's prompt; prompts are numbered in order of first appearance."""

    def __init__(self, groups: np.ndarray) -> None:
        groups = np.asarray(groups)
        n = len(groups)
        if n == 0:
            raise MormError("no candidates to select from")
        _, first, codes = np.unique(groups, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)  # unique-sorted code -> first-seen order
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        codes = rank[codes.ravel()]
        order = np.argsort(codes, kind="stable")  # candidates grouped, file order within
        counts = np.bincount(codes)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(n) - np.repeat(starts, counts)  # position within its prompt
        self.n, self.n_prompts, self.width = n, len(counts), int(counts.max())
        self.codes = codes  # (N,) prompt number of each candidate
        self.counts = counts  # (P,) candidates per prompt
        self.prompt_ids = groups[np.sort(first)]  # (P,)
        # (P, M) candidate index per slot; n marks an empty slot (a prompt with fewer than M)
        self.pad = np.full((self.n_prompts, self.width), n, dtype=np.int64)
        self.pad[codes[order], slot] = order
        self.empty = self.pad == n
        self.uniform = n == self.n_prompts * self.width
        # None when the candidates already come in prompt blocks (the usual sampled set)
        self.order = None if (order == np.arange(n)).all() else order

    def _padded(self, values: np.ndarray, fill: float) -> np.ndarray:
        """(N, ...) values laid out as (P, M, ...), empty slots set to ``fill``."""
        if self.uniform:  # M candidates per prompt: reorder rows, then a free reshape
            rows = values if self.order is None else values[self.order]
            return rows.reshape(self.n_prompts, self.width, *values.shape[1:])
        ext = np.concatenate([values, np.full((1, *values.shape[1:]), fill, values.dtype)])
        return ext[self.pad]

    def eligible(self, shortfall: np.ndarray | None) -> np.ndarray | None:
        """(N,) True for the candidates that may win under constraints with this total
        shortfall (N,): zero shortfall, or the smallest one of a prompt without a feasible
        candidate. None (no restriction) without constraints."""
        if shortfall is None:
            return None
        v = np.asarray(shortfall, dtype=float)
        least = self._padded(v, np.inf).min(axis=1)  # (P,)
        return v <= least[self.codes]

    def winners(self, utility: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
        """(P,) the index of each prompt's winner under ``utility`` (N,)."""
        u = np.where(eligible, utility, -np.inf) if eligible is not None else utility
        best = np.argmax(self._padded(np.asarray(u, dtype=float), -np.inf), axis=1)  # (P,)
        # slot 0 of every prompt holds a candidate, so an all -inf row still picks a real one
        return self.pad[np.arange(self.n_prompts), best]

    def sweep(self, scores: np.ndarray, grid: np.ndarray, method: str = "weighted_sum",
              reference: np.ndarray | None = None, eligible: np.ndarray | None = None
              ) -> np.ndarray:
        """(P, G) the winners of every prompt under each weight vector of ``grid`` (G, K).

        Utilities are laid out (P, G, M) so the argmax runs over the last, contiguous axis;
        Chebyshev and min reduce one objective at a time instead of building (N, G, K)."""
        s = np.asarray(scores, dtype=np.float32)  # (N, K)
        w = np.asarray(grid, dtype=np.float32)  # (G, K)
        if method not in SCALARIZERS:
            raise MormError(f"unknown scalarizer {method!r}", field="scalarizer")
        sp = self._padded(s, 0.0).transpose(0, 2, 1)  # (P, K, M)
        if method == "weighted_sum":
            # linear in the weights: one batched product for all of them (no threaded BLAS
            # call on a tall (N, K) matrix, which costs more than it saves on a busy machine)
            u = np.matmul(w, sp)  # (P, G, M)
        elif method == "chebyshev":
            z = s.max(axis=0) if reference is None else np.asarray(reference, np.float32)
            gap = z[None, :, None] - sp  # (P, K, M)
            u = w[:, 0, None] * gap[:, None, 0]
            for k in range(1, s.shape[1]):
                np.maximum(u, w[:, k, None] * gap[:, None, k], out=u)
            np.negative(u, out=u)
        else:
            big = np.float32(np.finfo(np.float32).max)
            u = np.full((self.n_prompts, len(w), self.width), big, dtype=np.float32)
            for k in range(s.shape[1]):
                np.minimum(u, np.where(w[:, k, None] > 0, sp[:, None, k], big), out=u)
        if eligible is not None or not self.uniform:  # empty slots and ineligible ones lose
            ok = ~self.empty if eligible is None else self._padded(eligible, False) & ~self.empty
            np.copyto(u, np.float32(-np.inf), where=~ok[:, None, :])
        return np.take_along_axis(self.pad, u.argmax(axis=2), axis=1)  # (P, G)

    def mean_scores(self, scores: np.ndarray, winners: np.ndarray) -> np.ndarray:
        """Mean per-objective score (G, K) of the winners (P, G) of a sweep (or (K,) for the
        winners (P,) of one weight vector)."""
        s = np.asarray(scores)
        # one objective at a time: never a (P, G, K) copy
        return np.stack([s[:, k][winners].mean(axis=0) for k in range(s.shape[1])], axis=-1)
