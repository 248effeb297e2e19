"""Running one claimed job start to end: in a child process under the worker's watch, or in
the calling process; and recording how it ended.

The worker side (`run_child`) watches three things every `CHECK_S`: a message from the child
(its result or its exception), the child's death without one (a crash, a SIGKILL from the OOM
killer), and the job's ``cancel_requested`` flag. On a cancel the runner first gets
`CANCEL_GRACE_S` to stop by itself (it raises `JobCancelled` at its next check), then SIGTERM,
then SIGKILL after `TERM_GRACE_S`: at most ~3.5 s from request to stop, whatever the runner
is doing. A `Stop` set by the worker (a signal, or its app gone) stops the runner at once and
fails the job or puts it back in the queue. However the job ends, its uncommitted staging
folder is removed.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from morm_explorer.errors import MormError
from morm_explorer.jobs.context import JobCancelled, JobContext
from morm_explorer.jobs.spec import USER_PRIORITY, JobInfo, get_job_kind, load_job_modules
from morm_explorer.jobs.store import JobStore
from morm_explorer.workspace import Workspace

if TYPE_CHECKING:
    from morm_explorer.jobs.worker import _Heartbeat

CHECK_S = 0.5
CANCEL_GRACE_S = 1.5
TERM_GRACE_S = 1.0
# A background job's runner yields the CPU to a user's job running beside it (see `worker`).
BACKGROUND_NICE = 10


class Stop:
    """A worker's order to stop its running jobs: set once, with why, and whether the jobs go
    back in the queue (their app stopped: they run again at its next start) or fail."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.requeue = False

    def set(self, reason: str, requeue: bool = False) -> None:
        if not self.event.is_set():
            self.reason, self.requeue = reason, requeue
            self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def execute(store: JobStore, worker_id: str, job_id: str) -> dict[str, Any]:
    """Run job ``job_id``'s runner here; returns the outcome as a JSON-able message."""
    try:
        info = store.get(job_id)
        kind = get_job_kind(info.kind)
        spec = kind.spec_cls.from_dict(info.spec)
        ctx = JobContext(store, job_id, spec, worker_id)
        result = kind.runner(spec, ctx)
        if not isinstance(result, dict):
            raise TypeError(f"the {info.kind} runner returned {type(result).__name__}, "
                            "expected a dict")
        if ctx.artifacts:
            result.setdefault("artifacts", ctx.artifacts)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as e:
            raise TypeError(f"the {info.kind} runner returned a result that is not JSON: "
                            f"{e}") from e
        return {"status": "succeeded", "result": result}
    except JobCancelled as e:
        return {"status": "cancelled", "note": str(e)}
    except Exception as e:
        store.add_log(job_id, traceback.format_exc())
        # A MormError is already a message for the user; anything else needs its type.
        error = str(e) if isinstance(e, MormError) else f"{type(e).__name__}: {e}"
        return {"status": "failed", "error": error}


def record(store: JobStore, worker_id: str, job_id: str, msg: dict[str, Any]) -> str:
    """Drop the job's staging folder, then write how it ended (unless it was taken away):
    once a job shows as finished, nothing of its uncommitted output is left."""
    store.discard_staging(job_id)
    status = msg["status"]
    if status == "succeeded":
        store.finish(job_id, worker_id, msg["result"])
    elif status == "cancelled" or (status == "failed" and store.cancel_requested(job_id)):
        # A runner that fails while being stopped was stopped: report what the user asked.
        status = "cancelled"
        store.mark_cancelled(job_id, worker_id, msg.get("note") or "cancelled")
    elif status == "failed":
        store.fail(job_id, worker_id, msg["error"])
    return status


def run_in_process(store: JobStore, worker_id: str, job_id: str) -> str:
    return record(store, worker_id, job_id, execute(store, worker_id, job_id))


