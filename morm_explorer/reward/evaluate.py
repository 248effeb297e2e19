"""Evaluation of per-objective rewards on held-out pairs, from scores alone (numpy).

Per objective: accuracy with ties excluded and a bootstrap 95% interval (scipy), Bradley-Terry
loss, calibration of sigmoid(r_a - r_b) against the labels (reliability table and expected
calibration error), and, where the data carries hidden true scores (the built-in data), accuracy
against the true ordering. Across objectives: correlation of the heads' scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

TRUE_TIE = 0.05  # |true difference| below this is a tie (the simulated annotators' tie band)


def bootstrap_ci(correct: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 array."""
    if len(correct) < 2 or np.all(correct == correct[0]):
        m = float(correct.mean()) if len(correct) else float("nan")
        return m, m
    res = stats.bootstrap((correct.astype(float),), np.mean, confidence_level=confidence,
                          n_resamples=n_resamples, method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def decided(d: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correctness (0/1) of sign(d) on the pairs labelled a or b (ties and NaN excluded)."""
    mask = np.isfinite(target) & (target != 0.5)
    return ((d[mask] > 0) == (target[mask] == 1.0)).astype(float), mask


def bt_loss(d: np.ndarray, target: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(d) against targets (ties = 0.5), labelled pairs."""
    mask = np.isfinite(target)
    if not mask.any():
        return float("nan")
    d, y = d[mask], target[mask]
    return float(np.mean(np.logaddexp(0, -d) * y + np.logaddexp(0, d) * (1 - y)))


def calibration(d: np.ndarray, target: np.ndarray, bins: int = 10) -> tuple[pd.DataFrame, float]:
    """Reliability table of p = sigmoid(d) against how often "a" won (decided pairs), and the
    expected calibration error (count-weighted |mean p - observed|)."""
    mask = np.isfinite(target) & (target != 0.5)
    p = 1 / (1 + np.exp(-d[mask]))
    y = target[mask]
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            rows.append({"bin": b, "predicted": float(p[sel].mean()),
                         "observed": float(y[sel].mean()), "count": int(sel.sum())})
    table = pd.DataFrame(rows, columns=["bin", "predicted", "observed", "count"])
    ece = float((table["count"] * (table["predicted"] - table["observed"]).abs()).sum()
                / max(1, table["count"].sum()))
    return table, ece


def true_targets(records: list[dict], objectives: list[str]) -> np.ndarray | None:
    """Targets from hidden true scores in ``meta`` (built-in data), NaN for near-ties."""
    if not records or "true_a" not in (records[0].get("meta") or {}):
        return None
    out = np.full((len(records), len(objectives)), np.nan)
    for i, r in enumerate(records):
        ta, tb = r["meta"].get("true_a", {}), r["meta"].get("true_b", {})
        for k, obj in enumerate(objectives):
            if obj in ta and obj in tb and abs(ta[obj] - tb[obj]) >= TRUE_TIE:
                out[i, k] = 1.0 if ta[obj] > tb[obj] else 0.0
    return out


def evaluate_pairs(
    r_a: np.ndarray,
    r_b: np.ndarray,
    targets: np.ndarray,
    objectives: list[str],
    truth: np.ndarray | None = None,
) -> dict:
    """Per-objective metrics of rewards (P, K) of both sides against targets (P, K)."""
    per = {}
    for k, obj in enumerate(objectives):
        d = r_a[:, k] - r_b[:, k]
        correct, _ = decided(d, targets[:, k])
        lo, hi = bootstrap_ci(correct)
        table, ece = calibration(d, targets[:, k])
        row = {"accuracy": float(correct.mean()) if len(correct) else float("nan"),
               "ci_low": lo, "ci_high": hi, "n": int(len(correct)),
               "loss": bt_loss(d, targets[:, k]), "ece": ece,
               "calibration": table.to_dict(orient="records")}
        if truth is not None:
            tc, _ = decided(d, truth[:, k])
            row["truth_accuracy"] = float(tc.mean()) if len(tc) else float("nan")
            row["truth_n"] = int(len(tc))
        per[obj] = row
    return per


def head_correlation(scores: np.ndarray, objectives: list[str]) -> pd.DataFrame:
    """Pearson correlation (K, K) of the heads' scores over responses."""
    if scores.shape[0] < 2:
        return pd.DataFrame(np.eye(len(objectives)), index=objectives, columns=objectives)
    c = np.corrcoef(scores, rowvar=False) if scores.shape[1] > 1 else np.ones((1, 1))
    return pd.DataFrame(np.atleast_2d(c), index=objectives, columns=objectives)


def single_vs_multi(multi: dict, single_a: np.ndarray, single_b: np.ndarray,
                    targets: np.ndarray, objectives: list[str]) -> pd.DataFrame:
    """Accuracy on each objective's labels: the multi-head model's own head beside one scalar
    reward (e.g. trained on an overall label) used for every objective."""
    rows = []
    d = single_a[:, 0] - single_b[:, 0]
    for k, obj in enumerate(objectives):
        correct, _ = decided(d, targets[:, k])
        lo, hi = bootstrap_ci(correct)
        rows.append({"objective": obj, "multi_head": multi[obj]["accuracy"],
                     "multi_ci": (multi[obj]["ci_low"], multi[obj]["ci_high"]),
                     "single": float(correct.mean()) if len(correct) else float("nan"),
                     "single_ci": (lo, hi), "n": int(len(correct))})
    return pd.DataFrame(rows).set_index("objective")
