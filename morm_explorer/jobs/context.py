"""What a runner gets to talk to the outside: `JobContext`, and `JobCancelled`.

A runner reports progress, metrics and log lines through its context, asks it which device to
use, writes its artifact into ``ctx.staging_dir`` and publishes it with `commit_artifact`, one
atomic rename. Uncommitted output is thrown away when the job ends, however it ends, so a
failed or killed job leaves nothing half-written in the workspace.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from functools import cached_property
from pathlib import Path

from morm_explorer.errors import MormError
from morm_explorer.jobs.spec import JobSpec
from morm_explorer.jobs.store import JobStore

# How often `cancelled()` really reads the database; runners may call it every step.
CANCEL_CHECK_S = 0.5


class JobCancelled(Exception):
    """Raised inside a runner by `JobContext.check_cancelled` once a cancel is requested."""


def detect_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu"; ``$MORM_DEVICE`` overrides (e.g. to keep a
    shared GPU free). Imports torch, so call it only where a job will use it anyway."""
    forced = os.environ.get("MORM_DEVICE", "").strip()
    if forced:
        return forced
    try:
        import torch
    except (ImportError, OSError):  # OSError: a torch build whose CUDA libraries are missing
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


class JobContext:
    """The running job ``job_id`` of worker ``worker_id``, as its runner sees it."""

    def __init__(self, store: JobStore, job_id: str, spec: JobSpec, worker_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.spec = spec
        self.worker_id = worker_id
        self.artifacts: list[str] = []
        self._cancelled = False
        self._checked_at = float("-inf")

    # -- reporting ------------------------------------------------------------------------
    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1]; also a cancellation point (raises `JobCancelled`)."""
        self.store.set_progress(self.job_id, min(max(float(fraction), 0.0), 1.0), message)
        self.check_cancelled()

    def log(self, text: str) -> None:
        self.store.add_log(self.job_id, text)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Record metrics of one step, keyed by prefixed names such as ``loss/total``."""
        bad = [k for k, v in values.items()
               if not isinstance(k, str) or not k or isinstance(v, bool)
               or not isinstance(v, int | float)]
        if bad:
            raise ValueError(f"metric keys must be non-empty text and values numbers; bad: {bad}")
        self.store.add_metrics(self.job_id, step, values)

    @cached_property
    def device(self) -> str:
        """"cuda" or "cpu" (see `detect_device`); recorded on the job when first asked."""
        device = detect_device()
        self.store.set_runner(self.job_id, device=device)
        return device

    # -- cancellation ---------------------------------------------------------------------
    def cancelled(self) -> bool:
        """Whether the job should stop: a cancel was requested or the job was taken from this
        worker. Reads the database at most every `CANCEL_CHECK_S`, so it is cheap to call."""
        now = time.monotonic()
        if not self._cancelled and now - self._checked_at >= CANCEL_CHECK_S:
            self._checked_at = now
            con = self.store.ws.connect()
            try:
                row = con.execute("SELECT cancel_requested, status, worker_id FROM jobs "
                                  "WHERE id=?", (self.job_id,)).fetchone()
            finally:
                con.close()
            self._cancelled = (row is None or bool(row[0]) or row[1] != "running"
                               or row[2] != self.worker_id)
        return self._cancelled

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    # -- artifacts ------------------------------------------------------------------------
    @property
    def staging_dir(self) -> Path:
        """An empty-at-start folder for this job's output (made on first use, and again after
        each commit so that a job can publish several artifacts)."""
        path = self.store.staging_dir(self.job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def writes_into(self, folder: Path) -> None:
        """Say that the job writes into ``folder`` outside its staging area: if it dies, what
        it was writing there (``.*.tmp-*``) is removed with its staging folder."""
        self.store.note_folder(self.job_id, folder)

    def check_artifact(self, group: str, name: str, overwrite: bool | None = None) -> Path:
        """Fail early (before the work) if `commit_artifact` would refuse ``group/name``;
        returns the artifact's future folder."""
        target = self.store.ws.artifact_dir(group, name)
        if overwrite is None:
            overwrite = bool(getattr(self.spec, "overwrite", False))
        if target.exists() and not overwrite:
            raise MormError(f"{group}/{target.name} already exists in {self.store.ws.root}; "
                            "choose another name or allow overwriting", field="overwrite")
        return target

    def commit_artifact(self, group: str, name: str, overwrite: bool | None = None) -> Path:
        """Publish the staging folder as ``<workspace>/<group>/<name>`` by one rename.

        An existing artifact of that name is replaced only when ``overwrite`` is true (default:
        the spec's own ``overwrite`` field, else False). The rename happens inside a database
        write transaction that checks the job is still this worker's, so a job that was reaped
        or cancelled meanwhile can never publish.
        """
        ws = self.store.ws
        staging = self.store.staging_dir(self.job_id)
        old = None
        with ws.transaction() as con:
            row = con.execute("SELECT status, worker_id, cancel_requested FROM jobs WHERE id=?",
                              (self.job_id,)).fetchone()
            if row is None or row[0] != "running" or row[1] != self.worker_id or row[2]:
                raise JobCancelled(f"job {self.job_id} was cancelled or is no longer running; "
                                   f"{group}/{name} was not committed")
            if not staging.is_dir():
                raise MormError(f"job {self.job_id} has nothing staged to commit as "
                                f"{group}/{name}")
            target = self.check_artifact(group, name, overwrite)
            if target.exists():  # allowed to overwrite: move the old one aside, drop it after
                old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
                os.rename(target, old)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, target)
            except OSError:
                if old is not None:  # put the previous artifact back
                    os.rename(old, target)
                raise
            JobStore.write_log(con, self.job_id, f"committed {group}/{target.name}")
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.artifacts.append(f"{group}/{target.name}")
        return target
