"""The whole system under faults, with real processes, signals, disks and files (no mocks):
the worker killed during each job type, the app killed during a rating session, a full disk
during a checkpoint write and under the workspace database, a corrupt database, two app
processes on one workspace, and a workspace shared by users (file modes).

What each must keep: nothing already stored is lost, every job ends in one clear state, and
the user is told what happened (a message naming the cause, never a traceback).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from morm_explorer.errors import MormError
from morm_explorer.jobs.backend import LocalBackend
from morm_explorer.jobs.store import JobStore, pid_alive
from morm_explorer.workspace import Workspace, atomic_write_text
from tests.conftest import REPO
from tests.test_jobs import wait_for, worker_spawner
from tests.test_policy import _save_tiny

pytestmark = pytest.mark.slow
OBJ = ["helpful", "harmless"]


@pytest.fixture
def spawn_worker(tmp_path):
    yield from worker_spawner(tmp_path)


def snapshot(root: Path, *groups: str) -> dict[str, str]:
    """sha256 of every file under the given workspace groups: what must survive untouched."""
    out = {}
    for group in groups:
        for path in sorted((root / group).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# -- 1. the worker killed during each job type ------------------------------------------------
def _prompts_file(path: Path, n: int) -> str:
    path.write_text("".join(json.dumps({"prompt": f"how do i boil an egg, take {i}?",
                                        "category": "howto"}) + "\n" for i in range(n)))
    return str(path)


def _ppo_config(policy: str, name: str, steps: int) -> dict:
    from morm_explorer.policy.ppo_config import PPOConfig

    return PPOConfig(name=name, policy=policy, reward_model="rm", steps=steps, batch_size=2,
                     mini_batch_size=2, ppo_epochs=1, max_new_tokens=4, lora=False,
                     prompt_limit=4, checkpoint_every=2, sample_every=1000,
                     device="cpu").to_dict()


def _job_of_kind(kind: str, ws: Workspace, tmp: Path, tiny_bert: str):
    """A long-running job of ``kind`` on tiny models; returns (spec, the artifact folders it
    would publish). The workspace already holds the demo data and reward model "rm"."""
    if kind == "train_reward_model":
        from morm_explorer.data.loaders import load_preference_data
        from morm_explorer.reward.config import TrainConfig
        from morm_explorer.reward.jobs import TrainRewardModelJob
        from tests.test_reward import tiny_pairs

        data = tmp / "pairs.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs()))
        ws.save_dataset("tiny", load_preference_data(data))
        cfg = TrainConfig(dataset="tiny", name="rm-k", backbone=tiny_bert, epochs=2000,
                          batch_size=32, lr=1e-2, max_length=64, patience=0,
                          test_fraction=0.2, device="cpu")
        return TrainRewardModelJob(config=cfg.to_dict()), ["reward_models/rm-k"]
    policy = _save_tiny(tmp / "policy")
    if kind == "sample_candidates":
        from morm_explorer.policy.jobs import SampleCandidatesJob

        return SampleCandidatesJob(name="s-k", policy=policy,
                                   prompts=_prompts_file(tmp / "p.jsonl", 400),
                                   sampling={"n": 2, "max_new_tokens": 16},
                                   device="cpu"), ["candidates/s-k"]
    if kind == "score_candidates":
        from morm_explorer.data.candidates import from_records, save_candidate_set
        from morm_explorer.scoring import ScoreCandidatesJob

        records = [{"prompt_id": f"p{i}", "prompt": f"Question {i}?",
                    "response": f"answer {j} to question {i}, " * (1 + j % 5), "source": f"s{j}"}
                   for i in range(4000) for j in range(5)]
        save_candidate_set(ws, "big", from_records(records, "test"))
        return (ScoreCandidatesJob(model="rm", candidates="big", batch_size=4, device="cpu"),
                ["reward_models/rm/cache"])
    if kind == "ppo":
        from morm_explorer.policy.ppo_jobs import PPOJob

        return PPOJob(config=_ppo_config(policy, "long", 400)), ["policies/long"]
    if kind == "ppo_sweep":
        from morm_explorer.policy.sweep import SweepJob

        return (SweepJob(config=_ppo_config(policy, "sw", 400), objectives=OBJ, grid_steps=1),
                ["policies/sw-0", "policies/sw-1"])
    if kind == "soup":
        from morm_explorer.policy.soup import SoupJob

        other = _save_tiny(tmp / "other")
        return (SoupJob(name="soup-k", policy_a=policy, policy_b=other, reward_model="rm",
                        lambdas=[0, 0.25, 0.5, 0.75, 1], limit=60,
                        sampling={"n": 2, "max_new_tokens": 16}, device="cpu"),
                ["candidates/soup-k"])
    if kind == "compare":
        from morm_explorer.evaluation.compare import CompareJob

        return (CompareJob(name="cmp-k", policies=[policy, _save_tiny(tmp / "other")],
                           reward_model="rm", limit=24,
                           sampling={"n": 2, "max_new_tokens": 16}, device="cpu"),
                ["comparisons/cmp-k", "candidates/compare-cmp-k"])
    if kind == "prepare_demo":
        from morm_explorer.demo_jobs import PrepareDemoJob

        return (PrepareDemoJob(backbone=tiny_bert, max_length=64, rm_epochs=1000, policy=policy,
                               samples=1, max_new_tokens=4, rl_steps=1, rl_batch=2, group_size=2,
                               compare_prompts=2, compare_samples=1, device="cpu"),
                ["reward_models/demo-rm", "reward_models/demo-judge", "comparisons"])
    raise AssertionError(kind)


KINDS = ["train_reward_model", "sample_candidates", "score_candidates", "ppo", "ppo_sweep",
         "soup", "compare", "prepare_demo"]


@pytest.mark.parametrize("kind", KINDS)
def test_worker_killed_during_each_job_type(kind, ws, tiny_bert, tiny_rm, tmp_path,
                                            spawn_worker):
    from morm_explorer.demo import ensure_demo

    ensure_demo(ws)  # stored before: the demo dataset and candidate set
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    spec, artifacts = _job_of_kind(kind, ws, tmp_path, tiny_bert)
    assert spec.kind == kind
    before = snapshot(ws.root, "datasets", "candidates", "reward_models")
    backend = LocalBackend(ws, start_worker=False)
    job_id = backend.submit(spec)
    worker = spawn_worker(ws)
    t0 = time.monotonic()
    running = wait_for(lambda: (j := backend.get(job_id)).status == "running" and j.pid
                       and j.progress > 0 and j, 180, every=0.05)  # slow to start at load 8
    caught = time.monotonic() - t0
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    t1 = time.monotonic()
    info = wait_for(lambda: (j := backend.get(job_id)).done and j, 30, every=0.1)
    detected = time.monotonic() - t1
    print(f"\n{kind}: caught running after {caught:.1f} s at {running.progress:.1%}; "
          f"failed {detected:.2f} s after the kill")
    assert info.status == "failed" and "killed" in info.error, info.error
    assert f"pid {worker.pid}" in info.error
    wait_for(lambda: not pid_alive(running.pid), 5)  # the runner died with its worker
    assert not backend.store.staging_dir(job_id).exists()
    for art in artifacts:  # nothing half-published
        assert not (ws.root / art).exists(), art
    assert snapshot(ws.root, "datasets", "candidates", "reward_models") == before
    leftovers = [str(p.relative_to(ws.root)) for p in ws.root.rglob(".*")
                 if ".tmp" in p.name or ".old-" in p.name]
    assert leftovers == [], leftovers


# -- 2. the app killed during a rating session ------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(ws: Workspace, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MORM_WORKSPACE": str(ws.root), "MORM_DEMO": "data"}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false"]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                        timeout=1) as r:
                return r.read() == b"ok"
        except OSError:
            return False

    wait_for(healthy, 60, every=0.2)
    return proc


# Casts votes as the Evaluate page does (join, next_item, vote), printing each vote once it
# is stored; run in the app's process so that killing it is killing the app mid-session.
RATER = textwrap.dedent("""
    import sys, time
    from morm_explorer.evaluation import sessions
    from morm_explorer.workspace import Workspace
    ws, rater = Workspace(sys.argv[1]), sys.argv[2]
    sessions.join(ws, "s", rater)
    while (item := sessions.next_item(ws, "s", rater)) is not None:
        sessions.vote(ws, "s", item.item_id, rater, {"helpful": "a", "harmless": "tie"})
        print(item.item_id, flush=True)
        time.sleep(float(sys.argv[3]))
