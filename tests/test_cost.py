"""The RL cost estimate (morm_explorer.policy.cost): the step model computed by hand, group
sizes and epochs, policy sizes read from config.json, calibration on a workspace's finished
runs, and (slow) a real tiny run predicted within 2x from an earlier one."""

from __future__ import annotations

import json

import pytest

from morm_explorer.policy.cost import (
    PROMPT_TOKENS,
    RATES,
    SMOLLM2_PARAMS,
    estimate_ppo,
    policy_params,
)
from morm_explorer.policy.ppo_config import PPOConfig


def by_hand(config: PPOConfig, rates, rollout_x: float = 1.0, update_x: float = 1.0) -> float:
    n, t = config.responses_per_step, config.max_new_tokens
    rollout = t * (rates.decode_step_s + rates.decode_token_s * n) * rollout_x
    update = n * (PROMPT_TOKENS + t) * (rates.score_s + config.ppo_epochs
                                        * rates.train_token_s) * update_x
    return rates.fixed_s + config.steps * (rollout + update)


def test_the_step_model_by_hand_for_each_algorithm():
    r = RATES["smollm2"]
    ppo = PPOConfig(name="c", steps=10, batch_size=4, max_new_tokens=50, ppo_epochs=2)
    est = estimate_ppo(ppo, "cpu", load=0)
    assert est.sequences == 40 and est.response_tokens == 2000 and est.measured
    assert est.seconds == pytest.approx(by_hand(ppo, r))
    assert "40 responses" in est.sentence() and "measured on a quiet 2-core" in est.sentence()
    for algorithm in ("grpo", "rloo"):  # group_size G multiplies the responses
        group = PPOConfig(name="c", steps=10, batch_size=4, max_new_tokens=50,
                          algorithm=algorithm, group_size=4, mini_batch_size=4)
        g = estimate_ppo(group, "cpu", load=0)
        assert g.sequences == 160 and g.response_tokens == 8000
        assert g.seconds == pytest.approx(by_hand(group, r)) and g.seconds > est.seconds
    more_epochs = PPOConfig(name="c", steps=10, batch_size=4, max_new_tokens=50, ppo_epochs=4)
    assert estimate_ppo(more_epochs, "cpu", load=0).seconds > est.seconds
    cuda = estimate_ppo(ppo, "cuda")
    assert not cuda.measured and "a guess" in cuda.sentence() and cuda.seconds < est.seconds


def test_a_busy_machine_slows_the_uncalibrated_estimate():
    from morm_explorer.policy.cost import busy_factor

    assert busy_factor(0, 2) == 1.0 and busy_factor(4, 2) == 2.0 and busy_factor(-1, 2) == 1.0
    cfg = PPOConfig(name="c", steps=10, batch_size=4)
    quiet, busy = estimate_ppo(cfg, "cpu", load=0), estimate_ppo(cfg, "cpu", load=8)
    assert busy.seconds == pytest.approx(busy_factor(8) * quiet.seconds)
    assert "for the machine's current load" in busy.sentence()
    assert "current load" not in quiet.sentence()


def test_a_20_step_smollm2_run_is_minutes_not_seconds():
    """The issue's case: "about 24 s" for a run that took 19.9 minutes under load."""
    est = estimate_ppo(PPOConfig(name="c", steps=20, batch_size=8), "cpu", load=0)
    assert 180 < est.seconds < 900 and "min" in est.sentence()


def _config_json(folder, **cfg) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return str(folder)


