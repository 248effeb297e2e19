"""What the Explore page computes: a scored candidate set, prepared once, answering each slider
move with numpy alone.

`Explorer` is built once per (reward model, candidate set): it holds the scores (raw and
standardized), the per-prompt layout for best-of-N (`selection.Selector`) and the Pareto
fronts (moocore), which never depend on the weights. `Explorer.select` scalarizes and picks the
winners under one choice of weights; `Explorer.simplex_map` does it for a whole grid of weight
vectors; `Explorer.winners_table` and `Explorer.prompt_detail` are the tables the page shows;
`Explorer.trust` says how far the scores can be trusted on this set (`reward.trust`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd

from morm_explorer.errors import MormError
from morm_explorer.objectives import (
    Constraint,
    scalarize,
    standardize,
    violation,
    weight_vector,
)
from morm_explorer.pareto import dominators, nondominated
from morm_explorer.reward.trust import SetTrust, assess_set
from morm_explorer.scoring import Scores
from morm_explorer.selection import Selector, embed_grid, simplex_grid


@dataclass(frozen=True)
class Choice:
    """One setting of the page's controls."""

    weights: tuple[tuple[str, float], ...]
    method: str = "weighted_sum"
    standardized: bool = True
    constraints: tuple[Constraint, ...] = ()
    simplex: bool = True

    @classmethod
    def of(cls, weights: Mapping[str, float], method: str = "weighted_sum",
           standardized: bool = True, constraints: Sequence[Constraint] = (),
           simplex: bool = True) -> Choice:
        return cls(tuple((k, float(v)) for k, v in weights.items()), method, standardized,
                   tuple(constraints), simplex)


@dataclass(frozen=True)
class Selection:
    """The outcome of one `Choice`: per-prompt winners and every candidate's utility."""

    choice: Choice
    weights: np.ndarray  # (K,) as used (normalized unless choice.simplex is False)
    utility: np.ndarray  # (N,)
    winners: np.ndarray  # (P,) candidate index per prompt, in Explorer.prompt_ids order
    feasible: np.ndarray  # (P,) False where no candidate met the constraints
    shortfall: np.ndarray | None  # (N,) total violation of the constraints

    @property
    def is_winner(self) -> np.ndarray:
        mask = np.zeros(len(self.utility), dtype=bool)
        mask[self.winners] = True
        return mask


