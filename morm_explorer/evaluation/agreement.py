"""Statistics of a rating session: win rates, inter-rater agreement and agreement with a
reward model.

Pure functions first, each checked against hand-computed cases in the tests:

- `wilson_interval`: the Wilson score interval of a proportion (Wilson 1927);
- `cohen_kappa`: Cohen's kappa of two raters, (p_o - p_e) / (1 - p_e) (Cohen 1960);
- `fleiss_kappa`: Fleiss' kappa of an items x categories count table (Fleiss 1971), with each
  item's agreement computed from its own number of ratings, so items may have different
  numbers of raters (equal numbers give Fleiss' formula exactly);
- `krippendorff_alpha_nominal`: Krippendorff's alpha for nominal data from a coincidence
  matrix, which handles missing ratings (Krippendorff 2011, "Computing Krippendorff's
  alpha-reliability").

`results` applies them to a session's votes. scipy has no kappa, hence the implementations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from statistics import NormalDist

import numpy as np
import pandas as pd

from morm_explorer.errors import MormError
from morm_explorer.evaluation.session_spec import ANSWERS, answer_column
from morm_explorer.evaluation.sessions import get_session, load_votes
from morm_explorer.workspace import Workspace

DECIDED = ("a", "b")
WIN_COLUMNS = ["objective", "policy", "opponent", "n", "wins", "losses", "ties", "both_bad",
               "win_rate", "ci_low", "ci_high"]
AGREEMENT_COLUMNS = ["objective", "n_items", "n_raters", "ratings_per_item",
                     "percent_agreement", "fleiss_kappa", "krippendorff_alpha", "cohen_kappa"]
POSITION_COLUMNS = ["objective", "n_decided", "a_share", "ci_low", "ci_high"]
RM_COLUMNS = ["objective", "n_decided", "n_agree", "agreement", "ci_low", "ci_high",
              "n_excluded"]


def wilson_interval(successes: float, n: float, confidence: float = 0.95
                    ) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n``: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²))
    / (1 + z²/n). ``successes`` may be fractional (a tie counted as half a win); (nan, nan)
    when ``n`` is 0."""
    if not 0 < confidence < 1:
        raise MormError(f"confidence must be in (0, 1), got {confidence}", field="confidence")
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise MormError(f"successes {successes} not in [0, {n}]", field="successes")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    center = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    lo = 0.0 if successes == 0 else max(0.0, (center - half) / denom)  # exact at the ends
    hi = 1.0 if successes == n else min(1.0, (center + half) / denom)
    return lo, hi


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable],
                labels: Sequence[Hashable] | None = None) -> float:
    """Cohen's kappa of two raters' labels on the same items; nan when chance agreement is 1
    (both raters always used one and the same label) or there are no items."""
    if len(a) != len(b):
        raise MormError(f"the raters labelled {len(a)} and {len(b)} items; expected the same "
                        "items", field="b")
    labels = list(labels) if labels is not None else sorted(set(a) | set(b), key=str)
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({x for x in (*a, *b) if x not in index}, key=str)
    if unknown:
        raise MormError(f"labels {unknown} are not among {labels}", field="labels")
    n = len(a)
    if n == 0:
        return math.nan
    confusion = np.zeros((len(labels), len(labels)))  # (L, L): rows rater a, columns rater b
    for x, y in zip(a, b, strict=True):
        confusion[index[x], index[y]] += 1
    p_o = np.trace(confusion) / n
    p_e = float(confusion.sum(axis=1) @ confusion.sum(axis=0)) / (n * n)
    return math.nan if math.isclose(p_e, 1.0) else float((p_o - p_e) / (1 - p_e))


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Fleiss' kappa of an (items, categories) table of rating counts; every item needs at
    least 2 ratings. kappa = (P̄ - P̄_e) / (1 - P̄_e) with P_i = (Σ_j n_ij² - n_i) / (n_i(n_i - 1)),
    p_j = Σ_i n_ij / Σ_i n_i and P̄_e = Σ_j p_j²; nan when P̄_e is 1."""
    t = np.asarray(table, dtype=float)  # (N, C)
    if t.ndim != 2 or t.shape[0] == 0:
        raise MormError(f"expected a non-empty items x categories table, got shape {t.shape}",
                        field="table")
    if (t < 0).any():
        raise MormError("rating counts must be >= 0", field="table")
    n_i = t.sum(axis=1)  # (N,) ratings per item
    if (n_i < 2).any():
        raise MormError(f"{int((n_i < 2).sum())} items have fewer than 2 ratings",
                        field="table")
    p_item = ((t * t).sum(axis=1) - n_i) / (n_i * (n_i - 1))  # (N,)
    p_cat = t.sum(axis=0) / n_i.sum()  # (C,)
    p_bar, p_e = float(p_item.mean()), float((p_cat * p_cat).sum())
    return math.nan if math.isclose(p_e, 1.0) else (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable]]) -> float:
    """Krippendorff's alpha for nominal values; ``units`` holds each unit's ratings (missing
    ones left out). Units with fewer than 2 ratings are not pairable and are ignored.
    alpha = 1 - (n - 1) Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k; nan when only one value occurs."""
    values = sorted({v for u in units for v in u}, key=str)
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))  # coincidence matrix (V, V)
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        counts = Counter(unit)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                o[index[c], index[k]] += n_c * (n_k - (c == k)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    expected = n * n - float((n_c * n_c).sum())  # Σ_{c≠k} n_c n_k
    if n < 2 or expected == 0:
        return math.nan
    observed = float(o.sum() - np.trace(o))  # Σ_{c≠k} o_ck
    return 1.0 - (n - 1) * observed / expected


# -- a session's results -------------------------------------------------------------------


def _win_rates(votes: pd.DataFrame, dims: list[str], policies: list[str]) -> pd.DataFrame:
    """Policy x over y per dimension: a tie counts half a win; both_bad is counted apart."""
    rows = []
    for dim in dims:
        col = answer_column(dim)
        for i, x in enumerate(policies):
            for y in policies[i + 1:]:
                sub = votes[((votes.policy_a == x) & (votes.policy_b == y))
                            | ((votes.policy_a == y) & (votes.policy_b == x))]
                ans = sub[col]
                if ans.notna().sum() == 0:
                    continue
                x_is_a = sub.policy_a == x
                wins = int((((ans == "a") & x_is_a) | ((ans == "b") & ~x_is_a)).sum())
                losses = int((((ans == "b") & x_is_a) | ((ans == "a") & ~x_is_a)).sum())
                ties = int((ans == "tie").sum())
                n = wins + losses + ties
                lo, hi = wilson_interval(wins + 0.5 * ties, n)
                rows.append([dim, x, y, n, wins, losses, ties, int((ans == "both_bad").sum()),
                             (wins + 0.5 * ties) / n if n else math.nan, lo, hi])
    return pd.DataFrame(rows, columns=WIN_COLUMNS)


def _agreement(votes: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    """Inter-rater agreement per dimension over the four answers (the A/B order of an item is
    the same for every rater, so answers compare directly)."""
    rows = []
    for dim in dims:
        col = answer_column(dim)
        rated = votes[votes[col].notna()]
        units = [g[col].tolist() for _, g in rated.groupby("item_id")]
        multi = [u for u in units if len(u) >= 2]
        table = np.array([[u.count(c) for c in ANSWERS] for u in multi]).reshape(-1, 4)
        raters = sorted(rated["rater"].unique())
        cohen = math.nan
        if len(raters) == 2:
            wide = rated.pivot(index="item_id", columns="rater", values=col).dropna()
            cohen = cohen_kappa(wide[raters[0]].tolist(), wide[raters[1]].tolist(), ANSWERS)
        pct = (float(np.mean([((t * t).sum() - t.sum()) / (t.sum() * (t.sum() - 1))
                              for t in table])) if len(table) else math.nan)
        rows.append([dim, len(multi), len(raters),
                     float(np.mean([len(u) for u in multi])) if multi else math.nan, pct,
                     fleiss_kappa(table) if len(table) else math.nan,
                     krippendorff_alpha_nominal(units), cohen])
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def _position(votes: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    """How often the response shown as A wins among decided votes: near 0.5 unless raters
    favour a position."""
    rows = []
    for dim in dims:
        ans = votes[answer_column(dim)]
        n, k = int(ans.isin(DECIDED).sum()), int((ans == "a").sum())
        rows.append([dim, n, k / n if n else math.nan, *wilson_interval(k, n)])
    return pd.DataFrame(rows, columns=POSITION_COLUMNS)


def _reward_model_agreement(ws: Workspace, votes: pd.DataFrame, spec, reward_model: str
                            ) -> pd.DataFrame:
    """Per objective, the share of decided votes (a or b) where the reward model's score
    difference (A minus B) has the voted sign; a zero difference counts as disagreement."""
    from morm_explorer.data.candidates import load_candidate_set
    from morm_explorer.scoring import score_candidate_set

    cset = load_candidate_set(ws, spec.candidate_set)
    if cset.fingerprint() != spec.fingerprint:
        raise MormError(f"candidate set {spec.candidate_set!r} changed since the session was "
                        "made; its rows no longer match the rated responses",
                        field="candidate_set")
    scores = score_candidate_set(ws, reward_model, cset)  # the disk cache first
    common = [o for o in spec.objectives if o in scores.objectives]
    if not common:
        raise MormError(f"reward model {reward_model!r} scores {scores.objectives}, none of the "
                        f"session's objectives {list(spec.objectives)}", field="reward_model")
    rows = []
    for obj in common:
        k = scores.objectives.index(obj)
        ans = votes[answer_column(obj)]
        decided = votes[ans.isin(DECIDED)]
        diff = (scores.values[decided.row_a.to_numpy(int), k]
                - scores.values[decided.row_b.to_numpy(int), k])  # (n_decided,)
        said_a = (decided[answer_column(obj)] == "a").to_numpy()
        agree = int(((said_a & (diff > 0)) | (~said_a & (diff < 0))).sum())
        n = len(decided)
        rows.append([obj, n, agree, agree / n if n else math.nan, *wilson_interval(agree, n),
                     int(len(votes) - n)])
    return pd.DataFrame(rows, columns=RM_COLUMNS)


def results(ws: Workspace, session: str, reward_model: str | None = None
            ) -> dict[str, pd.DataFrame]:
    """A session's statistics as frames: ``win_rates`` (per objective and policy pair, Wilson
    95% intervals), ``agreement`` (Fleiss' kappa over items with >= 2 ratings, Krippendorff's
    alpha, Cohen's kappa when exactly 2 raters voted), ``position`` (share of wins for the A
    side) and, given a reward model, ``reward_model`` (rater vs model sign agreement). The
    dimension ``overall`` appears when any vote carries an overall choice."""
    spec = get_session(ws, session).spec
    votes = load_votes(ws, session)
    dims = list(spec.objectives) + (["overall"] if votes["overall"].notna().any() else [])
    out = {"win_rates": _win_rates(votes, dims, list(spec.policies)),
           "agreement": _agreement(votes, dims), "position": _position(votes, dims)}
    out["reward_model"] = (_reward_model_agreement(ws, votes, spec, reward_model)
                           if reward_model else pd.DataFrame(columns=RM_COLUMNS))
    return out
