"""Multi-objective RL for a causal-LM policy, read top to bottom: `train_ppo`, one trainer
for three algorithms (``PPOConfig.algorithm``): PPO, GRPO and RLOO.

PPO: Ziegler et al. (2019) and InstructGPT, with the details of Huang et al. (2024), "The N
Implementation Details of RLHF with PPO": each step samples one response per prompt (KV cache,
left padding), scores it with a K-objective reward model, z-scores and scalarizes the scores
with the step's weights (`PPOConfig.weights_at`), penalizes every token by beta times its KL
from the frozen reference, and takes ``ppo_epochs`` passes of clipped PPO over minibatches.
The value head has one output per objective, GAE runs per objective (the KL penalty is in
each stream), and the policy follows the advantage sum_k c_k A_k where c is the scalarizer's
normalized gradient plus the Lagrange multipliers of the constraints (see
`ppo_core.scalarization_coefficients` and `ppo_core.LagrangeMultipliers`).

GRPO and RLOO (the group methods): each step samples ``group_size`` responses per prompt and
takes each response's advantage from its group (the math: `morm_explorer.policy.rl_grpo`,
`morm_explorer.policy.rl_rloo`); no value head. The KL to the reference is subtracted from the
reward (summed over the response) or added to the loss (k3 per token), per ``kl_in``.

Shared by all three: sampling the rollout and the forward passes over it
(`morm_explorer.policy.ppo_rollout`), the reward path (`morm_explorer.policy.rl_reward`), the
minibatch epochs, the KL controller, Lagrange multipliers, weight schedules, checkpoints and
metrics.

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
mean score, ``rewards/<objective>/mean`` and ``/std`` its mean and std over the rollout;
``advantages/mean``, ``/std``, ``/min``, ``/max`` those of the advantages the policy follows
(over response tokens for PPO, over responses for the group methods); ``frac_reward_zero_std``
the share of groups whose rewards R' all tie (no signal); ``tokens/per_s`` the response
tokens of the step over its wall time.
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
from morm_explorer.objectives import weight_vector
from morm_explorer.policy import ppo_core as core
from morm_explorer.policy import rl_update as update
from morm_explorer.policy.generate import _eos_ids
from morm_explorer.policy.jobs import load_prompts
from morm_explorer.policy.ppo_checkpoint import (
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_policy,
)
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.ppo_rollout import generate, reference_logits
from morm_explorer.policy.rl_reward import RewardFn, load_reward, score_rollout
from morm_explorer.report_to import report_metrics
from morm_explorer.workspace import Workspace

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


def lora_targets(model: nn.Module, wanted: tuple[str, ...] = ()) -> list[str]:
    """The linear layer names of ``model`` that LoRA adapts: ``wanted`` (each checked to be a
    linear layer of the model), or else every attention and MLP projection."""
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if isinstance(module, nn.Linear)}
    if wanted:
        missing = [m for m in wanted if m not in linear]
        if missing:
            raise MormError(f"the policy has no linear layer named {', '.join(missing)} for "
                            f"LoRA (it has {', '.join(sorted(linear))})",
                            field="lora_target_modules")
        return sorted(wanted)
    found = linear & set(LORA_TARGETS)
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
                      target_modules=lora_targets(model, config.lora_target_modules),
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.eval()  # no dropout anywhere: old and new log-probs must agree at the start
    return model, None, tokenizer


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


def train_ppo(config: PPOConfig, run_dir: str | Path, workspace: Workspace | None = None,
              hooks: Hooks | None = None, reward_fn: RewardFn | None = None,
              objectives: list[str] | None = None) -> dict:
    """Train per ``config`` (PPO, GRPO or RLOO, ``config.algorithm``) in ``run_dir`` (resuming
    from its checkpoint if there is one) and save the policy to ``<run_dir>/policy``: a Hugging
    Face folder (LoRA merged when ``merge_lora``, else the adapter folder) with
    ``morm_ppo.json``. ``reward_fn(prompts, responses) -> (N, K)`` with ``objectives`` replaces
    the reward model (for tests). The metrics also go to the backends of ``config.report_to``
    (TensorBoard by default under ``<run_dir>/tb``; a resumed run reports the steps done
    before again, in a new run). Returns {"path", "steps", "resumed_from", "history",
    "final"}."""
    hooks = hooks or Hooks()
    with report_metrics(hooks.metrics, config, Path(run_dir) / "tb") as metrics:
        return _train(config, Path(run_dir), workspace, replace(hooks, metrics=metrics),
                      reward_fn, objectives)


def _train(config: PPOConfig, run_dir: Path, workspace: Workspace | None, hooks: Hooks,
           reward_fn: RewardFn | None, objectives: list[str] | None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # LoRA and value-head initialisation

    # -- the reward, the prompts, the policy, its reference and (PPO) its value head --------
    hooks.progress(0.0, "loading the policy")
    model, ref, tokenizer = build_policy(config, workspace)
    device = str(model.device)
    hooks.progress(0.0, "loading the reward model")
    reward_fn, objectives, stats = load_reward(config, workspace, device, reward_fn, objectives)
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
    value_head = None if config.grouped else ValueHead(model.config.hidden_size, K).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(value_head.parameters()) if value_head is not None else []
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

    B, G = config.batch_size, (config.group_size if config.grouped else 1)
    N = B * G  # responses per rollout
    for step in range(start, config.steps):
        hooks.check_cancelled()
        at = f"step {step + 1}/{config.steps}"
        hooks.progress(step / config.steps, f"{at}: sampling {N} responses")
        t0 = time.perf_counter()
        torch.manual_seed(_step_seed(config.seed, step))  # sampling and minibatch order
        batch = [prompts[i]["prompt"] for i in _prompt_rows(len(prompts), B, config.seed, step)]
        queries = [p for p in batch for _ in range(G)]  # (N,) a group's G rows in a run

        # 1. rollout: responses with the old log-probs (and hidden states for the values) of
        # the sampling pass, which ran this very policy; then the reference's log-probs
        model.eval()  # and it stays so: no dropout, old and new log-probs agree at the start
        roll = generate(model, tokenizer, queries, config, eos_ids, hooks.check_cancelled,
                        hidden=value_head is not None)
        mask, responses = roll.mask, roll.responses  # (N, T)
        old_logprobs = roll.logprobs  # (N, T)
        entropy = core.masked_mean(roll.entropy, mask)
        hooks.check_cancelled()
        with torch.no_grad():
            old_values = value_head(roll.hidden) if value_head is not None else None  # (N,T,K)
            ref_logprobs = core.logprobs_from_logits(
                reference_logits(model, ref, roll, config.temperature), responses)
        t_rollout = time.perf_counter() - t0
        hooks.check_cancelled()
        hooks.progress((step + 0.5) / config.steps,
                       f"{at}: scoring and updating ({config.ppo_epochs} epochs)")

        # 2. rewards, one path for every algorithm; the KL of each sampled token
        s = score_rollout(reward_fn, queries, roll.texts, roll.finished, objectives, stats,
                          moments, lagrange, config, step)
        kl, kl3 = core.kl_per_token(old_logprobs, ref_logprobs)
        kl, kl3 = kl * mask, kl3 * mask
        beta = kl_ctl.value

        # 3. advantages: GAE per objective (PPO) or group baselines (GRPO, RLOO); 4. epochs
        if value_head is not None:
            advantages, returns = update.ppo_advantages(config, s, kl, beta, old_values, mask)
            adv_seen = advantages[mask.bool()]
        else:
            advantages, returns = update.group_advantages(config, s, kl, beta).to(device), None
            adv_seen = advantages  # (N,)
        tensors = update.StepTensors(responses, mask, old_logprobs, ref_logprobs, advantages,
                                     old_values, returns, beta)
        stats_mb = update.epochs(config, model, value_head, roll, tensors, optimizer, params,
                                 _step_seed(config.seed, step, stream=1), hooks.check_cancelled)

        # 5. controllers, metrics, samples, checkpoint
        mean_kl = float(kl.sum(1).mean())
        kl_ctl.update(mean_kl, N)
        lagrange.update([float(s.z[:, k].mean()) for k in lagrange.index])
        non_score = float((-beta * kl).sum(1).mean())
        seconds = time.perf_counter() - t0
        n_tokens = float(mask.sum())
        metrics = {
            "objective/kl": mean_kl, "objective/kl3": float(kl3.sum(1).mean()),
            "objective/entropy": float(entropy), "objective/non_score_reward": non_score,
            "objective/rlhf_reward": float(s.score.mean()) + non_score,
            "objective/scalarized": float(s.score.mean()),
            **{f"objective/scores/{o}": float(s.raw[:, k].mean())
               for k, o in enumerate(objectives)},
            **update.reward_stats(s, objectives, G, adv_seen),
            "policy/approxkl_avg": float(np.mean(stats_mb["akl"])),
            "policy/clipfrac_avg": float(np.mean(stats_mb["clip"])),
            "loss/policy_avg": float(np.mean(stats_mb["pg"])),
            **({"loss/value_avg": float(np.mean(stats_mb["vf"])),
                "val/clipfrac_avg": float(np.mean(stats_mb["vclip"]))}
               if value_head is not None else {}),
            "val/num_eos_tokens": float(roll.finished.sum()),
            "val/response_length": n_tokens / N,
            **{f"scalarization/weight/{o}": float(s.weights[k])
               for k, o in enumerate(objectives)},
            **{f"lagrange/{objectives[k]}": lam
               for k, lam in zip(lagrange.index, lagrange.values, strict=True)},
            "objective/kl_coef": beta, "time/rollout_s": t_rollout, "time/step_s": seconds,
            "tokens/per_s": n_tokens / seconds,
        }
        history.append({"step": step, **metrics})
        hooks.metrics(step, metrics)
        if config.sample_every and step % config.sample_every == 0:
            hooks.samples(step, [
                {"prompt": p, "response": r, "scores": dict(zip(objectives, x, strict=True))}
                for p, r, x in zip(queries[:N_SAMPLES], roll.texts, s.raw.tolist(),
                                   strict=False)])
        # KL shown as k3 (>= 0 on every sample); k1, which the reward is penalized by, can
        # come out negative on a batch
        hooks.progress((step + 1) / config.steps, f"{at} done: reward "
                       f"{metrics['objective/rlhf_reward']:.3f}, KL "
                       f"{metrics['objective/kl3']:.3f}")
        done = step + 1
        if done == config.steps or (config.checkpoint_every and done % config.checkpoint_every
                                    == 0):
            hooks.progress(done / config.steps, f"{at} done: saving a checkpoint")
            save_checkpoint(run_dir, config, model, value_head, optimizer, step=done,
                            history=history, kl_ctl=kl_ctl.state_dict(),
                            lagrange=lagrange.state_dict(), moments=moments.state_dict())

    # -- the trained policy as a plain Hugging Face folder -----------------------------------
    hooks.progress(1.0, "saving the policy")
    path = save_policy(run_dir / "policy", model, tokenizer, config, objectives, history)
    return {"path": str(path), "steps": config.steps, "resumed_from": start if ckpt else None,
            "history": history, "final": history[-1] if history else {}}
