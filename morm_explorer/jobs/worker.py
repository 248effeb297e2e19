"""The local worker: claims queued jobs one at a time and runs each in a child process.

``python -m morm_explorer.jobs.worker --workspace DIR`` (or ``morm worker``) runs one. Why a
child process per job: the worker stays responsive while a runner is stuck in a long torch
call, so it can stop a cancelled job within seconds (ask, then SIGTERM, then SIGKILL), and a
runner that crashes or is killed for memory is recorded as failed with its signal instead of
taking the worker down. A background thread heartbeats the worker and its job every
`HEARTBEAT_S`; `JobStore.reap` fails the jobs of workers that stop. The child dies with its
worker (PR_SET_PDEATHSIG on Linux, a parent watch elsewhere), so a killed worker leaves no
runner behind writing into the workspace.

`ensure_worker` starts a detached worker when none is alive; `run_inline` runs a job in the
calling process, for tests of runners.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from morm_explorer.errors import MormError
from morm_explorer.jobs.run import run_child, run_in_process
from morm_explorer.jobs.spec import JobInfo, JobSpec, known_kinds, load_job_modules
from morm_explorer.jobs.store import (
    HEARTBEAT_S,
    STALE_AFTER_S,
    JobStore,
    WorkerInfo,
    death_reason,
    new_worker_id,
)
from morm_explorer.workspace import Workspace

log = logging.getLogger("morm_explorer.jobs.worker")


class WorkerStopped(BaseException):
    """Raised in the worker's main thread by SIGTERM/SIGINT, so the running job is recorded."""


class _Heartbeat(threading.Thread):
    """Refreshes the worker's row and its running job; flags a job taken away meanwhile."""

    def __init__(self, store: JobStore, worker: WorkerInfo) -> None:
        super().__init__(name="morm-heartbeat", daemon=True)
        self.store, self.worker = store, worker
        self.job_id: str | None = None
        self.lost = threading.Event()
        self.stopped = threading.Event()

    def beat(self) -> None:
        job_id = self.job_id
        try:
            owned = self.store.heartbeat(self.worker, job_id)
        except Exception as e:  # a locked or busy database must not kill the heartbeat
            log.warning("heartbeat failed: %s", e)
            return
        if job_id is not None and not owned and job_id == self.job_id:
            self.lost.set()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            self.beat()

    def stop(self) -> None:
        """Stop beating; returns once no beat is in flight, so none lands after this."""
        self.stopped.set()
        if self.is_alive():
            self.join()

    def start_job(self, job_id: str) -> None:
        self.job_id = job_id
        self.lost.clear()

    def set_device(self, device: str) -> None:
        self.worker = replace(self.worker, device=device)


