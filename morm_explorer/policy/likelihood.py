"""Log-probabilities of given responses under a policy, teacher-forced: what measures the KL
of a comparison's samples from the base policy (`morm_explorer.evaluation.compare`).

The prompt goes through the chat template exactly as in sampling (`generate.format_prompt`);
the per-token log-probabilities are `ppo_core.logprobs_from_logits`, as in PPO.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from morm_explorer.errors import MormError
from morm_explorer.policy.generate import format_prompt
from morm_explorer.policy.ppo_core import logprobs_from_logits


def sequence_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      prompts: list[str], responses: list[str], ends: list[bool] | None = None,
                      batch_size: int = 16, system: str | None = None) -> np.ndarray:
    """log p(response | prompt) (N,) under ``model``, teacher-forced: the prompt through the
    chat template (`format_prompt`, as in sampling), the response text re-tokenized, plus the
    eos token where ``ends[i]`` (the response ended by itself); the sum over response tokens
    of `logprobs_from_logits`. Re-tokenizing decoded text equals the sampled tokens up to the
    tokenizer's round trip. Right padding, batches of similar length."""
    if len(prompts) != len(responses) or (ends is not None and len(ends) != len(prompts)):
        raise MormError("prompts, responses and ends must have the same length")
    special = not getattr(tokenizer, "chat_template", None)
    ctx = tokenizer([format_prompt(tokenizer, p, system) for p in prompts],
                    add_special_tokens=special)["input_ids"]
    resp = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    if ends is not None:
        resp = [r + [tokenizer.eos_token_id] if e else r for r, e in zip(resp, ends, strict=True)]
    order = sorted(range(len(prompts)), key=lambda i: len(ctx[i]) + len(resp[i]))
    out = np.zeros(len(prompts))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        T = max(len(ctx[i]) + len(resp[i]) for i in rows)
        ids = torch.full((len(rows), T), pad, dtype=torch.long)  # (B, T), right padded
        attn = torch.zeros((len(rows), T), dtype=torch.long)
        mask = torch.zeros((len(rows), T - 1))  # (B, T-1): 1 where the target is a response token
        for j, i in enumerate(rows):
            c, r = len(ctx[i]), len(resp[i])
            ids[j, :c + r] = torch.tensor(ctx[i] + resp[i], dtype=torch.long)
            attn[j, :c + r] = 1
            mask[j, c - 1:c + r - 1] = 1.0  # logits at t predict token t + 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device),
                           attention_mask=attn.to(model.device)).logits  # (B, T, V)
            lp = logprobs_from_logits(logits[:, :-1], ids[:, 1:].to(model.device))  # (B, T-1)
        out[rows] = (lp.cpu() * mask).sum(1).double().numpy()
    return out
