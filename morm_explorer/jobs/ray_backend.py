"""The Ray backend: the same job specs, run on a Ray cluster through the Ray Jobs API.

`RayBackend` keeps every job in the workspace's job store, as `LocalBackend` does, so pages and
`morm jobs` read progress, metrics and logs from the same tables whichever backend ran a job.
What differs is who runs it. `submit` records the job (queued, reserved for Ray so that no
local worker takes it), then submits ``python -m morm_explorer.jobs.ray_entry --workspace ROOT
--job-id ID`` as a Ray job whose submission id is the job id. Its entrypoint runs on the
cluster's head node, which is the app's machine (or one that mounts its workspace): it claims
the job, heartbeats it and writes the outcome into the store, on the machine that holds it.

By default (the remote mode) the work itself runs elsewhere: the entry sends the job as a Ray
task to any node whose resources fit it (1 CPU, the GPU its device asks for, custom
``resources``, a ``prefer_node``), and that node needs no access to the app's disk. Inputs
travel by content digest through a storage URI (``storage``: ``file://`` on shared storage,
``s3://``, ``gs://``) or, without one, through Ray's object store; progress, logs, metrics and
checkpoints come back through an actor living with the app; the job's outputs come back the
same way and are committed into the workspace atomically by the app's side. A task whose node
dies is retried on another that fits, from its last checkpoint. Code travels with the Ray job's
``runtime_env`` (this ``morm_explorer`` as a py_module, and with ``pip=True`` the app's pinned
dependencies). See `ray_remote` and `transfer`.

``shared_workspace=True`` (or ``$MORM_RAY_SHARED_WORKSPACE=1``) keeps the older mode for a
one-node cluster: the job runs inside its entry process, writing straight into the workspace.

A job never stays "running" after its Ray job ended: the entry process heartbeats like a local
worker (`JobStore.reap` fails the job of a silent one), and `get` and `list` compare the store
with Ray's status, ending as failed (or cancelled, if asked) a job whose Ray job ended without
recording anything: killed, failed to start, or lost by a restarted cluster.

``ray[default]`` is an optional dependency (``pip install 'morm-explorer[ray]'``), imported
only here and only when a Ray backend talks to its cluster. Ray has no authentication of its
own: keep its ports on 127.0.0.1 or a private network (see the README).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morm_explorer.errors import MormError
from morm_explorer.jobs.backend import StoreBackend
from morm_explorer.jobs.spec import JobInfo, JobSpec
from morm_explorer.jobs.store import STALE_AFTER_S, JobStore
from morm_explorer.workspace import Workspace

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)

# The worker id of a job queued for Ray; the entry process claims it as "ray-w-<host>-...".
RAY_WORKER = "ray"
# Settings of the submitting process that its jobs keep on the cluster (offline hubs). Paths
# and $MORM_DEVICE describe this machine, not the nodes: pass those in ``runtime_env``.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
# A job Ray has never heard of is left alone this long: it may be between our two submits.
SUBMIT_GRACE_S = 60.0
# Ray's message for a failed entrypoint carries up to 20,000 characters of its log.
MAX_ERROR_CHARS = 2000


def spec_device(spec: JobSpec) -> str | None:
    """The device a spec asks for: its ``device`` field, else that of a config field that is a
    dict (as `TrainRewardModelJob.config`); None for a spec without one."""
    data = spec.to_dict()
    for fields in (data, *(v for v in data.values() if isinstance(v, dict))):
        if isinstance(fields.get("device"), str):
            return fields["device"]
    return None


def pinned_requirements() -> list[str]:
    """The app's requirements (requirements.txt beside the package) pinned to the versions
    installed here (``name==version``), for a node's ``pip`` runtime environment."""
    import re
    from importlib import metadata

    import morm_explorer

    path = Path(morm_explorer.__file__).resolve().parent.parent / "requirements.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0]
        try:
            # a local build tag (+cpu) names this machine's wheel, not the node's
            out.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            out.append(line)
    return out


def is_ray_job(info: JobInfo) -> bool:
    """Whether the job was submitted to Ray (queued for it, or claimed by its entry)."""
    return info.worker_id == RAY_WORKER or (info.worker_id or "").startswith(RAY_WORKER + "-")


