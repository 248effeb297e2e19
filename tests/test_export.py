"""Export to plain transformers: exported logits equal the reward model's scores (tiny BERT and
Llama built from configs), scalarized exports, refusals, and the artifact round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from morm_explorer.errors import MormError
from morm_explorer.reward.artifact import load_reward_model, save_reward_model
from morm_explorer.reward.backbone import Backbone
from morm_explorer.reward.config import ModelConfig
from morm_explorer.reward.export import export_reward_model, exportability
from morm_explorer.reward.model import RewardModel

OBJECTIVES = ("helpful", "harmless", "honest")
WEIGHTS = {"helpful": 0.5, "harmless": 0.3, "honest": 0.2}
MAX_LENGTH = 40
# Different lengths (so batches pad), one response long enough to be truncated.
PROMPTS = ["Hi", "How do I boil an egg?", "Tell me a story.", "What is two plus two?",
           "Is it safe to mix bleach and ammonia?"]
RESPONSES = ["Hello.", "Put it in boiling water for nine minutes.",
             "Once upon a time " + "there was a cat and a dog and a bird, " * 6 + "the end.",
             "Four", "No, never: it releases toxic chloramine gas."]

# -- fixtures ------------------------------------------------------------------------------


# Chat templates: ending in eos (pad = eos, the case where transformers would pool the wrong
# token with the tokenizer's own pad), ending after eos (SmolLM2-like), and none at all.
TEMPLATES = {
    "ends_in_eos": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                   "<|im_end|>{% endfor %}",
    "ends_in_newline": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                       "<|im_end|>\n{% endfor %}",
    "no_template": None,
}


def _tiny_tokenizer(template: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel
                                  .alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    raw.train_from_iterator(PROMPTS + RESPONSES, trainer)
    pad = "<|im_end|>" if template else None  # no pad: the backbone falls back to eos
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token=pad,
                                  bos_token="<|im_start|>", unk_token="<|endoftext|>")
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module", params=list(TEMPLATES))
def tiny_llama(request, tmp_path_factory) -> str:
    """A 2-layer Llama with random weights and a small BPE tokenizer."""
    from transformers import LlamaConfig, LlamaModel

    tok = _tiny_tokenizer(TEMPLATES[request.param])
    torch.manual_seed(1)
    model = LlamaModel(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, max_position_embeddings=256,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                   bos_token_id=tok.bos_token_id))
    path = tmp_path_factory.mktemp(f"tiny-llama-{request.param}")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def reward_model(backbone: str, pooling: str = "auto", head: str = "linear",
                 n_backbones: int = 1, seed: int = 0) -> RewardModel:
    """A reward model over a tiny backbone with random (not freshly initialised) heads."""
    cfg = ModelConfig(objectives=OBJECTIVES, backbone=backbone, pooling=pooling, head=head,
                      head_hidden=16, max_length=MAX_LENGTH)
    model = RewardModel(cfg, [Backbone(backbone, pooling, MAX_LENGTH)
                              for _ in range(n_backbones)])
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.normal_()
    return model.eval()


def exported_logits(out, decoder: bool) -> torch.Tensor:
    """Logits of the exported folder, loaded and fed exactly as its README says."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    clf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    if decoder:
        if tok.chat_template:
            texts = [tok.apply_chat_template([{"role": "user", "content": p},
                                              {"role": "assistant", "content": r}],
                                             tokenize=False)
                     for p, r in zip(PROMPTS, RESPONSES, strict=True)]
        else:
            texts = [f"{p}\n\n{r}" for p, r in zip(PROMPTS, RESPONSES, strict=True)]
        enc = tok(texts, padding=True, truncation=True, max_length=MAX_LENGTH,
                  return_tensors="pt")
        assert tok.padding_side == "right"
    else:
        enc = tok(PROMPTS, RESPONSES, padding=True, truncation="longest_first",
                  max_length=MAX_LENGTH, return_tensors="pt")
    assert enc["attention_mask"].sum(1).unique().numel() > 1  # the batch really is padded
    assert enc["attention_mask"].shape[1] == MAX_LENGTH  # and one input was truncated
    with torch.inference_mode():
        return clf(**enc).logits


