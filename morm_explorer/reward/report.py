"""Saved reward models as the app and the CLI see them: find, list and evaluate them.

`evaluate_artifact` scores a dataset with a saved model: on the model's own held-out split when
the dataset is the one it was trained on (same fingerprint), on every pair otherwise; with the
single-vs-multi comparison when the artifact carries its single overall model. The result is
stored in the model's folder (`reward.evaluations`), beside the evaluations it already had.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from morm_explorer.errors import MormError
from morm_explorer.reward.config import TrainConfig, read_config
from morm_explorer.reward.evaluations import (
    dataset_provenance,
    evaluation_entry,
    heldout_name,
    store_evaluation,
    stored_evaluations,
    training_data,
    training_entry,
    training_overlap,
)
from morm_explorer.reward.manifest import model_kind

GROUP = "reward_models"
log = logging.getLogger(__name__)


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
    """The workspace's reward models, each with what its folder says about it: objectives,
    architecture, training data (``training_data``), held-out accuracy and the stored
    ``evaluations``; ``kind`` (trained, external, composite) and, for the latter two,
    ``source`` (the model's folder or hub name, the composite's parts)."""
    rows = []
    root = workspace.root / GROUP
    folders = sorted(root.iterdir()) if root.is_dir() else []
    sources = {d.name: d.source for d in workspace.list_datasets()} if folders else {}
    for folder in folders:
        try:
            cfg = read_config(folder)
        except MormError:
            continue  # not a model folder (or a half-written one from an older version)
        try:
            evaluations = stored_evaluations(folder, cfg)
        except MormError as e:  # a damaged file hides the evaluations, not the model
            log.warning("%s", e)
            evaluations = [x for x in [training_entry(cfg)] if x]
        training = cfg.get("training", {})
        kind = model_kind(cfg)
        rows.append({
            "name": folder.name, "path": str(folder), "kind": kind,
            "source": "" if kind == "trained" else cfg["model"]["backbone"],
            "objectives": cfg["model"]["objectives"],
            "architecture": cfg["model"]["architecture"], "mode": training.get("mode", "?"),
            "backbone": cfg["model"]["backbone"], "dataset": training.get("dataset", "?"),
            "accuracy": {o: m["accuracy"] for o, m in
                         cfg.get("metrics", {}).get("objectives", {}).items()},
            "created_at": cfg.get("created_at", 0.0),
            "has_overall": (folder / "overall" / "config.json").is_file(),
            "training_data": training_data(cfg, sources), "evaluations": evaluations,
        })
    return rows


def evaluate_artifact(ref: str | Path, data: str, workspace=None, device: str = "auto",
                      store: bool = True) -> dict:
    """Per-objective metrics of a saved model on a dataset (see module docstring); with
    ``store``, kept in the model's folder under the data's name (``metrics["data"]``)."""
    # torch and transformers load here only: listing and reading reports stays light.
    from morm_explorer.reward import data as rdata
    from morm_explorer.reward.artifact import load_reward_model
    from morm_explorer.reward.cache import EmbeddingCache
    from morm_explorer.reward.train import (
        compare_single,
        evaluate_model,
        pick_device,
        prepare_splits,
        resolve_dataset,
    )

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
    cache = None
    if workspace is not None and model.frozen_backbone:
        cache = EmbeddingCache.for_backbone(workspace.root / "cache" / "embeddings",
                                            model.backbones[0])
    metrics = evaluate_model(model, split, objs, cache)
    metrics.update(split="held-out" if same else "whole file", n_pairs=len(split))
    if (path / "overall" / "config.json").is_file():
        single = load_reward_model(path / "overall", str(model.device))
        metrics["single_vs_multi"] = compare_single(single, split, metrics["objectives"], objs,
                                                    cache)
    prov = dataset_provenance(data, dataset, workspace)
    # a workspace dataset by its name, a file by its full path (two files may share a name)
    metrics["data"] = heldout_name(config) if same else prov.get("path", prov["name"])
    if store:
        store_evaluation(path, evaluation_entry(metrics["data"], metrics, source=prov["source"],
                                                fingerprint=prov["fingerprint"],
                                                split=metrics["split"]))
    return metrics


def judge_training_note(workspace, reward_model: str, judge: str) -> tuple[bool | None, str]:
    """Whether a judge's training data is disjoint from a reward model's, and on what each was
    trained, from their folders (None and a sentence saying so when one is gone)."""
    configs = []
    for ref in (reward_model, judge):
        try:
            configs.append(read_config(model_path(ref, workspace)))
        except MormError:
            return None, (f"The folder of {ref} is gone: on what data it was trained, and "
                          "whether the judge's data is disjoint from the reward model's, is "
                          "unknown.")
        if model_kind(configs[-1]) != "trained":
            return None, (f"{ref} is {model_kind(configs[-1])}: its training data is not "
                          "recorded, so whether the judge's data is disjoint from the reward "
                          "model's is unknown.")
    sources = {d.name: d.source for d in workspace.list_datasets()}
    return training_overlap(*(training_data(c, sources) for c in configs))


# -- reports of saved models, read from their folders without loading any weights ----------


def load_model_report(ref: str | Path, workspace=None) -> dict:
    """What a saved model's folder says about it, as plain data for tables and figures.

    Reads config.json and history.json only (no model is loaded). Keys: ``name``, ``path``,
    ``config`` (the raw config.json), ``summary`` (one flat dict), ``accuracy`` (a frame per
    objective: accuracy, ci_low, ci_high, n, loss, ece, truth_accuracy, truth_n),
    ``calibration`` ({objective: frame of bin, predicted, observed, count}), ``correlation``
    (a (K, K) frame), ``history`` (a frame indexed by step), ``single_vs_multi`` (a frame, or
    None when no single overall model was trained beside it) and ``stats`` (a frame of the
    per-objective reward statistics used for normalization).
    """
    path = model_path(ref, workspace)
    config = read_config(path)
    objectives = list(config["model"]["objectives"])
    metrics = config.get("metrics", {})
    per = metrics.get("objectives", {})
    cols = ["accuracy", "ci_low", "ci_high", "n", "loss", "ece", "truth_accuracy", "truth_n"]
    accuracy = pd.DataFrame([{c: per[o].get(c, np.nan) for c in cols} for o in per],
                            index=pd.Index(list(per), name="objective"), columns=cols)
    calib = {o: pd.DataFrame(per[o].get("calibration", []),
                             columns=["bin", "predicted", "observed", "count"]) for o in per}
    corr = pd.DataFrame(metrics.get("head_correlation") or {})
    if not corr.empty:
        corr = corr.loc[[o for o in objectives if o in corr.index],
                        [o for o in objectives if o in corr.columns]]
    return {"name": path.name, "path": str(path), "config": config,
            "summary": _summary(config, path), "accuracy": accuracy, "calibration": calib,
            "correlation": corr, "history": _history(path),
            "single_vs_multi": _single_vs_multi_frame(metrics.get("single_vs_multi")),
            "stats": stats_frame(config.get("stats"), objectives)}


def _summary(config: dict, path: Path) -> dict:
    model, training = config["model"], config.get("training", {})
    metrics = config.get("metrics", {})
    return {"backbone": model["backbone"], "architecture": model["architecture"],
            "head": model.get("head", "linear"), "pooling": config.get("pooling", "?"),
            "mode": training.get("mode", "?"), "objectives": list(model["objectives"]),
            "loss_weights": training.get("loss_weights", {}),
            "dataset": training.get("dataset", "?"),
            "data_source": config.get("data", {}).get("source", ""),
            "train_seconds": metrics.get("train_seconds"), "n_train": metrics.get("n_train"),
            "n_val": metrics.get("n_val"), "n_test_pairs": metrics.get("n_test_pairs"),
            "epochs": training.get("epochs"), "created_at": config.get("created_at"),
            "has_overall": (path / "overall" / "config.json").is_file()}


def _history(path: Path):
    try:
        rows = json.loads((path / "history.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        rows = []
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MormError(f"history.json is not valid JSON: {e}",
                        file=str(path / "history.json")) from e
    frame = pd.DataFrame(rows if isinstance(rows, list) else [])
    if "step" not in frame:
        return pd.DataFrame(index=pd.Index([], name="step"))
    return frame.set_index("step")


def _single_vs_multi_frame(table: dict | None):
    """The stored comparison ({objective: {multi_head, multi_ci, single, single_ci, n}}) as a
    frame with the intervals split into ``*_low`` / ``*_high`` columns."""
    if not table:
        return None
    rows = []
    for obj, r in table.items():
        m_ci, s_ci = r.get("multi_ci") or (np.nan, np.nan), r.get("single_ci") or (np.nan, np.nan)
        rows.append({"objective": obj, "multi_head": r["multi_head"], "multi_low": m_ci[0],
                     "multi_high": m_ci[1], "single": r["single"], "single_low": s_ci[0],
                     "single_high": s_ci[1], "n": r.get("n")})
    return pd.DataFrame(rows).set_index("objective")


def stats_frame(stats: dict | None, objectives: list[str]):
    """Per-objective reward statistics (mean, std, quantiles q05..q95, n) as a frame."""
    if not stats:
        return pd.DataFrame(index=pd.Index(objectives, name="objective"))
    frame = pd.DataFrame({"mean": stats["mean"], "std": stats["std"]},
                         index=pd.Index(objectives, name="objective"))
    for q, values in stats.get("quantiles", {}).items():
        frame[f"q{round(float(q) * 100):02d}"] = values
    frame["n"] = stats.get("n")
    return frame


def largest_gap_sentence(table) -> str:
    """One sentence on the objective where the single overall RM falls furthest behind the
    per-objective head (a frame from `load_model_report`'s ``single_vs_multi``)."""
    gap = (table["multi_head"] - table["single"]).dropna()
    if gap.empty:
        return "No objective has held-out pairs to compare the single RM with the heads on."
    obj = str(gap.idxmax())
    row = table.loc[obj]
    if gap[obj] <= 0:
        return (f"The single overall RM ranks pairs right at least as often as the heads on "
                f"every objective (closest: {obj}, {row['single']:.0%} vs "
                f"{row['multi_head']:.0%}).")
    return (f"A single overall RM ranks {obj} pairs right {row['single']:.0%} of the time; "
            f"the {obj} head {row['multi_head']:.0%}.")