def _probe_device(hb: _Heartbeat) -> None:
    # In a short-lived interpreter, so that the worker itself never loads torch or CUDA.
    cmd = [sys.executable, "-c",
           "from morm_explorer.jobs.context import detect_device; print(detect_device())"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        hb.set_device(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        log.warning("could not detect the device: %s", e)
        hb.set_device("cpu")


def run_worker(ws: Workspace, once: bool = False, poll: float = 1.0,
               idle_exit: float | None = None, worker_id: str | None = None) -> int:
    """Run queued jobs one at a time; returns how many were run.

    ``once``: exit as soon as the queue is empty. ``idle_exit``: exit after that many seconds
    without a job. Otherwise runs until SIGTERM or Ctrl-C (the running job is then failed).
    """
    # Handlers first: a stop at any moment from here on unregisters the worker.
    previous = _install_stop_handlers()
    store = JobStore(ws)
    hb = None
    done: list[str] = []
    try:
        load_job_modules()
        kinds = known_kinds()
        store.reap()
        store.sweep_staging()
        now = time.time()
        worker = WorkerInfo(id=worker_id or new_worker_id(), pid=os.getpid(),
                            host=socket.gethostname(), started_at=now, heartbeat_at=now)
        hb = _Heartbeat(store, worker)
        hb.beat()
        hb.start()
        threading.Thread(target=_probe_device, args=(hb,), daemon=True).start()
        log.info("worker %s (pid %d) on %s: kinds %s", worker.id, worker.pid, ws.root, kinds)
        _work(store, hb, kinds, once, poll, idle_exit, done)
    except WorkerStopped as e:
        log.info("worker stopped by %s", e)
    finally:
        for signum, handler in previous.items():  # a second signal now stops at once
            signal.signal(signum, handler)
        if hb is not None:
            hb.stop()
            store.unregister_worker(hb.worker.id)
    return len(done)


def _work(store: JobStore, hb: _Heartbeat, kinds: list[str], once: bool, poll: float,
          idle_exit: float | None, done: list[str]) -> None:
    """The worker loop: reap, claim, run; appends the ids of the jobs it ran to ``done``."""
    idle_since = time.monotonic()
    while True:
        try:
            store.reap()
            job = store.claim(hb.worker.id, kinds)
        except (sqlite3.OperationalError, MormError) as e:
            # A database busy beyond its timeout, or a full disk: retry. Others are raised.
            if isinstance(e, MormError) and not isinstance(e.__cause__, sqlite3.OperationalError):
                raise
            if not store.ws.root.is_dir():  # the workspace was deleted under us: nothing to do
                log.warning("workspace %s is gone; the worker stops", store.ws.root)
                return
            log.warning("could not claim a job: %s", e)
            if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                return
            time.sleep(poll)
            continue
        if job is None:
            idle = time.monotonic() - idle_since
            if once or (idle_exit is not None and idle >= idle_exit):
                return
            time.sleep(poll)
            continue
        hb.start_job(job.id)
        hb.beat()
        try:
            run_child(store, hb, job)
        finally:
            hb.job_id = None
        done.append(job.id)
        idle_since = time.monotonic()


def _install_stop_handlers() -> dict:
    """Turn SIGTERM and SIGINT into `WorkerStopped`; returns the handlers to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        raise WorkerStopped(signal.Signals(signum).name)

    return {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}


def run_inline(ws: Workspace, spec: JobSpec) -> JobInfo:
    """Submit ``spec`` and run it in this process, start to end (for tests of runners)."""
    store = JobStore(ws)
    job_id = store.submit(spec)
    now = time.time()
    worker = WorkerInfo(id=f"inline-{new_worker_id()}", pid=os.getpid(),
                        host=socket.gethostname(), started_at=now, heartbeat_at=now)
    if store.claim(worker.id, job_id=job_id) is None:
        raise RuntimeError(f"job {job_id} was taken by a running worker")
    # Heartbeats keep other processes' reap() from failing a long inline job.
    hb = _Heartbeat(store, worker)
    hb.start_job(job_id)
    hb.beat()
    hb.start()
    try:
        run_in_process(store, worker.id, job_id)
    finally:
        hb.stop()
        store.unregister_worker(worker.id)
    return store.get(job_id)


def ensure_worker(ws: Workspace, stale_after: float = STALE_AFTER_S,
                  idle_exit: float | None = None) -> bool:
    """Start a detached worker for ``ws`` unless one is alive; returns whether one was started.

    The check and the start share one write transaction, and the new worker is registered at
    once under its future id, so two callers at the same moment start only one worker.
    """
    import morm_explorer

    store = JobStore(ws)
    store.reap(stale_after)
    root = ws.root.resolve()
    (root / "logs").mkdir(exist_ok=True)
    worker_id = new_worker_id()
    with ws.transaction() as con:
        now = time.time()
        for w in con.execute("SELECT * FROM workers").fetchall():
            if death_reason(w["id"], w["pid"], w["host"], w["heartbeat_at"], now,
                            stale_after) is None:
                return False
        cmd = [sys.executable, "-m", "morm_explorer.jobs.worker", "--workspace", str(root),
               "--worker-id", worker_id]
        if idle_exit is not None:
            cmd += ["--idle-exit", str(idle_exit)]
        src = str(Path(morm_explorer.__file__).resolve().parents[1])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        log_path = root / "logs" / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{worker_id}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        con.execute("INSERT INTO workers VALUES (?,?,?,?,?,?,NULL)",
                    (worker_id, proc.pid, socket.gethostname(), now, now, "starting"))
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m morm_explorer.jobs.worker",
                                description="Run queued MORM Explorer jobs.")
    p.add_argument("--workspace", help="workspace folder (default: $MORM_WORKSPACE or "
                   "./workspace)")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between queue checks")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without a job")
    p.add_argument("--worker-id", help="id to register under (given by ensure_worker)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    n = run_worker(Workspace(args.workspace), once=args.once, poll=args.poll,
                   idle_exit=args.idle_exit, worker_id=args.worker_id)
    log.info("worker exits after %d job(s)", n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
