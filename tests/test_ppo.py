"""Multi-objective PPO (morm_explorer.policy.ppo, ppo_config, ppo_jobs) on a tiny random Llama
with a word-level tokenizer, and rewards the tests define: objective A is the share of "yes"
words in a response, objective B the share of "no" words."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from morm_explorer.errors import MormError
from morm_explorer.policy.ppo_config import PPOConfig
from tests.conftest import REPO
from tests.test_policy import _save_tiny

OBJECTIVES = ["A", "B"]


def word_reward(prompts: list[str], responses: list[str]) -> np.ndarray:
    """(N, 2): the shares of "yes" and of "no" among a response's words."""
    rows = []
    for r in responses:
        words = r.split()
        n = max(len(words), 1)
        rows.append([words.count("yes") / n, words.count("no") / n])
    return np.array(rows)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return _save_tiny(tmp_path_factory.mktemp("tiny-ppo-policy"))


def _cfg(policy: str, **kw) -> PPOConfig:
    base = dict(name="t", policy=policy, steps=30, batch_size=16, mini_batch_size=8, lr=3e-3,
                lora=False, max_new_tokens=8, temperature=1.0, kl_coef=0.01, device="cpu",
                checkpoint_every=0, sample_every=0, weights={"A": 1.0, "B": 0.0})
    return PPOConfig(**{**base, **kw})


def _train(cfg: PPOConfig, run_dir, **kw) -> dict:
    from morm_explorer.policy.ppo import train_ppo

    return train_ppo(cfg, run_dir, reward_fn=word_reward, objectives=OBJECTIVES, **kw)


def _curve(history: list[dict], key: str) -> np.ndarray:
    return np.array([m[key] for m in history])


def _comparable(history: list[dict]) -> list[dict]:
    """Metrics without the wall-clock ones."""
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "tokens/"))}
            for m in history]


# -- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, fld", [
    ({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"top_p": 0.0}, "top_p"),
    ({"batch_size": 4, "mini_batch_size": 8}, "mini_batch_size"),
    ({"weights": {"A": -1.0}}, "weights.A"), ({"weights": {"A": float("nan")}}, "weights.A"),
    ({"scalarizer": "max"}, "scalarizer"), ({"device": "tpu"}, "device"),
    ({"weight_schedule": [{"step": 5, "weights": {"A": 1}}, {"step": 5, "weights": {"B": 1}}]},
     "weight_schedule[1].step"),
    ({"weight_schedule": [{"step": 0, "weights": {}}]}, "weight_schedule[0].weights"),
    ({"weight_schedule": [{"step": 0, "weight": {"A": 1}}]}, "weight_schedule[0]"),
    ({"constraints": [{"objective": "A", "threshold": float("inf")}]},
     "constraints[0].threshold"),
    ({"constraints": [{"objective": "A"}]}, "constraints[0]"),
    ({"missing_eos_penalty": -1.0}, "missing_eos_penalty"), ({"lora": "yes"}, "lora"),
])
def test_config_rejects_bad_values(bad, fld):
    with pytest.raises(MormError) as e:
        PPOConfig(**bad)
    assert e.value.field == fld


def test_config_round_trip_and_schedule():
    with pytest.raises(MormError, match="unknown PPOConfig fields: beams") as e:
        PPOConfig.from_dict({"beams": 2})
    assert e.value.field == "beams"
    cfg = PPOConfig(weight_schedule=[{"step": 2, "weights": {"A": 1.0}},
                                     {"step": 6, "weights": {"A": 0.0, "B": 2.0}}])
    assert PPOConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.weights_at(0) == {"A": 1.0}  # before the first point
    assert cfg.weights_at(3) == pytest.approx({"A": 0.75, "B": 0.5})
    assert cfg.weights_at(6) == cfg.weights_at(60) == {"A": 0.0, "B": 2.0}
    assert PPOConfig(weights={"B": 2.0}).weights_at(7) == {"B": 2.0}
    both = PPOConfig(weights={"B": 1.0}, weight_schedule=[{"step": 0, "weights": {"A": 1.0}}])
    assert both.weights_at(0) == {"A": 1.0}  # the schedule wins
    assert PPOConfig().weights_at(0) == {}  # equal weights, resolved by the trainer


