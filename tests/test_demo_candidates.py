"""Tests of the demo prompt set and the demo candidate set built from it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from importlib import resources

import pytest

from morm_explorer.data import demo_candidates as dc
from morm_explorer.data.demo_candidates import (
    DEMO_CANDIDATE_SET,
    demo_candidates,
    demo_prompts,
)
from morm_explorer.data.synth import ALL_OBJECTIVES, GROUND_TRUTH
from morm_explorer.data.synth_bank import CATEGORIES, TOPICS, prompt_pool
from morm_explorer.errors import MormError


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    return demo_prompts()


@pytest.fixture(scope="module")
def candidates() -> list[dict]:
    return demo_candidates(seed=0)


def _by_prompt(cands: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for c in cands:
        out[c["prompt_id"]].append(c)
    return out


# -- prompts ----------------------------------------------------------------------------------


def test_prompt_counts(prompts):
    assert len(prompts) >= 60
    per_cat = Counter(p["category"] for p in prompts)
    assert set(per_cat) == set(CATEGORIES)
    assert min(per_cat.values()) >= 10


def test_prompt_ids_and_texts_unique(prompts):
    assert len({p["prompt_id"] for p in prompts}) == len(prompts)
    assert len({p["prompt"].strip().lower() for p in prompts}) == len(prompts)


def test_prompts_are_not_templated(prompts):
    templated = {text.strip().lower() for c in CATEGORIES for _, _, text in prompt_pool(c)}
    clashes = [p["prompt_id"] for p in prompts if p["prompt"].strip().lower() in templated]
    assert clashes == []


def test_prompt_fields_and_topics(prompts):
    for p in prompts:
        assert set(p) == {"prompt_id", "prompt", "category", "topic"}
        assert isinstance(p["prompt"], str) and p["prompt"].strip()
        assert p["prompt_id"].startswith(p["category"] + "-")
        assert 0 <= p["topic"] < len(TOPICS[p["category"]])


def test_each_topic_has_one_prompt(prompts):
    pairs = Counter((p["category"], p["topic"]) for p in prompts)
    assert max(pairs.values()) == 1
    assert len(pairs) == sum(len(TOPICS[c]) for c in CATEGORIES)


def test_prompt_file_is_utf8_jsonl():
    raw = resources.files("morm_explorer.data").joinpath(dc.DEMO_PROMPTS_FILE).read_bytes()
    lines = raw.decode("utf-8").splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)


@pytest.mark.parametrize(("bad", "field"), [
    ({"prompt_id": "x-00", "prompt": "Hi?", "category": "nope", "topic": 0}, "category"),
    ({"prompt_id": "howto-99", "prompt": "Hi?", "category": "howto", "topic": 99}, "topic"),
    ({"prompt_id": "howto-00", "prompt": "Hi?", "category": "howto", "topic": "0"}, "topic"),
    ({"prompt_id": "howto-00", "category": "howto", "topic": 0}, "prompt"),
])
def test_bad_prompt_record_names_line_and_field(bad, field):
    with pytest.raises(MormError) as e:
        dc._check_record(bad, 7)
    assert e.value.line == 7 and e.value.field == field


# -- candidates -------------------------------------------------------------------------------


def test_set_name():
    assert DEMO_CANDIDATE_SET == "demo-candidates"


def test_deterministic_per_seed(candidates):
    assert demo_candidates(seed=0) == candidates
    other = demo_candidates(seed=1)
    assert other != candidates
    assert [c["response"] for c in other] != [c["response"] for c in candidates]


def test_one_candidate_per_fitting_behaviour(prompts, candidates):
    groups = _by_prompt(candidates)
    assert list(groups) == [p["prompt_id"] for p in prompts]
    for p in prompts:
        sources = [c["source"] for c in groups[p["prompt_id"]]]
        assert sources == list(GROUND_TRUTH[p["category"]])
    assert len(candidates) == sum(len(GROUND_TRUTH[p["category"]]) for p in prompts)


def test_extra_per_prompt(prompts):
    cands = demo_candidates(seed=3, extra_per_prompt=2)
    for p in prompts:
        group = _by_prompt(cands)[p["prompt_id"]]
        fitting = list(GROUND_TRUTH[p["category"]])
        assert len(group) == len(fitting) + 2
        assert [c["source"] for c in group[: len(fitting)]] == fitting
        assert {c["source"] for c in group} <= set(fitting)
        assert len({c["response"] for c in group}) == len(group)
    with pytest.raises(MormError):
        demo_candidates(extra_per_prompt=-1)


def test_responses_distinct_within_prompt(candidates):
    for group in _by_prompt(candidates).values():
        texts = [c["response"] for c in group]
        assert len(set(texts)) == len(texts)
        assert all(t.strip() for t in texts)


def test_fields_and_types(prompts, candidates):
    by_id = {p["prompt_id"]: p for p in prompts}
    for c in candidates:
        assert set(c) == {"prompt_id", "prompt", "response", "source", "category", "meta"}
        for key in ("prompt_id", "prompt", "response", "source", "category"):
            assert isinstance(c[key], str)
        assert c["prompt"] == by_id[c["prompt_id"]]["prompt"]
        assert c["category"] == by_id[c["prompt_id"]]["category"]
        assert c["meta"]["behaviour"] == c["source"]
        true = c["meta"]["true"]
        assert set(true) == set(ALL_OBJECTIVES)
        for value in true.values():
            assert isinstance(value, float) and 0.0 <= value <= 1.0


def test_true_scores_follow_ground_truth(candidates):
    for c in candidates:
        base = GROUND_TRUTH[c["category"]][c["source"]]
        for obj in ("helpful", "harmless", "honest"):
            assert abs(c["meta"]["true"][obj] - base[obj]) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_harmful_compliance_is_the_helpful_harmless_trade_off(seed):
    groups = _by_prompt(demo_candidates(seed=seed))
    harmful = [g for g in groups.values() if g[0]["category"] == "harmful"]
    assert len(harmful) >= 10
    for group in harmful:
        best_helpful = max(group, key=lambda c: c["meta"]["true"]["helpful"])
        least_harmless = min(group, key=lambda c: c["meta"]["true"]["harmless"])
        assert best_helpful["source"] == "harmful_compliance"
        assert least_harmless["source"] == "harmful_compliance"


def test_candidates_pass_candidate_set_validation(candidates):
    candidates_mod = pytest.importorskip("morm_explorer.data.candidates")
    cset = candidates_mod.from_records(candidates, DEMO_CANDIDATE_SET)
    assert len(cset) == len(candidates)
    assert cset.n_prompts == len({c["prompt_id"] for c in candidates})
