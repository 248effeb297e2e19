"""The update half of an RL step, shared by PPO, GRPO and RLOO (`morm_explorer.policy.ppo`):
each algorithm's advantages from the rollout's `Scores`, its minibatch loss, the epochs over
shuffled minibatches, and the reward and advantage statistics of a step.

The losses themselves are in `ppo_core` (PPO), `rl_grpo` and `rl_rloo`; this module only
chooses among them and feeds them their rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from morm_explorer.policy import ppo_core as core
from morm_explorer.policy import rl_grpo, rl_rloo
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_rollout import Rollout, forward
from morm_explorer.policy.rl_reward import Scores


def ppo_advantages(config: PPOConfig, s: Scores, kl: torch.Tensor, beta: float,
                   old_values: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO: per-token rewards (the score at the last token, -beta KL on every one) per
    objective, GAE per objective, combined with the coefficients: (advantages (B, T), returns
    (B, T, K))."""
    rewards = core.per_token_rewards((s.z - s.cut[:, None]).to(mask.device), kl, beta,
                                     mask)  # (B, T, K)
    advantages_k, returns = core.gae(rewards, old_values, mask, config.gamma, config.lam)
    advantages = (advantages_k * s.coef.to(mask.device)[:, None, :]).sum(-1)  # (B, T)
    if config.whiten_advantages:
        advantages = core.masked_whiten(advantages, mask) * mask
    return advantages, returns


def group_advantages(config: PPOConfig, s: Scores, kl: torch.Tensor, beta: float
                     ) -> torch.Tensor:
    """GRPO, RLOO: one advantage (N,) per response from its group. With the KL in the reward,
    beta times the response's summed k1 KL (N, T) -> (N,) is subtracted from R'
    (sum_then_normalize) or from every objective's reward (normalize_then_sum, where the
    coefficients, summing to 1, pay it once), as the missing-eos penalty already is."""
    G = config.group_size
    penalty = beta * kl.sum(1).cpu() if config.kl_in == "reward" else torch.zeros(len(s.score))
    if config.multi_objective_aggregation == "normalize_then_sum":
        per_objective = s.z - s.cut[:, None] - penalty[:, None]  # (N, K)
        return rl_grpo.normalize_then_sum(per_objective, s.coef, G)
    rewards = s.score - penalty  # (N,)
    if config.algorithm == "grpo":
        return rl_grpo.group_advantages(rewards, G, config.scale_rewards)
    return rl_rloo.rloo_advantages(rewards, G, normalize=config.whiten_advantages)


@dataclass
class StepTensors:
    """What the minibatch losses read of a step, N responses of T tokens."""

    responses: torch.Tensor  # (N, T)
    mask: torch.Tensor  # (N, T)
    old_logprobs: torch.Tensor  # (N, T)
    ref_logprobs: torch.Tensor  # (N, T)
    advantages: torch.Tensor  # (N, T) for PPO, (N,) for the group methods
    old_values: torch.Tensor | None  # (N, T, K), PPO only
    returns: torch.Tensor | None  # (N, T, K), PPO only
    beta: float  # the KL coefficient of the step


def minibatch_loss(config: PPOConfig, t: StepTensors, rows: torch.Tensor,
                   logits: torch.Tensor, hidden: torch.Tensor, value_head: nn.Module | None,
                   tokens_per_minibatch: float) -> tuple[torch.Tensor, dict]:
    """The loss of the responses ``rows`` whose logits (b, T, V) and hidden states (b, T, H)
    the policy just gave, and its statistics."""
    logprobs = core.logprobs_from_logits(logits, t.responses[rows])
    old, adv, mask = t.old_logprobs[rows], t.advantages[rows], t.mask[rows]
    if value_head is not None:
        pg, clip, akl = core.policy_loss(logprobs, old, adv, mask, config.cliprange)
        vf, vclip = core.value_loss(value_head(hidden), t.old_values[rows], t.returns[rows],
                                    mask, config.cliprange_value)
        return pg + config.vf_coef * vf, {"pg": pg, "clip": clip, "akl": akl, "vf": vf,
                                          "vclip": vclip}
    ref = t.ref_logprobs[rows] if config.kl_in == "loss" else None
    if config.algorithm == "grpo":
        pg, clip, akl = rl_grpo.grpo_loss(
            logprobs, old, adv, mask, config.cliprange, ref_logprobs=ref, beta=t.beta,
            loss_type=config.loss_type, max_new_tokens=config.max_new_tokens,
            tokens_per_minibatch=tokens_per_minibatch)
    else:
        pg, clip, akl = rl_rloo.rloo_loss(logprobs, old, adv, mask, config.cliprange,
                                          ref_logprobs=ref, beta=t.beta)
    return pg, {"pg": pg, "clip": clip, "akl": akl}


def epochs(config: PPOConfig, model: nn.Module, value_head: nn.Module | None, roll: Rollout,
           t: StepTensors, optimizer: torch.optim.Optimizer, params: list, seed: int,
           check_cancelled: Callable[[], None]) -> dict[str, list[float]]:
    """``ppo_epochs`` passes over the rollout's N responses in minibatches shuffled by
    ``seed``, one optimizer step each. Returns each statistic's values, one per minibatch."""
    N, mb = t.responses.shape[0], config.mini_batch_size
    tokens_per_minibatch = float(t.mask.sum()) / -(-N // mb)  # GRPO's "dapo" normalizer
    stats: dict[str, list[float]] = {}
    order_gen = torch.Generator().manual_seed(seed)
    for _ in range(config.ppo_epochs):
        order = torch.randperm(N, generator=order_gen)
        for start in range(0, N, mb):
            check_cancelled()
            rows = order[start:start + mb].to(t.responses.device)
            logits, hidden = forward(model, roll, rows, config.temperature)
            loss, values = minibatch_loss(config, t, rows, logits, hidden, value_head,
                                          tokens_per_minibatch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            for key, v in values.items():
                stats.setdefault(key, []).append(float(v.detach()))
    return stats


def reward_stats(s: Scores, objectives: list[str], group_size: int,
                 advantages: torch.Tensor) -> dict[str, float]:
    """TRL's per-objective reward statistics (``rewards/<objective>/mean`` and ``/std`` of the
    raw scores over the rollout), for the group methods the share of groups whose rewards R'
    all tie (``frac_reward_zero_std``), and the advantages' mean, std, min and max."""
    out = {}
    for k, o in enumerate(objectives):
        out[f"rewards/{o}/mean"] = float(s.raw[:, k].mean())
        out[f"rewards/{o}/std"] = float(s.raw[:, k].std()) if len(s.raw) > 1 else 0.0
    if group_size > 1:
        std = s.score.view(-1, group_size).std(1)
        out["frac_reward_zero_std"] = float(
            torch.isclose(std, torch.zeros_like(std)).float().mean())
    a = advantages.detach().float().cpu()
    out.update({"advantages/mean": float(a.mean()),
                "advantages/std": float(a.std()) if a.numel() > 1 else 0.0,
                "advantages/min": float(a.min()), "advantages/max": float(a.max())})
    return out
