"""A job on a Ray node that cannot read the workspace: the app's side and the node's side.

`RayBackend` (in its default, remote mode) submits a Ray job whose entrypoint runs on the
cluster's head, the machine of the app and its workspace (`ray_entry`). That entry claims the
job, heartbeats it like a local worker and calls `drive`, which:

1. packs the job's inputs (`transfer.job_inputs`) by content digest and, with a storage URI,
   uploads those the storage does not hold yet (``cas/<digest>.tar``);
2. starts a `JobRelay` actor pinned to this node: the job's only way back into the workspace.
   It writes progress, log lines and metrics into the job store as they come, serves inputs
   from the object store when there is no storage URI, and takes checkpoints;
3. runs `run_on_node` as a Ray task where the job's resources fit (a GPU, custom resources, a
   preferred node), retried on another node if its node dies.

On the node, `run_on_node` fetches the inputs its node cache lacks (`transfer.NodeCache`),
builds a workspace of its own from them (the *shadow*), runs the job there with the local
machinery (`run.run_child`, so cancelling and crashes behave as for local jobs), forwards what
the job records to the relay twice a second, sends each new checkpoint of the job's run
folders (PPO's ``runs/ppo/<name>``) to the storage URI or the relay, and at the end returns the
units the job wrote. A retried task starts from the last checkpoint the relay holds. `drive`
commits the returned units into the workspace atomically (`transfer.commit_units`) and records
how the job ended. Nothing crosses as pickled user data: inputs and outputs are tars, events
are plain lists and dicts.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from morm_explorer.errors import MormError
from morm_explorer.jobs import transfer
from morm_explorer.jobs.spec import JobInfo
from morm_explorer.jobs.store import FOLDERS, JobStore, WorkerInfo, new_worker_id
from morm_explorer.workspace import Workspace, replace_dir

log = logging.getLogger(__name__)

FORWARD_S = 0.5  # how often the node sends the job's new progress, logs and metrics
CANCEL_WAIT_S = 15.0  # after a cancel, how long the task has to stop itself before Ray kills it
DEFAULT_RETRIES = 3  # task retries when its node or worker dies
CHECKPOINT = "checkpoint"  # ppo_checkpoint.CHECKPOINT: a run folder's resumable state
CHECKPOINT_STATE = "state.json"  # ppo_checkpoint.STATE: its step, config, RNG and controllers


def node_cache_root() -> Path:
    """The node's cache of inputs: ``$MORM_NODE_CACHE``, else ~/.cache/morm-explorer/node,
    else a folder of this user's in the temporary directory."""
    env = os.environ.get("MORM_NODE_CACHE", "").strip()
    candidates = [Path(env)] if env else []
    candidates += [Path.home() / ".cache" / "morm-explorer" / "node",
                   Path(tempfile.gettempdir()) / f"morm-explorer-node-{os.getuid()}"]
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise MormError("no writable folder for the node's input cache: set MORM_NODE_CACHE")


def _sync_key(job_id: str, rel: str) -> str:
    return f"jobs/{job_id}/synced/{hashlib.sha256(rel.encode()).hexdigest()[:16]}.tar"


