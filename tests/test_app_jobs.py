"""Jobs in the app under AppTest: the Jobs page (the queue with places, who launched each job,
estimates, cancel, readable logs), and pages that find their jobs in the workspace's job store
rather than in a tab's session state (a new tab sees a job launched elsewhere), refuse a run
name that is taken, pick the running run, and offer Resume only for a run that ran."""

from __future__ import annotations

import json
import shutil

import pytest

from morm_explorer.jobs.builtin import SleepJob
from morm_explorer.jobs.spec import BACKGROUND_PRIORITY
from morm_explorer.jobs.store import JobStore
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_jobs import PPOJob
from tests.conftest import open_app_page

pytestmark = pytest.mark.slow  # each AppTest run imports the app's stack


@pytest.fixture
def rm_ws(ws, tiny_rm, no_worker):
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    return ws


def _ppo(store: JobStore, name: str, launched_by: str = "Fine-tune page") -> str:
    cfg = PPOConfig(name=name, reward_model="rm", weights={"helpful": 1.0})
    return store.submit(PPOJob(config=cfg.to_dict()), launched_by=launched_by)


# -- the Jobs page --------------------------------------------------------------------------
def test_jobs_page_shows_the_queue_with_places_launchers_and_readable_logs(ws, no_worker):
    store = JobStore(ws)
    demo = store.submit(SleepJob(seconds=60), priority=BACKGROUND_PRIORITY,
                        launched_by="demo build")
    ran = store.submit(SleepJob(seconds=60), launched_by="CLI")
    assert store.claim("w1").id == ran
    store.set_progress(ran, 0.5, "step 5/10")
    store.add_log(ran, "sample: " + json.dumps({"step": 2, "prompt": "<b>Hi</b>",
                                                "response": "**there**"}))
    queued = store.submit(SleepJob(seconds=1), launched_by="Explore page")
    at = open_app_page("pages/jobs.py")
    table = next(d.value for d in at.dataframe if "in line" in d.value.columns)
    assert table["id"].tolist() == [ran, queued, demo]
    assert table["in line"].tolist() == ["running", "1", "2"]
    assert table["launched by"].tolist() == ["CLI", "Explore page", "demo build"]
    assert table["estimate"].iloc[0].endswith(" left")
    assert at.selectbox(key="jobs_pick").value == ran  # the running job first
    log = next(c.value for c in at.code if "sample, step 2" in c.value)
    assert "<b>Hi</b> -> **there**" in log and "{" not in log  # text, not a raw dict
    at.selectbox(key="jobs_pick").set_value(queued).run()
    assert any("place in line 1" in c.value for c in at.caption)
    at.button(key="jobs_cancel").click().run()
    assert not at.exception
    assert store.get(queued).status == "cancelled"
    assert store.get(ran).status == "running"


def test_jobs_page_without_jobs(ws, no_worker):
    at = open_app_page("pages/jobs.py")
    assert any("No jobs yet" in i.value for i in at.info)


def test_jobs_page_shows_a_finished_jobs_result_as_lines(ws, no_worker):
    store = JobStore(ws)
    job = store.submit(SleepJob(seconds=0))
    store.claim("w1")
    store.finish(job, "w1", {"steps": 8, "final": {"objective/scores/helpful": 0.5}})
    at = open_app_page("pages/jobs.py")
    result = next(c.value for c in at.code if "steps: 8" in c.value)
    assert "final · objective/scores/helpful: 0.5" in result


# -- pages find their jobs in the store -------------------------------------------------------
def test_a_new_tab_sees_a_job_launched_from_explore_elsewhere(ws, no_worker):
    from morm_explorer.reward.config import TrainConfig
    from morm_explorer.reward.jobs import TrainRewardModelJob

    at = open_app_page("pages/explore.py")  # the first tab launches the demo model's training
    at.button(key="explore_train_demo").click().run()
    (job,) = JobStore(ws).list()
    assert job.launched_by == "Explore page"
    fresh = open_app_page("pages/explore.py")  # a new tab: an empty session state
    assert fresh.button(key="explore_train_demo").disabled
    assert fresh.session_state["explore_job"] == job.id
    other = JobStore(ws).submit(TrainRewardModelJob(config=TrainConfig(
        dataset="demo-preferences", name="x").to_dict()), launched_by="Reward models page")
    JobStore(ws).cancel(job.id)
    assert not open_app_page("pages/explore.py").button(key="explore_train_demo").disabled
    assert JobStore(ws).get(other).status == "queued"  # another page's job is not Explore's


