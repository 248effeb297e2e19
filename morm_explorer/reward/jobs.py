"""The reward-model training job: `TrainRewardModelJob`, kind "train_reward_model".

The spec carries a `TrainConfig` as a dict (validated on construction); the runner trains into
the job's staging folder and commits it as ``reward_models/<name>`` in one rename, so a failed or
cancelled run leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from morm_explorer.jobs.context import JobContext
from morm_explorer.jobs.spec import JobSpec, register_job
from morm_explorer.report_to import check_installed
from morm_explorer.reward.config import TrainConfig
from morm_explorer.workspace import sanitize_name

GROUP = "reward_models"


@dataclass(frozen=True)
class TrainRewardModelJob(JobSpec):
    """Train a reward model with `config` (a TrainConfig as a dict)."""

    kind: ClassVar[str] = "train_reward_model"

    config: dict = field(default_factory=dict)
    """the TrainConfig fields (dataset, name, objectives, mode, loss_weights, ...)"""
    overwrite: bool = False
    """replace an existing reward_models/<name>"""

    def __post_init__(self) -> None:
        cfg = TrainConfig.from_dict(self.config)  # raises MormError naming the bad field
        sanitize_name(cfg.name)
        check_installed(cfg.report_to)  # a missing package fails the submit, not the job

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config)


def run_train_reward_model(spec: TrainRewardModelJob, ctx: JobContext) -> dict:
    # Imported here so that a worker starts without loading torch and transformers.
    from morm_explorer.reward.train import Hooks, train_reward_model

    cfg = spec.train_config
    ctx.check_artifact(GROUP, cfg.name)
    if cfg.device == "auto":
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "device": ctx.device})
    ctx.log(f"training {cfg.architecture} reward model {cfg.name!r} on {cfg.dataset!r} "
            f"({cfg.mode} backbone {cfg.backbone}, device {cfg.device})")
    hooks = Hooks(progress=ctx.progress, metrics=ctx.metrics,
                  check_cancelled=ctx.check_cancelled)
    ws = ctx.store.ws
    result = train_reward_model(cfg, ctx.staging_dir, workspace=ws, hooks=hooks,
                                cache_root=ws.root / "cache" / "embeddings")
    path = ctx.commit_artifact(GROUP, cfg.name)
    acc = {o: round(m["accuracy"], 4) for o, m in result.metrics["objectives"].items()}
    ctx.log(f"held-out accuracy: {acc}")
    return {"path": str(path), "accuracy": acc,
            "train_seconds": round(result.metrics["train_seconds"], 2)}


register_job(TrainRewardModelJob.kind, TrainRewardModelJob, run_train_reward_model)
