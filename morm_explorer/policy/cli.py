"""`morm rl train` and `morm ppo ...`: RL runs (PPO, GRPO, RLOO), weight sweeps and rewarded
soups from the command line.

The flags of `morm rl train` and of its PPO alias `morm ppo train` are the fields of
`PPOConfig` (docstrings as help; ``--algorithm ppo|grpo|rloo``, ppo by default); list fields
(``weight_schedule``, ``constraints``) take JSON, e.g. ``--constraints
'[{"objective": "harmless", "threshold": 0}]'``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time


def _numbers(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas: {e}") from e


def add_ppo_flags(p: argparse.ArgumentParser) -> None:
    from morm_explorer.policy.ppo_config import PPOConfig
    from morm_explorer.reward.cli import add_config_flags

    add_config_flags(p, PPOConfig)


def _config(args):
    from morm_explorer.policy.ppo_config import PPOConfig

    return PPOConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PPOConfig)})


def _checked(args, ref: str):
    """The policy ``ref`` checked before any job is queued (a `PolicySource`)."""
    from morm_explorer.policy.source import check_policy_source

    return check_policy_source(ref, workspace=_ws(args))


def _launch(args, spec, sources) -> int:
    """Submit ``spec`` or run it here; once it is queued (or has succeeded here), its policies
    (``sources``) are offered by the app's pickers too."""
    from morm_explorer.policy.source import remember_policy

    rc = _submit(args, spec) if args.submit else _run_inline(args, spec)
    if rc == 0:
        for source in sources:
            remember_policy(_ws(args), source)
    return rc


def _train_or_sweep(args, spec) -> int:
    """Launch a PPO or sweep job with its base policy checked and given as its reference."""
    source = _checked(args, spec.config["policy"])
    spec = dataclasses.replace(spec, config={**spec.config, "policy": source.ref})
    return _launch(args, spec, [source])


def _ws(args):
    from morm_explorer.workspace import Workspace

    return Workspace(args.workspace)


def _submit(args, spec) -> int:
    from morm_explorer.jobs.cli import submit_job

    return submit_job(_ws(args), spec, where="on the Fine-tune page")


def _run_inline(args, spec) -> int:
    """Run a job spec in this process through the job system (progress, metrics and logs are
    recorded as for a worker), printing its log as it goes."""
    from morm_explorer.jobs.worker import run_inline

    t0 = time.perf_counter()
    info = run_inline(_ws(args), spec)
    print(f"job {info.id} {info.status} in {time.perf_counter() - t0:.1f} s")
    if info.status != "succeeded":
        print(info.error or "", file=sys.stderr)
        return 1
    print(json.dumps(info.result, indent=2))
    return 0


def cmd_train(args) -> int:
    from morm_explorer.jobs.backend import get_backend
    from morm_explorer.policy.ppo_jobs import PPOJob, check_new_run

    cfg = _config(args)
    if args.submit and not args.overwrite:  # as the Fine-tune page refuses a taken name
        ws = _ws(args)
        check_new_run(ws, cfg.name, get_backend(ws, start_worker=False).list(
            status=("queued", "running"), kind=PPOJob.kind))
    return _train_or_sweep(args, PPOJob(config=cfg.to_dict(), overwrite=args.overwrite))


def cmd_sweep(args) -> int:
    from morm_explorer.policy.sweep import SweepJob

    return _train_or_sweep(args, SweepJob(
        config=_config(args).to_dict(), objectives=args.objectives.split(","),
        grid_steps=args.grid_steps, parallel=args.parallel))


def cmd_soup(args) -> int:
    from morm_explorer.policy.soup import SoupJob

    spec = SoupJob(name=args.name, policy_a=args.policy_a, policy_b=args.policy_b,
                   lambdas=args.lambdas,
                   reward_model=args.reward_model, prompts=args.prompts, limit=args.limit,
                   sampling={"n": args.n, "max_new_tokens": args.max_new_tokens,
                             "seed": args.seed}, device=args.device, overwrite=args.overwrite)
    a, b = _checked(args, spec.policy_a), _checked(args, spec.policy_b)
    return _launch(args, dataclasses.replace(spec, policy_a=a.ref, policy_b=b.ref), [a, b])


def cmd_list(args) -> int:
    from morm_explorer.policy.ppo_jobs import trained_policies

    rows = [f"{name:28s} base {cfg.get('policy', '?'):10s} weights {cfg.get('weights')} "
            f"steps {cfg.get('steps')}" for name, cfg in trained_policies(_ws(args))]
    print("\n".join(rows) if rows else "no fine-tuned policies yet: `morm ppo train`")
    return 0


def add_ppo_commands(groups: argparse._SubParsersAction) -> None:
    rl = groups.add_parser("rl", help="multi-objective RL fine-tuning: PPO, GRPO or RLOO")
    p = rl.add_subparsers(dest="command", metavar="ACTION", required=True).add_parser(
        "train", help="one run: --algorithm ppo, grpo or rloo (morm ppo train: ppo's default)")
    add_ppo_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace policies/<name>")
    p.add_argument("--submit", action="store_true", help="run as a job on the worker")
    p.set_defaults(func=cmd_train)
    ppo = groups.add_parser("ppo", help="multi-objective PPO: train, sweep, soup, list")
    sub = ppo.add_subparsers(dest="command", metavar="ACTION", required=True)
    for name, func, help_ in (("train", cmd_train, "one PPO run"),
                              ("sweep", cmd_sweep, "PPO runs over a grid of weights")):
        p = sub.add_parser(name, help=help_)
        add_ppo_flags(p)
        if name == "sweep":
            p.add_argument("--objectives", required=True,
                           help="comma-separated objectives whose weights the grid spans")
            p.add_argument("--grid-steps", type=int, default=2,
                           help="weights in steps of 1/grid-steps (default: 2)")
            p.add_argument("--parallel", action="store_true",
                           help="one job per run (side by side on a Ray cluster)")
        p.add_argument("--overwrite", action="store_true", help="replace policies/<name>")
        p.add_argument("--submit", action="store_true", help="run as a job on the worker")
        p.set_defaults(func=func)
    p = sub.add_parser("soup", help="interpolate two fine-tuned policies over a grid of "
                       "lambda, sample and score each mix")
    p.add_argument("--name", required=True, help="candidate set for the mixes' samples")
    p.add_argument("--policy-a", required=True)
    p.add_argument("--policy-b", required=True)
    p.add_argument("--lambdas", default=[0.0, 0.25, 0.5, 0.75, 1.0], type=_numbers,
                   help="comma-separated mixing coefficients in [0, 1]")
    p.add_argument("--reward-model", required=True)
    p.add_argument("--prompts", default="demo")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--n", type=int, default=2, help="samples per prompt and mix")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--submit", action="store_true", help="run as a job on the worker")
    p.set_defaults(func=cmd_soup)
    p = sub.add_parser("list", help="fine-tuned policies in the workspace")
    p.set_defaults(func=cmd_list)

