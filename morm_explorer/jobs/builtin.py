"""The built-in diagnostic job: `SleepJob`, kind "sleep".

It does no useful computation: it sleeps in steps, reporting progress, a metric and a log line
per step, and can stage and commit a small artifact or fail on purpose in the ways real jobs
fail (an exception, a crash of its process, a hang that ignores cancellation). It checks that
a worker runs, reports, cancels and records failures as it should: `morm jobs submit-sleep`
and the job-system tests use it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from typing import ClassVar

from morm_explorer.errors import MormError
from morm_explorer.jobs.context import JobContext
from morm_explorer.jobs.spec import JobSpec, register_job
from morm_explorer.workspace import atomic_write_text, sanitize_name

FAIL_MODES = ("raise", "kill", "hang")


@dataclass(frozen=True)
class SleepJob(JobSpec):
    """Diagnostic job: sleep ``seconds`` in ``steps`` steps, reporting each step."""

    kind: ClassVar[str] = "sleep"

    seconds: float = 2.0
    """total time to sleep"""
    steps: int = 10
    """number of steps, each reporting progress, a metric and a log line"""
    fail_at: int | None = None
    """step (0-based) at which to fail on purpose; None: never"""
    fail_mode: str = "raise"
    """how to fail: raise (an exception), kill (SIGKILL its own process, as the OOM killer
    would), hang (block without ever checking for cancellation)"""
    artifact: str | None = None
    """write a file per step into staging and commit it as diagnostics/<artifact>"""
    overwrite: bool = False
    """replace an existing diagnostics/<artifact>"""
    probe_device: bool = False
    """report the device the job would use (imports torch)"""

    def __post_init__(self) -> None:
        if not isinstance(self.seconds, int | float) or not 0 <= self.seconds <= 86400:
            raise MormError(f"seconds must be in [0, 86400], got {self.seconds!r}",
                            field="seconds")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 100_000:
            raise MormError(f"steps must be an integer in [1, 100000], got {self.steps!r}",
                            field="steps")
        if self.fail_at is not None and not (isinstance(self.fail_at, int)
                                             and 0 <= self.fail_at < self.steps):
            raise MormError(f"fail_at must be a step in [0, {self.steps - 1}] or None, got "
                            f"{self.fail_at!r}", field="fail_at")
        if self.fail_mode not in FAIL_MODES:
            raise MormError(f"fail_mode must be one of {', '.join(FAIL_MODES)}, got "
                            f"{self.fail_mode!r}", field="fail_mode")
        if self.artifact is not None:
            sanitize_name(self.artifact)


def _fail(spec: SleepJob, step: int) -> None:
    if spec.fail_mode == "raise":
        raise RuntimeError(f"diagnostic failure at step {step}")
    if spec.fail_mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    # "hang": stand-in for a runner stuck inside one long library call.
    while True:
        time.sleep(3600)


def run_sleep(spec: SleepJob, ctx: JobContext) -> dict:
    """Run a `SleepJob`; returns the steps done, the time slept and where it wrote."""
    if spec.artifact is not None:
        ctx.check_artifact("diagnostics", spec.artifact)
    device = ctx.device if spec.probe_device else None
    ctx.log(f"sleeping {spec.seconds:g} s in {spec.steps} steps"
            + (f" on {device}" if device else ""))
    dt = spec.seconds / spec.steps
    start = time.monotonic()
    for step in range(spec.steps):
        if spec.fail_at == step:
            _fail(spec, step)
        t0 = time.monotonic()
        while (left := dt - (time.monotonic() - t0)) > 0:
            ctx.check_cancelled()
            time.sleep(min(left, 0.05))
        if spec.artifact is not None:
            atomic_write_text(ctx.staging_dir / f"step-{step:05d}.json",
                              json.dumps({"step": step, "t": time.time()}))
        ctx.metrics(step, {"sleep/step_s": time.monotonic() - t0,
                           "sleep/elapsed_s": time.monotonic() - start})
        ctx.log(f"step {step + 1}/{spec.steps}")
        ctx.progress((step + 1) / spec.steps, f"step {step + 1}/{spec.steps}")
    result: dict = {"steps": spec.steps, "slept_s": round(time.monotonic() - start, 3)}
    if device:
        result["device"] = device
    if spec.artifact is not None:
        atomic_write_text(ctx.staging_dir / "config.json", json.dumps(spec.to_dict(), indent=2))
        result["artifact"] = str(ctx.commit_artifact("diagnostics", spec.artifact))
    return result


register_job(SleepJob.kind, SleepJob, run_sleep)
