"""Weight sweeps: the grid of configs, and a sweep job of tiny PPO runs end to end."""

from __future__ import annotations

import json
import shutil

import pytest

from morm_explorer.errors import MormError
from morm_explorer.jobs.store import JobStore
from morm_explorer.jobs.worker import run_inline
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.sweep import SweepJob, sweep_configs
from tests.test_policy import _save_tiny


def test_grid_of_configs():
    base = PPOConfig(name="s", reward_model="rm", weights={"honest": 1.0})
    cfgs = sweep_configs(base, ["helpful", "harmless"], 4)
    assert [c.name for c in cfgs] == [f"s-{i}" for i in range(5)]
    assert [c.weights["helpful"] for c in cfgs] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(set(c.weights) == {"helpful", "harmless"} for c in cfgs)
    assert len(sweep_configs(base, ["a", "b", "c"], 2)) == 6
    with pytest.raises(MormError, match="two or more"):
        sweep_configs(base, ["helpful"], 2)
    with pytest.raises(MormError, match="grid_steps"):
        SweepJob(config=base.to_dict(), objectives=["a", "b"], grid_steps=0)


def test_a_sweep_of_group_runs_keeps_the_algorithm_and_its_settings():
    base = PPOConfig(name="g", reward_model="rm", algorithm="rloo", group_size=3,
                     batch_size=2, mini_batch_size=6,
                     multi_objective_aggregation="normalize_then_sum")
    cfgs = sweep_configs(base, ["helpful", "harmless"], 2)
    assert len(cfgs) == 3
    assert {(c.algorithm, c.group_size, c.multi_objective_aggregation) for c in cfgs} == {
        ("rloo", 3, "normalize_then_sum")}
    assert [c.weights["harmless"] for c in cfgs] == [1.0, 0.5, 0.0]


@pytest.mark.slow
def test_sweep_job_runs_every_grid_point(ws, tiny_rm, tmp_path):
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    policy = _save_tiny(tmp_path / "policy")
    base = PPOConfig(name="sw", policy=policy, reward_model="rm", steps=2, batch_size=2,
                     mini_batch_size=2, ppo_epochs=1, max_new_tokens=4, lora=False,
                     prompt_limit=4, checkpoint_every=10, device="cpu")
    info = run_inline(ws, SweepJob(config=base.to_dict(), objectives=["helpful", "harmless"],
                                   grid_steps=1))
    assert info.status == "succeeded", info.error
    runs = info.result["runs"]
    assert [r["name"] for r in runs] == ["sw-0", "sw-1"]
    assert runs[0]["weights"] == {"helpful": 0.0, "harmless": 1.0}
    for r in runs:
        manifest = json.loads((ws.root / "policies" / r["name"] / "morm_ppo.json").read_text())
        assert manifest["config"]["weights"] == r["weights"]
    steps = sorted(JobStore(ws).metrics(info.id, wide=True).index)
    assert steps == [0, 1, 2, 3]  # run 2's steps follow run 1's on the sweep's axis
