"""TRL 1.12's PPOTrainer, one timed run: the TRL side of ``benchmarks/rl_vs_trl.py --algorithm
ppo``, which starts it as a subprocess in the benchmark environment (``scripts/setup.sh
--bench``: TRL 1.12 on PYTHONPATH, the project venv's torch and transformers under it).

    PYTHONPATH=.venv-bench/trl112 python benchmarks/trl_ppo.py --policy DIR --reward-model DIR
        --settings '{"steps": 3, "batch_size": 8, ...}' --out result.json

The policy gets LoRA adapters (the reference is the policy with them off); the reward model and
the value model are each a copy of the sequence-classification model in ``--reward-model`` (the
value model is trained in full, as TRL's PPO does). A pad token of its own ("[PAD]", id past
the vocabulary: TRL's PPO finds padding by id and masks it before the embedding) is added, as
TRL's PPO example does, so that no real token is taken for padding. Writes the response tokens
(up to and including the first eos) of each rollout and the wall clock at the end of each
update, and those per second of wall time and of this process's CPU time
(``tokens_per_s``, ``tokens_per_cpu_s``); the first update is warm-up and left out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", required=True)
    p.add_argument("--reward-model", required=True)
    p.add_argument("--settings", required=True, help="JSON: steps, batch_size, "
                   "mini_batch_size, epochs, max_new_tokens, temperature, beta, lr, seed, "
                   "threads, targets (LoRA modules)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    s = json.loads(args.settings)
    torch.set_num_threads(s["threads"])

    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from transformers.trainer_callback import PrinterCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer

    from morm_explorer.policy.generate import format_prompt
    from morm_explorer.policy.jobs import load_prompts

    if not trl.__version__.startswith("1.12."):
        raise SystemExit(f"expected TRL 1.12 on PYTHONPATH, found {trl.__version__} at "
                         f"{trl.__file__}")
    B, mb = s["batch_size"], s["mini_batch_size"]
    tokens: list[int] = []  # response tokens per rollout
    ends: list[tuple[float, float]] = []  # (wall, CPU) clocks at the end of each update

    truncate = ppo_trainer.truncate_response

    def counting_truncate(stop_token_id, pad_token_id, responses):
        out = truncate(stop_token_id, pad_token_id, responses)
        tokens.append(int((out != pad_token_id).sum()))
        return out

    ppo_trainer.truncate_response = counting_truncate  # called once per rollout (B <= 64)

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            ends.append((time.perf_counter(), time.process_time()))

    tok = AutoTokenizer.from_pretrained(args.policy, padding_side="left")
    tok.add_special_tokens({"pad_token": "[PAD]"})
    ids = [tok(format_prompt(tok, r["prompt"]), add_special_tokens=False)["input_ids"]
           for r in load_prompts("demo")]
    data = Dataset.from_dict({"input_ids": ids})
    f32 = {"dtype": torch.float32}
    policy = AutoModelForCausalLM.from_pretrained(args.policy, **f32)
    reward = AutoModelForSequenceClassification.from_pretrained(args.reward_model, **f32)
    value = AutoModelForSequenceClassification.from_pretrained(args.reward_model, **f32)
    with tempfile.TemporaryDirectory() as tmp:
        config = PPOConfig(
            output_dir=tmp, total_episodes=s["steps"] * B, per_device_train_batch_size=B,
            gradient_accumulation_steps=1, num_mini_batches=B // mb,
            local_rollout_forward_batch_size=B, num_ppo_epochs=s["epochs"],
            response_length=s["max_new_tokens"], temperature=s["temperature"],
            stop_token="eos", kl_coef=s["beta"], kl_estimator="k1", cliprange=0.2,
            vf_coef=0.1, cliprange_value=0.2, gamma=1.0, lam=0.95, whiten_rewards=False,
            learning_rate=s["lr"], lr_scheduler_type="constant", num_sample_generations=0,
            use_cpu=s["device"] == "cpu", bf16=False, fp16=False,
            gradient_checkpointing=False, seed=s["seed"], report_to="none",
            save_strategy="no", logging_steps=1, disable_tqdm=True)
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=s["targets"],
                          task_type="CAUSAL_LM")
        trainer = PPOTrainer(args=config, processing_class=tok, model=policy, ref_model=None,
                             reward_model=reward, value_model=value, train_dataset=data,
                             peft_config=lora, callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # its metrics are not printed, as ours
        trainer.train()
    if len(ends) != s["steps"] or len(tokens) != s["steps"]:
        raise SystemExit(f"expected {s['steps']} updates, timed {len(ends)} with "
                         f"{len(tokens)} rollouts")
    timed = sum(tokens[1:])
    result = {"trl": trl.__version__, "tokens": tokens, "ends": ends,
              "tokens_per_s": timed / (ends[-1][0] - ends[0][0]),
              "tokens_per_cpu_s": timed / (ends[-1][1] - ends[0][1])}
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
