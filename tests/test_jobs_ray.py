"""The Ray backend on a real Ray cluster, no mocks: a head node started for this module on
this machine, with 2 CPUs and 1 logical GPU, jobs submitted through the Ray Jobs API, in the
shared-workspace mode (the job runs in its entry process, on the head). The default, remote
mode, and RL runs, resumes and sweeps on Ray, are tests/test_ray_remote.py's.

Covered: a sleep job's progress, metrics, logs and artifact flow back into the workspace;
a job asking for a GPU is given one; a job Ray cannot schedule stays queued until cancelled;
a Ray job whose entry cannot start, or that Ray has no record of, fails its job; cancel, a
Ray stop and a killed entry process each end a running job in one clear state, never stuck
"running". Without Ray installed these are skipped, but not the tests of the backend choice,
the queue reservation and the GPU request, which need no cluster. Latencies are printed
(run with ``-s``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from morm_explorer.errors import MormError
from morm_explorer.jobs import JobSpec, LocalBackend, get_backend, ray_backend
from morm_explorer.jobs.backend import JobBackend
from morm_explorer.jobs.builtin import SleepJob
from morm_explorer.jobs.ray_backend import RayBackend, spec_device
from morm_explorer.jobs.store import JobStore, pid_alive
from tests.conftest import REPO
from tests.ray_cluster import free_ports, jobs_api_up
from tests.test_jobs import (
    _morm_jobs,
    assert_nothing_half_written,
    cancel_and_time,
    finished,
    wait_for,
)

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed; the Ray backend is "
                               "optional: pip install 'ray[default]' to test it")


@pytest.fixture(autouse=True)
def _shared_workspace(monkeypatch):
    """These tests cover the shared-workspace mode (jobs run in their entry process on the
    head); tests/test_ray_remote.py covers the default remote mode on two nodes."""
    monkeypatch.setenv("MORM_RAY_SHARED_WORKSPACE", "1")


# 0.1 s steps, a staged file per step: long enough to be caught mid-way.
LONG = SleepJob(seconds=60, steps=600, artifact="long")


@dataclass(frozen=True)
class DeviceJob(JobSpec):
    kind: ClassVar[str] = "test-device"
    device: str = "auto"


@dataclass(frozen=True)
class ConfigJob(JobSpec):
    kind: ClassVar[str] = "test-config"
    config: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """A Ray head on this machine for this module's tests; yields its dashboard (Jobs API)
    address."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not HAS_RAY or not ray_cli.exists():
        pytest.skip("ray is not installed; the Ray backend is optional: pip install "
                    "'ray[default]' to test it")
    gcs, dashboard, client, agent = free_ports(4)
    # The venv first on PATH: the entrypoint's "python" must be the one with morm_explorer.
    # No drain on SIGTERM: the head goes down in ~2 s rather than 30.
    env = {**os.environ, "PATH": f"{ray_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    # --block: the head lives exactly as long as this process, so the teardown stops this
    # cluster and no other (`ray stop` would stop every Ray cluster on the machine).
    cmd = [str(ray_cli), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "1",
           "--resources", "{}", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
           "--disable-usage-stats", "--port", str(gcs), "--dashboard-port", str(dashboard),
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
           "--object-store-memory", str(100 * 2**20)]
    log_path = tmp_path_factory.mktemp("ray") / "head.log"
    address = f"http://127.0.0.1:{dashboard}"
    t0 = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
    try:
        while not jobs_api_up(address):
            if proc.poll() is not None or time.monotonic() - t0 > 90:
                pytest.fail(f"the Ray head did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        print(f"\nRay head up in {time.monotonic() - t0:.1f} s")
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:  # anything of this head still alive in its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _running_with_staging(backend: RayBackend, job_id: str):
    info = backend.get(job_id)
    staged = backend.store.staging_dir(job_id)
    if info.status == "running" and info.pid and info.progress > 0 and any(
            staged.glob("step-*")):
        return info
    return None


def _ray_status(backend: RayBackend, job_id: str) -> str:
    return backend.client.get_job_status(job_id).value


# -- without a cluster --------------------------------------------------------------------
def test_get_backend_follows_the_argument_then_morm_backend_then_ray_address(ws, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MORM_BACKEND", raising=False)
    assert isinstance(get_backend(ws), LocalBackend)
    monkeypatch.setenv("RAY_ADDRESS", "http://10.1.2.3:8265")
    backend = get_backend(ws)  # connects on first use only
    assert isinstance(backend, RayBackend) and backend.address == "http://10.1.2.3:8265"
    assert isinstance(backend, JobBackend)
    monkeypatch.setenv("MORM_BACKEND", "local")
    assert isinstance(get_backend(ws), LocalBackend)
    assert isinstance(get_backend(ws, backend="ray"), RayBackend)
    monkeypatch.setenv("MORM_BACKEND", "slurm")
    with pytest.raises(MormError, match="unknown job backend 'slurm'.*local, ray"):
        get_backend(ws)


def test_a_job_reserved_for_ray_is_taken_only_by_its_id(ws):
    store = JobStore(ws)
    ray_id = store.submit(SleepJob(seconds=0), reserved_for="ray")
    local_id = store.submit(SleepJob(seconds=0))
    assert store.claim("w-local").id == local_id  # a local worker skips the Ray job
    assert store.claim("w-local") is None
    job = store.claim("ray-w-node", job_id=ray_id)
    assert job.status == "running" and job.worker_id == "ray-w-node"


def test_the_remote_mode_ships_the_code_and_takes_placement_from_the_environment(
        ws, monkeypatch):
    import morm_explorer

    monkeypatch.delenv("MORM_RAY_SHARED_WORKSPACE")
    monkeypatch.setenv("MORM_RAY_RESOURCES", '{"a100": 1}')
    backend = RayBackend(ws, address="http://127.0.0.1:1")
    assert not backend.shared_workspace and backend.default_resources == {"a100": 1.0}
    env = backend.job_runtime_env()
    assert env["py_modules"] == [str(Path(morm_explorer.__file__).parent)]
    assert "*.tar.xz" in env["excludes"]  # the demo bundle stays with the app
    assert env["env_vars"]["MORM_WORKSPACE"] == str(ws.root.resolve())
    pins = ray_backend.pinned_requirements()
    assert any(p.startswith("torch==") and "+" not in p for p in pins)
    monkeypatch.setenv("MORM_RAY_RESOURCES", "[1]")
    with pytest.raises(MormError, match="MORM_RAY_RESOURCES"):
        RayBackend(ws)
    monkeypatch.delenv("MORM_RAY_RESOURCES")
    with pytest.raises(MormError, match="storage URI"):
        RayBackend(ws, storage="not-a-uri")
    with pytest.raises(MormError, match="credentials"):
        RayBackend(ws, storage="s3://key:secret@bucket/x")
    shared = RayBackend(ws, shared_workspace=True)
    assert "py_modules" not in shared.job_runtime_env()
    with pytest.raises(MormError, match="remote mode"):
        shared.submit(SleepJob(), resources={"a100": 1})
    assert JobStore(ws).list() == []  # nothing was queued


def test_the_device_of_a_spec_decides_its_gpu(ws):
    assert spec_device(DeviceJob(device="cuda")) == "cuda"
    assert spec_device(ConfigJob(config={"device": "cpu", "lr": 1e-3})) == "cpu"
    assert spec_device(SleepJob()) is None and spec_device(ConfigJob()) is None
    backend = RayBackend(ws, address="http://127.0.0.1:9")  # never contacted below
    assert [backend.gpus_for(s) for s in (DeviceJob(device="cuda"), DeviceJob(device="cpu"),
                                          ConfigJob(config={"device": "cuda"}), SleepJob())
            ] == [1, 0, 1, 0]


@needs_ray
def test_an_unreachable_cluster_is_a_clear_error_and_queues_nothing(ws):
    (port,) = free_ports(1)
    backend = RayBackend(ws, address=f"http://127.0.0.1:{port}")
    with pytest.raises(MormError, match="cannot reach the Ray cluster.*RAY_ADDRESS"):
        backend.submit(SleepJob())
    assert backend.list() == []


# -- on a cluster -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sleep_job_runs_on_ray_and_reports_into_the_workspace(ws, ray_address, monkeypatch,
                                                                 capsys):
    backend = RayBackend(ws, address=ray_address)
    t0 = time.monotonic()
    job_id = backend.submit(SleepJob(seconds=0.5, steps=5, artifact="on ray"))
    info = backend.wait(job_id, timeout=60, poll=0.1)
    print(f"\nsleep job on Ray, submit to succeeded: {time.monotonic() - t0:.2f} s")
    assert info.status == "succeeded", info.error
    assert info.worker_id.startswith("ray-w-") and info.progress == 1.0 and info.attempts == 1
    assert info.result["steps"] == 5 and info.result["artifacts"] == ["diagnostics/on-ray"]
    assert len(backend.metrics(job_id, wide=True)) == 5
    logs = backend.logs(job_id)
    assert f"submitted to the Ray cluster at {ray_address} (0 GPU; the workspace shared)" in logs
    assert f"claimed by worker {info.worker_id}" in logs
    assert any(line.endswith("CUDA_VISIBLE_DEVICES=''") for line in logs)  # no GPU: none seen
    assert "step 5/5" in logs and "committed diagnostics/on-ray" in logs
    assert logs[-1] == "succeeded"
    # The artifact is under the shared root; nothing else is left behind.
    assert sorted(p.name for p in (ws.root / "diagnostics" / "on-ray").iterdir()) == [
        "config.json", *(f"step-{i:05d}.json" for i in range(5))]
    assert not (ws.root / "jobs" / job_id).exists()
    assert backend.store.workers() == []  # a Ray entry is no queue worker
    assert wait_for(lambda: _ray_status(backend, job_id) == "SUCCEEDED", 10)
    # `morm jobs` finds the job through $RAY_ADDRESS.
    monkeypatch.delenv("MORM_BACKEND", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    capsys.readouterr()
    assert _morm_jobs(ws, "jobs", "list", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["id"] == job_id and listed["status"] == "succeeded"


@pytest.mark.slow
def test_a_job_asking_for_a_gpu_gets_one(ws, ray_address):
    backend = RayBackend(ws, address=ray_address)
    assert backend.gpus_for(DeviceJob(device="auto")) == 1  # the cluster has a (logical) GPU
    job_id = backend.submit(SleepJob(seconds=0.1, steps=1), num_gpus=1)
    assert backend.wait(job_id, timeout=60, poll=0.1).status == "succeeded"
    logs = backend.logs(job_id)
    assert f"submitted to the Ray cluster at {ray_address} (1 GPU; the workspace shared)" in logs
    assert any(line.endswith("CUDA_VISIBLE_DEVICES='0'") for line in logs)  # Ray's GPU 0


@pytest.mark.slow
def test_a_job_ray_cannot_schedule_stays_queued_and_cancels_at_once(ws, ray_address):
    backend = RayBackend(ws, address=ray_address)
    job_id = backend.submit(SleepJob(seconds=0), num_gpus=2)  # the cluster has 1
    time.sleep(1.0)
    assert backend.get(job_id).status == "queued"
    assert _ray_status(backend, job_id) == "PENDING"
    assert backend.store.claim("w-local") is None  # no local worker takes it meanwhile
    info = backend.cancel(job_id)
    assert info.status == "cancelled" and info.message == "cancelled before it started"
    # Ray cannot stop a job still waiting for resources (ray-project/ray#58353): should it
    # ever start, its entry finds the job cancelled and exits without running it.


@pytest.mark.slow
def test_a_ray_job_whose_entry_cannot_start_fails_the_job_with_rays_message(ws, ray_address):
    # A wrong interpreter for the nodes: the entry never runs, so nothing is recorded by it;
    # `get` settles the job from Ray's status.
    backend = RayBackend(ws, address=ray_address, python="/nonexistent/python")
    job_id = backend.submit(SleepJob(seconds=0))
    t0 = time.monotonic()
    info = wait_for(lambda: finished(backend, job_id), 30, every=0.1)
    print(f"\nRay job that could not start its entry settled after {time.monotonic() - t0:.2f} s")
    assert info.status == "failed" and info.started_at is None
    assert info.error.startswith("its Ray job ended FAILED without recording an outcome")
    assert "python" in info.error and "not found" in info.error  # the log tail Ray kept
    assert backend.list()[0].status == "failed"


@pytest.mark.slow
def test_a_queued_job_ray_has_no_record_of_fails_after_a_grace_period(ws, ray_address,
                                                                       monkeypatch):
    # As after a cluster restart, or a submitter killed between its two submits.
    backend = RayBackend(ws, address=ray_address)
    job_id = backend.store.submit(SleepJob(), reserved_for="ray")
    assert backend.get(job_id).status == "queued"  # within the grace period: left alone
    monkeypatch.setattr(ray_backend, "SUBMIT_GRACE_S", 0.0)
    info = backend.get(job_id)
    assert info.status == "failed" and "has no record of it" in info.error


@pytest.mark.slow
def test_cancel_stops_a_running_ray_job_within_5_s(ws, ray_address):
    backend = RayBackend(ws, address=ray_address)
    job_id = backend.submit(LONG)
    running = wait_for(lambda: _running_with_staging(backend, job_id), 60, every=0.1)
    assert 0 < running.progress < 1 and len(backend.metrics(job_id, wide=True)) >= 1
    info, latency = cancel_and_time(backend, job_id, every=0.05)
    print(f"\ncancel latency on Ray: {latency:.2f} s")
    assert info.status == "cancelled" and latency < 5.0
    assert_nothing_half_written(ws, job_id)
    assert wait_for(lambda: not pid_alive(running.pid), 5)
    assert wait_for(lambda: _ray_status(backend, job_id) == "STOPPED", 10)
    assert backend.get(job_id).status == "cancelled"  # Ray's STOPPED changes nothing now


@pytest.mark.slow
def test_a_ray_stop_without_a_cancel_fails_the_job_with_the_reason(ws, ray_address):
    backend = RayBackend(ws, address=ray_address)
    job_id = backend.submit(LONG)
    wait_for(lambda: _running_with_staging(backend, job_id), 60, every=0.1)
    backend.client.stop_job(job_id)  # as `ray job stop` would: no cancel flag in the store
    info = wait_for(lambda: finished(backend, job_id), 15, every=0.05)
    assert info.status == "failed" and "SIGTERM" in info.error
    # The entry logs the stop just after it marks the job failed: wait for the line.
    assert wait_for(lambda: "its Ray job was stopped (SIGTERM)" in " ".join(
        backend.logs(job_id)), 10, every=0.05)
    assert_nothing_half_written(ws, job_id)


@pytest.mark.slow
def test_a_killed_entry_process_fails_the_job_never_leaves_it_running(ws, ray_address):
    backend = RayBackend(ws, address=ray_address)
    job_id = backend.submit(LONG)
    running = wait_for(lambda: _running_with_staging(backend, job_id), 60, every=0.1)
    with open(f"/proc/{running.pid}/stat") as fh:  # the runner's parent is the entry
        entry_pid = int(fh.read().rsplit(")", 1)[1].split()[1])
    assert f"entry pid {entry_pid}" in " ".join(backend.logs(job_id))
    os.kill(entry_pid, signal.SIGKILL)  # as the OOM killer would
    t0 = time.monotonic()
    info = wait_for(lambda: finished(backend, job_id), 30, every=0.1)
    print(f"\nkilled Ray entry seen after {time.monotonic() - t0:.2f} s: {info.error[:80]}")
    assert info.status == "failed"
    assert info.error.startswith("its Ray job ended FAILED")
    assert "exit code" in info.error  # Ray's own account of it
    assert wait_for(lambda: not pid_alive(running.pid), 5)  # the runner died with its entry
    assert_nothing_half_written(ws, job_id)
