"""The job system: specs, the store (claim, cancel, metrics, logs), runners run inline, a real
worker process running a job to success, and the `morm jobs` / `morm worker` commands.

Faults (cancel, killed workers, crashing runners, racing workers) are in test_jobs_faults.py.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest

from morm_explorer.errors import MormError
from morm_explorer.jobs import (
    JobCancelled,
    JobContext,
    JobSpec,
    LocalBackend,
    get_backend,
    register_job,
)
from morm_explorer.jobs.backend import JobBackend
from morm_explorer.jobs.builtin import SleepJob, run_sleep
from morm_explorer.jobs.cli import add_job_commands
from morm_explorer.jobs.spec import get_job_kind
from morm_explorer.jobs.store import JobStore
from morm_explorer.jobs.worker import run_inline
from tests.conftest import REPO, run_concurrently


def worker_spawner(tmp_path):
    """Yields a function that starts `python -m morm_explorer.jobs.worker` processes; kills
    the ones still running afterwards. The body of the `spawn_worker` fixtures."""
    procs: list[subprocess.Popen] = []

    def start(ws, *args: str, poll: str = "0.2") -> subprocess.Popen:
        cmd = [sys.executable, "-m", "morm_explorer.jobs.worker", "--workspace", str(ws.root),
               "--poll", poll, *args]
        with open(tmp_path / f"worker-{len(procs)}.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def spawn_worker(tmp_path):
    yield from worker_spawner(tmp_path)


def wait_for(predicate, timeout: float, every: float = 0.05):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def finished(backend, job_id: str):
    """The job's info once it is done, else None: a `wait_for` predicate."""
    info = backend.get(job_id)
    return info if info.done else None


def cancel_and_time(backend, job_id: str, every: float):
    """Cancel ``job_id`` and wait (10 s at most) until it is done: (its info, the seconds from
    the cancel until then)."""
    t0 = time.monotonic()
    backend.cancel(job_id)
    info = wait_for(lambda: finished(backend, job_id), 10, every=every)
    return info, time.monotonic() - t0


def assert_nothing_half_written(ws, job_id: str) -> None:
    """Neither the job's staging folder nor any of its artifacts is left in the workspace."""
    assert not (ws.root / "jobs" / job_id).exists()
    assert not (ws.root / "diagnostics").exists()


# -- specs --------------------------------------------------------------------------------
def test_spec_round_trip():
    spec = SleepJob(seconds=0.5, steps=3, fail_at=2, fail_mode="kill", artifact="x")
    assert SleepJob.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert get_job_kind("sleep").spec_cls is SleepJob


@pytest.mark.parametrize("kwargs, field", [
    ({"steps": 0}, "steps"), ({"seconds": -1}, "seconds"), ({"fail_at": 5, "steps": 5},
                                                            "fail_at"),
    ({"fail_mode": "explode"}, "fail_mode"),
])
def test_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(MormError) as e:
        SleepJob(**kwargs)
    assert e.value.field == field


def test_spec_rejects_unknown_fields_and_kinds():
    with pytest.raises(MormError, match="unknown field.*colour"):
        SleepJob.from_dict({"seconds": 1, "colour": "red"})
    with pytest.raises(MormError, match="unknown job kind 'nope'.*sleep"):
        get_job_kind("nope")


def test_register_job_rejects_a_second_class_for_a_kind():
    class Other(SleepJob):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_job("sleep", Other, run_sleep)
    register_job("sleep", SleepJob, run_sleep)  # the same class again is fine (re-import)


def test_missing_job_modules_are_skipped_with_a_warning(monkeypatch, caplog):
    from morm_explorer.jobs import spec as spec_module

    monkeypatch.setattr(spec_module, "JOB_MODULES",
                        ["morm_explorer.jobs.builtin", "morm_explorer.not_installed"])
    assert spec_module.load_job_modules() == ["morm_explorer.not_installed"]
    assert "morm_explorer.not_installed" in caplog.text
    assert "sleep" in spec_module.known_kinds()


# -- store --------------------------------------------------------------------------------
def test_submit_claim_in_order_and_cancel_queued(ws):
    store = JobStore(ws)
    ids = [store.submit(SleepJob(seconds=0)) for _ in range(3)]
    assert [j.id for j in store.list()] == ids[::-1]  # newest first
    cancelled = store.cancel(ids[0])
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    job = store.claim("w1")
    assert job.id == ids[1] and job.status == "running" and job.attempts == 1
    assert store.claim("w1", kinds=["train"]) is None  # only kinds the worker knows
    assert store.claim("w2").id == ids[2]
    assert store.claim("w2") is None
    assert [j.id for j in store.list(status="running")] == ids[:0:-1]
    with pytest.raises(MormError, match="unknown job status"):
        store.list(status="done")
    with pytest.raises(MormError, match="no job"):
        store.get("missing")


