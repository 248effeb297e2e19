"""The job commands: ``morm worker`` and ``morm jobs list|queue|show|logs|cancel|retry|
submit-sleep``.

`add_job_commands` adds them to the main parser's command group. Each command returns its exit
code: 0 on success, 1 when a job it waited for did not succeed; bad input raises `MormError`.
`submit_job` is what the ``--submit`` flag of the other commands calls.
The ``jobs`` commands use the workspace's backend (`backend.get_backend`): the local one, or
Ray when ``$MORM_BACKEND=ray`` or ``$RAY_ADDRESS`` is set; they list and show jobs of both.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from morm_explorer.errors import MormError

if TYPE_CHECKING:
    from morm_explorer.jobs.backend import JobBackend
    from morm_explorer.jobs.spec import JobSpec
    from morm_explorer.workspace import Workspace


def _workspace(args: argparse.Namespace) -> Workspace:
    from morm_explorer.workspace import Workspace

    return Workspace(getattr(args, "workspace", None))


def _backend(args: argparse.Namespace, start_worker: bool = False) -> JobBackend:
    """The workspace's backend: local, or Ray when $MORM_BACKEND or $RAY_ADDRESS says so."""
    from morm_explorer.jobs.backend import get_backend

    return get_backend(_workspace(args), start_worker=start_worker, launched_by="CLI")


def submit_job(ws: Workspace, spec: JobSpec, where: str = "") -> int:
    """Submit ``spec`` to the workspace's backend and print its id and how to follow it
    (``morm jobs show``, or ``where`` too when given); returns the exit code, 0."""
    from morm_explorer.jobs.backend import get_backend

    job_id = get_backend(ws, launched_by="CLI").submit(spec)
    print(f"submitted job {job_id}; follow it with `morm jobs show {job_id}`"
          + (f" or {where}" if where else ""))
    return 0


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_worker(args: argparse.Namespace) -> int:
    from morm_explorer.jobs.worker import run_worker

    if args.poll <= 0:
        raise MormError(f"--poll must be positive, got {args.poll}", field="poll")
    n = run_worker(_workspace(args), once=args.once, poll=args.poll, idle_exit=args.idle_exit)
    print(f"worker ran {n} job(s)")
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    jobs = _backend(args).list(status=args.status, kind=args.kind, limit=args.limit)
    if args.json:
        print(json.dumps([j.to_dict() for j in jobs], indent=2))
        return 0
    if not jobs:
        print("no jobs yet")
    for j in jobs:
        print(f"{j.id:36s} {j.kind:10s} {j.status:9s} {100 * j.progress:5.1f}%  "
              f"{_fmt_time(j.created_at)}  {j.error or j.message}")
    return 0


def cmd_jobs_queue(args: argparse.Namespace) -> int:
    """What the app's Jobs page lists: running jobs, the queue in order, recent finished."""
    from morm_explorer.jobs.overview import format_duration, job_rows

    rows = job_rows(_backend(args).store, recent=args.recent)
    if not rows:
        print("no jobs yet")
    for r in rows:
        place = {"running": "running", "queued": f"#{r.place}" if r.place else "on Ray"}.get(
            r.status, r.status)
        estimate = format_duration(r.estimate_s)
        estimate = (f"{estimate} left" if r.status == "running" else f"~{estimate} to run") \
            if estimate else ""
        print(f"{place:10s} {100 * r.progress:5.1f}%  {r.title[:40]:40s} {estimate:16s} "
              f"{r.launched_by[:22]:22s} {r.id}")
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    backend = _backend(args)
    j = backend.get(args.job_id)
    if args.json:
        print(json.dumps(j.to_dict(), indent=2))
        return 0
    print(f"job {j.id} ({j.kind}): {j.status}, {100 * j.progress:.1f}% {j.message}")
    print(f"  created {_fmt_time(j.created_at)}, started {_fmt_time(j.started_at)}, "
          f"finished {_fmt_time(j.finished_at)}")
    print(f"  worker {j.worker_id or '-'}, runner pid {j.pid or '-'}, device {j.device or '-'}, "
          f"attempts {j.attempts}" + (", cancel requested" if j.cancel_requested else ""))
    print(f"  launched by {j.launched_by or '-'}, priority {j.priority}")
    print(f"  spec {json.dumps(j.spec)}")
    if j.error:
        print(f"  error: {j.error}")
    if j.result is not None:
        print(f"  result {json.dumps(j.result)}")
    wide = backend.metrics(j.id, wide=True)
    if len(wide):
        print(f"  last metrics (step {wide.index[-1]}):")
        for key, value in wide.iloc[-1].items():
            print(f"    {key:32s} {value:.6g}")
    return 0


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    backend = _backend(args)
    seen = 0
    while True:
        done = not args.follow or backend.get(args.job_id).done  # read before the last lines
        lines = backend.logs(args.job_id, since=seen)
        for line in lines:
            print(line, flush=True)
        seen += len(lines)
        if done:
            return 0
        time.sleep(0.5)


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    backend = _backend(args)
    info = backend.cancel(args.job_id)
    if args.wait and not info.done:
        info = backend.wait(args.job_id, timeout=args.timeout)
    print(f"job {info.id}: {info.status}" + ("" if info.done else " (cancel requested)"))
    return 0


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    from morm_explorer.jobs.backend import retry

    new_id = retry(_backend(args, start_worker=True), args.job_id)
    print(f"submitted job {new_id} with the spec of {args.job_id} (a PPO run resumes from its "
          "last checkpoint)")
    return 0


