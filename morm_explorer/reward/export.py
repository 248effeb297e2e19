"""Export a reward model to plain transformers: a folder that
``AutoModelForSequenceClassification.from_pretrained(path)`` loads without custom code.

Per-objective export: ``num_labels = K``, ``id2label`` = objective names, logits (N, K) equal to
`RewardModel.score`. Scalarized export (given weights w): one logit, the form PPO trainers such
as OpenRLHF read. Linear heads collapse exactly::

    sum_k w_k (a_k . h + b_k) = (sum_k w_k a_k) . h + sum_k w_k b_k

Only some models have a transformers equivalent (see `exportability`):

- BERT (model_type ``bert``) with pooling ``pooler``: `BertForSequenceClassification` computes
  classifier(dropout(pooler_output)), pooler_output = tanh(W h_[CLS] + b); dropout is off in eval.
- decoders (Llama, SmolLM2, Mistral, Qwen2, ...) with pooling ``last`` and heads without bias:
  their classifiers apply ``score = Linear(H, num_labels, bias=False)`` to the rightmost token
  whose id is not ``pad_token_id``. The exported pad id is chosen so that this token is the
  project's last attended token (see `choose_pad_id`).

Callers (CLI, UI) use `exportability` and `export_reward_model`; nothing here parses flags.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from morm_explorer import __version__
from morm_explorer.errors import MormError
from morm_explorer.reward.artifact import load_reward_model
from morm_explorer.reward.backbone import DECODER_TYPES, Backbone
from morm_explorer.reward.model import RewardModel
from morm_explorer.workspace import atomic_write_text, replace_dir

FORMAT = "morm-export"
# Encoders whose *ForSequenceClassification reads the pooler output. RoBERTa, MPNet, DeBERTa,
# DistilBERT and ELECTRA build their own heads over token 0 (dense + tanh/GELU/ReLU, without
# the backbone's pooler), which this module does not map.
POOLER_ENCODERS = frozenset({"bert"})
# Decoders whose *ForSequenceClassification pools the rightmost non-pad token with a bias-free
# `score` layer (GenericForSequenceClassification, or the same code in GPT-2, GPT-NeoX, GPT-J,
# OPT and Falcon; checked against transformers 5.x).
LAST_TOKEN_DECODERS = frozenset(DECODER_TYPES)
# Inputs of the export's self-check and of the pad-id choice: responses that end differently.
PROBES = (
    ("Hi", "Hello."),
    ("How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it"),
    ("Name a colour.", "Blue!"),
    ("Say nothing at all.", ""),
)


_POOLED = {"mean": "the mean of the token states", "cls": "the raw [CLS] state"}


def exportability(model: RewardModel) -> tuple[bool, str]:
    """Whether `model` has an exact plain-transformers equivalent, and why (not)."""
    if model.config.head != "linear":
        return False, ("mlp heads cannot be exported: a transformers sequence classifier ends in "
                       "one linear layer, into which a GELU MLP does not fold; train with "
                       "--head linear")
    if len(model.backbones) > 1:
        return False, (f"separate fine-tuned models cannot be exported: they have "
                       f"{len(model.backbones)} backbones and a transformers model has one; "
                       "train multi_head, or separate with a frozen backbone")
    b = model.backbones[0]
    if hasattr(b.model, "peft_config"):
        return False, "LoRA adapters are not merged: export the saved artifact folder"
    mtype = b.model.config.model_type
    if b.decoder:
        return _decoder_rule(model, b, mtype)
    if mtype not in POOLER_ENCODERS:
        return False, (f"encoder type {mtype!r} cannot be exported: only BERT is, whose "
                       "classifier reads the pooler output; the sequence classifiers of other "
                       "encoders have their own heads that the reward model did not train")
    if b.pooling != "pooler":
        return False, (f"{b.pooling} pooling cannot be exported: BertForSequenceClassification "
                       "always classifies the pooler output tanh(W h_[CLS] + b), not "
                       f"{_POOLED.get(b.pooling, b.pooling)}; train with --pooling pooler")
    if getattr(b.model, "pooler", None) is None:
        return False, "the BERT backbone has no pooler layer"
    return True, "BERT with pooler pooling and linear heads: exact"


def _decoder_rule(model: RewardModel, b: Backbone, mtype: str) -> tuple[bool, str]:
    if mtype not in LAST_TOKEN_DECODERS:
        return False, (f"decoder type {mtype!r} is not known to pool the last non-pad token "
                       f"in transformers; exportable decoders: "
                       f"{', '.join(sorted(LAST_TOKEN_DECODERS))}")
    if b.pooling != "last":
        return False, (f"{b.pooling} pooling cannot be exported: decoder classifiers in "
                       "transformers score the last non-pad token; train with --pooling last")
    bias = model.heads[0].linear.bias
    if bias is not None and bool(bias.detach().ne(0).any()):
        return False, ("the heads have a nonzero bias, but decoder classifiers in transformers "
                       "(score = Linear(H, num_labels, bias=False)) have none")
    return True, f"decoder ({mtype}) with last-token pooling and bias-free linear heads: exact"


def scalarization(objectives: list[str], weights: dict[str, float],
                  normalize: bool = False) -> np.ndarray:
    """Weights w (K,) in objective order; objectives left out weigh 0. With `normalize`,
    w / sum_k |w_k| (sums to 1 for non-negative weights)."""
    unknown = sorted(set(weights) - set(objectives))
    if unknown:
        raise MormError(f"weights name unknown objectives {unknown}; the model has "
                        f"{objectives}", field="weights")
    try:
        w = np.array([weights.get(o, 0.0) for o in objectives], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise MormError(f"weights must be numbers, got {weights}", field="weights") from e
    if not np.all(np.isfinite(w)):
        raise MormError(f"weights must be finite numbers, got {weights}", field="weights")
    if not np.any(w):
        raise MormError("all weights are zero: the scalarized reward would be 0",
                        field="weights")
    return w / np.abs(w).sum() if normalize else w


def choose_pad_id(backbone: Backbone) -> tuple[int, set[int]]:
    """A pad id for which transformers pools the same token as the project's `last_token`,
    and the ids that ended the probe inputs (one id: a fixed template suffix).

    transformers takes argmax_t(t * [input_ids_t != pad_token_id]), the rightmost non-pad
    token; the project takes the last attended token (right padding). They agree unless the
    last real token is the pad id, as with pad = eos and a chat template that ends in eos
    (Llama 3's <|eot_id|>). Padding positions never change the real tokens' states (causal
    attention, masked), so any id other than that last token pads equally well.
    """
    tok = backbone.tokenizer
    enc = backbone.tokenize([p for p, _ in PROBES], [r for _, r in PROBES])
    ends = enc["attention_mask"].sum(1) - 1  # (N,)
    last = {int(enc["input_ids"][i, t]) for i, t in enumerate(ends.tolist())}
    # Special tokens first: where inputs end in the response (no fixed template suffix) they
    # can only be the last token if a response ends with a special token's literal text.
    for c in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id, tok.bos_token_id,
              *tok.all_special_ids):
        if c is not None and c not in last:
            return int(c), last
    if len(last) == 1:  # a fixed suffix: every other id is safe
        return next(i for i in range(len(tok)) if i not in last), last
    raise MormError("no token can serve as pad id: every special token ends some input")


def _combination(model: RewardModel, weights: dict[str, float] | None,
                 normalize: bool) -> tuple[np.ndarray, list[str], dict[str, float] | None]:
    """M (L, K) such that exported logits = scores @ M.T, its labels, and the weights used."""
    objectives = model.objectives
    if weights is None:
        return np.eye(len(objectives)), objectives, None
    w = scalarization(objectives, weights, normalize)
    return w[None, :], ["reward"], dict(zip(objectives, w.tolist(), strict=True))


def _build_classifier(backbone: Backbone, model: RewardModel, m: np.ndarray,
                      labels: list[str], pad_id: int):
    """The *ForSequenceClassification with the backbone's weights and the collapsed heads."""
    cfg = copy.deepcopy(backbone.model.config)
    cfg.id2label = dict(enumerate(labels))
    cfg.label2id = {name: i for i, name in enumerate(labels)}
    cfg.problem_type = "regression"
    cfg.pad_token_id = pad_id
    dtype = next(backbone.model.parameters()).dtype
    clf = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype)
    clf.base_model.load_state_dict(backbone.model.state_dict())
    layer = clf.score if backbone.decoder else clf.classifier
    lin = model.heads[0].linear
    mm = torch.as_tensor(m, dtype=torch.float64)  # (L, K)
    # Collapse in float64: W = M A (L, H), b = M b_heads (L,).
    weight = mm @ lin.weight.detach().cpu().double()
    if tuple(layer.weight.shape) != tuple(weight.shape):
        raise MormError(f"classifier shape {tuple(layer.weight.shape)} does not match the heads "
                        f"{tuple(weight.shape)}")
    with torch.no_grad():
        layer.weight.copy_(weight.to(dtype))
        if layer.bias is not None:
            bias = mm @ lin.bias.detach().cpu().double() if lin.bias is not None else 0.0
            layer.bias.copy_(torch.as_tensor(bias, dtype=dtype).expand_as(layer.bias))
    return clf.eval()


