"""benchmarks/rl_vs_trl.py: the project's GRPO and PPO beside TRL's (GRPOTrainer; TRL 1.12's
PPOTrainer from the benchmark environment) on the tiny policy, one short run of each, and the
compute floor of benchmarks/rl_floor.py."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import REPO

SMALLEST = ["--policy", "tiny", "--rounds", "1", "--steps", "2", "--batch-size", "2",
            "--mini-batch-size", "2", "--max-new-tokens", "6", "--lr", "1e-3"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rl_vs_trl",
                                                  REPO / "benchmarks" / "rl_vs_trl.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _check(res: dict) -> None:
    assert len(res["project_tokens_per_s"]) == len(res["trl_tokens_per_s"]) == 1
    assert res["project_median"] > 0 and res["trl_median"] > 0
    assert res["ratio"] == pytest.approx(res["project_median"] / res["trl_median"])
    assert res["project_tokens_per_cpu_s"][0] > 0 and res["cpu_ratio"] == pytest.approx(
        res["project_tokens_per_cpu_s"][0] / res["trl_tokens_per_cpu_s"][0])


@pytest.mark.slow
def test_rl_vs_trl_smallest_run(tmp_path):
    out = tmp_path / "rl_vs_trl.json"
    assert _bench().main([*SMALLEST, "--group-size", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["algorithm"] == "grpo" and "floor" not in res
    _check(res)


@pytest.mark.slow
def test_rl_vs_trl_ppo_against_trl_1_12(tmp_path):
    bench = _bench()
    if why := bench.bench_env_ready():
        pytest.skip(f"no benchmark environment for TRL 1.12's PPO: {why}")
    out = tmp_path / "rl_vs_trl.json"
    assert bench.main(["--algorithm", "ppo", *SMALLEST, "--epochs", "1", "--out",
                       str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["algorithm"] == "ppo" and res["settings"]["beta"] == 0.05
    _check(res)


@pytest.mark.slow
def test_floor_of_a_project_run(tmp_path):
    """--floor: each piece timed on the run's own shapes (generate gives the rollout's
    shape), the floor their sum, the ratio the timed steps' wall time over it."""
    bench = _bench()
    args = bench.argparse.Namespace(
        algorithm="ppo", steps=3, batch_size=2, mini_batch_size=1, epochs=2, lr=1e-3,
        beta=0.05, max_new_tokens=6, device="cpu", seed=0, floor=True)
    policy = bench.tiny_policy(tmp_path / "tiny")
    rm = bench.build_reward_model(policy, tmp_path / "rm", seed=0)
    reward_fn = bench.seq_cls_reward(policy, rm, "cpu")
    speed, floor = bench.run_project(policy, args, reward_fn, ["reward"])
    assert speed["wall"] > 0 and speed["cpu"] > 0
    parts = ("generate", "reference", "reward", "update")
    assert all(floor[k] > 0 for k in parts)
    assert floor["floor"] == pytest.approx(sum(floor[k] for k in parts))
    assert floor["cpu/floor"] == pytest.approx(sum(floor[f"cpu/{k}"] for k in parts))
    assert floor["ratio"] == pytest.approx(floor["step_s"] / floor["floor"])
    assert floor["cpu_ratio"] == pytest.approx(floor["step_cpu_s"] / floor["cpu/floor"])

    cfg = bench.project_config(policy, args)
    from morm_explorer.policy import ppo as trainer

    original = trainer.generate
    with bench.rl_floor.record_rollouts() as rolls:
        trainer.train_ppo(cfg, tmp_path / "run", reward_fn=reward_fn, objectives=["reward"])
    assert trainer.generate is original and len(rolls) == cfg.steps
    r = rolls[1]
    model, _, tok = trainer.build_policy(cfg, None)
    from transformers import GenerationConfig

    T = r.mask.shape[1]
    gen = GenerationConfig(do_sample=True, max_new_tokens=T, min_new_tokens=T, top_k=0,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert bench.rl_floor._generate(model, r, gen).shape == r.query_responses.shape
    timed = bench.rl_floor.floor_seconds(cfg, rolls, reward_fn, ["reward"], warmup=1)
    assert len(timed) == cfg.steps - 1 and torch.isfinite(torch.tensor(timed[0]["floor"]))
