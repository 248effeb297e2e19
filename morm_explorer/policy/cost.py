"""A time estimate for an RL run (PPO, GRPO or RLOO) before it is launched.

A step is modelled from the work it does, with N = batch_size x group_size responses of up to
T = max_new_tokens tokens after prompts of about P tokens, and E = ppo_epochs:

    rollout  = T x (decode_step_s + decode_token_s x N)      sampling, one decode step a token,
                                                              plus the reference's forward
    update   = N x (P + T) x (score_s + E x train_token_s)    rewards, then E passes of
                                                              forward + backward
    run      = fixed_s + steps x (rollout + update)           fixed_s: imports, loading the
                                                              policy and reward model, saving

The constants per policy size were measured on this project's 2-core CPU (see ``RATES``);
a policy of another size scales SmolLM2's by its parameter count. Where the workspace holds
finished runs on the same device, their recorded step times (``time/rollout_s`` and
``time/step_s`` in ``runs/ppo/<name>/metrics.jsonl``) rescale both phases, so the estimate
follows this machine and its load; without such runs, a CPU estimate is slowed by
`busy_factor` of the current load average. Once a run has steps of its own, `time_left` uses
those. An estimate, not a promise: responses stop early at eos, and other work on the machine
slows every phase (threads oversubscribed on a busy machine slow it more than the load says).
Light on purpose: no torch import.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.workspace import Workspace

PROMPT_TOKENS = 60  # a typical chat-formatted demo prompt


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work of one policy size on one device (see the module docstring)."""

    decode_step_s: float
    decode_token_s: float
    score_s: float
    train_token_s: float
    fixed_s: float

    def scaled(self, rollout: float, update: float) -> Rates:
        return replace(self, decode_step_s=self.decode_step_s * rollout,
                       decode_token_s=self.decode_token_s * rollout,
                       score_s=self.score_s * update, train_token_s=self.train_token_s * update)


# SmolLM2 (LoRA, batch 8, 48 new tokens, 2 epochs, the demo reward model) on this project's
# 2-core CPU, quiet: a step took 15-23 s, 46% of it sampling (docs/benchmarks.md, "PPO"); the
# sampling phase then became 1.6x faster ("RL step: waste removed"), so about 5 s of sampling
# and 9 s of update at N = 8: decode_step_s + 8 decode_token_s = 5.2 / 48, and
# 8 x (60 + 48) x (score_s + 2 train_token_s) = 8.5. "tiny": the 2-layer test models (hidden
# 32-64), 0.07-0.1 s a step at batch 8 (benchmarks/ppo.py), plus the demo reward model's
# scoring. fixed_s: `morm rl train`'s wall time less its steps (imports, loading, saving).
# Checked against real runs by `python benchmarks/rl_cost.py` (docs/benchmarks.md).
RATES = {
    "smollm2": Rates(decode_step_s=0.06, decode_token_s=0.006, score_s=4e-4,
                     train_token_s=4.7e-3, fixed_s=25.0),
    "tiny": Rates(decode_step_s=1.2e-3, decode_token_s=1e-5, score_s=4e-4,
                  train_token_s=2e-5, fixed_s=8.0),
}
# Not measured (no GPU was lent): a GPU's speed-up of each phase, a guess, labelled as such.
CUDA_GUESS = {"decode": 8.0, "train": 30.0}
SMOLLM2_PARAMS = 134_479_872  # by `policy_params`' formula, so SmolLM2 folders scale by 1
TINY_PARAMS = 5_000_000  # below this, the tiny models' rates
SIMILAR = 4.0  # runs of a policy within this factor of the size calibrate each other


@dataclass(frozen=True)
class Estimate:
    steps: int
    sequences: int
    response_tokens: int
    device: str
    seconds: float
    measured: bool = True
    basis: str = ""
    """What the rates come from (measured here, calibrated on finished runs, a guess)."""
    step_seconds: float = 0.0

    def sentence(self) -> str:
        t = self.seconds
        when = "under a second" if t < 1 else "about " + (
            f"{t:.0f} s" if t < 120 else f"{t / 60:.0f} min" if t < 7200 else f"{t / 3600:.1f} h")
        per = self.sequences // max(self.steps, 1)
        return (f"Estimate: {self.steps} steps x {per} responses = {self.sequences:,} "
                f"responses, up to {self.response_tokens:,} response tokens; {when} on "
                f"{self.device}" + (f" ({self.basis})" if self.basis else "")
                + ("." if self.measured else " (a guess: no throughput measured there yet)."))


