"""External reward models: any transformers `AutoModelForSequenceClassification`, encoder or
decoder, registered in the workspace with one objective per output logit.

`add_external` (`morm rm add NAME --model HF_NAME_OR_FOLDER`) writes reward_models/<NAME> as a
manifest (`reward.manifest`): the source (a local folder by its absolute path, never copied: a
moved folder must be registered again; a hub name with its revision), which logit is which
objective, how the model reads a conversation, and each objective's statistics on a reference
set. `load_external` rebuilds an `ExternalRewardModel` from it, which scores as a trained model
does: ``score(prompts, responses) -> (N, K)``, the raw logits.

How a conversation is read:

- encoders (BERT family): (prompt, response) as a sentence pair;
- decoders: the user prompt and the assistant response under the tokenizer's own chat template
  (`chat_template.render_chat`, bounded in time and size), tokenized without added special
  tokens, as ``apply_chat_template(..., tokenize=True)`` does; a tokenizer without a template
  reads "prompt\\n\\nresponse" with its special tokens (the manifest's ``input`` says which).

Only safetensors weights are read; a model that ships its own code (``auto_map``) loads only
with ``trust_remote_code``. Weights load in float32 on the CPU, in bfloat16 on a GPU (float16
where the card has no bf16): an 8B reward model takes 16 GB instead of 32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

from morm_explorer.chat_template import render_chat
from morm_explorer.checks import check_int
from morm_explorer.data.schema import is_valid_objective
from morm_explorer.errors import MormError
from morm_explorer.reward.backbone import is_decoder_config
from morm_explorer.reward.config import check_stats
from morm_explorer.reward.external_config import ExternalConfig
from morm_explorer.reward.manifest import (
    check_free,
    manifest,
    nan_stats,
    reference_texts,
    write_manifest,
)
from morm_explorer.tensor_files import check_model_folder, model_shapes
from morm_explorer.workspace import Workspace

INPUTS = {"pair": "(prompt, response) as a sentence pair",
          "chat": "the user prompt and the assistant response under the tokenizer's chat "
                  "template",
          "plain": "'prompt\\n\\nresponse' (the tokenizer has no chat template)"}


def resolve_source(cfg: ExternalConfig) -> dict:
    """Where the weights are: a local folder (absolute path, with config.json and safetensors
    weights) or a hub name with its revision."""
    path = Path(cfg.model).expanduser()
    if not path.exists():
        return {"model": cfg.model, "revision": cfg.revision or None, "local": False}
    if cfg.revision:
        raise MormError("--revision applies to hub names; a local folder is read as it is",
                        field="revision")
    check_local(path)
    return {"model": str(path.resolve()), "revision": None, "local": True}


def check_local(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise MormError("not a model folder: no config.json", file=str(path))
    if not any(path.glob("*.safetensors")):
        raise MormError("no safetensors weights in the folder (only safetensors are read, "
                        "never pickled .bin files): save the model with "
                        "save_pretrained(folder, safe_serialization=True)", file=str(path))


def _read_json(source: dict, filename: str) -> dict | None:
    """A JSON file of the model (its folder, or the Hugging Face cache for a hub name); None
    when it has none."""
    if source["local"]:
        file = Path(source["model"]) / filename
    else:
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(source["model"], filename, revision=source["revision"]))
        except Exception as e:  # not in the cache, no network, no such repo or file
            if filename != "config.json":
                return None
            raise MormError(f"cannot find model {source['model']!r}: not a local folder, and "
                            "not a hub model that can be read (offline, it must be in the "
                            f"Hugging Face cache): {e}", field="model") from e
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise MormError(f"cannot read {filename}: {e}", file=str(file)) from e
    return value if isinstance(value, dict) else None


def check_remote_code(source: dict, trust_remote_code: bool) -> None:
    """Refuse a model whose config or tokenizer config maps to its own code (``auto_map``)
    unless the user allowed that code to run."""
    for filename in ("config.json", "tokenizer_config.json"):
        config = _read_json(source, filename)
        if config and "auto_map" in config and not trust_remote_code:
            raise MormError(f"{filename} has auto_map: the model ships its own Python code, "
                            "which runs only with --trust-remote-code (read that code first)",
                            file=f"{source['model']}/{filename}")


def open_model(source: dict, trust_remote_code: bool, device: str = "cpu"):
    """The classifier in eval mode on ``device`` and its tokenizer; `MormError` for a model
    without safetensors weights, with remote code not allowed, or with an output layer
    missing from its weights (a causal LM is not a reward model)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    name = source["model"]
    check_remote_code(source, trust_remote_code)
    kw = {"revision": source.get("revision"), "trust_remote_code": trust_remote_code}
    dtype = torch.float32 if torch.device(device).type == "cpu" else (
        torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    try:
        if source["local"]:  # damaged weights are named before transformers reads them
            check_local(Path(name))
            check_model_folder(name, model_shapes(name, AutoModelForSequenceClassification,
                                                  trust_remote_code=trust_remote_code),
                               "its config.json")
        tokenizer = AutoTokenizer.from_pretrained(name, **kw)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name, use_safetensors=True, dtype=dtype, output_loading_info=True, **kw)
    except MormError as e:
        raise MormError(f"cannot load reward model {name!r}: {e.message}", file=e.file) from e
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise MormError(f"cannot load reward model {name!r}: {e}") from e
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    if missing:
        raise MormError(f"cannot load reward model {name!r}: its weights lack "
                        f"{', '.join(sorted(missing)[:3])}: it has no trained output layer "
                        "(a base or causal language model is not a reward model)")
    return model.to(device).eval(), tokenizer


