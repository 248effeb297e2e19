# TEMPLATE: `morm rm export --as reward-function` (reward/function_export.py) writes this file as
# morm_reward.py, with the settings block filled in, this comment dropped and one
# function per objective appended. Inside the package nothing calls it: the export reads its
# text and its top-level names (which objective functions must not take).
"""Reward functions of a multi-objective reward model (MORM), for TRL and verl.

- TRL: one function per objective, ``f(prompts, completions, **kwargs) -> list[float]``, the
  signature of ``reward_funcs`` in TRL's GRPOTrainer and RLOOTrainer. Prompts and completions
  may be plain text or conversations (lists of ``{"role", "content"}`` messages).
  `REWARD_FUNCS` and `REWARD_WEIGHTS` go to ``reward_funcs=`` and
  ``GRPOConfig(reward_weights=...)``.
- verl: `compute_score` (``custom_reward_function.name=compute_score``, verl's custom reward
  function signature) and `compute_score_batch` (for ``reward_model.reward_manager=batch``)
  return the weighted reward sum_k w_k r_k. verl passes no prompt: put it in the dataset's
  ``extra_info["prompt"]`` (or ``extra_info["question"]``).
- `score(prompts, responses)`: all rewards, (N, K) as a list of rows in `OBJECTIVES` order.

The reward model in ./model (its backbone in ./backbone) is loaded once, on first use, on CUDA
when available (``DEVICE`` or the environment variable MORM_REWARD_DEVICE pick another), by
morm_explorer's own loader, and scored by its own scoring function in batches of
``BATCH_SIZE``: the rewards equal those of ``morm score`` for the same texts on the same device,
standardized with the model's stored statistics when ``STANDARDIZED``, as
``morm score --standardize`` and the Explore page do. This module therefore needs the
morm_explorer package importable (installed from the MORM Explorer project with its
requirements), of the version that exported it or a later one.

A reward model scores one (prompt, response) pair. Of a conversational prompt it reads the last
user message (earlier turns and system messages are left out); of a conversational
completion, the text of its assistant messages.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

# -- settings (written by the export) -------------------------------------------------------
MODEL_NAME = "reward-model"
OBJECTIVES: list[str] = []
WEIGHTS: list[float] = []  # w_k in OBJECTIVES order
STANDARDIZED = False  # z_k = (r_k - mean_k) / std_k with the model's stored statistics
# -- end of settings ------------------------------------------------------------------------

HERE = Path(__file__).resolve().parent
BATCH_SIZE = int(os.environ.get("MORM_REWARD_BATCH_SIZE", "64"))
DEVICE: str | None = os.environ.get("MORM_REWARD_DEVICE") or None  # None: CUDA if available
PROMPT_KEYS = ("prompt", "question")  # where compute_score looks for the prompt in extra_info

_lock = threading.Lock()
_model = None
_last: tuple[list[str], list[str], np.ndarray] | None = None  # the latest texts and rewards


def load_model():
    """The reward model, loaded on the first call."""
    global _model
    with _lock:
        if _model is None:
            import torch

            from morm_explorer.reward.artifact import load_reward_model

            device = DEVICE or (f"cuda:{torch.cuda.current_device()}"
                                if torch.cuda.is_available() else "cpu")
            # model/config.json names the backbone "../backbone": the folder beside it.
            _model = load_reward_model(HERE / "model", device=device)
    return _model


def _content(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


def prompt_text(prompt: str | list[dict]) -> str:
    """The prompt the reward model reads: the text, or a conversation's last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    return _content(users[-1]) if users else "\n\n".join(_content(m) for m in prompt)


def completion_text(completion: str | list[dict]) -> str:
    """The response the reward model reads: the text, or the assistant messages' text."""
    if isinstance(completion, str):
        return completion
    return "\n\n".join(_content(m) for m in completion if m.get("role", "assistant")
                       == "assistant")


def _rewards(prompts: list, completions: list) -> np.ndarray:
    """Rewards (N, K) of (prompt, completion) pairs; the latest call's are reused, since TRL
    calls each objective's function with the same texts."""
    global _last
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    p = [prompt_text(x) for x in prompts]
    r = [completion_text(x) for x in completions]
    if not p:
        return np.zeros((0, len(OBJECTIVES)))
    model = load_model()
    with _lock:
        if _last is not None and _last[0] == p and _last[1] == r:
            return _last[2]
        import pandas as pd

        from morm_explorer.objectives import standardize
        from morm_explorer.scoring import score as score_frame

        frame = pd.DataFrame({"prompt": p, "response": r})
        values = score_frame(model, frame, batch_size=BATCH_SIZE).to_numpy(np.float64)  # (N, K)
        if STANDARDIZED:
            values = standardize(values, model.stats)
        _last = (p, r, values)
        return values


def score(prompts: list, responses: list) -> list[list[float]]:
    """Rewards (N, K) in `OBJECTIVES` order, as rows."""
    return _rewards(prompts, responses).tolist()


def objective_rewards(objective: str, prompts: list, completions: list) -> list[float]:
    """One objective's reward of each completion."""
    return _rewards(prompts, completions)[:, OBJECTIVES.index(objective)].tolist()


def weighted_rewards(prompts: list, completions: list) -> list[float]:
    """sum_k w_k r_k of each completion."""
    return (_rewards(prompts, completions) @ np.asarray(WEIGHTS, dtype=np.float64)).tolist()


def _verl_prompt(extra_info: dict[str, Any] | None) -> str | list[dict]:
    for key in PROMPT_KEYS:
        if extra_info and extra_info.get(key) is not None:
            value = extra_info[key]
            # verl stores conversations read from parquet as arrays of dicts
            return value if isinstance(value, str) else [dict(m) for m in value]
    raise ValueError("the reward model needs the prompt, which verl does not pass: store it in "
                     f"each row's extra_info under one of {list(PROMPT_KEYS)}")


def compute_score(data_source: Any, solution_str: str, ground_truth: Any,
                  extra_info: dict[str, Any] | None = None, **kwargs: Any) -> float:
    """verl's custom reward function: the weighted reward of one response."""
    return weighted_rewards([_verl_prompt(extra_info)], [solution_str])[0]


def compute_score_batch(data_sources: list, solution_strs: list[str], ground_truths: list,
                        extra_infos: list[dict[str, Any] | None], **kwargs: Any) -> list[float]:
    """verl's batch reward manager's function: the weighted reward of each response."""
    return weighted_rewards([_verl_prompt(e) for e in extra_infos], list(solution_strs))


# -- one TRL reward function per objective (written by the export) --------------------------
