"""`PPOConfig`: what a multi-objective RL run (PPO, GRPO or RLOO) does, checked on construction.

Light on purpose (no torch import), so that job specs, pages and the CLI can validate a run
without loading a model. A field's name is its CLI flag's name and its docstring the help text.
The trainer is `morm_explorer.policy.ppo`; the math it uses, `morm_explorer.policy.ppo_core`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from morm_explorer.checks import check_int, check_number
from morm_explorer.errors import MormError
from morm_explorer.objectives import SCALARIZERS
from morm_explorer.report_to import parse_report_to, resolve_logging_dir
from morm_explorer.workspace import sanitize_name


def _check_weights(name: str, weights: Any) -> None:
    if not isinstance(weights, dict):
        raise MormError(f"{name} must be an object of objective: weight, got {weights!r}",
                        field=name)
    for obj, w in weights.items():
        if not isinstance(obj, str) or not obj:
            raise MormError(f"{name} has a non-text objective name {obj!r}", field=name)
        check_number(f"{name}.{obj}", w, low=0.0)
    if weights and sum(weights.values()) <= 0:
        raise MormError(f"{name}: all weights are zero, nothing to optimise", field=name)


ALGORITHMS = ("ppo", "grpo", "rloo")
GROUP_ALGORITHMS = ("grpo", "rloo")  # G responses per prompt, group baselines, no value head
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")  # TRL's multi_objective_aggregation
LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")  # TRL's GRPO loss_type, the ones used here
ADAPTER_DTYPES = ("float32", "float16")  # bfloat16's 8-bit mantissa would round small updates
MAX_STEPS = 1_000_000  # beyond any run this tool is for; a typo, not a plan
MAX_BATCH = 65_536


@dataclass(frozen=True)
class PPOConfig:
    """One multi-objective RL run: PPO (Ziegler et al. 2019; Huang et al. 2024, "The N
    Implementation Details of RLHF with PPO"), GRPO (Shao et al. 2024) or RLOO (Ahmadian et
    al. 2024). The fields a single algorithm ignores say so in their help."""

    name: str = "ppo"
    """Name of the run and of the policy it saves (workspace policies/<name>)."""
    algorithm: str = "ppo"
    """ppo (a per-objective value head and GAE), grpo (group-mean baseline, Shao et al. 2024)
    or rloo (leave-one-out baseline, Ahmadian et al. 2024); grpo and rloo sample group_size
    responses per prompt and train no value head."""
    policy: str = "smollm2"
    """Hugging Face causal LM name or folder to fine-tune (alias: smollm2)."""
    reward_model: str = ""
    """Reward model: a workspace reward-model name or a model folder."""
    prompts: str = "demo"
    """'demo' (the 72 built-in prompts), 'demo-train' / 'demo-heldout' (its two parts that share no
    prompt: 48 to train on, 24 to compare on) or a JSONL/CSV/Parquet file with a prompt column."""
    prompt_limit: int = 0
    """Use only the first this many prompts (0: all)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Scalarization weights per objective (normalized to sum 1; empty: equal weights)."""
    scalarizer: str = "weighted_sum"
    """weighted_sum, chebyshev or min (see morm_explorer.objectives)."""
    standardize: bool = True
    """Z-score each objective's reward with the reward model's stored statistics (running
    statistics of the rewards seen so far when it stores none); False: raw scores."""
    weight_schedule: list[dict] = field(default_factory=list)
    """Piecewise-linear weights over steps, e.g. [{"step": 0, "weights": {...}}, {"step": 50,
    "weights": {...}}]; before the first and after the last point the weights stay put.
    When given, it replaces `weights`."""
    constraints: list[dict] = field(default_factory=list)
    """[{"objective": ..., "threshold": ...}]: keep the batch mean of that objective's reward
    (in the units the scalarizer sees) >= threshold, by a Lagrange multiplier (Safe RLHF)."""
    lagrange_lr: float = 0.05
    """Step size of the dual ascent on the Lagrange multipliers."""
    lagrange_init: float = 0.0
    """Initial value of every Lagrange multiplier (>= 0)."""
    steps: int = 20
    """PPO updates (each: a rollout of batch_size prompts, then ppo_epochs of minibatches)."""
    batch_size: int = 8
    """Prompts per rollout (ppo: one response each; grpo, rloo: group_size each)."""
    mini_batch_size: int = 4
    """Responses per gradient step (<= the rollout's responses; the last minibatch may be
    smaller)."""
    ppo_epochs: int = 2
    """Passes over each rollout (GRPO's mu, TRL's num_iterations)."""
    lr: float = 1e-5
    """AdamW learning rate (of the LoRA adapters or of the whole model, and the value head)."""
    lora: bool = True
    """Train LoRA adapters on the attention and MLP projections instead of every weight."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    lora_target_modules: tuple[str, ...] = ()
    """Names of the linear layers LoRA adapts, e.g. q_proj,v_proj (empty: every attention and
    MLP projection of the policy)."""
    merge_lora: bool = True
    """Save the policy with the adapters merged into its weights (else the adapter folder)."""
    adapter_dtype: str = "float32"
    """dtype of the saved adapter's weights when merge_lora is off: float32, or float16 (half
    the folder's size; training stays in float32)."""
    kl_coef: float = 0.05
    """beta of the per-token KL penalty -beta * (log pi - log pi_ref) (initial value when
    adaptive)."""
    adaptive_kl: bool = False
    """Adapt beta towards target_kl (Ziegler et al. 2019)."""
    target_kl: float = 6.0
    """KL (nats per response) the adaptive controller aims for."""
    kl_horizon: int = 10000
    """Horizon of the adaptive KL controller, in responses."""
    max_new_tokens: int = 48
    """Most tokens per response."""
    temperature: float = 0.7
    """Sampling temperature (> 0); log-probabilities are taken at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling probability mass."""
    gamma: float = 1.0
    """Discount of GAE."""
    lam: float = 0.95
    """lambda of GAE."""
    cliprange: float = 0.2
    """Clipping of the policy ratio, 1 +- cliprange (TRL's epsilon)."""
    cliprange_value: float = 0.2
    """Clipping of the value update."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    whiten_advantages: bool = True
    """ppo: normalize advantages to mean 0, std 1 over each rollout's response tokens; rloo:
    over its responses (TRL's normalize_advantages); grpo: see scale_rewards."""
    group_size: int = 4
    """grpo, rloo: responses sampled per prompt (G >= 2); ppo samples one."""
    scale_rewards: str = "group"
    """grpo: divide advantages by the std of the group's rewards (group), of the rollout's
    (batch) or not at all (none, Dr. GRPO); TRL's scale_rewards."""
    multi_objective_aggregation: str = "sum_then_normalize"
    """grpo, rloo: scalarize the K rewards, then take group baselines (sum_then_normalize), or
    normalize each objective within its group, sum them with the scalarizer's coefficients and
    normalize the sum over the rollout (normalize_then_sum, GDPO); TRL's names."""
    kl_in: str = ""
    """Where the KL to the reference goes: reward (beta times log pi/pi_ref summed over the
    response, subtracted from its reward) or loss (beta times the k3 estimator per token,
    added to the loss, as GRPO). Empty: loss for grpo, reward for ppo and rloo (ppo: reward
    only)."""
    loss_type: str = "dapo"
    """grpo: how token losses are averaged (TRL's loss_type): dapo (by the rollout's response
    tokens per minibatch), bnpo (by the minibatch's tokens), grpo (per response, then over
    responses), dr_grpo (by responses x max_new_tokens). rloo: TRL's sequence-level ratio,
    mean over responses."""
    max_grad_norm: float = 1.0
    """Gradient norm clipping."""
    seed: int = 0
    """Seed of sampling, minibatch order and initialisation: the same config repeats a run."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    checkpoint_every: int = 5
    """Save a resumable checkpoint every this many steps (0: only at the end)."""
    sample_every: int = 5
    """Report a few generations with their scores every this many steps (0: never)."""
    missing_eos_penalty: float | None = None
    """Subtract this from the reward of responses cut off at max_new_tokens (no eos)."""
    report_to: tuple[str, ...] = ()
    """Also send the metrics to tensorboard, wandb and/or mlflow (transformers' report_to; all:
    each one installed; none, the default: the job store only)."""
    logging_dir: str = ""
    """TensorBoard's log folder (default: <workspace>/runs/ppo/<name>/tb/<date-time>)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "report_to", parse_report_to(self.report_to))
        object.__setattr__(self, "logging_dir", resolve_logging_dir(self.logging_dir))
        sanitize_name(self.name)
        for name in ("policy", "prompts"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise MormError(f"{name} must be non-empty text", field=name)
        if not isinstance(self.reward_model, str):
            raise MormError(f"reward_model must be text, got {self.reward_model!r}",
                            field="reward_model")
        for name in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "lora_r",
                     "lora_alpha", "kl_horizon", "max_new_tokens"):
            check_int(name, getattr(self, name), 1)
        check_int("steps", self.steps, 1, MAX_STEPS)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        self._check_algorithm()
        for name in ("prompt_limit", "seed", "checkpoint_every", "sample_every"):
            check_int(name, getattr(self, name), 0)
        if self.mini_batch_size > self.responses_per_step:
            raise MormError(f"mini_batch_size ({self.mini_batch_size}) must be <= batch_size "
                            + (f"x group_size ({self.responses_per_step})" if self.grouped
                               else f"({self.batch_size})"), field="mini_batch_size")
        for name in ("lr", "target_kl", "temperature", "cliprange", "cliprange_value",
                     "max_grad_norm", "lagrange_lr"):
            check_number(name, getattr(self, name), low=0.0, low_open=True)
        for name in ("kl_coef", "vf_coef", "lagrange_init"):
            check_number(name, getattr(self, name), low=0.0)
        for name in ("top_p", "gamma", "lam"):
            check_number(name, getattr(self, name), low=0.0, high=1.0, low_open=name == "top_p")
        if self.missing_eos_penalty is not None:
            check_number("missing_eos_penalty", self.missing_eos_penalty, low=0.0)
        if self.scalarizer not in SCALARIZERS:
            raise MormError(f"scalarizer must be one of {', '.join(SCALARIZERS)}, got "
                            f"{self.scalarizer!r}", field="scalarizer")
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise MormError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
                            field="device")
        self._check_lora()
        for name in ("standardize", "lora", "merge_lora", "adaptive_kl", "whiten_advantages"):
            if not isinstance(getattr(self, name), bool):
                raise MormError(f"{name} must be true or false", field=name)
        _check_weights("weights", self.weights)
        self._check_schedule()
        self._check_constraints()

    @property
    def grouped(self) -> bool:
        """True for the group methods (grpo, rloo)."""
        return self.algorithm in GROUP_ALGORITHMS

    @property
    def responses_per_step(self) -> int:
        """Responses a rollout samples: batch_size, times group_size for the group methods."""
        return self.batch_size * (self.group_size if self.grouped else 1)

    def _check_algorithm(self) -> None:
        for name, allowed in (("algorithm", ALGORITHMS), ("scale_rewards", ("group", "batch",
                              "none")), ("multi_objective_aggregation", AGGREGATIONS),
                              ("kl_in", ("", "reward", "loss")), ("loss_type", LOSS_TYPES)):
            if getattr(self, name) not in allowed:
                raise MormError(f"{name} must be one of {', '.join(a for a in allowed if a)}, "
                                f"got {getattr(self, name)!r}", field=name)
        check_int("group_size", self.group_size, 1, MAX_BATCH)
        if self.grouped and self.group_size < 2:
            raise MormError(f"{self.algorithm} compares responses to the same prompt: "
                            f"group_size must be >= 2, got {self.group_size}", field="group_size")
        if not self.kl_in:
            object.__setattr__(self, "kl_in", "loss" if self.algorithm == "grpo" else "reward")
        if self.algorithm == "ppo" and self.kl_in != "reward":
            raise MormError("ppo puts the KL penalty in the per-token reward: kl_in must be "
                            "reward", field="kl_in")

    def _check_lora(self) -> None:
        modules = self.lora_target_modules
        if isinstance(modules, str):  # "q_proj,v_proj" as a flag or in JSON
            modules = tuple(m.strip() for m in modules.split(",") if m.strip())
        if not isinstance(modules, (list, tuple)) or not all(
                isinstance(m, str) and m.strip() for m in modules):
            raise MormError("lora_target_modules must be layer names such as q_proj,v_proj, "
                            f"got {self.lora_target_modules!r}", field="lora_target_modules")
        object.__setattr__(self, "lora_target_modules", tuple(dict.fromkeys(modules)))
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise MormError(f"adapter_dtype must be one of {', '.join(ADAPTER_DTYPES)}, got "
                            f"{self.adapter_dtype!r}", field="adapter_dtype")

    def _check_schedule(self) -> None:
        if not isinstance(self.weight_schedule, list):
            raise MormError("weight_schedule must be a list of {step, weights}",
                            field="weight_schedule")
        last = -1
        for i, point in enumerate(self.weight_schedule):
            where = f"weight_schedule[{i}]"
            if not isinstance(point, dict) or set(point) != {"step", "weights"}:
                raise MormError(f"{where} must be an object with exactly 'step' and 'weights', "
                                f"got {point!r}", field=where)
            check_int(f"{where}.step", point["step"], 0)
            if point["step"] <= last:
                raise MormError(f"{where}.step must be larger than the previous step ({last})",
                                field=f"{where}.step")
            last = point["step"]
            _check_weights(f"{where}.weights", point["weights"])
            if not point["weights"]:
                raise MormError(f"{where}.weights is empty", field=f"{where}.weights")

    def _check_constraints(self) -> None:
        if not isinstance(self.constraints, list):
            raise MormError("constraints must be a list of {objective, threshold}",
                            field="constraints")
        seen = set()
        for i, c in enumerate(self.constraints):
            where = f"constraints[{i}]"
            if not isinstance(c, dict) or set(c) != {"objective", "threshold"}:
                raise MormError(f"{where} must be an object with exactly 'objective' and "
                                f"'threshold', got {c!r}", field=where)
            if not isinstance(c["objective"], str) or not c["objective"]:
                raise MormError(f"{where}.objective must be an objective name",
                                field=f"{where}.objective")
            if c["objective"] in seen:
                raise MormError(f"two constraints on {c['objective']!r}", field=where)
            seen.add(c["objective"])
            check_number(f"{where}.threshold", c["threshold"])

    def weights_at(self, step: int) -> dict[str, float]:
        """The weights of update ``step`` (0-based): `weights` without a schedule (empty means
        equal weights, resolved by the trainer that knows the objectives), else the linear
        interpolation between the schedule's surrounding points (an objective a point omits
        weighs 0 there)."""
        points = self.weight_schedule
        if not points:
            return dict(self.weights)
        if step <= points[0]["step"]:
            return dict(points[0]["weights"])
        for a, b in zip(points, points[1:], strict=False):
            if step < b["step"]:
                t = (step - a["step"]) / (b["step"] - a["step"])
                objs = list(dict.fromkeys([*a["weights"], *b["weights"]]))
                return {o: (1 - t) * a["weights"].get(o, 0.0) + t * b["weights"].get(o, 0.0)
                        for o in objs}
        return dict(points[-1]["weights"])

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPOConfig:
        if not isinstance(d, dict):
            raise MormError(f"a PPO config must be an object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise MormError(f"unknown PPOConfig fields: {', '.join(unknown)}", field=unknown[0])
        return cls(**d)
