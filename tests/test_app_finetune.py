"""The Fine-tune page under AppTest: weights seeded from Explore, launching a PPO job, bad input
submitting nothing, and the live view of a run (metrics, Lagrange trace, sample generations)."""

from __future__ import annotations

import json
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.jobs.store import JobStore
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_jobs import PPOJob
from tests.conftest import open_app_page

pytestmark = pytest.mark.slow  # each AppTest run imports the app's stack

PAGE = "pages/finetune.py"


@pytest.fixture
def rm_ws(ws, tiny_rm, no_worker):
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    return ws


def open_page(**state) -> AppTest:
    return open_app_page(PAGE, **state)


def test_weights_seeded_from_explore_and_launch_submits_a_ppo_job(rm_ws):
    at = open_page(explore_w_helpful=0.8, explore_w_harmless=0.2)
    assert at.slider(key="ft_w_helpful").value == 0.8
    assert at.slider(key="ft_w_harmless").value == 0.2
    assert any("Estimate:" in c.value for c in at.caption)
    at.multiselect(key="ft_constrained").set_value(["harmless"]).run()
    at.number_input(key="ft_tau_harmless").set_value(0.5).run()
    at.text_input(key="ft_name").input("my-run").run()
    at.button(key="ft_launch").click().run()
    assert not at.exception
    (job,) = JobStore(rm_ws).list(kind="ppo")
    cfg = job.spec["config"]
    assert cfg["name"] == "my-run" and cfg["reward_model"] == "rm"
    assert cfg["weights"] == {"helpful": 0.8, "harmless": 0.2}
    assert cfg["constraints"] == [{"objective": "harmless", "threshold": 0.5}]


def test_bad_settings_submit_nothing(rm_ws):
    at = open_page()
    for o in ("helpful", "harmless"):
        at.slider(key=f"ft_w_{o}").set_value(0.0)
    at.run()
    assert any("all weights are zero" in e.value for e in at.error)
    assert at.button(key="ft_launch").disabled
    at.slider(key="ft_w_helpful").set_value(0.5).run()
    at.text_input(key="ft_name").input("../escape").run()
    at.button(key="ft_launch").click().run()
    assert any("Saved as 'escape'" in c.value for c in at.caption)
    (job,) = JobStore(rm_ws).list(kind="ppo")
    assert job.spec["config"]["name"] == "escape"  # never a path out of the workspace


def test_run_view_draws_metrics_lagrange_and_samples(rm_ws):
    store = JobStore(rm_ws)
    cfg = PPOConfig(name="r", reward_model="rm", weights={"helpful": 1.0},
                    constraints=[{"objective": "harmless", "threshold": 0.0}])
    job = store.submit(PPOJob(config=cfg.to_dict()))
    for step in range(1, 4):
        store.add_metrics(job, step, {"objective/scores/helpful": step * 0.1,
                                      "objective/scores/harmless": -step * 0.1,
                                      "objective/kl": step * 0.01, "objective/entropy": 2.0,
                                      "scalarization/weight/helpful": 1.0,
                                      "lagrange/harmless": step * 0.05})
    store.add_log(job, "sample: " + json.dumps({"step": 2, "prompt": "Hi <b>there</b>",
                                                "response": "<script>x</script>",
                                                "helpful": 0.3}))
    at = open_page()
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 3
    samples = next(d for d in at.dataframe if "response" in d.value.columns)
    assert samples.value["response"].iloc[0] == "<script>x</script>"  # as text, in a table
    assert all("<script>" not in m.value for m in at.markdown)


