"""What a PPO run writes: resumable checkpoints, and the trained policy's folder (`save_policy`).

Safetensors for every tensor and JSON for the rest, never pickles.

``<run_dir>/checkpoint/`` holds::

    policy.safetensors      the trainable weights (the LoRA adapters, or the whole model)
    value_head.safetensors  the per-objective value head (PPO; GRPO and RLOO have none)
    optimizer.safetensors   AdamW's state tensors, flattened as "<param index>.<name>"
    rng.safetensors         torch's CPU (and CUDA) generator states
    state.json              next step, config, metrics so far, optimizer param groups and
                            scalars, KL-controller, Lagrange and running-statistics states

It is written into a temp folder beside it and renamed into place, so a run killed while
saving keeps the previous checkpoint. The trained policy goes to ``<run_dir>/policy/`` the
same way: a Hugging Face folder (``save_pretrained``: safetensors, config, tokenizer; the LoRA
adapters merged, or the adapter folder) with ``morm_ppo.json`` (config, objectives, weights,
metrics). What trains is `morm_explorer.policy.ppo`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from morm_explorer import __version__
from morm_explorer.errors import MormError
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.tensor_files import check_shapes, read_tensors
from morm_explorer.workspace import atomic_write_text, replace_dir

CHECKPOINT = "checkpoint"
STATE = "state.json"
# Settings that may change between a run and its resumption; any other change is refused.
RESUMABLE = frozenset({"steps", "checkpoint_every", "sample_every", "device", "report_to",
                       "logging_dir", "adapter_dtype"})
MANIFEST = "morm_ppo.json"  # in the policy folder: the config, weights and metrics of the run


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint folder of ``run_dir``, or None. A run killed between the two renames
    that replace a checkpoint left the previous one aside as ``.checkpoint.old-*``: use it."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT / STATE).is_file():
        return run_dir / CHECKPOINT
    aside = sorted(run_dir.glob(f".{CHECKPOINT}.old-*"))
    return next((p for p in reversed(aside) if (p / STATE).is_file()), None)


def checkpoint_step(run_dir: str | Path) -> int | None:
    """The step a run in ``run_dir`` would resume from (completed updates), or None."""
    ckpt = find_checkpoint(run_dir)
    if ckpt is None:
        return None
    return int(json.loads((ckpt / STATE).read_text(encoding="utf-8"))["step"])


def config_changes(run_dir: str | Path, config: PPOConfig) -> list[str]:
    """The settings (outside `RESUMABLE`) in which ``config`` differs from the one that made
    the checkpoint of ``run_dir``; empty when there is none or it can resume."""
    ckpt = find_checkpoint(run_dir)
    if ckpt is None:
        return []
    try:
        saved = json.loads((ckpt / STATE).read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError) as e:
        raise MormError(f"unreadable checkpoint: {e}", file=str(ckpt / STATE)) from e
    return _changes(saved, config)


def _changes(saved: dict, config: PPOConfig) -> list[str]:
    saved = {**PPOConfig().to_dict(), **saved}  # fields added since it was saved: defaults
    now = config.to_dict()
    return sorted(k for k in now if k not in RESUMABLE and saved.get(k) != now[k])


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, config: PPOConfig, model: nn.Module,
                    value_head: nn.Module | None,
                    optimizer: torch.optim.Optimizer, *, step: int, history: list[dict],
                    **states: dict) -> Path:
    """Write the checkpoint after ``step`` completed updates; ``states`` are JSON-able
    controller states (kl_ctl, lagrange, moments) stored in state.json."""
    for stale in run_dir.glob(f".{CHECKPOINT}.tmp-*"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    tmp = run_dir / f".{CHECKPOINT}.tmp-{time.time_ns()}"
    tmp.mkdir(parents=True)
    try:
        save_file(_trainable(model), str(tmp / "policy.safetensors"))
        if value_head is not None:
            save_file({k: v.detach().cpu().contiguous()
                       for k, v in value_head.state_dict().items()},
                      str(tmp / "value_head.safetensors"))
        tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, str(tmp / "rng.safetensors"))
        state = {"step": step, "config": config.to_dict(), "history": history,
                 "optimizer": optim_meta, "saved_at": time.time(), **states}
        atomic_write_text(tmp / STATE, json.dumps(state, indent=1) + "\n")
        replace_dir(tmp, run_dir / CHECKPOINT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir / CHECKPOINT


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MormError("the checkpoint lacks this file", file=str(path))
    return read_tensors(path)


def _restore_optimizer(optimizer: torch.optim.Optimizer, path: Path, meta: dict) -> None:
    """AdamW's state from ``path``, each tensor of its parameter's shape (step counts are
    scalars)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    tensors = _read(path)
    expected = {}
    for name, t in tensors.items():  # "<param index>.<name>"
        idx = name.split(".", 1)[0]
        if t.dim() > 0 and idx.isdigit() and int(idx) < len(params):
            expected[name] = params[int(idx)].shape
    check_shapes(tensors, expected, path, "its parameter")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta))
    except (IndexError, KeyError, ValueError) as e:
        raise MormError(f"the optimizer state does not fit the policy: {e!r}",
                        file=str(path)) from e


