"""The job store: jobs, their metrics and logs, and the workers, in the workspace database.

Every state change is one SQLite transaction taken up front (BEGIN IMMEDIATE), so that any
number of processes (workers, the app, the CLI) can share the queue: `claim` hands a queued
job to exactly one worker, and a worker's final write only lands while the job is still its
own. `reap` turns the jobs of dead workers into failures; it is cheap when nothing is dead, so
workers and pages call it on every poll.

What runs a job lives in `worker`; what a job is lives in `spec`.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morm_explorer.errors import MormError
from morm_explorer.jobs.spec import STATUSES, JobInfo, JobSpec, get_job_kind
from morm_explorer.workspace import Workspace, sanitize_name

if TYPE_CHECKING:
    import pandas as pd

# A worker heartbeats every HEARTBEAT_S; one silent for STALE_AFTER_S is taken for dead. The
# gap leaves room for a busy disk or a paused laptop without failing healthy jobs.
HEARTBEAT_S = 2.0
STALE_AFTER_S = 15.0
FOLDERS = "folders.txt"  # in a job's folder: the folders it writes into (note_folder)


@dataclass(frozen=True)
class WorkerInfo:
    """A worker process as registered in the ``workers`` table."""

    id: str
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    device: str | None = None
    job_id: str | None = None


def new_worker_id() -> str:
    return f"w-{socket.gethostname()[:24]}-{os.getpid()}-{secrets.token_hex(2)}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): existence is all we can tell
    return state != "Z"


def death_reason(worker_id: str | None, pid: int | None, host: str | None,
                 heartbeat_at: float | None, now: float, stale_after: float) -> str | None:
    """Why a worker counts as dead, or None while it is alive.

    Stale heartbeats catch every death; on the same machine a vanished pid is caught at once.
    """
    who = f"worker {worker_id} (pid {pid if pid is not None else '?'})"
    if heartbeat_at is None or heartbeat_at < now - stale_after:
        age = "" if heartbeat_at is None else f" {now - heartbeat_at:.0f} s ago"
        return f"{who} stopped heartbeating{age}: killed or out of memory"
    if pid is not None and host == socket.gethostname() and not pid_alive(pid):
        return f"{who} is no longer running: killed or out of memory"
    return None


def _row_to_info(row: sqlite3.Row) -> JobInfo:
    d = dict(row)
    d["spec"] = json.loads(d["spec"])
    d["result"] = json.loads(d["result"]) if d["result"] else None
    d["cancel_requested"] = bool(d["cancel_requested"])
    return JobInfo(**d)


class JobStore:
    """Jobs of one workspace. Every method opens its own connection, so one store may be shared
    by threads."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    # -- paths ----------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.ws.root / "jobs" / sanitize_name(job_id)

    def staging_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "staging"

    def note_folder(self, job_id: str, folder: Path) -> None:
        """Record that the job writes into ``folder`` outside its staging area (a run folder
        with checkpoints), so that `discard_staging` can clear what a killed writer left there."""
        listed = self.job_dir(job_id) / FOLDERS
        listed.parent.mkdir(parents=True, exist_ok=True)
        with open(listed, "a", encoding="utf-8") as fh:
            fh.write(str(Path(folder).resolve()) + "\n")

    def discard_staging(self, job_id: str) -> None:
        """Remove whatever a job wrote but did not commit: its whole job folder, and the
        temporary entries (``.*.tmp-*``, never published) in the folders it noted."""
        listed = self.job_dir(job_id) / FOLDERS
        if listed.is_file():
            for line in listed.read_text(encoding="utf-8").splitlines():
                for stale in Path(line).glob(".*.tmp-*") if line.strip() else ():
                    if stale.is_dir() and not stale.is_symlink():
                        shutil.rmtree(stale, ignore_errors=True)
                    else:
                        stale.unlink(missing_ok=True)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # -- reads ----------------------------------------------------------------------------
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.ws.reading() as con:  # a fault: the workspace's one message (database_error)
            return con.execute(sql, params).fetchall()

    def get(self, job_id: str) -> JobInfo:
        rows = self._query("SELECT * FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise MormError(f"no job {job_id!r} in {self.ws.root}")
        return _row_to_info(rows[0])

    def list(self, status: str | Sequence[str] | None = None, kind: str | None = None,
             limit: int = 100) -> list[JobInfo]:
        """Jobs, newest first, optionally of some statuses and one kind."""
        statuses = [status] if isinstance(status, str) else list(status or STATUSES)
        bad = sorted(set(statuses) - set(STATUSES))
        if bad:
            raise MormError(f"unknown job status {bad[0]!r}; expected one of "
                            f"{', '.join(STATUSES)}", field="status")
        sql = f"SELECT * FROM jobs WHERE status IN ({','.join('?' * len(statuses))})"
        params: list[Any] = list(statuses)
        if kind is not None:
            sql += " AND kind=?"
            params.append(kind)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return [_row_to_info(r) for r in self._query(sql, [*params, int(limit)])]

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._query("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,))
        return bool(rows and rows[0][0])

    def metrics(self, job_id: str, wide: bool = False) -> pd.DataFrame:
        """Metrics of a job: long (step, key, value, t) or wide (one column per key, by step)."""
        import pandas as pd

        rows = self._query("SELECT step, key, value, t FROM job_metrics WHERE job_id=? "
                           "ORDER BY step, rowid", (job_id,))
        long = pd.DataFrame([tuple(r) for r in rows], columns=["step", "key", "value", "t"])
        if not wide:
            return long
        if long.empty:
            return pd.DataFrame(index=pd.Index([], name="step"))
        wide_df = long.pivot_table(index="step", columns="key", values="value", aggfunc="last")
        wide_df.columns.name = None
        return wide_df

    def logs(self, job_id: str, since: int = 0) -> list[str]:
        """Log lines of a job after the first ``since`` (so a poller can fetch only new ones)."""
        rows = self._query("SELECT text FROM job_logs WHERE job_id=? AND seq>? ORDER BY seq",
                           (job_id, int(since)))
        return [r[0] for r in rows]

    def log_entries(self, job_id: str) -> list[tuple[float, str]]:
        """Every log line of a job with its time: (Unix seconds, text)."""
        rows = self._query("SELECT t, text FROM job_logs WHERE job_id=? ORDER BY seq",
                           (job_id,))
        return [(r[0], r[1]) for r in rows]

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(**dict(r)) for r in self._query("SELECT * FROM workers")]

    def live_workers(self, stale_after: float = STALE_AFTER_S) -> list[WorkerInfo]:
        now = time.time()
        return [w for w in self.workers()
                if death_reason(w.id, w.pid, w.host, w.heartbeat_at, now, stale_after) is None]

    # -- writes by submitters -------------------------------------------------------------
    def submit(self, spec: JobSpec, reserved_for: str | None = None,
               launched_by: str | None = None, priority: int | None = None) -> str:
        """Queue a job; returns its id. The kind must be registered (see `spec.register_job`).

        ``reserved_for``: a worker id (e.g. "ray") kept on the queued job, so that workers taking
        the oldest queued job skip it and only a claim by its id runs it. ``launched_by``: who
        asked for it ("Fine-tune page", "CLI", ...), shown in the Jobs view. ``priority``: the
        spec's class priority unless given (`spec.USER_PRIORITY` or `BACKGROUND_PRIORITY`).
        """
        kind = get_job_kind(spec.kind).kind
        priority = spec.priority if priority is None else priority
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise MormError(f"priority must be an integer, got {priority!r}", field="priority")
        if launched_by is not None and not (isinstance(launched_by, str)
                                            and 0 < len(launched_by) <= 64):
            raise MormError(f"launched_by must be 1-64 characters of text, got {launched_by!r}",
                            field="launched_by")
        now = time.time()
        job_id = f"{sanitize_name(kind)}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        with self.ws.transaction() as con:
            con.execute("INSERT INTO jobs (id, kind, spec, status, created_at, worker_id, "
                        "priority, launched_by) VALUES (?,?,?,'queued',?,?,?,?)",
                        (job_id, kind, json.dumps(spec.to_dict()), now, reserved_for, priority,
                         launched_by))
        return job_id

    def queue(self) -> list[JobInfo]:
        """The queued jobs in the order workers take them: by priority, then oldest first
        (jobs reserved for another backend, such as Ray, come last: no local worker takes
        them)."""
        rows = self._query("SELECT * FROM jobs WHERE status='queued' ORDER BY worker_id IS NOT "
                           "NULL, priority DESC, created_at, rowid")
        return [_row_to_info(r) for r in rows]

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a job: a queued one at once; a running one is stopped by its worker (< 5 s).
        A finished job is left as it is."""
        now = time.time()
        with self.ws.transaction() as con:
            row = con.execute("SELECT status, attempts FROM jobs WHERE id=?",
                              (job_id,)).fetchone()
            if row is None:
                raise MormError(f"no job {job_id!r} in {self.ws.root}")
            if row[0] == "queued":  # one put back in the queue has run before
                con.execute("UPDATE jobs SET status='cancelled', cancel_requested=1, "
                            "finished_at=?, message=? WHERE id=?",
                            (now, "cancelled while waiting to run again" if row[1] else
                             "cancelled before it started", job_id))
            elif row[0] == "running":
                con.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
                self.write_log(con, job_id, "cancel requested")
        return self.get(job_id)

    # -- writes by workers and runners ----------------------------------------------------
    def claim(self, worker_id: str, kinds: Sequence[str] | None = None,
              job_id: str | None = None, min_priority: int | None = None) -> JobInfo | None:
        """Take the first queued job (of ``kinds``, of at least ``min_priority``, or job
        ``job_id``, when given) for ``worker_id``, by priority and then oldest first; None when
        there is none. Jobs reserved on submit are taken only by id.

        The select and the update share one BEGIN IMMEDIATE transaction, so two workers can
        never take the same job.
        """
        where, params = "status='queued'", []
        if kinds is not None:
            where += f" AND kind IN ({','.join('?' * len(kinds))})"
            params = list(kinds)
        if min_priority is not None:
            where += " AND priority>=?"
            params.append(int(min_priority))
        if job_id is not None:
            where += " AND id=?"
            params.append(job_id)
        else:
            where += " AND worker_id IS NULL"
        now = time.time()
        with self.ws.transaction() as con:
            row = con.execute(f"SELECT id FROM jobs WHERE {where} ORDER BY priority DESC, "
                              "created_at, rowid LIMIT 1", params).fetchone()
            if row is None:
                return None
            con.execute("UPDATE jobs SET status='running', worker_id=?, started_at=?, "
                        "heartbeat_at=?, attempts=attempts+1 WHERE id=? AND status='queued'",
                        (worker_id, now, now, row[0]))
            self.write_log(con, row[0], f"claimed by worker {worker_id}")
        return self.get(row[0])

    def heartbeat(self, worker: WorkerInfo, job_ids: Sequence[str] = ()) -> set[str]:
        """Register or refresh ``worker`` and its running jobs. Returns those of ``job_ids`` that
        are no longer this worker's to run (finished, or reaped while the worker was stalled)."""
        now = time.time()
        lost = set()
        with self.ws.transaction() as con:
            con.execute(
                "INSERT INTO workers VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
                "pid=excluded.pid, heartbeat_at=excluded.heartbeat_at, device=excluded.device, "
                "job_id=excluded.job_id",
                (worker.id, worker.pid, worker.host, worker.started_at, now, worker.device,
                 ",".join(job_ids) or None))
            for job_id in job_ids:
                cur = con.execute("UPDATE jobs SET heartbeat_at=? WHERE id=? AND worker_id=? "
                                  "AND status='running'", (now, job_id, worker.id))
                if cur.rowcount != 1:
                    lost.add(job_id)
        return lost

    def unregister_worker(self, worker_id: str) -> None:
        with self.ws.transaction() as con:
            con.execute("DELETE FROM workers WHERE id=?", (worker_id,))

    def set_progress(self, job_id: str, fraction: float, message: str = "") -> None:
        if not (isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"progress must be a number in [0, 1], got {fraction!r}")
        with self.ws.transaction() as con:
            con.execute("UPDATE jobs SET progress=?, message=? WHERE id=? AND status='running'",
                        (float(fraction), str(message), job_id))

    def set_runner(self, job_id: str, *, pid: int | None = None, device: str | None = None
                   ) -> None:
        with self.ws.transaction() as con:
            con.execute("UPDATE jobs SET pid=COALESCE(?, pid), device=COALESCE(?, device) "
                        "WHERE id=?", (pid, device, job_id))

    def add_metrics(self, job_id: str, step: int, values: dict[str, float]) -> None:
        now = time.time()
        rows = []
        for key, value in values.items():
            v = float(value)
            rows.append((job_id, int(step), str(key), None if math.isnan(v) else v, now))
        with self.ws.transaction() as con:
            con.executemany("INSERT INTO job_metrics VALUES (?,?,?,?,?)", rows)

    def add_log(self, job_id: str, text: str) -> None:
        with self.ws.transaction() as con:
            self.write_log(con, job_id, text)

    @staticmethod
    def write_log(con: sqlite3.Connection, job_id: str, text: str) -> None:
        """Append a log line inside the caller's write transaction (which makes the per-job
        sequence number safe to take as MAX + 1)."""
        con.execute("INSERT INTO job_logs SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ? "
                    "FROM job_logs WHERE job_id=?", (job_id, time.time(), str(text), job_id))

    def finish(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool:
        """Mark a job succeeded with its result; False when it was no longer this worker's."""
        return self._final(job_id, worker_id, "succeeded", result=json.dumps(result))

    def fail(self, job_id: str, worker_id: str, error: str) -> bool:
        return self._final(job_id, worker_id, "failed", error=error)

    def mark_cancelled(self, job_id: str, worker_id: str, note: str = "cancelled") -> bool:
        return self._final(job_id, worker_id, "cancelled", message=note)

    def requeue(self, job_id: str, worker_id: str, note: str) -> bool:
        """Put a job this worker runs back in the queue, to be run again (a PPO run resumes
        from its checkpoint, the demo build skips what it made): what a worker does when its
        app stops. False when the job was no longer this worker's."""
        with self.ws.transaction() as con:
            cur = con.execute(
                "UPDATE jobs SET status='queued', worker_id=NULL, started_at=NULL, "
                "heartbeat_at=NULL, pid=NULL, progress=0, message=? WHERE id=? AND "
                "worker_id=? AND status='running' AND NOT cancel_requested",
                (str(note), job_id, worker_id))
            if cur.rowcount:
                self.write_log(con, job_id, f"back in the queue: {note}")
            return cur.rowcount == 1

    def _final(self, job_id: str, worker_id: str, status: str, *, result: str | None = None,
               error: str | None = None, message: str | None = None) -> bool:
        with self.ws.transaction() as con:
            cur = con.execute(
                "UPDATE jobs SET status=?, finished_at=?, result=?, error=?, "
                "message=COALESCE(?, message), progress=CASE WHEN ?='succeeded' THEN 1.0 "
                "ELSE progress END WHERE id=? AND worker_id=? AND status='running'",
                (status, time.time(), result, error, message, status, job_id, worker_id))
            if cur.rowcount:
                self.write_log(con, job_id, status + (f": {error}" if error else ""))
            return cur.rowcount == 1

    # -- dead workers -----------------------------------------------------------------------
    def reap(self, stale_after: float = STALE_AFTER_S) -> list[str]:
        """Fail the running jobs of dead workers (cancelled if a cancel was pending), drop the
        dead workers' rows and the jobs' uncommitted output; returns the reaped job ids."""
        now = time.time()
        jobs = self._query(
            "SELECT j.id, j.worker_id, j.heartbeat_at, w.pid, w.host FROM jobs j "
            "LEFT JOIN workers w ON w.id = j.worker_id WHERE j.status='running'")
        dead_jobs = {r["id"]: (reason, r["heartbeat_at"]) for r in jobs
                     if (reason := death_reason(r["worker_id"], r["pid"], r["host"],
                                                r["heartbeat_at"], now, stale_after))}
        dead_workers = [(w.id, w.heartbeat_at) for w in self.workers()
                        if death_reason(w.id, w.pid, w.host, w.heartbeat_at, now, stale_after)]
        if not dead_jobs and not dead_workers:
            return []  # the common case: no write lock taken
        reaped = []
        with self.ws.transaction() as con:
            for job_id, (reason, beat) in dead_jobs.items():
                # Only if nothing moved since the read: a late heartbeat means it lives.
                cur = con.execute(
                    "UPDATE jobs SET status=CASE WHEN cancel_requested THEN 'cancelled' ELSE "
                    "'failed' END, error=?, finished_at=? WHERE id=? AND status='running' AND "
                    "heartbeat_at IS ?", (reason, now, job_id, beat))
                if cur.rowcount:
                    self.write_log(con, job_id, f"failed: {reason}")
                    # Still under the write lock: a runner's commit_artifact cannot interleave.
                    self.discard_staging(job_id)
                    reaped.append(job_id)
            for worker_id, beat in dead_workers:
                con.execute("DELETE FROM workers WHERE id=? AND heartbeat_at=?", (worker_id, beat))
        return reaped

    def sweep_staging(self) -> list[str]:
        """Remove the folders of finished jobs (left by a crash); returns their names."""
        root = self.ws.root / "jobs"
        if not root.is_dir():
            return []
        # Queued jobs count as live too: one may be claimed between this read and the sweep.
        live = {r[0] for r in self._query(
            "SELECT id FROM jobs WHERE status IN ('queued', 'running')")}
        removed = [d.name for d in root.iterdir() if d.is_dir() and d.name not in live]
        for name in removed:
            shutil.rmtree(root / name, ignore_errors=True)
        return removed
