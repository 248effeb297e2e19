"""The RL cost estimate against real runs: each run is `morm rl train` in a subprocess (as a
user runs it), timed from start to exit; its per-step rollout and update times come from its
run folder's metrics.jsonl. Printed per run: the estimate from the built-in rates, the
estimate calibrated on the runs finished before it in the workspace, the actual wall time and
the ratios; with --fit, the rates that the runs' own phases give (two batch sizes needed).

    python benchmarks/rl_cost.py --workspace WS --policy smollm2 --reward-model demo-rm \\
        [--runs ppo:4:1,grpo:4:4,rloo:4:4] [--steps 2] [--max-new-tokens 48] [--fit]

A run is ALGORITHM:BATCH:GROUP. The workspace needs the reward model; ``--policy tiny`` builds
the random 2-layer Llama of benchmarks/ppo.py there. Wall-clock on a possibly shared machine:
the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from morm_explorer.policy.cost import PROMPT_TOKENS, estimate_ppo
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.workspace import Workspace


def run_one(ws: Path, cfg: PPOConfig) -> tuple[float, list[dict]]:
    args = [sys.executable, "-m", "morm_explorer.cli", "--workspace", str(ws), "rl", "train"]
    for key, value in cfg.to_dict().items():
        if key in ("name", "algorithm", "policy", "reward_model", "steps", "batch_size",
                   "group_size", "mini_batch_size", "max_new_tokens", "device", "prompt_limit"):
            args += [f"--{key}", str(value)]
    t0 = time.perf_counter()
    proc = subprocess.run([*args, "--overwrite"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{cfg.name} failed:\n{proc.stderr[-3000:]}")
    path = ws / "runs" / "ppo" / cfg.name / "metrics.jsonl"
    return wall, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("--policy", default="smollm2")
    p.add_argument("--reward-model", default="demo-rm")
    p.add_argument("--runs", default="ppo:4:1,grpo:4:4,rloo:4:4")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--fit", action="store_true")
    args = p.parse_args(argv)
    ws = Path(args.workspace)
    policy = args.policy
    if policy == "tiny":
        sys.path.insert(0, str(Path(__file__).parent))
        from ppo import tiny_policy  # benchmarks/ppo.py

        policy = str(ws / "tiny-policy") if (ws / "tiny-policy").is_dir() else tiny_policy(
            ws / "tiny-policy")
    print(f"load {os.getloadavg()}", flush=True)
    phases = []
    for i, run in enumerate(args.runs.split(",")):
        algo, batch, group = run.split(":")
        n = int(batch) * (int(group) if algo != "ppo" else 1)
        cfg = PPOConfig(name=f"cost-{args.policy}-{algo}-{i}", algorithm=algo, policy=policy,
                        reward_model=args.reward_model, steps=args.steps,
                        batch_size=int(batch), group_size=max(2, int(group)),
                        mini_batch_size=max(1, n // 2), max_new_tokens=args.max_new_tokens,
                        device="cpu", prompt_limit=16)
        base = estimate_ppo(cfg, "cpu")
        calibrated = estimate_ppo(cfg, "cpu", workspace=Workspace(ws))
        wall, rows = run_one(ws, cfg)
        steps_s = sum(r["time/step_s"] for r in rows)
        rollout = [r["time/rollout_s"] for r in rows]
        update = [r["time/step_s"] - r["time/rollout_s"] for r in rows]
        phases.append((cfg, rollout[-1], update[-1]))
        print(f"{cfg.name}: N={n} wall {wall:.1f} s (steps {steps_s:.1f} s, rollout "
              f"{[round(x, 1) for x in rollout]}, update {[round(x, 1) for x in update]}); "
              f"estimate {base.seconds:.1f} s (x{wall / base.seconds:.2f}), calibrated "
              f"{calibrated.seconds:.1f} s (x{wall / calibrated.seconds:.2f}, "
              f"{calibrated.basis})", flush=True)
    if args.fit and len({c.responses_per_step for c, _, _ in phases}) > 1:
        (c1, r1, _), (c2, r2, _) = sorted(phases, key=lambda x: x[0].responses_per_step)[::len(
            phases) - 1]
        b = (r2 / c2.max_new_tokens - r1 / c1.max_new_tokens) / (
            c2.responses_per_step - c1.responses_per_step)
        a = r1 / c1.max_new_tokens - b * c1.responses_per_step
        train = [u / (c.responses_per_step * (PROMPT_TOKENS + c.max_new_tokens) * c.ppo_epochs)
                 for c, _, u in phases]
        print(f"fit: decode_step_s {a:.3g}, decode_token_s {b:.3g}, train_token_s (with "
              f"scoring) {sorted(train)[len(train) // 2]:.3g}")
    print(f"load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
