"""GRPO's math, read top to bottom: group advantages, GDPO's multi-objective aggregation, and
the clipped token-level loss with its KL term. Pure tensor functions; the trainer is
`morm_explorer.policy.ppo`.

GRPO (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300, eq. 3 and section 4.1.2) samples G
responses o_1..o_G per prompt q and replaces PPO's critic by the group's statistics: response
i's advantage, shared by all its tokens, is

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)

and the policy maximizes, per token t of o_i, the clipped surrogate

    min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i) - beta D_KL,   rho_it = pi / pi_old,

with the KL to the reference estimated per token by k3 = pi_ref/pi - log(pi_ref/pi) - 1
(Schulman 2020), unbiased and never negative. As TRL's GRPOTrainer (trl 1.16,
trl/trainer/grpo_trainer.py, `_generate_and_score_completions` and `_compute_loss`): the std
is Bessel-corrected and gets 1e-4 added, ``scale_rewards`` chooses the group's std, the
rollout's, or none (Dr. GRPO, Liu et al. 2025), and ``loss_type`` how token losses are
averaged (`aggregate`).

Multi-objective (TRL's ``multi_objective_aggregation``): "sum_then_normalize" scalarizes the K
rewards and takes the advantage of the sum, as above; "normalize_then_sum" (GDPO,
arXiv:2601.05242) normalizes each objective within its group, sums them with the
weights, and normalizes the sum over the rollout (`normalize_then_sum`).

Rows are grouped in runs of G: prompt j's responses are rows jG .. jG + G - 1.
Shapes: N responses (B prompts x G), b responses of a minibatch, T tokens, K objectives.
"""

from __future__ import annotations

import torch

EPS = 1e-4  # TRL's: added to every std a reward is divided by


def group_advantages(rewards: torch.Tensor, group_size: int,
                     scale_rewards: str = "group") -> torch.Tensor:
    """Advantages (N,) of rewards (N,): minus the group mean, divided by the group's std + EPS
    ("group"), by the rollout's ("batch"), or not ("none")."""
    grouped = rewards.view(-1, group_size)  # (B, G)
    advantages = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)  # (N,)
    if scale_rewards == "group":
        std = grouped.std(1, keepdim=True).expand_as(grouped).reshape(-1)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    elif scale_rewards == "none":
        return advantages
    else:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}")
    return advantages / (std + EPS)


def normalize_then_sum(scores: torch.Tensor, coef: torch.Tensor,
                       group_size: int) -> torch.Tensor:
    """GDPO's advantages (N,) of per-objective rewards (N, K) combined with coefficients (N, K).

    Each objective is z-scored within its group, (r_k - mean_k) / (std_k + EPS); the K results
    are summed with the coefficients; the sum is z-scored over the rollout. With every row of
    ``coef`` equal to the weights this is TRL's "normalize_then_sum". Rows of ``coef`` may
    differ: a non-linear scalarizer's gradient (`ppo_core.scalarization_coefficients`: the
    binding objective of chebyshev and min) and the Lagrange multipliers of constraints enter
    here, as they combine PPO's per-objective advantages."""
    N, K = scores.shape
    grouped = scores.view(-1, group_size, K)  # (B, G, K)
    mean_k, std_k = grouped.mean(1, keepdim=True), grouped.std(1, keepdim=True)
    per_objective = ((grouped - mean_k) / (std_k + EPS)).view(N, K)
    rewards = (per_objective * coef).sum(1)  # (N,)
    return (rewards - rewards.mean()) / (rewards.std() + EPS)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """The k3 estimate (b, T) of KL(pi || pi_ref) per sampled token:
    exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, *,
              max_new_tokens: int, tokens_per_minibatch: float) -> torch.Tensor:
    """Token losses (b, T) to one number, per TRL's ``loss_type``: "grpo" averages each
    response's tokens then the responses (the paper's 1/G sum_i 1/|o_i| sum_t; biased towards
    short responses with positive advantages); "bnpo" divides by the minibatch's tokens;
    "dr_grpo" by b x max_new_tokens (Dr. GRPO); "dapo" (TRL's default) by the rollout's
    response tokens over its number of minibatches, ``tokens_per_minibatch``, so every token
    of a rollout weighs the same whatever minibatch it falls in (DAPO, Yu et al. 2025)."""
    total = (per_token * mask).sum()
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return total / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return total / (per_token.shape[0] * max_new_tokens)
    if loss_type == "dapo":
        return total / max(tokens_per_minibatch, 1.0)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, epsilon: float, *, ref_logprobs: torch.Tensor | None = None,
              beta: float = 0.0, loss_type: str = "dapo", max_new_tokens: int = 1,
              tokens_per_minibatch: float = 1.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GRPO's loss of a minibatch: (loss, clipfrac, approxkl).

    Per token: -min(rho A, clip(rho, 1 - eps, 1 + eps) A) with rho = exp(log pi - log pi_old)
    and A (b,) the response's advantage, plus beta k3 when ``ref_logprobs`` are given (the KL
    in the loss), averaged by `aggregate`. clipfrac is TRL's clip_ratio/region_mean (tokens
    whose ratio is clipped in the direction of their advantage); approxkl = mean 0.5 (log
    rho)^2, as PPO's."""
    A = advantages[:, None]  # (b, 1): every token of a response shares its advantage
    log_ratio = logprobs - old_logprobs  # (b, T)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(ratio * A, clipped * A)
    if ref_logprobs is not None and beta:
        per_token = per_token + beta * kl_k3(logprobs, ref_logprobs)
    loss = aggregate(per_token, mask, loss_type, max_new_tokens=max_new_tokens,
                     tokens_per_minibatch=tokens_per_minibatch)
    n = mask.sum().clamp(min=1.0)
    region = ((ratio < 1 - epsilon) & (A < 0)) | ((ratio > 1 + epsilon) & (A > 0))
    clipfrac = (region.float() * mask).sum() / n
    approxkl = 0.5 * (log_ratio ** 2 * mask).sum() / n
    return loss, clipfrac.detach(), approxkl.detach()
