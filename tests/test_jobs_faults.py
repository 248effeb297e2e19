"""The job system under faults, with real processes and real signals (no mocks): cancelling a
running job, a worker killed or frozen mid-job, runners that raise or are killed, two workers
racing for the same queue, and `ensure_worker` starting exactly one worker.

Timings that the job system promises are measured and printed (run with ``-s`` to see them):
cancel within 5 s, a dead worker's job failed within 30 s.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from morm_explorer.jobs import LocalBackend
from morm_explorer.jobs.builtin import SleepJob
from morm_explorer.jobs.store import JobStore, pid_alive
from morm_explorer.jobs.worker import ensure_worker
from tests.conftest import run_concurrently
from tests.test_jobs import (
    assert_nothing_half_written,
    cancel_and_time,
    finished,
    wait_for,
    worker_spawner,
)

# 0.1 s steps, a staged file per step: long enough to be caught mid-way.
LONG = SleepJob(seconds=60, steps=600, artifact="long")


@pytest.fixture
def spawn_worker(tmp_path):
    yield from worker_spawner(tmp_path)


def _running_with_staging(store: JobStore, job_id: str):
    job = store.get(job_id)
    staged = store.staging_dir(job_id)
    if job.status == "running" and job.pid and staged.is_dir() and any(staged.glob("step-*")):
        return job
    return None


@pytest.mark.slow
def test_cancel_stops_a_running_job_within_5_s_and_the_worker_goes_on(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)
    long_id = backend.submit(LONG)
    next_id = backend.submit(SleepJob(seconds=0.2, steps=2))
    worker = spawn_worker(ws, "--once")
    wait_for(lambda: _running_with_staging(backend.store, long_id), 20)
    info, latency = cancel_and_time(backend, long_id, every=0.02)
    print(f"\ncancel latency, runner checking for cancel: {latency:.2f} s")
    assert info.status == "cancelled" and latency < 5.0
    assert_nothing_half_written(ws, long_id)
    assert backend.wait(next_id, timeout=60).status == "succeeded"
    assert worker.wait(timeout=10) == 0


@pytest.mark.slow
def test_cancel_stops_a_runner_stuck_in_a_long_call_within_5_s(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)
    # Hangs at step 5 without ever checking for cancellation, like a long torch call.
    job_id = backend.submit(SleepJob(seconds=60, steps=600, fail_at=5, fail_mode="hang",
                                     artifact="stuck"))
    spawn_worker(ws, "--once")
    wait_for(lambda: backend.get(job_id).progress >= 5 / 600, 20)
    runner_pid = backend.get(job_id).pid
    time.sleep(0.3)  # inside the hang
    info, latency = cancel_and_time(backend, job_id, every=0.02)
    print(f"\ncancel latency, runner stuck (SIGTERM after the grace period): {latency:.2f} s")
    assert info.status == "cancelled" and latency < 5.0
    assert "stopped by the worker" in info.message
    assert not pid_alive(runner_pid)
    assert_nothing_half_written(ws, job_id)


@pytest.mark.slow
def test_a_killed_worker_leaves_its_job_failed_and_nothing_half_written(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)
    long_id = backend.submit(LONG)
    next_id = backend.submit(SleepJob(seconds=0.2, steps=2))
    worker = spawn_worker(ws)
    running = wait_for(lambda: _running_with_staging(backend.store, long_id), 20)
    worker.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    worker.wait(timeout=10)
    # What a page does: poll. Every read reaps with the default staleness threshold.
    info = wait_for(lambda: finished(backend, long_id), 30, every=0.1)
    detected = time.monotonic() - t0
    print(f"\ndeath detection, worker killed (same machine): {detected:.2f} s")
    assert info.status == "failed" and detected < 30.0
    assert f"worker {running.worker_id} (pid {worker.pid})" in info.error
    assert "killed or out of memory" in info.error
    wait_for(lambda: not pid_alive(running.pid), 5)  # the runner died with its worker
    assert_nothing_half_written(ws, long_id)
    assert backend.get(next_id).status == "queued"
    assert spawn_worker(ws, "--once").wait(timeout=60) == 0
    nxt = backend.get(next_id)
    assert nxt.status == "succeeded" and nxt.attempts == 1
    assert nxt.worker_id != running.worker_id
    assert backend.get(long_id).attempts == 1  # a failed job is not silently retried


@pytest.mark.slow
def test_a_frozen_worker_is_failed_once_its_heartbeat_is_stale(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)  # default threshold: 15 s
    long_id = backend.submit(LONG)
    next_id = backend.submit(SleepJob(seconds=0.2, steps=2))
    worker = spawn_worker(ws)
    running = wait_for(lambda: _running_with_staging(backend.store, long_id), 20)
    worker.send_signal(signal.SIGSTOP)  # alive, but silent: only the heartbeat can tell
    t0 = time.monotonic()
    try:
        info = wait_for(lambda: finished(backend, long_id), 30, every=0.25)
        detected = time.monotonic() - t0
    finally:
        worker.send_signal(signal.SIGCONT)
    print(f"\ndeath detection, worker frozen (stale heartbeat): {detected:.2f} s")
    assert info.status == "failed" and detected < 30.0
    assert f"worker {running.worker_id}" in info.error and "stopped heartbeating" in info.error
    # Woken up, the worker finds its job taken away, stops its runner and goes on.
    assert backend.wait(next_id, timeout=60).status == "succeeded"
    assert backend.get(next_id).worker_id == running.worker_id
    assert backend.get(long_id).status == "failed"  # the late outcome did not overwrite it
    wait_for(lambda: not pid_alive(running.pid), 5)
    assert_nothing_half_written(ws, long_id)


@pytest.mark.slow
def test_crashing_runners_fail_with_the_reason_and_the_worker_goes_on(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)
    killed = backend.submit(SleepJob(seconds=0.2, steps=2, fail_at=1, fail_mode="kill",
                                     artifact="k"))
    raised = backend.submit(SleepJob(seconds=0.2, steps=2, fail_at=1, fail_mode="raise"))
    fine = backend.submit(SleepJob(seconds=0.1, steps=1))
    assert spawn_worker(ws, "--once").wait(timeout=30) == 0
    k = backend.get(killed)
    assert k.status == "failed" and f"(pid {k.pid}) was killed by SIGKILL" in k.error
    assert "out of memory" in k.error
    assert_nothing_half_written(ws, killed)
    r = backend.get(raised)
    assert r.status == "failed" and r.error == "RuntimeError: diagnostic failure at step 1"
    assert backend.get(fine).status == "succeeded"


@pytest.mark.slow
def test_two_workers_racing_run_every_job_exactly_once(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)
    ids = [backend.submit(SleepJob(seconds=0.05, steps=1)) for _ in range(16)]
    workers = [spawn_worker(ws, "--once", poll="0.05") for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=40) == 0
    infos = [backend.get(i) for i in ids]
    assert [j.status for j in infos] == ["succeeded"] * len(ids)
    assert {j.attempts for j in infos} == {1}
    for j in infos:
        claims = [line for line in backend.logs(j.id) if line.startswith("claimed by")]
        assert claims == [f"claimed by worker {j.worker_id}"]
    per_worker = {w: sum(j.worker_id == w for j in infos) for w in {j.worker_id for j in infos}}
    print(f"\njobs per worker: {sorted(per_worker.values())}")
    assert len(per_worker) == 2  # they did race for the same queue


@pytest.mark.slow
def test_ensure_worker_starts_exactly_one(ws):
    store = JobStore(ws)
    started = run_concurrently(*[lambda: ensure_worker(ws)] * 4)
    assert sorted(started) == [False, False, False, True]
    (first,) = store.live_workers()
    try:
        assert ensure_worker(ws) is False
        backend = LocalBackend(ws)  # submit would start a worker if none were alive
        info = backend.wait(backend.submit(SleepJob(seconds=0.1, steps=1)), timeout=60)
        assert info.status == "succeeded" and info.worker_id == first.id
        assert [w.id for w in store.workers()] == [first.id]  # it took over its placeholder
        assert list((ws.root / "logs").glob("worker-*.log"))
    finally:
        os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(first.pid), 10)
    assert ensure_worker(ws) is True  # the dead one does not count
    (second,) = store.live_workers()
    assert second.id != first.id
    # Until its first heartbeat the row is ensure_worker's placeholder, device "starting".
    wait_for(lambda: store.workers()[0].device != "starting", 10)
    os.kill(second.pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(second.pid), 10)
    wait_for(lambda: store.workers() == [], 5)  # a stopped worker unregisters itself


@pytest.mark.slow
def test_stopping_a_worker_fails_its_running_job(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)
    job_id = backend.submit(LONG)
    worker = spawn_worker(ws)
    wait_for(lambda: _running_with_staging(backend.store, job_id), 20)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    info = backend.get(job_id)
    assert info.status == "failed" and "stopped while the job ran" in info.error
    assert "SIGTERM" in info.error
    assert_nothing_half_written(ws, job_id)
    assert backend.store.workers() == []
