"""The compute floor of an RL step of this project's trainer (`morm_explorer.policy.ppo`), for
``benchmarks/rl_vs_trl.py --floor``: how long the work the algorithm cannot skip takes when
each piece runs alone on the step's own shapes, to hold the step's wall time against.

Per step, the floor is the sum of
  * generate: ``model.generate`` of the step's N prompts (the same left-padded ids, the same
    sampling settings) forced to the step's T new tokens (``min_new_tokens = max_new_tokens =
    T``), with no extra outputs (the trainer also asks for the sampling logits and, for PPO,
    the hidden states);
  * reference: one no-grad forward of the N prompt + response rows with the adapters off, LM
    head on the response positions only, when the KL needs it (``kl_coef > 0``);
  * reward: the reward function on the step's prompts and decoded responses;
  * update: per epoch and minibatch, the policy's forward (LM head on the response positions,
    the value head for PPO) and the backward of a loss that reads the response tokens'
    log-probabilities (and the values).
Not in the floor: optimizer steps, gradient clipping, advantages, metrics. `record_rollouts`
keeps each step's rollout while the trainer runs (it wraps the trainer's ``generate`` and
passes its result on untouched); `floor_seconds` times the pieces afterwards on a fresh copy
of the policy, built as the trainer builds it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from morm_explorer.policy import ppo as trainer
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_core import logprobs_from_logits
from morm_explorer.policy.rl_reward import RewardFn


@dataclass
class Recorded:
    """What the floor needs of one step's rollout."""

    prompts: list[str]  # (N,) the prompt of each response
    query_responses: torch.Tensor  # (N, P + T)
    attention_mask: torch.Tensor  # (N, P + T)
    context_length: int  # P
    mask: torch.Tensor  # (N, T)
    texts: list[str]  # (N,) decoded responses


@contextmanager
def record_rollouts() -> Iterator[list[Recorded]]:
    """Within the block, every rollout the trainer samples is appended to the list given."""
    rolls: list[Recorded] = []
    original = trainer.generate

    def recording(model, tokenizer, prompts, config, *args, **kwargs):
        roll = original(model, tokenizer, prompts, config, *args, **kwargs)
        rolls.append(Recorded(list(prompts), roll.query_responses, roll.attention_mask,
                              roll.context_length, roll.mask, roll.texts))
        return roll

    trainer.generate = recording
    try:
        yield rolls
    finally:
        trainer.generate = original


def _timed(fn, *args) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn(*args)``, queued GPU work included."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def _logits_hidden(model, r: Recorded, rows: slice, hidden: bool):
    """Logits (b, T, V) predicting each response token and, with ``hidden``, the last hidden
    states (b, T, H) at those positions; the LM head runs on the last T + 1 positions only."""
    ids, attn = r.query_responses[rows], r.attention_mask[rows]
    T = r.mask.shape[1]
    out = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(
        min=0), use_cache=False, logits_to_keep=T + 1, output_hidden_states=hidden)
    h = out.hidden_states[-1][:, r.context_length - 1:-1] if hidden else None
    return out.logits[:, :-1], h


@torch.no_grad()
def _generate(model, r: Recorded, gen) -> torch.Tensor:
    """The prompts and T sampled tokens, (N, P + T): the shape of the step's rollout."""
    P = r.context_length
    return model.generate(input_ids=r.query_responses[:, :P],
                          attention_mask=r.attention_mask[:, :P], generation_config=gen)


@torch.no_grad()
def _reference(model, ref, r: Recorded, config: PPOConfig) -> None:
    if config.kl_coef <= 0:
        return
    if ref is not None:
        logits, _ = _logits_hidden(ref, r, slice(None), False)
    else:
        with model.disable_adapter():
            logits, _ = _logits_hidden(model, r, slice(None), False)
    logprobs_from_logits(logits / config.temperature, r.query_responses[:, r.context_length:])


def _update(model, value_head, r: Recorded, config: PPOConfig) -> None:
    N, mb, P = r.mask.shape[0], config.mini_batch_size, r.context_length
    for _ in range(config.ppo_epochs):
        for start in range(0, N, mb):
            rows = slice(start, start + mb)
            logits, hidden = _logits_hidden(model, r, rows, value_head is not None)
            logprobs = logprobs_from_logits(logits / config.temperature,
                                            r.query_responses[rows, P:])
            loss = -(logprobs * r.mask[rows]).sum() / r.mask[rows].sum()
            if value_head is not None:
                loss = loss + value_head(hidden).square().mean()
            loss.backward()
            model.zero_grad(set_to_none=True)
            if value_head is not None:
                value_head.zero_grad(set_to_none=True)


def floor_seconds(config: PPOConfig, rolls: list[Recorded], reward_fn: RewardFn,
                  objectives: list[str], warmup: int = 1) -> list[dict[str, float]]:
    """The floor's pieces in seconds (generate, reference, reward, update, floor; in wall time,
    and in this process's CPU time under ``cpu/``) for each of ``rolls`` after the first
    ``warmup`` (those run once, untimed, to warm up)."""
    from transformers import GenerationConfig

    model, ref, tok = trainer.build_policy(config, None)
    eos_ids = trainer._eos_ids(model, tok)
    value_head = (None if config.grouped else
                  trainer.ValueHead(model.config.hidden_size, len(objectives)).to(model.device))
    out = []
    for i, r in enumerate(rolls):
        T = r.mask.shape[1]
        gen = GenerationConfig(do_sample=True, temperature=config.temperature,
                               top_p=config.top_p, top_k=0, max_new_tokens=T, min_new_tokens=T,
                               num_beams=1, eos_token_id=eos_ids,
                               pad_token_id=tok.pad_token_id, use_cache=True)
        parts = {"generate": _timed(_generate, model, r, gen),
                 "reference": _timed(_reference, model, ref, r, config),
                 "reward": _timed(reward_fn, r.prompts, r.texts),
                 "update": _timed(_update, model, value_head, r, config)}
        if i >= warmup:
            wall = {k: w for k, (w, _) in parts.items()}
            cpu = {f"cpu/{k}": c for k, (_, c) in parts.items()}
            out.append({**wall, "floor": sum(wall.values()), **cpu,
                        "cpu/floor": sum(cpu.values())})
    return out
