"""Jobs on a Ray node that cannot read the workspace: the Ray backend's default, remote mode, on
a real two-node cluster on this machine (`tests.ray_cluster`: the head as root, like the app's
machine; node 2 as another user, to whom the workspace folder is closed).

Covered: a reward-model training job and a short RL run placed on node 2 succeed, their
progress and metrics reach the app's job store while they run, and their artifacts load from
the workspace afterwards; inputs travel through the object store, by content (a later job does
not fetch what its node holds already), or through a ``file://`` storage folder only the
job's user and the app can read; a cancel stops the job on its node, committing nothing; a
parallel sweep of three points runs as three jobs on the
cluster; node 2 killed mid-run, the RL job resumes on the head from its last checkpoint and
ends with all its steps. The cluster is shared by the module; the node-killing test runs last.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from morm_explorer.jobs.ray_backend import RayBackend
from morm_explorer.workspace import Workspace
from tests.ray_cluster import TwoNodeCluster, node_user, skip_reason
from tests.test_jobs import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = skip_reason()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("two-nodes")
    hidden = tmp_path_factory.mktemp("app")  # the app's folder: node 2 may not read it
    c = TwoNodeCluster(tmp, hidden=[hidden])
    t0 = time.monotonic()
    c.start()
    print(f"\ntwo-node cluster up in {time.monotonic() - t0:.1f} s")
    c.app_dir = hidden
    try:
        yield c
    finally:
        t0 = time.monotonic()
        c.stop()
        print(f"\ntwo-node cluster stopped in {time.monotonic() - t0:.1f} s")


@pytest.fixture(scope="module")
def remote_ws(cluster, tiny_bert, tiny_rm):
    """The app's workspace, in the folder node 2 cannot read, with a dataset and a reward model
    whose backbone (the tiny BERT) is a folder outside the workspace."""
    from morm_explorer.data.loaders import load_preference_data
    from tests.test_reward import tiny_pairs

    root = cluster.app_dir / "ws"
    ws = Workspace(root)
    data = cluster.app_dir / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs()))
    ws.save_dataset("tiny", load_preference_data(data))
    shutil.copytree(tiny_rm, root / "reward_models" / "rm")
    return ws


def _node2_cannot_read(cluster: TwoNodeCluster, path: Path) -> None:
    from tests.ray_cluster import run_as

    out = run_as(node_user(), [sys.executable, "-c", f"open({str(path)!r}).read()"])
    assert out.returncode != 0 and "PermissionError" in out.stderr


def _live(backend: RayBackend, job_id: str) -> tuple | None:
    """(progress, metrics rows) seen while the job is still running."""
    info = backend.get(job_id)
    rows = len(backend.metrics(job_id))
    if info.status == "running" and rows and 0 < info.progress < 1:
        return info.progress, rows
    return None


def _ran_on(backend: RayBackend, job_id: str) -> list[str]:
    return [line for line in backend.logs(job_id) if line.startswith("running on Ray node")]


def test_a_reward_model_and_an_rl_run_on_node2_report_live_and_commit(cluster, remote_ws,
                                                                       tiny_bert, tmp_path):
    from morm_explorer.policy.ppo_config import PPOConfig
    from morm_explorer.policy.ppo_jobs import PPOJob
    from morm_explorer.reward.artifact import load_reward_model
    from morm_explorer.reward.jobs import TrainRewardModelJob
    from morm_explorer.reward.train import TrainConfig
    from tests.test_policy import _save_tiny

    ws = remote_ws
    _node2_cannot_read(cluster, ws.db_path)
    backend = RayBackend(ws, address=cluster.dashboard_url)
    assert not backend.shared_workspace
    cfg = TrainConfig(dataset="tiny", name="rm-remote", backbone=str(tiny_bert), epochs=60,
                      batch_size=32, lr=1e-2, max_length=64, patience=0, test_fraction=0.2,
                      device="cpu")
    t0 = time.monotonic()
    rm_job = backend.submit(TrainRewardModelJob(config=cfg.to_dict()), resources={"node2": 1})
    live = wait_for(lambda: _live(backend, rm_job) or backend.get(rm_job).done, 240, every=0.2)
    info = backend.wait(rm_job, timeout=240, poll=0.3)
    print(f"\nreward model trained on node 2 in {time.monotonic() - t0:.1f} s "
          f"(live: {live})")
    assert info.status == "succeeded", (info.error, backend.logs(rm_job)[-15:])
    assert isinstance(live, tuple), "no progress or metrics were seen while the job ran"
    assert cluster.node2_node_id[:12] in _ran_on(backend, rm_job)[0]
    assert f"user {cluster.node2_user}" in _ran_on(backend, rm_job)[0]
    assert info.result["path"] == str(ws.root.resolve() / "reward_models" / "rm-remote")
    model = load_reward_model(ws.root / "reward_models" / "rm-remote")
    assert list(model.objectives) == ["helpful", "harmless"]
    config = json.loads((ws.root / "reward_models" / "rm-remote" / "config.json").read_text())
    assert "/morm-explorer/node/" not in json.dumps(config)  # no path of the node's left

    policy = _save_tiny(cluster.app_dir / "policy")
    # long enough (a few seconds on a quiet machine) to be seen running between two forwards
    ppo = PPOConfig(name="remote-rl", policy=policy, reward_model="rm-remote", steps=48,
                    batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=4,
                    lora=False, prompt_limit=4, checkpoint_every=12, device="cpu")
    t0 = time.monotonic()
    rl_job = backend.submit(PPOJob(config=ppo.to_dict()), resources={"node2": 1})
    live = wait_for(lambda: _live(backend, rl_job) or backend.get(rl_job).done, 240, every=0.2)
    info = backend.wait(rl_job, timeout=300, poll=0.3)
    print(f"RL run on node 2 in {time.monotonic() - t0:.1f} s (live: {live})")
    assert info.status == "succeeded", (info.error, backend.logs(rl_job)[-15:])
    assert isinstance(live, tuple)
    assert cluster.node2_node_id[:12] in _ran_on(backend, rl_job)[0]
    # the backbone is on node 2 already (the reward model's job brought it): not sent again
    logs = backend.logs(rl_job)
    sent = [line for line in logs if " input(s), " in line][0]
    assert "external/" in sent and "reward_models/rm-remote" in sent
    total = float(sent.split(" input(s), ")[1].split(" MiB")[0])
    ready = [line for line in logs if line.startswith("inputs ready")][0]
    fetched = float(ready.split("(")[1].split(" MiB")[0])
    assert fetched < total, (sent, ready)
    assert info.result["steps"] == 48
    folder = ws.root / "policies" / "remote-rl"
    manifest = json.loads((folder / "morm_ppo.json").read_text())
    assert manifest["config"]["policy"] == policy  # the app's path, not the node's copy
    from morm_explorer.policy.load import load_policy

    load_policy("remote-rl", workspace=ws, device="cpu")
    assert (ws.root / "runs" / "ppo" / "remote-rl" / "metrics.jsonl").is_file()
    assert any(k.startswith("objective/") for k in backend.metrics(rl_job)["key"])


def test_inputs_and_outputs_travel_through_a_storage_folder(cluster, remote_ws, tiny_bert):
    from morm_explorer.reward.jobs import TrainRewardModelJob
    from morm_explorer.reward.train import TrainConfig

    ws = remote_ws
    storage = Path(f"/tmp/morm-storage-{os.getpid()}")
    shutil.rmtree(storage, ignore_errors=True)
    storage.mkdir(mode=0o700)
    user = node_user()
    os.chown(storage, user.pw_uid, user.pw_gid)  # the job's user and root (the app) only
    try:
        backend = RayBackend(ws, address=cluster.dashboard_url, storage=storage.as_uri())
        from morm_explorer.data.loaders import load_preference_data
        from tests.test_reward import tiny_pairs

        data = cluster.app_dir / "pairs-2.jsonl"  # new to node 2: it must come from the storage
        data.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs()[1:]))
        ws.save_dataset("tiny-2", load_preference_data(data))
        cfg = TrainConfig(dataset="tiny-2", name="rm-stored", backbone=str(tiny_bert), epochs=2,
                          batch_size=32, lr=1e-2, max_length=64, patience=0,
                          test_fraction=0.2, device="cpu")
        first = backend.submit(TrainRewardModelJob(config=cfg.to_dict()),
                               resources={"node2": 1})
        info = backend.wait(first, timeout=240, poll=0.3)
        assert info.status == "succeeded", (info.error, backend.logs(first)[-15:])
        assert (ws.root / "reward_models" / "rm-stored" / "heads.safetensors").is_file()
        stored = sorted(p.name for p in (storage / "cas").iterdir())
        assert len(stored) >= 2  # the dataset and the backbone, by digest
        assert any((storage / "jobs" / first / "out").iterdir())
        logs = backend.logs(first)
        assert any(f"sent through {storage.as_uri()}" in line for line in logs)
        ready = [line for line in logs if line.startswith("inputs ready")][0]
        assert not ready.split("(")[1].startswith("0.0 MiB"), ready
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def test_a_parallel_sweep_runs_its_three_points_as_jobs_on_the_cluster(cluster, remote_ws):
    from morm_explorer.policy.ppo_config import PPOConfig
    from morm_explorer.policy.ppo_jobs import PPOJob
    from morm_explorer.policy.sweep import SweepJob
    from tests.test_policy import _save_tiny

    ws = remote_ws
    policy = _save_tiny(cluster.app_dir / "sweep-policy")
    base = PPOConfig(name="sw", policy=policy, reward_model="rm", steps=1, batch_size=2,
                     mini_batch_size=2, ppo_epochs=1, max_new_tokens=4, lora=False,
                     prompt_limit=4, checkpoint_every=10, device="cpu")
    backend = RayBackend(ws, address=cluster.dashboard_url)
    t0 = time.monotonic()
    job_id = backend.submit(SweepJob(config=base.to_dict(), objectives=["helpful", "harmless"],
                                     grid_steps=2, parallel=True))
    info = backend.wait(job_id, timeout=400, poll=0.5)
    print(f"\nparallel sweep of 3 points in {time.monotonic() - t0:.1f} s")
    assert info.status == "succeeded", (info.error, backend.logs(job_id)[-15:])
    runs = info.result["runs"]
    assert [r["name"] for r in runs] == ["sw-0", "sw-1", "sw-2"]
    children = {r["job"] for r in runs}
    assert all(backend.get(j).status == "succeeded" for j in children)
    nodes = {line.split("(node ")[1][:12] for j in children for line in _ran_on(backend, j)}
    assert nodes  # each point ran as a task of its own on a node of the cluster
    assert all((ws.root / "policies" / r["name"] / "morm_ppo.json").is_file() for r in runs)
    assert backend.list(kind=PPOJob.kind, limit=20)


def test_a_cancelled_remote_job_stops_on_its_node_and_commits_nothing(cluster, remote_ws):
    from morm_explorer.jobs.builtin import SleepJob

    ws = remote_ws
    backend = RayBackend(ws, address=cluster.dashboard_url)
    job_id = backend.submit(SleepJob(seconds=120, steps=240, artifact="never"),
                            resources={"node2": 1})
    wait_for(lambda: (info := backend.get(job_id)).status == "running" and info.progress > 0,
             180, every=0.2)
    t0 = time.monotonic()
    backend.cancel(job_id)
    info = backend.wait(job_id, timeout=60, poll=0.2)
    print(f"\nremote job cancelled in {time.monotonic() - t0:.1f} s")
    assert info.status == "cancelled", (info.error, backend.logs(job_id)[-10:])
    assert not (ws.root / "diagnostics" / "never").exists()
    assert not list(ws.root.glob("diagnostics/.*"))  # nor anything half-written


def test_node2_killed_mid_run_the_rl_job_resumes_on_the_head(cluster, remote_ws):
    from morm_explorer.policy.ppo_config import PPOConfig
    from morm_explorer.policy.ppo_jobs import PPOJob
    from tests.test_policy import _save_tiny

    ws = remote_ws
    policy = _save_tiny(cluster.app_dir / "long-policy")
    steps = 160  # long enough on a quiet machine for the kill to land mid-run
    cfg = PPOConfig(name="survivor", policy=policy, reward_model="rm", steps=steps,
                    batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=4,
                    lora=False, prompt_limit=4, checkpoint_every=20, sample_every=1000,
                    device="cpu")
    backend = RayBackend(ws, address=cluster.dashboard_url)
    job_id = backend.submit(PPOJob(config=cfg.to_dict()), prefer_node=cluster.node2_node_id)
    wait_for(lambda: any(line.startswith("checkpoint of runs/ppo/survivor received")
                         for line in backend.logs(job_id)), 300, every=0.2)
    assert cluster.node2_node_id[:12] in _ran_on(backend, job_id)[0]
    at = backend.get(job_id).progress
    assert at < 0.5, (f"the run was {at:.0%} done at its first checkpoint",
                      [f"{t:.2f} {x[:80]}" for t, x in backend.store.log_entries(job_id)])
    t0 = time.monotonic()
    cluster.kill_node2()
    info = backend.wait(job_id, timeout=400, poll=0.3)
    print(f"\nnode 2 killed at {at:.0%}: the job ended {info.status} "
          f"{time.monotonic() - t0:.1f} s later")
    assert info.status == "succeeded", (info.error, backend.logs(job_id)[-20:])
    ran = _ran_on(backend, job_id)
    assert len(ran) == 2 and cluster.head_node_id[:12] in ran[1] and "attempt 2" in ran[1]
    assert info.result["steps"] == steps and info.result["resumed_from"] >= 2
    assert any(line.startswith(f"resuming from step {info.result['resumed_from']}")
               for line in backend.logs(job_id))
    assert (ws.root / "policies" / "survivor" / "morm_ppo.json").is_file()
    assert len(backend.metrics(job_id, wide=True)) == steps  # every step, once
