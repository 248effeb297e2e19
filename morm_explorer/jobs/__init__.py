"""Jobs: long work (training, sampling, PPO, sweeps) run outside the app, with live progress.

A page builds a job spec, submits it to a backend and polls the backend for progress, metrics
and logs; it never knows where the job runs. The embedded backend (`LocalBackend`) keeps jobs
in the workspace database and runs them in a local worker process; `RayBackend` implements the
same `JobBackend` protocol on a Ray cluster.

- `spec`: job specs (one frozen dataclass per kind), the registry of kinds, `JobInfo`
- `builtin`: the diagnostic "sleep" job
- `context`: `JobContext`, what a runner reports through, and `JobCancelled`
- `store`: the SQLite tables: queue, metrics, logs, workers; claiming and reaping
- `run`, `worker`: running one job in a child process; the worker loop; `ensure_worker`
- `backend`: the `JobBackend` protocol, `LocalBackend` and `get_backend`
- `ray_backend`, `ray_entry`: `RayBackend` (Ray Jobs API) and the process each Ray job runs
- `cli`: the `morm worker` and `morm jobs` commands
"""

from morm_explorer.jobs.backend import JobBackend, LocalBackend, get_backend
from morm_explorer.jobs.context import JobCancelled, JobContext
from morm_explorer.jobs.spec import JobInfo, JobSpec, get_job_kind, register_job

__all__ = ["JobBackend", "JobCancelled", "JobContext", "JobInfo", "JobSpec", "LocalBackend",
           "get_backend", "get_job_kind", "register_job"]
