"""A cost estimate for a PPO run before it is launched: tokens generated and trained on, and
the time they take at throughputs measured by ``benchmarks/ppo.py`` (see docs/benchmarks.md).
An estimate, not a promise: prompts vary in length and responses stop early at eos."""

from __future__ import annotations

from dataclasses import dataclass

from morm_explorer.policy.ppo_config import PPOConfig

# Response tokens per second of a whole PPO step (rollout, reward, PPO epochs) from
# benchmarks/ppo.py on this project's 2-core CPU (LoRA, batch 8, 48 new tokens): SmolLM2 median
# 21 tokens/s, the tiny test model 1,482. The CUDA figures are NOT measured yet (no GPU was
# lent): rough guesses, labelled as such in the estimate.
THROUGHPUT = {
    ("smollm2", "cpu"): 21.0,
    ("tiny", "cpu"): 1482.0,
}
GUESSED = {("smollm2", "cuda"): 400.0, ("tiny", "cuda"): 3000.0}
PROMPT_TOKENS = 60  # a typical chat-formatted demo prompt


@dataclass(frozen=True)
class Estimate:
    steps: int
    sequences: int
    response_tokens: int
    device: str
    seconds: float
    measured: bool = True

    def sentence(self) -> str:
        t = self.seconds
        when = "under a second" if t < 1 else "about " + (
            f"{t:.0f} s" if t < 120 else f"{t / 60:.0f} min" if t < 7200 else f"{t / 3600:.1f} h")
        return (f"Estimate: {self.steps} steps x {self.sequences // max(self.steps, 1)} "
                f"responses = {self.sequences:,} responses, up to {self.response_tokens:,} "
                f"response tokens; {when} on {self.device}"
                + ("." if self.measured else " (a guess: no throughput measured there yet)."))


def estimate_ppo(config: PPOConfig, device: str = "cpu", family: str | None = None) -> Estimate:
    """Upper-bound tokens (every response runs to max_new_tokens) and the time at the measured
    throughput of the policy family (SmolLM2-sized by default)."""
    family = family or ("tiny" if "tiny" in config.policy.lower() else "smollm2")
    sequences = config.steps * config.responses_per_step  # GRPO, RLOO: group_size a prompt
    tokens = sequences * config.max_new_tokens
    key = (family, device)
    rate = THROUGHPUT.get(key) or GUESSED.get(key) or THROUGHPUT[("smollm2", "cpu")]
    # PPO epochs re-read the rollout: more epochs, more time (the rollout is about half a step)
    factor = 0.5 + 0.5 * config.ppo_epochs / 2
    return Estimate(config.steps, sequences, tokens, device, tokens / rate * factor,
                    measured=key in THROUGHPUT)