def cmd_jobs_submit_sleep(args: argparse.Namespace) -> int:
    from morm_explorer.jobs.builtin import SleepJob

    spec = SleepJob(seconds=args.seconds, steps=args.steps, fail_at=args.fail_at,
                    fail_mode=args.fail_mode, artifact=args.artifact, overwrite=args.overwrite,
                    probe_device=args.probe_device)
    backend = _backend(args, start_worker=not args.no_worker)
    job_id = backend.submit(spec)
    print(job_id, flush=True)
    if not args.wait:
        return 0
    info = backend.wait(job_id, timeout=args.timeout)
    print(f"job {job_id}: {info.status}" + (f": {info.error}" if info.error else "")
          + (f" {json.dumps(info.result)}" if info.result else ""))
    return 0 if info.status == "succeeded" else 1


def add_job_commands(groups: argparse._SubParsersAction) -> None:
    """Add ``morm worker`` and ``morm jobs ...`` to the main parser's command group."""
    from morm_explorer.jobs.builtin import FAIL_MODES
    from morm_explorer.jobs.spec import STATUSES

    p = groups.add_parser("worker", help="run queued jobs by priority (a user's beside the "
                          "background demo build), until stopped")
    p.add_argument("--once", action="store_true", help="exit as soon as the queue is empty")
    p.add_argument("--poll", type=float, default=1.0,
                   help="seconds between queue checks (default: %(default)s)")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without a job")
    p.set_defaults(func=cmd_worker)

    jobs = groups.add_parser("jobs", help="jobs: list, queue, show, logs, cancel, retry, "
                             "submit-sleep")
    sub = jobs.add_subparsers(dest="command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="jobs in the workspace, newest first")
    p.add_argument("--status", choices=STATUSES, help="only jobs with this status")
    p.add_argument("--kind", help="only jobs of this kind")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default: "
                   "%(default)s)")
    p.add_argument("--json", action="store_true", help="print the jobs as JSON")
    p.set_defaults(func=cmd_jobs_list)

    p = sub.add_parser("queue", help="running jobs, the queue in the order it runs (with "
                       "places, estimates and who launched each), then recent finished jobs")
    p.add_argument("--recent", type=int, default=10, help="finished jobs shown (default: "
                   "%(default)s)")
    p.set_defaults(func=cmd_jobs_queue)

    p = sub.add_parser("show", help="one job: state, spec, error or result, last metrics")
    p.add_argument("job_id", help="job id (from `morm jobs list`)")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.set_defaults(func=cmd_jobs_show)

    p = sub.add_parser("logs", help="a job's log lines")
    p.add_argument("job_id", help="job id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    p.set_defaults(func=cmd_jobs_logs)

    p = sub.add_parser("cancel", help="cancel a queued or running job (stops within 5 s)")
    p.add_argument("job_id", help="job id")
    p.add_argument("--wait", action="store_true", help="wait until the job has stopped")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait at most")
    p.set_defaults(func=cmd_jobs_cancel)

    p = sub.add_parser("retry", help="submit a failed or cancelled job again (PPO resumes "
                       "from its checkpoint)")
    p.add_argument("job_id", help="job id")
    p.set_defaults(func=cmd_jobs_retry)

    p = sub.add_parser("submit-sleep", help="submit the diagnostic sleep job (checks workers)")
    p.add_argument("--seconds", type=float, default=2.0, help="total sleep (default: "
                   "%(default)s)")
    p.add_argument("--steps", type=int, default=10, help="steps, each reporting progress")
    p.add_argument("--fail-at", type=int, help="fail on purpose at this step")
    p.add_argument("--fail-mode", choices=FAIL_MODES, default="raise",
                   help="how to fail: raise, kill (SIGKILL itself), hang (ignore cancel)")
    p.add_argument("--artifact", help="stage files and commit them as diagnostics/<name>")
    p.add_argument("--overwrite", action="store_true", help="replace an existing artifact")
    p.add_argument("--probe-device", action="store_true", help="report cuda or cpu")
    p.add_argument("--wait", action="store_true", help="wait for the job; exit 1 unless it "
                   "succeeds")
    p.add_argument("--timeout", type=float, help="seconds to wait at most")
    p.add_argument("--no-worker", action="store_true", help="only queue it; start no local "
                   "worker")
    p.set_defaults(func=cmd_jobs_submit_sleep)
