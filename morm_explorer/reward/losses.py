"""Preference losses, as pure tensor functions.

Bradley-Terry per objective (Bradley & Terry 1952; the reward-model loss of Ouyang et al. 2022):
P(a > b) = sigmoid(r_a - r_b), L_pref,k = -log sigmoid(r_a - r_b - m) for a pair labelled "a".
Labels per objective are encoded as targets y in {1 (a), 0 (b), 0.5 (tie), NaN (unlabelled)};
unlabelled objectives are masked out, never treated as ties. The total is
L = sum_k w_k L_pref,k, each L_pref,k a mean over the pairs labelled for k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LABEL_TARGET = {"a": 1.0, "b": 0.0, "tie": 0.5}


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Mean of x over dim where mask is true; 0 where nothing is masked in."""
    m = mask.to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def bradley_terry_loss(
    r_a: torch.Tensor,
    r_b: torch.Tensor,
    target: torch.Tensor,
    margin: float = 0.0,
    skip_ties: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-objective Bradley-Terry loss.

    r_a, r_b, target: (B, K); target NaN where unlabelled. Returns (loss (K,), count (K,)).
    A margin m shifts decided pairs only: -log sigmoid(d - m) for "a", -log sigmoid(-d - m)
    for "b", where d = r_a - r_b. A tie (0.5) is binary cross-entropy against 0.5, whose
    minimum is at d = 0.
    """
    labelled = ~torch.isnan(target)
    if skip_ties:
        labelled &= target != 0.5
    y = torch.nan_to_num(target, nan=0.5)
    d = r_a - r_b
    sign = torch.where(y > 0.5, 1.0, torch.where(y < 0.5, -1.0, 0.0))  # (B, K)
    d = d - margin * sign  # ties are not shifted
    per_pair = F.binary_cross_entropy_with_logits(d, y, reduction="none")
    return masked_mean(per_pair, labelled), labelled.sum(0)


def centering_loss(r_a: torch.Tensor, r_b: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TRL's reward-centering term, mean((r_a + r_b)^2) over labelled pairs, per objective (K,).
    It pins the reward's free offset near 0 (Eisenstein et al. 2023)."""
    return masked_mean((r_a + r_b) ** 2, ~torch.isnan(target))


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per objective over rated items; pred, target (B, K), NaN = unrated."""
    rated = ~torch.isnan(target)
    return masked_mean((pred - torch.nan_to_num(target)) ** 2, rated)


def weighted_total(per_objective: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L = sum_k w_k L_k. per_objective, weights: (K,)."""
    return (per_objective * weights).sum()
