"""Reward models with one reward per objective, behind one interface:
``score(prompts, responses) -> (N, K)``.

- multi_head: one backbone, K heads reading the same pooled vector;
- separate: K single-head models, each with its own backbone, trained on its own labels.
  With a frozen backbone the K backbones would be identical copies, so one is shared; the heads
  stay independent (each trained only on its objective's loss).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from morm_explorer.reward.backbone import Backbone
from morm_explorer.reward.config import ModelConfig


class Heads(nn.Module):
    """K heads over a pooled vector: (B, H) -> (B, K). Linear heads are one (K, H) matrix so
    that they collapse exactly into a transformers classifier on export."""

    def __init__(self, hidden: int, k: int, kind: str = "linear", width: int = 256,
                 bias: bool = True) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.linear = nn.Linear(hidden, k, bias=bias)
            nn.init.normal_(self.linear.weight, std=1.0 / hidden**0.5)
            if bias:
                nn.init.zeros_(self.linear.bias)
        else:
            self.mlps = nn.ModuleList(
                nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, 1))
                for _ in range(k)
            )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return self.linear(h)
        return torch.cat([mlp(h) for mlp in self.mlps], dim=-1)


class RewardModel(nn.Module):
    """Backbone(s) plus heads. ``backbones`` has one entry (multi_head, or separate with a
    frozen backbone) or K entries (separate, fine-tuned); head k reads backbone k."""

    def __init__(self, config: ModelConfig, backbones: list[Backbone],
                 heads_bias: bool | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbones = nn.ModuleList(backbones)
        # True when the backbone weights are the pretrained ones (frozen training): pooled
        # embeddings of a text never change, so they can come from an embedding cache.
        self.frozen_backbone = False
        k = len(config.objectives)
        # Decoder classifiers in transformers have no bias: leave it out so export is exact.
        bias = (not backbones[0].decoder) if heads_bias is None else heads_bias
        n_heads = k if len(backbones) == 1 else 1
        self.heads = nn.ModuleList(
            Heads(b.hidden_size, n_heads, config.head, config.head_hidden, bias)
            for b in backbones
        )

    @property
    def objectives(self) -> list[str]:
        return list(self.config.objectives)

    @property
    def device(self) -> torch.device:
        return self.backbones[0].device

    def rewards_from_embeddings(self, h: list[torch.Tensor]) -> torch.Tensor:
        """Rewards (B, K) from pooled vectors, one (B, H) per backbone."""
        return torch.cat([head(x) for head, x in zip(self.heads, h, strict=True)], dim=-1)

    def embed(self, prompts: list[str], responses: list[str]) -> list[torch.Tensor]:
        if len(self.backbones) == 1:
            return [self.backbones[0].embed(prompts, responses)]
        enc = self.backbones[0].tokenize(prompts, responses)  # same tokenizer for all K
        return [b(enc) for b in self.backbones]

    def forward(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.rewards_from_embeddings(self.embed(prompts, responses))

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str], batch_size: int = 64,
              progress=None) -> np.ndarray:
        """Per-objective rewards (N, K), batched by similar length (less padding);
        ``progress(done, total)`` after each batch. CUDA runs under bf16 autocast (fp16 where
        the card has no bf16)."""
        was_training = self.training
        self.eval()
        # length bucketing: sorted by token count, each batch pads to its own longest
        order = np.argsort(self.backbones[0].lengths(prompts, responses), kind="stable") \
            if len(prompts) else np.zeros(0, dtype=np.int64)
        out = np.zeros((len(prompts), len(self.objectives)), dtype=np.float32)
        autocast = self.device.type == "cuda"
        dtype = torch.bfloat16 if not autocast or torch.cuda.is_bf16_supported() \
            else torch.float16
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            with torch.autocast("cuda", dtype=dtype, enabled=autocast):
                r = self([prompts[i] for i in idx], [responses[i] for i in idx])
            out[idx] = r.float().cpu().numpy()
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        self.train(was_training)
        return out


def build_model(config: ModelConfig, n_backbones: int = 1, device: str = "cpu") -> RewardModel:
    """A fresh model from its config: pretrained backbone(s), newly initialised heads."""
    backbones = [Backbone(config.backbone, config.pooling, config.max_length)
                 for _ in range(n_backbones)]
    return RewardModel(config, backbones).to(device)
