"""What the Jobs view shows: the workspace's jobs as rows a person reads (place in line, an
estimate where there is one, who launched it) and their logs and results as plain lines.

Everything is read from the job store, so every tab and every process sees the same queue.
Nothing here changes a job; `backend.cancel` does.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from morm_explorer.jobs.spec import BACKGROUND_PRIORITY, JobInfo
from morm_explorer.jobs.store import JobStore

KIND_LABELS = {
    "prepare_demo": "demo build", "train_reward_model": "reward model training",
    "score_candidates": "scoring", "sample_candidates": "sampling", "ppo": "RL fine-tuning",
    "ppo_sweep": "weight sweep", "soup": "rewarded soup", "compare": "comparison",
    "sleep": "diagnostic sleep",
}
MIN_PROGRESS = 0.02  # below this a running job's rate says too little to extrapolate


@dataclass(frozen=True)
class JobRow:
    """One job as the Jobs view lists it. Times are Unix seconds; ``estimate_s`` is the time
    left of a running job, or the expected run time of a queued one, where one exists."""

    id: str
    title: str
    kind: str
    status: str
    place: int | None  # 1 = next to start; None unless queued for a local worker
    progress: float
    message: str
    launched_by: str
    created_at: float
    elapsed_s: float | None
    estimate_s: float | None
    estimate_basis: str
    background: bool


def job_title(info: JobInfo) -> str:
    """The name a person knows a job by: its run, model or set name, else its kind."""
    spec = info.spec or {}
    config = spec.get("config") if isinstance(spec.get("config"), dict) else {}
    name = config.get("name") or spec.get("name")
    label = KIND_LABELS.get(info.kind, info.kind)
    return f"{label} {name}" if name else label


def launcher(info: JobInfo) -> str:
    if info.launched_by:
        return info.launched_by
    return "demo build" if info.kind == "prepare_demo" else "not recorded"


def time_left(info: JobInfo, now: float) -> float | None:
    """Seconds a running job has left at its rate so far; None before it has a rate."""
    elapsed = info.elapsed(now)
    if info.status != "running" or elapsed is None or not MIN_PROGRESS <= info.progress < 1:
        return None
    return elapsed * (1 - info.progress) / info.progress


def expected_run_time(info: JobInfo, store: JobStore, device: str = "cpu") -> float | None:
    """A queued job's expected run time, for the kinds with a cost model (RL fine-tuning)."""
    if info.kind != "ppo":
        return None
    from morm_explorer.errors import MormError
    from morm_explorer.policy.cost import estimate_ppo
    from morm_explorer.policy.ppo_config import PPOConfig

    try:
        cfg = PPOConfig.from_dict(info.spec.get("config", {}))
        return float(estimate_ppo(cfg, device, workspace=store.ws).seconds)
    except (MormError, TypeError, ValueError, OSError):
        return None


def job_rows(store: JobStore, recent: int = 20, now: float | None = None,
             device: str = "cpu") -> list[JobRow]:
    """The running jobs, then the queue in the order workers take it, then the ``recent``
    newest finished jobs."""
    now = time.time() if now is None else now
    running = store.list(status="running", limit=1000)
    queued = store.queue()
    finished = store.list(status=("succeeded", "failed", "cancelled"), limit=recent)
    place = {j.id: i for i, j in enumerate((j for j in queued if j.worker_id is None), 1)}
    rows = []
    for j in [*running, *queued, *finished]:
        if j.status == "running":
            estimate, basis = time_left(j, now), "left, at its rate so far"
        elif j.status == "queued":
            estimate, basis = expected_run_time(j, store, device), "to run, estimated"
        else:
            estimate, basis = None, ""
        rows.append(JobRow(
            id=j.id, title=job_title(j), kind=j.kind, status=j.status, place=place.get(j.id),
            progress=j.progress, message=j.error if j.status == "failed" else j.message,
            launched_by=launcher(j), created_at=j.created_at, elapsed_s=j.elapsed(now),
            estimate_s=estimate, estimate_basis=basis if estimate is not None else "",
            background=j.priority <= BACKGROUND_PRIORITY))
    return rows


def place_in_line(store: JobStore, job_id: str) -> int | None:
    """Where a queued job stands in the local queue (1: next to start); None when it is not
    waiting there."""
    waiting = [j.id for j in store.queue() if j.worker_id is None]
    return waiting.index(job_id) + 1 if job_id in waiting else None


def active_jobs(store: JobStore, launched_by: str | None = None,
                kinds: set[str] | None = None) -> list[JobInfo]:
    """Queued and running jobs, newest first, optionally those launched by ``launched_by``
    and of ``kinds``: how a page finds the jobs it launched in another tab."""
    return [j for j in store.list(status=("queued", "running"), limit=1000)
            if (launched_by is None or j.launched_by == launched_by)
            and (kinds is None or j.kind in kinds)]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _compact(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_log_line(text: str) -> str:
    """A log line as a person reads it: a ``sample: {json}`` line becomes "sample, step N:
    prompt -> response (scores)"; a line that is a JSON object becomes "key: value" pairs."""
    head, sep, rest = text.partition(": ")
    payload = rest if sep and head.isidentifier() else text
    if not payload.lstrip().startswith("{"):
        return text
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError:
        return text
    if not isinstance(obj, dict):
        return text
    if head == "sample" and "response" in obj:
        scores = ", ".join(f"{k} {v:.2f}" for k, v in (obj.get("scores") or {}).items()
                           if isinstance(v, int | float))
        return (f"sample, step {obj.get('step', '?')}: {_compact(obj.get('prompt', ''), 60)}"
                f" -> {_compact(obj['response'], 100)}" + (f" ({scores})" if scores else ""))
    pairs = "; ".join(f"{k}: {_compact(v, 60)}" for k, v in obj.items())
    return f"{head}: {pairs}" if payload is rest else pairs


def format_logs(store: JobStore, job_id: str, last: int = 40) -> str:
    """The last ``last`` log lines of a job, each with its time, readable."""
    entries = store.log_entries(job_id)[-last:]
    return "\n".join(f"{time.strftime('%H:%M:%S', time.localtime(t))}  "
                     f"{format_log_line(text)}" for t, text in entries)


def result_lines(result: dict[str, Any] | None) -> list[str]:
    """A finished job's result as "key: value" lines (nested objects one level flattened)."""
    lines = []
    for key, value in (result or {}).items():
        if isinstance(value, dict):
            lines += [f"{key} · {k}: {_compact(v)}" for k, v in value.items()]
        elif isinstance(value, float):
            lines.append(f"{key}: {value:.4g}")
        else:
            lines.append(f"{key}: {_compact(value)}")
    return lines