def test_config_and_job_modules_do_not_import_torch():
    code = ("import sys, morm_explorer.policy.ppo_config, morm_explorer.policy.ppo_jobs; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]


# -- training ------------------------------------------------------------------------------


def test_ppo_raises_the_reward(tiny_dir, tmp_path):
    res = _train(_cfg(tiny_dir), tmp_path / "run")
    a = _curve(res["history"], "objective/scores/A")
    assert len(a) == 30
    assert a[-5:].mean() > a[:5].mean() + 0.5, a  # from ~0.03 ("yes" is 1 word in 28)
    kl = _curve(res["history"], "objective/kl")
    assert kl[-5:].mean() > kl[:2].mean()  # it paid for it in KL from the reference
    assert set(res["final"]) >= {
        "objective/kl", "objective/entropy", "objective/rlhf_reward",
        "objective/non_score_reward", "objective/scores/A", "objective/scores/B",
        "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg",
        "val/clipfrac_avg", "scalarization/weight/A", "scalarization/weight/B",
        "objective/kl_coef", "time/step_s", "tokens/per_s"}
    manifest = json.loads((tmp_path / "run" / "policy" / "morm_ppo.json").read_text())
    assert manifest["objectives"] == OBJECTIVES and manifest["config"]["steps"] == 30
    assert manifest["weights"]["final"] == {"A": 1.0, "B": 0.0}


@pytest.mark.slow
def test_weights_steer_the_policy(tiny_dir, tmp_path):
    gains = {}
    for lead, weights in (("A", {"A": 1.0, "B": 0.0}), ("B", {"A": 0.0, "B": 1.0})):
        h = _train(_cfg(tiny_dir, steps=20, weights=weights), tmp_path / lead)["history"]
        gains[lead] = {o: _curve(h, f"objective/scores/{o}")[-5:].mean() for o in OBJECTIVES}
    assert gains["A"]["A"] > gains["B"]["A"] + 0.5
    assert gains["B"]["B"] > gains["A"]["B"] + 0.5


def test_same_seed_same_run(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, steps=2, lora=True, lr=1e-2)
    first = _train(cfg, tmp_path / "a")["history"]
    second = _train(cfg, tmp_path / "b")["history"]
    assert _comparable(first) == _comparable(second)
    other = _train(_cfg(tiny_dir, steps=2, lora=True, lr=1e-2, seed=1), tmp_path / "c")
    assert _comparable(other["history"]) != _comparable(first)


def test_schedule_constraints_and_scalarizers(tiny_dir, tmp_path):
    schedule = [{"step": 0, "weights": {"A": 1.0}}, {"step": 3, "weights": {"B": 1.0}}]
    cfg = _cfg(tiny_dir, steps=4, batch_size=4, mini_batch_size=4, weights={},
               weight_schedule=schedule, standardize=False, scalarizer="chebyshev",
               constraints=[{"objective": "A", "threshold": 0.9}], lagrange_lr=0.5,
               missing_eos_penalty=1.0)
    h = _train(cfg, tmp_path / "run")["history"]
    assert _curve(h, "scalarization/weight/A") == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    lam = _curve(h, "lagrange/A")  # A's share of "yes" stays far below 0.9: lambda grows
    assert lam[0] > 0 and (np.diff(lam) > 0).all()
    assert "lagrange/B" not in h[0]
    cfg = _cfg(tiny_dir, steps=2, batch_size=4, mini_batch_size=2, scalarizer="min",
               weights={})
    assert _train(cfg, tmp_path / "min")["final"]["scalarization/weight/A"] == 0.5
    with pytest.raises(MormError, match="unknown objective") as e:
        _train(_cfg(tiny_dir, constraints=[{"objective": "C", "threshold": 0.0}]),
               tmp_path / "bad")
    assert e.value.field == "constraints"
    with pytest.raises(MormError, match="unknown objectives"):
        _train(_cfg(tiny_dir, weights={"C": 1.0}), tmp_path / "bad")


def test_resume_after_a_crash_repeats_the_uninterrupted_run(tiny_dir, tmp_path):
    from morm_explorer.policy.ppo import Hooks
    from morm_explorer.policy.ppo_checkpoint import checkpoint_step

    cfg = _cfg(tiny_dir, steps=4, batch_size=8, mini_batch_size=4, lora=True, lr=1e-2,
               checkpoint_every=2)
    whole = _train(cfg, tmp_path / "whole")

    def crash(step, values):
        if step == 2:  # the third update dies before its metrics are reported
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError, match="worker killed"):
        _train(cfg, tmp_path / "crashed", hooks=Hooks(metrics=crash))
    assert checkpoint_step(tmp_path / "crashed") == 2
    logs: list[str] = []
    reported: list[int] = []
    resumed = _train(cfg, tmp_path / "crashed", hooks=Hooks(
        log=logs.append, metrics=lambda step, values: reported.append(step)))
    assert resumed["resumed_from"] == 2
    assert reported == [0, 1, 2, 3]  # the steps before the checkpoint are reported again
    assert any("resuming from step 2" in line for line in logs)
    assert [m["step"] for m in resumed["history"]] == [0, 1, 2, 3]
    assert _comparable(resumed["history"]) == _comparable(whole["history"])  # exactly
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "whole" / "policy" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "policy" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint from other settings is refused, naming the setting
    with pytest.raises(MormError, match="other settings") as e:
        _train(_cfg(tiny_dir, steps=4, batch_size=8, mini_batch_size=4, lora=True, lr=0.1),
               tmp_path / "crashed")
    assert e.value.field == "lr"