def policy_params(policy: str, workspace: Workspace | None = None) -> int | None:
    """The parameter count of ``policy`` from its config.json (None when it cannot be read
    here without loading it: a hub name, say)."""
    from morm_explorer.models import SMOLLM2, canonical_name

    name = policy.split("@", 1)[0]
    if canonical_name(name) == SMOLLM2:
        return SMOLLM2_PARAMS
    folders = [Path(name)]
    if workspace is not None and "/" not in name:
        folders.insert(0, workspace.root / "policies" / name)
    for folder in folders:
        try:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cfg = cfg.get("text_config", cfg)
        h, n = cfg.get("hidden_size") or cfg.get("n_embd"), cfg.get("num_hidden_layers")
        n = n or cfg.get("n_layer")
        if not (isinstance(h, int) and isinstance(n, int)):
            return None
        inter = cfg.get("intermediate_size") or 4 * h
        heads = cfg.get("num_attention_heads") or 1
        kv = cfg.get("num_key_value_heads") or heads
        attn = 2 * h * h + 2 * h * (h * kv // heads)  # q, o; k, v (grouped-query attention)
        mlp = (3 if "intermediate_size" in cfg else 2) * h * inter
        embed = (cfg.get("vocab_size") or 0) * h * (1 if cfg.get("tie_word_embeddings") else 2)
        return int(n * (attn + mlp) + embed)
    return None


def _base_rates(params: int | None, device: str) -> tuple[Rates, bool]:
    """Rates of a policy of ``params`` parameters on ``device``, and whether measured."""
    if params is not None and params < TINY_PARAMS:
        rates = RATES["tiny"]
    else:
        s = (params or SMOLLM2_PARAMS) / SMOLLM2_PARAMS
        r = RATES["smollm2"]
        rates = replace(r, decode_step_s=r.decode_step_s * s, decode_token_s=r.decode_token_s * s,
                        train_token_s=r.train_token_s * s, fixed_s=r.fixed_s * max(1.0, s ** 0.5))
    if device.startswith("cuda"):
        return rates.scaled(1 / CUDA_GUESS["decode"], 1 / CUDA_GUESS["train"]), False
    return rates, True


def _phases(rates: Rates, config: PPOConfig) -> tuple[float, float]:
    """Seconds of one step's rollout and update under ``rates``."""
    n, t = config.responses_per_step, config.max_new_tokens
    rollout = t * (rates.decode_step_s + rates.decode_token_s * n)
    update = n * (PROMPT_TOKENS + t) * (rates.score_s + config.ppo_epochs * rates.train_token_s)
    return rollout, update


def recorded_runs(ws: Workspace) -> list[tuple[PPOConfig, float, float]]:
    """Finished runs of this workspace with step times: (config, median rollout seconds,
    median update seconds), the first step (warm-up) left out where there are others."""
    from morm_explorer.data.readers import read_jsonl
    from morm_explorer.policy.ppo_jobs import METRICS, run_dir, trained_policies

    out = []
    for name, cfg in trained_policies(ws):
        path = run_dir(ws, name) / METRICS
        try:
            config = PPOConfig.from_dict(cfg)
            rows = [r for _, r in read_jsonl(path)] if path.is_file() else []
        except Exception:  # a damaged run folder only costs its calibration
            continue
        rows = [r for r in rows if isinstance(r, dict) and isinstance(
            r.get("time/step_s"), int | float) and isinstance(r.get("time/rollout_s"), int | float)]
        rows = rows[1:] if len(rows) > 1 else rows
        if rows:
            out.append((config, statistics.median(r["time/rollout_s"] for r in rows),
                        statistics.median(r["time/step_s"] - r["time/rollout_s"] for r in rows)))
    return out


def busy_factor(load: float | None = None, cores: int | None = None) -> float:
    """How much slower CPU work runs beside ``load`` other runnable processes (default: the
    1-minute load average) on ``cores`` cores: 1 + load / (2 cores), fitted to this project's
    measurements (SmolLM2 RL steps 2-2.6x slower at load 4-8 on 2 cores, docs/benchmarks.md)."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not on this platform
            load = 0.0
    return 1.0 + max(load, 0.0) / (2 * (cores or os.cpu_count() or 1))


def estimate_ppo(config: PPOConfig, device: str = "cpu", family: str | None = None,
                 workspace: Workspace | None = None, load: float | None = None) -> Estimate:
    """Seconds of the run ``config`` on ``device``: the rates of its policy's size (``family``
    "tiny" or "smollm2" forces one), rescaled by the finished runs of ``workspace`` on the same
    device where there are any, else (on a CPU) slowed by the machine's ``load`` (default: its
    1-minute load average; 0: a quiet machine)."""
    params = {"tiny": 1, "smollm2": SMOLLM2_PARAMS}.get(family or "") or policy_params(
        config.policy, workspace)
    rates, measured = _base_rates(params, device)
    basis = ("measured on a quiet 2-core CPU" if measured else "")
    busy = busy_factor(load) if measured else 1.0
    if busy > 1.05:
        rates = replace(rates.scaled(busy, busy), fixed_s=rates.fixed_s * busy)
        basis += f", x{busy:.1f} for the machine's current load"
    if workspace is not None:
        ratios = []
        size = params or SMOLLM2_PARAMS
        for cfg, rollout_s, update_s in recorded_runs(workspace):
            run_size = policy_params(cfg.policy, workspace) or SMOLLM2_PARAMS
            # same device, and a policy of about the same size: a tiny model's steps are
            # mostly overhead and say little about a large one's, and the other way round
            if (cfg.device.split(":")[0] == device.split(":")[0]
                    and 1 / SIMILAR <= run_size / size <= SIMILAR):
                base, _ = _base_rates(run_size, device)
                pr, pu = _phases(base, cfg)
                ratios.append((rollout_s / pr, update_s / pu))
        if ratios:  # the runs' times include their machine's load: no busy factor
            rates, _ = _base_rates(params, device)
            rates = rates.scaled(statistics.median(r for r, _ in ratios),
                                 statistics.median(u for _, u in ratios))
            measured = True
            basis = (f"from the step times of {len(ratios)} finished run"
                     f"{'s' if len(ratios) > 1 else ''} here")
    rollout, update = _phases(rates, config)
    step = rollout + update
    return Estimate(config.steps, config.steps * config.responses_per_step,
                    config.steps * config.responses_per_step * config.max_new_tokens, device,
                    rates.fixed_s + config.steps * step, measured, basis, step)


def time_left(step_seconds: list[float], total_steps: int) -> float | None:
    """Seconds left of a running run from its own steps so far (``step_seconds``, one per
    finished step): the median step time, the first step (a warm-up) left out once there are
    others, times the steps to go. None before the first step ends."""
    done = [float(x) for x in step_seconds if x == x]  # NaN: a step without the metric
    if not done:
        return None
    typical = statistics.median(done[1:] if len(done) > 1 else done)
    return max(int(total_steps) - len(step_seconds), 0) * typical
