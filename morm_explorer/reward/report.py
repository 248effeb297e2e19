"""Saved reward models as the app and the CLI see them: find, list and evaluate them.

`evaluate_artifact` scores a dataset with a saved model: on the model's own held-out split when
the dataset is the one it was trained on (same fingerprint), on every pair otherwise; with the
single-vs-multi comparison when the artifact carries its single overall model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from morm_explorer.errors import MormError
from morm_explorer.reward import data as rdata
from morm_explorer.reward.artifact import load_reward_model, read_config
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.evaluate import (
    evaluate_pairs,
    head_correlation,
    single_vs_multi,
    true_targets,
)
from morm_explorer.reward.train import pick_device, prepare_splits, resolve_dataset

GROUP = "reward_models"


def model_path(ref: str | Path, workspace=None) -> Path:
    """A reward model by workspace name, else as a folder."""
    if workspace is not None:
        try:
            candidate = workspace.artifact_dir(GROUP, str(ref))
        except MormError:
            candidate = None
        if candidate is not None and (candidate / "config.json").is_file():
            return candidate
    path = Path(ref)
    if not (path / "config.json").is_file():
        raise MormError(f"no reward model named {str(ref)!r} in the workspace and no model "
                        "folder there", file=str(ref))
    return path


def list_reward_models(workspace) -> list[dict]:
    rows = []
    root = workspace.root / GROUP
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            cfg = read_config(folder)
        except MormError:
            continue  # not a model folder (or a half-written one from an older version)
        training = cfg.get("training", {})
        rows.append({
            "name": folder.name, "path": str(folder),
            "objectives": cfg["model"]["objectives"],
            "architecture": cfg["model"]["architecture"], "mode": training.get("mode", "?"),
            "backbone": cfg["model"]["backbone"], "dataset": training.get("dataset", "?"),
            "accuracy": {o: m["accuracy"] for o, m in
                         cfg.get("metrics", {}).get("objectives", {}).items()},
            "created_at": cfg.get("created_at", 0.0),
            "has_overall": (folder / "overall" / "config.json").is_file(),
        })
    return rows


def _columns(scores: np.ndarray, model_objs: list[str], objs: list[str]) -> np.ndarray:
    return scores[:, [model_objs.index(o) for o in objs]]


def evaluate_artifact(ref: str | Path, data: str, workspace=None, device: str = "auto") -> dict:
    """Per-objective metrics of a saved model on a dataset (see module docstring)."""
    path = model_path(ref, workspace)
    config = read_config(path)
    model = load_reward_model(path, pick_device(device))
    dataset = resolve_dataset(data, workspace)
    objs = [o for o in model.objectives if o in dataset.objectives]
    if not objs:
        raise MormError(f"the data has none of the model's objectives {model.objectives}; it "
                        f"has {dataset.objectives}", field="objectives")
    same = dataset.fingerprint() == config.get("data", {}).get("fingerprint")
    if same:
        cfg = TrainConfig.from_dict(config["training"])
        split = prepare_splits(dataset, objs, cfg)[2]
    else:
        split = rdata.pair_set(rdata.as_pairs(dataset), objs)
    scores = _columns(model.score(split.prompts, split.responses), model.objectives, objs)
    truth = true_targets(split.records, objs)
    per = evaluate_pairs(scores[split.ia], scores[split.ib], split.targets, objs, truth)
    metrics = {"objectives": per, "split": "held-out" if same else "whole file",
               "n_pairs": len(split),
               "head_correlation": head_correlation(scores, objs).round(4).to_dict()}
    if (path / "overall" / "config.json").is_file():
        single = load_reward_model(path / "overall", str(model.device))
        s = single.score(split.prompts, split.responses)
        table = single_vs_multi(per, s[split.ia], s[split.ib], split.targets, objs)
        metrics["single_vs_multi"] = json.loads(table.to_json(orient="index"))
    return metrics
