"""RL throughput side by side: this project's trainer (`morm rl train`) against TRL's, response
tokens per second of each and their ratio; GRPO against the TRL in the project's venv (its
GRPOTrainer), PPO against TRL 1.12's PPOTrainer (the last TRL with one).

    python benchmarks/rl_vs_trl.py [--algorithm grpo|ppo] [--policy tiny|smollm2|FOLDER]
        [--rounds 2] [--steps 3] [--batch-size 8] [--group-size 4] [--mini-batch-size N]
        [--epochs N] [--max-new-tokens 48] [--beta B] [--threads 1] [--device cpu] [--floor]
        [--out results.json]

The two run alternately in one process tree (project, TRL, project, TRL, ... ``--rounds``
times each), so a machine busy with other work slows both alike: read the ratio of the
medians, not either absolute number. ``--steps`` is the number of rollouts of a run; the first
is warm-up and left out. A run's throughput is the response tokens (up to and including the
first eos) of the other rollouts over their wall time (sampling, rewards, reference, values
and updates); beside it, over the CPU time of the process that ran them (with ``--threads 1``
a steadier measure on a machine shared with other work, which stretches wall time far more
than the CPU time a process is given). Settings shared by both sides: the policy in float32,
LoRA r16 (alpha 32, no dropout) on the same projections (the reference is the policy with its
adapters off), ``--batch-size`` prompts per rollout, minibatches of ``--mini-batch-size``
responses (one optimizer step each), ``--epochs`` passes over each rollout, sampling at
temperature 0.7 with no top-p or top-k, ``--max-new-tokens``, a constant learning rate, the
CPU threads.

GRPO (default: minibatch 16, 1 epoch, beta 0.04): ``--group-size`` responses per prompt (N = B
G; TRL: per_device_train_batch_size = mini-batch, steps_per_generation = N / mini-batch,
num_iterations = epochs), the "dapo" loss, beta of the k3 KL in the loss (so both run the
reference), gradient clipping at 1.0, no gradient checkpointing (TRL's GRPOConfig turns it on
by default), and the synthetic reward of ``benchmarks/ppo.py`` (objectives brevity and
diversity: the project z-scores and sums them, TRL sums them; the cost is the same).

PPO (default: minibatch 4, 2 epochs, beta 0.05): TRL 1.12 runs in a subprocess on
``PYTHONPATH=.venv-bench/trl112`` (``scripts/setup.sh --bench`` installs it; it runs on this
venv's torch and transformers), the script ``benchmarks/trl_ppo.py``. TRL's PPO scores with an
``AutoModelForSequenceClassification`` on the policy's tokenizer, so one is built here (the
policy's config, one label, random weights from seed 0) and both sides score with it: TRL as
its reward model, the project through ``train_ppo(reward_fn=...)`` running the same model's
backbone and score head on the prompt and response (a reward of one objective). Both put beta
times the k1 KL on every token's reward, GAE with gamma 1 and lambda 0.95, whitened
advantages, clip 0.2 on the ratio and on the values, value-loss weight 0.1, no missing-eos
penalty. **The structures differ**, and that is part of the speed difference: TRL's value
model is a second full model (a copy of the reward model, trained in full with its own AdamW
state, run forward and backward beside the policy at every minibatch and once more in the
rollout), while the project's value head is a linear map of the policy's own last hidden
states; TRL clips no gradients, the project clips at 1.0.

``--floor``: also the project's step time over its compute floor (`benchmarks/rl_floor.py`:
generate, the reference forward, the reward, the policy's forward and backward passes, each
timed alone on the same shapes right after the run), summed over the timed steps, in wall and
in CPU time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
BENCH_ENV = HERE.parent / ".venv-bench" / "trl112"  # scripts/setup.sh --bench


def _load(name: str):
    """A sibling script of this one as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench_ppo, rl_floor = _load("ppo"), _load("rl_floor")
SYNTHETIC, synthetic_reward, tiny_policy = (bench_ppo.SYNTHETIC, bench_ppo.synthetic_reward,
                                            bench_ppo.tiny_policy)
