"""The local worker: claims queued jobs and runs each in a child process.

``python -m morm_explorer.jobs.worker --workspace DIR`` (or ``morm worker``) runs one. It runs
one job at a time, by priority, with one exception: while a background job (the demo build,
`spec.BACKGROUND_PRIORITY`) runs, a user's job runs beside it in a second slot (the background
job's runner at a lower CPU priority, `run.BACKGROUND_NICE`), so that what a user launches
never waits for the demo build. Why a child process per job: the worker
stays responsive while a runner is stuck in a long torch call, so it can stop a cancelled job
within seconds (ask, then SIGTERM, then SIGKILL), and a runner that crashes or is killed for
memory is recorded as failed with its signal instead of taking the worker down. Each running
job is watched from its own thread; a background thread heartbeats the worker and its jobs every
`HEARTBEAT_S`; `JobStore.reap` fails the jobs of workers that stop. The child dies with its
worker (PR_SET_PDEATHSIG on Linux, a parent watch elsewhere), so a killed worker leaves no
runner behind writing into the workspace.

`ensure_worker` starts a detached worker when none is alive. One started for the app is owned
by it (``--owner-pid``): when the app's process is gone, the worker stops its running jobs,
puts them back in the queue (they resume at the next start) and exits within seconds. A worker
without an owner (``morm worker``) runs until stopped. `run_inline` runs a job in the calling
process, for tests of runners.
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
from morm_explorer.jobs.run import Stop, run_child, run_in_process
from morm_explorer.jobs.spec import (
    USER_PRIORITY,
    JobInfo,
    JobSpec,
    known_kinds,
    load_job_modules,
)
from morm_explorer.jobs.store import (
    HEARTBEAT_S,
    STALE_AFTER_S,
    JobStore,
    WorkerInfo,
    death_reason,
    new_worker_id,
    pid_alive,
)
from morm_explorer.workspace import Workspace

log = logging.getLogger("morm_explorer.jobs.worker")


OWNER_CHECK_S = 0.5


class WorkerStopped(BaseException):
    """Raised in the worker's main thread by a second SIGTERM/SIGINT: stop at once."""


class _Heartbeat(threading.Thread):
    """Refreshes the worker's row and its running jobs; flags a job taken away meanwhile."""

    def __init__(self, store: JobStore, worker: WorkerInfo) -> None:
        super().__init__(name="morm-heartbeat", daemon=True)
        self.store, self.worker = store, worker
        self.jobs: list[str] = []  # the jobs running now, one per slot
        self.lost = threading.Event()  # every job is to stop (a Ray entry's SIGTERM)
        self.lost_ids: set[str] = set()  # jobs taken away from this worker
        self.stopped = threading.Event()
        self._jobs_lock = threading.Lock()  # slots start and end jobs from their threads

    @property
    def job_id(self) -> str | None:
        """The running job, for those that run one at a time (`run_inline`, Ray entries)."""
        jobs = self.jobs
        return jobs[0] if jobs else None

    def beat(self) -> None:
        jobs = list(self.jobs)
        try:
            lost = self.store.heartbeat(self.worker, jobs)
        except Exception as e:  # a locked or busy database must not kill the heartbeat
            log.warning("heartbeat failed: %s", e)
            return
        with self._jobs_lock:  # only jobs still running: one ended meanwhile is not lost
            self.lost_ids.update(j for j in lost if j in self.jobs)

    def is_lost(self, job_id: str) -> bool:
        return self.lost.is_set() or job_id in self.lost_ids

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            self.beat()

    def stop(self) -> None:
        """Stop beating; returns once no beat is in flight, so none lands after this."""
        self.stopped.set()
        if self.is_alive():
            self.join()

    def start_job(self, job_id: str) -> None:
        with self._jobs_lock:
            self.lost_ids.discard(job_id)
            self.jobs = [*self.jobs, job_id]

    def end_job(self, job_id: str) -> None:
        with self._jobs_lock:
            self.jobs = [j for j in self.jobs if j != job_id]
            self.lost_ids.discard(job_id)

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
               idle_exit: float | None = None, worker_id: str | None = None,
               owner_pid: int | None = None) -> int:
    """Run queued jobs (see the module docstring for which run at once); returns how many ran.

    ``once``: exit as soon as the queue is empty. ``idle_exit``: exit after that many seconds
    without a job. ``owner_pid``: exit when that process is gone, putting the running jobs
    back in the queue. Otherwise runs until SIGTERM or Ctrl-C (the running jobs then fail).
    """
    stop, wake = Stop(), threading.Event()
    # Handlers first: a stop at any moment from here on unregisters the worker.
    previous = _install_stop_handlers(stop, wake)
    store = JobStore(ws)
    hb = None
    done: list[str] = []
    try:
        if owner_pid is not None:
            if not pid_alive(owner_pid):  # gone before this worker started: take nothing
                stop.set(f"its app (pid {owner_pid}) had stopped", requeue=True)
            threading.Thread(target=_watch_owner, args=(owner_pid, stop, wake),
                             name="morm-owner-watch", daemon=True).start()
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
        log.info("worker %s (pid %d) on %s: kinds %s%s", worker.id, worker.pid, ws.root, kinds,
                 f", owned by pid {owner_pid}" if owner_pid is not None else "")
        _work(store, hb, kinds, once, poll, idle_exit, done, stop, wake)
        if stop.is_set():
            log.info("worker stopped: %s", stop.reason)
    except WorkerStopped as e:
        log.info("worker stopped at once by %s", e)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if hb is not None:
            hb.stop()
            store.unregister_worker(hb.worker.id)
    return len(done)


