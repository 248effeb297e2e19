"""The sampling job: prompts in, a stored candidate set out; failures leave nothing behind."""

from __future__ import annotations

import json

import pytest

from morm_explorer.data.candidates import list_candidate_sets, load_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.jobs.worker import run_inline
from morm_explorer.policy.jobs import SampleCandidatesJob, load_prompts
from tests.test_policy import _save_tiny


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> str:
    return _save_tiny(tmp_path_factory.mktemp("tiny-policy"))


def test_sample_job_builds_a_candidate_set(ws, tiny_policy, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"how do i boil an egg {i}",
                                           "category": "howto"}) + "\n" for i in range(3)))
    spec = SampleCandidatesJob(name="s", policy=tiny_policy, prompts=str(prompts),
                               sampling={"n": 2, "max_new_tokens": 5, "seed": 3},
                               device="cpu")
    info = run_inline(ws, spec)
    assert info.status == "succeeded", info.error
    assert info.result == {"name": "s", "n_candidates": 6, "n_prompts": 3}
    frame = load_candidate_set(ws, "s").frame
    assert frame["prompt_id"].tolist() == ["p1", "p1", "p2", "p2", "p3", "p3"]
    assert set(frame["source"]) == {tiny_policy.rstrip("/").split("/")[-1]}
    meta = json.loads(frame["meta"].iloc[1])
    assert meta["sample"] == 1 and meta["seed"] == 3 and meta["n_tokens"] <= 5
    again = run_inline(ws, spec)  # the name is taken: fails, the stored set is untouched
    assert again.status == "failed" and "exists" in again.error
    assert [c.n_candidates for c in list_candidate_sets(ws)] == [6]


def test_spec_validation_and_demo_prompts():
    with pytest.raises(MormError, match="temperature"):
        SampleCandidatesJob(name="s", sampling={"temperature": -1})
    with pytest.raises(MormError, match="unknown SamplingConfig"):
        SampleCandidatesJob(name="s", sampling={"beams": 3})
    with pytest.raises(MormError, match="invalid name"):
        SampleCandidatesJob(name="../")
    demo = load_prompts("demo", limit=5)
    assert len(demo) == 5 and set(demo[0]) == {"prompt_id", "prompt", "category"}
    assert len(load_prompts("demo")) >= 60


def test_the_demo_prompts_split_into_a_training_part_and_a_held_out_part():
    from morm_explorer.policy.jobs import DEMO_HELDOUT, load_prompts

    every = load_prompts("demo")
    train, held = load_prompts("demo-train"), load_prompts("demo-heldout")
    assert len(held) == DEMO_HELDOUT and len(train) + len(held) == len(every)
    assert not {p["prompt_id"] for p in train} & {p["prompt_id"] for p in held}
    cats = {p["category"] for p in every}
    assert {p["category"] for p in held} == cats == {p["category"] for p in train}
    assert [p["prompt_id"] for p in load_prompts("demo-heldout", 5)] == [
        p["prompt_id"] for p in held[:5]]