""")


def _rating_ws(ws: Workspace):
    from morm_explorer.data.demo_candidates import DEMO_CANDIDATE_SET
    from morm_explorer.demo import ensure_demo
    from morm_explorer.evaluation import sessions

    ensure_demo(ws)
    info = sessions.create_session(ws, "s", DEMO_CANDIDATE_SET, objectives=OBJ,
                                   items_per_prompt=3)
    return sessions, info


def _rater(ws: Workspace, name: str, out: Path, pause: float = 0.05) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RATER, str(ws.root), name, str(pause)],
                            cwd=REPO,
                            stdout=open(out, "wb"), stderr=subprocess.STDOUT)


def _cast(out: Path) -> list[int]:
    return [int(line) for line in out.read_text().split()]


def test_app_killed_during_a_rating_session_keeps_every_vote(ws, tmp_path):
    sessions, _ = _rating_ws(ws)
    port, log = _free_port(), tmp_path / "app.log"
    app = _start_app(ws, port, log)
    rater = _rater(ws, "ann", tmp_path / "ann.out")
    try:
        wait_for(lambda: len(_cast(tmp_path / "ann.out")) >= 5, 30)
        app.send_signal(signal.SIGKILL)  # the app (server and its session) dies mid-session
        rater.send_signal(signal.SIGKILL)
        app.wait(timeout=10)
        rater.wait(timeout=10)
        cast = _cast(tmp_path / "ann.out")
        app = _start_app(ws, port, log)  # restarted on the same workspace
        votes = sessions.load_votes(ws, "s")
        stored = sorted(votes.loc[votes["rater"] == "ann", "item_id"].astype(int))
        # Every vote the app saw stored is there; at most one more (killed between the
        # commit and the print), and each exactly once.
        assert set(cast) <= set(stored) and len(stored) - len(cast) in (0, 1)
        assert len(stored) == len(set(stored))
        nxt = sessions.next_item(ws, "s", "ann")
        assert nxt is not None and nxt.item_id not in stored  # resumes where it stopped
        con = sqlite3.connect(ws.db_path)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        print(f"\n{len(cast)} votes seen cast, {len(stored)} stored; resumes at item "
              f"{nxt.item_id}")
    finally:
        for p in (app, rater):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


# -- 3. a full disk during a checkpoint write --------------------------------------------------
@pytest.fixture
def mount_tmpfs():
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` to the last byte, then free ``leave`` bytes."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError:
            pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path, mount_tmpfs):
    disk = mount_tmpfs(tmp_path / "disk", "2m")
    keep = disk / "keep.json"
    atomic_write_text(keep, '{"old": true}')
    _fill(disk, leave=8192)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(keep, "x" * 200_000)
    assert keep.read_text() == '{"old": true}'
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "keep.json"]  # no temp file


def test_checkpoint_write_on_a_full_disk_keeps_the_previous_one(tmp_path, mount_tmpfs):
    import torch
    from safetensors.torch import load_file

    from morm_explorer.policy import ppo_checkpoint as pc
    from morm_explorer.policy.ppo_config import PPOConfig

    run = mount_tmpfs(tmp_path / "run", "2m")
    torch.manual_seed(0)
    model, head = torch.nn.Linear(64, 64), torch.nn.Linear(64, 2)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()])
    (model(torch.ones(1, 64)).sum() + head(torch.ones(1, 64)).sum()).backward()
    opt.step()
    cfg = PPOConfig(name="x", reward_model="rm")
    pc.save_checkpoint(run, cfg, model, head, opt, step=1, history=[{"step": 0}])
    before = snapshot(run, "checkpoint")
    _fill(run, leave=8192)
    # safetensors raises its own SafetensorError, whose message names the cause.
    with pytest.raises(Exception, match="No space left on device"):
        pc.save_checkpoint(run, cfg, model, head, opt, step=2, history=[])
    assert snapshot(run, "checkpoint") == before
    assert pc.checkpoint_step(run) == 1
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "filler"]  # tmp removed
    (run / "filler").unlink()
    fresh = torch.nn.Linear(64, 64)
    fresh_head = torch.nn.Linear(64, 2)
    state = pc.load_checkpoint(run / "checkpoint", cfg, fresh, fresh_head,
                               torch.optim.AdamW([*fresh.parameters(), *fresh_head.parameters()]))
    assert state["step"] == 1 and torch.equal(fresh.weight, model.weight)
    assert set(load_file(str(run / "checkpoint" / "value_head.safetensors"))) == {"weight",
                                                                                  "bias"}


def test_ppo_job_fails_clearly_when_its_run_folder_fills_up(ws, tiny_rm, tmp_path,
                                                              mount_tmpfs):
    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.policy.ppo_checkpoint import checkpoint_step
    from morm_explorer.policy.ppo_jobs import PPOJob, run_dir

    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    # ~264 kB a checkpoint: the first fits, the second (written beside it) does not.
    run = mount_tmpfs(run_dir(ws, "full"), "400k")
    cfg = {**_ppo_config(_save_tiny(tmp_path / "policy"), "full", 6), "checkpoint_every": 1}
    info = run_inline(ws, PPOJob(config=cfg))
    print(f"\nPPO job on a full disk: {info.status}: {info.error}")
    assert info.status == "failed" and "No space left" in info.error
    assert checkpoint_step(run) == 1  # the previous checkpoint survived, whole
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint.tmp")]
    assert not (ws.root / "policies" / "full").exists()
    assert not JobStore(ws).staging_dir(info.id).exists()


def _pairs(path: Path, n: int) -> Path:
    from tests.conftest import good_pair

    path.write_text("".join(json.dumps(good_pair(i)) + "\n" for i in range(n)))
    return path


def _morm(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "morm_explorer.cli", "--workspace", str(root),
                           *argv], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_a_full_disk_under_the_workspace_keeps_reads_and_says_it_is_full(tmp_path,
                                                                         mount_tmpfs):
    from morm_explorer.data.candidates import from_records, save_candidate_set
    from morm_explorer.data.loaders import load_preference_data
    from morm_explorer.evaluation import sessions
    from morm_explorer.jobs.builtin import SleepJob

    disk = mount_tmpfs(tmp_path / "disk", "2m")
    ws = Workspace(disk / "ws")
    ws.save_dataset("a", load_preference_data(_pairs(tmp_path / "a.jsonl", 50)))
    job = JobStore(ws).submit(SleepJob(seconds=0.1, steps=1))
    save_candidate_set(ws, "cs", from_records([
        {"prompt_id": f"q{i}", "prompt": f"Q {i}", "response": f"A {i} {p}", "source": p}
        for i in range(3) for p in ("alpha", "beta")]))
    sessions.create_session(ws, "s", "cs", objectives=OBJ)
    sessions.join(ws, "s", "ann")
    first = sessions.next_item(ws, "s", "ann")
    sessions.vote(ws, "s", first.item_id, "ann", {"helpful": "a", "harmless": "tie"})
    assert not ws.db_path.with_name("morm.sqlite-wal").exists()  # closed: no -shm to reuse
    small, big = _pairs(tmp_path / "b.jsonl", 50), _pairs(tmp_path / "big.jsonl", 3000)
    filler = _fill(disk)
    # Reads: opening a current workspace writes nothing, and lists work on a full disk.
    r = _morm(ws.root, "data", "list")
    assert r.returncode == 0 and r.stdout.startswith("a "), r.stderr
    r = _morm(ws.root, "jobs", "list")
    assert r.returncode == 0 and job in r.stdout, r.stderr
    r = _morm(ws.root, "cands", "list")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert [s.name for s in sessions.list_sessions(ws)] == ["s"]
    assert sessions.progress(ws, "s")["voted"].tolist() == [1]
    assert len(sessions.load_votes(ws, "s")) == 1
    assert sessions.next_item(ws, "s", "ann").item_id != first.item_id
    # Writes: the disk is full (not "move the database aside"), and no empty dataset folder.
    full = f"no space left on the device holding {ws.root}"
    r = _morm(ws.root, "data", "import", str(small), "--name", "b")
    print(f"\nimport on a full disk: {r.stderr.strip()}")
    assert r.returncode == 2 and full in r.stderr, r.stderr
    assert "move it aside" not in r.stderr and "Traceback" not in r.stderr
    os.truncate(filler, filler.stat().st_size - 128 * 1024)  # the database opens, big won't fit
    r = _morm(ws.root, "data", "import", str(big), "--name", "big")
    assert r.returncode == 2 and full in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in (ws.root / "datasets").iterdir()) == ["a"]
    # Space freed: the same database, every job and dataset in it, takes writes again.
    filler.unlink()
    assert [d.name for d in ws.list_datasets()] == ["a"]
    assert JobStore(ws).get(job).status == "queued"
    assert _morm(ws.root, "data", "import", str(small), "--name", "b").returncode == 0


# -- 4. a corrupt database ----------------------------------------------------------------------
def _corrupt(path: Path, where: str) -> None:
    data = bytearray(path.read_bytes())
    # "header": the first 8 kB (file header and schema); "tables": every page after the
    # first, so the schema still reads but the tables' pages are garbage.
    start, end = (0, 8192) if where == "header" else (4096, len(data))
    data[start:end] = os.urandom(end - start)
    path.write_bytes(bytes(data))


@pytest.fixture
def stored_ws(ws):
    """A workspace with data, jobs and votes, closed cleanly (WAL folded in)."""
    from morm_explorer.jobs.builtin import SleepJob

    sessions, _ = _rating_ws(ws)
    sessions.join(ws, "s", "ann")
    for i in range(30):
        JobStore(ws).submit(SleepJob(seconds=0.1, steps=1, artifact=f"a{i}"))
    con = ws.connect()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    assert ws.db_path.stat().st_size > 64 * 1024
    return ws


@pytest.mark.parametrize("where", ["header", "tables"])
def test_a_corrupt_database_is_a_clear_message_in_library_and_cli(stored_ws, where):
    ws = stored_ws
    files = snapshot(ws.root, "datasets", "candidates")
    _corrupt(ws.db_path, where)
    # The library: a MormError naming the file, when opening or at the first read.
    with pytest.raises(MormError) as e:
        JobStore(Workspace(ws.root)).list()
    assert e.value.file == str(ws.db_path) and "unreadable" in str(e.value)
    # The CLI: a message naming the file, exit code 2, no traceback.
    r = subprocess.run([sys.executable, "-m", "morm_explorer.cli", "--workspace",
                        str(ws.root), "jobs", "list"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert str(ws.db_path) in r.stderr and "unreadable" in r.stderr
    assert snapshot(ws.root, "datasets", "candidates") == files  # artifacts untouched


def test_a_corrupt_database_is_a_message_not_a_traceback_in_the_app(stored_ws):
    from streamlit.testing.v1 import AppTest

    _corrupt(stored_ws.db_path, "header")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    assert any(str(stored_ws.db_path) in el.value.replace("\\", "") for el in at.error)
    assert not at.exception


def _corrupt_tables(path: Path, tables: list[str]) -> None:
    """Overwrite the root pages of ``tables``: the schema still reads, those tables do not."""
    con = sqlite3.connect(path)
    size = con.execute("PRAGMA page_size").fetchone()[0]
    roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master").fetchall())
    con.close()
    with open(path, "r+b") as fh:
        for table in tables:
            fh.seek((roots[table] - 1) * size)
            fh.write(b"\xab" * size)


def test_a_corrupt_table_is_one_message_in_jobs_list_and_data_list(stored_ws):
    ws = stored_ws
    _corrupt_tables(ws.db_path, ["datasets", "jobs", "jobs_by_status"])
    runs = [_morm(ws.root, "jobs", "list"), _morm(ws.root, "data", "list")]
    for r in runs:
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert runs[0].stderr == runs[1].stderr
    assert str(ws.db_path) in runs[0].stderr and "unreadable" in runs[0].stderr
    for read in (JobStore(ws).list, ws.list_datasets):
        with pytest.raises(MormError, match="unreadable") as e:
            read()
        assert f"error: {e.value}\n" == runs[0].stderr


# -- 5. two app processes on one workspace --------------------------------------------------------
BUILD = textwrap.dedent("""
    import sys, time
    from morm_explorer.demo import ensure_demo
    from morm_explorer.workspace import Workspace
    while time.time() < float(sys.argv[2]):  # start together
        time.sleep(0.001)
    print(ensure_demo(Workspace(sys.argv[1])))