def _export_tokenizer(backbone: Backbone, folder: Path, pad_id: int, max_length: int):
    """The backbone's tokenizer saved into `folder`, with the export's pad token and length;
    reloaded from disk, so the self-check uses what users will load."""
    src = backbone.tokenizer
    src.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.convert_ids_to_tokens(pad_id)
    tok.padding_side = src.padding_side
    tok.truncation_side = src.truncation_side
    tok.model_max_length = max_length
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@torch.inference_mode()
def _self_check(model: RewardModel, clf, tokenizer, m: np.ndarray) -> float:
    """Max |exported logits - scores @ M.T| on `PROBES`; raises when not exact."""
    b = model.backbones[0]
    prompts, responses = [p for p, _ in PROBES], [r for _, r in PROBES]
    was_training = model.training
    model.eval()
    try:
        expected = model(prompts, responses).double().cpu() @ torch.as_tensor(m).T  # (N, L)
    finally:
        model.train(was_training)
    # Tokenize exactly as the project does, with the exported tokenizer (only pad may differ).
    reader = Backbone(b.name, b.pooling, b.max_length, model=b.model, tokenizer=tokenizer)
    clf.to(b.device)
    logits = clf(**reader.tokenize(prompts, responses)).logits.double().cpu()  # (N, L)
    diff = float((logits - expected).abs().max())
    dtype = next(clf.parameters()).dtype
    tol = 1e-4 if dtype == torch.float32 else 3e-2 * (1.0 + float(expected.abs().max()))
    if not diff <= tol:
        raise MormError(f"exported model disagrees with the reward model by {diff:.3g} "
                        f"(tolerance {tol:.1g}); not exported")
    return diff


