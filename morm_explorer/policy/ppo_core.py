"""The math of multi-objective PPO for language models, as pure typed tensor functions.

Nothing here knows about models, tokenizers or files: masked statistics (as TRL's
`masked_mean` / `masked_whiten`), log-probabilities and entropies from logits, the per-token
KL penalty, GAE over an optional trailing objective axis K, the clipped PPO losses, the KL
controllers of Ziegler et al. (2019), running reward statistics, how a scalarizer turns K
per-objective advantages into one, and Lagrange multipliers for constraints (Safe RLHF,
Dai et al. 2023). The trainer that strings them together is `morm_explorer.policy.ppo`.

Shapes: B responses, T response tokens, V vocabulary, K objectives. ``mask`` is 1.0 on
response tokens (up to and including the first eos) and 0.0 on padding after it; per row it
is a prefix (ones, then zeros).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# -- masked statistics ---------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (``mask`` broadcasts to ``x``,
    e.g. (B, T, 1) against (B, T, K)); over all entries, or along ``dim``."""
    mask = mask.to(x.dtype).expand_as(x)
    if dim is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim) / mask.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked entries, with Bessel's correction when ``unbiased``."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).expand_as(x).sum()
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``x`` scaled to unit variance over the masked entries, and centred when
    ``shift_mean`` (else its mean is kept)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


# -- log-probabilities, entropy, KL -----------------------------------------------------------


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) (B, T) under logits (B, T, V): the label's logit minus the logsumexp over
    the vocabulary, in float32, one row at a time, so no (B, T, V) log-softmax is ever held
    (nor kept for the backward pass); TRL's `selective_log_softmax`."""
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1).float()  # (B, T)
    lse = torch.stack([torch.logsumexp(row.float(), dim=-1) for row in logits])  # (B, T)
    return picked - lse


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (B, T) of the categorical distributions of logits (B, T, V), in nats."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token KL estimates (B, T) of the policy from the reference on sampled tokens:
    (k1, k3). k1 = log pi - log pi_ref is unbiased and sums over a response to
    log pi(y|x) - log pi_ref(y|x); it is what the reward is penalized by. k3 = (r - 1) - log r
    with r = pi_ref / pi is unbiased and never negative (Schulman 2020, "Approximating KL
    divergence"); logged beside it."""
    k1 = logprobs - ref_logprobs
    log_ratio = ref_logprobs - logprobs
    k3 = torch.expm1(log_ratio) - log_ratio
    return k1, k3


def per_token_rewards(score: torch.Tensor, kl: torch.Tensor, kl_coef: float,
                      mask: torch.Tensor) -> torch.Tensor:
    """Rewards (B, T) of Ziegler et al.: -beta * KL on every response token, plus the score
    (B,) on the last one. A score (B, K) gives rewards (B, T, K): the KL penalty enters each
    objective's stream, so any combination with coefficients summing to 1 pays it once."""
    mask = mask.to(kl.dtype)
    T = mask.shape[1]
    last = T - 1 - mask.flip(1).argmax(1)  # (B,) index of the last response token
    at_last = F.one_hot(last, T).to(kl.dtype) * mask  # (B, T); all-zero for an empty row
    penalty = -kl_coef * kl * mask  # (B, T)
    if score.dim() == 1:
        return penalty + at_last * score[:, None]
    return penalty[..., None] + at_last[..., None] * score[:, None, :]  # (B, T, K)


# -- advantages ------------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016), by a reverse loop over T.

    ``rewards`` and ``values`` are (B, T) or (B, T, K) (one stream per objective); ``mask`` is
    (B, T). delta_t = r_t + gamma V_{t+1} - V_t and A_t = delta_t + gamma lam A_{t+1}, with
    V and A zero after a response's last token. Returns (advantages, returns = A + V), zero
    on padding.
    """
    m = mask.to(values.dtype)
    if values.dim() == 3:
        m = m[..., None]  # (B, T, 1)
    values, rewards = values * m, rewards * m
    T = rewards.shape[1]
    last_gae = torch.zeros_like(values[:, 0])
    advantages = []
    for t in reversed(range(T)):
        next_values = values[:, t + 1] if t + 1 < T else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages.append(last_gae)
    adv = torch.stack(advantages[::-1], dim=1) * m
    return adv, (adv + values) * m


# -- losses ----------------------------------------------------------------------------------


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, mean over response tokens: (loss, clipfrac, approxkl).

    loss = mean max(-A r, -A clip(r, 1 - eps, 1 + eps)) with r = pi / pi_old; clipfrac is the
    share of tokens where the clipped term wins; approxkl = mean 0.5 (log r)^2."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approxkl = 0.5 * masked_mean(log_ratio ** 2, mask)
    return loss, clipfrac.detach(), approxkl.detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 mean max((V - R)^2, (V_clip - R)^2), V_clip = V_old +
    clip(V - V_old, +-eps); values (B, T) or (B, T, K), mean over tokens (and objectives).
    Returns (loss, clipfrac)."""
    m = mask if values.dim() == mask.dim() else mask[..., None]
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    err, err_clipped = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), m)
    clipfrac = masked_mean((err_clipped > err).float(), m)
    return loss, clipfrac.detach()


