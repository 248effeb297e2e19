"""The RL fine-tuning job (PPO, GRPO or RLOO, per its config's ``algorithm``): `PPOJob`, kind
"ppo".

The spec carries a `PPOConfig` as a dict (validated on construction). The run lives in
``<workspace>/runs/ppo/<name>``, not in the job's staging folder (which is deleted when a job
fails): its checkpoint survives a killed worker, and the same job submitted again resumes
from it ("resuming from step N" in the log). Samples go to the log as ``sample: {json}``
lines and to ``<run_dir>/samples.jsonl``, the curves to the job's metrics and to
``<run_dir>/metrics.jsonl`` (`run_history` reads them back for runs made inside another job,
such as the demo build's). The finished policy is moved into the staging folder
and committed as ``policies/<name>`` in one rename; the checkpoint is then dropped, so that a
later run of the same name starts afresh. A job of the same name with other settings (other
than steps, checkpoint_every, sample_every, device, report_to, logging_dir) discards the old
run folder and starts afresh too, saying so in its log. The packages of a config's
``report_to`` must be installed where the job is made (see `morm_explorer.report_to`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from morm_explorer.errors import MormError
from morm_explorer.jobs.context import JobContext
from morm_explorer.jobs.spec import JobInfo, JobSpec, register_job
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.report_to import check_installed
from morm_explorer.workspace import Workspace, atomic_write_jsonl, sanitize_name

if TYPE_CHECKING:
    import pandas as pd

GROUP = "policies"
SAMPLES = "samples.jsonl"
METRICS = "metrics.jsonl"
MANIFEST = "morm_ppo.json"  # ppo_checkpoint.MANIFEST, named here too: that module loads torch


@dataclass(frozen=True)
class PPOJob(JobSpec):
    """Fine-tune a policy with multi-objective PPO per `config` (a PPOConfig as a dict)."""

    kind: ClassVar[str] = "ppo"

    config: dict = field(default_factory=dict)
    """the PPOConfig fields (name, policy, reward_model, weights, steps, ...)"""
    overwrite: bool = False
    """replace an existing policies/<name>"""

    def __post_init__(self) -> None:
        cfg = PPOConfig.from_dict(self.config)  # raises MormError naming the bad field
        check_installed(cfg.report_to)
        if not isinstance(self.overwrite, bool):
            raise MormError(f"overwrite must be true or false, got {self.overwrite!r}",
                            field="overwrite")

    @property
    def ppo_config(self) -> PPOConfig:
        return PPOConfig.from_dict(self.config)


def trained_policies(ws: Workspace) -> list[tuple[str, dict]]:
    """The policies PPO runs saved in the workspace, by name: (name, the config of the run, from
    its morm_ppo.json)."""
    root = ws.root / GROUP
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        manifest = folder / MANIFEST
        if manifest.is_file():
            config = json.loads(manifest.read_text(encoding="utf-8")).get("config", {})
            out.append((folder.name, config))
    return out


def run_dir(ws: Workspace, name: str) -> Path:
    """Where the run ``name`` keeps its checkpoint and samples."""
    return ws.root / "runs" / "ppo" / sanitize_name(name)


def check_new_run(ws: Workspace, name: str, active: Iterable[JobInfo]) -> None:
    """Refuse a new run named ``name`` while a run of that name is queued or running (among
    the ``active`` jobs) or its policy exists; raises `MormError` naming the field "name".
    (Resuming a failed or cancelled run submits its job again: that is not a new run.)"""
    for job in active:
        if (job.kind == PPOJob.kind and not job.done
                and job.spec.get("config", {}).get("name") == name):
            raise MormError(f"a run named {name!r} is already {job.status} (job {job.id}): "
                            "choose another name", field="name")
    if (ws.root / GROUP / name).exists():
        raise MormError(f"a fine-tuned policy named {name!r} exists: choose another name",
                        field="name")


def _keep_samples_before(path: Path, step: int) -> None:
    """Drop the samples of steps a resumed run will redo."""
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        atomic_write_jsonl(path, [r for r in rows if r.get("step", 0) < step])


def run_ppo(spec: PPOJob, ctx: JobContext) -> dict:
    # Imported here so that a worker starts without loading torch and transformers.
    from morm_explorer.policy.ppo import Hooks, train_ppo
    from morm_explorer.policy.ppo_checkpoint import CHECKPOINT, checkpoint_step, config_changes

    cfg = spec.ppo_config
    ctx.check_artifact(GROUP, cfg.name)
    if cfg.device == "auto":
        cfg = PPOConfig.from_dict({**cfg.to_dict(), "device": ctx.device})
    ws = ctx.store.ws
    folder = run_dir(ws, cfg.name)
    ctx.writes_into(folder)  # its checkpoints: a kill mid-save leaves a temporary folder
    changed = config_changes(folder, cfg)
    if changed:  # the same name with new settings: a new run, not the old one resumed
        ctx.log(f"discarding the checkpoint in {folder}: it was made with other settings "
                f"({', '.join(changed)})")
        shutil.rmtree(folder, ignore_errors=True)
    resumed = checkpoint_step(folder)  # train_ppo logs "resuming from step N"
    (folder / METRICS).unlink(missing_ok=True)  # a resumed run replays its history's metrics
    if resumed is None:
        (folder / SAMPLES).unlink(missing_ok=True)  # left by an earlier, finished run
    else:
        _keep_samples_before(folder / SAMPLES, resumed)
    group = f" x {cfg.group_size} responses" if cfg.grouped else ""
    ctx.log(f"{cfg.algorithm.upper()} of {cfg.policy} against "
            f"{cfg.reward_model or '(no reward model)'}: {cfg.steps} steps of "
            f"{cfg.batch_size} prompts{group}, {cfg.scalarizer} scalarization, "
            f"{'LoRA' if cfg.lora else 'full fine-tune'}, device {cfg.device}")

    def samples(step: int, rows: list[dict]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / SAMPLES, "a", encoding="utf-8") as fh:
            for row in rows:
                line = json.dumps({"step": step, **row}, ensure_ascii=False)
                fh.write(line + "\n")
                ctx.log(f"sample: {line}")

    def metrics(step: int, values: dict) -> None:
        ctx.metrics(step, values)  # the job's curves; the run folder keeps its own copy
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / METRICS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **values}) + "\n")

    hooks = Hooks(progress=ctx.progress, metrics=metrics, log=ctx.log, samples=samples,
                  check_cancelled=ctx.check_cancelled)
    result = train_ppo(cfg, folder, workspace=ws, hooks=hooks)
    staging = ctx.staging_dir
    for item in Path(result["path"]).iterdir():  # same filesystem: renames, not copies
        shutil.move(str(item), staging / item.name)
    path = ctx.commit_artifact(GROUP, cfg.name)
    shutil.rmtree(folder / CHECKPOINT, ignore_errors=True)
    shutil.rmtree(result["path"], ignore_errors=True)
    final = {k: round(v, 4) for k, v in result["final"].items()
             if k.startswith(("objective/", "lagrange/"))}
    ctx.log(f"committed policies/{path.name}; last step: {final_summary(final)}")
    return {"path": str(path), "steps": result["steps"], "resumed_from": resumed,
            "final": final}


def final_summary(final: dict[str, float]) -> str:
    """A run's last metrics in words: per-objective scores, the scalarized and RLHF rewards,
    KL (k3, never negative; k1 where a run has no k3), entropy and Lagrange multipliers."""
    parts = [f"{k.removeprefix('objective/scores/')} {v:.3f}" for k, v in final.items()
             if k.startswith("objective/scores/")]
    named = (("objective/scalarized", "scalarized"), ("objective/rlhf_reward", "RLHF reward"),
             ("objective/kl3", "KL (k3)"), ("objective/entropy", "entropy"))
    parts += [f"{label} {final[k]:.3f}" for k, label in named if k in final]
    if "objective/kl3" not in final and "objective/kl" in final:
        parts.append(f"KL (k1) {final['objective/kl']:.3f}")
    parts += [f"λ {k.removeprefix('lagrange/')} {v:.3f}" for k, v in final.items()
              if k.startswith("lagrange/")]
    return ", ".join(parts) or "no metrics"


def run_history(ws: Workspace, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run's curves and samples from its run folder, for runs with no job of their own (the
    demo build's): metrics wide by step (the last value where a resumed run redid a step), and
    the sample rows. A torn last line (a run killed mid-write) is skipped."""
    import pandas as pd

    from morm_explorer.data.readers import read_jsonl

    folder = run_dir(ws, name)

    def rows(file: str) -> list[dict]:
        path = folder / file
        return [row for _, row in (read_jsonl(path) if path.is_file() else ())
                if isinstance(row, dict) and isinstance(row.get("step"), int)]

    metrics = pd.DataFrame(rows(METRICS))
    if not metrics.empty:
        metrics = metrics.groupby("step").last().sort_index()
    return metrics, pd.DataFrame(rows(SAMPLES))


def runs_without_jobs(ws: Workspace, job_names: set[str]) -> list[str]:
    """Fine-tuned policies whose run folder holds curves but that no listed job made."""
    return sorted(name for name, _ in trained_policies(ws)
                  if name not in job_names and (run_dir(ws, name) / METRICS).is_file())


register_job(PPOJob.kind, PPOJob, run_ppo)