class Explorer:
    """Scores of one candidate set under one reward model, prepared for interactive use."""

    def __init__(self, scores: Scores) -> None:
        self.scores = scores
        self.frame = scores.candidates.frame.reset_index(drop=True)
        self.objectives = list(scores.objectives)
        self.raw = np.asarray(scores.values, dtype=np.float64)  # (N, K)
        self.z = standardize(self.raw, scores.stats) if scores.stats else None
        self.selector = Selector(self.frame["prompt_id"].to_numpy())
        self.prompt_ids = self.selector.prompt_ids
        # Fronts do not depend on the weights: computed once, here.
        self.front = nondominated(self.raw)  # (N,) over the whole set
        self.front_in_prompt = nondominated(self.raw, self.selector.codes)  # (N,) per prompt

    def __len__(self) -> int:
        return len(self.raw)

    @cached_property
    def trust(self) -> SetTrust:
        """Whether this set lies far from the model's training texts, and which heads follow
        response length (in characters) on it."""
        return assess_set(self.raw, self.frame["response"].str.len().to_numpy(),
                          self.objectives, self.scores.model or "the reward model",
                          distance=self.scores.distance, reference=self.scores.reference)

    @property
    def can_standardize(self) -> bool:
        return self.z is not None

    def values(self, standardized: bool) -> np.ndarray:
        """The scores the scalarizers see: z-scores with the model's stats, or raw."""
        if standardized and self.z is None:
            raise MormError("this reward model stores no score statistics to standardize with",
                            field="standardized")
        return self.z if standardized else self.raw

    @lru_cache(maxsize=16)  # noqa: B019 - one Explorer per (model, set) lives in a cache
    def front_of(self, axes: tuple[str, ...]) -> np.ndarray:
        """(N,) the Pareto front over a subset of objectives (e.g. the two on a scatter)."""
        idx = [self.objectives.index(a) for a in axes]
        return nondominated(self.raw[:, idx])

    def select(self, choice: Choice) -> Selection:
        """Winners under one setting of the controls."""
        w = weight_vector(dict(choice.weights), self.objectives, simplex=choice.simplex)
        s = self.values(choice.standardized)
        utility = scalarize(s, w, choice.method)
        shortfall = violation(s, self.objectives, choice.constraints) \
            if choice.constraints else None
        winners = self.selector.winners(utility, self.selector.eligible(shortfall))
        feasible = np.ones(len(winners), dtype=bool) if shortfall is None \
            else shortfall[winners] == 0
        return Selection(choice, w, utility, winners, feasible, shortfall)

    def simplex_map(self, choice: Choice, axes: Sequence[str], steps: int = 10
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The trade-off landscape over three objectives ``axes``: the grid (G, 3) of their
        weights (other objectives keep their current weight) and the mean raw score (G, K)
        of the best-of-N winners under each grid point, with the same scalarizer and
        constraints as ``choice``."""
        if len(axes) != 3:
            raise MormError(f"the weight map needs three objectives, got {list(axes)}")
        idx = [self.objectives.index(a) for a in axes]
        w = weight_vector(dict(choice.weights), self.objectives)
        grid = simplex_grid(3, steps)
        s = self.values(choice.standardized)
        shortfall = violation(s, self.objectives, choice.constraints) \
            if choice.constraints else None
        winners = self.selector.sweep(s, embed_grid(grid, w, idx), choice.method,
                                      eligible=self.selector.eligible(shortfall))
        return grid, self.selector.mean_scores(self.raw, winners)

    def winners_table(self, sel: Selection, previous: Selection | None = None) -> pd.DataFrame:
        """One row per prompt: the winner's text and scores, whether it met the constraints,
        and whether the winner changed since ``previous``."""
        f = self.frame.iloc[sel.winners]
        out = pd.DataFrame({
            "prompt_id": self.prompt_ids, "category": f["category"].to_numpy(),
            "prompt": f["prompt"].to_numpy(), "source": f["source"].to_numpy(),
            "response": f["response"].to_numpy(), "candidate": sel.winners,
        })
        for k, obj in enumerate(self.objectives):
            out[obj] = self.raw[sel.winners, k]
        out["utility"] = sel.utility[sel.winners]
        out["feasible"] = sel.feasible
        out["changed"] = (previous.winners != sel.winners) if previous is not None \
            and len(previous.winners) == len(sel.winners) else False
        out["n"] = np.bincount(self.selector.codes, minlength=len(self.prompt_ids))
        return out

    def prompt_detail(self, prompt_id: str, sel: Selection) -> pd.DataFrame:
        """Every candidate of one prompt: scores, utility, winner, front membership within the
        prompt, and which of the prompt's candidates dominate it (by candidate index)."""
        rows = np.flatnonzero(self.frame["prompt_id"].to_numpy() == prompt_id)
        if len(rows) == 0:
            raise MormError(f"no prompt {prompt_id!r} in this candidate set", field="prompt_id")
        local = self.raw[rows]
        out = pd.DataFrame({"candidate": rows, "source": self.frame["source"].to_numpy()[rows],
                            "response": self.frame["response"].to_numpy()[rows]})
        for k, obj in enumerate(self.objectives):
            out[obj] = local[:, k]
        out["utility"] = sel.utility[rows]
        out["winner"] = np.isin(rows, sel.winners)
        out["on_front"] = self.front_in_prompt[rows]
        out["dominated_by"] = [", ".join(str(rows[j]) for j in dominators(local, i))
                               for i in range(len(rows))]
        if sel.shortfall is not None:
            out["shortfall"] = sel.shortfall[rows]
        return out.sort_values("utility", ascending=False, kind="stable")

    def distribution_stats(self) -> pd.DataFrame:
        """Per-objective mean, std and quantiles of the raw scores over the set."""
        q = np.quantile(self.raw, [0.05, 0.5, 0.95], axis=0)
        return pd.DataFrame({"mean": self.raw.mean(0), "std": self.raw.std(0), "q05": q[0],
                             "median": q[1], "q95": q[2]}, index=self.objectives)