def assert_exports_exactly(model: RewardModel, tmp_path) -> None:
    from transformers import AutoConfig

    decoder = model.backbones[0].decoder
    scores = torch.from_numpy(model.score(PROMPTS, RESPONSES))  # (N, K)

    out = export_reward_model(model, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert AutoConfig.from_pretrained(out).num_labels == len(OBJECTIVES)
    assert config["id2label"] == {str(i): o for i, o in enumerate(OBJECTIVES)}
    assert config["problem_type"] == "regression" and "auto_map" not in config
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    torch.testing.assert_close(exported_logits(out, decoder), scores, atol=1e-5, rtol=0)

    out1 = export_reward_model(model, tmp_path / "export-scalar", weights=WEIGHTS)
    w = torch.tensor([WEIGHTS[o] for o in OBJECTIVES])
    logits = exported_logits(out1, decoder)
    assert logits.shape == (len(PROMPTS), 1)
    torch.testing.assert_close(logits, (scores @ w)[:, None], atol=1e-5, rtol=0)
    info = json.loads((out1 / "morm_export.json").read_text())
    assert info["kind"] == "scalarized" and info["weights"] == WEIGHTS
    assert json.loads((out1 / "config.json").read_text())["id2label"] == {"0": "reward"}


# -- exact exports -------------------------------------------------------------------------


def test_bert_pooler_export_matches_scores(tiny_bert, tmp_path):
    model = reward_model(tiny_bert, pooling="pooler")
    assert exportability(model)[0]
    assert model.heads[0].linear.bias is not None  # encoder heads keep their bias
    assert_exports_exactly(model, tmp_path)


def test_llama_export_matches_scores(tiny_llama, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = reward_model(tiny_llama)
    backbone = model.backbones[0]
    assert backbone.pooling == "last" and model.heads[0].linear.bias is None
    assert_exports_exactly(model, tmp_path)

    # The exported pad id never ends a formatted input, even where the tokenizer pads with eos
    # and the chat template ends in eos; with eos as pad transformers would pool the wrong
    # token, which this checks too (so the test would catch a wrong pad choice).
    enc = backbone.tokenize(PROMPTS, RESPONSES)
    last = enc["input_ids"][torch.arange(len(PROMPTS)), enc["attention_mask"].sum(1) - 1]
    out = tmp_path / "export"
    pad_id = json.loads((out / "config.json").read_text())["pad_token_id"]
    assert pad_id not in last.tolist()
    if backbone.tokenizer.pad_token_id in last.tolist():
        naive = AutoModelForSequenceClassification.from_pretrained(
            out, pad_token_id=backbone.tokenizer.pad_token_id).eval()
        enc = backbone.tokenize(PROMPTS, RESPONSES)
        with torch.inference_mode():
            wrong = naive(**enc).logits
        assert not torch.allclose(wrong, torch.from_numpy(model.score(PROMPTS, RESPONSES)))


def test_separate_heads_on_a_shared_frozen_backbone_export(tiny_bert, tmp_path):
    cfg = ModelConfig(objectives=OBJECTIVES, backbone=tiny_bert, architecture="separate",
                      pooling="pooler", max_length=MAX_LENGTH)
    model = RewardModel(cfg, [Backbone(tiny_bert, "pooler", MAX_LENGTH)])
    with torch.no_grad():
        model.heads[0].linear.bias.normal_()
    out = export_reward_model(model, tmp_path / "e")
    torch.testing.assert_close(exported_logits(out, False),
                               torch.from_numpy(model.score(PROMPTS, RESPONSES)),
                               atol=1e-5, rtol=0)


def test_normalized_weights_sum_to_one(tiny_bert, tmp_path):
    model = reward_model(tiny_bert, pooling="pooler")
    out = export_reward_model(model, tmp_path / "e", weights={"helpful": 3.0, "honest": 1.0},
                              normalize_weights=True)
    info = json.loads((out / "morm_export.json").read_text())
    assert info["weights"] == {"helpful": 0.75, "harmless": 0.0, "honest": 0.25}
    scores = model.score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(exported_logits(out, False)[:, 0].numpy(),
                               scores @ np.array([0.75, 0.0, 0.25]), atol=1e-5, rtol=0)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, expected", [
    ("mean", "mean pooling cannot be exported"),
    ("cls", "cls pooling cannot be exported"),
    ("mlp", "mlp heads cannot be exported"),
    ("separate", "separate fine-tuned models cannot be exported"),
])
def test_bert_refusals_name_the_reason(tiny_bert, tmp_path, kind, expected):
    if kind == "mlp":
        model = reward_model(tiny_bert, pooling="pooler", head="mlp")
    elif kind == "separate":
        model = reward_model(tiny_bert, pooling="pooler", n_backbones=3)
    else:
        model = reward_model(tiny_bert, pooling=kind)
    ok, reason = exportability(model)
    assert not ok and expected in reason
    with pytest.raises(MormError, match=expected):
        export_reward_model(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_decoder_heads_with_bias_are_refused(tiny_llama, tmp_path):
    cfg = ModelConfig(objectives=OBJECTIVES, backbone=tiny_llama, max_length=MAX_LENGTH)
    model = RewardModel(cfg, [Backbone(tiny_llama, "auto", MAX_LENGTH)], heads_bias=True)
    with torch.no_grad():
        model.heads[0].linear.bias.fill_(0.5)
    with pytest.raises(MormError, match="nonzero bias"):
        export_reward_model(model, tmp_path / "out")


def test_bad_weights_and_target_folders(tiny_bert, tmp_path):
    model = reward_model(tiny_bert, pooling="pooler")
    with pytest.raises(MormError, match="unknown objectives"):
        export_reward_model(model, tmp_path / "a", weights={"funny": 1.0})
    with pytest.raises(MormError, match="all weights are zero"):
        export_reward_model(model, tmp_path / "a", weights={"helpful": 0.0})
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(MormError, match="not an earlier export"):
        export_reward_model(model, taken)
    assert (taken / "notes.txt").read_text() == "mine"


# -- artifacts -----------------------------------------------------------------------------


def test_round_trip_and_export_from_folder(tiny_bert, tmp_path):
    """A saved model with a trained backbone loads with identical scores, and its export
    carries the trained backbone weights, not the pretrained ones."""
    model = reward_model(tiny_bert, pooling="pooler")
    torch.manual_seed(2)
    with torch.no_grad():  # stand-in for fine-tuning: move every backbone weight
        for p in model.backbones[0].model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    scores = model.score(PROMPTS, RESPONSES)
    path = save_reward_model(model, tmp_path / "rm", training={}, metrics={}, stats={},
                             history=[], data={}, backbone_trained=True)
    loaded = load_reward_model(path)
    np.testing.assert_array_equal(loaded.score(PROMPTS, RESPONSES), scores)

    out = export_reward_model(path, tmp_path / "export")
    torch.testing.assert_close(exported_logits(out, False), torch.from_numpy(scores),
                               atol=1e-5, rtol=0)
    info = json.loads((out / "morm_export.json").read_text())
    assert info["source"]["path"] == str(path)
    assert info["source"]["model"]["objectives"] == list(OBJECTIVES)
    # Exporting again replaces the earlier export in place.
    export_reward_model(path, out, weights=WEIGHTS)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "reward"}
    with pytest.raises(MormError, match="must differ"):
        export_reward_model(path, path)