def test_policy_size_from_config_json(tmp_path, ws):
    assert policy_params("smollm2") == policy_params("HuggingFaceTB/SmolLM2-135M-Instruct") \
        == SMOLLM2_PARAMS
    smol_like = _config_json(tmp_path / "smol", hidden_size=576, num_hidden_layers=30,
                             intermediate_size=1536, num_attention_heads=9,
                             num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    assert policy_params(smol_like) == SMOLLM2_PARAMS  # the constant is the same formula's
    double = _config_json(tmp_path / "double", hidden_size=576, num_hidden_layers=60,
                          intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                          vocab_size=49152, tie_word_embeddings=True)
    assert policy_params(double) > 1.7 * SMOLLM2_PARAMS
    tiny = _config_json(tmp_path / "tiny", hidden_size=32, num_hidden_layers=2,
                        intermediate_size=64, vocab_size=100)
    assert policy_params(tiny) < 100_000
    _config_json(ws.root / "policies" / "mine", hidden_size=32, num_hidden_layers=2)
    assert policy_params("mine", ws) is not None and policy_params("mine") is None
    assert policy_params("org/not-here") is None  # a hub name: unknown here, not an error
    cfg = PPOConfig(name="c", steps=4, batch_size=4)
    step = estimate_ppo(PPOConfig.from_dict({**cfg.to_dict(), "policy": smol_like}), "cpu", load=0)
    bigger = estimate_ppo(PPOConfig.from_dict({**cfg.to_dict(), "policy": double}), "cpu", load=0)
    assert 1.7 < bigger.step_seconds / step.step_seconds < 2.1
    small = estimate_ppo(PPOConfig.from_dict({**cfg.to_dict(), "policy": tiny}), "cpu", load=0)
    assert small.seconds == pytest.approx(by_hand(small_cfg := PPOConfig.from_dict(
        {**cfg.to_dict(), "policy": tiny}), RATES["tiny"])) and small_cfg.steps == 4


def finished_run(ws, name: str, config: PPOConfig, rollout_s: float, update_s: float,
                 steps: int = 3) -> None:
    """A run as run_ppo leaves it: policies/<name>/morm_ppo.json and its run folder's
    metrics.jsonl (the first step, a warm-up, twice as slow)."""
    (ws.root / "policies" / name).mkdir(parents=True)
    (ws.root / "policies" / name / "morm_ppo.json").write_text(
        json.dumps({"config": config.to_dict()}))
    run = ws.root / "runs" / "ppo" / name
    run.mkdir(parents=True)
    rows = [{"step": s, "time/rollout_s": rollout_s * (2 if s == 0 else 1),
             "time/step_s": (rollout_s + update_s) * (2 if s == 0 else 1)}
            for s in range(steps)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_finished_runs_of_the_workspace_rescale_the_estimate(ws):
    r = RATES["smollm2"]
    done = PPOConfig(name="done", steps=3, batch_size=8, device="cpu")
    n, t = done.responses_per_step, done.max_new_tokens
    rollout = t * (r.decode_step_s + r.decode_token_s * n)
    update = n * (PROMPT_TOKENS + t) * (r.score_s + done.ppo_epochs * r.train_token_s)
    finished_run(ws, "done", done, 3 * rollout, 5 * update)  # a machine 3x / 5x slower
    new = PPOConfig(name="new", steps=10, batch_size=4, algorithm="grpo", group_size=4)
    est = estimate_ppo(new, "cpu", workspace=ws)
    assert est.seconds == pytest.approx(by_hand(new, r, 3.0, 5.0))
    assert "from the step times of 1 finished run here" in est.sentence()
    # runs on another device, or of a policy of another size, do not calibrate this one
    assert estimate_ppo(new, "cuda", workspace=ws).seconds == pytest.approx(
        estimate_ppo(new, "cuda").seconds)
    tiny = ws.root / "tiny"
    _config_json(tiny, hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                 vocab_size=100)
    tiny_cfg = PPOConfig.from_dict({**new.to_dict(), "policy": str(tiny)})
    assert estimate_ppo(tiny_cfg, "cpu", workspace=ws, load=0).seconds == pytest.approx(
        estimate_ppo(tiny_cfg, "cpu", load=0).seconds)
    # a damaged run folder costs its calibration only
    (ws.root / "runs" / "ppo" / "done" / "metrics.jsonl").write_text("{not json\n")
    assert estimate_ppo(new, "cpu", workspace=ws, load=0).seconds == pytest.approx(
        by_hand(new, r))


@pytest.mark.slow
def test_a_real_tiny_run_is_predicted_within_2x_from_an_earlier_one(ws, tiny_rm):
    """The calibration on this machine, under whatever load it has: one finished PPO run,
    then a GRPO run's steps predicted from it within a factor of 2."""
    import shutil

    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.policy.ppo_jobs import PPOJob, run_dir
    from tests.test_policy import _save_tiny

    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    policy = _save_tiny(ws.root / "tiny-policy")
    common = dict(policy=policy, reward_model="rm", steps=4, max_new_tokens=16, device="cpu",
                  prompt_limit=8, checkpoint_every=0, lora=False)
    first = PPOConfig(name="first", batch_size=4, mini_batch_size=4, **common)
    assert run_inline(ws, PPOJob(config=first.to_dict())).status == "succeeded"
    second = PPOConfig(name="second", algorithm="grpo", batch_size=4, group_size=2,
                       mini_batch_size=4, **common)
    est = estimate_ppo(second, "cpu", workspace=ws)
    assert "1 finished run" in est.basis
    assert run_inline(ws, PPOJob(config=second.to_dict())).status == "succeeded"
    rows = [json.loads(line) for line in
            (run_dir(ws, "second") / "metrics.jsonl").read_text().splitlines()]
    actual = sorted(r["time/step_s"] for r in rows[1:])[len(rows[1:]) // 2]  # median
    assert 0.5 < est.step_seconds / actual < 2.0, (est.step_seconds, actual)


def test_time_left_from_the_runs_own_steps():
    from morm_explorer.policy.cost import time_left

    assert time_left([], 10) is None
    assert time_left([30.0], 10) == pytest.approx(9 * 30.0)
    # the first step (warm-up) is left out once there are others; the median of the rest
    assert time_left([90.0, 10.0, 12.0, 11.0], 10) == pytest.approx(6 * 11.0)
    assert time_left([5.0, 5.0], 2) == 0.0
    assert time_left([float("nan"), 4.0, 6.0], 5) == pytest.approx(2 * 6.0)
