"""What a job is: typed job specs, the registry of job kinds, and `JobInfo`, a job's state.

A job kind is a frozen dataclass subclassing `JobSpec` with a class attribute ``kind`` and a
runner ``runner(spec, ctx) -> dict``; the module that defines it calls `register_job` at import.
Workers import every module in `JOB_MODULES` so that they know every kind. `JobInfo` is what
every backend (the local SQLite one now, Ray later) reports about a submitted job, so that
pages never depend on where a job runs.

Nothing here runs a job; see `worker` for that and `store` for where jobs are kept.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from morm_explorer.errors import MormError

if TYPE_CHECKING:
    from morm_explorer.jobs.context import JobContext

log = logging.getLogger(__name__)

# Modules whose import registers job kinds; a module that is absent (an optional part not
# installed) is skipped with a warning so that the other kinds still run.
JOB_MODULES: list[str] = [
    "morm_explorer.jobs.builtin", "morm_explorer.reward.jobs", "morm_explorer.scoring",
    "morm_explorer.policy.jobs", "morm_explorer.policy.ppo_jobs", "morm_explorer.policy.soup",
    "morm_explorer.policy.sweep", "morm_explorer.evaluation.compare", "morm_explorer.demo_jobs",
]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# Workers take queued jobs by priority, then in order of submission; a user's job may run
# beside a background one (see `worker`), so that what a user launches never waits for it.
USER_PRIORITY = 1
BACKGROUND_PRIORITY = 0

Runner = Callable[["JobSpec", "JobContext"], dict]


@dataclass(frozen=True)
class JobSpec:
    """Base of every job spec: a frozen dataclass of JSON-able fields.

    Subclasses set ``kind`` and validate their fields in ``__post_init__``. A spec whose
    fields are nested dataclasses overrides `from_dict` to rebuild them.
    """

    kind: ClassVar[str] = ""
    priority: ClassVar[int] = USER_PRIORITY  # BACKGROUND_PRIORITY for work nobody waits on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def runs_on_any_node(self) -> bool:
        """Whether a Ray cluster may run this job on a node without the workspace (see
        `jobs.ray_remote`); False for a job that orchestrates other jobs, which runs where the
        workspace is."""
        return True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        if not isinstance(data, dict):
            raise MormError(f"a {cls.kind or cls.__name__} job spec must be an object, got "
                            f"{type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MormError(f"unknown field(s) {', '.join(unknown)} for a {cls.kind} job; "
                            f"expected some of {', '.join(sorted(names))}", field=unknown[0])
        return cls(**data)


class JobKind(NamedTuple):
    kind: str
    spec_cls: type[JobSpec]
    runner: Runner


_REGISTRY: dict[str, JobKind] = {}


def register_job(kind: str, spec_cls: type[JobSpec], runner: Runner) -> None:
    """Make job kind ``kind`` known: its spec class and the function that runs it."""
    if getattr(spec_cls, "kind", None) != kind:
        raise ValueError(f"{spec_cls.__name__}.kind is {spec_cls.kind!r}, registered as {kind!r}")
    old = _REGISTRY.get(kind)
    # Re-importing a module registers the same names again; only a different class is a clash.
    if old is not None and (old.spec_cls.__qualname__, old.spec_cls.__module__) != (
            spec_cls.__qualname__, spec_cls.__module__):
        raise ValueError(f"job kind {kind!r} is already registered by {old.spec_cls.__module__}")
    _REGISTRY[kind] = JobKind(kind, spec_cls, runner)


def load_job_modules(modules: list[str] | None = None) -> list[str]:
    """Import the modules that register job kinds; returns the ones that could not be imported."""
    missing = []
    for name in JOB_MODULES if modules is None else modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            log.warning("job module %s not loaded (%s): its job kinds are unavailable", name, e)
            missing.append(name)
    return missing


def known_kinds() -> list[str]:
    load_job_modules()
    return sorted(_REGISTRY)


def get_job_kind(kind: str) -> JobKind:
    """The registered kind ``kind``; raises `MormError` naming the known kinds otherwise."""
    if kind not in _REGISTRY:
        load_job_modules()
    if kind not in _REGISTRY:
        raise MormError(f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind]


def spec_from_dict(kind: str, data: dict[str, Any]) -> JobSpec:
    return get_job_kind(kind).spec_cls.from_dict(data)


@dataclass(frozen=True)
class JobInfo:
    """A submitted job as a backend reports it. Times are Unix seconds; ``progress`` is 0..1."""

    id: str
    kind: str
    spec: dict[str, Any]
    status: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    heartbeat_at: float | None = None
    progress: float = 0.0
    message: str = ""
    error: str | None = None
    result: dict[str, Any] | None = None
    cancel_requested: bool = False
    attempts: int = 0
    device: str | None = None
    pid: int | None = None
    priority: int = USER_PRIORITY
    launched_by: str | None = None  # "Fine-tune page", "CLI", "demo build", ...

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"job status must be one of {STATUSES}, got {self.status!r}")

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES

    def elapsed(self, now: float) -> float | None:
        """Seconds the job has run (until it finished, else until ``now``)."""
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobInfo:
        return cls(**data)