def test_finetune_refuses_a_run_name_that_is_queued_running_or_saved(rm_ws):
    store = JobStore(rm_ws)
    first = _ppo(store, "audit-ppo", launched_by="CLI")
    at = open_app_page("pages/finetune.py")
    assert any(c.value.startswith("Queued: number 1 in line") for c in at.caption)
    at.text_input(key="ft_name").input("audit-ppo").run()
    at.button(key="ft_launch").click().run()
    assert any("field 'name'" in e.value and r"'audit\-ppo' is already queued" in e.value
               for e in at.error)  # (as plain text: markdown characters escaped)
    assert [j.id for j in store.list(kind="ppo")] == [first]
    store.claim("w1")
    at.button(key="ft_launch").click().run()
    assert any("already running" in e.value for e in at.error)
    (rm_ws.root / "policies" / "saved-ppo").mkdir(parents=True)
    at.text_input(key="ft_name").input("saved-ppo").run()
    at.button(key="ft_launch").click().run()
    assert any(r"policy named 'saved\-ppo' exists" in e.value for e in at.error)
    at.text_input(key="ft_name").input("new-ppo").run()
    at.button(key="ft_launch").click().run()
    new = store.list(kind="ppo")[0]
    assert new.spec["config"]["name"] == "new-ppo" and new.launched_by == "Fine-tune page"


def test_finetune_picks_the_running_run_and_offers_resume_only_to_one_that_ran(rm_ws):
    store = JobStore(rm_ws)
    running = _ppo(store, "running-run")
    assert store.claim("w1").id == running
    never = _ppo(store, "never-started")
    store.cancel(never)  # the newest job: cancelled before it started
    at = open_app_page("pages/finetune.py")
    assert at.selectbox(key="ft_job").value == running
    at.selectbox(key="ft_job").set_value(never).run()
    assert not at.exception
    assert not [b for b in at.button if b.key == "ft_resume"]
    store.cancel(running)
    store.mark_cancelled(running, "w1")
    at.selectbox(key="ft_job").set_value(running).run()
    assert [b for b in at.button if b.key == "ft_resume"]  # it ran: it may resume


def test_the_apps_worker_belongs_to_the_app_and_a_queue_left_waiting_gets_one(ws, monkeypatch):
    import os

    from morm_explorer.jobs import LocalBackend

    started = []
    monkeypatch.setattr(LocalBackend, "ensure_worker",
                        lambda self: started.append(self.owner_pid) or False)
    open_app_page("pages/jobs.py")
    assert started == []  # nothing queued: no worker needed
    JobStore(ws).submit(SleepJob(seconds=0))  # e.g. put back in the queue when the app stopped
    open_app_page("pages/jobs.py")
    assert started and set(started) == {os.getpid()}  # owned by the app's process


def test_the_demo_build_is_recorded_as_such_and_a_requeued_build_goes_on_at_start(
        ws, monkeypatch):
    import os

    from morm_explorer.jobs import LocalBackend
    from pages.common import start_demo_job

    started = []
    monkeypatch.setattr(LocalBackend, "ensure_worker",
                        lambda self: started.append(self.owner_pid) or False)
    job = start_demo_job(ws)
    store = JobStore(ws)
    info = store.get(job)
    assert (info.launched_by, info.priority) == ("demo build", BACKGROUND_PRIORITY)
    store.claim("w", job_id=job)
    store.requeue(job, "w", "its app (pid 1) stopped")  # as the app's last stop left it
    started.clear()
    assert start_demo_job(ws) is None  # not submitted twice ...
    assert started == [os.getpid()]  # ... but a worker (the app's) is started for it
