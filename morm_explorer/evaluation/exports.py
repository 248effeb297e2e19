"""Exporting a rating session's votes: preference pairs to retrain on, CSV, LLM Comparator.

- `to_preference_pairs` / `write_pairs_jsonl` / `to_dataset`: one canonical pairwise record
  per (item, rater), responses in the order the rater saw them, ``labels`` per objective
  (``a``, ``b`` or ``tie``; a ``both_bad`` answer leaves the objective unlabelled, and a vote with
  no label left is skipped and counted). `to_dataset` stores them as a workspace dataset, which
  the Reward Models page trains on.
- `to_csv`: one row per vote, one ``answer:<objective>`` column per objective.
- `to_llm_comparator`: the JSON file of Google's LLM Comparator viewer
  (github.com/PAIR-code/llm-comparator, "JSON Data Format"): ``metadata`` (``source_path``,
  ``custom_fields_schema``), ``models`` (two names), ``examples`` with ``input_text``, ``tags``,
  ``output_text_a`` / ``output_text_b`` (model A's and model B's responses), ``score`` (the mean
  of the rater scores; positive favours A, within [-1.5, 1.5]), ``individual_rater_scores``
  (``is_flipped``, ``score``, ``rating_label``, ``rationale``) and ``custom_fields``, plus an
  empty ``rationale_clusters``. A vote maps to the viewer's scale as its judge does: "A is
  better" 1.0, "same" 0.0, "B is better" -1.0, negated when the rater saw the two models
  swapped (``is_flipped``); ``both_bad`` carries no preference and is left out.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from morm_explorer.data.schema import LABEL_VALUES
from morm_explorer.errors import MormError
from morm_explorer.evaluation.session_spec import answer_column
from morm_explorer.evaluation.sessions import get_session, load_votes
from morm_explorer.workspace import DatasetInfo, Workspace, atomic_write_jsonl, atomic_write_text

VOTE_SCORE = {"a": 1.0, "tie": 0.0, "b": -1.0}  # the viewer's "A is better" / "same" / "B ..."
RATING_LABEL = {"a": "A is better", "tie": "same", "b": "B is better"}


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the file, the records in it and the votes or items left out."""

    path: str
    n_records: int
    n_skipped: int = 0


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) \
        else str(value)


def _pair(session: str, r: dict, objectives: Sequence[str]) -> dict | None:
    labels = {o: r[answer_column(o)] for o in objectives if r[answer_column(o)] in LABEL_VALUES}
    if not labels:
        return None
    rec = {"id": f"{session}-{int(r['item_id'])}-{r['rater']}", "prompt": r["prompt"],
           "response_a": r["response_a"], "response_b": r["response_b"], "labels": labels}
    if _text(r["category"]):
        rec["category"] = _text(r["category"])
    rec["meta"] = {"session": session, "item_id": int(r["item_id"]),
                   "prompt_id": r["prompt_id"], "rater": r["rater"],
                   "policy_a": r["policy_a"], "policy_b": r["policy_b"],
                   "flipped": bool(r["flipped"]), "overall": _text(r["overall"]),
                   "comment": r["comment"]}
    return rec


def to_preference_pairs(ws: Workspace, session: str) -> list[dict]:
    """The session's votes as canonical pairwise records, one per (item, rater), with ids
    ``<session>-<item_id>-<rater>``; votes answered ``both_bad`` on every objective are left
    out (``len(load_votes(...)) - len(pairs)`` of them)."""
    objectives = get_session(ws, session).spec.objectives
    pairs = (_pair(session, r, objectives) for r in load_votes(ws, session).to_dict("records"))
    return [p for p in pairs if p is not None]


def write_pairs_jsonl(ws: Workspace, session: str, path: str | Path) -> ExportResult:
    """Write the preference pairs as JSONL (atomically), loadable by `load_preference_data`."""
    pairs = to_preference_pairs(ws, session)
    n_votes = get_session(ws, session).n_votes
    atomic_write_jsonl(path, pairs)
    return ExportResult(str(path), len(pairs), n_votes - len(pairs))


def to_dataset(ws: Workspace, session: str, name: str, *, overwrite: bool = False
               ) -> DatasetInfo:
    """Store the preference pairs as workspace dataset ``name``, validated by the same loader
    as any uploaded file, ready for reward-model training."""
    from morm_explorer.data.loaders import load_preference_data

    pairs = to_preference_pairs(ws, session)
    if not pairs:
        raise MormError(f"session {session!r} has no vote with a preference to export",
                        field="session")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{session}.jsonl"
        atomic_write_jsonl(path, pairs)
        dataset = load_preference_data(path, fmt="jsonl")
    return ws.save_dataset(name, dataset, overwrite=overwrite)