def die_with_parent(parent_pid: int) -> None:
    """Make this (child) process exit when ``parent_pid`` does, so no orphan runner goes on
    writing after its worker was killed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:  # the portable fallback, for systems without PR_SET_PDEATHSIG
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="morm-parent-watch", daemon=True).start()


def child_main(ws_root: str, job_id: str, worker_id: str, parent_pid: int,
               conn: Connection, nice: int = 0) -> None:
    """Entry point of the job's child process; ``nice``: added to its CPU niceness."""
    die_with_parent(parent_pid)
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    load_job_modules()
    msg = execute(JobStore(Workspace(ws_root)), worker_id, job_id)
    # JSON bytes rather than send(): nothing crossing the pipe is ever unpickled.
    conn.send_bytes(json.dumps(msg).encode())
    conn.close()


def _stop(proc: mp.process.BaseProcess) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(TERM_GRACE_S)
    if proc.is_alive():
        proc.kill()
    proc.join()


def _crash_message(proc: mp.process.BaseProcess) -> dict[str, Any]:
    code = proc.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        why = " (out of memory, or killed from outside)" if name == "SIGKILL" else ""
        error = f"runner process (pid {proc.pid}) was killed by {name}{why}"
    else:
        error = f"runner process (pid {proc.pid}) exited with code {code} without a result"
    return {"status": "failed", "error": error}


def _watch(store: JobStore, hb: _Heartbeat, job_id: str, proc: mp.process.BaseProcess,
           conn: Connection, stop: Stop | None) -> dict[str, Any]:
    deadline = None
    while True:
        if conn.poll(CHECK_S):
            try:
                msg = json.loads(conn.recv_bytes())
            except EOFError:  # the child died without a word
                break
            proc.join(5 * TERM_GRACE_S)
            _stop(proc)
            return msg
        if not proc.is_alive():
            break
        if hb.is_lost(job_id):
            _stop(proc)
            return {"status": "lost"}
        if stop is not None and stop.is_set():
            _stop(proc)
            return {"status": "stopped"}
        if deadline is None:
            if store.cancel_requested(job_id):
                deadline = time.monotonic() + CANCEL_GRACE_S
        elif time.monotonic() > deadline:
            _stop(proc)
            return {"status": "cancelled",
                    "note": "cancelled: stopped by the worker (the runner did not stop itself)"}
    proc.join()
    return _crash_message(proc)


def _record_stop(store: JobStore, worker_id: str, job_id: str, stop: Stop) -> str:
    """Record a job the worker stopped: back in the queue when asked (unless a cancel was
    pending), else failed; returns its status."""
    store.discard_staging(job_id)
    if stop.requeue and store.requeue(
            job_id, worker_id, f"interrupted ({stop.reason}); it runs again, resuming where it "
            "can, when a worker starts"):
        return "queued"
    if store.cancel_requested(job_id):
        store.mark_cancelled(job_id, worker_id, f"cancelled ({stop.reason})")
        return "cancelled"
    store.fail(job_id, worker_id, f"worker {worker_id} (pid {os.getpid()}) stopped while the "
               f"job ran ({stop.reason})")
    return "failed"


def run_child(store: JobStore, hb: _Heartbeat, job: JobInfo, stop: Stop | None = None) -> str:
    """Run a claimed job in a spawned child process; returns its final status ("queued" when
    ``stop`` put it back in the queue)."""
    worker_id = hb.worker.id
    ctx = mp.get_context("spawn")  # never fork: a forked CUDA or SQLite state is unsafe
    recv, send = ctx.Pipe(duplex=False)
    nice = BACKGROUND_NICE if job.priority < USER_PRIORITY else 0
    proc = ctx.Process(target=child_main, name=f"morm-job-{job.id}",
                       args=(str(store.ws.root.resolve()), job.id, worker_id, os.getpid(), send,
                             nice))
    try:
        proc.start()
        send.close()
        store.set_runner(job.id, pid=proc.pid)
        msg = _watch(store, hb, job.id, proc, recv, stop)
    except BaseException as e:  # the worker itself is stopping (WorkerStopped) or broke
        if proc.pid is not None:
            _stop(proc)
        store.discard_staging(job.id)
        store.fail(job.id, worker_id, f"worker {worker_id} (pid {os.getpid()}) stopped while "
                   f"the job ran ({type(e).__name__}: {e})")
        raise
    finally:
        recv.close()
    if msg["status"] == "stopped" and stop is not None:
        return _record_stop(store, worker_id, job.id, stop)
    return record(store, worker_id, job.id, msg)