def end_unfinished(store: JobStore, job_id: str, reason: str) -> bool:
    """End a queued or running job whose runner is gone: failed with ``reason``, or cancelled
    when a cancel was requested. Returns False when the job had already finished."""
    with store.ws.transaction() as con:
        cur = con.execute(
            "UPDATE jobs SET status=CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' "
            "END, error=?, finished_at=? WHERE id=? AND status IN ('queued', 'running')",
            (reason, time.time(), job_id))
        if cur.rowcount:
            JobStore.write_log(con, job_id, f"ended: {reason}")
            store.discard_staging(job_id)  # under the write lock: no commit can interleave
    return cur.rowcount == 1


class RayBackend(StoreBackend):
    """Jobs in the workspace database, run as Ray jobs on the cluster at ``address``.

    ``address``: the cluster's dashboard address, e.g. ``http://head:8265`` (default:
    ``$RAY_ADDRESS``, else a cluster started on this machine). ``python``: the interpreter, on
    the Ray nodes, that has ``morm_explorer`` installed. ``runtime_env``: merged into each
    job's Ray runtime environment, e.g. ``{"working_dir": "."}`` or ``{"pip": [...]}`` for
    nodes where it is not. Nothing connects before the first call that needs the cluster.
    """

    def __init__(self, ws: Workspace, address: str | None = None, python: str = "python",
                 runtime_env: dict[str, Any] | None = None,
                 stale_after: float = STALE_AFTER_S, *, shared_workspace: bool | None = None,
                 storage: str | None = None, ship_code: bool = True, pip: bool = False) -> None:
        super().__init__(ws, stale_after)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.python = python
        self.runtime_env = dict(runtime_env or {})
        if shared_workspace is None:
            shared_workspace = os.environ.get("MORM_RAY_SHARED_WORKSPACE", "") == "1"
        self.shared_workspace = shared_workspace
        self.storage = storage or os.environ.get("MORM_RAY_STORAGE", "").strip() or None
        if self.storage:
            from morm_explorer.jobs.transfer import Storage

            Storage(self.storage)  # a bad URI fails here, before anything is queued
        self.ship_code = ship_code
        self.pip = pip or os.environ.get("MORM_RAY_PIP", "") == "1"
        # custom resources every job asks for (e.g. {"a100": 1}), for the app and `morm`
        # commands: $MORM_RAY_RESOURCES as JSON
        self.default_resources = self._env_resources()
        self._client: JobSubmissionClient | None = None
        self._cluster_gpus: float | None = None

    @staticmethod
    def _env_resources() -> dict[str, float]:
        text = os.environ.get("MORM_RAY_RESOURCES", "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError as e:
            raise MormError(f"MORM_RAY_RESOURCES must be a JSON object such as "
                            f'{{"a100": 1}}: {e}', field="MORM_RAY_RESOURCES") from e
        if not (isinstance(value, dict) and all(isinstance(k, str) and k and isinstance(
                v, int | float) and not isinstance(v, bool) and v >= 0
                for k, v in value.items())):
            raise MormError(f"MORM_RAY_RESOURCES must map resource names to numbers >= 0, got "
                            f"{text!r}", field="MORM_RAY_RESOURCES")
        return {k: float(v) for k, v in value.items()}

    def __repr__(self) -> str:
        return f"RayBackend({str(self.ws.root)!r}, address={self.address!r})"

    @property
    def client(self) -> JobSubmissionClient:
        """The Jobs API client, connected on first use; raises `MormError` when unreachable."""
        if self._client is None:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError as e:
                raise MormError("the Ray backend needs Ray: pip install 'ray[default]' (or "
                                "'morm-explorer[ray]')") from e
            try:
                self._client = JobSubmissionClient(self.address)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise MormError(f"cannot reach the Ray cluster at {self.address or 'auto'} "
                                f"({e}); set RAY_ADDRESS to its dashboard address, e.g. "
                                "http://127.0.0.1:8265") from e
        return self._client

    # -- submitting -----------------------------------------------------------------------
    def cluster_gpus(self) -> float:
        """GPUs of the cluster's live nodes (asked once; 0 when the cluster cannot tell)."""
        if self._cluster_gpus is None:
            address = self.client.get_address()  # first: a clear error without Ray
            from ray.util.state import list_nodes

            try:
                nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")])
                self._cluster_gpus = sum(n.resources_total.get("GPU", 0.0) for n in nodes)
            except Exception as e:  # the state API raises its own types; a guess is enough
                log.warning("could not count the GPUs of the Ray cluster: %s", e)
                self._cluster_gpus = 0.0
        return self._cluster_gpus

    def gpus_for(self, spec: JobSpec) -> int:
        """GPUs to reserve for ``spec``: 1 when its device is "cuda", or "auto" on a cluster
        that has a GPU; otherwise 0 (and the job sees no GPU)."""
        device = spec_device(spec)
        if device == "cuda" or (device == "auto" and self.cluster_gpus() > 0):
            return 1
        return 0

    def job_runtime_env(self) -> dict[str, Any]:
        """The Ray job's runtime environment: the given one, the forwarded settings, and in the
        remote mode this ``morm_explorer`` as a py_module (and the pinned dependencies with
        ``pip``), so that every node runs the app's code and versions."""
        root = str(self.ws.root.resolve())
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        runtime_env = {**self.runtime_env, "env_vars": {
            **env, **self.runtime_env.get("env_vars", {}), "MORM_WORKSPACE": root}}
        if not self.shared_workspace and self.ship_code:
            import morm_explorer

            runtime_env.setdefault("py_modules", [str(Path(morm_explorer.__file__).parent)])
            # the demo bundle is the app's to install, never a node's
            runtime_env.setdefault("excludes", ["__pycache__", "*.pyc", "*.tar.xz"])
        if not self.shared_workspace and self.pip:
            runtime_env.setdefault("pip", pinned_requirements())
        return runtime_env

    def submit(self, spec: JobSpec, num_gpus: float | None = None,
               resources: dict[str, float] | None = None, prefer_node: str | None = None,
               num_cpus: float | None = None, max_retries: int | None = None) -> str:
        """Queue ``spec`` in the store, then as a Ray job; returns the job id, which is also
        its Ray submission id. The job gets ``num_cpus`` CPUs (1) and ``num_gpus`` GPUs
        (default: `gpus_for`), and in the remote mode the custom ``resources`` too, on
        ``prefer_node`` (a Ray node id) while that node is alive; a task whose node dies is
        retried ``max_retries`` times (3)."""
        if num_gpus is not None and not (isinstance(num_gpus, int | float) and num_gpus >= 0):
            raise MormError(f"num_gpus must be a number >= 0, got {num_gpus!r}",
                            field="num_gpus")
        if num_cpus is not None and not (isinstance(num_cpus, int | float) and num_cpus >= 0):
            raise MormError(f"num_cpus must be a number >= 0, got {num_cpus!r}",
                            field="num_cpus")
        if resources is not None and not (isinstance(resources, dict) and all(
                isinstance(k, str) and k and isinstance(v, int | float) and v >= 0
                for k, v in resources.items())):
            raise MormError(f"resources must map names to numbers >= 0, got {resources!r}",
                            field="resources")
        if resources is None and not self.shared_workspace:
            resources = self.default_resources or None
        if max_retries is not None and not (isinstance(max_retries, int) and max_retries >= 0):
            raise MormError(f"max_retries must be an integer >= 0, got {max_retries!r}",
                            field="max_retries")
        if self.shared_workspace and (resources or prefer_node):
            raise MormError("custom resources and a preferred node need the remote mode (the "
                            "shared-workspace mode runs jobs on the head)", field="resources")
        client = self.client  # unreachable: fail before anything is queued
        gpus = self.gpus_for(spec) if num_gpus is None else num_gpus
        job_id = self.store.submit(spec, reserved_for=RAY_WORKER, launched_by=self.launched_by)
        root = str(self.ws.root.resolve())
        runtime_env = self.job_runtime_env()
        entry = (f"exec {shlex.quote(self.python)} -m morm_explorer.jobs.ray_entry "
                 f"--workspace {shlex.quote(root)} --job-id {shlex.quote(job_id)} "
                 f"--gpus {gpus:g}")
        if self.shared_workspace:
            entry_cpus, entry_gpus = (1 if num_cpus is None else num_cpus), gpus
        else:  # the entry only drives; its task takes the job's resources
            remote = {"spec_gpus": gpus, "num_cpus": 1 if num_cpus is None else num_cpus,
                      "resources": resources or {}, "prefer_node": prefer_node,
                      "storage": self.storage}
            if max_retries is not None:
                remote["max_retries"] = max_retries
            entry += f" --remote {shlex.quote(json.dumps(remote))}"
            if self.ship_code:  # Ray puts the driver's folder on its workers' path: not a checkout
                entry = f"cd / && {entry}"
            entry_cpus, entry_gpus = 0, 0
        try:
            client.submit_job(
                # exec: the entry is the process Ray signals and waits for, with no shell between
                entrypoint=entry, submission_id=job_id, runtime_env=runtime_env,
                entrypoint_num_cpus=entry_cpus, entrypoint_num_gpus=entry_gpus,
                metadata={"morm_kind": spec.kind, "morm_workspace": root})
        except (RuntimeError, OSError, ValueError) as e:
            end_unfinished(self.store, job_id, f"could not be submitted to Ray: {e}")
            raise MormError(f"could not submit job {job_id} to the Ray cluster at "
                            f"{client.get_address()}: {e}") from e
        where = ("the workspace shared" if self.shared_workspace else
                 f"inputs through {self.storage or 'the object store'}")
        extra = "".join(f", {v:g} {k}" for k, v in (resources or {}).items())
        self.store.add_log(job_id, f"submitted to the Ray cluster at {client.get_address()} "
                           f"({gpus:g} GPU{extra}; {where})")
        return job_id

    # -- reading --------------------------------------------------------------------------
    def reconcile(self, info: JobInfo) -> bool:
        """End job ``info`` if Ray says its Ray job is over but the store does not; returns
        whether it did. The cluster being unreachable is not an answer: nothing changes."""
        if info.done or not is_ray_job(info):
            return False
        try:
            details = self.client.get_job_info(info.id)
        except MormError as e:
            log.warning("%s", e)
            return False
        except RuntimeError as e:  # the SDK's "Request failed with status code 404: ..."
            gone = "404" in str(e) and time.time() - info.created_at > SUBMIT_GRACE_S
            return gone and end_unfinished(self.store, info.id, "the Ray cluster at "
                                           f"{self.address or 'auto'} has no record of it "
                                           "(was the cluster restarted?)")
        except OSError as e:
            log.warning("could not ask Ray about job %s: %s", info.id, e)
            return False
        if not details.status.is_terminal():
            return False
        # Terminal means the entry process has exited: whatever it recorded is in the store.
        message = (details.message or "").strip()
        if len(message) > MAX_ERROR_CHARS:
            message = "..." + message[-MAX_ERROR_CHARS:]
        return end_unfinished(self.store, info.id, f"its Ray job ended {details.status.value} "
                              f"without recording an outcome: {message}")

    def get(self, job_id: str) -> JobInfo:
        self.reconcile(self.store.get(job_id))
        self.store.reap(self.stale_after)
        return self.store.get(job_id)

    def list(self, status: str | Sequence[str] | None = None, kind: str | None = None,
             limit: int = 100) -> list[JobInfo]:
        for info in self.store.list(status=("queued", "running"), kind=kind, limit=limit):
            self.reconcile(info)
        self.store.reap(self.stale_after)
        return self.store.list(status=status, kind=kind, limit=limit)

    # -- stopping -------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobInfo:
        """Flag the cancel in the store (a queued job ends at once; a running runner sees the
        flag), then stop the Ray job, which signals the entry and the runner.

        Ray cannot stop a job still waiting for resources (ray-project/ray#58353): it stays
        PENDING in Ray, and should it start, its entry finds the job cancelled and exits.
        """
        before = self.store.get(job_id)
        self.store.cancel(job_id)
        if not before.done and is_ray_job(before):
            try:
                self.client.stop_job(job_id)
            except (MormError, RuntimeError, OSError) as e:
                # The flag alone still stops a running job, through its entry process.
                self.store.add_log(job_id, f"could not stop its Ray job: {e}")
        return self.get(job_id)
