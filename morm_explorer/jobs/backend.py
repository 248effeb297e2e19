"""Where jobs run, behind one interface: the `JobBackend` protocol and `LocalBackend`.

Pages and commands talk only to a `JobBackend`: submit a spec, then poll `get`, `metrics` and
`logs`, and `cancel`. `LocalBackend` keeps jobs in the workspace database and runs them in a
local worker process, started on demand. `ray_backend.RayBackend` keeps them in the same
database and runs them as Ray jobs, on nodes that need no access to the workspace;
`get_backend` chooses between the two, so no page knows which one runs its jobs. Both derive
from `StoreBackend`, which reads metrics and logs and waits on the store they share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from morm_explorer.errors import MormError
from morm_explorer.jobs.spec import JobInfo, JobSpec
from morm_explorer.jobs.store import STALE_AFTER_S, JobStore, WorkerInfo
from morm_explorer.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd


@runtime_checkable
class JobBackend(Protocol):
    """What every job backend offers. Job ids are strings; times are Unix seconds."""

    def submit(self, spec: JobSpec) -> str:
        """Queue a job; returns its id."""
        ...

    def get(self, job_id: str) -> JobInfo:
        """The job's current state (raises `MormError` for an unknown id)."""
        ...

    def list(self, status: str | Sequence[str] | None = None, kind: str | None = None,
             limit: int = 100) -> list[JobInfo]:
        """Jobs, newest first."""
        ...

    def metrics(self, job_id: str, wide: bool = False) -> pd.DataFrame:
        """Long (step, key, value, t) or wide (index step, one column per metric key)."""
        ...

    def logs(self, job_id: str, since: int = 0) -> list[str]:
        """Log lines after the first ``since``."""
        ...

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel: a queued job at once, a running one within 5 s."""
        ...

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> JobInfo:
        """Block until the job is finished; raises `MormError` after ``timeout`` seconds."""
        ...


AUTO_IDLE_EXIT_S = 600.0


class StoreBackend:
    """What every backend here shares: its jobs are kept in the workspace's job store, so
    metrics, logs and waiting read the same tables whoever runs the jobs. Subclasses define
    `submit`, `get`, `list` and `cancel`."""

    def __init__(self, ws: Workspace, stale_after: float = STALE_AFTER_S,
                 launched_by: str | None = None) -> None:
        self.ws = ws
        self.store = JobStore(ws)
        self.stale_after = stale_after
        self.launched_by = launched_by  # recorded on every job submitted here

    def get(self, job_id: str) -> JobInfo:
        raise NotImplementedError

    def metrics(self, job_id: str, wide: bool = False) -> pd.DataFrame:
        return self.store.metrics(job_id, wide=wide)

    def logs(self, job_id: str, since: int = 0) -> list[str]:
        return self.store.logs(job_id, since=since)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> JobInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (info := self.get(job_id)).done:
            if deadline is not None and time.monotonic() > deadline:
                raise MormError(f"job {job_id} is still {info.status} after {timeout:g} s")
            time.sleep(poll)
        return info


class LocalBackend(StoreBackend):
    """Jobs in the workspace database, run by local worker processes (`morm worker`).

    ``start_worker``: start a worker on submit when none is alive; ``owner_pid``: the process
    whose end ends a worker started here (the app's; see `worker.ensure_worker`). Every read
    first reaps the jobs of dead workers, so a poll shows a killed worker's job as failed within
    seconds (on this machine) or ``stale_after`` seconds (elsewhere).
    """

    def __init__(self, ws: Workspace, start_worker: bool = True,
                 stale_after: float = STALE_AFTER_S, launched_by: str | None = None,
                 owner_pid: int | None = None) -> None:
        super().__init__(ws, stale_after, launched_by)
        self.start_worker = start_worker
        self.owner_pid = owner_pid

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.ws.root)!r})"

    def submit(self, spec: JobSpec) -> str:
        job_id = self.store.submit(spec, launched_by=self.launched_by)
        if self.start_worker:
            self.ensure_worker()
        return job_id

    def ensure_worker(self) -> bool:
        """Start a worker unless one is alive; returns whether one was started."""
        # Imported here: `python -m morm_explorer.jobs.worker` must not find it imported.
        from morm_explorer.jobs.worker import ensure_worker

        # A worker started on demand leaves after 10 idle minutes, and with its owner (the app)
        # when it has one; the next submit starts another. `morm worker` run by hand stays
        # until stopped. $MORM_WORKER_IDLE_EXIT shortens the wait (tests: a worker must not
        # outlive its test).
        idle = float(os.environ.get("MORM_WORKER_IDLE_EXIT") or AUTO_IDLE_EXIT_S)
        return ensure_worker(self.ws, stale_after=self.stale_after, idle_exit=idle,
                             owner_pid=self.owner_pid)

    def workers(self) -> list[WorkerInfo]:
        """The live workers."""
        self.store.reap(self.stale_after)
        return self.store.live_workers(self.stale_after)

    def get(self, job_id: str) -> JobInfo:
        self.store.reap(self.stale_after)
        return self.store.get(job_id)

    def list(self, status: str | Sequence[str] | None = None, kind: str | None = None,
             limit: int = 100) -> list[JobInfo]:
        self.store.reap(self.stale_after)
        return self.store.list(status=status, kind=kind, limit=limit)

    def cancel(self, job_id: str) -> JobInfo:
        self.store.cancel(job_id)
        return self.get(job_id)


BACKENDS = ("local", "ray")


def retry(backend: JobBackend, job_id: str) -> str:
    """Submit a failed or cancelled job's spec again; returns the new job's id. Kinds that
    checkpoint (PPO) resume from their last checkpoint; others start over."""
    from morm_explorer.jobs.spec import load_job_modules, spec_from_dict

    info = backend.get(job_id)
    if info.status not in ("failed", "cancelled"):
        raise MormError(f"job {job_id} is {info.status}; only a failed or cancelled job can be "
                        "retried", field="job_id")
    load_job_modules()
    return backend.submit(spec_from_dict(info.kind, info.spec))


def get_backend(ws: Workspace, start_worker: bool = True, backend: str | None = None,
                launched_by: str | None = None, owner_pid: int | None = None) -> JobBackend:
    """The backend for ``ws``: ``backend`` ("local" or "ray") if given, else
    ``$MORM_BACKEND``, else "ray" when ``$RAY_ADDRESS`` is set, else "local".

    ``launched_by`` is recorded on the jobs submitted through it. ``start_worker`` and
    ``owner_pid`` apply to the local backend only. The Ray backend connects to
    ``$RAY_ADDRESS`` on first use, not here.
    """
    name = backend or os.environ.get("MORM_BACKEND", "").strip() or (
        "ray" if os.environ.get("RAY_ADDRESS", "").strip() else "local")
    if name == "local":
        return LocalBackend(ws, start_worker=start_worker, launched_by=launched_by,
                            owner_pid=owner_pid)
    if name == "ray":
        from morm_explorer.jobs.ray_backend import RayBackend

        ray = RayBackend(ws)
        ray.launched_by = launched_by
        return ray
    raise MormError(f"unknown job backend {name!r} (from MORM_BACKEND or the backend argument)"
                    f"; expected one of {', '.join(BACKENDS)}", field="backend")