def output_objectives(hf_config, cfg: ExternalConfig) -> list[str]:
    """The objective of each output logit: --objective (default "reward") for one output;
    --objectives, else the config's id2label, for K outputs."""
    k = int(hf_config.num_labels)
    labels = [str(hf_config.id2label.get(i, f"LABEL_{i}")) for i in range(k)]
    if k == 1 and len(cfg.objectives) <= 1:
        return [cfg.objective or (cfg.objectives[0] if cfg.objectives else "reward")]
    if cfg.objective:
        raise MormError(f"the model has {k} outputs ({', '.join(labels)}): name them with "
                        f"--objectives ({k} names in output order), not --objective",
                        field="objectives")
    names = list(cfg.objectives) or labels
    if len(names) != k:
        raise MormError(f"--objectives has {len(names)} names for the model's {k} outputs "
                        f"({', '.join(labels)}): give one name per output, in output order",
                        field="objectives")
    bad = [n for n in names if not is_valid_objective(n)]
    if bad or len(set(names)) != k:
        raise MormError(f"the model's labels {labels} are not {k} distinct objective names "
                        f"(letters, digits, '_' or '-'): name the outputs with --objectives",
                        field="objectives")
    return names


def _last_real(rows: list[list[int]]) -> set[int]:
    return {r[-1] for r in rows if r}


