"""A PPO rollout and the forward passes over it, for `morm_explorer.policy.ppo`.

`generate` samples one response per prompt (chat template, left padding, KV cache) into a
`Rollout`: the prompt and response ids, their masks, which responses an eos ended, the decoded
texts, and what the sampling pass already computed of the policy that sampled: each sampled
token's log-probability, each position's entropy and (for a value head) last hidden state. Those
are the "old" policy's quantities of the step, so no second forward pass recomputes them.
`forward` gives the logits that predicted each response token, and the hidden states the value
head reads, under any policy; `reference_logits` those of the frozen reference. Both run the LM
head on the response positions only (``logits_to_keep``), never on the prompt.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from morm_explorer.policy.generate import format_prompt
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_core import entropy_from_logits, logprobs_from_logits


@dataclass
class Rollout:
    """One step's sampled responses, as the PPO update reads them."""

    query_responses: torch.Tensor  # (B, P + T) left-padded prompt, then the response
    attention_mask: torch.Tensor  # (B, P + T)
    context_length: int  # P
    responses: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) 1.0 up to and including the first eos
    finished: torch.Tensor  # (B,) True where an eos ended the response
    texts: list[str]  # the decoded responses, up to their first eos
    # Of the sampling policy, from the sampling pass's raw logits at ``temperature`` (before
    # top-p), i.e. what `forward` gives for the same policy, up to float rounding:
    logprobs: torch.Tensor  # (B, T) log p(response token)
    entropy: torch.Tensor  # (B, T) entropy of each position's distribution, in nats
    hidden: torch.Tensor | None  # (B, T, H) last hidden states, when asked for (value head)


def _keeps_logits(model: nn.Module) -> bool:
    """Whether ``model`` (or the model under its LoRA adapters) takes ``logits_to_keep``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def forward(model: nn.Module, rollout: Rollout, rows: torch.Tensor | slice,
            temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (b, T, V) at ``temperature`` that predicted each response token, and the last
    hidden states (b, T, H) of the positions that predicted them (where values are read).
    The LM head runs on the last T + 1 positions only: P - 1 .. P + T - 1, of which the
    last (predicting past the end) is dropped."""
    ids, attn = rollout.query_responses[rows], rollout.attention_mask[rows]
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left padding
    P, T = rollout.context_length, rollout.responses.shape[1]
    keep = {"logits_to_keep": T + 1} if _keeps_logits(model) else {}
    out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids,
                output_hidden_states=True, use_cache=False, **keep)
    logits = out.logits[:, -(T + 1):-1]  # (b, T, V)
    return logits / temperature, out.hidden_states[-1][:, P - 1:-1]


def reference_logits(model: nn.Module, ref: nn.Module | None, rollout: Rollout,
                     temperature: float) -> torch.Tensor:
    """The frozen reference's logits (B, T, V): ``ref``, or ``model`` with adapters off."""
    if ref is not None:
        return forward(ref, rollout, slice(None), temperature)[0]
    with model.disable_adapter():
        return forward(model, rollout, slice(None), temperature)[0]


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: list[str], config: PPOConfig,
             eos_ids: list[int], check_cancelled: Callable[[], None] | None = None,
             hidden: bool = False) -> Rollout:
    """One sampled response per prompt (chat template, left padding, KV cache);
    ``check_cancelled()`` runs after every token, so a cancel stops a long generation. The
    log-probabilities and entropies come from the logits generate computed to sample (raw,
    before temperature and top-p, divided by the temperature here, as `forward` does); with
    ``hidden`` the last hidden states too."""
    from transformers import GenerationConfig, StoppingCriteria

    class Cancel(StoppingCriteria):  # never stops generation; raises when cancelled
        def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
            if check_cancelled is not None:
                check_cancelled()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    special = not getattr(tokenizer, "chat_template", None)  # a template writes its own
    texts = [format_prompt(tokenizer, p) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=special).to(model.device)
    # A fresh GenerationConfig: no model default (repetition penalty, top-k) may reshape the
    # distribution the log-probabilities are later taken from.
    gen = GenerationConfig(do_sample=True, temperature=config.temperature, top_p=config.top_p,
                           top_k=0, max_new_tokens=config.max_new_tokens, num_beams=1,
                           eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id,
                           use_cache=True, return_dict_in_generate=True, output_logits=True,
                           output_hidden_states=hidden)
    res = model.generate(**enc, generation_config=gen, stopping_criteria=[Cancel()])
    out = res.sequences  # (B, P + T)
    P = enc["input_ids"].shape[1]
    responses = out[:, P:]  # (B, T)
    logits = torch.stack(res.logits, dim=1) / config.temperature  # (B, T, V) float32
    logprobs, entropy = logprobs_from_logits(logits, responses), entropy_from_logits(logits)
    del logits
    # hidden_states: per step, per layer (B, s, H); s = P at the first step, then 1
    last = (torch.cat([h[-1][:, -1:] for h in res.hidden_states], dim=1)  # (B, T, H)
            if hidden else None)
    del res
    T = responses.shape[1]
    is_eos = torch.isin(responses, torch.tensor(eos_ids, device=responses.device))
    finished = is_eos.any(1)
    first_eos = torch.where(finished, is_eos.int().argmax(1), T)  # (B,)
    mask = (torch.arange(T, device=out.device)[None] <= first_eos[:, None]).float()
    attn = torch.cat([enc["attention_mask"], torch.ones_like(responses)], dim=1)
    decoded = [tokenizer.decode(r[:n], skip_special_tokens=True).strip()
               for r, n in zip(responses.tolist(), first_eos.tolist(), strict=True)]
    return Rollout(out, attn, P, responses, mask, finished, decoded, logprobs, entropy, last)