# -- controllers and statistics --------------------------------------------------------------


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019), eq. 2: beta <- beta (1 + clip(KL / target - 1, -0.2, 0.2) n / H),
    after each batch of n responses whose mean KL (nats per response) was ``current_kl``."""

    def __init__(self, kl_coef: float, target: float, horizon: int) -> None:
        super().__init__(kl_coef)
        self.target, self.horizon = float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


class RunningMoments:
    """Running mean and std per objective of everything seen so far (Chan et al.'s parallel
    update), for z-scoring rewards that come without stored statistics."""

    def __init__(self, k: int) -> None:
        self.mean, self.var, self.count = [0.0] * k, [1.0] * k, 0

    def update(self, x: torch.Tensor) -> None:
        """Add a batch x (N, K)."""
        x = x.double()
        n = x.shape[0]
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        mean, var = torch.tensor(self.mean, dtype=torch.float64), torch.tensor(self.var,
                                                                              dtype=torch.float64)
        total = self.count + n
        delta = b_mean - mean
        new_mean = mean + delta * n / total
        m2 = var * self.count + b_var * n + delta ** 2 * self.count * n / total
        self.mean, self.var, self.count = new_mean.tolist(), (m2 / total).tolist(), total

    @property
    def std(self) -> list[float]:
        return [max(math.sqrt(v), 1e-6) for v in self.var]

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = list(state["mean"]), list(state["var"]), state["count"]


# -- scalarization and constraints -----------------------------------------------------------


def scalarization_coefficients(scores: torch.Tensor, weights: torch.Tensor,
                               method: str) -> torch.Tensor:
    """Coefficients c (B, K), each row summing to 1, with which response b's K per-objective
    advantages combine into the one the policy follows: A_b = sum_k c_bk A_bk.

    c is the gradient of the scalarizer R(r) at the response's scores (B, K), normalized:
    weighted_sum gives w / sum(w) on every row (then A is exactly the advantage of R, as GAE is
    linear); min gives the one-hot of the worst weighted objective; chebyshev (ideal point =
    the batch's best score per objective, as `morm_explorer.objectives.scalarize`) the one-hot
    of the objective with the largest weighted gap w_k (z_k - r_k). Those two are not linear,
    so per response the policy climbs the objective that binds.
    """
    B, K = scores.shape
    w = weights.to(scores.dtype)
    if method == "weighted_sum":
        return (w / w.sum()).expand(B, K).clone()
    if method == "min":
        masked = scores.masked_fill(w <= 0, math.inf)  # only weighted objectives count
        return F.one_hot(masked.argmin(1), K).to(scores.dtype)
    if method == "chebyshev":
        gap = (w * (scores.max(0).values - scores)).masked_fill(w <= 0, -math.inf)
        return F.one_hot(gap.argmax(1), K).to(scores.dtype)
    raise ValueError(f"unknown scalarizer {method!r}")


class LagrangeMultipliers:
    """One multiplier lambda_j >= 0 per constraint E[r_j] >= tau_j (Safe RLHF's dual ascent).

    The policy maximizes the Lagrangian E[R_w] + sum_j lambda_j (E[r_j] - tau_j); divided by
    (1 + sum_j lambda_j) so that the reward keeps its scale as multipliers grow, its
    per-response reward is

        R' = (R_w + sum_j lambda_j r_j) / (1 + sum_j lambda_j)       (`penalized`)

    and the coefficients of the per-objective advantages become
    c' = (c + sum_j lambda_j e_j) / (1 + sum_j lambda_j), still summing to 1
    (`coefficients`). After each batch, `update` takes a step of dual ascent:
    lambda_j <- max(0, lambda_j + lr (tau_j - mean_j)), so a violated constraint weighs more
    and a satisfied one relaxes to 0.
    """

    def __init__(self, index: Sequence[int], thresholds: Sequence[float], lr: float,
                 init: float = 0.0) -> None:
        self.index = list(index)  # objective index k of each constraint j
        self.thresholds = [float(t) for t in thresholds]
        self.lr = float(lr)
        self.values = [float(init)] * len(self.index)

    def update(self, observed_means: Sequence[float]) -> None:
        """Dual ascent with the batch means (J,) of the constrained objectives' rewards."""
        self.values = [max(0.0, lam + self.lr * (tau - float(m))) for lam, tau, m in
                       zip(self.values, self.thresholds, observed_means, strict=True)]

    def _extra(self, k: int, like: torch.Tensor) -> torch.Tensor:
        extra = torch.zeros(k, dtype=like.dtype, device=like.device)
        for j, lam in zip(self.index, self.values, strict=True):
            extra[j] += lam
        return extra  # (K,) sum_j lambda_j e_j

    def penalized(self, scalarized: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """R' (B,) from the scalarized rewards R_w (B,) and the per-objective ones (B, K)."""
        extra = self._extra(scores.shape[1], scores)
        return (scalarized + scores @ extra) / (1.0 + sum(self.values))

    def coefficients(self, coef: torch.Tensor) -> torch.Tensor:
        """c' (B, K) from the scalarizer's coefficients c (B, K)."""
        return (coef + self._extra(coef.shape[1], coef)) / (1.0 + sum(self.values))

    def state_dict(self) -> dict:
        return {"values": self.values}

    def load_state_dict(self, state: dict) -> None:
        self.values = [float(v) for v in state["values"]]