def load_checkpoint(path: Path, config: PPOConfig, model: nn.Module,
                    value_head: nn.Module | None, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the weights, optimizer and RNG states from ``path`` into the given objects;
    returns state.json (step, history, controller states). Refuses a checkpoint made with
    other settings than ``config`` (except those in `RESUMABLE`)."""
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
        changed = _changes(state["config"], config)
    except (OSError, ValueError, KeyError) as e:
        raise MormError(f"unreadable checkpoint: {e}", file=str(path / STATE)) from e
    if changed:
        raise MormError(f"the checkpoint was made with other settings ({', '.join(changed)}); "
                        "delete the run folder or choose another run name to start afresh",
                        file=str(path), field=changed[0])
    if state["step"] > config.steps:
        raise MormError(f"the checkpoint is at step {state['step']}, past steps = "
                        f"{config.steps}", file=str(path), field="steps")
    weights = _read(path / "policy.safetensors")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        raise MormError(f"the checkpoint's weights do not match the policy "
                        f"({len(set(params) - set(weights))} missing, "
                        f"{len(set(weights) - set(params))} unexpected)", file=str(path))
    check_shapes(weights, {n: p.shape for n, p in params.items()}, path / "policy.safetensors",
                 "the policy")
    head = _read(path / "value_head.safetensors") if value_head is not None else {}
    if value_head is not None:
        check_shapes(head, {k: v.shape for k, v in value_head.state_dict().items()},
                     path / "value_head.safetensors", "the value head")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    try:
        if value_head is not None:
            value_head.load_state_dict(head)
    except RuntimeError as e:  # names missing or unexpected (shapes were checked)
        raise MormError(f"the value head does not fit: {e}",
                        file=str(path / "value_head.safetensors")) from e
    _restore_optimizer(optimizer, path / "optimizer.safetensors", state.get("optimizer", {}))
    rng = _read(path / "rng.safetensors")
    try:
        torch.set_rng_state(rng["torch"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise MormError(f"no usable CPU generator state: {e!r}",
                        file=str(path / "rng.safetensors")) from e
    cuda = [rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in rng]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return state


def save_policy(out: Path, model: nn.Module, tokenizer, config: PPOConfig,
                objectives: list[str], history: list[dict]) -> Path:
    """Write the policy (merged when LoRA and ``merge_lora``), its tokenizer and
    ``morm_ppo.json`` into a temp folder beside ``out``, then rename it into place."""
    tmp = out.with_name(f".{out.name}.tmp-{time.time_ns()}")
    tmp.mkdir(parents=True)
    try:
        _write_policy(tmp, model, tokenizer, config, objectives, history)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _cast_adapter(path: Path, dtype: torch.dtype) -> None:
    """Rewrite the adapter's floating-point tensors in ``dtype`` (PEFT casts them back to the
    base model's dtype when it loads them)."""
    tensors = {k: v.to(dtype) if v.is_floating_point() else v
               for k, v in read_tensors(path).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _write_policy(tmp: Path, model: nn.Module, tokenizer, config: PPOConfig,
                  objectives: list[str], history: list[dict]) -> None:
    if config.lora and config.merge_lora:
        # merging changes the weights in place; the run is over, so the model is ours to change
        model = model.merge_and_unload()
    model.save_pretrained(tmp)
    if config.lora and not config.merge_lora and config.adapter_dtype != "float32":
        _cast_adapter(tmp / "adapter_model.safetensors", getattr(torch, config.adapter_dtype))
    tokenizer.save_pretrained(tmp)
    manifest = {
        "format": "morm-ppo-policy", "morm_version": __version__, "created_at": time.time(),
        "config": config.to_dict(), "objectives": objectives,
        "reward_model": config.reward_model or None,
        "weights": {"weights": config.weights, "weight_schedule": config.weight_schedule,
                    "final": config.weights_at(config.steps - 1) or dict.fromkeys(
                        objectives, 1.0 / len(objectives))},
        "lora": {"merged": config.merge_lora} if config.lora else None,
        "final_metrics": history[-1] if history else {}, "history": history,
    }
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")

