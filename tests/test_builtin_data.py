"""The built-in data of kind "model": model-written responses checked for their behaviour,
labelled pairs, no surface feature deciding an objective, the rm / judge split, and the shipped
responses reproduced by the policy."""

from __future__ import annotations

import difflib
import json

import numpy as np
import pytest

from morm_explorer.data import builtin, rlcd
from morm_explorer.data.features import (
    addresses,
    content_words,
    feature_accuracy,
    feature_baselines,
)
from morm_explorer.errors import MormError


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return builtin.generate_builtin(seed=0, kind="model")


def test_feature_accuracy_by_hand():
    # a longer in pairs 1 and 2; equal in pair 3 (half a point); labels a, b, a
    fa, fb = np.array([5.0, 9.0, 3.0]), np.array([1.0, 2.0, 3.0])
    assert feature_accuracy(fa, fb, np.array([True, False, True])) == pytest.approx(1.5 / 3)


def test_feature_baselines_take_the_better_direction():
    recs = [{"response_a": "no", "response_b": "a much longer answer", "labels": {"h": "a"}},
            {"response_a": "a much longer answer", "response_b": "ok", "labels": {"h": "b"}},
            {"response_a": "same", "response_b": "four", "labels": {"h": "tie"}}]
    row = feature_baselines(recs)["h"]
    assert row["n"] == 2 and row["length"] == 1.0  # "the shorter wins" decides both


def test_rule_checks_tell_the_behaviours_apart():
    p = "How do I pick a lock on a house door?"
    assert rlcd.check_behaviour("refuse", p, "I can't help with that. Call a locksmith.") is None
    assert rlcd.check_behaviour("refuse", p, "Sure, take a tension wrench and a pick.")
    assert rlcd.check_behaviour("comply", p, "I can't help with picking a lock.") == "refuses"
    assert rlcd.check_behaviour("comply", p, "Insert a tension wrench, then rake the lock pins.") \
        is None
    assert rlcd.check_behaviour("hedge", p, "Use a hammer and chisel on the door.") \
        == "no hedging"
    assert rlcd.check_behaviour("off_topic", p, "Penguins huddle together in the winter cold.") \
        is None
    assert rlcd.check_behaviour("off_topic", p, "Locks open with a pick inserted in the door.")
    assert rlcd.check_behaviour("comply", p, "door door door door door door door door") \
        == "repeats itself"
    assert addresses(p, "The lock has pins.") and not addresses(p, "Soup is warm.")
    assert "lock" in content_words(p) and "how" not in content_words(p)


def test_shipped_responses_cover_every_behaviour_and_are_small():
    rows = rlcd.read_responses()
    assert rlcd.SHIPPED.stat().st_size < 5 * 2**20
    assert {r["id"] for r in rows} == {j["id"] for j in rlcd.jobs(0)}
    kept, asked, n_kept = builtin.kept_responses(rows)
    assert set(asked) == set(rlcd.BEHAVIOURS)
    for behaviour in rlcd.BEHAVIOURS:  # the check drops some, never all, of each behaviour
        assert 0 < n_kept[behaviour] <= asked[behaviour]
    assert all(rlcd.check_behaviour(r["behaviour"], r["prompt"], r["response"]) is None
               for r in kept)


def test_no_single_surface_feature_decides_an_objective(records):
    table = feature_baselines(records, ["helpful", "harmless", "honest"])
    for obj, row in table.items():
        assert row["n"] > 500, obj
        assert row["best"] <= 0.65, (obj, row)


def test_model_written_pairs_are_labelled_by_behaviour(records):
    model = [r for r in records if r["meta"].get("written_by") == "smollm2"]
    assert len(model) > 300
    harmful = [r for r in model if r["category"] == "harmful"
               and {r["meta"]["behaviour_a"], r["meta"]["behaviour_b"]} == {"comply", "refuse"}]
    labels = [r["labels"].get("harmless") for r in harmful]
    right = [lab == ("a" if r["meta"]["behaviour_a"] == "refuse" else "b")
             for r, lab in zip(harmful, labels, strict=True) if lab in ("a", "b")]
    assert right and np.mean(right) > 0.9  # refusing a harmful request is the harmless one


def test_rm_and_judge_parts_share_no_prompt(records):
    rm = builtin.generate_builtin(seed=0, kind="model", part="rm")
    judge = builtin.generate_builtin(seed=0, kind="model", part="judge")
    assert len(rm) + len(judge) == len(records) and len(judge) > 0.2 * len(records)
    assert not {r["prompt"] for r in rm} & {r["prompt"] for r in judge}
    with pytest.raises(MormError, match="part"):
        builtin.generate_builtin(part="both")


def test_templates_kind_is_the_old_generator():
    from morm_explorer.data import synth

    assert builtin.generate_builtin(seed=3, kind="templates", n_prompts=12) \
        == synth.generate(seed=3, n_prompts=12)
    with pytest.raises(MormError, match="kind"):
        builtin.generate_builtin(kind="poems")


def test_cli_writes_the_model_kind(tmp_path):
    from morm_explorer.cli import main

    out = tmp_path / "d.jsonl"
    assert main(["data", "synth", "--out", str(out), "--prompts", "60"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(r["meta"].get("written_by") for r in rows)
    assert main(["data", "synth", "--kind", "templates", "--out", str(out),
                 "--prompts", "60"]) == 0
    assert not any(json.loads(x)["meta"].get("written_by") for x in out.read_text().split("\n")
                   if x)


@pytest.mark.slow
def test_the_policy_writes_the_shipped_responses_again(ws):
    """The first batch of the shipped file, generated anew exactly as `write_responses` did."""
    from morm_explorer.policy.load import load_policy

    model, tok = load_policy("smollm2", workspace=ws)
    todo = rlcd.jobs(0)[:8]
    fresh = rlcd.generate_responses(model, tok, todo, batch_size=8)
    shipped = {r["id"]: r["response"] for r in rlcd.read_responses()}
    ratios = [difflib.SequenceMatcher(None, f["response"], shipped[f["id"]]).ratio()
              for f in fresh]
    # greedy decoding: the same text, short of a float rounding that flips a late token
    assert np.mean(ratios) > 0.9 and sum(r == 1.0 for r in ratios) >= 4, ratios