def test_claim_from_many_threads_gives_each_job_once(ws):
    store = JobStore(ws)
    ids = {store.submit(SleepJob(seconds=0)) for _ in range(40)}
    claimed: dict[str, list[str]] = {}

    def claim_all(worker: str) -> None:
        while (job := store.claim(worker)) is not None:
            claimed.setdefault(job.id, []).append(worker)

    run_concurrently(*(functools.partial(claim_all, f"w{i}") for i in range(8)))
    assert set(claimed) == ids
    assert all(len(workers) == 1 for workers in claimed.values())
    assert {j.attempts for j in store.list(limit=100)} == {1}


def test_metrics_long_and_wide_and_logs_since(ws):
    store = JobStore(ws)
    job_id = store.submit(SleepJob())
    for step in range(3):
        store.add_metrics(job_id, step, {"loss/total": 1.0 / (step + 1), "eval/acc": step / 2})
    long = store.metrics(job_id)
    assert list(long.columns) == ["step", "key", "value", "t"] and len(long) == 6
    wide = store.metrics(job_id, wide=True)
    assert list(wide.index) == [0, 1, 2]
    assert wide.loc[2, "loss/total"] == pytest.approx(1 / 3) and wide.loc[1, "eval/acc"] == 0.5
    assert store.metrics(store.submit(SleepJob()), wide=True).empty
    for i in range(4):
        store.add_log(job_id, f"line {i}")
    assert store.logs(job_id) == [f"line {i}" for i in range(4)]
    assert store.logs(job_id, since=3) == ["line 3"]


# -- runners, inline ----------------------------------------------------------------------
def test_run_inline_records_progress_metrics_logs_and_artifact(ws):
    info = run_inline(ws, SleepJob(seconds=0.1, steps=4, artifact="diag one"))
    assert info.status == "succeeded" and info.progress == 1.0 and info.error is None
    assert info.result["steps"] == 4 and info.result["artifacts"] == ["diagnostics/diag-one"]
    folder = ws.root / "diagnostics" / "diag-one"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "step-00000.json", "step-00001.json", "step-00002.json",
        "step-00003.json"]
    assert not (ws.root / "jobs" / info.id).exists()
    store = JobStore(ws)
    assert sorted(store.metrics(info.id)["key"].unique()) == ["sleep/elapsed_s", "sleep/step_s"]
    assert "committed diagnostics/diag-one" in store.logs(info.id)
    assert store.workers() == []


def test_artifact_is_not_overwritten_unless_asked(ws):
    run_inline(ws, SleepJob(seconds=0, steps=1, artifact="a"))
    again = run_inline(ws, SleepJob(seconds=0, steps=2, artifact="a"))
    assert again.status == "failed" and "diagnostics/a already exists" in again.error
    assert len(list((ws.root / "diagnostics" / "a").glob("step-*"))) == 1
    replaced = run_inline(ws, SleepJob(seconds=0, steps=2, artifact="a", overwrite=True))
    assert replaced.status == "succeeded"
    assert len(list((ws.root / "diagnostics" / "a").glob("step-*"))) == 2
    assert [p.name for p in (ws.root / "diagnostics").iterdir()] == ["a"]  # no leftovers


def test_runner_exception_fails_the_job_with_its_message(ws):
    info = run_inline(ws, SleepJob(seconds=0, steps=3, fail_at=1, artifact="never"))
    assert info.status == "failed"
    assert info.error == "RuntimeError: diagnostic failure at step 1"
    assert any("Traceback" in line for line in JobStore(ws).logs(info.id))
    assert not (ws.root / "diagnostics").exists() and not (ws.root / "jobs" / info.id).exists()


@dataclass(frozen=True)
class OddResultJob(JobSpec):
    kind: ClassVar[str] = "test-odd-result"


def test_a_result_that_is_not_json_fails_the_job(ws):
    register_job(OddResultJob.kind, OddResultJob, lambda spec, ctx: {"when": object()})
    info = run_inline(ws, OddResultJob())
    assert info.status == "failed" and "test-odd-result runner returned a result that is not " \
        "JSON" in info.error


def test_a_reaped_job_cannot_commit(ws):
    store = JobStore(ws)
    job = store.claim("w-gone", job_id=store.submit(SleepJob(artifact="late")))
    ctx = JobContext(store, job.id, SleepJob(artifact="late"), "w-gone")
    (ctx.staging_dir / "weights.bin").write_bytes(b"half")
    assert not ctx.cancelled()
    # No worker row and an old heartbeat: the job's worker is dead.
    assert store.reap(stale_after=-1) == [job.id]
    assert "w-gone" in store.get(job.id).error
    assert not store.staging_dir(job.id).exists()
    with pytest.raises(JobCancelled):
        ctx.commit_artifact("diagnostics", "late")
    assert not (ws.root / "diagnostics" / "late").exists()