class _Slot(threading.Thread):
    """One claimed job, run in a child process (`run_child`) and watched from this thread."""

    def __init__(self, store: JobStore, hb: _Heartbeat, job: JobInfo, stop: Stop,
                 wake: threading.Event) -> None:
        super().__init__(name=f"morm-slot-{job.id}", daemon=True)
        self.store, self.hb, self.job, self.stop, self.wake = store, hb, job, stop, wake

    def run(self) -> None:
        try:
            run_child(self.store, self.hb, self.job, self.stop)
        except Exception:  # its heartbeat ends below, so reap() fails the job soon
            log.exception("job %s could not be run to its end", self.job.id)
        finally:
            self.hb.end_job(self.job.id)
            self.wake.set()


def _claim_next(store: JobStore, worker_id: str, kinds: list[str],
                running: list[JobInfo]) -> JobInfo | None:
    """The next job for a free slot: any job when none runs; a user's job beside a background
    one; nothing otherwise (two jobs at once only so that a user never waits for the demo)."""
    if not running:
        return store.claim(worker_id, kinds)
    if len(running) == 1 and running[0].priority < USER_PRIORITY:
        return store.claim(worker_id, kinds, min_priority=USER_PRIORITY)
    return None


def _work(store: JobStore, hb: _Heartbeat, kinds: list[str], once: bool, poll: float,
          idle_exit: float | None, done: list[str], stop: Stop,
          wake: threading.Event) -> None:
    """The worker loop: reap, claim, start a slot; appends the ids of the jobs it ran to
    ``done``. On a stop, waits for the slots to stop their jobs."""
    slots: list[_Slot] = []
    idle_since = time.monotonic()
    try:
        while not stop.is_set():
            for slot in [s for s in slots if not s.is_alive()]:
                slots.remove(slot)
                done.append(slot.job.id)
                idle_since = time.monotonic()
            wake.clear()
            try:
                store.reap()
                job = _claim_next(store, hb.worker.id, kinds, [s.job for s in slots])
            except (sqlite3.OperationalError, MormError) as e:
                # A database busy beyond its timeout, or a full disk: retry. Others are raised.
                if isinstance(e, MormError) and not isinstance(e.__cause__,
                                                               sqlite3.OperationalError):
                    raise
                if not store.ws.root.is_dir():  # the workspace was deleted under us
                    log.warning("workspace %s is gone; the worker stops", store.ws.root)
                    return
                log.warning("could not claim a job: %s", e)
                job = None
            if job is not None:
                hb.start_job(job.id)
                hb.beat()
                slots.append(_Slot(store, hb, job, stop, wake))
                slots[-1].start()
                continue
            if not slots and (once or (idle_exit is not None
                                       and time.monotonic() - idle_since >= idle_exit)):
                return
            wake.wait(poll)
    finally:
        if slots:
            stop.set("the worker stopped")  # no-op when a signal or the owner set it
        for slot in slots:
            slot.join()


def _install_stop_handlers(stop: Stop, wake: threading.Event) -> dict:
    """SIGTERM and SIGINT set ``stop`` (the loop stops the running jobs and exits); a second
    one raises `WorkerStopped`. Returns the handlers to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        if stop.is_set():
            raise WorkerStopped(name)
        stop.set(name)
        wake.set()

    return {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}


def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None when it
    cannot be told: with its pid, this names one process even once the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _watch_owner(owner_pid: int, stop: Stop, wake: threading.Event) -> None:
    """Set ``stop`` (jobs back in the queue) once process ``owner_pid`` is gone."""
    born = process_start_time(owner_pid)
    while not stop.is_set():
        if not pid_alive(owner_pid) or process_start_time(owner_pid) != born:
            log.info("the app (pid %d) is gone: the worker stops", owner_pid)
            stop.set(f"its app (pid {owner_pid}) stopped", requeue=True)
            wake.set()
            return
        stop.event.wait(OWNER_CHECK_S)


def run_inline(ws: Workspace, spec: JobSpec, launched_by: str = "CLI (in the foreground)"
               ) -> JobInfo:
    """Submit ``spec`` and run it in this process, start to end (the commands that run a job
    in the foreground; tests of runners)."""
    store = JobStore(ws)
    job_id = store.submit(spec, launched_by=launched_by)
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
                  idle_exit: float | None = None, owner_pid: int | None = None) -> bool:
    """Start a detached worker for ``ws`` unless one is alive; returns whether one was started.
    ``owner_pid``: the process (the app) whose end ends the worker (see the module docstring).

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
        if owner_pid is not None:
            cmd += ["--owner-pid", str(int(owner_pid))]
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
    p.add_argument("--owner-pid", type=int, help="exit when this process (the app) is gone, "
                   "putting the running jobs back in the queue")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    n = run_worker(Workspace(args.workspace), once=args.once, poll=args.poll,
                   idle_exit=args.idle_exit, worker_id=args.worker_id, owner_pid=args.owner_pid)
    log.info("worker exits after %d job(s)", n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
