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

import threading
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

MAP_CACHE = 32  # weight maps kept per Explorer (see Explorer.simplex_map)


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
        self._maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # see simplex_map
        self._maps_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.raw)

    @cached_property
    def trust(self) -> SetTrust:
        """Whether this set lies far from the model's training texts, and which heads follow
        response length (in characters) on it."""
        return assess_set(self.raw, self.frame["response"].str.len().to_numpy(),
                          self.objectives, self.scores.model or "the reward model",
                          distance=self.scores.distance, reference=self.scores.reference)

    @cached_property
    def text(self) -> dict[str, pd.api.extensions.ExtensionArray | np.ndarray]:
        """The frame's text columns, (N,) each, as pandas holds them (Arrow-backed strings):
        ``.take(rows)`` picks rows without converting a string to a Python object and back,
        which is most of a slider move's tables otherwise."""
        return {c: self.frame[c].array
                for c in ("prompt_id", "prompt", "response", "source", "category")}

    @cached_property
    def sources(self) -> pd.Categorical:
        """(N,) each candidate's source, factorized once: the scatter colours by it on every
        slider step."""
        return pd.Categorical(self.frame["source"])

    @cached_property
    def labels(self) -> np.ndarray:
        """(N,) "prompt_id · response" of every candidate, e.g. for hover text."""
        return (self.frame["prompt_id"].astype(str) + " · "
                + self.frame["response"].astype(str)).to_numpy()

    @cached_property
    def _prompt_id_column(self) -> pd.api.extensions.ExtensionArray:
        return self.text["prompt_id"].take(self.selector.pad[:, 0])  # (P,) slot 0: first seen

    @cached_property
    def _prompt_number(self) -> dict[str, int]:
        return {str(p): i for i, p in enumerate(self.prompt_ids)}

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
        constraints as ``choice``.

        Cached (the last `MAP_CACHE` maps): the map depends on the scalarizer, the
        standardization and the constraints, and on the weights only through the other
        objectives' share of them, so with three objectives a move of the sliders finds it
        ready (only the current point moves). The arrays returned are read-only."""
        if len(axes) != 3:
            raise MormError(f"the weight map needs three objectives, got {list(axes)}")
        idx = [self.objectives.index(a) for a in axes]
        w = weight_vector(dict(choice.weights), self.objectives)
        rest = np.delete(w, idx)  # (K - 3,) the other objectives' share: empty when K = 3
        key = (tuple(axes), steps, choice.method, choice.standardized, choice.constraints,
               tuple(rest.tolist()))
        with self._maps_lock:  # one Explorer serves every session (threads) of the app
            if key in self._maps:
                self._maps[key] = self._maps.pop(key)  # most recently used last
                return self._maps[key]
        result = self._simplex_map(choice, idx, w, steps)
        for a in result:
            a.flags.writeable = False  # shared by every later call with this key
        with self._maps_lock:
            self._maps[key] = result
            while len(self._maps) > MAP_CACHE:
                self._maps.pop(next(iter(self._maps)))
        return result

    def _simplex_map(self, choice: Choice, idx: list[int], w: np.ndarray, steps: int
                     ) -> tuple[np.ndarray, np.ndarray]:
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
        t, w = self.text, sel.winners
        scores = self.raw[w]  # (P, K)
        changed = (previous.winners != w) if previous is not None \
            and len(previous.winners) == len(w) else np.zeros(len(w), dtype=bool)
        return pd.DataFrame({
            "prompt_id": self._prompt_id_column, "category": t["category"].take(w),
            "prompt": t["prompt"].take(w), "source": t["source"].take(w),
            "response": t["response"].take(w), "candidate": w,
            **{obj: scores[:, k] for k, obj in enumerate(self.objectives)},
            "utility": sel.utility[w], "feasible": sel.feasible, "changed": changed,
            "n": self.selector.counts})

    def prompt_detail(self, prompt_id: str, sel: Selection) -> pd.DataFrame:
        """Every candidate of one prompt: scores, utility, winner, front membership within the
        prompt, and which of the prompt's candidates dominate it (by candidate index)."""
        p = self._prompt_number.get(str(prompt_id))
        if p is None:
            raise MormError(f"no prompt {prompt_id!r} in this candidate set", field="prompt_id")
        rows = self.selector.pad[p][~self.selector.empty[p]]  # its candidates, in file order
        local = self.raw[rows]
        out = pd.DataFrame({"candidate": rows, "source": self.text["source"].take(rows),
                            "response": self.text["response"].take(rows)})
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
