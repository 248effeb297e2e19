"""The compare job: spec validation, labels and provenance, teacher-forced log-probabilities
against a plain loop, and a comparison end to end on two tiny policies and a tiny reward model
(the same prompts and seeds for both; KL of the base from itself is zero)."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from morm_explorer.data.candidates import from_records, load_candidate_set, save_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.evaluation.compare import (
    CompareJob,
    list_comparisons,
    load_comparison,
    policy_labels,
    policy_provenance,
)
from morm_explorer.jobs.spec import JobSpec, get_job_kind
from morm_explorer.jobs.worker import run_inline
from morm_explorer.policy.likelihood import sequence_logprobs
from tests.test_policy import PROMPTS, _save_tiny

WEIGHTS = {"helpful": 0.7, "harmless": 0.3}


def _job(**over) -> CompareJob:
    return CompareJob(**{"name": "c", "policies": ["a", "b"], "reward_model": "rm", **over})


def test_spec_validation():
    assert _job(name=" my run! ").name == "my-run"
    for bad in (["a"], ["a", "b", "c", "d", "e"], ["a", "a"], "a,b", ["a", ""]):
        with pytest.raises(MormError) as e:
            _job(policies=bad)
        assert e.value.field == "policies"
    for field, value in (("reward_model", ""), ("limit", -1), ("device", "tpu"),
                         ("sampling", {"temperature": -1}), ("name", "x" * 60)):
        with pytest.raises(MormError):
            _job(**{field: value})
    with pytest.raises(MormError) as e:
        CompareJob.from_dict({"name": "c", "policies": ["a", "b"], "reward_model": "rm",
                              "judge": "j"})
    assert e.value.field == "judge"
    assert get_job_kind("compare").spec_cls is CompareJob
    assert isinstance(CompareJob.from_dict(_job().to_dict()), JobSpec)


def test_labels_and_provenance(ws, tmp_path):
    assert policy_labels(["smollm2", "/x/pol/", "/y/pol", "run1"]) == [
        "smollm2", "pol", "pol-2", "run1"]
    folder = ws.root / "policies" / "run1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "morm_ppo.json").write_text(json.dumps({
        "config": {"policy": "smollm2", "weights": WEIGHTS, "scalarizer": "chebyshev"},
        "reward_model": "rm", "weights": {"final": WEIGHTS}}))
    p = policy_provenance(ws, "run1")
    assert (p["kind"], p["base"], p["weights"], p["scalarizer"], p["reward_model"]) == (
        "ppo", "smollm2", WEIGHTS, "chebyshev", "rm")
    assert policy_provenance(ws, str(tmp_path))["kind"] == "base"


def test_sequence_logprobs_match_a_plain_loop(tmp_path):
    from morm_explorer.policy.generate import format_prompt
    from morm_explorer.policy.load import load_policy

    model, tok = load_policy(_save_tiny(tmp_path / "p"))
    responses = ["the water is hot", "yes", "", "put it in for nine minutes"]
    ends = [True, False, True, False]
    got = sequence_logprobs(model, tok, PROMPTS, responses, ends, batch_size=3)
    for i, (p, r) in enumerate(zip(PROMPTS, responses, strict=True)):
        ctx = tok(format_prompt(tok, p), add_special_tokens=False)["input_ids"]
        resp = tok(r, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id]
                                                                if ends[i] else [])
        ids = torch.tensor([ctx + resp])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)  # (T, V)
        want = sum(logp[len(ctx) + t - 1, tok_id].item() for t, tok_id in enumerate(resp))
        assert got[i] == pytest.approx(want, abs=1e-4)
    assert got[1] < 0 and got[2] < 0  # "yes" has a token; an empty response ends with eos


def _perturbed_copy(src: str, dst, base: str) -> str:
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(dst)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(dst)
    (dst / "morm_ppo.json").write_text(json.dumps({
        "format": "morm-ppo-policy", "config": {"policy": base, "weights": WEIGHTS,
                                                "scalarizer": "weighted_sum"},
        "reward_model": "rm", "weights": {"final": WEIGHTS}}))
    return str(dst)


@pytest.mark.slow
def test_compare_job_end_to_end(ws, tiny_rm, tmp_path):
    from morm_explorer.evaluation.report import comparison_report
    from morm_explorer.evaluation.stats import soup_curve

    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    base = _save_tiny(tmp_path / "base")
    tuned = _perturbed_copy(base, tmp_path / "tuned", base)
    spec = CompareJob(name="ab", policies=[base, tuned], reward_model="rm", judge_model="rm",
                      limit=3, sampling={"n": 2, "max_new_tokens": 4}, device="cpu")
    info = run_inline(ws, spec)
    assert info.status == "succeeded", info.error
    assert info.result["policies"] == ["base", "tuned"] and info.result["base_policy"] == base
    manifest = json.loads((ws.root / "comparisons" / "ab" / "comparison.json").read_text())
    assert manifest["policies"][1]["weights"] == WEIGHTS
    assert manifest["policies"][0]["kind"] == "base"
    assert manifest["sampling"]["seed"] == 0 and manifest["judge_model"]["name"] == "rm"
    frame = load_candidate_set(ws, "compare-ab").frame
    assert len(frame) == 2 * 3 * 2 == len(manifest["kl"])
    by_policy = frame.groupby("source")["prompt_id"].apply(list)
    assert by_policy["base"] == by_policy["tuned"]  # the same prompts, in the same order

    c = load_comparison(ws, "ab")
    for col in ("prompt_id", "sample", "policy", "prompt", "category", "response", "n_tokens",
                "n_chars", "rm:helpful", "rm:harmless", "judge:helpful", "judge:harmless",
                "kl"):
        assert col in c.frame, col
    assert c.policies == ["base", "tuned"] and c.baseline == "base"
    kl = c.frame.groupby("policy")["kl"].apply(np.asarray)
    assert np.abs(kl["base"]).max() < 1e-5
    assert np.abs(kl["tuned"]).max() > 1e-2
    assert np.allclose(c.frame["rm:helpful"], c.frame["judge:helpful"])  # same model twice
    assert [r["name"] for r in list_comparisons(ws)] == ["ab"]

    with pytest.raises(MormError, match="exists"):  # no silent overwrite
        from morm_explorer.evaluation.compare import run_compare
        run_compare(ws, spec)

    # A soup-like set scored by the same model gives a curve per lambda.
    records = [{**r, "source": f"soup lam={lam:g}", "meta": {"lambda": lam}}
               for lam in (0.0, 1.0)
               for r in load_candidate_set(ws, "compare-ab").records()[:3]]
    save_candidate_set(ws, "soup", from_records(records))
    curve = soup_curve(ws, "soup", "rm")
    assert curve.index.tolist() == [0.0, 1.0] and list(curve.columns) == ["helpful", "harmless"]

    out = comparison_report(c, tmp_path / "report.html", soup=curve, n_boot=200)
    parser = HTMLParser()
    parser.feed(out.read_text())  # parses
    assert "plotly-graph-div" in out.read_text() and "helpful 0.70" in out.read_text()
