"""The queue: priorities (a user's job before, and beside, the background demo build), who
launched a job, the Jobs view's rows and readable logs, and a worker owned by its app (it
stops, putting its job back in the queue, when the app's process is gone). Real worker
processes where a worker is involved."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from morm_explorer.errors import MormError
from morm_explorer.jobs import LocalBackend
from morm_explorer.jobs.builtin import SleepJob
from morm_explorer.jobs.overview import format_log_line, job_rows, result_lines, time_left
from morm_explorer.jobs.spec import BACKGROUND_PRIORITY, USER_PRIORITY
from morm_explorer.jobs.store import JobStore, WorkerInfo, pid_alive
from morm_explorer.workspace import MIGRATIONS, Workspace
from tests.test_jobs import finished, wait_for, worker_spawner


@pytest.fixture
def spawn_worker(tmp_path):
    yield from worker_spawner(tmp_path)


def _bg(store: JobStore, seconds: float = 0.0, **kw) -> str:
    return store.submit(SleepJob(seconds=seconds, **kw), priority=BACKGROUND_PRIORITY,
                        launched_by="demo build")


# -- the store ------------------------------------------------------------------------------
def test_user_jobs_are_claimed_before_an_older_background_job(ws):
    store = JobStore(ws)
    bg = _bg(store)
    user = store.submit(SleepJob(seconds=0), launched_by="Fine-tune page")
    assert store.get(bg).priority == BACKGROUND_PRIORITY
    assert store.get(user).priority == USER_PRIORITY
    assert store.get(user).launched_by == "Fine-tune page"
    assert [j.id for j in store.queue()] == [user, bg]
    assert store.claim("w1", min_priority=USER_PRIORITY).id == user
    assert store.claim("w1", min_priority=USER_PRIORITY) is None  # only the background left
    assert store.claim("w1").id == bg


def test_submit_checks_priority_and_launched_by(ws):
    store = JobStore(ws)
    with pytest.raises(MormError, match="priority") as e:
        store.submit(SleepJob(), priority="high")
    assert e.value.field == "priority"
    with pytest.raises(MormError, match="launched_by"):
        store.submit(SleepJob(), launched_by="x" * 65)


def test_the_demo_build_is_a_background_job():
    from morm_explorer.demo_jobs import PrepareDemoJob

    assert PrepareDemoJob.priority == BACKGROUND_PRIORITY
    assert SleepJob.priority == USER_PRIORITY


def test_backends_record_who_launched_a_job(ws, no_worker):
    from morm_explorer.jobs import get_backend

    job_id = get_backend(ws, launched_by="Explore page").submit(SleepJob(seconds=0))
    assert JobStore(ws).get(job_id).launched_by == "Explore page"


def test_an_older_workspace_gets_priorities_and_the_demo_build_is_background(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    con = sqlite3.connect(root / "morm.sqlite", isolation_level=None)
    for sql in MIGRATIONS[:-1]:
        con.executescript(sql)
    con.execute(f"PRAGMA user_version={len(MIGRATIONS) - 1}")
    for job_id, kind in (("a", "prepare_demo"), ("b", "sleep")):
        con.execute("INSERT INTO jobs (id, kind, spec, status, created_at) VALUES "
                    "(?, ?, '{}', 'queued', 1.0)", (job_id, kind))
    con.close()
    store = JobStore(Workspace(root))
    assert (store.get("a").priority, store.get("a").launched_by) == (BACKGROUND_PRIORITY,
                                                                     "demo build")
    assert (store.get("b").priority, store.get("b").launched_by) == (USER_PRIORITY, None)
    assert [j.id for j in store.queue()] == ["b", "a"]


def test_requeue_puts_a_running_job_back_unless_a_cancel_is_pending(ws):
    store = JobStore(ws)
    a, b = store.submit(SleepJob(seconds=0)), store.submit(SleepJob(seconds=0))
    assert store.claim("w1").id == a and store.claim("w1").id == b
    assert store.requeue(a, "w2", "app stopped") is False  # not that worker's job
    assert store.requeue(a, "w1", "its app stopped") is True
    info = store.get(a)
    assert (info.status, info.worker_id, info.started_at) == ("queued", None, None)
    assert "its app stopped" in info.message and "back in the queue" in store.logs(a)[-1]
    store.cancel(b)
    assert store.requeue(b, "w1", "its app stopped") is False  # the user asked it to stop
    assert store.claim("w3").id == a  # claimable again, by any worker
    assert store.requeue(a, "w3", "its app stopped")
    assert store.cancel(a).message == "cancelled while waiting to run again"


def test_heartbeat_reports_the_jobs_no_longer_the_workers(ws):
    store = JobStore(ws)
    a, b = store.submit(SleepJob(seconds=0)), store.submit(SleepJob(seconds=0))
    store.claim("w1")
    store.claim("w1")
    w = WorkerInfo(id="w1", pid=1, host="h", started_at=0.0, heartbeat_at=0.0)
    assert store.heartbeat(w, [a, b]) == set()
    assert store.workers()[0].job_id == f"{a},{b}"
    store.fail(b, "w1", "gone")
    assert store.heartbeat(w, [a, b]) == {b}


# -- the Jobs view's rows and lines -------------------------------------------------------
def test_job_rows_list_running_then_the_queue_with_places_then_finished(ws):
    store = JobStore(ws)
    done = store.submit(SleepJob(seconds=0))
    store.claim("w0")
    store.finish(done, "w0", {"steps": 1, "final": {"score": 0.123456}})
    bg = _bg(store)
    run = store.submit(SleepJob(seconds=0), launched_by="CLI")
    u1 = store.submit(SleepJob(seconds=0), launched_by="Explore page")
    u2 = store.submit(SleepJob(seconds=0), launched_by="Fine-tune page")
    assert store.claim("w1").id == run
    store.set_progress(run, 0.25, "step 1/4")
    rows = job_rows(store, now=store.get(run).started_at + 10)
    assert [r.id for r in rows] == [run, u1, u2, bg, done]
    assert [r.place for r in rows] == [None, 1, 2, 3, None]
    assert [r.launched_by for r in rows] == ["CLI", "Explore page", "Fine-tune page",
                                             "demo build", "not recorded"]
    assert rows[0].estimate_s == pytest.approx(30.0)  # 10 s for a quarter: 30 s left
    assert rows[3].background and not rows[1].background
    assert rows[0].title == "diagnostic sleep"


def test_time_left_needs_a_rate():
    from morm_explorer.jobs.spec import JobInfo

    info = JobInfo(id="j", kind="sleep", spec={}, status="running", created_at=0.0,
                   started_at=100.0, progress=0.01)
    assert time_left(info, 110.0) is None  # 1 %: too little to extrapolate
    assert time_left(JobInfo(**{**info.to_dict(), "progress": 0.5}), 110.0) == 10.0


def test_log_lines_and_results_read_as_text_not_dicts():
    sample = "sample: " + json.dumps({"step": 3, "prompt": "How do I boil an egg?",
                                      "response": "Put it in\nwater.",
                                      "scores": {"helpful": 0.51234}})
    assert format_log_line(sample) == ("sample, step 3: How do I boil an egg? -> Put it in "
                                       "water. (helpful 0.51)")
    assert format_log_line('result: {"steps": 8, "path": "/w/p"}') == (
        "result: steps: 8; path: /w/p")
    assert format_log_line("step 1/10") == "step 1/10"
    assert format_log_line("note: {not json") == "note: {not json"
    assert result_lines({"steps": 8, "final": {"objective/kl": 0.01234}, "loss": 0.5}) == [
        "steps: 8", "final · objective/kl: 0.01234", "loss: 0.5"]


# -- a worker: a user's job beside the demo build ----------------------------------------
@pytest.mark.slow
def test_a_users_job_runs_beside_a_background_job_one_at_a_time(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)
    store = backend.store
    bg = _bg(store, seconds=60, steps=600)
    worker = spawn_worker(ws)
    runner = wait_for(lambda: store.get(bg).pid, 30)
    # the build's runner yields the CPU to what a user launches (once it has started)
    nice = min(19, os.getpriority(os.PRIO_PROCESS, worker.pid) + 10)
    wait_for(lambda: os.getpriority(os.PRIO_PROCESS, runner) == nice, 30)
    wait_for(lambda: store.get(bg).progress > 0, 30)
    t0 = time.monotonic()
    u1 = backend.submit(SleepJob(seconds=2, steps=4))
    u2 = backend.submit(SleepJob(seconds=0.2, steps=2))
    first = wait_for(lambda: finished(backend, u1), 30)
    print(f"\na user's job started {first.started_at - store.get(u1).created_at:.2f} s after "
          f"submission while the demo build ran; done in {time.monotonic() - t0:.1f} s")
    assert first.status == "succeeded" and first.worker_id == store.get(bg).worker_id
    second = wait_for(lambda: finished(backend, u2), 30)
    assert second.status == "succeeded"
    assert second.started_at >= first.finished_at  # user jobs one at a time
    assert store.get(bg).status == "running"  # the build went on meanwhile
    backend.cancel(bg)
    assert wait_for(lambda: finished(backend, bg), 10).status == "cancelled"
    worker.terminate()
    assert worker.wait(timeout=10) == 0


# -- a worker owned by its app --------------------------------------------------------------
@pytest.mark.slow
def test_a_worker_started_for_the_app_stops_with_it_and_requeues_its_job(ws):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        backend = LocalBackend(ws, owner_pid=owner.pid)  # as the app's pages make it
        job_id = backend.submit(SleepJob(seconds=60, steps=600, artifact="long"))
        running = wait_for(lambda: (j := backend.get(job_id)).status == "running" and j.pid
                           and backend.store.staging_dir(job_id).is_dir() and j, 30)
        (worker,) = backend.store.live_workers()
        owner.kill()
        owner.wait(timeout=10)
        t0 = time.monotonic()
        wait_for(lambda: not pid_alive(worker.pid), 10)
        took = time.monotonic() - t0
        print(f"\nworker gone {took:.2f} s after its app")
        assert took < 5.0
        wait_for(lambda: not pid_alive(running.pid), 5)  # and its job's runner
    finally:
        if owner.poll() is None:
            owner.kill()
    info = backend.store.get(job_id)
    assert info.status == "queued" and "app" in info.message and "stopped" in info.message
    assert not backend.store.staging_dir(job_id).exists()
    assert not (ws.root / "diagnostics").exists()
    assert backend.store.workers() == []
    assert backend.store.claim("next").id == job_id  # it runs again at the next start


@pytest.mark.slow
def test_a_worker_whose_owner_is_already_gone_exits_at_once(ws, spawn_worker):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store = JobStore(ws)
    job_id = store.submit(SleepJob(seconds=0))
    worker = spawn_worker(ws, "--owner-pid", str(gone.pid))
    assert worker.wait(timeout=20) == 0
    assert store.get(job_id).status == "queued"  # it took nothing


def test_jobs_queue_command_lists_places_estimates_and_launchers(ws, capsys):
    from tests.test_jobs import _morm_jobs

    store = JobStore(ws)
    bg = _bg(store)
    assert _morm_jobs(ws, "jobs", "submit-sleep", "--seconds", "0", "--no-worker") == 0
    user = capsys.readouterr().out.strip()
    assert store.get(user).launched_by == "CLI"
    assert _morm_jobs(ws, "jobs", "queue") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["#1", "#2"]
    assert user in lines[0] and "CLI" in lines[0]
    assert bg in lines[1] and "demo build" in lines[1]


def test_a_job_run_in_the_foreground_says_so(ws):
    from morm_explorer.jobs.worker import run_inline

    info = run_inline(ws, SleepJob(seconds=0, steps=1))
    assert info.status == "succeeded" and info.launched_by == "CLI (in the foreground)"
