"""Configs of reward models and their training: frozen dataclasses that check themselves.

`ModelConfig` is what rebuilds a model from its folder; `TrainConfig` is what `morm rm train`
takes (a field's name is its CLI flag's name) and what the artifact records about its training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from morm_explorer.checks import check_int, check_number
from morm_explorer.data.schema import is_valid_objective
from morm_explorer.errors import MormError
from morm_explorer.report_to import parse_report_to, resolve_logging_dir

FORMAT = "morm-reward-model"  # the "format" of a reward-model artifact's config.json
ARCHITECTURES = ("multi_head", "separate")
POOLINGS = ("auto", "mean_layers", "mean", "mean_response", "last", "cls", "pooler")
HEADS = ("linear", "mlp")
MODES = ("frozen", "full", "lora")
TIES = ("half", "skip")
RATINGS_MODES = ("regression", "pairs")
DEVICES = ("auto", "cpu", "cuda")
CHOICES = {"architecture": ARCHITECTURES, "pooling": POOLINGS, "head": HEADS, "mode": MODES,
           "ties": TIES, "ratings_mode": RATINGS_MODES, "device": DEVICES}


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise MormError(f"{name} must be one of {', '.join(allowed)}, got {value!r}", field=name)


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise MormError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
        required = [f.name for f in fields(cls)  # type: ignore[arg-type]
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in d]
        if missing:
            raise MormError(f"{cls.__name__} needs {', '.join(missing)}", field=missing[0])
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


@dataclass(frozen=True, kw_only=True)
class _ModelFields(_DictMixin):
    """The structure of a reward model, shared by `ModelConfig` and `TrainConfig`."""

    backbone: str = "minilm"
    """Hugging Face model name or folder of the backbone (alias: minilm)."""
    architecture: str = "multi_head"
    """multi_head (one backbone, K heads) or separate (K single-head models)."""
    pooling: str = "auto"
    """auto (mean_layers for encoders, last token for decoders), mean_layers (mean of the last
    and the middle layer), mean, mean_response, last, cls, pooler."""
    head: str = "linear"
    """linear, or mlp (one hidden layer of head_hidden units)."""
    head_hidden: int = 256
    """Hidden width of mlp heads."""
    max_length: int = 256
    """Tokens per (prompt, response) input."""

    def _check_model_fields(self) -> None:
        for name in ("architecture", "pooling", "head"):
            _choice(name, getattr(self, name), CHOICES[name])
        check_number("head_hidden", self.head_hidden, integer=True, low=0, low_open=True)
        check_int("max_length", self.max_length, 8)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(_ModelFields):
    """Everything needed to rebuild a reward model's structure."""

    objectives: tuple[str, ...]
    """Objective names, one head (or one separate model) each."""

    def __post_init__(self) -> None:
        if not self.objectives:
            raise MormError("at least one objective is needed", field="objectives")
        if len(set(self.objectives)) != len(self.objectives):
            raise MormError(f"duplicate objectives in {list(self.objectives)}", field="objectives")
        for o in self.objectives:
            if not is_valid_objective(o):
                raise MormError(f"invalid objective name {o!r}", field="objectives")
        self._check_model_fields()


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_ModelFields):
    """How to train a reward model (`morm rm train` flags have these names)."""

    dataset: str
    """Workspace dataset name, or a preference file path."""
    name: str = "reward-model"
    """Name of the artifact folder in the workspace (reward_models/<name>)."""
    objectives: tuple[str, ...] = ()
    """Objectives to train (default: all in the data)."""
    mode: str = "frozen"
    """frozen (cached embeddings, heads only), full (fine-tune all), lora (peft adapters)."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """w_k in L = sum_k w_k L_pref,k (default 1 each)."""
    epochs: int = 30
    """Passes over the training pairs (early stopping may end sooner)."""
    batch_size: int = 64
    """Pairs (or rated items) per optimizer step."""
    micro_batch_size: int = 8
    """Fine-tuning (full, LoRA): pairs (or items) per forward and backward pass; their gradients
    add up to the batch's, so memory follows this number and not batch_size (64 pairs of 128
    tokens at once took SmolLM2-135M past 23 GB on the CPU). Frozen training ignores it."""
    lr: float = 3e-3
    """Learning rate (heads; the backbone uses backbone_lr)."""
    backbone_lr: float = 3e-5
    """Learning rate of the backbone (full) or its LoRA adapters."""
    weight_decay: float = 0.01
    """AdamW weight decay of the backbone (full, LoRA)."""
    head_weight_decay: float = 3.0
    """AdamW weight decay of the heads. Strong decay keeps a head off the directions only its
    training texts share: on the HH-RLHF harmless test it lifts a head trained on the built-in
    data from 0.52 to about 0.58 (docs/benchmarks.md) and leaves its accuracy on real pairs it was
    trained on where it was (5-fold HH-RLHF harmless: 0.632 against 0.634)."""
    warmup_ratio: float = 0.06
    """Share of steps with linear warmup (fine-tuning), then linear decay."""
    grad_clip: float = 1.0
    """Gradient norm clipping (0: off)."""
    margin: float = 0.0
    """Margin m in -log sigmoid(r_chosen - r_rejected - m), decided pairs only."""
    center_coef: float = 0.0
    """Reward-centering term c * mean((r_a + r_b)^2), as in TRL's RewardTrainer."""
    ties: str = "skip"
    """skip: ties are left out of the loss (the default: on the HH-RLHF harmless test a head
    trained on the built-in data transfers better without them, docs/benchmarks.md); half: a tie
    is a 0.5 target for sigmoid(r_a - r_b)."""
    ratings_mode: str = "regression"
    """Ratings data: regression on standardized ratings, or pairs derived per prompt."""
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    """Held-out prompts (split by prompt, never by pair) for early stopping and evaluation."""
    folds: int = 0
    """k-fold cross-validation over prompts: the number of folds (0: one random test split of
    test_fraction); `fold` picks the test fold."""
    fold: int = 0
    """The test fold when folds > 0."""
    patience: int = 5
    """Early stopping: epochs without validation improvement."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling alpha."""
    compare_overall: bool = True
    """On data with an `overall` label, also train one single-output RM on it (same settings)
    and compare it with the per-objective heads on each objective's held-out labels."""
    seed: int = 0
    """Seed of the split, the initialisation and the batch order."""
    device: str = "auto"
    """auto (cuda when present), cpu or cuda."""
    report_to: tuple[str, ...] = ()
    """Also send the training metrics to tensorboard, wandb and/or mlflow (transformers'
    report_to; all: each one installed; none, the default: the job store only)."""
    logging_dir: str = ""
    """TensorBoard's log folder (default: <workspace>/runs/reward_model/<name>/tb/<date-time>)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "report_to", parse_report_to(self.report_to))
        object.__setattr__(self, "logging_dir", resolve_logging_dir(self.logging_dir))
        self._check_model_fields()
        for name in ("mode", "ties", "ratings_mode", "device"):
            _choice(name, getattr(self, name), CHOICES[name])
        for name in ("epochs", "batch_size", "micro_batch_size", "lora_r", "lora_alpha"):
            check_number(name, getattr(self, name), integer=True, low=0, low_open=True)
        for name in ("lr", "backbone_lr"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        for name in ("weight_decay", "head_weight_decay", "warmup_ratio", "grad_clip", "margin",
                     "center_coef"):
            check_number(name, getattr(self, name), low=0)
        for name in ("patience", "folds", "fold"):
            check_int(name, getattr(self, name), 0)
        if self.folds == 1 or (self.folds and self.fold >= self.folds):
            raise MormError(f"need folds >= 2 and 0 <= fold < folds, got fold {self.fold} of "
                            f"{self.folds}", field="fold")
        if not 0 <= self.val_fraction < 0.5 or not 0 < self.test_fraction < 0.5:
            raise MormError("val_fraction must be in [0, 0.5) and test_fraction in (0, 0.5)",
                            field="test_fraction")
        if self.epochs > 10_000 or self.batch_size > 65_536:
            raise MormError("epochs or batch_size absurdly large", field="epochs")
        for obj, w in self.loss_weights.items():
            check_number(f"loss_weights.{obj}", w, low=0)
        if self.loss_weights and not any(self.loss_weights.values()):
            raise MormError("all loss weights are zero: nothing to train", field="loss_weights")

    def model_config(self, objectives: tuple[str, ...]) -> ModelConfig:
        shared = {f.name: getattr(self, f.name) for f in fields(_ModelFields)}
        return ModelConfig(objectives=objectives, **shared)


def read_config(path: str | Path) -> dict:
    """The config.json of a reward-model artifact folder (no weights are read)."""
    cfg_path = Path(path) / "config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise MormError("not a reward model folder: no config.json", file=str(path)) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MormError(f"config.json is not valid JSON: {e}", file=str(cfg_path)) from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MormError(f"config.json is not a {FORMAT} config", file=str(cfg_path))
    return config


def _finite_list(value: Any, k: int) -> bool:
    return isinstance(value, list) and len(value) == k and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
        for x in value)


def check_stats(stats: Any, objectives: Sequence[str], file: str | None = None) -> None:
    """Refuse reward statistics (config.json's ``stats``) that standardizing and the reports
    cannot use: ``mean`` and ``std`` lists of K finite numbers (std > 0), each quantile such a
    list, ``n`` a count. None or {} (a model without statistics) passes."""
    if stats is None or stats == {}:
        return
    k = len(objectives)
    if not isinstance(stats, dict):
        raise MormError(f"expected an object with mean and std, got {stats!r:.80}", file=file,
                        field="stats")
    quantiles = stats.get("quantiles", {})
    if not isinstance(quantiles, dict):
        raise MormError(f"expected an object of quantiles, got {quantiles!r:.80}", file=file,
                        field="stats.quantiles")
    lists = {"mean": stats.get("mean"), "std": stats.get("std"),
             **{f"quantiles.{q}": v for q, v in quantiles.items()}}
    for name, value in lists.items():
        if not _finite_list(value, k):
            raise MormError(f"expected a list of {k} finite numbers, got {value!r:.80}",
                            file=file, field=f"stats.{name}")
    if min(stats["std"]) <= 0:
        raise MormError(f"every std must be > 0, got {stats['std']}", file=file,
                        field="stats.std")
    n = stats.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise MormError(f"expected a count, got {n!r:.80}", file=file, field="stats.n")
