"""PPO under faults, with a real worker process: killed mid-run then resumed from its
checkpoint; the app "restarted" (a new session) while a run goes on; retry rules."""

from __future__ import annotations

import shutil
import signal
import time

import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.errors import MormError
from morm_explorer.jobs.backend import LocalBackend, retry
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_jobs import PPOJob, run_dir
from tests.conftest import REPO
from tests.test_jobs import wait_for, worker_spawner
from tests.test_policy import _save_tiny

pytestmark = pytest.mark.slow


def long_run(policy: str, steps: int = 400) -> PPOJob:
    cfg = PPOConfig(name="long", policy=policy, reward_model="rm", steps=steps, batch_size=2,
                    mini_batch_size=2, ppo_epochs=1, max_new_tokens=4, lora=False,
                    prompt_limit=4, checkpoint_every=2, sample_every=1000, device="cpu")
    return PPOJob(config=cfg.to_dict())


@pytest.fixture
def spawn_worker(tmp_path):
    yield from worker_spawner(tmp_path)


@pytest.fixture
def ppo_ws(ws, tiny_rm, tmp_path):
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    return ws, _save_tiny(tmp_path / "policy")


def test_killed_worker_then_resume_from_checkpoint(ppo_ws, spawn_worker):
    ws, policy = ppo_ws
    backend = LocalBackend(ws, start_worker=False)
    job = backend.submit(long_run(policy, steps=60))
    worker = spawn_worker(ws)
    ckpt = run_dir(ws, "long") / "checkpoint"
    wait_for(lambda: ckpt.is_dir() and backend.metrics(job, wide=True).shape[0] >= 5, 60,
             every=0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    failed = wait_for(lambda: backend.get(job) if backend.get(job).done else None, 30)
    assert failed.status == "failed" and "killed" in failed.error
    assert not (ws.root / "policies" / "long").exists()  # nothing half-published
    assert ckpt.is_dir()  # ... but the checkpoint survived
    again = retry(backend, job)
    assert spawn_worker(ws, "--once").wait(timeout=180) == 0
    info = backend.get(again)
    assert info.status == "succeeded", info.error
    resumed = info.result["resumed_from"]
    assert resumed is not None and resumed >= 2
    assert any(f"resuming from step {resumed}" in line for line in backend.logs(again))
    assert (ws.root / "policies" / "long" / "morm_ppo.json").is_file()
    assert not ckpt.exists()  # dropped once the policy is committed
    with pytest.raises(MormError, match="only a failed or cancelled"):
        retry(backend, again)


def test_a_new_app_session_sees_the_running_job_and_can_cancel_it(ppo_ws, spawn_worker):
    ws, policy = ppo_ws
    backend = LocalBackend(ws, start_worker=False)
    job = backend.submit(long_run(policy))
    worker = spawn_worker(ws)
    try:
        wait_for(lambda: backend.get(job).status == "running"
                 and backend.metrics(job, wide=True).shape[0] >= 2, 60, every=0.1)
        for _ in range(2):  # the app "restarted": a fresh session, the same run still going
            at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
            at.run()
            at.switch_page("pages/finetune.py").run()
            assert not at.exception
            assert any("running" in m.value for m in at.markdown)
        at.button(key="ft_cancel").click().run()
        info = wait_for(lambda: backend.get(job) if backend.get(job).done else None, 30)
        assert info.status == "cancelled"
        assert not (ws.root / "policies" / "long").exists()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    time.sleep(0.1)
