"""`morm ppo ...` and `morm jobs retry`, run as a user runs them."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.test_cli import morm
from tests.test_policy import _save_tiny

pytestmark = pytest.mark.slow  # subprocesses that import torch


def test_ppo_train_inline_then_list(tmp_path, tiny_rm):
    ws = tmp_path / "ws"
    shutil.copytree(tiny_rm, ws / "reward_models" / "rm")
    policy = _save_tiny(tmp_path / "policy")
    proc = morm("ppo", "train", "--name", "x", "--policy", policy, "--reward_model", "rm",
                "--steps", 2, "--batch_size", 2, "--mini_batch_size", 2, "--max_new_tokens", 4,
                "--no-lora", "--device", "cpu", "--prompt_limit", 4, "--weights",
                "helpful=1,harmless=0.5", "--constraints",
                '[{"objective": "harmless", "threshold": 0}]', ws=ws, check=True)
    assert "succeeded" in proc.stdout
    manifest = json.loads((ws / "policies" / "x" / "morm_ppo.json").read_text())
    assert manifest["config"]["weights"] == {"helpful": 1.0, "harmless": 0.5}
    assert "x " in morm("ppo", "list", ws=ws, check=True).stdout


@pytest.mark.parametrize("args,msg", [
    (["--weights", "helpful=nan"], "weights.helpful must be a finite number"),
    (["--weights", "helpful=0"], "all weights are zero"),
    (["--steps", "-3"], "steps must be"),
    (["--constraints", "not json"], "expected a JSON list"),
    (["--scalarizer", "max"], "scalarizer"),
])
def test_bad_ppo_input_is_one_clear_message(tmp_path, args, msg):
    proc = morm("ppo", "train", "--reward_model", "rm", "--submit", *args, ws=tmp_path / "ws")
    assert proc.returncode == 2 and msg in proc.stderr, proc.stderr
    assert not (tmp_path / "ws" / "morm.sqlite").exists() or "jobs" not in proc.stdout


def test_a_hostile_name_stays_inside_and_a_missing_model_fails_clearly(tmp_path):
    ws = tmp_path / "ws"
    proc = morm("ppo", "train", "--name", "../../etc", "--reward_model", "nope",
                "--policy", _save_tiny(tmp_path / "policy"), ws=ws)
    assert proc.returncode == 1 and "no reward model named 'nope'" in proc.stderr
    assert not (tmp_path / "etc").exists() and not (ws / "runs" / "etc").exists()


def test_retry_refuses_a_job_that_did_not_fail(tmp_path):
    ws = tmp_path / "ws"
    proc = morm("jobs", "submit-sleep", "--seconds", "0.1", "--steps", "1", "--wait", ws=ws)
    assert proc.returncode == 0
    job_id = json.loads(morm("jobs", "list", "--json", ws=ws, check=True).stdout)[0]["id"]
    proc = morm("jobs", "retry", job_id, ws=ws)
    assert proc.returncode == 2 and "only a failed or cancelled job" in proc.stderr


def test_rl_train_runs_each_group_method_inline(tmp_path, tiny_rm):
    ws = tmp_path / "ws"
    shutil.copytree(tiny_rm, ws / "reward_models" / "rm")
    policy = _save_tiny(tmp_path / "policy")
    for algorithm in ("grpo", "rloo"):
        proc = morm("rl", "train", "--algorithm", algorithm, "--name", algorithm, "--policy",
                    policy, "--reward_model", "rm", "--steps", 1, "--batch_size", 2,
                    "--group_size", 2, "--mini_batch_size", 4, "--max_new_tokens", 4,
                    "--device", "cpu", "--prompt_limit", 4,
                    "--multi_objective_aggregation", "normalize_then_sum", ws=ws, check=True)
        assert "succeeded" in proc.stdout
        manifest = json.loads((ws / "policies" / algorithm / "morm_ppo.json").read_text())
        assert manifest["config"]["algorithm"] == algorithm
        assert "rewards/helpful/mean" in manifest["final_metrics"]
    proc = morm("rl", "train", "--algorithm", "dpo", "--reward_model", "rm", "--submit",
                ws=tmp_path / "ws2")
    assert proc.returncode == 2 and "algorithm must be one of ppo, grpo, rloo" in proc.stderr
