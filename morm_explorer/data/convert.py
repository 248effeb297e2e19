"""Conversions and summaries of canonical preference data.

- `ratings_to_pairs`: every pair of responses to the same prompt, labelled per objective by the
  sign of the rating difference, a tie within a margin;
- `summarize`: per-objective label counts, coverage and tie rate, and how often two objectives
  disagree on the same pair (the trade-offs a single reward model would average away).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from morm_explorer.data.schema import Kind


def ratings_to_pairs(records: list[dict], margin: float = 0.0) -> list[dict]:
    """All pairs of responses to the same prompt, labelled per objective.

    For responses i < j (in file order) and each objective rated on both, the label is "a" when
    r_i - r_j > margin, "b" when r_i - r_j < -margin, else "tie". An objective rated on only one
    of the two is left unlabelled. Pairs with no label at all, or identical texts, are skipped.
    """
    if margin < 0:
        raise ValueError("margin must be >= 0")
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_prompt[r["prompt"]].append(r)
    out: list[dict] = []
    for prompt, group in by_prompt.items():
        for a, b in itertools.combinations(group, 2):
            if a["response"].strip() == b["response"].strip():
                continue
            labels = {}
            for obj in a["ratings"].keys() & b["ratings"].keys():
                d = a["ratings"][obj] - b["ratings"][obj]
                labels[obj] = "a" if d > margin else "b" if d < -margin else "tie"
            if not labels:
                continue
            rec = {
                "id": f"{a.get('id', '?')}~{b.get('id', '?')}",
                "prompt": prompt,
                "response_a": a["response"],
                "response_b": b["response"],
                "labels": dict(sorted(labels.items())),
            }
            if a.get("category") is not None:
                rec["category"] = a["category"]
            out.append(rec)
    return out


@dataclass
class Summary:
    """What a dataset holds, per objective."""

    kind: Kind
    n_records: int
    n_prompts: int
    categories: pd.Series  # records per category
    per_objective: pd.DataFrame  # one row per objective
    disagreement: pd.DataFrame  # (K, K): opposite labels, share of jointly decided pairs
    conflict: pd.DataFrame  # (K, K): opposite labels, share of all jointly labelled pairs

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "n_records": self.n_records,
            "n_prompts": self.n_prompts,
            "categories": {str(k): int(v) for k, v in self.categories.items()},
            "per_objective": self.per_objective.reset_index().to_dict(orient="records"),
            "disagreement": _matrix_dict(self.disagreement),
            "conflict": _matrix_dict(self.conflict),
        }


def _matrix_dict(frame: pd.DataFrame) -> dict:
    return {str(i): {str(j): (None if pd.isna(v) else float(v)) for j, v in row.items()}
            for i, row in frame.iterrows()}


def _label_matrix(records: list[dict], objectives: list[str]) -> np.ndarray:
    """(N, K) of +1 (a), -1 (b), 0 (tie), NaN (not labelled)."""
    code = {"a": 1.0, "b": -1.0, "tie": 0.0}
    m = np.full((len(records), len(objectives)), np.nan)
    for i, r in enumerate(records):
        for k, obj in enumerate(objectives):
            if obj in r["labels"]:
                m[i, k] = code[r["labels"][obj]]
    return m


def disagreement_matrix(records: list[dict], objectives: list[str],
                        among: str = "decided") -> pd.DataFrame:
    """How often objectives j and k prefer opposite responses of the same pair.

    ``among="decided"``: the share among pairs labelled a or b (not tie) on both;
    ``among="labelled"``: the share among all pairs labelled on both, ties included (a tie on
    one side is no conflict). The diagonal is 0; NaN where no pair qualifies.
    """
    m = _label_matrix(records, objectives)
    ok = np.isfinite(m) & (m != 0) if among == "decided" else np.isfinite(m)
    K = len(objectives)
    out = np.full((K, K), np.nan)
    for j in range(K):
        for k in range(K):
            both = ok[:, j] & ok[:, k]
            if both.any():
                out[j, k] = float(np.mean(m[both, j] * m[both, k] < 0))
    return pd.DataFrame(out, index=objectives, columns=objectives)


def joint_counts(records: list[dict], a: str, b: str) -> dict[str, int]:
    """What the disagreement of objectives a and b is a share of: ``decided`` pairs (a or b,
    no tie, on both: the base of ``disagreement``), ``labelled`` pairs (labelled on both, ties
    included: the base of ``conflict``), and ``pairs``, all of them."""
    m = _label_matrix(records, [a, b])
    labelled = np.isfinite(m).all(1)
    return {"decided": int((labelled & (m != 0).all(1)).sum()), "labelled": int(labelled.sum()),
            "pairs": len(records)}


def _pair_stats(records: list[dict], objectives: list[str]) -> pd.DataFrame:
    m = _label_matrix(records, objectives)
    n = len(records)
    rows = []
    for k, obj in enumerate(objectives):
        col = m[:, k]
        labelled = int(np.isfinite(col).sum())
        ties = int((col == 0).sum())
        rows.append({
            "objective": obj, "labelled": labelled, "coverage": labelled / n if n else 0.0,
            "a": int((col == 1).sum()), "b": int((col == -1).sum()), "tie": ties,
            "tie_rate": ties / labelled if labelled else float("nan"),
        })
    return pd.DataFrame(rows).set_index("objective")


def _rating_stats(records: list[dict], objectives: list[str]) -> pd.DataFrame:
    n = len(records)
    rows = []
    for obj in objectives:
        vals = np.array([r["ratings"][obj] for r in records if obj in r["ratings"]], dtype=float)
        rows.append({
            "objective": obj, "rated": len(vals), "coverage": len(vals) / n if n else 0.0,
            "mean": vals.mean() if len(vals) else np.nan,
            "std": vals.std() if len(vals) else np.nan,
            "min": vals.min() if len(vals) else np.nan,
            "max": vals.max() if len(vals) else np.nan,
        })
    return pd.DataFrame(rows).set_index("objective")


def summarize(records: list[dict], kind: Kind, objectives: list[str] | None = None) -> Summary:
    """Per-objective counts, coverage and disagreement (for ratings: via derived pairs)."""
    key = "labels" if kind == "pairwise" else "ratings"
    if objectives is None:
        objectives = list(dict.fromkeys(o for r in records for o in r[key]))
    cats = pd.Series([r.get("category") or "(none)" for r in records]).value_counts()
    if kind == "pairwise":
        per_obj = _pair_stats(records, objectives)
        pairs = records
    else:
        per_obj = _rating_stats(records, objectives)
        pairs = ratings_to_pairs(records)
    return Summary(
        kind=kind,
        n_records=len(records),
        n_prompts=len({r["prompt"] for r in records}),
        categories=cats,
        per_objective=per_obj,
        disagreement=disagreement_matrix(pairs, objectives),
        conflict=disagreement_matrix(pairs, objectives, among="labelled"),
    )
