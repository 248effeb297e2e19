"""Training of multi-objective reward models: L = sum_k w_k L_pref,k.

`train_reward_model(config, out_dir)` loads the data, splits it by prompt, trains, evaluates on
the held-out split and writes an artifact folder. Two modes:

- frozen: pooled backbone embeddings are computed once (and cached on disk); only the heads are
  trained, on tensors, in seconds on a CPU;
- full / lora: the backbone is fine-tuned (all weights, or peft LoRA adapters) with AdamW, linear
  warmup and decay, gradient clipping and early stopping on the validation loss.

The minibatch loop itself is `morm_explorer.reward.loop`.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from morm_explorer.data.convert import ratings_to_pairs
from morm_explorer.data.loaders import Dataset, load_preference_data
from morm_explorer.errors import MormError
from morm_explorer.report_to import report_metrics
from morm_explorer.reward import data as rdata
from morm_explorer.reward.artifact import load_reward_model, reward_stats, save_reward_model
from morm_explorer.reward.cache import EmbeddingCache, embed_with_cache, score_cached
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.evaluate import (
    evaluate_pairs,
    head_correlation,
    single_vs_multi,
    true_targets,
)
from morm_explorer.reward.evaluations import dataset_provenance, evaluation_entry
from morm_explorer.reward.loop import SplitRewards, train_epochs
from morm_explorer.reward.model import RewardModel, build_model
from morm_explorer.reward.trust import MAX_POINTS, TrainingReference
from morm_explorer.workspace import read_umask


@dataclass
class Hooks:
    """Where training reports to: a job context, a progress bar, or nothing."""

    progress: Callable[[float, str], None] = lambda frac, msg="": None
    metrics: Callable[[int, dict], None] = lambda step, values: None
    check_cancelled: Callable[[], None] = lambda: None


@dataclass
class TrainResult:
    path: Path
    metrics: dict
    history: list[dict] = field(default_factory=list)


def pick_device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise MormError("device cuda requested but no GPU is available", field="device")
    return "cuda" if name == "auto" and torch.cuda.is_available() else (
        "cpu" if name == "auto" else name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_dataset(source: str, workspace=None) -> Dataset:
    """A workspace dataset by name, else a file path."""
    if workspace is not None and source in {d.name for d in workspace.list_datasets()}:
        return workspace.load_dataset(source)
    if not Path(source).exists():
        raise MormError(f"no dataset named {source!r} in the workspace and no such file",
                        field="dataset")
    return load_preference_data(source)


def default_objectives(dataset: Dataset, requested: tuple[str, ...]) -> list[str]:
    """The requested objectives, or all but `overall` (the single-RM label) when others exist."""
    objs = rdata.choose_objectives(dataset, requested)
    if not requested and len(objs) > 1 and "overall" in objs:
        objs = [o for o in objs if o != "overall"]
    return objs


def _add_lora(model: RewardModel, cfg: TrainConfig) -> None:
    from peft import LoraConfig, get_peft_model

    for b in model.backbones:
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.05)
        b.model = get_peft_model(b.model, lcfg)


def _merge_lora(model: RewardModel) -> None:
    for b in model.backbones:
        if hasattr(b.model, "merge_and_unload"):
            b.model = b.model.merge_and_unload()


def prepare_splits(dataset: Dataset, objectives: list[str], cfg: TrainConfig):
    """(train, val, test) sets: pairs, or for ratings in regression mode rated items for
    train/val (standardized with the training split's statistics). Test is always pairs."""
    regression = dataset.kind == "ratings" and cfg.ratings_mode == "regression"
    records = dataset.records if regression else rdata.as_pairs(dataset)
    tr, va, te = rdata.split_by_prompt(records, cfg.val_fraction, cfg.test_fraction, cfg.seed,
                                       cfg.folds, cfg.fold)
    if regression:
        stats = rdata.rating_stats(tr, objectives)
        train = rdata.item_set(tr, objectives, stats)
        val = rdata.item_set(va, objectives, stats) if va else None
        test = rdata.pair_set(ratings_to_pairs(te), objectives)
    else:
        train = rdata.pair_set(tr, objectives)
        val = rdata.pair_set(va, objectives) if va else None
        test = rdata.pair_set(te, objectives)
    if np.isnan(train.targets).all():
        raise MormError("no labelled training data for the chosen objectives", field="dataset")
    return train, val, test


def _embed_split(model, split, cache, hooks, lo: float, hi: float) -> torch.Tensor:
    def report(done: int, total: int) -> None:
        hooks.progress(lo + (hi - lo) * done / total, "embedding texts")
        hooks.check_cancelled()

    e = embed_with_cache(model.backbones[0], split.prompts, split.responses, cache,
                         progress=report)
    return torch.tensor(e, device=model.device)


def train_reward_model(cfg: TrainConfig, out_dir: str | Path, workspace=None,
                       hooks: Hooks | None = None, cache_root: str | Path | None = None
                       ) -> TrainResult:
    """Train per `cfg`, evaluate on held-out prompts, write the artifact to `out_dir`. The
    metrics also go to the backends of ``cfg.report_to`` (TensorBoard by default under
    ``<workspace or current folder>/runs/reward_model/<name>/tb``)."""
    hooks = hooks or Hooks()
    runs = (workspace.root if workspace is not None else Path.cwd()) / "runs" / "reward_model"
    with report_metrics(hooks.metrics, cfg, runs / cfg.name / "tb") as metrics:
        return _train(cfg, out_dir, workspace, replace(hooks, metrics=metrics), cache_root)


def _train(cfg: TrainConfig, out_dir: str | Path, workspace, hooks: Hooks,
           cache_root: str | Path | None) -> TrainResult:
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    hooks.progress(0.0, "loading data")
    dataset = resolve_dataset(cfg.dataset, workspace)
    objectives = default_objectives(dataset, cfg.objectives)
    unknown = set(cfg.loss_weights) - set(objectives)
    if unknown:
        raise MormError(f"loss weights for unknown objectives {sorted(unknown)}",
                        field="loss_weights")
    weights = torch.tensor([cfg.loss_weights.get(o, 1.0) for o in objectives], device=device)
    train, val, test = prepare_splits(dataset, objectives, cfg)

    mcfg = cfg.model_config(tuple(objectives))
    n_backbones = len(objectives) if cfg.architecture == "separate" and cfg.mode != "frozen" else 1
    hooks.progress(0.02, f"loading backbone {cfg.backbone}")
    model = build_model(mcfg, n_backbones, device)
    e_tr = e_va = cache = None
    if cfg.mode == "frozen":
        model.backbones.requires_grad_(False)
        model.frozen_backbone = True
        cache = EmbeddingCache.for_backbone(cache_root, model.backbones[0])
        e_tr = _embed_split(model, train, cache, hooks, 0.02, 0.08)
        e_va = _embed_split(model, val, cache, hooks, 0.08, 0.1) if val else None
    elif cfg.mode == "lora":
        _add_lora(model, cfg)
    history: list[dict] = []
    t_loop = time.perf_counter()
    train_epochs(model, SplitRewards(model, train, e_tr),
                SplitRewards(model, val, e_va) if val else None, cfg, weights, hooks, history)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    loop_seconds = time.perf_counter() - t_loop
    _merge_lora(model)
    train_seconds = time.perf_counter() - t0

    hooks.progress(0.92, "evaluating on held-out prompts")
    metrics = evaluate_model(model, test, objectives, cache)
    metrics["train_seconds"] = train_seconds
    metrics["loop_seconds"] = loop_seconds
    metrics["steps"] = history[-1]["step"] if history else 0
    metrics["n_train"], metrics["n_val"] = len(train.targets), len(val.targets) if val else 0
    metrics["n_test_pairs"] = len(test)
    stats = reward_stats(score_cached(model, train.prompts, train.responses, cache))
    extra = {}
    if cfg.compare_overall and "overall" in dataset.objectives and "overall" not in objectives:
        hooks.progress(0.94, "training the single overall RM for comparison")
        single = _train_overall(cfg, Path(out_dir).parent, workspace, cache_root)
        single_model = load_reward_model(single.path, str(model.device))
        metrics["single_vs_multi"] = compare_single(single_model, test, metrics["objectives"],
                                                    objectives, cache)
        extra["overall"] = single.path
    hooks.progress(0.96, "measuring the training texts")
    reference = training_reference(model, train, [s for s in (val, test) if s], cache, cfg.seed)
    data = dataset_provenance(cfg.dataset, dataset, workspace)
    heldout = evaluation_entry(f"{data['name']} held-out split", metrics, source=data["source"],
                               fingerprint=data["fingerprint"], split="held-out",
                               pairs=len(test))
    path = save_reward_model(model, out_dir, training=cfg.to_dict(), metrics=metrics,
                             stats=stats, history=history, data=data,
                             backbone_trained=cfg.mode != "frozen", extra=extra,
                             reference=reference, evaluations=[heldout])
    for folder in extra.values():
        shutil.rmtree(folder.parent, ignore_errors=True)  # the emptied temp parent
    hooks.progress(1.0, "done")
    return TrainResult(path=path, metrics=metrics, history=history)


def training_reference(model: RewardModel, train, heldout: list, cache: EmbeddingCache | None,
                       seed: int) -> TrainingReference | None:
    """The pooled vectors of up to `MAX_POINTS` training texts and of up to as many held-out
    ones (validation and test), as a `TrainingReference`; None for a model with a backbone per
    objective (its heads read K different vectors) or without held-out texts."""
    if len(model.backbones) > 1:
        return None
    cache = cache if model.frozen_backbone else None  # a trained backbone embeds anew
    rng = np.random.default_rng(seed)

    def embed(prompts: list[str], responses: list[str]) -> np.ndarray:
        keep = np.sort(rng.permutation(len(prompts))[:MAX_POINTS])
        return embed_with_cache(model.backbones[0], [prompts[i] for i in keep],
                                [responses[i] for i in keep], cache)  # (<=MAX_POINTS, H)

    held_p = [p for s in heldout for p in s.prompts]
    held_r = [r for s in heldout for r in s.responses]
    if not held_p or not train.prompts:
        return None
    return TrainingReference.fit(embed(train.prompts, train.responses), embed(held_p, held_r),
                                 seed=seed)


def _train_overall(cfg: TrainConfig, parent: Path, workspace, cache_root) -> TrainResult:
    """One single-output RM on the `overall` label, same settings, in a temp folder."""
    single_cfg = copy_config(cfg, objectives=["overall"], loss_weights={},
                             compare_overall=False, architecture="multi_head", report_to=[])
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".overall-", dir=parent))
    os.chmod(tmp, 0o777 & ~read_umask())  # kept beside the model: readable like it
    out = tmp / "model"
    return train_reward_model(single_cfg, out, workspace, None, cache_root)


