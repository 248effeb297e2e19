"""Micro-batched fine-tuning steps: the chunks' gradients add up to the whole batch's, for pairs
(ties skipped or as 0.5, unlabelled objectives, centering) and for rated items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morm_explorer.reward import data as rdata
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.loop import _accumulate, _batch_loss


class _Rewards:
    """A linear reward over fixed text features, read through the whole 'model' (no cache)."""

    emb = None

    def __init__(self, split, n_texts: int, k: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.split = split
        self.x = torch.randn(n_texts, 5, generator=g)
        self.w = torch.nn.Parameter(torch.randn(5, k, generator=g))

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        return torch.tanh(self.x[torch.as_tensor(idx)]) @ self.w


def _pairs(n: int, k: int, rng) -> rdata.PairSet:
    t = rng.choice([1.0, 0.0, 0.5, np.nan], size=(n, k), p=[0.4, 0.3, 0.15, 0.15])
    return rdata.PairSet(prompts=["p"] * (2 * n), responses=["r"] * (2 * n),
                         ia=np.arange(n), ib=np.arange(n, 2 * n), targets=t, records=[])


def _grad(rewards, idx, targets, cfg, weights, micro: bool):
    rewards.w.grad = None
    if micro:
        loss, per_obj = _accumulate(rewards, idx, targets, cfg, weights)
    else:
        loss, per_obj = _batch_loss(rewards, idx, targets, cfg, weights)
        loss.backward()
    return float(loss.detach()), per_obj.detach().numpy(), rewards.w.grad.clone().numpy()


@pytest.mark.parametrize("ties,center", [("skip", 0.0), ("half", 0.0), ("skip", 0.1)])
def test_micro_batches_add_up_to_the_whole_batch_on_pairs(ties, center):
    rng = np.random.default_rng(1)
    split = _pairs(23, 3, rng)
    rewards = _Rewards(split, 46, 3)
    targets = torch.tensor(split.targets, dtype=torch.float32)
    weights = torch.tensor([1.0, 0.5, 2.0])
    idx = rng.permutation(23)
    cfg = TrainConfig(dataset="d", name="m", mode="full", micro_batch_size=4, ties=ties,
                      center_coef=center)
    whole = _grad(rewards, idx, targets, cfg, weights, micro=False)
    chunks = _grad(rewards, idx, targets, cfg, weights, micro=True)
    assert chunks[0] == pytest.approx(whole[0], rel=1e-5)
    np.testing.assert_allclose(chunks[1], whole[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunks[2], whole[2], rtol=1e-5, atol=1e-7)


def test_micro_batches_add_up_to_the_whole_batch_on_rated_items():
    rng = np.random.default_rng(2)
    t = rng.normal(size=(17, 2))
    t[rng.random(t.shape) < 0.2] = np.nan
    split = rdata.ItemSet(prompts=["p"] * 17, responses=["r"] * 17, targets=t)
    rewards = _Rewards(split, 17, 2)
    targets = torch.tensor(t, dtype=torch.float32)
    weights = torch.tensor([1.0, 3.0])
    cfg = TrainConfig(dataset="d", name="m", mode="lora", micro_batch_size=5)
    idx = rng.permutation(17)
    whole = _grad(rewards, idx, targets, cfg, weights, micro=False)
    chunks = _grad(rewards, idx, targets, cfg, weights, micro=True)
    assert chunks[0] == pytest.approx(whole[0], rel=1e-5)
    np.testing.assert_allclose(chunks[2], whole[2], rtol=1e-5, atol=1e-7)


def test_micro_batch_size_is_checked():
    from morm_explorer.errors import MormError

    with pytest.raises(MormError, match="micro_batch_size"):
        TrainConfig(dataset="d", name="m", micro_batch_size=0)
