"""GRPO throughput side by side: this project's trainer (`morm rl train --algorithm grpo`)
against TRL's GRPOTrainer (the TRL installed in the project's venv), response tokens per
second of each and their ratio.

    python benchmarks/rl_vs_trl.py [--policy tiny|smollm2|FOLDER] [--rounds 2] [--steps 3]
        [--batch-size 8] [--group-size 4] [--mini-batch-size 16] [--epochs 1]
        [--max-new-tokens 48] [--beta 0.04] [--threads 1] [--device cpu] [--out results.json]

The two run alternately in one process (project, TRL, project, TRL, ... ``--rounds`` times
each), so a machine busy with other work slows both alike: read the ratio of the medians, not
either absolute number. Settings shared by both: the policy in float32, LoRA r16 (alpha 32, no
dropout) on the same projections, ``--batch-size`` prompts per rollout with ``--group-size``
responses each (N = B G), minibatches of ``--mini-batch-size`` responses and ``--epochs``
passes over each rollout (TRL: per_device_train_batch_size, steps_per_generation = N /
mini_batch_size, num_iterations), the "dapo" loss, beta of the k3 KL in the loss (so both run
the reference, the policy with its adapters off), sampling at temperature 0.7 with no top-p or
top-k, ``--max-new-tokens``, a constant learning rate, gradient clipping at 1.0, no gradient
checkpointing (TRL's GRPOConfig turns it on by default), the CPU threads, and the synthetic
reward of ``benchmarks/ppo.py`` (objectives brevity and diversity: the project z-scores and
sums them, TRL sums them; the cost is the same). ``--steps`` is the number of rollouts of a
run; the first is warm-up and left out. A run's throughput is the response tokens (up to and
including the first eos) of the other rollouts over their wall time (sampling, rewards,
reference and updates).

PPO is not compared here. The PPO trainer to compare with is TRL 1.12's, which needs a virtual
environment of its own beside the project's (which holds the newest TRL), made with
``python -m venv .venv-trl112 && .venv-trl112/bin/pip install -e . "trl==1.12.*"``; the
project's side of that comparison is ``benchmarks/ppo.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_ppo", Path(__file__).with_name("ppo.py"))
bench_ppo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_ppo)
SYNTHETIC, synthetic_reward, tiny_policy = (bench_ppo.SYNTHETIC, bench_ppo.synthetic_reward,
                                            bench_ppo.tiny_policy)
TEMPERATURE = 0.7


def run_project(policy: str, args: argparse.Namespace) -> float:
    """Response tokens per second of one run of the project's GRPO, after the first step."""
    from morm_explorer.policy.ppo import train_ppo
    from morm_explorer.policy.ppo_config import PPOConfig

    cfg = PPOConfig(name="bench", algorithm="grpo", policy=policy, steps=args.steps,
                    batch_size=args.batch_size, group_size=args.group_size,
                    mini_batch_size=args.mini_batch_size, ppo_epochs=args.epochs, lr=args.lr,
                    lora=True, lora_r=16, lora_alpha=32, kl_coef=args.beta, kl_in="loss",
                    loss_type="dapo", temperature=TEMPERATURE, top_p=1.0,
                    max_new_tokens=args.max_new_tokens, device=args.device, seed=args.seed,
                    checkpoint_every=0, sample_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        hist = train_ppo(cfg, Path(tmp) / "run", reward_fn=synthetic_reward,
                         objectives=SYNTHETIC)["history"]
    N = args.batch_size * args.group_size
    timed = hist[1:]
    return (sum(m["val/response_length"] * N for m in timed)
            / sum(m["time/step_s"] for m in timed))


def run_trl(policy: str, args: argparse.Namespace, prompts: list[str],
            targets: list[str]) -> float:
    """Response tokens per second of one run of TRL's GRPOTrainer, after the first rollout."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    N = args.batch_size * args.group_size
    per_rollout = N // args.mini_batch_size * args.epochs  # optimizer steps per rollout
    tokens: list[int] = []  # response tokens per rollout
    ends: list[float] = []  # wall clock at the end of each optimizer step

    def text(c) -> str:
        return c[0]["content"] if isinstance(c, list) else c

    def brevity(prompts, completions, completion_ids, **kw) -> list[float]:
        tokens.append(sum(len(ids) for ids in completion_ids))
        return synthetic_reward(prompts, [text(c) for c in completions])[:, 0].tolist()

    def diversity(prompts, completions, **kw) -> list[float]:
        return synthetic_reward(prompts, [text(c) for c in completions])[:, 1].tolist()

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            ends.append(time.perf_counter())

    tok = AutoTokenizer.from_pretrained(policy)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(
            output_dir=tmp, max_steps=args.steps * per_rollout, learning_rate=args.lr,
            lr_scheduler_type="constant", per_device_train_batch_size=args.mini_batch_size,
            gradient_accumulation_steps=1, steps_per_generation=N // args.mini_batch_size,
            num_generations=args.group_size, num_iterations=args.epochs, beta=args.beta,
            loss_type="dapo", epsilon=0.2, max_grad_norm=1.0, temperature=TEMPERATURE,
            top_p=1.0, top_k=0, max_completion_length=args.max_new_tokens,
            model_init_kwargs={"dtype": torch.float32}, use_cpu=args.device == "cpu",
            bf16=False, fp16=False, gradient_checkpointing=False, disable_dropout=True,
            seed=args.seed, report_to="none",
            save_strategy="no", logging_steps=1, log_completions=False, disable_tqdm=True)
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets,
                          task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=policy, reward_funcs=[brevity, diversity], args=config,
                              train_dataset=data, processing_class=tok, peft_config=lora,
                              callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # its metrics are not printed, as ours
        trainer.train()
    first = ends[per_rollout - 1]  # the end of the warm-up rollout's updates
    return sum(tokens[1:]) / (ends[-1] - first)


def resolve_policy(name: str, tmp: str) -> str:
    """A folder both trainers load: the tiny Llama built here, SmolLM2 converted once into
    the default workspace, or the folder given."""
    if name == "tiny":
        return tiny_policy(Path(tmp) / "tiny")
    if name == "smollm2":
        from morm_explorer.policy.load import convert_smollm2

        return str(convert_smollm2())
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="tiny", help="tiny, smollm2 or a model folder")
    p.add_argument("--rounds", type=int, default=2, help="runs of each trainer, alternating")
    p.add_argument("--steps", type=int, default=3, help="rollouts per run, the first warm-up")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per rollout")
    p.add_argument("--group-size", type=int, default=4, help="responses per prompt")
    p.add_argument("--mini-batch-size", type=int, default=16, help="responses per update")
    p.add_argument("--epochs", type=int, default=1, help="passes over each rollout")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (k3, in the loss)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2: the first rollout is warm-up")
    if (args.batch_size * args.group_size) % args.mini_batch_size:
        p.error("--mini-batch-size must divide batch size times group size")
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from morm_explorer.policy.jobs import load_prompts
    from morm_explorer.policy.ppo import lora_targets

    print(f"torch {torch.__version__} threads {torch.get_num_threads()} "
          f"load {os.getloadavg()}", flush=True)
    prompts = [r["prompt"] for r in load_prompts("demo")]
    project, trl = [], []
    with tempfile.TemporaryDirectory() as tmp:
        policy = resolve_policy(args.policy, tmp)
        targets = lora_targets(AutoModelForCausalLM.from_pretrained(policy))
        for r in range(args.rounds):
            project.append(run_project(policy, args))
            print(f"round {r}: project {project[-1]:8.1f} tok/s", flush=True)
            trl.append(run_trl(policy, args, prompts, targets))
            print(f"round {r}: trl     {trl[-1]:8.1f} tok/s", flush=True)
    summary = {
        "policy": args.policy, "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "project_tokens_per_s": project, "trl_tokens_per_s": trl,
        "project_median": float(np.median(project)), "trl_median": float(np.median(trl)),
        "ratio": float(np.median(project) / np.median(trl)),
    }
    print(json.dumps(summary, indent=1))
    print(f"load {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
