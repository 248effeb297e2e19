"""Composite rewards: parts from external models, rules and Python reward functions, scored
exactly as the parts score on their own, with consent recorded for code."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from morm_explorer.errors import MormError
from morm_explorer.reward import rules
from morm_explorer.reward.artifact import load_reward_model
from morm_explorer.reward.composite import CompositeRewardModel, compose
from morm_explorer.reward.external import ExternalConfig, add_external
from morm_explorer.reward.report import list_reward_models
from morm_explorer.scoring import score_candidate_set
from tests.test_external_rm import LABELS3, PROMPTS, RESPONSES, add_reference, save_bert

FUNCTIONS = '''
import math, time

def words(prompts, completions, **kwargs):
    return [float(len(c.split())) if "?" in p else None for p, c in zip(prompts, completions)]

def raises(prompts, completions, **kwargs):
    raise ValueError("no score for you")

def short(prompts, completions, **kwargs):
    return [1.0] * (len(completions) - 1)

def nan(prompts, completions, **kwargs):
    return [math.nan for _ in completions]

def text(prompts, completions, **kwargs):
    return ["high" for _ in completions]

def slow(prompts, completions, **kwargs):
    time.sleep(60)
    return [0.0 for _ in completions]
'''


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("parts")
    return {"a": save_bert(root / "a", seed=2), "b": save_bert(root / "b", seed=3),
            "three": save_bert(root / "three", 3, LABELS3, seed=4)}


@pytest.fixture
def parts_ws(ws, folders):
    """A workspace with a reference set and three external models: rm-a, rm-b (one output
    each) and rm-3 (helpful, harmless, honest)."""
    add_reference(ws)
    for name, key in (("rm-a", "a"), ("rm-b", "b"), ("rm-3", "three")):
        add_external(ws, name, ExternalConfig(model=folders[key]), reference="ref")
    return ws


def code_file(tmp_path) -> str:
    path = tmp_path / "funcs.py"
    path.write_text(textwrap.dedent(FUNCTIONS))
    return str(path)


def test_scores_exactly_as_its_parts(parts_ws):
    ws = parts_ws
    path = compose(ws, "combo", ["helpful=rm-a", "harmless=rm-b", "safe=rm-3:harmless",
                                 "brevity=rule:length"], reference="ref")
    model = load_reward_model(path)
    assert isinstance(model, CompositeRewardModel)
    assert model.objectives == ["helpful", "harmless", "safe", "brevity"]
    got = model.score(PROMPTS, RESPONSES, batch_size=3)  # (N, 4)
    a = load_reward_model(ws.root / "reward_models" / "rm-a").score(PROMPTS, RESPONSES,
                                                                    batch_size=3)
    b = load_reward_model(ws.root / "reward_models" / "rm-b").score(PROMPTS, RESPONSES,
                                                                    batch_size=3)
    three = load_reward_model(ws.root / "reward_models" / "rm-3").score(PROMPTS, RESPONSES,
                                                                        batch_size=3)
    assert np.array_equal(got[:, 0], a[:, 0]) and np.array_equal(got[:, 1], b[:, 0])
    assert np.array_equal(got[:, 2], three[:, 1])
    assert got[:, 3].tolist() == [len(r.split()) for r in RESPONSES]
    config = json.loads((path / "config.json").read_text())
    assert config["kind"] == "composite" and config["allow_code"] is False
    assert [p["spec"] for p in config["parts"]] == ["rm-a", "rm-b", "rm-3:harmless",
                                                    "rule:length"]
    assert len(config["stats"]["mean"]) == 4 and config["stats"]["n"] == 12
    row = next(r for r in list_reward_models(ws) if r["name"] == "combo")
    assert row["kind"] == "composite" and "brevity=rule:length" in row["source"]
    scores = score_candidate_set(ws, "combo", "ref", device="cpu")
    assert scores.values.shape == (12, 4) and scores.objectives == model.objectives


def test_rules():
    texts = ["I can't help with that.", '{"a": 1}', "```json\n[1, 2]\n```", "plain words here"]
    assert rules.rule_scores("refusal", "", texts, "r").tolist() == [1, 0, 0, 0]
    assert rules.rule_scores("format", "json", texts, "f").tolist() == [0, 1, 1, 0]
    assert rules.rule_scores("regex", r"\bwords?\b", texts, "g").tolist() == [0, 0, 0, 1]
    assert rules.rule_scores("length", "", texts, "n").tolist() == [5, 2, 4, 3]


def test_a_pattern_that_backtracks_is_stopped(monkeypatch):
    monkeypatch.setattr(rules, "REGEX_SECONDS", 0.2)
    with pytest.raises(MormError, match="part 'g': the pattern ran past its time limit"):
        rules.rule_scores("regex", r"(x+x+)+y", ["x" * 5000], "g")


def test_python_part_with_consent(parts_ws, tmp_path):
    ws, file = parts_ws, code_file(tmp_path)
    spec = f"words=py:{file}:words"
    with pytest.raises(MormError, match="needs consent"):
        compose(ws, "code", [spec], reference="ref")
    path = compose(ws, "code", ["helpful=rm-a", spec], reference="ref", allow_code=True)
    config = json.loads((path / "config.json").read_text())
    assert config["allow_code"] is True and config["parts"][1]["file"] == file
    got = load_reward_model(path).score(PROMPTS, RESPONSES, batch_size=2)
    expected = [len(r.split()) if "?" in p else np.nan for p, r in zip(PROMPTS, RESPONSES,
                                                                      strict=True)]
    np.testing.assert_array_equal(got[:, 1], np.array(expected, dtype=np.float32))
    assert config["stats"]["n_scored"] == [12, 3]  # None is missing, not zero

    # consent covers the code as it was, and only a manifest that records it
    (path / "config.json").write_text(json.dumps({**config, "allow_code": False}))
    with pytest.raises(MormError, match="needs consent"):
        load_reward_model(path)
    (path / "config.json").write_text(json.dumps(config))
    with open(file, "a") as fh:
        fh.write("\n# changed\n")
    with pytest.raises(MormError, match="gone or changed"):
        load_reward_model(path)


@pytest.mark.parametrize("function, message", [
    ("raises", "raised ValueError: no score for you"),
    ("short", "returned 11 values for a batch of 12 completions"),
    ("nan", "returned nan for completion 0"),
    ("text", "returned str 'high' for completion 0"),
    ("slow", "ran past its time limit of 1 s per batch"),
])
def test_bad_reward_functions_store_nothing(parts_ws, tmp_path, function, message):
    ws, file = parts_ws, code_file(tmp_path)
    with pytest.raises(MormError, match=f"part 'f'.*{message}"):
        compose(ws, "bad", [f"f=py:{file}:{function}"], reference="ref", allow_code=True,
                time_limit=1.0)
    assert not (ws.root / "reward_models" / "bad").exists()


def test_part_refusals(parts_ws):
    ws = parts_ws
    with pytest.raises(MormError, match="has 3 objectives; pick one: rm-3:helpful"):
        compose(ws, "x", ["h=rm-3"], reference="ref")
    with pytest.raises(MormError, match="has no objective 'kind'"):
        compose(ws, "x", ["h=rm-3:kind"], reference="ref")
    with pytest.raises(MormError, match="no reward model named 'nope'"):
        compose(ws, "x", ["h=nope"], reference="ref")
    with pytest.raises(MormError, match="unknown rule 'size'"):
        compose(ws, "x", ["h=rule:size"], reference="ref")
    with pytest.raises(MormError, match="expected OBJECTIVE=SPEC"):
        compose(ws, "x", ["rm-a"], reference="ref")
    with pytest.raises(MormError, match="two parts for one objective"):
        compose(ws, "x", ["h=rm-a", "h=rm-b"], reference="ref")
    compose(ws, "c", ["h=rm-a"], reference="ref")
    with pytest.raises(MormError, match="is a composite; compose from its parts"):
        compose(ws, "x", ["h=c"], reference="ref")
    assert not (ws.root / "reward_models" / "x").exists()


def test_cli_compose(parts_ws, capsys, tmp_path):
    from morm_explorer.cli import main

    root = ["--workspace", str(parts_ws.root)]
    file = code_file(tmp_path)
    argv = [*root, "rm", "compose", "combo", "--part", "helpful=rm-a", "--part",
            "refuses=rule:refusal", "--part", f"words=py:{file}:words", "--reference", "ref",
            "--device", "cpu"]
    assert main(argv) == 2
    assert "needs consent (--allow-code" in capsys.readouterr().err
    assert main([*argv, "--allow-code"]) == 0
    assert "composed" in capsys.readouterr().out
    assert main([*root, "rm", "list"]) == 0
    assert "source: helpful=rm-a, refuses=rule:refusal, words=py:" in capsys.readouterr().out


@pytest.mark.slow
def test_ppo_job_with_a_composite_reward(parts_ws, tmp_path):
    """A PPO run rewarded by a composite of an external model and a rule: the job loads it by
    name through the one loader and logs one score per objective."""
    from morm_explorer.jobs.store import JobStore
    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.policy.ppo_jobs import PPOJob
    from tests.test_policy import _save_tiny

    compose(parts_ws, "combo", ["helpful=rm-a", "brevity=rule:length"], reference="ref")
    config = dict(name="p", policy=_save_tiny(tmp_path / "policy"), reward_model="combo",
                  steps=2, batch_size=4, mini_batch_size=2, max_new_tokens=6, lr=1e-2,
                  device="cpu", checkpoint_every=0, sample_every=0)
    info = run_inline(parts_ws, PPOJob(config=config))
    assert info.status == "succeeded", info.error
    metrics = JobStore(parts_ws).metrics(info.id, wide=True)
    assert len(metrics) == 2
    assert {"objective/scores/helpful", "objective/scores/brevity"} <= set(metrics)
