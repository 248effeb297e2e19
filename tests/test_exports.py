"""Exports of a rating session: preference pairs that re-import as the same pairs (and as a
workspace dataset), CSV with one row per vote, and LLM Comparator JSON."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from morm_explorer.data.loaders import load_preference_data
from morm_explorer.errors import MormError
from morm_explorer.evaluation.exports import (
    to_csv,
    to_dataset,
    to_llm_comparator,
    to_preference_pairs,
    write_pairs_jsonl,
)
from morm_explorer.evaluation.sessions import create_session, item_view, join, vote
from tests.test_sessions import items, make_set

# (helpful, harmless, overall, comment) per (item index, rater).
VOTES = {
    (0, "ann"): ("a", "b", "a", "clearer"),
    (0, "bob"): ("a", "tie", None, ""),
    (1, "ann"): ("both_bad", "both_bad", "both_bad", "neither answers"),  # no label: skipped
    (1, "bob"): ("b", "both_bad", "b", ""),  # harmless unlabelled
    (2, "ann"): ("tie", "a", None, "same \"quality\", a, b"),
}


@pytest.fixture
def voted(ws):
    make_set(ws, n_prompts=4, category=None)
    create_session(ws, "s", "cs", objectives=["helpful", "harmless"])
    for r in ("ann", "bob"):
        join(ws, "s", r)
    rows = items(ws, "s")
    for (i, rater), (h, s, o, c) in VOTES.items():
        vote(ws, "s", rows[i]["item_id"], rater, {"helpful": h, "harmless": s}, o, c)
    return ws, rows


def test_pairs_follow_the_shown_order_and_skip_both_bad(voted):
    ws, rows = voted
    pairs = to_preference_pairs(ws, "s")
    assert len(pairs) == 4 and len({p["id"] for p in pairs}) == 4
    by_id = {p["id"]: p for p in pairs}
    assert "s-2-ann" not in by_id  # both_bad on every objective
    first = by_id["s-1-ann"]
    view = item_view(ws, "s", 1)
    assert (first["prompt"], first["response_a"], first["response_b"]) == \
        (view.prompt, view.response_a, view.response_b)
    assert first["labels"] == {"helpful": "a", "harmless": "b"}
    assert first["meta"] == {"session": "s", "item_id": 1, "prompt_id": rows[0]["prompt_id"],
                             "rater": "ann", "policy_a": rows[0]["policy_a"],
                             "policy_b": rows[0]["policy_b"],
                             "flipped": bool(rows[0]["flipped"]), "overall": "a",
                             "comment": "clearer"}
    assert by_id["s-2-bob"]["labels"] == {"helpful": "b"}
    assert "category" not in first  # the set has none


def test_export_then_import_gives_the_same_pairs(voted, tmp_path):
    ws, _ = voted
    path = tmp_path / "pairs.jsonl"
    res = write_pairs_jsonl(ws, "s", path)
    assert (res.n_records, res.n_skipped) == (4, 1)
    loaded = load_preference_data(path, fmt="jsonl")
    assert loaded.kind == "pairwise" and loaded.report.ok
    assert loaded.records == to_preference_pairs(ws, "s")
    assert set(loaded.objectives) == {"helpful", "harmless"}
    info = to_dataset(ws, "s", "s-votes")
    assert info.n_records == 4 and info.kind == "pairwise"
    assert ws.load_dataset("s-votes").records == loaded.records
    with pytest.raises(MormError, match="exists"):
        to_dataset(ws, "s", "s-votes")


def test_csv_has_one_row_per_vote(voted, tmp_path):
    ws, rows = voted
    path = tmp_path / "votes.csv"
    assert to_csv(ws, "s", path).n_records == len(VOTES)
    frame = pd.read_csv(path, keep_default_na=False)
    assert len(frame) == len(VOTES)
    assert {"session", "item_id", "rater", "policy_a", "policy_b", "flipped", "answer:helpful",
            "answer:harmless", "overall", "comment", "cast_at"} <= set(frame.columns)
    got = {(int(r.item_id), r.rater): (r["answer:helpful"], r["answer:harmless"], r.comment)
           for _, r in frame.iterrows()}
    for (i, rater), (h, s, _, c) in VOTES.items():
        assert got[(rows[i]["item_id"], rater)] == (h, s, c)


def test_llm_comparator_json(voted, tmp_path):
    ws, rows = voted
    path = tmp_path / "comparator.json"
    res = to_llm_comparator(ws, "s", path, policies=["beta", "alpha"])
    doc = json.loads(path.read_text())
    assert set(doc) == {"metadata", "models", "examples", "rationale_clusters"}
    assert doc["models"] == [{"name": "beta"}, {"name": "alpha"}]
    assert {f["name"] for f in doc["metadata"]["custom_fields_schema"]} >= {"score_harmless"}
    # Item 2 has only bob's helpful vote (b); item 3 ann's tie; item 4 no votes.
    assert res.n_records == len(doc["examples"]) == 3
    for ex in doc["examples"]:
        item = rows[int(ex["custom_fields"]["item_id"]) - 1]
        by_policy = {item["policy_a"]: item["response_a"], item["policy_b"]: item["response_b"]}
        assert (ex["output_text_a"], ex["output_text_b"]) == (by_policy["beta"],
                                                              by_policy["alpha"])
        assert ex["input_text"] == item["prompt"] and ex["tags"] == []
        assert -1.5 <= ex["score"] <= 1.5
        for r in ex["individual_rater_scores"]:
            assert r["is_flipped"] == (item["policy_a"] != "beta")
            assert set(r) == {"is_flipped", "score", "rating_label", "rationale"}
    first = next(ex for ex in doc["examples"] if ex["custom_fields"]["item_id"] == "1")
    # Both raters chose the response shown as A on helpful: +1 for beta if beta was shown as A.
    want = 1.0 if rows[0]["policy_a"] == "beta" else -1.0
    assert first["score"] == want
    assert [r["score"] for r in first["individual_rater_scores"]] == [want, want]
    # harmless: ann chose the response shown as B, bob a tie: a mean of -want / 2.
    assert first["custom_fields"]["score_harmless"] == pytest.approx(-want / 2)
    overall = to_llm_comparator(ws, "s", tmp_path / "o.json", objective="overall")
    assert overall.n_records == 2  # item 1 (ann: a) and item 2 (bob: b)


def test_llm_comparator_refuses_unclear_choices(ws, tmp_path):
    make_set(ws, n_prompts=3, policies=("alpha", "beta", "gamma"))
    create_session(ws, "s", "cs", objectives=["helpful"])
    with pytest.raises(MormError) as e:
        to_llm_comparator(ws, "s", tmp_path / "x.json")
    assert e.value.field == "policies"
    with pytest.raises(MormError) as e:
        to_llm_comparator(ws, "s", tmp_path / "x.json", policies=["alpha", "beta"],
                          objective="honest")
    assert e.value.field == "objective"
    assert not (tmp_path / "x.json").exists()
