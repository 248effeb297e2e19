"""The one reward path of every RL algorithm (`morm_explorer.policy.ppo`): the reward model (or
an injected function), z-scoring, scalarization with the step's weights, the scalarizer's
coefficients, the Lagrange penalty of constraints, and the missing-eos penalty.

`score_rollout` turns a rollout's texts into `Scores`; what each algorithm makes of them (GAE
per objective for PPO, group baselines for GRPO and RLOO) is the trainer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from morm_explorer.errors import MormError
from morm_explorer.objectives import scalarize, weight_vector
from morm_explorer.policy import ppo_core as core
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.workspace import Workspace

RewardFn = Callable[[list[str], list[str]], np.ndarray]  # (prompts, responses) -> (N, K)


def load_reward(config: PPOConfig, workspace: Workspace | None, device: str,
                reward_fn: RewardFn | None, objectives: list[str] | None):
    """(reward_fn, objectives, stored stats or None) from the config's reward model, or the
    injected function (its objectives are required)."""
    if reward_fn is not None:
        if not objectives:
            raise MormError("a reward function needs its objectives' names", field="objectives")
        return reward_fn, list(objectives), None
    if not config.reward_model:
        raise MormError("choose a reward model", field="reward_model")
    from morm_explorer.reward.artifact import load_reward_model
    from morm_explorer.reward.report import model_path

    rm = load_reward_model(model_path(config.reward_model, workspace), device)
    return (lambda p, r: rm.score(p, r, batch_size=64)), list(rm.objectives), rm.stats


def standardize(raw: torch.Tensor, stats: dict | None, moments: core.RunningMoments,
                config: PPOConfig) -> torch.Tensor:
    """Scores (N, K) in the units the scalarizer sees: z-scores with the stored statistics,
    or with running ones when there are none, or raw when not ``config.standardize``."""
    if not config.standardize:
        return raw
    if stats:
        mean, std = stats["mean"], stats["std"]
    else:
        moments.update(raw)
        mean, std = moments.mean, moments.std
    mean_t = torch.tensor(mean, dtype=raw.dtype)
    return (raw - mean_t) / torch.tensor(std, dtype=raw.dtype).clamp(min=1e-6)


@dataclass
class Scores:
    """A rollout's rewards, on the CPU."""

    raw: torch.Tensor  # (N, K) the reward's scores
    z: torch.Tensor  # (N, K) in the scalarizer's units (`standardize`)
    weights: np.ndarray  # (K,) the step's weights, summing to 1
    coef: torch.Tensor  # (N, K) how per-objective advantages combine (scalarizer + Lagrange)
    cut: torch.Tensor  # (N,) missing_eos_penalty of responses cut off before their eos
    score: torch.Tensor  # (N,) R': scalarized, Lagrange-penalized, minus ``cut``


def score_rollout(reward_fn: RewardFn, prompts: list[str], texts: list[str],
                  finished: torch.Tensor, objectives: list[str], stats: dict | None,
                  moments: core.RunningMoments, lagrange: core.LagrangeMultipliers,
                  config: PPOConfig, step: int) -> Scores:
    """Score responses ``texts`` to ``prompts`` (N each; ``finished`` (N,) True where an eos
    ended the response) with the weights of update ``step``."""
    N, K = len(texts), len(objectives)
    raw = torch.as_tensor(np.asarray(reward_fn(prompts, texts)), dtype=torch.float32)
    if raw.shape != (N, K) or not torch.isfinite(raw).all():
        raise MormError(f"the reward gave scores of shape {tuple(raw.shape)} (expected "
                        f"({N}, {K})) or not finite ones", field="reward_model")
    z = standardize(raw, stats, moments, config)  # (N, K)
    w = weight_vector(config.weights_at(step) or dict.fromkeys(objectives, 1.0), objectives)
    w_t = torch.tensor(w, dtype=torch.float32)
    coef = lagrange.coefficients(core.scalarization_coefficients(z, w_t, config.scalarizer))
    score = lagrange.penalized(
        torch.as_tensor(scalarize(z.numpy(), w, config.scalarizer), dtype=torch.float32), z)
    cut = torch.zeros(N)
    if config.missing_eos_penalty is not None:
        cut = (~finished).float().cpu() * config.missing_eos_penalty
    # every objective's stream pays the cut (coef rows sum to 1), and so does R'
    return Scores(raw, z, w, coef, cut, score - cut)