# -- a real worker ------------------------------------------------------------------------
@pytest.mark.slow
def test_worker_process_runs_a_job_to_success(ws, spawn_worker):
    backend = LocalBackend(ws, start_worker=False)
    assert isinstance(backend, JobBackend) and isinstance(get_backend(ws), LocalBackend)
    job_id = backend.submit(SleepJob(seconds=0.5, steps=5, artifact="smoke"))
    assert backend.get(job_id).status == "queued"
    worker = spawn_worker(ws, "--once")
    assert worker.wait(timeout=60) == 0
    info = backend.wait(job_id, timeout=1)
    assert info.status == "succeeded" and info.attempts == 1 and info.pid is not None
    assert info.worker_id.startswith("w-") and info.result["artifact"].endswith("smoke")
    assert len(backend.metrics(job_id, wide=True)) == 5
    logs = backend.logs(job_id)
    assert logs[0] == f"claimed by worker {info.worker_id}" and logs[-1] == "succeeded"
    assert (ws.root / "diagnostics" / "smoke" / "config.json").exists()
    assert not (ws.root / "jobs" / job_id).exists()
    assert JobStore(ws).workers() == []  # the worker unregistered on exit


# -- commands -----------------------------------------------------------------------------
def _morm_jobs(ws, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="morm")
    parser.add_argument("--workspace")
    add_job_commands(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(["--workspace", str(ws.root), *argv])
    return args.func(args)


def test_jobs_commands(ws, capsys):
    assert _morm_jobs(ws, "jobs", "submit-sleep", "--seconds", "0", "--steps", "2",
                      "--no-worker") == 0
    job_id = capsys.readouterr().out.strip()
    assert _morm_jobs(ws, "jobs", "list") == 0
    assert job_id in capsys.readouterr().out
    assert _morm_jobs(ws, "jobs", "cancel", job_id) == 0
    assert "cancelled" in capsys.readouterr().out
    assert _morm_jobs(ws, "jobs", "show", job_id, "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    with pytest.raises(MormError, match="no job"):
        _morm_jobs(ws, "jobs", "show", "nope")
    with pytest.raises(MormError, match="field 'steps'"):
        _morm_jobs(ws, "jobs", "submit-sleep", "--steps", "0", "--no-worker")


@pytest.mark.slow
def test_worker_command_runs_the_queue(ws, capsys):
    run_inline(ws, SleepJob(seconds=0))  # a finished job is left alone
    assert _morm_jobs(ws, "jobs", "submit-sleep", "--seconds", "0.2", "--steps", "2",
                      "--no-worker") == 0
    job_id = capsys.readouterr().out.strip()
    assert _morm_jobs(ws, "worker", "--once", "--poll", "0.1") == 0
    assert "ran 1 job" in capsys.readouterr().out
    assert _morm_jobs(ws, "jobs", "show", job_id) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "sleep/elapsed_s" in out
    assert _morm_jobs(ws, "jobs", "logs", job_id, "--follow") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "succeeded"


def test_importing_the_job_system_loads_no_streamlit_torch_or_pandas():
    code = ("import sys, morm_explorer.jobs, morm_explorer.jobs.worker, morm_explorer.jobs.cli, "
            "morm_explorer.jobs.builtin; "
            "print([m for m in ('streamlit', 'torch', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_wait_times_out_with_a_message(ws):
    backend = LocalBackend(ws, start_worker=False)
    job_id = backend.submit(SleepJob())
    t0 = time.monotonic()
    with pytest.raises(MormError, match="still queued"):
        backend.wait(job_id, timeout=0.3, poll=0.05)
    assert time.monotonic() - t0 < 2


def test_discarding_a_job_clears_the_temporary_entries_it_left_in_its_noted_folders(ws):
    """A runner killed while saving a checkpoint leaves `.checkpoint.tmp-*` in its run folder;
    discarding the job (as the reaper does) removes those and nothing else there."""
    from morm_explorer.jobs.store import JobStore

    store = JobStore(ws)
    run = ws.root / "runs" / "ppo" / "r"
    (run / ".checkpoint.tmp-123").mkdir(parents=True)
    (run / ".checkpoint.tmp-123" / "policy.safetensors").write_bytes(b"half")
    (run / ".samples.jsonl.tmp-9").write_text("half")
    (run / "checkpoint").mkdir()
    (run / "samples.jsonl").write_text("{}\n")
    store.note_folder("job-1", run)
    store.staging_dir("job-1").mkdir(parents=True)
    store.discard_staging("job-1")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "samples.jsonl"]
    assert not store.job_dir("job-1").exists()
    store.discard_staging("job-2")  # a job that noted nothing: no error
