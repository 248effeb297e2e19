"""Statistics of a policy comparison: intervals, paired win rates, slices and the policies' front.

Every function takes the tidy frame of `morm_explorer.evaluation.compare.load_comparison` (one
row per (prompt_id, sample, policy); score columns ``rm:<objective>`` and ``judge:<objective>``,
``kl``, ``n_tokens``, ``n_chars``) or plain arrays, and returns plain data. The unit of every
interval and bootstrap is the prompt: a policy's samples of one prompt share that prompt's
difficulty, so they are averaged first (`prompt_means`) and the prompts are the independent
draws. Only numpy, scipy and pandas here; `soup_curve` reads scores through the score cache.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as st

from morm_explorer.errors import MormError
from morm_explorer.pareto import hypervolume, nondominated

if TYPE_CHECKING:
    from morm_explorer.workspace import Workspace

NO_CATEGORY = "(none)"


def mean_ci(x: np.ndarray | list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval mean +- t_{(1+c)/2, n-1} * s / sqrt(n), with s
    the sample standard deviation (ddof=1). One value has a mean but no interval (NaN bounds);
    no value gives NaN for all three; values that are all equal give a zero-width interval."""
    a = np.asarray(x, dtype=float).ravel()
    a = a[~np.isnan(a)]
    if not 0 < confidence < 1:
        raise MormError(f"confidence must be in (0, 1), got {confidence}", field="confidence")
    if len(a) == 0:
        return math.nan, math.nan, math.nan
    m = float(a.mean())
    if len(a) == 1:
        return m, math.nan, math.nan
    half = float(st.t.ppf((1 + confidence) / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return m, m - half, m + half


class WinRate(NamedTuple):
    """How often policy a beats policy b over paired prompts; ``rate`` = win + tie / 2."""

    rate: float
    win: float
    tie: float
    loss: float
    ci_low: float
    ci_high: float
    n: int


def _win_stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean((a > b) + 0.5 * (a == b), axis=axis)


def paired_win_rate(a: np.ndarray | list[float], b: np.ndarray | list[float], n_boot: int = 2000,
                    seed: int = 0, confidence: float = 0.95) -> WinRate:
    """Win rate of a over b, P(a > b) + P(a = b) / 2, where a[i] and b[i] are the two policies'
    scores on prompt i, with a percentile interval from the paired bootstrap (Efron &
    Tibshirani 1993, ch. 13): prompts are resampled with replacement, each keeping its (a, b)
    pair, by `scipy.stats.bootstrap` (``paired=True``). Pairing removes the variation between
    prompts that both policies share, so the interval is narrower than resampling a and b
    independently. Fewer than two prompts give NaN bounds."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise MormError(f"paired scores must have the same length, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return WinRate(*(math.nan,) * 6, n=0)
    win, tie = float(np.mean(a > b)), float(np.mean(a == b))
    low = high = math.nan
    if n >= 2:
        res = st.bootstrap((a, b), _win_stat, n_resamples=n_boot, paired=True, vectorized=True,
                           confidence_level=confidence, method="percentile",
                           rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return WinRate(win + tie / 2, win, tie, 1.0 - win - tie, low, high, n)


class MeanDiff(NamedTuple):
    """Mean of a - b over paired prompts with its paired-bootstrap interval; ``clear`` when the
    interval excludes zero (then ``diff``'s sign is the direction of the difference)."""

    diff: float
    low: float
    high: float
    n: int

    @property
    def clear(self) -> bool:
        return bool(self.n >= 2 and (self.low > 0 or self.high < 0))


def _mean_diff_stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def paired_mean_diff(a: np.ndarray | list[float], b: np.ndarray | list[float],
                     n_boot: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> MeanDiff:
    """Mean of a[i] - b[i] over prompts i, with the percentile interval of the paired bootstrap
    (`scipy.stats.bootstrap`, ``paired=True``: prompts resampled with replacement, each keeping
    its (a, b) pair). The statement "a scores higher than b" is backed when ``low > 0``, "lower"
    when ``high < 0``; otherwise there is no clear difference. Fewer than two prompts, or
    differences that are all equal, give NaN bounds (the former) or a zero-width interval."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise MormError(f"paired scores must have the same length, got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = len(a)
    if n == 0:
        return MeanDiff(math.nan, math.nan, math.nan, 0)
    diff = float(np.mean(a - b))
    if n < 2:
        return MeanDiff(diff, math.nan, math.nan, n)
    if np.all(a - b == (a - b)[0]):
        return MeanDiff(diff, diff, diff, n)
    res = st.bootstrap((a, b), _mean_diff_stat, n_resamples=n_boot, paired=True,
                       vectorized=True, confidence_level=confidence, method="percentile",
                       rng=np.random.default_rng(seed))
    return MeanDiff(diff, float(res.confidence_interval.low),
                    float(res.confidence_interval.high), n)


def mean_differences(frame: pd.DataFrame, a: str, b: str, objectives: list[str],
                     prefix: str = "rm:", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Policy a's mean score minus policy b's, per objective, over the prompts both answered
    (each policy's samples of a prompt averaged first), with the paired-bootstrap 95% interval
    of `paired_mean_diff`. One row per objective: objective, diff, low, high, n, clear (the
    interval excludes zero) and verdict: "<a> higher", "<b> higher" or "no clear difference"."""
    cols = [prefix + o for o in objectives]
    means = prompt_means(frame, cols)
    for p in (a, b):
        if p not in means.index.get_level_values(0):
            raise MormError(f"{p!r} is not one of the policies", field="policy")
    pair = means.loc[a].merge(means.loc[b], left_index=True, right_index=True,
                              suffixes=("", "_b"))  # inner: prompts of both
    rows = []
    for o, c in zip(objectives, cols, strict=True):
        d = paired_mean_diff(pair[c], pair[c + "_b"], n_boot=n_boot, seed=seed)
        verdict = (f"{a} higher" if d.diff > 0 else f"{b} higher") if d.clear else \
            "no clear difference"
        rows.append({"objective": o, **d._asdict(), "clear": d.clear, "verdict": verdict})
    return pd.DataFrame(rows, columns=["objective", *MeanDiff._fields, "clear", "verdict"])


def difference_sentence(a: str, b: str, row: dict) -> str:
    """One row of `mean_differences` in words: a difference is stated only when its interval
    excludes zero."""
    span = (f"{row['diff']:+.3f}; 95% interval {row['low']:+.3f} to {row['high']:+.3f} over "
            f"{row['n']} prompts")
    if not row["clear"]:
        return f"{row['objective']}: no clear difference between {a} and {b} ({span})"
    hi, lo = (a, b) if row["diff"] > 0 else (b, a)
    return f"{row['objective']}: {hi} scores higher than {lo} ({a} − {b} = {span})"


def prompt_means(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean of ``columns`` over each policy's samples of a prompt: index (policy, prompt_id),
    policies in their order of appearance."""
    return frame.groupby(["policy", "prompt_id"], sort=False)[columns].mean()


def policy_summary(frame: pd.DataFrame, objectives: list[str], prefix: str = "rm:",
                   confidence: float = 0.95) -> pd.DataFrame:
    """Per policy (index, in order of appearance): for each objective the mean score and its
    t interval over prompts (``<obj>``, ``<obj>_low``, ``<obj>_high``), the mean KL from the
    base with its interval (``kl``, ``kl_low``, ``kl_high``), the mean response length
    (``n_tokens``, ``n_chars``), and ``n_prompts`` / ``n_samples``. Scores are per-prompt
    means first (see the module docstring)."""
    cols = [prefix + o for o in objectives]
    missing = [c for c in cols if c not in frame]
    if missing:
        raise MormError(f"no score column {missing[0]!r} in the comparison", field="objectives")
    extra = [c for c in ("kl", "n_tokens", "n_chars") if c in frame]
    means = prompt_means(frame, cols + extra)
    rows = {}
    for policy, g in means.groupby(level="policy", sort=False):
        row: dict[str, float] = {}
        for o, c in zip(objectives, cols, strict=True):
            row[o], row[f"{o}_low"], row[f"{o}_high"] = mean_ci(g[c].to_numpy(), confidence)
        if "kl" in g:
            row["kl"], row["kl_low"], row["kl_high"] = mean_ci(g["kl"].to_numpy(), confidence)
        for c in ("n_tokens", "n_chars"):
            if c in g:
                row[c] = float(g[c].mean())
        row["n_prompts"] = len(g)
        row["n_samples"] = int((frame["policy"] == policy).sum())
        rows[policy] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "policy"
    return out


def win_rates(frame: pd.DataFrame, baseline: str, objectives: list[str], prefix: str = "rm:",
              n_boot: int = 2000, seed: int = 0, by: str | None = None) -> pd.DataFrame:
    """Paired win rate of every other policy against ``baseline`` per objective: one row per
    (policy, objective) [and ``by`` value], columns of `WinRate`. A policy's samples of a
    prompt are averaged first, so a prompt counts once however many samples it has; only
    prompts both policies answered are paired."""
    policies = list(pd.unique(frame["policy"]))
    if baseline not in policies:
        raise MormError(f"baseline {baseline!r} is not one of the policies {policies}",
                        field="baseline")
    groups = [(None, frame)] if by is None else _slices_of(frame, by)
    cols = [prefix + o for o in objectives]
    rows = []
    for key, part in groups:
        means = prompt_means(part, cols)
        base = means.loc[baseline] if baseline in means.index.get_level_values(0) else None
        for policy in policies:
            if policy == baseline or base is None or policy not in means.index:
                continue
            pair = means.loc[policy].merge(base, left_index=True, right_index=True,
                                           suffixes=("", "_base"))  # inner: prompts of both
            for o, c in zip(objectives, cols, strict=True):
                w = paired_win_rate(pair[c], pair[c + "_base"], n_boot=n_boot, seed=seed)
                rows.append({**({by: key} if by else {}), "policy": policy, "objective": o,
                             **w._asdict()})
    columns = ([by] if by else []) + ["policy", "objective", *WinRate._fields]
    return pd.DataFrame(rows, columns=columns)


def _slices_of(frame: pd.DataFrame, by: str) -> list[tuple[str, pd.DataFrame]]:
    if by not in frame:
        raise MormError(f"no column {by!r} to slice by", field="by")
    keys = frame[by].astype(object).where(frame[by].notna(), NO_CATEGORY).astype(str)
    return [(k, frame[keys == k]) for k in sorted(keys.unique())]


def slices(frame: pd.DataFrame, objectives: list[str], by: str = "category",
           prefix: str = "rm:", confidence: float = 0.95) -> pd.DataFrame:
    """`policy_summary` within each value of ``by`` (missing values: ``(none)``), stacked:
    one row per (``by`` value, policy). Win rates per slice: `win_rates` with ``by``."""
    parts = [policy_summary(part, objectives, prefix, confidence).assign(**{by: key})
             for key, part in _slices_of(frame, by)]
    if not parts:
        return pd.DataFrame(columns=[by, "policy"])
    return pd.concat(parts).reset_index().set_index([by, "policy"])


def largest_differences(frame: pd.DataFrame, a: str, b: str, objective: str,
                        prefix: str = "rm:") -> pd.DataFrame:
    """Prompts by how much policies a and b differ on ``objective``: per prompt the two
    policies' mean scores over their samples, ``diff`` = a - b, sorted by |diff|, largest
    first. Columns: prompt_id, prompt, category, a, b, diff."""
    col = prefix + objective
    if col not in frame:
        raise MormError(f"no score column {col!r} in the comparison", field="objective")
    means = prompt_means(frame, [col])[col]
    for p in (a, b):
        if p not in means.index.get_level_values(0):
            raise MormError(f"{p!r} is not one of the policies", field="policy")
    pair = pd.DataFrame({a: means.loc[a], b: means.loc[b]}).dropna()
    info = frame.drop_duplicates("prompt_id").set_index("prompt_id")[["prompt", "category"]]
    out = info.join(pair, how="inner")
    out["diff"] = out[a] - out[b]
    out = out.iloc[np.argsort(-out["diff"].abs().to_numpy(), kind="stable")]
    return out.reset_index()


class Front(NamedTuple):
    """The policies' own Pareto front in objective space and its hypervolume."""

    on_front: np.ndarray  # (P,) bool, in the summary's row order
    hypervolume: float
    reference: np.ndarray  # (K,)


def front_of_policies(summary: pd.DataFrame, objectives: list[str],
                      margin: float = 0.1) -> Front:
    """Which policies' mean scores (columns ``objectives`` of `policy_summary`) no other policy
    dominates, and the hypervolume they dominate above a reference point. The reference is the
    worst mean over the policies on each objective minus ``margin`` times the objective's
    spread over the policies (1 where they all agree), so every policy, the worst ones
    included, adds volume. Hypervolumes are comparable only between calls with the same
    reference; pass policies of one comparison."""
    if len(objectives) < 1 or len(summary) < 1:
        raise MormError("a front needs at least one policy and one objective")
    s = summary[objectives].to_numpy(dtype=float)  # (P, K)
    spread = s.max(0) - s.min(0)
    reference = s.min(0) - margin * np.where(spread > 0, spread, 1.0)
    on = nondominated(s)
    return Front(on, hypervolume(s[on], reference), reference)


def soup_curve(ws: Workspace, soup_set: str, reward_model: str) -> pd.DataFrame | None:
    """Mean score per objective of every mix in a soup job's candidate set (sources
    ``soup lam=<x>``, meta ``lambda``) under ``reward_model``: index lambda (ascending), one
    column per objective. None when no candidate set ``soup_set`` exists or it holds no soup.
    Scores come from the score cache the soup job filled; an uncached model is run once."""
    from morm_explorer.data.candidates import load_candidate_set
    from morm_explorer.scoring import score_candidate_set

    try:
        cset = load_candidate_set(ws, soup_set)
    except MormError:
        return None
    lam = [json.loads(m).get("lambda") if m else None for m in cset.frame["meta"]]
    keep = np.array([isinstance(x, (int, float)) for x in lam])
    if not keep.any():
        return None
    scores = score_candidate_set(ws, reward_model, cset)
    table = pd.DataFrame(scores.values[keep], columns=scores.objectives)
    table["lambda"] = np.asarray([x for x, k in zip(lam, keep, strict=True) if k], dtype=float)
    return table.groupby("lambda").mean().sort_index()
