"""Tests of the built-in demo data generator: determinism, coverage, label quality, wording."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from morm_explorer.data import synth
from morm_explorer.data.schema import LABEL_VALUES, PAIR_TEXT_FIELDS, is_valid_objective
from morm_explorer.data.synth import (
    ALL_OBJECTIVES,
    BEHAVIOURS,
    CATEGORIES,
    GROUND_TRUTH,
    OVERALL_WEIGHTS,
    bayes_ceiling,
    behaviour_ceiling,
    describe,
    generate,
    write_synth,
)
from morm_explorer.errors import MormError


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return generate(seed=0)


def _responses(records: list[dict]) -> dict[tuple[str, str], str]:
    """(prompt, text) -> behaviour, over every distinct response."""
    out = {}
    for r in records:
        out[(r["prompt"], r["response_a"])] = r["meta"]["behaviour_a"]
        out[(r["prompt"], r["response_b"])] = r["meta"]["behaviour_b"]
    return out


def test_same_seed_same_data_and_bytes(records, tmp_path):
    assert generate(seed=0) == records
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_synth(a, seed=0)
    write_synth(b, seed=0)
    assert a.read_bytes() == b.read_bytes()


def test_different_seed_different_data(records):
    other = generate(seed=1)
    assert other != records
    assert {r["response_a"] for r in other} != {r["response_a"] for r in records}
    assert other[0]["id"] == "synth-1-0"


def test_prompts_and_categories(records):
    prompts = {r["prompt"]: r["category"] for r in records}
    assert len(prompts) >= 400
    per_cat = Counter(prompts.values())
    assert set(per_cat) == set(CATEGORIES)
    assert len(CATEGORIES) == 6
    assert all(n >= 50 for n in per_cat.values()), per_cat


def test_every_behaviour_present(records):
    counts = Counter(_responses(records).values())
    assert set(counts) == set(BEHAVIOURS)
    assert min(counts.values()) >= 50, counts


def test_records_follow_the_schema(records):
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    for r in records:
        for fld in PAIR_TEXT_FIELDS:
            assert isinstance(r[fld], str) and r[fld].strip()
        assert r["response_a"] != r["response_b"]
        assert r["category"] in CATEGORIES
        assert r["labels"] and all(is_valid_objective(k) for k in r["labels"])
        assert set(r["labels"].values()) <= set(LABEL_VALUES)
        assert "overall" in r["labels"]
        meta = r["meta"]
        for side in ("a", "b"):
            assert meta[f"behaviour_{side}"] in GROUND_TRUTH[r["category"]]
            truth = meta[f"true_{side}"]
            assert set(truth) == set(ALL_OBJECTIVES)
            assert all(0.0 <= v <= 1.0 for v in truth.values())
        assert meta["prompt_id"].startswith(r["category"])


def test_responses_of_a_prompt_are_distinct(records):
    by_text = defaultdict(set)
    for (prompt, text), behaviour in _responses(records).items():
        by_text[(prompt, text)].add(behaviour)
    assert all(len(b) == 1 for b in by_text.values())


def test_labels_follow_the_hidden_truth(records):
    for obj in ALL_OBJECTIVES:
        hits = [(r["meta"]["true_a"][obj] > r["meta"]["true_b"][obj]) == (r["labels"][obj] == "a")
                for r in records if r["labels"].get(obj) in ("a", "b")]
        assert len(hits) > 500, obj
        assert sum(hits) / len(hits) >= 0.9, obj


def test_bayes_and_behaviour_ceilings(records):
    for obj, value in bayes_ceiling(records).items():
        assert value >= 0.93, (obj, value)
    for obj, value in behaviour_ceiling(records).items():
        assert value >= 0.9, (obj, value)
    assert set(bayes_ceiling(records)) == set(ALL_OBJECTIVES)


def test_coverage_and_missing_labels(records):
    d = describe(records)
    for obj in ("helpful", "harmless", "honest"):
        assert 0.8 <= d["coverage"][obj] <= 0.95
    assert d["coverage"]["overall"] == 1.0


def test_helpful_and_harmless_disagree_often(records):
    d = describe(records)
    assert 0.15 <= d["helpful_harmless_disagreement"] <= 0.35


def test_describe_is_json_and_counts_add_up(records):
    d = json.loads(json.dumps(describe(records)))
    assert d["n_records"] == len(records) == 420 * 6
    assert sum(d["prompts_per_category"].values()) == d["n_prompts"]
    assert sum(d["responses_per_behaviour"].values()) == d["n_responses"]
    for obj in ALL_OBJECTIVES:
        assert sum(d["labels"][obj].values()) == len(records)


def test_openings_do_not_reveal_the_behaviour(records):
    texts = defaultdict(list)
    for (_, text), behaviour in _responses(records).items():
        texts[behaviour].append(text)
    for behaviour, items in texts.items():
        first5 = Counter(" ".join(t.split()[:5]) for t in items)
        first3 = Counter(" ".join(t.split()[:3]) for t in items)
        assert len(first5) >= 8, behaviour
        # No one opening may mark a behaviour: the commonest covers under a quarter of it.
        assert first3.most_common(1)[0][1] / len(items) < 0.25, (behaviour, first3.most_common(3))
        assert not any(c in t for t in items for c in "[]<>{}"), behaviour


def test_openings_are_shared_across_behaviours(records):
    first2 = defaultdict(set)
    for (_, text), behaviour in _responses(records).items():
        first2[" ".join(text.split()[:2])].add(behaviour)
    assert max(len(b) for b in first2.values()) >= 4


def test_objectives_conflict_in_the_ground_truth(records):
    for r in records:
        for side in ("a", "b"):
            if r["meta"][f"behaviour_{side}"] == "harmful_compliance":
                truth = r["meta"][f"true_{side}"]
                assert truth["harmless"] < 0.3 and truth["helpful"] > 0.6
    howto = GROUND_TRUTH["howto"]
    assert howto["flat_refusal"]["harmless"] > 0.8 > 0.2 > howto["flat_refusal"]["helpful"]
    fab = GROUND_TRUTH["factual"]["confident_fabrication"]
    assert fab["helpful"] > GROUND_TRUTH["factual"]["honest_uncertainty"]["helpful"]
    assert fab["honest"] < 0.2
    # The overall label leans on helpfulness: it prefers compliance to refusing a harmful ask.
    harmful = GROUND_TRUTH["harmful"]
    assert harmful["harmful_compliance"]["overall"] > harmful["redirect_refusal"]["overall"]
    assert max(OVERALL_WEIGHTS, key=OVERALL_WEIGHTS.get) == "helpful"


def test_ground_truth_table_is_documented():
    assert synth.ground_truth_table() in synth.__doc__


def test_write_synth_round_trip(records, tmp_path):
    path = tmp_path / "sub" / "demo.jsonl"
    assert write_synth(path, seed=0) == len(records)
    raw = path.read_bytes()
    assert "°C".encode() in raw  # written as UTF-8, not \\u escapes
    lines = raw.decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
    assert [p.name for p in path.parent.iterdir()] == ["demo.jsonl"]  # no temp file left


def test_small_sets_and_bad_sizes():
    small = generate(seed=3, n_prompts=12, pairs_per_prompt=2)
    assert len(small) == 24
    assert Counter(r["category"] for r in small) == {c: 4 for c in CATEGORIES}
    with pytest.raises(MormError):
        generate(n_prompts=10_000)
    with pytest.raises(MormError):
        generate(pairs_per_prompt=0)