def test_a_run_made_inside_another_job_shows_its_curves_from_its_run_folder(rm_ws):
    from morm_explorer.policy.ppo_jobs import METRICS, SAMPLES, run_dir

    policy = rm_ws.root / "policies" / "demo-helpful"  # as the demo build leaves it: no job
    policy.mkdir(parents=True)
    (policy / "config.json").write_text("{}")
    (policy / "morm_ppo.json").write_text(json.dumps({"config": {
        "steps": 2, "reward_model": "rm", "weights": {"helpful": 0.8, "harmless": 0.2}}}))
    folder = run_dir(rm_ws, "demo-helpful")
    folder.mkdir(parents=True)
    curve = [{"step": s, "objective/scores/helpful": 0.1 * s, "objective/kl": 0.01 * s,
              "objective/rlhf_reward": 0.1, "objective/entropy": 2.0} for s in range(2)]
    (folder / METRICS).write_text("".join(json.dumps(r) + "\n" for r in curve) + '{"torn')
    (folder / SAMPLES).write_text(json.dumps({"step": 1, "prompt": "<b>p</b>",
                                              "response": "r"}) + "\n")
    at = open_page()
    assert not at.exception
    assert at.selectbox(key="ft_folder_run").value == "demo-helpful"
    assert any("weights helpful 0.80, harmless 0.20" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) >= 2
    frames = [d.value for d in at.dataframe if "prompt" in d.value.columns]
    assert [f["prompt"].tolist() for f in frames] == [["<b>p</b>"]]  # text, as it is


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo"])
def test_launch_each_algorithm(rm_ws, algorithm):
    at = open_page()
    assert at.radio(key="ft_algo").value == "ppo"
    at.radio(key="ft_algo").set_value(algorithm).run()
    if algorithm != "ppo":
        at.number_input(key="ft_group").set_value(3).run()
        at.radio(key="ft_agg").set_value("normalize_then_sum").run()
        assert any("x 24 responses" in c.value for c in at.caption)  # 8 prompts x 3
    at.text_input(key="ft_name").input(f"run-{algorithm}").run()
    at.button(key="ft_launch").click().run()
    assert not at.exception
    (job,) = JobStore(rm_ws).list(kind="ppo")
    cfg = PPOConfig.from_dict(job.spec["config"])
    assert cfg.name == f"run-{algorithm}" and cfg.algorithm == algorithm
    if algorithm != "ppo":
        assert cfg.group_size == 3 and cfg.multi_objective_aggregation == "normalize_then_sum"
        assert cfg.kl_in == ("loss" if algorithm == "grpo" else "reward")


def test_past_runs_show_no_none_and_the_estimate_counts_the_workspace_runs(rm_ws):
    store = JobStore(rm_ws)
    done = store.submit(PPOJob(config=PPOConfig(name="done-one", reward_model="rm").to_dict()))
    assert store.claim("w", job_id=done) is not None
    store.finish(done, "w", {"steps": 20, "final": {"objective/scores/helpful": 0.25}})
    cfg = PPOConfig(name="queued-one", reward_model="rm", weights={"helpful": 1.0})
    store.submit(PPOJob(config=cfg.to_dict()))  # no result yet: no final scores
    at = open_page()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "run" in d.value.columns
                 and "created" in d.value.columns).set_index("run")
    cells = table.astype(str).to_numpy().ravel().tolist()
    assert "None" not in cells and "nan" not in cells
    assert table.loc["done-one", "helpful"] == "0.250"
    assert table.loc["queued-one", "helpful"] == "—" and table.loc["queued-one", "steps"] == "20"
    estimate = next(c.value for c in at.caption if c.value.startswith("Estimate:"))
    assert "about" in estimate and "on cpu" in estimate


def test_a_running_run_says_how_long_is_left_from_its_own_steps(rm_ws):
    store = JobStore(rm_ws)
    job = store.submit(PPOJob(config=PPOConfig(name="r", reward_model="rm", steps=10).to_dict()))
    for step, seconds in enumerate((50.0, 20.0, 22.0)):
        store.add_metrics(job, step, {"objective/scores/helpful": 0.1, "time/step_s": seconds})
    at = open_page()
    assert not at.exception
    assert any("about 2.5 min left (from this run's steps)" in c.value for c in at.caption)
