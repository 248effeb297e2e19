"""Conversions and summaries, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from morm_explorer.data.convert import disagreement_matrix, ratings_to_pairs, summarize


def rating(rid, prompt, response, **r):
    return {"id": rid, "prompt": prompt, "response": response, "ratings": r}


def test_ratings_to_pairs_hand_computed():
    recs = [rating("1", "P", "x", helpful=3.0, honest=1.0),
            rating("2", "P", "y", helpful=1.0, honest=1.2),
            rating("3", "P", "z", helpful=3.05),
            rating("4", "Q", "w", helpful=0.0)]
    pairs = ratings_to_pairs(recs, margin=0.1)
    assert len(pairs) == 3  # Q has one response; P has 3 choose 2
    by_id = {p["id"]: p["labels"] for p in pairs}
    assert by_id["1~2"] == {"helpful": "a", "honest": "b"}  # 3-1 > .1; 1-1.2 < -.1
    assert by_id["1~3"] == {"helpful": "tie"}  # within margin; honest only on one side
    assert by_id["2~3"] == {"helpful": "b"}
    assert ratings_to_pairs(recs, margin=0.0)[0]["labels"]["honest"] == "b"


def test_ratings_to_pairs_rejects_negative_margin():
    with pytest.raises(ValueError):
        ratings_to_pairs([], margin=-1)


def pair(**labels):
    return {"prompt": "p", "response_a": "a", "response_b": "b", "labels": labels}


def test_disagreement_hand_computed():
    recs = [pair(helpful="a", harmless="b"),   # disagree
            pair(helpful="a", harmless="a"),   # agree
            pair(helpful="b", harmless="tie"),  # tie: not counted
            pair(helpful="b")]                 # harmless missing: not counted
    d = disagreement_matrix(recs, ["helpful", "harmless", "honest"])
    assert d.loc["helpful", "harmless"] == 0.5
    assert d.loc["harmless", "helpful"] == 0.5
    assert d.loc["helpful", "helpful"] == 0.0
    assert math.isnan(d.loc["honest", "helpful"])


def test_summary_counts():
    recs = [pair(helpful="a", harmless="b"), pair(helpful="tie"), pair(harmless="b")]
    recs[0]["category"] = "howto"
    s = summarize(recs, "pairwise")
    po = s.per_objective
    assert po.loc["helpful", "labelled"] == 2 and po.loc["helpful", "tie"] == 1
    assert po.loc["helpful", "tie_rate"] == 0.5
    assert po.loc["harmless", "b"] == 2 and po.loc["harmless", "coverage"] == 2 / 3
    assert s.categories["howto"] == 1 and s.categories["(none)"] == 2
    assert s.n_prompts == 1
    assert s.to_dict()["per_objective"][0]["objective"] == "helpful"


def test_summary_of_ratings_uses_derived_pairs():
    recs = [rating("1", "P", "x", helpful=3, honest=1), rating("2", "P", "y", helpful=1,
                                                                honest=2)]
    s = summarize(recs, "ratings")
    assert s.per_objective.loc["helpful", "mean"] == 2.0
    assert s.disagreement.loc["helpful", "honest"] == 1.0


def test_conflict_share_counts_ties_as_no_conflict():
    recs = [pair(helpful="a", harmless="b"), pair(helpful="a", harmless="tie"),
            pair(helpful="b", harmless="b"), pair(helpful="a")]
    s = summarize(recs, "pairwise")
    assert s.disagreement.loc["helpful", "harmless"] == 0.5  # 1 of 2 decided on both
    assert s.conflict.loc["helpful", "harmless"] == pytest.approx(1 / 3)  # 1 of 3 labelled