def compare_single(single: RewardModel, split, multi: dict, objectives: list[str],
                   cache: EmbeddingCache | None = None) -> dict:
    """Held-out accuracy per objective: the multi-head model's own heads (``multi``, the
    per-objective metrics already computed on ``split``) vs one single overall reward."""
    s_a, s_b = _sides(single, split, cache)
    table = single_vs_multi(multi, s_a, s_b, split.targets, objectives)
    return {obj: {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}
            for obj, row in table.to_dict(orient="index").items()}


def _sides(model: RewardModel, split, cache=None) -> tuple[np.ndarray, np.ndarray]:
    scores = score_cached(model, split.prompts, split.responses, cache)
    return scores[split.ia], scores[split.ib]


def evaluate_model(model: RewardModel, split, objectives: list[str],
                   cache: EmbeddingCache | None = None) -> dict:
    """Held-out metrics of a model on a PairSet (see reward.evaluate), for ``objectives``
    (all of the model's, or a subset)."""
    if split is None or len(split) == 0:
        return {"objectives": {}, "head_correlation": {}}
    scores = score_cached(model, split.prompts, split.responses, cache)  # (U, K)
    scores = scores[:, [model.objectives.index(o) for o in objectives]]
    truth = true_targets(split.records, objectives)
    per = evaluate_pairs(scores[split.ia], scores[split.ib], split.targets, objectives, truth)
    corr = head_correlation(scores, objectives)
    return {"objectives": per, "head_correlation": corr.round(4).to_dict()}


