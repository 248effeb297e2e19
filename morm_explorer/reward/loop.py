"""The minibatch loop of reward-model training, for `morm_explorer.reward.train`.

`train_epochs` runs AdamW over epochs (heads at ``lr``, the backbone at ``backbone_lr`` with
linear warmup and decay), clips gradients and stops early on the validation loss, keeping the
best weights. The loss is L = sum_k w_k L_pref,k: Bradley-Terry on pairs (plus the optional
centering term), or regression on rated items. `SplitRewards` gives the rewards of a split's
texts: from cached embeddings when the backbone is frozen, else through the whole model.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from morm_explorer.reward import data as rdata
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.losses import (
    bradley_terry_loss,
    centering_loss,
    regression_loss,
    weighted_total,
)
from morm_explorer.reward.model import RewardModel


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


class SplitRewards:
    """Rewards of texts by index into a split's text table, for the training loop.

    Frozen mode reads cached embeddings (heads only); fine-tuning runs the whole model.
    """

    def __init__(self, model: RewardModel, split, emb: torch.Tensor | None) -> None:
        self.model, self.split, self.emb = model, split, emb

    def __call__(self, idx: np.ndarray) -> torch.Tensor:  # (n,) -> (n, K)
        if self.emb is not None:
            h = self.emb[torch.as_tensor(idx, device=self.emb.device)]
            return self.model.rewards_from_embeddings([h] * len(self.model.heads))
        return self.model([self.split.prompts[i] for i in idx],
                          [self.split.responses[i] for i in idx])

    @torch.no_grad()
    def all(self) -> torch.Tensor:  # (U, K)
        if self.emb is not None:
            return self(np.arange(len(self.split.prompts)))
        scores = self.model.score(self.split.prompts, self.split.responses)
        return torch.tensor(scores, device=self.model.device)


def _batch_loss(rewards: SplitRewards, idx: np.ndarray, targets: torch.Tensor, cfg, weights):
    """Loss of one minibatch: pairs (Bradley-Terry) or rated items (regression)."""
    split = rewards.split
    if isinstance(split, rdata.ItemSet):
        per_obj = regression_loss(rewards(idx), targets[idx])
        return weighted_total(per_obj, weights), per_obj
    r = rewards(np.concatenate([split.ia[idx], split.ib[idx]]))  # (2B, K)
    return _pair_losses(r[: len(idx)], r[len(idx):], targets[idx], cfg, weights)


def _accumulate(rewards: SplitRewards, idx: np.ndarray, targets: torch.Tensor, cfg, weights):
    """Backward the minibatch's loss; returns it and the per-objective losses, detached.

    When the backbone is trained, in micro-batches of `cfg.micro_batch_size`: each objective's
    loss is a mean over the pairs labelled for it, so a chunk's per-objective loss is scaled by
    its share of those pairs, and the chunks' gradients add up exactly to the whole batch's."""
    step = len(idx) if rewards.emb is not None else cfg.micro_batch_size
    if step >= len(idx):
        loss, per_obj = _batch_loss(rewards, idx, targets, cfg, weights)
        loss.backward()
        return loss.detach(), per_obj.detach()
    items = isinstance(rewards.split, rdata.ItemSet)

    def counts(t: torch.Tensor, skip_ties: bool) -> torch.Tensor:
        m = ~torch.isnan(t)
        return (m & (t != 0.5) if skip_ties else m).sum(0).to(t.dtype)

    skip = not items and cfg.ties == "skip"
    n_loss = counts(targets[idx], skip).clamp(min=1.0)
    n_all = counts(targets[idx], False).clamp(min=1.0)
    total = torch.zeros((), device=targets.device)
    per_total = torch.zeros(targets.shape[1], device=targets.device)
    split = rewards.split
    for lo in range(0, len(idx), step):
        part = idx[lo:lo + step]
        t = targets[part]
        share = counts(t, skip) / n_loss
        if items:
            per_obj = regression_loss(rewards(part), t)
            loss = weighted_total(per_obj * share, weights)
        else:
            r = rewards(np.concatenate([split.ia[part], split.ib[part]]))
            r_a, r_b = r[: len(part)], r[len(part):]
            per_obj, _ = bradley_terry_loss(r_a, r_b, t, cfg.margin, skip)
            loss = weighted_total(per_obj * share, weights)
            if cfg.center_coef > 0:
                loss = loss + cfg.center_coef * (centering_loss(r_a, r_b, t)
                                                 * counts(t, False) / n_all).sum()
        loss.backward()
        total = total + loss.detach()
        per_total = per_total + per_obj.detach() * share
    return total, per_total


@torch.no_grad()
def _val_loss(rewards: SplitRewards | None, cfg, weights) -> float | None:
    if rewards is None or len(rewards.split.prompts) == 0:
        return None
    rewards.model.eval()
    r = rewards.all()
    split = rewards.split
    target = torch.tensor(split.targets, device=r.device)
    if isinstance(split, rdata.ItemSet):
        return float(weighted_total(regression_loss(r, target), weights))
    loss, _ = _pair_losses(r[split.ia], r[split.ib], target, cfg, weights)
    return float(loss)


def _optimizer(model: RewardModel, cfg: TrainConfig, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    head_params = [p for h in model.heads for p in h.parameters()]
    head_ids = {id(p) for p in head_params}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head_params, "lr": cfg.lr, "weight_decay": cfg.head_weight_decay}]
    if body:
        groups.append({"params": body, "lr": cfg.backbone_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps) if body else 0
    return opt, get_linear_schedule_with_warmup(opt, warmup, total_steps)


def train_epochs(model: RewardModel, train: SplitRewards, val: SplitRewards | None,
                 cfg: TrainConfig, weights: torch.Tensor, hooks, history: list[dict]) -> None:
    """Minibatch AdamW over epochs with clipping and early stopping on the validation loss."""
    n = len(train.split.targets)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt, sched = _optimizer(model, cfg, cfg.epochs * steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    targets = torch.tensor(train.split.targets, device=model.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    stop, step = _EarlyStop(cfg.patience), 0
    for epoch in range(cfg.epochs):
        model.train()
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            opt.zero_grad()
            loss, per_obj = _accumulate(train, idx.numpy(), targets, cfg, weights)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
            opt.step()
            sched.step()
            step += 1
            if train.emb is None and step % 10 == 0:
                hooks.metrics(step, {"loss/step": float(loss.detach())})
                hooks.check_cancelled()
        v = _val_loss(val, cfg, weights)
        _log_epoch(hooks, history, step, epoch, cfg.epochs, loss, per_obj, model, v)
        hooks.check_cancelled()
        if v is not None and stop.update(v, model):
            break
    if stop.state is not None:
        model.load_state_dict(stop.state)


def _log_epoch(hooks, history, step, epoch, epochs, loss, per_obj, model, val) -> None:
    values = {"loss/total": float(loss.detach())}
    for k, obj in enumerate(model.objectives):
        values[f"loss/{obj}"] = float(per_obj[k].detach())
    if val is not None:
        values["eval/loss"] = val
    history.append({"step": step, "epoch": epoch + 1, **values})
    hooks.metrics(step, values)
    hooks.progress(0.1 + 0.8 * (epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")