def test_a_cancel_stops_generation_midway(tiny_dir, tmp_path):
    from morm_explorer.policy.ppo import Hooks

    class Cancelled(Exception):
        pass

    calls, reported = [], []

    def check():  # the 1st call opens the step; the next ones come from inside generate()
        calls.append(1)
        if len(calls) == 4:
            raise Cancelled

    with pytest.raises(Cancelled):
        _train(_cfg(tiny_dir, max_new_tokens=8, temperature=0.5), tmp_path / "run",
               hooks=Hooks(check_cancelled=check, metrics=lambda s, v: reported.append(s)))
    assert reported == []


# -- the policy and its reference ----------------------------------------------------------


def _lora_policy(tiny_dir):
    from morm_explorer.policy.generate import _eos_ids
    from morm_explorer.policy.ppo import build_policy, generate

    cfg = _cfg(tiny_dir, lora=True, max_new_tokens=6)
    model, ref, tok = build_policy(cfg, None)
    assert ref is None  # the reference is the same model with adapters off
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA starts as a no-op (B = 0): make it change the model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    roll = generate(model, tok, ["hello world", "how do i boil an egg ?"], cfg,
                    _eos_ids(model, tok))
    return cfg, model, tok, roll


def test_lora_reference_is_the_base_model(tiny_dir):
    from morm_explorer.policy.load import load_policy
    from morm_explorer.policy.ppo import build_policy
    from morm_explorer.policy.ppo_rollout import forward, reference_logits

    cfg, model, tok, roll = _lora_policy(tiny_dir)
    base, _ = load_policy(tiny_dir)
    with torch.no_grad():
        ref = reference_logits(model, None, roll, cfg.temperature)
        expected = forward(base, roll, slice(None), cfg.temperature)[0]
        policy = forward(model, roll, slice(None), cfg.temperature)[0]
    assert torch.allclose(ref, expected, atol=1e-6)
    assert not torch.allclose(policy, expected, atol=1e-3)  # adapters are back on after
    full, full_ref, _ = build_policy(_cfg(tiny_dir, lora=False), None)
    assert full_ref is not None and full_ref is not full
    assert not any(p.requires_grad for p in full_ref.parameters())


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_sampling_pass_gives_the_old_logprobs_of_a_forward_pass(tiny_dir, temperature, top_p):
    """The rollout's log-probs, entropies and hidden states, taken from generate's raw logits
    (KV cache), are what a teacher-forced `forward` of the same policy gives: top-p shapes
    the sampling only, never the log-probabilities."""
    from morm_explorer.policy import ppo_core as core
    from morm_explorer.policy.generate import _eos_ids
    from morm_explorer.policy.ppo import build_policy
    from morm_explorer.policy.ppo_rollout import forward, generate

    cfg = _cfg(tiny_dir, lora=True, max_new_tokens=8, temperature=temperature, top_p=top_p)
    model, _, tok = build_policy(cfg, None)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    roll = generate(model, tok, ["hello world", "how do i boil an egg ?", "yes"], cfg,
                    _eos_ids(model, tok), hidden=True)
    with torch.no_grad():
        logits, hidden = forward(model, roll, slice(None), temperature)
    m = roll.mask.bool()  # after an eos, generate pads: those positions are never read
    assert roll.logprobs.dtype == torch.float32 and roll.hidden is not None
    assert torch.allclose(roll.logprobs[m],
                          core.logprobs_from_logits(logits, roll.responses)[m], atol=1e-5)
    assert torch.allclose(roll.entropy[m], core.entropy_from_logits(logits)[m], atol=1e-5)
    assert torch.allclose(roll.hidden[m], hidden[m], atol=1e-5)
    # the LM head on the response positions only: the same logits as on the whole sequence
    ids, attn = roll.query_responses, roll.attention_mask
    full = model(input_ids=ids, attention_mask=attn,
                 position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    P = roll.context_length
    assert torch.allclose(logits, full[:, P - 1:-1].detach() / temperature, atol=1e-6)


def test_saved_policy_merged_or_adapter(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from morm_explorer.policy.ppo_checkpoint import save_policy
    from morm_explorer.policy.ppo_rollout import forward

    cfg, model, tok, roll = _lora_policy(tiny_dir)
    with torch.no_grad():
        trained = forward(model, roll, slice(None), 1.0)[0]
    save_policy(tmp_path / "adapter", model, tok, PPOConfig(**{**cfg.to_dict(),
                                                              "merge_lora": False}), OBJECTIVES,
                [])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    save_policy(tmp_path / "merged", model, tok, cfg, OBJECTIVES, [])
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(forward(merged, roll, slice(None), 1.0)[0], trained, atol=1e-5)
    assert not list((tmp_path / "merged").glob("adapter*"))


def test_lora_on_chosen_layers_saved_in_float16_loads_as_the_trained_policy(tiny_dir,
                                                                             tmp_path):
    from safetensors import safe_open

    from morm_explorer.policy.load import load_policy
    from morm_explorer.policy.ppo import build_policy, lora_targets
    from morm_explorer.policy.ppo_checkpoint import save_policy
    from morm_explorer.policy.ppo_rollout import forward

    cfg, _, _, roll = _lora_policy(tiny_dir)
    cfg = PPOConfig(**{**cfg.to_dict(), "lora_target_modules": ["q_proj", "v_proj"],
                       "merge_lora": False, "adapter_dtype": "float16"})
    assert cfg.lora_target_modules == ("q_proj", "v_proj")
    model, _, tok = build_policy(cfg, None)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters()
               if ".lora_" in n}
    assert adapted == {"q_proj", "v_proj"}
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
        trained = forward(model, roll, slice(None), 1.0)[0]
    out = save_policy(tmp_path / "adapter", model, tok, cfg, OBJECTIVES, [])
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    loaded, _ = load_policy(str(out), dtype="float32")
    with torch.no_grad():  # float16 rounding of the adapter only: close, not equal
        got = forward(loaded, roll, slice(None), 1.0)[0]
    assert torch.allclose(got, trained, atol=2e-2)
    assert not torch.allclose(got, forward(load_policy(tiny_dir)[0], roll, slice(None),
                                           1.0)[0].detach(), atol=2e-2)
    with pytest.raises(MormError, match="no linear layer named nope"):
        lora_targets(load_policy(tiny_dir)[0], ("q_proj", "nope"))
    with pytest.raises(MormError, match="adapter_dtype"):
        PPOConfig(adapter_dtype="int8")


# -- the job -------------------------------------------------------------------------------


def _job(tiny_dir, tiny_rm, **kw):
    from morm_explorer.policy.ppo_jobs import PPOJob

    config = dict(name="p", policy=tiny_dir, reward_model=str(tiny_rm), steps=3, batch_size=4,
                  mini_batch_size=2, max_new_tokens=6, lr=1e-2, device="cpu",
                  checkpoint_every=1, sample_every=1)
    return PPOJob(config={**config, **kw})


@pytest.mark.slow
def test_ppo_job_commits_a_loadable_policy(ws, tiny_dir, tiny_rm):
    from transformers import AutoModelForCausalLM

    from morm_explorer.jobs.store import JobStore
    from morm_explorer.jobs.worker import run_inline

    info = run_inline(ws, _job(tiny_dir, tiny_rm))
    assert info.status == "succeeded", info.error
    out = ws.root / "policies" / "p"
    assert info.result["path"] == str(out) and info.result["resumed_from"] is None
    AutoModelForCausalLM.from_pretrained(out)
    manifest = json.loads((out / "morm_ppo.json").read_text())
    assert manifest["objectives"] == ["helpful", "harmless"]
    assert manifest["reward_model"] == str(tiny_rm)
    store = JobStore(ws)
    metrics = store.metrics(info.id, wide=True)
    assert len(metrics) == 3 and "objective/scores/harmless" in metrics
    assert sum(line.startswith("sample: ") for line in store.logs(info.id)) == 3 * 4
    samples = (ws.root / "runs" / "ppo" / "p" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in samples] == [0] * 4 + [1] * 4 + [2] * 4
    assert not (ws.root / "runs" / "ppo" / "p" / "checkpoint").exists()  # next run: afresh
    from morm_explorer.policy.ppo_jobs import run_history, runs_without_jobs

    curves, rows = run_history(ws, "p")  # the run folder's copy, for runs with no job
    assert curves.index.tolist() == [0, 1, 2] and len(rows) == 12
    assert curves["objective/scores/harmless"].to_numpy() == pytest.approx(
        metrics["objective/scores/harmless"].to_numpy())
    assert runs_without_jobs(ws, {"p"}) == [] and runs_without_jobs(ws, set()) == ["p"]
    again = run_inline(ws, _job(tiny_dir, tiny_rm))
    assert again.status == "failed" and "exists" in again.error


@pytest.mark.slow
def test_ppo_job_resumes_after_a_failure_and_cancels(ws, tiny_dir, tiny_rm, monkeypatch):
    from morm_explorer.jobs import context
    from morm_explorer.jobs.store import JobStore
    from morm_explorer.jobs.worker import run_inline

    real_metrics = context.JobContext.metrics

    def dying(self, step, values):  # the worker "dies" while its third step reports
        if step == 2:
            raise RuntimeError("worker killed")
        real_metrics(self, step, values)

    monkeypatch.setattr(context.JobContext, "metrics", dying)
    failed = run_inline(ws, _job(tiny_dir, tiny_rm))
    assert failed.status == "failed" and "worker killed" in failed.error
    monkeypatch.setattr(context.JobContext, "metrics", real_metrics)
    done = run_inline(ws, _job(tiny_dir, tiny_rm))
    assert done.status == "succeeded", done.error
    assert done.result["resumed_from"] == 2
    assert any("resuming from step 2" in line for line in JobStore(ws).logs(done.id))
    assert JobStore(ws).metrics(done.id, wide=True).index.tolist() == [0, 1, 2]
    from morm_explorer.policy.ppo_jobs import run_history

    lines = (ws.root / "runs" / "ppo" / "p" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2]  # the redone step once
    assert run_history(ws, "p")[0].index.tolist() == [0, 1, 2]
    samples = (ws.root / "runs" / "ppo" / "p" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in samples] == [0] * 4 + [1] * 4 + [2] * 4

    # the same name with other settings: the old checkpoint is dropped, the run starts afresh
    monkeypatch.setattr(context.JobContext, "metrics", dying)
    assert run_inline(ws, _job(tiny_dir, tiny_rm, name="r")).status == "failed"
    monkeypatch.setattr(context.JobContext, "metrics", real_metrics)
    fresh = run_inline(ws, _job(tiny_dir, tiny_rm, name="r", lr=0.02))
    assert fresh.status == "succeeded" and fresh.result["resumed_from"] is None
    assert any("discarding the checkpoint" in line and "(lr)" in line
               for line in JobStore(ws).logs(fresh.id))

    # cancel: requested while the first step reports; the run stops, nothing is committed
    monkeypatch.setattr(context, "CANCEL_CHECK_S", 0.0)

    def cancelling(self, step, values):
        real_metrics(self, step, values)
        self.store.cancel(self.job_id)

    monkeypatch.setattr(context.JobContext, "metrics", cancelling)
    cancelled = run_inline(ws, _job(tiny_dir, tiny_rm, name="q", steps=5))
    assert cancelled.status == "cancelled"
    assert not (ws.root / "policies" / "q").exists()
    assert len(JobStore(ws).metrics(cancelled.id, wide=True)) == 1


def test_ppo_benchmark_smallest_run(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ppo", REPO / "benchmarks" / "ppo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "ppo.json"
    assert bench.main(["--steps", "2", "--batch-size", "4", "--mini-batch-size", "2",
                       "--max-new-tokens", "6", "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["summary"]["tokens_per_s_median"] > 0 and len(res["history"]) == 2
    assert set(res["summary"]["first_vs_last"]) >= {"objective/scores/brevity",
                                                    "objective/scores/diversity", "objective/kl"}


def test_progress_says_what_the_run_is_doing(tiny_dir, tmp_path):
    """Loading, then per step sampling, updating and its result (KL as k3, never negative),
    checkpoints and the final save: a long step never leaves "loading" on screen."""
    from morm_explorer.policy.ppo import Hooks

    seen: list[tuple[float, str]] = []
    _train(_cfg(tiny_dir, steps=2, batch_size=4, mini_batch_size=4, checkpoint_every=1),
           tmp_path / "run", hooks=Hooks(progress=lambda f, m="": seen.append((f, m))))
    messages = [m for _, m in seen]
    assert messages[:2] == ["loading the policy", "loading the reward model"]
    assert messages[2:5] == ["step 1/2: sampling 4 responses",
                             "step 1/2: scoring and updating (2 epochs)", messages[4]]
    assert messages[4].startswith("step 1/2 done: reward ")
    kl = float(messages[4].rsplit("KL ", 1)[1])
    assert kl >= 0
    assert "step 1/2 done: saving a checkpoint" in messages
    assert "step 2/2: sampling 4 responses" in messages and messages[-1] == "saving the policy"
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
