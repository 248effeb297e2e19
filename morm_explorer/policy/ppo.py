"""Multi-objective PPO for a causal-LM policy, read top to bottom: `train_ppo`.

Ziegler et al. (2019) and InstructGPT, with the details of Huang et al. (2024), "The N
Implementation Details of RLHF with PPO": each step samples one response per prompt (KV cache,
left padding), scores it with a K-objective reward model, z-scores and scalarizes the scores
with the step's weights (`PPOConfig.weights_at`), penalizes every token by beta times its KL
from the frozen reference, and takes ``ppo_epochs`` passes of clipped PPO over minibatches.
Sampling the rollout and the forward passes over it are `morm_explorer.policy.ppo_rollout`.

Multi-objective: the value head has one output per objective, GAE runs per objective (the KL
penalty is in each stream), and the policy follows the advantage sum_k c_k A_k where c is the
scalarizer's normalized gradient plus the Lagrange multipliers of the constraints (see
`ppo_core.scalarization_coefficients` and `ppo_core.LagrangeMultipliers`).

Resuming: every ``checkpoint_every`` steps the trainable weights, value head, optimizer, RNG
and controller states and the metrics so far are written to ``<run_dir>/checkpoint`` (into a
temp folder, then renamed). `train_ppo` continues from there when it finds one, so a worker
killed mid-run and the job submitted again goes on from the last checkpoint, not from step 0.
Saving and loading those files is `morm_explorer.policy.ppo_checkpoint`.

Metrics per step (TRL's names where it has one): ``objective/kl`` and ``objective/kl3`` are
the per-response sums of the k1 and k3 estimators, averaged; ``objective/entropy`` the mean
per-token entropy of the policy on its responses; ``objective/scalarized`` the mean scalarized
(and Lagrange-penalized) score R', ``objective/rlhf_reward`` R' plus
``objective/non_score_reward`` (-beta times the KL); ``objective/scores/<objective>`` the raw
mean score; ``tokens/per_s`` the response tokens of the step over its wall time.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from morm_explorer.errors import MormError
from morm_explorer.objectives import scalarize, weight_vector
from morm_explorer.policy import ppo_core as core
from morm_explorer.policy.generate import _eos_ids
from morm_explorer.policy.jobs import load_prompts
from morm_explorer.policy.ppo_checkpoint import (
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_policy,
)
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_rollout import forward, generate, reference_logits
from morm_explorer.report_to import report_metrics
from morm_explorer.workspace import Workspace

RewardFn = Callable[[list[str], list[str]], np.ndarray]  # (prompts, responses) -> (N, K)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "c_attn", "c_proj", "c_fc", "query_key_value", "dense_h_to_4h",
                "dense_4h_to_h", "fc1", "fc2", "out_proj", "qkv_proj", "gate_up_proj")
N_SAMPLES = 4  # generations reported every sample_every steps


@dataclass
class Hooks:
    """Where training reports to: a job context, a progress bar, or nothing. Each may raise
    to stop the run (``check_cancelled`` is called between phases of every step)."""

    progress: Callable[[float, str], None] = lambda fraction, msg="": None
    metrics: Callable[[int, dict], None] = lambda step, values: None
    log: Callable[[str], None] = lambda text: None
    samples: Callable[[int, list[dict]], None] = lambda step, rows: None
    check_cancelled: Callable[[], None] = lambda: None


class ValueHead(nn.Module):
    """V(s) per objective: a linear map of the policy's last hidden state, (B, T, H) ->
    (B, T, K), starting at zero."""

    def __init__(self, hidden_size: int, k: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, k)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float())


def lora_targets(model: nn.Module) -> list[str]:
    """The attention and MLP projection names of ``model`` that LoRA adapts."""
    found = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS}
    if not found:
        raise MormError("no attention or MLP projection layers found for LoRA; train the "
                        "whole model (lora = false)", field="lora")
    return sorted(found)


def build_policy(config: PPOConfig, workspace: Workspace | None):
    """(policy, reference or None, tokenizer). With LoRA the reference is the same model with
    its adapters disabled (`reference_logits`), so no second copy is held in memory."""
    from morm_explorer.policy.load import load_policy

    # float32 everywhere: Adam updates of bf16 weights lose most of their bits
    model, tokenizer = load_policy(config.policy, workspace=workspace, device=config.device,
                                   dtype="float32")
    if not config.lora:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
        return model, ref, tokenizer
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=lora_targets(model), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.eval()  # no dropout anywhere: old and new log-probs must agree at the start
    return model, None, tokenizer


def _reward(config: PPOConfig, workspace: Workspace | None, device: str,
            reward_fn: RewardFn | None, objectives: list[str] | None):
    """(reward_fn, objectives, stored stats or None) from the config's reward model, or the
    injected function (its objectives are required)."""
    if reward_fn is not None:
        if not objectives:
            raise MormError("a reward function needs its objectives' names", field="objectives")
        return reward_fn, list(objectives), None
    if not config.reward_model:
        raise MormError("choose a reward model", field="reward_model")
    from morm_explorer.reward.artifact import load_reward_model
    from morm_explorer.reward.report import model_path

    rm = load_reward_model(model_path(config.reward_model, workspace), device)
    return (lambda p, r: rm.score(p, r, batch_size=64)), list(rm.objectives), rm.stats


def _prompt_rows(n_prompts: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Prompt indices of ``step``: passes over the prompts, each in its own seeded order, so a
    step's prompts depend on (seed, step) only (a resumed run draws the same ones)."""
    rows = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        order = np.random.default_rng([seed, i // n_prompts]).permutation(n_prompts)
        rows.append(int(order[i % n_prompts]))
    return rows


def _step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A seed per (seed, step, stream), independent of whatever ran before the step."""
    state = np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> 1)


def _standardize(raw: torch.Tensor, stats: dict | None, moments: core.RunningMoments,
                 config: PPOConfig) -> torch.Tensor:
    """Scores (B, K) in the units the scalarizer sees: z-scores with the stored statistics,
    or with running ones when there are none, or raw when not ``config.standardize``."""
    if not config.standardize:
        return raw
    if stats:
        mean, std = stats["mean"], stats["std"]
    else:
        moments.update(raw)
        mean, std = moments.mean, moments.std
    mean_t = torch.tensor(mean, dtype=raw.dtype)
    return (raw - mean_t) / torch.tensor(std, dtype=raw.dtype).clamp(min=1e-6)


def train_ppo(config: PPOConfig, run_dir: str | Path, workspace: Workspace | None = None,
              hooks: Hooks | None = None, reward_fn: RewardFn | None = None,
              objectives: list[str] | None = None) -> dict:
    """Train per ``config`` in ``run_dir`` (resuming from its checkpoint if there is one) and
    save the policy to ``<run_dir>/policy``: a Hugging Face folder (LoRA merged when
    ``merge_lora``, else the adapter folder) with ``morm_ppo.json``. ``reward_fn(prompts,
    responses) -> (N, K)`` with ``objectives`` replaces the reward model (for tests). The
    metrics also go to the backends of ``config.report_to`` (TensorBoard by default under
    ``<run_dir>/tb``; a resumed run reports the steps done before again, in a new run).
    Returns {"path", "steps", "resumed_from", "history", "final"}."""
    hooks = hooks or Hooks()
    with report_metrics(hooks.metrics, config, Path(run_dir) / "tb") as metrics:
        return _train(config, Path(run_dir), workspace, replace(hooks, metrics=metrics),
                      reward_fn, objectives)


def _train(config: PPOConfig, run_dir: Path, workspace: Workspace | None, hooks: Hooks,
           reward_fn: RewardFn | None, objectives: list[str] | None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # LoRA and value-head initialisation

    # -- the reward, the prompts, the policy, its reference and its value head --------------
    hooks.progress(0.0, "loading the reward model and the policy")
    model, ref, tokenizer = build_policy(config, workspace)
    device = str(model.device)
    reward_fn, objectives, stats = _reward(config, workspace, device, reward_fn, objectives)
    K = len(objectives)
    for c in config.constraints:
        if c["objective"] not in objectives:
            raise MormError(f"constraint on unknown objective {c['objective']!r}; the reward "
                            f"has {objectives}", field="constraints")
    for s in [0] + [p["step"] for p in config.weight_schedule]:
        weight_vector(config.weights_at(s) or dict.fromkeys(objectives, 1.0), objectives)
    prompts = load_prompts(config.prompts, config.prompt_limit)
    if not prompts:
        raise MormError("no prompts to train on", field="prompts")
    eos_ids = _eos_ids(model, tokenizer)
    value_head = ValueHead(model.config.hidden_size, K).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, eps=1e-5)
    kl_ctl = (core.AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
              if config.adaptive_kl else core.FixedKLController(config.kl_coef))
    lagrange = core.LagrangeMultipliers(
        [objectives.index(c["objective"]) for c in config.constraints],
        [c["threshold"] for c in config.constraints], config.lagrange_lr, config.lagrange_init)
    moments = core.RunningMoments(K)
    history: list[dict] = []
    start = 0
    ckpt = find_checkpoint(run_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt, config, model, value_head, optimizer)
        start, history = state["step"], state["history"]
        kl_ctl.load_state_dict(state["kl_ctl"])
        lagrange.load_state_dict(state["lagrange"])
        moments.load_state_dict(state["moments"])
        hooks.log(f"resuming from step {start} (checkpoint {ckpt})")
        for m in history:  # report the steps done before again: the charts start at step 0
            hooks.metrics(m["step"], {k: v for k, v in m.items() if k != "step"})

    B, mb = config.batch_size, config.mini_batch_size
    for step in range(start, config.steps):
        hooks.check_cancelled()
        t0 = time.perf_counter()
        torch.manual_seed(_step_seed(config.seed, step))  # sampling and minibatch order
        batch = [prompts[i]["prompt"] for i in _prompt_rows(len(prompts), B, config.seed, step)]

        # 1. rollout: responses, then old log-probs and values, and the reference's log-probs
        model.eval()  # and it stays so: no dropout, old and new log-probs agree at the start
        roll = generate(model, tokenizer, batch, config, eos_ids, hooks.check_cancelled)
        mask, responses = roll.mask, roll.responses  # (B, T)
        hooks.check_cancelled()
        with torch.no_grad():
            logits, hidden = forward(model, roll, slice(None), config.temperature)
            old_logprobs = core.logprobs_from_logits(logits, responses)  # (B, T)
            entropy = core.masked_mean(core.entropy_from_logits(logits), mask)
            old_values = value_head(hidden)  # (B, T, K)
            del logits, hidden
            ref_logprobs = core.logprobs_from_logits(
                reference_logits(model, ref, roll, config.temperature), responses)
        t_rollout = time.perf_counter() - t0
        hooks.check_cancelled()

        # 2. rewards: per-objective scores at the last token, KL penalty on every token
        raw = torch.as_tensor(np.asarray(reward_fn(batch, roll.texts)), dtype=torch.float32)
        if raw.shape != (B, K) or not torch.isfinite(raw).all():
            raise MormError(f"the reward gave scores of shape {tuple(raw.shape)} (expected "
                            f"({B}, {K})) or not finite ones", field="reward_model")
        z = _standardize(raw, stats, moments, config)  # (B, K)
        w = weight_vector(config.weights_at(step) or dict.fromkeys(objectives, 1.0), objectives)
        w_t = torch.tensor(w, dtype=torch.float32)
        coef = lagrange.coefficients(core.scalarization_coefficients(z, w_t, config.scalarizer))
        score = lagrange.penalized(
            torch.as_tensor(scalarize(z.numpy(), w, config.scalarizer), dtype=torch.float32), z)
        cut = torch.zeros(B)  # (B,) penalty of responses cut off before their eos
        if config.missing_eos_penalty is not None:
            cut = (~roll.finished).float().cpu() * config.missing_eos_penalty
        score = score - cut  # each objective's stream pays it: coef rows sum to 1, so R does
        kl, kl3 = core.kl_per_token(old_logprobs, ref_logprobs)
        kl, kl3 = kl * mask, kl3 * mask
        rewards = core.per_token_rewards((z - cut[:, None]).to(device), kl, kl_ctl.value,
                                         mask)  # (B, T, K)
        advantages_k, returns = core.gae(rewards, old_values, mask, config.gamma, config.lam)
        advantages = (advantages_k * coef.to(device)[:, None, :]).sum(-1)  # (B, T)
        if config.whiten_advantages:
            advantages = core.masked_whiten(advantages, mask) * mask

        # 3. PPO epochs over shuffled minibatches
        stats_mb: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "clip", "vclip", "akl")}
        order_gen = torch.Generator().manual_seed(_step_seed(config.seed, step, stream=1))
        for _ in range(config.ppo_epochs):
            order = torch.randperm(B, generator=order_gen)
            for start_mb in range(0, B, mb):
                hooks.check_cancelled()
                rows = order[start_mb:start_mb + mb].to(device)
                logits, hidden = forward(model, roll, rows, config.temperature)
                logprobs = core.logprobs_from_logits(logits, responses[rows])
                values = value_head(hidden)  # (b, T, K)
                pg_loss, clipfrac, approxkl = core.policy_loss(
                    logprobs, old_logprobs[rows], advantages[rows], mask[rows],
                    config.cliprange)
                vf_loss, vf_clipfrac = core.value_loss(
                    values, old_values[rows], returns[rows], mask[rows], config.cliprange_value)
                loss = pg_loss + config.vf_coef * vf_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                for key, v in zip(stats_mb, (pg_loss, vf_loss, clipfrac, vf_clipfrac,
                                             approxkl), strict=True):
                    stats_mb[key].append(float(v.detach()))

        # 4. controllers, metrics, samples, checkpoint
        mean_kl = float(kl.sum(1).mean())
        beta = kl_ctl.value
        kl_ctl.update(mean_kl, B)
        lagrange.update([float(z[:, k].mean()) for k in lagrange.index])
        non_score = float((-beta * kl).sum(1).mean())
        seconds = time.perf_counter() - t0
        n_tokens = float(mask.sum())
        metrics = {
            "objective/kl": mean_kl, "objective/kl3": float(kl3.sum(1).mean()),
            "objective/entropy": float(entropy), "objective/non_score_reward": non_score,
            "objective/rlhf_reward": float(score.mean()) + non_score,
            "objective/scalarized": float(score.mean()),
            **{f"objective/scores/{o}": float(raw[:, k].mean()) for k, o in enumerate(objectives)},
            "policy/approxkl_avg": float(np.mean(stats_mb["akl"])),
            "policy/clipfrac_avg": float(np.mean(stats_mb["clip"])),
            "loss/policy_avg": float(np.mean(stats_mb["pg"])),
            "loss/value_avg": float(np.mean(stats_mb["vf"])),
            "val/clipfrac_avg": float(np.mean(stats_mb["vclip"])),
            "val/num_eos_tokens": float(roll.finished.sum()),
            "val/response_length": n_tokens / B,
            **{f"scalarization/weight/{o}": float(w[k]) for k, o in enumerate(objectives)},
            **{f"lagrange/{objectives[k]}": lam
               for k, lam in zip(lagrange.index, lagrange.values, strict=True)},
            "objective/kl_coef": beta, "time/rollout_s": t_rollout, "time/step_s": seconds,
            "tokens/per_s": n_tokens / seconds,
        }
        history.append({"step": step, **metrics})
        hooks.metrics(step, metrics)
        if config.sample_every and step % config.sample_every == 0:
            hooks.samples(step, [
                {"prompt": p, "response": r, "scores": dict(zip(objectives, s, strict=True))}
                for p, r, s in zip(batch[:N_SAMPLES], roll.texts, raw.tolist(), strict=False)])
        hooks.progress((step + 1) / config.steps, f"step {step + 1}/{config.steps}: reward "
                       f"{metrics['objective/rlhf_reward']:.3f}, KL {mean_kl:.3f}")
        done = step + 1
        if done == config.steps or (config.checkpoint_every and done % config.checkpoint_every
                                    == 0):
            save_checkpoint(run_dir, config, model, value_head, optimizer, step=done,
                            history=history, kl_ctl=kl_ctl.state_dict(),
                            lagrange=lagrange.state_dict(), moments=moments.state_dict())

    # -- the trained policy as a plain Hugging Face folder -----------------------------------
    hooks.progress(1.0, "saving the policy")
    path = save_policy(run_dir / "policy", model, tokenizer, config, objectives, history)
    return {"path": str(path), "steps": config.steps, "resumed_from": start if ckpt else None,
            "history": history, "final": history[-1] if history else {}}
