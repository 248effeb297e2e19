"""PPO throughput: response tokens per second of whole PPO steps (rollout, reward, PPO epochs),
and the per-objective score and KL curves of the run.

    python benchmarks/ppo.py [--policy tiny|smollm2|FOLDER] [--steps 4] [--batch-size 8]
        [--mini-batch-size 4] [--max-new-tokens 48] [--device auto] [--reward-model REF]
        [--workspace DIR] [--weights '{"helpful": 0.8, ...}'] [--lr 1e-5] [--full]
        [--threads N] [--out results.json]

``--policy tiny`` is a random 2-layer Llama (hidden 64) with a word-level tokenizer built
here; without ``--reward-model`` the reward is synthetic (objectives "brevity": 1 - words/50,
and "diversity": distinct words / words), so the benchmark needs no trained model. The first
step (warm-up) is left out of the throughput, which is the median over the other steps of
tokens/per_s (response tokens up to their eos, over the whole step's wall time). Timings are
wall-clock on a possibly shared machine: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from morm_explorer.policy.ppo import Hooks, train_ppo  # noqa: E402
from morm_explorer.policy.ppo_config import PPOConfig  # noqa: E402
from morm_explorer.workspace import Workspace  # noqa: E402

SYNTHETIC = ["brevity", "diversity"]
WORDS = ("yes no the a is it to and of in i you can help please thanks sure here how what "
         "water egg boil minutes safe hot cold good bad maybe").split()


def synthetic_reward(prompts: list[str], responses: list[str]) -> np.ndarray:
    rows = []
    for r in responses:
        words = r.split()
        rows.append([1.0 - min(len(words), 50) / 50, len(set(words)) / max(len(words), 1)])
    return np.array(rows)


def tiny_policy(path: Path) -> str:
    """A random 2-layer Llama with a word-level tokenizer and a chat template, saved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<eos>", "<|user|>", "<|assistant|>"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + WORDS)},
                                         unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                  eos_token="<eos>", additional_special_tokens=specials[2:])
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> "
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=None,
        tie_word_embeddings=False)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def first_last(history: list[dict], key: str, n: int = 5) -> tuple[float, float]:
    values = [m[key] for m in history]
    n = max(1, min(n, len(values) // 2))
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="tiny")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mini-batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--device", default="auto")
    p.add_argument("--reward-model", default="", help="workspace name or folder (default: "
                   "the synthetic reward)")
    p.add_argument("--workspace", default=None)
    p.add_argument("--weights", default="{}", help="JSON object objective -> weight")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-5 (LoRA), 3e-3 (tiny)")
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's "
                   "default); 1 is steadier on a machine shared with other work")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"{platform.node()} torch {torch.__version__} threads {torch.get_num_threads()} "
          f"load {os.getloadavg()}", flush=True)
    ws = Workspace(args.workspace) if args.workspace else None
    with tempfile.TemporaryDirectory() as tmp:
        policy = tiny_policy(Path(tmp) / "tiny") if args.policy == "tiny" else args.policy
        lr = args.lr if args.lr is not None else (3e-3 if args.policy == "tiny" else 1e-5)
        cfg = PPOConfig(name="bench", policy=policy, reward_model=args.reward_model,
                        steps=args.steps, batch_size=args.batch_size,
                        mini_batch_size=args.mini_batch_size, max_new_tokens=args.max_new_tokens,
                        device=args.device, lora=not args.full, lr=lr, kl_coef=args.kl_coef,
                        weights=json.loads(args.weights), seed=args.seed, checkpoint_every=0,
                        sample_every=0)
        reward = {} if args.reward_model else {"reward_fn": synthetic_reward,
                                               "objectives": SYNTHETIC}

        def show(step: int, m: dict) -> None:
            scores = " ".join(f"{k.rsplit('/', 1)[1]}={v:+.3f}" for k, v in m.items()
                              if k.startswith("objective/scores/"))
            print(f"step {step:3d}  {m['tokens/per_s']:7.1f} tok/s  {m['time/step_s']:6.2f} s "
                  f"(rollout {m['time/rollout_s']:5.2f} s)  len {m['val/response_length']:5.1f}"
                  f"  KL {m['objective/kl']:+.3f}  {scores}", flush=True)

        t0 = time.perf_counter()
        res = train_ppo(cfg, Path(tmp) / "run", workspace=ws, hooks=Hooks(metrics=show),
                        **reward)
        wall = time.perf_counter() - t0
    hist = res["history"]
    timed = hist[1:] or hist
    summary = {
        "policy": args.policy, "device": cfg.device, "lora": cfg.lora, "steps": cfg.steps,
        "batch_size": cfg.batch_size, "max_new_tokens": cfg.max_new_tokens,
        "reward_model": args.reward_model or "synthetic", "weights": cfg.weights,
        "tokens_per_s_median": float(np.median([m["tokens/per_s"] for m in timed])),
        "step_s_median": float(np.median([m["time/step_s"] for m in timed])),
        "rollout_share": float(np.sum([m["time/rollout_s"] for m in timed])
                               / np.sum([m["time/step_s"] for m in timed])),
        "wall_s": wall, "first_vs_last": {
            k: first_last(hist, k) for k in hist[0]
            if k.startswith("objective/scores/") or k in ("objective/kl", "objective/entropy",
                                                          "val/response_length")},
    }
    print(json.dumps(summary, indent=1))
    print(f"load {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "history": hist}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