def to_csv(ws: Workspace, session: str, path: str | Path) -> ExportResult:
    """One row per vote (session, item, rater, texts, policies, answers, overall, comment)."""
    votes = load_votes(ws, session)
    votes.insert(0, "session", session)
    atomic_write_text(path, votes.to_csv(index=False))
    return ExportResult(str(path), len(votes))


def _comparator_pair(spec, policies: Sequence[str] | None) -> tuple[str, str]:
    pair = tuple(policies) if policies is not None else tuple(spec.policies)
    if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(spec.policies):
        raise MormError(f"LLM Comparator shows two models: choose two of the session's "
                        f"policies {list(spec.policies)}, got {list(pair)}", field="policies")
    return pair  # type: ignore[return-value]


def _example(item: pd.DataFrame, model_a: str, dims: Sequence[str], objective: str
             ) -> dict | None:
    """One viewer example from one item's votes, oriented so that A is ``model_a``."""
    first = item.iloc[0]
    swapped = first["policy_a"] != model_a  # the rater saw model A's response as B
    sign = -1.0 if swapped else 1.0
    col = answer_column
    ratings = [{"is_flipped": bool(swapped), "score": sign * VOTE_SCORE[v["ans"]],
                "rating_label": RATING_LABEL[v["ans"]], "rationale": v["comment"] or ""}
               for v in item.assign(ans=item[col(objective)]).to_dict("records")
               if v["ans"] in VOTE_SCORE]
    if not ratings:
        return None
    custom: dict[str, object] = {"item_id": str(int(first["item_id"])),
                                 "prompt_id": first["prompt_id"], "n_votes": len(item),
                                 "both_bad": int((item[col(objective)] == "both_bad").sum())}
    for d in dims:
        s = [sign * VOTE_SCORE[v] for v in item[col(d)] if v in VOTE_SCORE]
        custom[f"score_{d}"] = sum(s) / len(s) if s else 0.0
    out_a, out_b = ((first["response_b"], first["response_a"]) if swapped
                    else (first["response_a"], first["response_b"]))
    category = _text(first["category"])
    return {"input_text": first["prompt"], "tags": [category] if category else [],
            "output_text_a": out_a, "output_text_b": out_b,
            "score": sum(r["score"] for r in ratings) / len(ratings),
            "individual_rater_scores": ratings, "custom_fields": custom}


def to_llm_comparator(ws: Workspace, session: str, path: str | Path, *,
                      objective: str | None = None, policies: Sequence[str] | None = None
                      ) -> ExportResult:
    """Write the session as an LLM Comparator JSON file, one example per voted item of the
    two ``policies`` (default: the session's two), scored on ``objective`` (default: the
    first; ``"overall"`` uses the overall choices). Other objectives appear as the custom
    fields ``score_<objective>``; items with no scored vote are skipped and counted."""
    spec = get_session(ws, session).spec
    model_a, model_b = _comparator_pair(spec, policies)
    objective = objective or spec.objectives[0]
    if objective not in (*spec.objectives, "overall"):
        raise MormError(f"unknown objective {objective!r}; the session has "
                        f"{list(spec.objectives)} and 'overall'", field="objective")
    votes = load_votes(ws, session)
    votes = votes[votes.policy_a.isin([model_a, model_b]) & votes.policy_b.isin([model_a,
                                                                                  model_b])]
    dims = [d for d in spec.objectives if d != objective]
    examples, skipped = [], 0
    for _, item in votes.groupby("item_id", sort=True):
        ex = _example(item, model_a, dims, objective)
        if ex is None:
            skipped += 1
        else:
            examples.append(ex)
    schema = ([{"name": "item_id", "type": "string"}, {"name": "prompt_id", "type": "string"},
               {"name": "n_votes", "type": "number"}, {"name": "both_bad", "type": "number"}]
              + [{"name": f"score_{d}", "type": "number"} for d in dims])
    doc = {"metadata": {"source_path": f"morm-explorer rating session {session}, objective "
                                       f"{objective}", "custom_fields_schema": schema},
           "models": [{"name": model_a}, {"name": model_b}], "examples": examples,
           "rationale_clusters": []}
    atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=1))
    return ExportResult(str(path), len(examples), skipped)