def _pad_note(tokenizer, last: set[int]) -> str:
    """Why the decoder export's pad token matters, and when it could fail."""
    pad = f"the pad token (id {tokenizer.pad_token_id}, {tokenizer.pad_token!r})"
    if len(last) == 1:
        return (f"The model scores the last token that is not {pad}. Every formatted input "
                f"ends in token {next(iter(last))}, never the pad token, so this is the token "
                "the reward model scored: keep this pad token.")
    return (f"The model scores the last token that is not {pad}. Formatted inputs end in the "
            "response's own last token, so a response ending in the pad token's literal text "
            "would be scored one token early; keep this pad token.")


def _input_format(b: Backbone, tokenizer, pad_note: str) -> str:
    """How inputs must be formatted for the exported model to score as the reward model."""
    if not b.decoder:
        return ("Tokenize (prompt, response) as a sentence pair, truncating the longer one "
                f"first to max_length={b.max_length}:\n\n```python\n"
                "enc = tok(prompts, responses, padding=True, truncation='longest_first',\n"
                f"          max_length={b.max_length}, return_tensors='pt')\n```\n")
    if getattr(tokenizer, "chat_template", None):
        text = ("the chat template over [user prompt, assistant response]:\n\n```python\n"
                "texts = [tok.apply_chat_template([{'role': 'user', 'content': p},\n"
                "                                  {'role': 'assistant', 'content': r}],\n"
                "                                 tokenize=False)\n"
                "         for p, r in zip(prompts, responses)]\n")
    else:
        text = ("prompt and response joined by a blank line (the backbone has no chat "
                "template):\n\n```python\n"
                "texts = [f'{p}\\n\\n{r}' for p, r in zip(prompts, responses)]\n")
    return (f"Format each conversation as {text}"
            f"enc = tok(texts, padding=True, truncation=True, max_length={b.max_length},\n"
            "          return_tensors='pt')\n```\n\n"
            "Padding must be on the right and truncation from the left (both are saved with "
            f"the tokenizer). {pad_note}\n")