class JobRelay:
    """Lives with the app (pinned to the entry's node) for the length of one job; the node's
    task calls it. Made a Ray actor by `drive`."""

    def __init__(self, ws_root: str, job_id: str, tars: dict[str, str],
                 storage: str | None) -> None:
        self.ws = Workspace(ws_root)
        self.store = JobStore(self.ws)
        self.job_id = job_id
        self.tars = tars  # digest -> packed input on the app's disk
        self.storage = transfer.Storage(storage) if storage else None
        self.synced: dict[str, dict[str, str]] = {}  # rel -> {"key"} or {"path"}
        self.attempts = 0
        self.folder = self.store.job_dir(job_id) / "remote"

    def fetch(self, d: str) -> bytes:
        """A packed input, through the object store (no storage URI)."""
        if d not in self.tars:
            raise MormError(f"input {d[:12]} is not one of job {self.job_id}'s")
        return Path(self.tars[d]).read_bytes()

    def started(self, host: str, node_id: str, user: str, code: str) -> int:
        self.attempts += 1
        again = f" (attempt {self.attempts}: the last checkpoint is restored)" \
            if self.attempts > 1 else ""
        self.store.add_log(self.job_id, f"running on Ray node {host} (node {node_id[:12]}, "
                           f"user {user}, code from {code}){again}")
        return self.attempts

    def report(self, progress: float | None, message: str | None, device: str | None,
               logs: list[str], metrics: list[list]) -> bool:
        """Record what the job recorded on the node; returns whether it is to stop."""
        job_id = self.job_id
        with self.ws.transaction() as con:
            for text in logs:
                JobStore.write_log(con, job_id, text)
            if metrics:
                con.executemany("INSERT INTO job_metrics VALUES (?,?,?,?,?)",
                                [(job_id, int(s), str(k), None if v is None else float(v), t)
                                 for s, k, v, t in metrics])
            if progress is not None:
                con.execute("UPDATE jobs SET progress=?, message=? WHERE id=? AND "
                            "status='running'", (float(progress), str(message or ""), job_id))
            if device:
                con.execute("UPDATE jobs SET device=? WHERE id=?", (str(device), job_id))
            row = con.execute("SELECT status, cancel_requested FROM jobs WHERE id=?",
                              (job_id,)).fetchone()
        return row is None or row[0] != "running" or bool(row[1])

    def sync(self, rel: str, key: str | None, data: bytes | None) -> None:
        """Take the new state of the run folder ``rel`` (its checkpoint): kept for a retried
        task, and put in the workspace, where a later retry of the job resumes from it too."""
        parts = transfer.check_unit(rel)
        if parts[0] != "runs":
            raise MormError(f"only run folders are synced, not {rel!r}")
        self.folder.mkdir(parents=True, exist_ok=True)
        tar = self.folder / f"{hashlib.sha256(rel.encode()).hexdigest()[:16]}.tar"
        if data is not None:
            tmp = tar.with_name(f".{tar.name}.{secrets.token_hex(4)}")
            tmp.write_bytes(data)
            os.replace(tmp, tar)
        elif key is not None and self.storage is not None:
            self.storage.get(key, tar)
        else:
            raise MormError("a synced folder needs its data or its storage key")
        target = self.ws.root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
        try:
            transfer.unpack(tar, tmp_dir)
            replace_dir(tmp_dir, target)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        self.synced[rel] = {"key": key} if key is not None else {"path": str(tar)}
        step = _checkpoint_step(target)
        self.store.add_log(self.job_id, f"checkpoint of {rel} received"
                           + (f" (step {step})" if step is not None else ""))

    def restore(self) -> list[dict[str, Any]]:
        """The last synced state of each run folder, for a retried task."""
        out = []
        for rel, where in self.synced.items():
            if "key" in where:
                out.append({"rel": rel, "key": where["key"]})
            else:
                out.append({"rel": rel, "data": Path(where["path"]).read_bytes()})
        return out


