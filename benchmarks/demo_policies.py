"""Choosing the demo's two RL runs by measurement: do they differ for real on held-out prompts?

    python benchmarks/demo_policies.py --workspace WS [--algorithm grpo] [--steps 12]
        [--batch-size 4] [--group-size 4] [--lr 1e-3] [--kl-coef 0.02] [--max-new-tokens 32]
        [--lora-target-modules q_proj,v_proj]
        [--compare-samples 4] [--compare-tokens 64] [--threads 0] [--out result.json]
    python benchmarks/demo_policies.py --workspace WS --comparison demo

The workspace must hold the demo's reward model ``demo-rm`` and held-out judge ``demo-judge``
(`morm demo build` or the Overview's build makes them). The script trains the two runs the demo
trains (one leaning helpful, one leaning harmless; `morm_explorer.demo_jobs.POLICIES`) with the
settings given, on the ``demo-train`` prompts, one after the other, and times them. It then
compares the base policy and both runs on the ``demo-heldout`` prompts, which no run trains on,
scored by the training reward model and by the judge, and prints for each objective the paired
difference (the run leaning on it minus the other run, per-prompt means first) with its
paired-bootstrap 95% interval (`morm_explorer.evaluation.stats.paired_mean_diff`). A setting
passes when, for helpful and for harmless, the interval excludes zero on the leaned-on side
under both the reward model and the judge. Wall times are from this machine; the load average
is printed at the start and the end.

``--comparison NAME`` trains nothing and reads the workspace's comparison NAME of the base policy
and the helpful- and harmless-leaning runs, in that order: ``demo``, made by the demo build
(`morm demo --full` or `--write-bundle --build-dir WS`), which trains the same two runs with the
demo's settings and compares them the same way (24 held-out prompts x 4 samples of 64 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from morm_explorer.demo_jobs import JUDGE, POLICIES, RM, PrepareDemoJob  # noqa: E402
from morm_explorer.evaluation.compare import CompareJob, load_comparison, run_compare  # noqa: E402
from morm_explorer.evaluation.stats import paired_mean_diff, prompt_means  # noqa: E402
from morm_explorer.policy.jobs import DEMO_HELDOUT_PROMPTS, DEMO_TRAIN_PROMPTS  # noqa: E402
from morm_explorer.policy.ppo import Hooks, train_ppo  # noqa: E402
from morm_explorer.policy.ppo_config import PPOConfig  # noqa: E402
from morm_explorer.workspace import Workspace  # noqa: E402

LEANS = {"demo-helpful": "helpful", "demo-harmless": "harmless"}


def differences(frame, runs: dict[str, str], prefixes=("rm:", "judge:"), seed: int = 0) -> dict:
    """For each run's leaned-on objective and each scorer: the paired mean difference of that
    run minus the other run over prompts, with its bootstrap interval."""
    names = list(runs)
    out = {}
    for prefix in prefixes:
        cols = [c for c in frame.columns if c.startswith(prefix)]
        means = prompt_means(frame, cols)
        for run, objective in runs.items():
            other = names[1 - names.index(run)]
            col = prefix + objective
            if col not in means:
                continue
            a, b = means.loc[run][col], means.loc[other][col]
            common = a.index.intersection(b.index)
            d = paired_mean_diff(a.loc[common].to_numpy(), b.loc[common].to_numpy(), seed=seed)
            out[f"{prefix}{objective}"] = {"run": run, "other": other, **d._asdict()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("--policy", default="smollm2")
    p.add_argument("--algorithm", default="grpo")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--mini-batch-size", type=int, default=0, help="0: the whole batch")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--ppo-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-coef", type=float, default=0.02)
    p.add_argument("--aggregation", default="normalize_then_sum")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--lora-target-modules", default=",".join(
        PrepareDemoJob().lora_target_modules), help="layers LoRA adapts, comma-separated "
        "(default: the demo's; empty: every attention and MLP projection)")
    p.add_argument("--lean", type=float, default=0.8, help="weight on the leaned-on objective; "
                   "the rest is shared equally by the others")
    p.add_argument("--compare-samples", type=int, default=4)
    p.add_argument("--compare-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--tag", default="bench")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-train", action="store_true", help="compare the runs already there")
    p.add_argument("--skip-compare", action="store_true", help="read the comparison already "
                   "there (with --skip-train)")
    p.add_argument("--comparison", default="", help="read this comparison of the base and "
                   "the two runs (e.g. the demo build's `demo`) instead of training")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.comparison:
        args.skip_train = args.skip_compare = True
    if args.threads:
        torch.set_num_threads(args.threads)
    ws = Workspace(args.workspace)
    print(f"{platform.node()} torch {torch.__version__} threads {torch.get_num_threads()} "
          f"load {os.getloadavg()}", flush=True)
    objectives = list(POLICIES["demo-helpful"])
    runs, times, finals = {}, {}, {}
    for name, objective in LEANS.items():
        rest = (1 - args.lean) / (len(objectives) - 1)
        weights = {o: (args.lean if o == objective else rest) for o in objectives}
        run_dir = ws.root / "bench_runs" / f"{args.tag}-{name}"
        runs[name] = str(run_dir / "policy")
        if args.skip_train:
            continue
        mb = args.mini_batch_size or args.batch_size * (
            args.group_size if args.algorithm != "ppo" else 1)
        cfg = PPOConfig(name=name, algorithm=args.algorithm, policy=args.policy,
                        reward_model=RM, prompts=DEMO_TRAIN_PROMPTS, weights=weights,
                        steps=args.steps, batch_size=args.batch_size, mini_batch_size=mb,
                        group_size=args.group_size if args.algorithm != "ppo" else 1,
                        ppo_epochs=args.ppo_epochs, lr=args.lr, kl_coef=args.kl_coef,
                        multi_objective_aggregation=args.aggregation,
                        max_new_tokens=args.max_new_tokens, device=args.device, seed=args.seed,
                        lora_target_modules=args.lora_target_modules, merge_lora=False,
                        adapter_dtype=PrepareDemoJob().adapter_dtype,
                        checkpoint_every=0, sample_every=0, report_to=[])

        def show(step: int, m: dict, name=name) -> None:
            scores = " ".join(f"{k.rsplit('/', 1)[1]}={v:+.2f}" for k, v in m.items()
                              if k.startswith("objective/scores/"))
            print(f"{name} step {step:3d} {m['time/step_s']:6.1f} s  len "
                  f"{m['val/response_length']:5.1f}  KL {m['objective/kl']:+.3f}  {scores}",
                  flush=True)

        t0 = time.perf_counter()
        res = train_ppo(cfg, run_dir, workspace=ws, hooks=Hooks(metrics=show))
        times[name] = time.perf_counter() - t0
        finals[name] = res["history"][-1]
        print(f"{name}: {times[name]:.0f} s", flush=True)
    t0 = time.perf_counter()
    cmp_name = args.comparison or f"{args.tag}-heldout"
    if not args.skip_compare:
        run_compare(ws, CompareJob(name=cmp_name, policies=[args.policy, *runs.values()],
                                   reward_model=RM, judge_model=JUDGE,
                                   prompts=DEMO_HELDOUT_PROMPTS,
                                   sampling={"n": args.compare_samples,
                                             "max_new_tokens": args.compare_tokens},
                                   overwrite=True, device=args.device), device=args.device)
    compare_s = time.perf_counter() - t0
    frame = load_comparison(ws, cmp_name).frame
    labels = list(dict.fromkeys(frame["policy"]))
    frame = frame.replace({"policy": dict(zip(labels[1:], LEANS, strict=True))})
    diffs = differences(frame, {n: o for n, o in LEANS.items()})
    passed = all(d["low"] > 0 for d in diffs.values())
    cols = [c for c in frame.columns if c.startswith(("rm:", "judge:"))]
    extra = [c for c in ("n_tokens", "kl") if c in frame.columns]  # kl: k1 nats from the base
    means = prompt_means(frame, cols + extra).groupby(level="policy", sort=False).mean()
    print(means.round(3).to_string())
    for key, d in diffs.items():
        print(f"{key:16s} {d['run']} - {d['other']}: {d['diff']:+.3f} "
              f"[{d['low']:+.3f}, {d['high']:+.3f}] (n={d['n']})")
    each = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    print(f"train {sum(times.values()):.0f} s ({each}); compare {compare_s:.0f} s; "
          f"passed: {passed}; load {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "args": vars(args), "train_s": times, "compare_s": compare_s, "diffs": diffs,
            "means": means.to_dict(), "passed": passed,
            "finals": finals}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
