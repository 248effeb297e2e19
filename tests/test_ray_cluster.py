"""The two-node Ray cluster of tests/ray_cluster.py, with real Ray: node 2 runs as another
user and cannot read the app's workspace; a Ray job's entrypoint runs on the head, where it
can; bytes travel between the nodes through the object store; a task on node 2 whose node is
killed is retried on the head; stopping leaves no process behind, after a failed start too.

One cluster serves the module; the kill and the stop come last. Times are printed (``-s``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray.job_submission import JobStatus, JobSubmissionClient  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from tests.ray_cluster import (  # noqa: E402
    TwoNodeCluster,
    blocked_folders,
    grant_traverse,
    let_through,
    node_user,
    run_as,
    skip_reason,
)


@pytest.fixture(scope="module")
def cluster(ray_two_nodes):
    """The module's cluster, with this process connected to it as a driver on the head."""
    ray.init(address=ray_two_nodes.address, logging_level="WARNING", log_to_driver=False)
    yield ray_two_nodes
    ray.shutdown()


def _ps_of(sessions: dict[str, int]) -> list[str]:
    """``ps`` lines of live processes in the nodes' sessions."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid=,stat=,user=,args="], text=True,
                         capture_output=True, check=True).stdout
    return [line for line in out.splitlines()
            if int(line.split()[1]) in sessions.values() and not line.split()[2].startswith("Z")]


@ray.remote
def _read(path: str) -> tuple[str, str, str]:
    """(node id, user, what reading ``path`` gave) where this task ran."""
    import os
    import pwd

    try:
        with open(path) as fh:
            outcome = fh.read()
    except PermissionError:
        outcome = "PermissionError"
    return ray.get_runtime_context().get_node_id(), pwd.getpwuid(os.getuid()).pw_name, outcome


@pytest.mark.slow
def test_a_task_on_node2_runs_as_another_user_and_cannot_read_the_workspace(cluster,
                                                                             tmp_path):
    secret = tmp_path / "ws" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the app's data")
    t0 = time.monotonic()
    on_node2 = ray.get(_read.options(resources={"node2": 1}).remote(str(secret)), timeout=120)
    print(f"\nfirst task on node 2: {time.monotonic() - t0:.2f} s")
    assert on_node2 == (cluster.node2_node_id, cluster.node2_user, "PermissionError")
    assert cluster.node2_user != "root"
    on_head = NodeAffinitySchedulingStrategy(node_id=cluster.head_node_id, soft=False)
    assert ray.get(_read.options(scheduling_strategy=on_head).remote(str(secret)),
                   timeout=120) == (cluster.head_node_id, "root", "the app's data")
    assert secret.read_text() == "the app's data"  # and the driver, on the head, reads it


JOB = '''
import hashlib, json, os, sys
import ray

ray.init()
data = open(sys.argv[1], "rb").read()  # the workspace: readable on the head only
ref = ray.put(data * 4096)  # ~1 MiB: the object store, not the inline path


@ray.remote(resources={"node2": 1})
def digest_and_make(blob):
    return (ray.get_runtime_context().get_node_id(), os.getuid(),
            hashlib.sha256(blob).hexdigest(), bytes(range(256)) * 4096)


node, uid, digest, made = ray.get(digest_and_make.remote(ref))
print("RESULT " + json.dumps({
    "entry_node": ray.get_runtime_context().get_node_id(), "entry_uid": os.getuid(),
    "task_node": node, "task_uid": uid, "digest": digest,
    "made": hashlib.sha256(made).hexdigest(), "made_len": len(made)}))
'''


@pytest.mark.slow
def test_a_job_entrypoint_runs_on_the_head_and_gets_bytes_from_node2(cluster, tmp_path):
    script, data = tmp_path / "entry.py", tmp_path / "input.bin"
    script.write_text(JOB)
    data.write_bytes(bytes(range(256)))
    client = JobSubmissionClient(cluster.dashboard_url)
    t0 = time.monotonic()
    job_id = client.submit_job(entrypoint=f"{sys.executable} {script} {data}")
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED,
                                                            JobStatus.FAILED,
                                                            JobStatus.STOPPED}:
        assert time.monotonic() - t0 < 120, f"job still {status}"
        time.sleep(0.2)
    print(f"\njob submit to {status.value}: {time.monotonic() - t0:.2f} s")
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    (line,) = [x for x in logs.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert client.get_job_info(job_id).driver_node_id == cluster.head_node_id
    assert result["entry_node"] == cluster.head_node_id and result["entry_uid"] == 0
    assert result["task_node"] == cluster.node2_node_id and result["task_uid"] != 0
    assert result["digest"] == hashlib.sha256(bytes(range(256)) * 4096).hexdigest()
    assert result["made"] == hashlib.sha256(bytes(range(256)) * 4096).hexdigest()
    assert result["made_len"] == 2**20


@ray.remote(max_retries=2)
def _long(marks: str, slow_on: str, seconds: float) -> str:
    """Leaves a mark per attempt; runs ``seconds`` on node ``slow_on``, 0.5 s elsewhere."""
    import os
    import time

    node = ray.get_runtime_context().get_node_id()
    Path(marks, f"{time.time():.3f}-{node}").write_text(str(os.getpid()))
    time.sleep(seconds if node == slow_on else 0.5)
    return node


@pytest.mark.slow
def test_a_task_whose_node_is_killed_is_retried_on_the_head(cluster):
    marks = cluster.node2_home / "marks"  # a folder both nodes may write
    marks.mkdir()
    shutil.chown(marks, cluster.node2_user)
    soft_node2 = NodeAffinitySchedulingStrategy(node_id=cluster.node2_node_id, soft=True)
    ref = _long.options(scheduling_strategy=soft_node2).remote(str(marks),
                                                               cluster.node2_node_id, 120)
    t0 = time.monotonic()
    while not any(marks.iterdir()):
        assert time.monotonic() - t0 < 120, "the task never started"
        time.sleep(0.05)
    (first,) = [p.name.split("-", 1)[1] for p in marks.iterdir()]
    assert first == cluster.node2_node_id
    time.sleep(1.0)  # well into its run
    t_kill = time.monotonic()
    cluster.kill_node2()
    t_dead = time.monotonic()
    assert ray.get(ref, timeout=120) == cluster.head_node_id
    t_done = time.monotonic()
    print(f"\nnode 2 killed -> reported DEAD {t_dead - t_kill:.2f} s, task retried and done "
          f"on the head {t_done - t_kill:.2f} s after the kill")
    attempts = [p.name.split("-", 1)[1] for p in sorted(marks.iterdir())]
    assert attempts == [cluster.node2_node_id, cluster.head_node_id]
    assert cluster.node_state(cluster.node2_node_id) == "DEAD"
    assert cluster.node_state(cluster.head_node_id) == "ALIVE"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_stop_leaves_no_process_of_either_node(cluster):
    # A job's entrypoint leaves the head's session (Ray starts it in one of its own): stop
    # finds it by the cluster's mark in its environment.
    client = JobSubmissionClient(cluster.dashboard_url)
    job_id = client.submit_job(entrypoint=f"{sys.executable} -c \"import os, time; "
                               f"print('PID', os.getpid(), flush=True); time.sleep(600)\"")
    t0 = time.monotonic()
    while "PID " not in (logs := client.get_job_logs(job_id)):
        assert time.monotonic() - t0 < 120, f"the job never started: {logs[-2000:]}"
        time.sleep(0.2)
    entry_pid = int(logs.split("PID ", 1)[1].split()[0])
    assert _alive(entry_pid) and entry_pid in cluster.pids()
    assert _ps_of(cluster.sessions)  # the head at least
    ray.shutdown()
    t0 = time.monotonic()
    cluster.stop()
    print(f"\ncluster stopped in {time.monotonic() - t0:.2f} s")
    assert _ps_of(cluster.sessions) == [] and cluster.pids() == []
    assert not _alive(entry_pid)
    cluster.stop()  # again: nothing to do


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two other users")
def test_grant_traverse_lets_that_user_through_and_no_one_else():
    import pwd

    user, other = node_user(), pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp())  # /tmp: a place both users reach
    try:
        (folder / "inner").mkdir()
        (folder / "inner" / "f").write_text("x")
        folder.chmod(0o700)
        target = str(folder / "inner" / "f")

        def reads(u) -> bool:
            return run_as(u, ["/bin/cat", target], cwd="/").returncode == 0

        assert blocked_folders(user, [folder / "inner"]) == [folder, folder / "inner"]
        assert not reads(user)
        assert let_through(user, [folder / "inner"]) == [folder]  # inner was blocked by it
        grant_traverse(folder, user.pw_uid)  # again: the same ACL
        assert reads(user) and not reads(other)
        assert blocked_folders(user, [folder / "inner"]) == []
        assert run_as(user, ["/bin/ls", str(folder)], cwd="/").returncode != 0  # no listing
        assert folder.stat().st_mode & 0o777 == 0o710  # the mask shows as the group's bits
        grant_traverse(folder, other.pw_uid)  # a second user keeps the first one's entry
        assert reads(user) and reads(other)
    finally:
        shutil.rmtree(folder)


@pytest.mark.slow
def test_a_failed_start_stops_what_it_started_and_says_why(tmp_path):
    if reason := skip_reason():
        pytest.skip(reason)
    # Ray refuses CPU among --resources, so node 2 exits once the head is up.
    bad = TwoNodeCluster(tmp_path, hidden=[tmp_path / "ws"], node2_resources={"CPU": 1})
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="Ray node2 node exited with") as err:
        bad.start(timeout=120)
    print(f"\nfailed start, stopped, in {time.monotonic() - t0:.2f} s")
    assert "--num-cpus" in str(err.value)  # the tail of Ray's own message
    assert set(bad.sessions) == {"head", "node2"}
    assert _ps_of(bad.sessions) == [] and bad.pids() == []
    assert not Path(bad.node2_home).exists()  # its temp dirs are gone