def _checkpoint_step(run_dir: Path) -> int | None:
    """The step of a run folder's checkpoint, read without importing the RL code (torch): the
    relay answers the node while it runs."""
    try:
        state = json.loads((run_dir / CHECKPOINT / CHECKPOINT_STATE).read_text(encoding="utf-8"))
        return int(state["step"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


# -- on the node ----------------------------------------------------------------------------------
def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class _Forwarder(threading.Thread):
    """Sends what the job records in the node's store to the relay; syncs checkpoints."""

    def __init__(self, ray, relay, store: JobStore, job_id: str, remote_id: str,
                 storage: transfer.Storage | None, scratch: Path,
                 to_app: list[tuple[str, str]]) -> None:
        super().__init__(name="morm-forward", daemon=True)
        self.ray, self.relay, self.store = ray, relay, store
        self.job_id, self.remote_id = job_id, remote_id
        self.storage, self.scratch = storage, scratch
        self.to_app = to_app  # the node's paths -> the app's, in what goes back
        self.done = threading.Event()
        self.seq = 0
        self.metric_row = 0
        self.last: tuple | None = None
        self.signatures: dict[str, str] = {}
        self.error: BaseException | None = None

    def forward(self) -> None:
        with self.store.ws.reading() as con:
            job = con.execute("SELECT progress, message, device FROM jobs WHERE id=?",
                              (self.job_id,)).fetchone()
            logs = con.execute("SELECT seq, text FROM job_logs WHERE job_id=? AND seq>? "
                               "ORDER BY seq", (self.job_id, self.seq)).fetchall()
            metrics = con.execute("SELECT rowid, step, key, value, t FROM job_metrics WHERE "
                                  "job_id=? AND rowid>? ORDER BY rowid",
                                  (self.job_id, self.metric_row)).fetchall()
        state = (job["progress"], job["message"], job["device"])
        changed = state != self.last
        lines = [r["text"] for r in logs if not r["text"].startswith("claimed by worker")]
        cancel = self.ray.get(self.relay.report.remote(
            state[0] if changed else None, state[1] if changed else None,
            state[2] if changed else None, lines,
            [[r["step"], r["key"], r["value"], r["t"]] for r in metrics]))
        self.last = state
        if logs:
            self.seq = logs[-1]["seq"]
        if metrics:
            self.metric_row = metrics[-1]["rowid"]
        if cancel:
            self.store.cancel(self.job_id)

    def sync_checkpoints(self) -> None:
        listed = self.store.job_dir(self.job_id) / FOLDERS
        if not listed.is_file():
            return
        root = self.store.ws.root.resolve()
        for line in set(listed.read_text(encoding="utf-8").splitlines()):
            folder = Path(line)
            ckpt = folder / CHECKPOINT
            if not line.strip() or not ckpt.is_dir():
                continue
            snap = self.scratch / f"snap-{secrets.token_hex(4)}"
            tar = self.scratch / f"sync-{secrets.token_hex(4)}.tar"
            try:
                rel = folder.resolve().relative_to(root).as_posix()
                transfer.check_unit(rel)
                sig = transfer.PackCache.signature(ckpt)
                if sig == self.signatures.get(rel):
                    continue
                # Hard links first (milliseconds), packed after: a run that checkpoints more
                # often than a pack takes still has each of its checkpoints caught whole.
                shutil.copytree(folder, snap, copy_function=_link_or_copy,
                                ignore=shutil.ignore_patterns(".*"))
                if transfer.PackCache.signature(ckpt) != sig:
                    continue  # a save was under way: the next round takes it whole
                transfer.pack(snap, tar, rewrite=self.to_app)
            except (OSError, ValueError, MormError, shutil.Error):
                tar.unlink(missing_ok=True)
                continue  # the checkpoint is being replaced right now
            finally:
                shutil.rmtree(snap, ignore_errors=True)
            try:
                if self.storage is not None:
                    key = _sync_key(self.remote_id, rel)
                    self.storage.put(key, tar)
                    self.ray.get(self.relay.sync.remote(rel, key, None))
                else:
                    self.ray.get(self.relay.sync.remote(rel, None, tar.read_bytes()))
                self.signatures[rel] = sig
            finally:
                tar.unlink(missing_ok=True)

    def run(self) -> None:
        while True:
            finishing = self.done.wait(FORWARD_S)
            try:
                self.forward()
                self.sync_checkpoints()
            except Exception as e:  # the relay gone (its job ended) or a busy store
                log.warning("could not forward the job's events: %s", e)
                self.error = e
            if finishing:
                return


def _materialize(ray, relay, payload: dict, cache: transfer.NodeCache, shadow: Path,
                 storage: transfer.Storage | None) -> tuple[int, list[str]]:
    """Put the job's inputs into ``shadow`` (fetching those the node lacks), then the last
    checkpoints of a retried task; returns (bytes fetched, the folders placed)."""
    fetched = 0
    placed = [item["rel"] for item in payload["inputs"]]
    incoming = cache.root / "incoming"
    incoming.mkdir(exist_ok=True)
    for item in payload["inputs"]:
        d, rel = item["digest"], item["rel"]
        transfer.check_input_rel(rel)
        if not cache.has(d):
            tar = incoming / f"{d}.{secrets.token_hex(4)}.tar"
            try:
                if storage is not None:
                    storage.get(f"cas/{d}.tar", tar)
                else:
                    tar.write_bytes(ray.get(relay.fetch.remote(d)))
                fetched += tar.stat().st_size
                cache.add(d, tar)
            finally:
                tar.unlink(missing_ok=True)
        transfer.place(cache.path(d), shadow / rel,
                       link=rel.split("/")[0] not in transfer.MUTABLE,
                       single_file=bool(item.get("file")))
    for item in ray.get(relay.restore.remote()):  # a retried task: the last checkpoints
        rel = item["rel"]
        parts = transfer.check_unit(rel)
        tar = incoming / f"restore-{secrets.token_hex(4)}.tar"
        try:
            if "key" in item and storage is not None:
                storage.get(item["key"], tar)
            else:
                tar.write_bytes(item["data"])
            tmp = shadow / f".restore-{secrets.token_hex(4)}"
            transfer.unpack(tar, tmp)
            target = shadow.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            replace_dir(tmp, target)
            placed.append(rel)
        finally:
            tar.unlink(missing_ok=True)
    if payload.get("smollm2"):
        from morm_explorer.policy.load import SMOLLM2_DIR, convert_smollm2

        made = convert_smollm2(Workspace(cache.root / "derived"))  # once per node
        transfer.place(made, shadow / "models" / SMOLLM2_DIR, link=True)
    return fetched, placed


def run_on_node(payload: dict) -> dict:
    """The Ray task: run job ``payload["job_id"]`` in a workspace of its own on this node."""
    import ray

    import morm_explorer
    from morm_explorer.jobs.ray_entry import _JobHeartbeat
    from morm_explorer.jobs.run import run_child
    from morm_explorer.jobs.spec import load_job_modules, spec_from_dict

    relay = payload["relay"]
    job_id = payload["job_id"]
    storage = transfer.Storage(payload["storage"]) if payload.get("storage") else None
    cache = transfer.NodeCache(node_cache_root())
    ray.get(relay.started.remote(socket.gethostname(), ray.get_runtime_context().get_node_id(),
                                 getpass.getuser(), str(Path(morm_explorer.__file__).parent)))
    (cache.root / "jobs").mkdir(exist_ok=True)
    shadow = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=cache.root / "jobs"))
    try:
        ws = Workspace(shadow)
        t0 = time.monotonic()
        fetched, placed = _materialize(ray, relay, payload, cache, shadow, storage)
        to_node = [(a, transfer.resolve_shadow(b, shadow))
                   for a, b in payload.get("mapping", {}).items()]
        to_node.append((payload["app_root"], str(shadow)))
        for rel in placed:  # absolute paths in the inputs' own JSON files
            transfer.localize_json(shadow / rel, to_node)
        transfer.insert_rows(ws, payload.get("rows") or {})
        to_app = [(b, a) for a, b in to_node] + [(str(shadow), payload["app_root"])]
        load_job_modules()
        spec = spec_from_dict(payload["kind"], transfer.resolve_shadow(payload["spec"], shadow))
        store = JobStore(ws)
        local_id = store.submit(spec, reserved_for="node")
        before = transfer.snapshot(shadow)
        now = time.time()
        worker = WorkerInfo(id=f"node-{new_worker_id()}", pid=os.getpid(),
                            host=socket.gethostname(), started_at=now, heartbeat_at=now)
        job = store.claim(worker.id, job_id=local_id)
        store.add_log(local_id, f"inputs ready in {time.monotonic() - t0:.1f} s "
                      f"({fetched / 2**20:.1f} MiB fetched, the rest from the node's cache)")
        hb = _JobHeartbeat(store, worker)
        hb.start_job(local_id)
        hb.start()
        fwd = _Forwarder(ray, relay, store, local_id, job_id, storage, cache.root / "incoming",
                         to_app)
        fwd.start()
        try:
            status = run_child(store, hb, job)
        finally:
            hb.stop()
            fwd.done.set()
            fwd.join()
        info = store.get(local_id)
        out: dict[str, Any] = {"status": status, "error": info.error, "result": info.result,
                               "shadow": str(shadow), "units": [], "gone": [], "rows": {}}
        if status != "succeeded":
            return out
        changed, gone = transfer.changed_units(shadow, before)
        out["gone"] = gone
        out["rows"] = transfer.unit_rows(shadow, changed)
        for unit in changed:
            tar = cache.root / "incoming" / f"out-{secrets.token_hex(4)}.tar"
            try:
                transfer.pack(shadow / unit, tar, rewrite=to_app)  # the app's paths
                if storage is not None:
                    key = f"jobs/{job_id}/out/{hashlib.sha256(unit.encode()).hexdigest()[:16]}.tar"
                    storage.put(key, tar)
                    out["units"].append({"name": unit, "key": key})
                else:
                    out["units"].append({"name": unit, "data": tar.read_bytes()})
            finally:
                tar.unlink(missing_ok=True)
        return out
    finally:
        shutil.rmtree(shadow, ignore_errors=True)