TEMPERATURE = 0.7
DEFAULTS = {  # algorithm -> (mini-batch size, epochs, beta) when not given
    "grpo": (16, 1, 0.04), "ppo": (4, 2, 0.05)}


def build_reward_model(policy: str, path: Path, seed: int) -> str:
    """A sequence-classification model with one label on the policy's config and tokenizer,
    random weights from ``seed``, saved to ``path``: the reward model of both PPO sides."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(policy, num_labels=1)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(policy).save_pretrained(path)
    return str(path)


def seq_cls_reward(policy: str, reward_model: str, device: str):
    """reward_fn(prompts, responses) -> (N, 1) of the sequence-classification model: its
    backbone on the chat-formatted prompt followed by the response (left padding), its score
    head on the last position, as TRL's ``get_reward`` reads it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from morm_explorer.policy.generate import format_prompt

    model = AutoModelForSequenceClassification.from_pretrained(
        reward_model, dtype=torch.float32).to(device).eval()
    backbone = getattr(model, model.base_model_prefix)
    tok = AutoTokenizer.from_pretrained(policy, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    @torch.no_grad()
    def reward(prompts: list[str], responses: list[str]) -> np.ndarray:
        texts = [format_prompt(tok, p) + r for p, r in zip(prompts, responses, strict=True)]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        hidden = backbone(**enc, position_ids=position_ids, use_cache=False).last_hidden_state
        return model.score(hidden[:, -1]).float().cpu().numpy()  # (N, 1)

    return reward


def project_config(policy: str, args: argparse.Namespace):
    from morm_explorer.policy.ppo_config import PPOConfig

    shared = dict(name="bench", algorithm=args.algorithm, policy=policy, steps=args.steps,
                  batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                  ppo_epochs=args.epochs, lr=args.lr, lora=True, lora_r=16, lora_alpha=32,
                  kl_coef=args.beta, temperature=TEMPERATURE, top_p=1.0,
                  max_new_tokens=args.max_new_tokens, device=args.device, seed=args.seed,
                  checkpoint_every=0, sample_every=0)
    if args.algorithm == "ppo":  # TRL 1.12's PPO defaults, which the project shares
        return PPOConfig(**shared, kl_in="reward", gamma=1.0, lam=0.95, cliprange=0.2,
                         cliprange_value=0.2, vf_coef=0.1, whiten_advantages=True)
    return PPOConfig(**shared, group_size=args.group_size, kl_in="loss", loss_type="dapo")


def run_project(policy: str, args: argparse.Namespace, reward_fn, objectives: list[str]
                ) -> tuple[dict[str, float], dict | None]:
    """Response tokens per second of wall and of CPU time of one run of the project's trainer
    after the first step, and with ``args.floor`` its step time over its compute floor
    (`benchmarks/rl_floor.py`), in wall and in CPU time."""
    from morm_explorer.policy.ppo import Hooks, train_ppo

    cfg = project_config(policy, args)
    cpu: list[float] = []  # CPU clock at the end of each step (its metrics are reported)
    hooks = Hooks(metrics=lambda step, m: cpu.append(time.process_time()))
    with tempfile.TemporaryDirectory() as tmp, rl_floor.record_rollouts() as rolls:
        hist = train_ppo(cfg, Path(tmp) / "run", hooks=hooks, reward_fn=reward_fn,
                         objectives=objectives)["history"]
    N = cfg.responses_per_step
    timed = hist[1:]
    tokens = sum(m["val/response_length"] * N for m in timed)
    step_s, step_cpu_s = sum(m["time/step_s"] for m in timed), cpu[-1] - cpu[0]
    speed = {"wall": tokens / step_s, "cpu": tokens / step_cpu_s}
    if not args.floor:
        return speed, None
    parts = rl_floor.floor_seconds(cfg, rolls, reward_fn, objectives)
    floor = {k: sum(p[k] for p in parts) for k in parts[0]}
    return speed, {"step_s": step_s, "step_cpu_s": step_cpu_s, **floor,
                   "ratio": step_s / floor["floor"],
                   "cpu_ratio": step_cpu_s / floor["cpu/floor"]}


def run_trl_grpo(policy: str, args: argparse.Namespace, prompts: list[str],
                 targets: list[str]) -> dict[str, float]:
    """Response tokens per second of wall and of CPU time of one run of TRL's GRPOTrainer,
    after the first rollout."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    N = args.batch_size * args.group_size
    per_rollout = N // args.mini_batch_size * args.epochs  # optimizer steps per rollout
    tokens: list[int] = []  # response tokens per rollout
    ends: list[tuple[float, float]] = []  # (wall, CPU) clocks at each optimizer step's end

    def text(c) -> str:
        return c[0]["content"] if isinstance(c, list) else c

    def brevity(prompts, completions, completion_ids, **kw) -> list[float]:
        tokens.append(sum(len(ids) for ids in completion_ids))
        return synthetic_reward(prompts, [text(c) for c in completions])[:, 0].tolist()

    def diversity(prompts, completions, **kw) -> list[float]:
        return synthetic_reward(prompts, [text(c) for c in completions])[:, 1].tolist()

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            ends.append((time.perf_counter(), time.process_time()))

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
    return {"wall": sum(tokens[1:]) / (ends[-1][0] - first[0]),
            "cpu": sum(tokens[1:]) / (ends[-1][1] - first[1])}


def run_trl_ppo(policy: str, reward_model: str, args: argparse.Namespace,
                targets: list[str]) -> dict[str, float]:
    """Response tokens per second of wall and of CPU time of one run of TRL 1.12's
    PPOTrainer after the first rollout: ``benchmarks/trl_ppo.py`` in a subprocess on the
    benchmark environment."""
    settings = {"steps": args.steps, "batch_size": args.batch_size,
                "mini_batch_size": args.mini_batch_size, "epochs": args.epochs,
                "max_new_tokens": args.max_new_tokens, "temperature": TEMPERATURE,
                "beta": args.beta, "lr": args.lr, "seed": args.seed, "threads": args.threads,
                "device": args.device, "targets": targets}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(BENCH_ENV), str(HERE.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trl.json"
        proc = subprocess.run([sys.executable, str(HERE / "trl_ppo.py"), "--policy", policy,
                               "--reward-model", reward_model, "--settings",
                               json.dumps(settings), "--out", str(out)],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"TRL 1.12's PPO run failed:\n{proc.stderr[-3000:]}")
        res = json.loads(out.read_text())
        return {"wall": res["tokens_per_s"], "cpu": res["tokens_per_cpu_s"]}


def bench_env_ready() -> str | None:
    """None when `BENCH_ENV` holds TRL 1.12 (by its install record: importing it costs a
    process start; `benchmarks/trl_ppo.py` says so if it does not import), else why not."""
    if not any(BENCH_ENV.glob("trl-1.12.*.dist-info")) or not (BENCH_ENV / "trl").is_dir():
        return f"no TRL 1.12 in {BENCH_ENV}: run scripts/setup.sh --bench"
    return None


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
    p.add_argument("--algorithm", choices=sorted(DEFAULTS), default="grpo",
                   help="grpo: against the venv's TRL GRPOTrainer; ppo: against TRL 1.12's "
                   "PPOTrainer (scripts/setup.sh --bench)")
    p.add_argument("--policy", default="tiny", help="tiny, smollm2 or a model folder")
    p.add_argument("--rounds", type=int, default=2, help="runs of each trainer, alternating")
    p.add_argument("--steps", type=int, default=3, help="rollouts per run, the first warm-up")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per rollout")
    p.add_argument("--group-size", type=int, default=4, help="grpo: responses per prompt")
    p.add_argument("--mini-batch-size", type=int, default=None,
                   help="responses per update (default: grpo 16, ppo 4)")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over each rollout (default: grpo 1, ppo 2)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--beta", type=float, default=None, help="KL coefficient (default: grpo "
                   "0.04, k3 in the loss; ppo 0.05, k1 in the per-token reward)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--floor", action="store_true",
                   help="also the project's step time over its compute floor")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    mini, epochs, beta = DEFAULTS[args.algorithm]
    args.mini_batch_size = args.mini_batch_size or mini
    args.epochs = args.epochs or epochs
    args.beta = beta if args.beta is None else args.beta
    if args.steps < 2:
        p.error("--steps must be at least 2: the first rollout is warm-up")
    N = args.batch_size * (args.group_size if args.algorithm == "grpo" else 1)
    if N % args.mini_batch_size:
        p.error("--mini-batch-size must divide the responses per rollout (batch size, times "
                "group size for grpo)")
    if args.algorithm == "ppo" and (why := bench_env_ready()):
        p.error(why)
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from morm_explorer.policy.jobs import load_prompts
    from morm_explorer.policy.ppo import lora_targets

    print(f"{args.algorithm}: torch {torch.__version__} threads {torch.get_num_threads()} "
          f"load {os.getloadavg()}", flush=True)
    if args.algorithm == "ppo":
        print("structure: TRL's value model is a second full model trained beside the policy; "
              "the project's value head reads the policy's own hidden states", flush=True)
    prompts = [r["prompt"] for r in load_prompts("demo")]
    project, trl, floors = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        policy = resolve_policy(args.policy, tmp)
        targets = lora_targets(AutoModelForCausalLM.from_pretrained(policy))
        if args.algorithm == "ppo":
            rm = build_reward_model(policy, Path(tmp) / "reward", args.seed)
            reward_fn, objectives = seq_cls_reward(policy, rm, args.device), ["reward"]
        else:
            reward_fn, objectives = synthetic_reward, SYNTHETIC
        for r in range(args.rounds):
            speed, floor = run_project(policy, args, reward_fn, objectives)
            project.append(speed)
            print(f"round {r}: project {speed['wall']:8.1f} tok/s  {speed['cpu']:8.1f} tok/CPU-s",
                  flush=True)
            if floor is not None:
                floors.append(floor)
                print(f"round {r}: project step {floor['step_s']:.2f} s / floor "
                      f"{floor['floor']:.2f} s = {floor['ratio']:.2f} (generate "
                      f"{floor['generate']:.2f}, reference {floor['reference']:.2f}, reward "
                      f"{floor['reward']:.2f}, update {floor['update']:.2f}); CPU time "
                      f"{floor['step_cpu_s']:.2f} s / {floor['cpu/floor']:.2f} s = "
                      f"{floor['cpu_ratio']:.2f}", flush=True)
            speed = (run_trl_ppo(policy, rm, args, targets) if args.algorithm == "ppo"
                     else run_trl_grpo(policy, args, prompts, targets))
            trl.append(speed)
            print(f"round {r}: trl     {speed['wall']:8.1f} tok/s  {speed['cpu']:8.1f} tok/CPU-s",
                  flush=True)

    def median(runs: list[dict], key: str) -> float:
        return float(np.median([x[key] for x in runs]))

    summary = {
        "algorithm": args.algorithm, "policy": args.policy,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "project_tokens_per_s": [x["wall"] for x in project],
        "trl_tokens_per_s": [x["wall"] for x in trl],
        "project_median": median(project, "wall"), "trl_median": median(trl, "wall"),
        "ratio": median(project, "wall") / median(trl, "wall"),
        "project_tokens_per_cpu_s": [x["cpu"] for x in project],
        "trl_tokens_per_cpu_s": [x["cpu"] for x in trl],
        "cpu_ratio": median(project, "cpu") / median(trl, "cpu"),
    }
    if floors:
        summary["floor"] = floors
        summary["floor_ratio_median"] = median(floors, "ratio")
        summary["floor_cpu_ratio_median"] = median(floors, "cpu_ratio")
    print(json.dumps(summary, indent=1))
    print(f"load {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
