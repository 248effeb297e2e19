"""The background build of the full demo, on tiny stand-ins for MiniLM and SmolLM2."""

from __future__ import annotations

import pytest

from morm_explorer.demo import DEMO_DATASET, DEMO_JUDGE_DATASET, ensure_demo
from morm_explorer.demo_jobs import (
    COMPARISON,
    JUDGE,
    POLICIES,
    RM,
    PrepareDemoJob,
    demo_complete,
    demo_parts,
)
from morm_explorer.evaluation.compare import list_comparisons
from morm_explorer.jobs.backend import LocalBackend
from morm_explorer.jobs.store import JobStore
from morm_explorer.jobs.worker import run_inline
from morm_explorer.policy.ppo_jobs import run_history, runs_without_jobs
from morm_explorer.reward.report import judge_training_note, list_reward_models
from morm_explorer.walkthrough import walkthrough
from tests.test_policy import _save_tiny


@pytest.mark.slow
def test_prepare_demo_builds_everything_then_nothing(ws, tiny_bert, tmp_path):
    ensure_demo(ws)
    assert not any(ready for _, ready in demo_parts(ws))
    spec = PrepareDemoJob(backbone=tiny_bert, max_length=64, rm_epochs=2,
                          policy=_save_tiny(tmp_path / "policy"), samples=1,
                          max_new_tokens=4, rl_steps=1, rl_batch=2, group_size=2,
                          compare_prompts=2, compare_samples=1, device="cpu")
    info = run_inline(ws, spec)
    assert info.status == "succeeded", info.error
    assert info.result["built"] == ["demo-judge", "demo-rm", "smollm2-demo", *POLICIES,
                                    COMPARISON]
    assert demo_complete(ws)
    newest = max(list_reward_models(ws), key=lambda m: m["created_at"])
    assert newest["name"] == "demo-rm"  # what the pages choose by default, not the judge
    assert runs_without_jobs(ws, set()) == sorted(POLICIES)  # Fine-tune shows their curves
    assert all(not run_history(ws, name)[0].empty for name in POLICIES)
    assert [label.split()[-1] for label, ready in demo_parts(ws) if ready] == info.result["built"]
    assert [c["name"] for c in list_comparisons(ws)] == [COMPARISON]
    assert all(step.ready for step in walkthrough(ws))  # the walk-through has every step
    disjoint, note = judge_training_note(ws, RM, JUDGE)  # what Compare says of the judge
    assert disjoint and DEMO_JUDGE_DATASET in note and "disjoint" in note
    again = run_inline(ws, spec)
    assert again.status == "succeeded" and again.result["built"] == []
    assert again.message == "demo ready: all 8 parts"  # not the last part's "scoring ..."


class _Stop(Exception):
    pass


def test_the_demo_judge_trains_on_data_disjoint_from_the_reward_models(ws, monkeypatch):
    """Training replaced by a stand-in that records each model's data as training does."""
    import json

    import morm_explorer.reward.jobs as reward_jobs
    from morm_explorer.reward.config import FORMAT
    from morm_explorer.reward.evaluations import dataset_provenance

    def train(job, ctx):
        cfg = job.config
        folder = ws.root / "reward_models" / cfg["name"]
        folder.mkdir(parents=True)
        data = dataset_provenance(cfg["dataset"], ws.load_dataset(cfg["dataset"]), ws)
        (folder / "config.json").write_text(json.dumps(
            {"format": FORMAT, "training": cfg, "data": data}))
        if cfg["name"] == RM:
            raise _Stop  # the rest of the build is not this test's business

    monkeypatch.setattr(reward_jobs, "run_train_reward_model", train)
    ensure_demo(ws)
    info = run_inline(ws, PrepareDemoJob(real_pairs=0, device="cpu", use_bundle=False))
    assert info.status == "failed"
    disjoint, note = judge_training_note(ws, RM, JUDGE)
    assert disjoint, note
    assert f"The judge was trained on {DEMO_JUDGE_DATASET} (" in note
    assert f"the reward model on {DEMO_DATASET} (" in note


def test_the_app_submits_the_build_once_and_not_again_after_a_failure(ws, monkeypatch):
    from pages.common import start_demo_job

    monkeypatch.setattr(LocalBackend, "ensure_worker", lambda self: False)
    first = start_demo_job(ws)
    assert first is not None and start_demo_job(ws) is None  # queued: not twice
    store = JobStore(ws)
    job = store.claim("w", job_id=first)
    store.fail(job.id, "w", "boom")
    assert start_demo_job(ws) is None  # a failed build waits for the user
    assert start_demo_job(ws, retry=True) is not None


def test_the_overview_says_what_is_ready_and_what_is_still_being_prepared(ws, tiny_rm,
                                                                          monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from pages.common import start_demo_job
    from tests.conftest import REPO

    monkeypatch.setattr(LocalBackend, "ensure_worker", lambda self: False)
    ensure_demo(ws)
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "demo-rm")
    assert start_demo_job(ws) is not None  # queued; no worker runs it here
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()  # opens Overview
    assert not at.exception
    assert any("Preparing the full demo" in i.value for i in at.info)
    parts = " ".join(c.value for c in at.caption)
    assert "✓ reward model demo-rm" in parts and "… held-out judge demo-judge" in parts
    assert "… comparison demo" in parts
    at.switch_page("pages/compare.py").run()  # the pages that list its parts say so too
    assert not at.exception
    assert any("still being prepared" in c.value for c in at.caption)


def test_the_time_left_counts_the_parts_not_built_yet(ws, monkeypatch):
    import morm_explorer.demo_bundle as demo_bundle
    from morm_explorer.demo_jobs import PART_SECONDS, demo_time_left

    monkeypatch.setattr(demo_bundle, "bundle_path", lambda: ws.root / "no-bundle.tar.xz")
    ensure_demo(ws)
    left, parts = demo_time_left(ws)
    assert left == pytest.approx(sum(PART_SECONDS.values()))
    assert [label.split()[-1] for label, _, _ in parts] == list(PART_SECONDS)
    folder = ws.root / "reward_models" / JUDGE
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    left2, _ = demo_time_left(ws, busy=2.0)
    assert left2 == pytest.approx(2 * (left - PART_SECONDS[JUDGE]))
