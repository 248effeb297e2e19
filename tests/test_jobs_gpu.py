"""The job system on a GPU: jobs see "cuda", a runner busy in CUDA work is still cancelled
within 5 s, and a CUDA out-of-memory error fails only its job. Skipped without a GPU.

The GPU job kinds are test-only: they live in a module written to a temporary folder, which a
small worker script adds to `JOB_MODULES` (the spawned runner processes re-run that script's
top level, so they know the kinds too).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time

import pytest

from morm_explorer.jobs import LocalBackend
from morm_explorer.jobs.builtin import SleepJob
from morm_explorer.jobs.store import pid_alive
from tests.conftest import REPO
from tests.test_jobs import wait_for

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU_JOBS = '''
from dataclasses import dataclass
from typing import ClassVar

import torch

from morm_explorer.jobs.spec import JobSpec, register_job


@dataclass(frozen=True)
class BurnJob(JobSpec):
    kind: ClassVar[str] = "test-gpu-burn"
    seconds: float = 60.0


def burn(spec, ctx):
    a = torch.randn(8192, 8192, device=ctx.device)
    ctx.log("burning")
    for _ in range(int(spec.seconds * 200)):  # never checks for cancel
        a = torch.tanh(a @ a)
    torch.cuda.synchronize()
    return {}


@dataclass(frozen=True)
class OomJob(JobSpec):
    kind: ClassVar[str] = "test-gpu-oom"


def oom(spec, ctx):
    torch.empty(2**44, dtype=torch.float32, device=ctx.device)  # 64 TiB
    return {}


register_job(BurnJob.kind, BurnJob, burn)
register_job(OomJob.kind, OomJob, oom)
'''

WORKER_MAIN = '''
import sys

from morm_explorer.jobs import spec

spec.JOB_MODULES.append("gpu_jobs")

if __name__ == "__main__":
    from morm_explorer.jobs.worker import main

    sys.exit(main())
'''


@pytest.fixture
def gpu_jobs(tmp_path, monkeypatch):
    """The test kinds' module, written to ``tmp_path`` and imported here too (to submit)."""
    (tmp_path / "gpu_jobs.py").write_text(textwrap.dedent(GPU_JOBS))
    (tmp_path / "worker_main.py").write_text(textwrap.dedent(WORKER_MAIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module("gpu_jobs")


@pytest.fixture
def start_gpu_worker(ws, tmp_path, gpu_jobs):
    """Starts a ``--once`` worker that knows the test kinds; kills it if still running."""
    procs = []

    def start() -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
        with open(tmp_path / "worker.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, str(tmp_path / "worker_main.py"), "--workspace", str(ws.root),
                 "--poll", "0.2", "--once"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    print((tmp_path / "worker.log").read_text()[-3000:])


@pytest.mark.slow
def test_jobs_run_on_the_gpu_cancel_within_5_s_and_oom_fails_one_job(ws, gpu_jobs,
                                                                    start_gpu_worker):
    backend = LocalBackend(ws, start_worker=False)
    sleep_id = backend.submit(SleepJob(seconds=0.1, steps=1, probe_device=True))
    burn_id = backend.submit(gpu_jobs.BurnJob(seconds=60.0))
    oom_id = backend.submit(gpu_jobs.OomJob())
    after_id = backend.submit(SleepJob(seconds=0.1, steps=1))
    worker = start_gpu_worker()

    info = backend.wait(sleep_id, timeout=60)
    assert info.status == "succeeded" and info.result["device"] == "cuda"
    assert info.device == "cuda"
    assert wait_for(lambda: [w.device for w in backend.workers()] == ["cuda"], 30)

    wait_for(lambda: "burning" in backend.logs(burn_id), 60)
    time.sleep(1.0)  # deep in the CUDA loop
    runner_pid = backend.get(burn_id).pid
    t0 = time.monotonic()
    backend.cancel(burn_id)
    burn = wait_for(lambda: (j := backend.get(burn_id)).done and j, 10, every=0.02)
    latency = time.monotonic() - t0
    print(f"\ncancel latency, runner busy in CUDA work: {latency:.2f} s")
    assert burn.status == "cancelled" and latency < 5.0
    assert not pid_alive(runner_pid)

    oom = backend.wait(oom_id, timeout=60)
    assert oom.status == "failed" and "OutOfMemoryError" in oom.error
    assert backend.wait(after_id, timeout=60).status == "succeeded"
    assert worker.wait(timeout=30) == 0
