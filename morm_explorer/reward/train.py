"""Training of multi-objective reward models: L = sum_k w_k L_pref,k.

`train_reward_model(config, out_dir)` loads the data, splits it by prompt, trains, evaluates on
the held-out split and writes an artifact folder. Two modes:

- frozen: pooled backbone embeddings are computed once (and cached on disk); only the heads are
  trained, on tensors, in seconds on a CPU;
- full / lora: the backbone is fine-tuned (all weights, or peft LoRA adapters) with AdamW, linear
  warmup and decay, gradient clipping and early stopping on the validation loss.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from morm_explorer.data.loaders import Dataset, load_preference_data
from morm_explorer.errors import MormError
from morm_explorer.reward import data as rdata
from morm_explorer.reward.artifact import reward_stats, save_reward_model
from morm_explorer.reward.cache import EmbeddingCache, embed_with_cache
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.evaluate import evaluate_pairs, head_correlation, true_targets
from morm_explorer.reward.losses import (
    bradley_terry_loss,
    centering_loss,
    weighted_total,
)
from morm_explorer.reward.model import RewardModel, build_model


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


def _pair_losses(r_a, r_b, target, cfg: TrainConfig, weights) -> tuple[torch.Tensor, torch.Tensor]:
    per_obj, _ = bradley_terry_loss(r_a, r_b, target, cfg.margin, cfg.ties == "skip")
    total = weighted_total(per_obj, weights)
    if cfg.center_coef > 0:
        total = total + cfg.center_coef * centering_loss(r_a, r_b, target).sum()
    return total, per_obj


class _EarlyStop:
    """Keeps the best trainable state by validation loss; stops after `patience` bad epochs."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.bad, self.state = patience, math.inf, 0, None

    def update(self, loss: float, model: torch.nn.Module) -> bool:
        if loss < self.best - 1e-5:
            self.best, self.bad = loss, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad += 1
        return self.patience > 0 and self.bad >= self.patience


def _frozen_loop(model, emb_tr, emb_va, split_tr, split_va, cfg, weights, hooks, history):
    """Train heads on cached embeddings; emb_* are (U, H) tensors on the device."""
    heads = [p for h in model.heads for p in h.parameters()]
    opt = torch.optim.AdamW(heads, lr=cfg.lr, weight_decay=cfg.weight_decay)
    stop, step, n = _EarlyStop(cfg.patience), 0, len(split_tr)
    targets_tr = torch.tensor(split_tr.targets, device=emb_tr.device)
    gen = torch.Generator().manual_seed(cfg.seed)

    def rewards(emb):
        return model.rewards_from_embeddings([emb] * len(model.heads))

    for epoch in range(cfg.epochs):
        model.train()
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            r = rewards(emb_tr)  # (U, K): heads are cheap, recompute all
            loss, per_obj = _pair_losses(r[split_tr.ia[idx]], r[split_tr.ib[idx]],
                                         targets_tr[idx], cfg, weights)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads, cfg.grad_clip or math.inf)
            opt.step()
            step += 1
        val = _val_loss(model, lambda: rewards(emb_va), split_va, cfg, weights)
        _log_epoch(hooks, history, step, epoch, cfg.epochs, loss, per_obj, model, val)
        hooks.check_cancelled()
        if val is not None and stop.update(val, model):
            break
    if stop.state is not None:
        model.load_state_dict(stop.state)


@torch.no_grad()
def _val_loss(model, rewards_fn, split, cfg, weights) -> float | None:
    if split is None or len(split) == 0:
        return None
    model.eval()
    r = rewards_fn()
    target = torch.tensor(split.targets, device=r.device)
    loss, _ = _pair_losses(r[split.ia], r[split.ib], target, cfg, weights)
    return float(loss)


def _log_epoch(hooks, history, step, epoch, epochs, loss, per_obj, model, val) -> None:
    values = {"loss/total": float(loss.detach())}
    for k, obj in enumerate(model.objectives):
        values[f"loss/{obj}"] = float(per_obj[k])
    if val is not None:
        values["eval/loss"] = val
    history.append({"step": step, "epoch": epoch + 1, **values})
    hooks.metrics(step, values)
    hooks.progress(0.1 + 0.8 * (epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")


def _texts_rewards(model, prompts, responses, batch_size) -> torch.Tensor:
    """Rewards (U, K) with gradients off, batched."""
    return torch.tensor(model.score(prompts, responses, batch_size), device=model.device)


def _finetune_loop(model, split_tr, split_va, cfg, weights, hooks, history) -> None:
    from transformers import get_linear_schedule_with_warmup

    head_params = [p for h in model.heads for p in h.parameters()]
    head_ids = {id(p) for p in head_params}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    opt = torch.optim.AdamW([{"params": head_params, "lr": cfg.lr},
                             {"params": body, "lr": cfg.backbone_lr}],
                            weight_decay=cfg.weight_decay)
    n = len(split_tr)
    total_steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total_steps), total_steps)
    stop, step = _EarlyStop(cfg.patience), 0
    gen = torch.Generator().manual_seed(cfg.seed)
    targets = torch.tensor(split_tr.targets, device=model.device)
    for epoch in range(cfg.epochs):
        model.train()
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            ia, ib = split_tr.ia[idx], split_tr.ib[idx]
            prompts = [split_tr.prompts[i] for i in np.concatenate([ia, ib])]
            resps = [split_tr.responses[i] for i in np.concatenate([ia, ib])]
            r = model(prompts, resps)  # (2B, K)
            loss, per_obj = _pair_losses(r[: len(idx)], r[len(idx):], targets[idx], cfg, weights)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            opt.step()
            sched.step()
            step += 1
            if step % 10 == 0:
                hooks.metrics(step, {"loss/step": float(loss)})
                hooks.check_cancelled()
        val = _val_loss(model, lambda: _texts_rewards(model, split_va.prompts,
                                                      split_va.responses, 64),
                        split_va, cfg, weights) if split_va is not None else None
        _log_epoch(hooks, history, step, epoch, cfg.epochs, loss, per_obj, model, val)
        if val is not None and stop.update(val, model):
            break
    if stop.state is not None:
        model.load_state_dict(stop.state)


