"""What a Ray job runs: ``python -m morm_explorer.jobs.ray_entry --workspace ROOT --job-id ID``.

The Ray counterpart of a local worker that runs one given job: it claims job ID (queued and
reserved by `RayBackend.submit`) as worker ``ray-w-<host>-<pid>-..``, heartbeats it and runs it
in a child process with `run.run_child`, so that cancelling, crashes and artifacts behave
exactly as for local jobs. ROOT is the shared workspace. Unlike a local worker it does not
register in the ``workers`` table: it takes no jobs from the queue (a local `ensure_worker`
must not count it as a worker), and Ray, not the store, supervises its process. Nothing here
imports Ray.

Ray's `stop_job` sends SIGTERM to this process and to the runner at once, and SIGKILL 3 s
later. On SIGTERM the entry stops the runner and records the job as cancelled if a cancel was
requested, else as failed. Exit code: 0 when the job succeeded or was cancelled, 1 otherwise,
so that Ray's own job status agrees. Whatever a SIGKILL leaves unrecorded is settled by
`RayBackend.get` (from Ray's job status) or by `JobStore.reap` (from the silent heartbeat).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

from morm_explorer.errors import MormError
from morm_explorer.jobs.ray_backend import RAY_WORKER
from morm_explorer.jobs.run import record, run_child
from morm_explorer.jobs.spec import load_job_modules, spec_from_dict
from morm_explorer.jobs.store import JobStore, WorkerInfo, new_worker_id
from morm_explorer.jobs.worker import _Heartbeat
from morm_explorer.workspace import Workspace

log = logging.getLogger(__name__)


class _JobHeartbeat(_Heartbeat):
    """Refreshes the job's heartbeat only (no ``workers`` row); flags a job taken away."""

    def beat(self) -> None:
        try:
            with self.store.ws.transaction() as con:
                cur = con.execute("UPDATE jobs SET heartbeat_at=? WHERE id=? AND worker_id=? "
                                  "AND status='running'",
                                  (time.time(), self.job_id, self.worker.id))
        except (sqlite3.Error, MormError) as e:  # busy, or a full disk: the next beat retries
            log.warning("heartbeat failed: %s", e)
            return
        if cur.rowcount != 1:
            self.lost.set()


def _record_stop(store: JobStore, worker_id: str, job_id: str, status: str) -> str:
    """After a SIGTERM: record the job that the entry stopped ("lost": nothing recorded yet)."""
    if status != "lost":  # the runner's own end (often "killed by SIGTERM") was recorded
        store.add_log(job_id, "its Ray job was stopped (SIGTERM)")
        return status
    if store.cancel_requested(job_id):
        store.mark_cancelled(job_id, worker_id, "cancelled: its Ray job was stopped")
        return "cancelled"
    store.fail(job_id, worker_id, "its Ray job was stopped (SIGTERM) while it ran")
    return "failed"


def run_entry(ws: Workspace, job_id: str, remote: dict | None = None) -> str:
    """Claim and run job ``job_id``; returns its final status (its current one if it was not
    there to claim: cancelled before it started, or already run). With ``remote`` (placement
    and storage options), the job runs as a Ray task on any node that fits it
    (`ray_remote.drive`); without, here, in a child process."""
    store = JobStore(ws)
    stopping = threading.Event()
    hb: _Heartbeat | None = None

    def on_sigterm(signum, frame):
        # Only flags: the main thread may be inside a database transaction right now.
        stopping.set()
        if hb is not None:
            hb.lost.set()  # makes run_child stop the runner at its next check

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        load_job_modules()
        now = time.time()
        worker = WorkerInfo(id=f"{RAY_WORKER}-{new_worker_id()}", pid=os.getpid(),
                            host=socket.gethostname(), started_at=now, heartbeat_at=now)
        job = None if stopping.is_set() else store.claim(worker.id, job_id=job_id)
        if job is None:
            status = store.get(job_id).status
            log.info("job %s is %s: not run", job_id, status)
            return status
        hb = _JobHeartbeat(store, worker)
        hb.start_job(job_id)
        hb.beat()
        hb.start()
        if stopping.is_set():
            hb.lost.set()
        store.add_log(job_id, f"on Ray node {worker.host}, entry pid {worker.pid}, "
                      f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")
        try:
            if remote is not None and not spec_from_dict(job.kind, job.spec).runs_on_any_node():
                store.add_log(job_id, "it orchestrates other jobs: it runs here, beside the "
                              "workspace, and sends its own jobs to the cluster")
                if remote.get("storage"):  # the jobs it submits use the same storage
                    os.environ["MORM_RAY_STORAGE"] = remote["storage"]
                remote = None
            if remote is not None:
                from morm_explorer.jobs.ray_remote import drive

                try:
                    msg = drive(store, hb, job, remote, stopping)
                except Exception as e:  # the cluster or the storage failed the entry itself
                    log.exception("the remote job failed")
                    msg = {"status": "failed",
                           "error": str(e) if isinstance(e, MormError)
                           else f"{type(e).__name__}: {e}"}
                status = "lost" if msg["status"] == "lost" else record(store, worker.id,
                                                                        job_id, msg)
            else:
                status = run_child(store, hb, job)
            if stopping.is_set():
                status = _record_stop(store, worker.id, job_id, status)
        finally:
            hb.stop()
        log.info("job %s %s", job_id, status)
        return status
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m morm_explorer.jobs.ray_entry",
                                description="Run one MORM Explorer job as a Ray job.")
    p.add_argument("--workspace", required=True, help="the shared workspace folder")
    p.add_argument("--job-id", required=True, help="the job to run (queued by RayBackend)")
    p.add_argument("--gpus", type=float, default=0.0, help="GPUs Ray reserved for the job")
    p.add_argument("--remote", default=None, metavar="JSON",
                   help="run the job as a Ray task on any node that fits it, with these "
                        "placement and storage options (see ray_remote.placement)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    remote = None
    if args.remote is not None:
        try:
            remote = json.loads(args.remote)
        except ValueError as e:
            print(f"error: --remote is not JSON: {e}", file=sys.stderr)
            return 2
    if args.gpus == 0 and remote is None:
        # Ray leaves an entrypoint that reserved no GPU free to see every GPU of its node;
        # hide them, so that the job cannot take one that Ray gave to another.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        if not (Path(args.workspace) / "morm.sqlite").is_file():  # the entry runs on the head
            raise MormError(f"no workspace at {args.workspace} on Ray node "
                            f"{socket.gethostname()}: a job's entrypoint runs on the cluster's "
                            "head, which must be the app's machine (or mount its workspace at "
                            "the same path)")
        status = run_entry(Workspace(args.workspace), args.job_id, remote)
    except MormError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if status in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