""")


def test_two_processes_build_the_demo_once_and_vote_exactly_once(ws, tmp_path):
    from morm_explorer.data.candidates import list_candidate_sets, load_candidate_set
    from morm_explorer.demo import DEMO_DATASET, DEMO_JUDGE_DATASET
    from morm_explorer.evaluation import sessions

    go = str(time.time() + 4)
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(ws.root), go], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=90)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    print(f"\nconcurrent ensure_demo: {[o.strip().splitlines()[-1] for o in outs]}")
    assert sorted(d.name for d in ws.list_datasets()) == sorted([DEMO_DATASET,
                                                                 DEMO_JUDGE_DATASET])
    assert len(ws.load_dataset(DEMO_DATASET)) > 0 and len(ws.load_dataset(DEMO_JUDGE_DATASET))
    (cset,) = list_candidate_sets(ws)
    assert len(load_candidate_set(ws, cset.name).frame) == cset.n_candidates
    assert not [p for p in ws.root.rglob(".*") if p.name != ".gitignore"]  # no temp left
    # Two apps' raters vote at once, each through its own process.
    sessions.create_session(ws, "s", cset.name, objectives=OBJ)
    raters = [_rater(ws, name, tmp_path / f"{name}.out", pause=0) for name in ("ann", "bob")]
    for r in raters:
        assert r.wait(timeout=90) == 0, (tmp_path / "ann.out").read_text()
    votes = sessions.load_votes(ws, "s")
    n_items = sessions.get_session(ws, "s").n_items
    for name in ("ann", "bob"):
        mine = votes.loc[votes["rater"] == name, "item_id"].astype(int).tolist()
        assert sorted(mine) == sorted(_cast(tmp_path / f"{name}.out"))
        assert len(mine) == len(set(mine)) == n_items


# -- 6. a workspace shared by users: modes follow the umask -----------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_artifact_folders_and_files_get_the_modes_of_the_umask(ws, tmp_path, mask):
    from morm_explorer.data.candidates import from_records, save_candidate_set
    from morm_explorer.data.loaders import load_preference_data

    src = _pairs(tmp_path / "a.jsonl", 5)
    old = os.umask(mask)
    try:
        ws.save_dataset("a", load_preference_data(src))
        save_candidate_set(ws, "c", from_records([{"prompt_id": "p", "prompt": "q",
                                                   "response": "r"}]))
    finally:
        os.umask(old)
    paths = [p for group in ("datasets", "candidates")
             for p in (ws.root / group, *(ws.root / group).rglob("*"))]
    modes = {p.relative_to(ws.root).as_posix(): oct(p.stat().st_mode & 0o777) for p in paths}
    assert modes == {p.relative_to(ws.root).as_posix():
                     oct((0o777 if p.is_dir() else 0o666) & ~mask) for p in paths}
    assert "candidates/c/info.json" in modes and "datasets/a/data.jsonl" in modes
