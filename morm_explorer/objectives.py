"""Scalarization of per-objective scores: R = f(r_1, ..., r_K; w), vectorised over candidates.

- weighted sum, R = sum_k w_k r_k (on raw scores, or standardized with a model's stored
  statistics so that objectives on different scales weigh what their weights say);
- Chebyshev, R = -max_k w_k (z_k - r_k) for a reference (ideal) point z: it reaches points in
  non-convex parts of a front that no weighted sum selects (Miettinen 1999, ch. 3.4);
- worst objective, R = min_k r_k over the objectives with non-zero weight;
- constraints "objective >= tau", combined with any of them: among the feasible candidates the
  best R wins; where none is feasible the least-violating candidate wins, and is flagged.

Everything here is numpy over cached scores: a slider move never runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from morm_explorer.errors import MormError

SCALARIZERS = ("weighted_sum", "chebyshev", "min")


@dataclass(frozen=True)
class Constraint:
    """Keep candidates whose score on ``objective`` is at least ``threshold``."""

    objective: str
    threshold: float

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold):
            raise MormError(f"constraint threshold must be a finite number, got "
                            f"{self.threshold!r}", field=f"constraints.{self.objective}")


def weight_vector(weights: Mapping[str, float], objectives: Sequence[str],
                  simplex: bool = True) -> np.ndarray:
    """Weights (K,) in the order of ``objectives``; missing objectives weigh 0. With
    ``simplex`` they are divided by their sum. Unknown names, NaN, infinite or negative
    weights, and all-zero weights are errors."""
    unknown = sorted(set(weights) - set(objectives))
    if unknown:
        raise MormError(f"unknown objectives {unknown}; the scores have {list(objectives)}",
                        field="weights")
    w = np.zeros(len(objectives))
    for k, obj in enumerate(objectives):
        v = weights.get(obj, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MormError(f"weight of {obj!r} must be a finite number, got {v!r}",
                            field=f"weights.{obj}")
        if v < 0:
            raise MormError(f"weight of {obj!r} must be >= 0, got {v}", field=f"weights.{obj}")
        w[k] = v
    if w.sum() <= 0:
        raise MormError("all weights are zero: nothing to trade off", field="weights")
    return w / w.sum() if simplex else w


def standardize(scores: np.ndarray, stats: Mapping[str, Sequence[float]]) -> np.ndarray:
    """(N, K) scores as z-scores with a model's stored per-objective mean and std."""
    mean = np.asarray(stats["mean"], dtype=float)
    std = np.asarray(stats["std"], dtype=float)
    if mean.shape != (scores.shape[1],) or std.shape != mean.shape:
        raise MormError(f"statistics for {len(mean)} objectives, scores have {scores.shape[1]}")
    return (scores - mean) / np.maximum(std, 1e-12)


def scalarize(scores: np.ndarray, weights: np.ndarray, method: str = "weighted_sum",
              reference: np.ndarray | None = None) -> np.ndarray:
    """Utilities (N,) of scores (N, K) under weights (K,); higher is better.

    Chebyshev's reference point defaults to the best score per objective over the candidates
    (the ideal point), so R <= 0 and R = 0 only for a candidate best on every weighted objective.
    """
    s = np.asarray(scores, dtype=float)
    if method == "weighted_sum":
        return s @ weights
    if method == "chebyshev":
        z = s.max(axis=0) if reference is None else np.asarray(reference, dtype=float)
        return -(weights * (z - s)).max(axis=1)
    if method == "min":
        return s[:, weights > 0].min(axis=1)
    raise MormError(f"unknown scalarizer {method!r}; expected one of {', '.join(SCALARIZERS)}",
                    field="scalarizer")


def violation(scores: np.ndarray, objectives: Sequence[str],
              constraints: Sequence[Constraint]) -> np.ndarray:
    """(N,) total shortfall below the constraints' thresholds; 0 means feasible."""
    v = np.zeros(len(scores))
    for c in constraints:
        if c.objective not in objectives:
            raise MormError(f"constraint on unknown objective {c.objective!r}",
                            field="constraints")
        k = list(objectives).index(c.objective)
        v += np.maximum(0.0, c.threshold - scores[:, k])
    return v


def best_of_n(utility: np.ndarray, groups: np.ndarray, shortfall: np.ndarray | None = None
              ) -> pd.DataFrame:
    """The winner per group (prompt): the feasible candidate of highest utility, or, where no
    candidate is feasible, the least-violating one (ties broken by utility).

    Returns one row per group: ``group``, ``winner`` (row index into the candidates) and
    ``feasible`` (False where the winner is a fallback).
    """
    shortfall = np.zeros(len(utility)) if shortfall is None else shortfall
    df = pd.DataFrame({"group": groups, "u": utility, "v": shortfall,
                       "i": np.arange(len(utility))})
    # Sort so that the first row of each group is its winner: least violation, then utility.
    df = df.sort_values(["group", "v", "u"], ascending=[True, True, False], kind="stable")
    first = df.groupby("group", sort=False).head(1)
    return pd.DataFrame({"group": first["group"].to_numpy(), "winner": first["i"].to_numpy(),
                         "feasible": (first["v"] == 0).to_numpy()})