def _add_lora(model: RewardModel, cfg: TrainConfig) -> None:
    from peft import LoraConfig, get_peft_model

    for b in model.backbones:
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.05)
        b.model = get_peft_model(b.model, lcfg)


def _merge_lora(model: RewardModel) -> None:
    for b in model.backbones:
        if hasattr(b.model, "merge_and_unload"):
            b.model = b.model.merge_and_unload()


def train_reward_model(cfg: TrainConfig, out_dir: str | Path, workspace=None,
                       hooks: Hooks | None = None, cache_root: str | Path | None = None
                       ) -> TrainResult:
    """Train per `cfg`, evaluate on held-out prompts, write the artifact to `out_dir`."""
    hooks = hooks or Hooks()
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    hooks.progress(0.0, "loading data")
    dataset = resolve_dataset(cfg.dataset, workspace)
    objectives = default_objectives(dataset, cfg.objectives)
    weights = torch.tensor([cfg.loss_weights.get(o, 1.0) for o in objectives], device=device)
    unknown = set(cfg.loss_weights) - set(objectives)
    if unknown:
        raise MormError(f"loss weights for unknown objectives {sorted(unknown)}",
                        field="loss_weights")
    records = rdata.as_pairs(dataset)
    tr, va, te = rdata.split_by_prompt(records, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    splits = [rdata.pair_set(part, objectives) if part else None for part in (tr, va, te)]
    if splits[0] is None or np.isnan(splits[0].targets).all():
        raise MormError("no labelled training pairs for the chosen objectives", field="dataset")

    mcfg = cfg.model_config(tuple(objectives))
    n_backbones = len(objectives) if cfg.architecture == "separate" and cfg.mode != "frozen" else 1
    hooks.progress(0.02, f"loading backbone {cfg.backbone}")
    model = build_model(mcfg, n_backbones, device)
    history: list[dict] = []
    if cfg.mode == "frozen":
        for b in model.backbones:
            b.requires_grad_(False)
        cache = EmbeddingCache(cache_root, mcfg.backbone, model.backbones[0].pooling,
                               mcfg.max_length) if cache_root else None

        def emb(split, lo, hi):
            if split is None:
                return None
            e = embed_with_cache(model.backbones[0], split.prompts, split.responses, cache,
                                 progress=lambda d, t: hooks.progress(lo + (hi - lo) * d / t,
                                                                      "embedding texts"))
            return torch.tensor(e, device=device)

        e_tr, e_va = emb(splits[0], 0.02, 0.08), emb(splits[1], 0.08, 0.1)
        _frozen_loop(model, e_tr, e_va, splits[0], splits[1], cfg, weights, hooks, history)
    else:
        if cfg.mode == "lora":
            _add_lora(model, cfg)
        _finetune_loop(model, splits[0], splits[1], cfg, weights, hooks, history)
        _merge_lora(model)
    train_seconds = time.perf_counter() - t0

    hooks.progress(0.92, "evaluating on held-out prompts")
    metrics = evaluate_model(model, splits[2], objectives)
    metrics["train_seconds"] = train_seconds
    metrics["n_pairs"] = {"train": len(splits[0]), "val": len(splits[1] or []),
                          "test": len(splits[2] or [])}
    stats = reward_stats(model.score(splits[0].prompts, splits[0].responses))
    path = save_reward_model(model, out_dir, training=cfg.to_dict(), metrics=metrics,
                             stats=stats, history=history,
                             data={"source": dataset.source, "kind": dataset.kind,
                                   "fingerprint": dataset.fingerprint()},
                             backbone_trained=cfg.mode != "frozen")
    hooks.progress(1.0, "done")
    return TrainResult(path=path, metrics=metrics, history=history)


def evaluate_model(model: RewardModel, split, objectives: list[str]) -> dict:
    """Held-out metrics of a model on a PairSet (see reward.evaluate)."""
    if split is None or len(split) == 0:
        return {"objectives": {}, "head_correlation": {}}
    scores = model.score(split.prompts, split.responses)  # (U, K)
    truth = true_targets(split.records, objectives)
    per = evaluate_pairs(scores[split.ia], scores[split.ib], split.targets, objectives, truth)
    corr = head_correlation(scores, objectives)
    return {"objectives": per, "head_correlation": corr.round(4).to_dict()}


def copy_config(cfg: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig.from_dict({**copy.deepcopy(cfg.to_dict()), **changes})
