"""Sampling responses from a causal-LM policy: N samples per prompt, batched and seeded.

`sample` formats each prompt with the tokenizer's chat template, sorts prompts by token length
so a batch pads little, puts a prompt's N copies side by side in a batch, and calls
``model.generate`` (KV cache, left padding) under ``torch.inference_mode``. Each batch draws
from its own seed, derived from (seed, batch index), so the same prompts and config give the
same responses on a device whatever ran before. Loading the policy is
`morm_explorer.policy.load`; scoring responses is the reward models' job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from morm_explorer.chat_template import render_chat
from morm_explorer.errors import MormError
from morm_explorer.policy.config import SamplingConfig


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str,
                  system: str | None = None) -> str:
    """The text the policy continues: a user turn (after an optional system turn) and the
    assistant's header from the chat template, or the plain prompt (after the system text) when
    the tokenizer has no template."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages.append({"role": "user", "content": prompt})
        return render_chat(tokenizer, messages, add_generation_prompt=True)
    return prompt if system is None else f"{system}\n\n{prompt}"


def response_length(ids: Sequence[int], eos_ids: set[int]) -> tuple[int, str]:
    """(tokens before the first eos, why generation stopped) for one generated sequence:
    ``"eos"`` if an eos token ends it, else ``"length"`` (max_new_tokens reached). Everything
    from the eos on (the eos itself, then padding) is not part of the response."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return i, "eos"
    return len(ids), "length"


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends a response: the generation config's (a list for some models,
    e.g. Llama 3's end-of-turn and end-of-text) and the tokenizer's eos."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise MormError("the policy has no eos token: responses would never end")
    return ids


def _batch_seed(seed: int, batch: int) -> int:
    # SeedSequence mixes (seed, batch) into independent streams: seeds 0 and 1 never share a
    # batch's draws, as a plain seed + batch would (seed 0 batch 1 == seed 1 batch 0).
    return int(np.random.SeedSequence([seed, batch]).generate_state(1, dtype=np.uint64)[0])


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: SamplingConfig,
    progress: Callable[[int, int], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> list[list[dict[str, Any]]]:
    """``config.n`` responses to each prompt, in prompt order: for prompt i, a list of
    ``{"response": str, "n_tokens": int, "finish": "eos" | "length"}`` where ``response`` is
    the decoded text without special tokens or surrounding whitespace and ``n_tokens`` counts
    the generated tokens before the eos.

    With temperature 0 decoding is greedy: each prompt is generated once and its response
    repeated n times. ``progress(done, total)`` is called after each batch with sequences
    generated so far; ``check_cancelled()`` before each batch (it raises to stop).
    Reproducible for the same prompts and config on one device; batches depend on all the
    prompts (they are sorted by length) and on batch_size, so a prompt's samples change when
    other prompts are added or batch_size changes.
    """
    if tokenizer.pad_token_id is None:
        raise MormError("the tokenizer has no pad token; load the policy with load_policy")
    texts = [format_prompt(tokenizer, p, config.system) for p in prompts]
    # A chat template writes its own special tokens (a Llama 3 template starts with BOS).
    special = not getattr(tokenizer, "chat_template", None)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
    copies = 1 if config.greedy else config.n
    # One row per (prompt, copy), shortest prompts first; a prompt's copies are adjacent.
    rows = [i for i in sorted(range(len(texts)), key=lambda i: (lengths[i], i))
            for _ in range(copies)]
    batches = [rows[s:s + config.batch_size] for s in range(0, len(rows), config.batch_size)]
    eos_ids = _eos_ids(model, tokenizer)
    knobs: dict[str, Any] = {"do_sample": False}
    if not config.greedy:  # top_k=0: nucleus sampling alone decides, not a model default
        knobs = {"do_sample": True, "temperature": config.temperature,
                 "top_p": config.top_p, "top_k": 0}
    results: list[list[dict[str, Any]]] = [[] for _ in prompts]
    for b, batch in enumerate(batches):
        if check_cancelled is not None:
            check_cancelled()
        enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                        padding_side="left", add_special_tokens=special).to(model.device)
        devices = [model.device] if model.device.type == "cuda" else []
        # fork_rng: seed this batch without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(_batch_seed(config.seed, b))
            out = model.generate(**enc, max_new_tokens=config.max_new_tokens, use_cache=True,
                                 eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id,
                                 num_beams=1, **knobs)  # (B, T_prompt + T_new)
        new = out[:, enc["input_ids"].shape[1]:].tolist()  # (B, <= max_new_tokens)
        for i, ids in zip(batch, new, strict=True):
            n_tokens, finish = response_length(ids, set(eos_ids))
            text = tokenizer.decode(ids[:n_tokens], skip_special_tokens=True).strip()
            results[i].append({"response": text, "n_tokens": n_tokens, "finish": finish})
        if progress is not None:
            progress(sum(map(len, batches[:b + 1])), len(rows))
    if config.greedy:
        results = [[dict(r[0]) for _ in range(config.n)] for r in results]
    return results