class ExternalRewardModel(nn.Module):
    """A sequence classifier behind the reward-model interface: ``score(prompts, responses)
    -> (N, K)``, the K logits, batched by length (less padding), right-padded."""

    frozen_backbone = False  # no embedding cache: the whole model runs on every text

    def __init__(self, model: nn.Module, tokenizer, objectives: list[str],
                 max_length: int = 1024) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self._objectives = list(objectives)
        # never past the positions the model has (a tokenizer's limit can be 1e30: unset)
        limits = (max_length, getattr(model.config, "max_position_embeddings", None),
                  tokenizer.model_max_length)
        self.max_length = min(x for x in limits if isinstance(x, int) and 0 < x)
        self.decoder = is_decoder_config(model.config)
        self.input = ("chat" if getattr(tokenizer, "chat_template", None) else "plain") \
            if self.decoder else "pair"
        if self.decoder:
            self.tokenizer.truncation_side = "left"  # keep the end: the last token is read
        self.stats: dict | None = None
        self.artifact_config: dict = {}

    @property
    def objectives(self) -> list[str]:
        return list(self._objectives)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: list[str], responses: list[str]) -> list[dict[str, list[int]]]:
        """Token ids (and the tokenizer's other inputs) of each conversation, unpadded."""
        tok, kw = self.tokenizer, {"truncation": True, "max_length": self.max_length}
        if self.input == "pair":
            enc = tok(prompts, responses, **{**kw, "truncation": "longest_first"})
        elif self.input == "chat":
            texts = [render_chat(tok, [{"role": "user", "content": p},
                                       {"role": "assistant", "content": r}])
                     for p, r in zip(prompts, responses, strict=True)]
            enc = tok(texts, add_special_tokens=False, **kw)
        else:
            enc = tok([f"{p}\n\n{r}" for p, r in zip(prompts, responses, strict=True)], **kw)
        # the mask is rebuilt with the padding; token types only for sentence pairs
        keys = ["input_ids", "token_type_ids"] if "token_type_ids" in enc and \
            self.input == "pair" else ["input_ids"]
        return [{k: enc[k][i] for k in keys} for i in range(len(prompts))]

    def _collate(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Right-padded tensors (B, T). A decoder reads the logits at the last token that is
        not its config's pad token; a config without one (transformers then takes the last
        token of a lone sequence) gets, for this batch, a pad id no sequence ends with."""
        text_config = self.model.config.get_text_config()
        pad = text_config.pad_token_id
        if pad is None and self.decoder:
            ends = _last_real([r["input_ids"] for r in rows])
            pad = next(t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                                   *range(len(ends) + 1)) if t is not None and t not in ends)
            text_config.pad_token_id = pad  # restored by `score`
        pad = 0 if pad is None else pad
        width = max(len(r["input_ids"]) for r in rows)
        out = {}
        for key in rows[0]:
            fill = pad if key == "input_ids" else 0
            out[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows])
        out["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) +
                                              [0] * (width - len(r["input_ids"])) for r in rows])
        return {k: v.to(self.device) for k, v in out.items()}

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str], batch_size: int = 64,
              progress=None) -> np.ndarray:
        """The K logits of each (prompt, response): (N, K) float32; ``progress(done,
        total)`` after each batch."""
        if not prompts:
            return np.zeros((0, len(self._objectives)), dtype=np.float32)
        rows = self.encode(prompts, responses)
        order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")
        out = np.zeros((len(rows), len(self._objectives)), dtype=np.float32)
        text_config = self.model.config.get_text_config()
        pad = text_config.pad_token_id
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                logits = self.model(**self._collate([rows[i] for i in idx])).logits  # (B, K)
                out[idx] = logits.float().cpu().numpy()
                text_config.pad_token_id = pad
                if progress is not None:
                    progress(min(start + batch_size, len(order)), len(order))
        finally:
            text_config.pad_token_id = pad
        return out


def add_external(ws: Workspace, name: str, cfg: ExternalConfig, *, reference: str | None = None,
                 device: str = "cpu", overwrite: bool = False, progress=None) -> Path:
    """Register ``cfg.model`` as reward model ``name``: load it, name its outputs, score the
    reference set for the statistics, then write the manifest (all or nothing)."""
    from morm_explorer.jobs.context import detect_device

    check_free(ws, name, overwrite)
    device = detect_device() if device == "auto" else device
    source = resolve_source(cfg)
    ref = reference_texts(ws, reference)  # before the model loads: a bad name fails fast
    model, tokenizer = open_model(source, cfg.trust_remote_code, device)
    objectives = output_objectives(model.config, cfg)
    rm = ExternalRewardModel(model, tokenizer, objectives, cfg.max_length)
    scores = rm.score(ref.prompts, ref.responses, progress=progress)  # (N, K)
    if not np.isfinite(scores).all():
        raise MormError(f"{cfg.model!r} gives scores that are not finite on the reference set "
                        f"{ref.name!r}", field="model")
    labels = [{"logit": i, "label": str(model.config.id2label.get(i, f"LABEL_{i}")),
               "objective": o} for i, o in enumerate(objectives)]
    source.update(model_type=model.config.model_type, decoder=rm.decoder,
                  num_labels=len(objectives), trust_remote_code=cfg.trust_remote_code)
    config = manifest("external", objectives, describe(source), nan_stats(scores), ref,
                      external=cfg.to_dict(), source=source, labels=labels, input=rm.input,
                      input_note=INPUTS[rm.input], max_length=cfg.max_length)
    return write_manifest(ws, name, config, overwrite)


def describe(source: dict) -> str:
    """The source as one line: a folder, or a hub name with its revision."""
    rev = source.get("revision")
    return f"{source['model']}@{rev}" if rev else str(source["model"])


def load_external(path: Path, config: dict, device: str = "cpu") -> ExternalRewardModel:
    """The model of an external manifest (`add_external`), checked against it."""
    file = str(path / "config.json")
    source, objectives = config.get("source"), config.get("model", {}).get("objectives")
    if not isinstance(source, dict) or not isinstance(source.get("model"), str) or \
            not isinstance(objectives, list) or not all(map(is_valid_objective, objectives)):
        raise MormError("an external model's manifest needs source.model and "
                        "model.objectives", file=file, field="source")
    check_stats(config.get("stats"), objectives, file)
    max_length = config.get("max_length", 1024)
    check_int("max_length", max_length, 8)
    source = {**source, "local": bool(source.get("local"))}
    trust = source.get("trust_remote_code") is True
    model, tokenizer = open_model(source, trust, device)
    if int(model.config.num_labels) != len(objectives):
        raise MormError(f"{describe(source)} now has {model.config.num_labels} outputs; the "
                        f"manifest names {len(objectives)}: register it again with "
                        "`morm rm add --overwrite`", file=file)
    rm = ExternalRewardModel(model, tokenizer, objectives, max_length)
    rm.stats, rm.artifact_config = config.get("stats"), config
    return rm