def cross_validate(cfg: TrainConfig, folds: int = 5, workspace=None,
                   cache_root: str | Path | None = None, hooks: Hooks | None = None) -> dict:
    """k-fold cross-validation over prompts: per-fold and pooled held-out accuracy per
    objective, the pooled interval a bootstrap over all held-out pairs of all folds."""
    from morm_explorer.reward.evaluate import bootstrap_ci

    per_fold: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="morm-cv-") as tmp:
        for k in range(folds):
            fcfg = copy_config(cfg, folds=folds, fold=k, compare_overall=False)
            res = train_reward_model(fcfg, Path(tmp) / f"fold-{k}", workspace, hooks, cache_root)
            per_fold.append(res.metrics)
    out = {}
    for obj in per_fold[0]["objectives"]:
        accs = [m["objectives"][obj]["accuracy"] for m in per_fold]
        ns = [m["objectives"][obj]["n"] for m in per_fold]
        correct = np.concatenate([np.r_[np.ones(round(a * n)), np.zeros(n - round(a * n))]
                                  for a, n in zip(accs, ns, strict=True)])
        lo, hi = bootstrap_ci(correct)
        out[obj] = {"fold_accuracy": accs, "fold_n": ns, "accuracy": float(correct.mean()),
                    "ci_low": lo, "ci_high": hi, "n": int(len(correct))}
    return {"folds": folds, "objectives": out,
            "train_seconds": [m["train_seconds"] for m in per_fold]}


def copy_config(cfg: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig.from_dict({**copy.deepcopy(cfg.to_dict()), **changes})
