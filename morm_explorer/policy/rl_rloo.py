"""RLOO's math, read top to bottom: leave-one-out advantages and the clipped sequence-level
loss. Pure tensor functions; the trainer is `morm_explorer.policy.ppo`.

REINFORCE Leave-One-Out (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for
free!"; Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
Learning from Human Feedback in LLMs", arXiv:2402.14740) treats a whole response as one action.
With G responses per prompt, response i's baseline is the mean reward of the other G - 1,

    A_i = r_i - 1/(G-1) sum_{j != i} r_j,

an unbiased baseline that needs no critic. The reward carries the KL penalty when it is in
the reward: r_i = R_i - beta sum_t log(pi / pi_ref) (k1 summed over the response, as the
paper and TRL's RLOOTrainer). As TRL's RLOOTrainer (trl 1.16, trl/trainer/rloo_trainer.py,
`_generate_and_score_completions` and `_compute_loss`), updates on a rollout are clipped at
the sequence level: rho_i = exp(sum_t log pi - log pi_old) and the loss is
-min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps) A_i), averaged over responses; the advantages
may be z-scored over the rollout (TRL's ``normalize_advantages``, here
``whiten_advantages``). With the KL in the loss instead (``kl_in = "loss"``, not in TRL's
RLOO), beta times the response's summed k3 estimate is added per response.

Multi-objective: "sum_then_normalize" takes the advantage of the scalarized reward, as above.
"normalize_then_sum" is `rl_grpo.normalize_then_sum`: a leave-one-out advantage is
r_i - mean_{j != i} r_j = G/(G-1) (r_i - mean_j r_j), the group-mean advantage times a
constant, which the final z-scoring over the rollout removes; the two methods then differ
only in their losses.

Rows are grouped in runs of G: prompt j's responses are rows jG .. jG + G - 1.
"""

from __future__ import annotations

import torch

from morm_explorer.policy.rl_grpo import EPS, kl_k3


def rloo_advantages(rewards: torch.Tensor, group_size: int, normalize: bool = False
                    ) -> torch.Tensor:
    """Advantages (N,) of rewards (N,): minus the mean of the other G - 1 rewards of the group;
    z-scored over the rollout when ``normalize``."""
    grouped = rewards.view(-1, group_size)  # (B, G)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)  # (B, G)
    advantages = (grouped - baseline).reshape(-1)
    if normalize:
        advantages = (advantages - advantages.mean()) / (advantages.std() + EPS)
    return advantages


def rloo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, epsilon: float, *, ref_logprobs: torch.Tensor | None = None,
              beta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RLOO's loss of a minibatch of b responses: (loss, clipfrac, approxkl).

    rho = exp(sum_t (log pi - log pi_old)) per response (b,); loss = mean over responses of
    -min(rho A, clip(rho, 1 - eps, 1 + eps) A), plus beta sum_t k3 when ``ref_logprobs`` are
    given. clipfrac is the share of responses whose ratio is clipped in the direction of their
    advantage (TRL's clip_ratio/region_mean); approxkl = mean 0.5 (log rho)^2."""
    log_ratio = ((logprobs - old_logprobs) * mask).sum(-1)  # (b,)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    loss = -torch.min(ratio * advantages, clipped * advantages).mean()
    if ref_logprobs is not None and beta:
        loss = loss + beta * (kl_k3(logprobs, ref_logprobs) * mask).sum(-1).mean()
    region = ((ratio < 1 - epsilon) & (advantages < 0)) | ((ratio > 1 + epsilon)
                                                           & (advantages > 0))
    return loss, region.float().mean().detach(), (0.5 * log_ratio ** 2).mean().detach()