def _readme(model: RewardModel, labels: list[str], weights: dict[str, float] | None,
            tokenizer, pad_note: str) -> str:
    b = model.backbones[0]
    outputs = (f"one reward, sum_k w_k r_k with weights {weights}" if weights
               else f"{len(labels)} rewards, one per objective: {', '.join(labels)}")
    return ("# Reward model export\n\n"
            f"A reward model on a `{type(b.model).__name__}` backbone, for "
            "`AutoModelForSequenceClassification` (no custom code). "
            f"Outputs: {outputs}.\n\n## Loading\n\n"
            "```python\nfrom transformers import AutoModelForSequenceClassification, "
            "AutoTokenizer\n\n"
            "tok = AutoTokenizer.from_pretrained(path)\n"
            "model = AutoModelForSequenceClassification.from_pretrained(path).eval()\n```\n\n"
            f"## Input format\n\n{_input_format(b, tokenizer, pad_note)}\n"
            "Then `rewards = model(**enc).logits`, shape (N, num_labels).\n\n"
            "`morm_export.json` records the objectives, the weights and the source model's "
            "config.\n")


def _check_target(out: Path, source: Path | None) -> None:
    if source is not None and out.resolve() == source.resolve():
        raise MormError("the export folder must differ from the reward model's folder",
                        file=str(out))
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                               and not (out / "morm_export.json").is_file())):
        raise MormError("the export folder exists and is not an earlier export; choose "
                        "another folder", file=str(out))


def export_reward_model(model_or_path: RewardModel | str | Path, out_dir: str | Path,
                        weights: dict[str, float] | None = None,
                        normalize_weights: bool = False) -> Path:
    """Write a plain-transformers sequence classifier for the reward model into `out_dir`.

    Without `weights`: K logits, one per objective (`id2label` = objective names). With them:
    one logit sum_k w_k r_k (objectives left out weigh 0). The folder is written beside
    `out_dir` and renamed into place; it is verified against the reward model first.
    Raises `MormError` when the model cannot be exported exactly.
    """
    source = None if isinstance(model_or_path, RewardModel) else Path(model_or_path)
    model = model_or_path if source is None else load_reward_model(source)
    ok, reason = exportability(model)
    if not ok:
        raise MormError(f"cannot export: {reason}", file=str(source) if source else None)
    out = Path(out_dir)
    _check_target(out, source)
    b = model.backbones[0]
    m, labels, used = _combination(model, weights, normalize_weights)
    pad_id, last = choose_pad_id(b) if b.decoder else (b.tokenizer.pad_token_id, set())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer = _export_tokenizer(b, tmp, pad_id, b.max_length)
        clf = _build_classifier(b, model, m, labels, pad_id)
        diff = _self_check(model, clf, tokenizer, m)
        clf.save_pretrained(tmp)
        note = _pad_note(tokenizer, last) if b.decoder else ""
        info = _export_info(model, source, labels, used, normalize_weights, tokenizer, diff,
                            f"{reason}. {note}".strip())
        atomic_write_text(tmp / "morm_export.json", json.dumps(info, indent=2, default=float))
        atomic_write_text(tmp / "README.md", _readme(model, labels, used, tokenizer, note))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _export_info(model: RewardModel, source: Path | None, labels: list[str],
                 weights: dict[str, float] | None, normalized: bool, tokenizer, diff: float,
                 reason: str) -> dict[str, Any]:
    b = model.backbones[0]
    artifact = getattr(model, "artifact_config", None) or {}
    return {
        "format": FORMAT, "morm_version": __version__, "created_at": time.time(),
        "kind": "scalarized" if weights else "per_objective",
        "objectives": model.objectives, "labels": labels,
        "weights": weights, "normalized_weights": normalized and weights is not None,
        "backbone": b.name, "model_type": b.model.config.model_type, "pooling": b.pooling,
        "max_length": b.max_length, "pad_token_id": tokenizer.pad_token_id,
        "pad_token": tokenizer.pad_token, "exportability": reason,
        "self_check_max_abs_diff": diff,
        "source": {"path": str(source) if source else None, "model": model.config.to_dict(),
                   "artifact": {k: artifact[k] for k in ("format", "morm_version", "created_at",
                                                         "training", "data", "metrics",
                                                         "stats") if k in artifact}},
    }