# -- on the app's side ----------------------------------------------------------------------------
def task_error(e: BaseException) -> str:
    """A failed task in one line: the error raised on the node (a `MormError`'s own message),
    else the last line of Ray's report (a node that died, a worker killed, ...)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, MormError):
        return str(cause)
    if cause is not None and not isinstance(cause, type(e)):
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def placement(options: dict[str, Any], spec_gpus: float) -> dict[str, Any]:
    """Ray task options from the job's placement: ``num_cpus`` (1), ``num_gpus`` (the spec's),
    ``resources`` (custom ones, e.g. {"a100": 1}), ``prefer_node`` (a node id: tried first, any
    other that fits if it is gone) and ``max_retries``."""
    opts: dict[str, Any] = {
        "num_cpus": float(options.get("num_cpus", 1)),
        "num_gpus": float(options.get("num_gpus", spec_gpus)),
        "resources": dict(options.get("resources") or {}),
        "max_retries": int(options.get("max_retries", DEFAULT_RETRIES)),
        "retry_exceptions": False,
    }
    if options.get("prefer_node"):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            node_id=str(options["prefer_node"]), soft=True)
    return opts


def drive(store: JobStore, hb, job: JobInfo, options: dict[str, Any],
          stopping: threading.Event) -> dict[str, Any]:
    """Run claimed job ``job`` on the cluster as described in the module docstring; returns the
    outcome message for `run.record` ({"status": ..., ...}) or {"status": "lost"}."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ws = store.ws
    if not ray.is_initialized():
        ray.init(log_to_driver=False, logging_level=logging.WARNING)
    spec, inputs, mapping = transfer.job_inputs(ws, job.spec)
    pc = transfer.PackCache(ws)
    storage_uri = options.get("storage") or None
    storage = transfer.Storage(storage_uri) if storage_uri else None
    tars, manifest, total = {}, [], 0
    for item in inputs:
        d, tar, size = pc.add(item.source)
        tars[d] = str(tar)
        total += size
        manifest.append({"rel": item.rel, "digest": d, "file": item.source.is_file()})
        if storage is not None and not storage.exists(f"cas/{d}.tar"):
            storage.put(f"cas/{d}.tar", tar)
    store.add_log(job.id, f"{len(manifest)} input(s), {total / 2**20:.1f} MiB, sent through "
                  f"{storage_uri or 'the Ray object store'} to nodes that lack them"
                  + (": " + ", ".join(m["rel"] for m in manifest) if manifest else ""))
    here = ray.get_runtime_context().get_node_id()
    relay = ray.remote(JobRelay).options(
        num_cpus=0, max_concurrency=8,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(str(ws.root.resolve()), job.id, tars, storage_uri)
    rows = transfer.unit_rows(ws.root, [m["rel"] for m in manifest])  # datasets' rows, ...
    payload = {"job_id": job.id, "kind": job.kind, "spec": spec, "inputs": manifest,
               "rows": rows,
               "storage": storage_uri, "relay": relay, "mapping": mapping,
               "app_root": str(ws.root.resolve()),
               "smollm2": transfer.needs_smollm2(spec, inputs)}
    gpus = float(options.get("spec_gpus", 0))
    task = ray.remote(run_on_node).options(**placement(options, gpus))
    ref = task.remote(payload)
    cancel_at = None
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=0.5)
            if ready:
                break
            if hb.is_lost(job.id) or stopping.is_set():
                ray.cancel(ref, force=True)
                return {"status": "lost"}
            if cancel_at is None and store.cancel_requested(job.id):
                cancel_at = time.monotonic() + CANCEL_WAIT_S
            elif cancel_at is not None and time.monotonic() > cancel_at:
                ray.cancel(ref, force=True)
                return {"status": "cancelled",
                        "note": "cancelled: its Ray task was stopped (it did not stop itself)"}
        try:
            out = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return {"status": "cancelled", "note": "cancelled"}
        except ray.exceptions.RayError as e:
            return {"status": "failed", "error": f"its task on the Ray cluster failed: "
                    f"{task_error(e)}"}
        if out["status"] != "succeeded":
            if out["status"] == "cancelled" or store.cancel_requested(job.id):
                return {"status": "cancelled", "note": "cancelled"}
            return {"status": "failed", "error": out.get("error") or "failed on its node"}
        units = []
        folder = store.job_dir(job.id) / "remote" / "out"
        folder.mkdir(parents=True, exist_ok=True)
        for u in out["units"]:
            tar = folder / f"{len(units)}.tar"
            if "key" in u and storage is not None:
                storage.get(u["key"], tar)
            else:
                tar.write_bytes(u["data"])
            units.append(transfer.Unit(u["name"], tar))
        units += [transfer.Unit(g, gone=True) for g in out["gone"]]
        try:
            transfer.commit_units(ws, units, out["rows"],
                                  may_replace={m["rel"] for m in manifest},
                                  overwrite=bool(job.spec.get("overwrite")),
                                  job_id=job.id, worker_id=hb.worker.id)
        except MormError as e:
            return {"status": "failed", "error": str(e)}
        result = transfer.replace_in(out["result"] or {}, out["shadow"],
                                        str(ws.root.resolve()))
        return {"status": "succeeded", "result": result}
    finally:
        try:
            ray.kill(relay)
        except Exception:  # already gone with its node or the cluster
            pass
