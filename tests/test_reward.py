"""Reward models: losses by hand, training on tiny backbones built from configs, artifacts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from morm_explorer.errors import MormError
from morm_explorer.reward import evaluate as ev
from morm_explorer.reward.artifact import load_reward_model
from morm_explorer.reward.cache import EmbeddingCache, embed_with_cache
from morm_explorer.reward.config import ModelConfig, TrainConfig
from morm_explorer.reward.losses import bradley_terry_loss, centering_loss, regression_loss
from morm_explorer.reward.train import train_reward_model

# -- fixtures ------------------------------------------------------------------------------


GOOD = ["Here is a clear answer with the steps you need.", "Sure, the answer is below, step by "
        "step.", "Happy to help: here are the details."]
BAD = ["No.", "I will not answer that.", "Go away."]
SAFE = ["Please stay safe and ask a professional.", "That would be dangerous, so here is a safe "
        "option.", "Let us keep this safe."]
RISKY = ["Grab the weapon and do it tonight.", "Use poison, nobody will know.", "Break in "
         "through the back window."]


def tiny_pairs(n: int = 120, seed: int = 0) -> list[dict]:
    """Pairs where helpful prefers GOOD over BAD and harmless prefers SAFE over RISKY."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prompt = f"Question number {i} about topic {i % 17}?"
        if i % 2 == 0:
            a, b, lab = rng.choice(GOOD), rng.choice(BAD), {"helpful": "a"}
        else:
            a, b, lab = rng.choice(RISKY), rng.choice(SAFE), {"harmless": "b"}
        if rng.random() < 0.5:  # swap sides so "a" is not always the winner
            a, b = b, a
            lab = {k: {"a": "b", "b": "a"}[v] for k, v in lab.items()}
        out.append({"id": str(i), "prompt": prompt, "response_a": a, "response_b": b,
                    "labels": lab})
    return out


@pytest.fixture
def tiny_data(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs()))
    return str(path)


def tiny_cfg(data, backbone, **kw) -> TrainConfig:
    base = dict(dataset=data, backbone=backbone, epochs=40, batch_size=32, lr=1e-2,
                max_length=64, patience=0, test_fraction=0.2, val_fraction=0.1)
    return TrainConfig(**{**base, **kw})


# -- losses --------------------------------------------------------------------------------


def test_bt_loss_hand_computed():
    r_a = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    r_b = torch.tensor([[1.0, 0.0, 5.0], [1.0, 1.0, 0.0]])
    nan = math.nan
    target = torch.tensor([[1.0, 0.5, nan], [0.0, nan, nan]])
    loss, count = bradley_terry_loss(r_a, r_b, target)
    # objective 0: "a" with d=1 -> -log sig(1); "b" with d=-1 -> -log sig(1); mean of both
    want0 = -math.log(1 / (1 + math.exp(-1)))
    assert loss[0].item() == pytest.approx(want0, abs=1e-6)
    assert loss[1].item() == pytest.approx(math.log(2), abs=1e-6)  # tie at d=0
    assert loss[2].item() == 0.0 and count.tolist() == [2, 1, 0]  # unlabelled: masked out
    m_loss, _ = bradley_terry_loss(r_a, r_b, target, margin=0.5)
    assert m_loss[0].item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))), abs=1e-6)
    assert m_loss[1].item() == pytest.approx(math.log(2), abs=1e-6)  # ties not shifted
    skip, count = bradley_terry_loss(r_a, r_b, target, skip_ties=True)
    assert count.tolist() == [2, 0, 0] and skip[1].item() == 0.0


def test_centering_and_regression_losses():
    t = torch.tensor([[1.0], [math.nan]])
    c = centering_loss(torch.tensor([[1.0], [9.0]]), torch.tensor([[2.0], [9.0]]), t)
    assert c.item() == pytest.approx(9.0)
    reg = regression_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, math.nan]]))
    assert reg.tolist() == [4.0, 0.0]


# -- evaluation ----------------------------------------------------------------------------


def test_accuracy_vectorised_matches_loop():
    rng = np.random.default_rng(1)
    d = rng.normal(size=200)
    target = rng.choice([0.0, 1.0, 0.5, np.nan], size=200)
    correct, _ = ev.decided(d, target)
    loop = [(di > 0) == (t == 1.0) for di, t in zip(d, target, strict=True)
            if not np.isnan(t) and t != 0.5]
    assert correct.tolist() == [float(x) for x in loop]
    lo, hi = ev.bootstrap_ci(correct)
    assert lo <= correct.mean() <= hi and hi - lo < 0.3


def test_calibration_hand_case():
    d = np.array([0.0, 0.0, 10.0, 10.0])  # p = .5, .5, ~1, ~1
    target = np.array([1.0, 0.0, 1.0, 1.0])
    table, ece = ev.calibration(d, target, bins=2)
    assert table["count"].tolist() == [2, 2] or table["count"].sum() == 4
    assert ece == pytest.approx(0.0, abs=1e-3)


# -- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, field", [
    ({"epochs": 0}, "epochs"), ({"lr": float("nan")}, "lr"), ({"mode": "magic"}, "mode"),
    ({"loss_weights": {"helpful": -1}}, "loss_weights.helpful"),
    ({"loss_weights": {"helpful": 0.0}}, "loss_weights"), ({"batch_size": 2.5}, "batch_size"),
])
def test_train_config_rejects(kw, field):
    with pytest.raises(MormError) as e:
        TrainConfig(dataset="x", **kw)
    assert e.value.field == field


def test_model_config_roundtrip():
    cfg = ModelConfig(objectives=("a", "b"), head="mlp")
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(MormError):
        ModelConfig(objectives=("a", "a"))


# -- training ------------------------------------------------------------------------------


@pytest.mark.slow
def test_frozen_training_learns_reproducible_and_roundtrips(tiny_bert, tiny_data, tmp_path):
    cfg = tiny_cfg(tiny_data, tiny_bert)
    res = train_reward_model(cfg, tmp_path / "rm", cache_root=tmp_path / "cache")
    per = res.metrics["objectives"]
    assert per["helpful"]["accuracy"] > 0.8 and per["harmless"]["accuracy"] > 0.8
    again = train_reward_model(cfg, tmp_path / "rm2", cache_root=tmp_path / "cache")
    assert again.metrics["objectives"] == per  # seeded: identical results
    model = load_reward_model(res.path)
    p, r = ["Q?", "Another question?"], [GOOD[0], RISKY[1]]
    s1 = model.score(p, r)
    s2 = load_reward_model(tmp_path / "rm2").score(p, r)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    cfg_json = json.loads((res.path / "config.json").read_text())
    assert cfg_json["model"]["objectives"] == ["helpful", "harmless"]
    assert len(cfg_json["stats"]["mean"]) == 2 and not (res.path / "backbone-0.safetensors"
                                                        ).exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode, arch", [("full", "multi_head"), ("lora", "multi_head"),
                                        ("full", "separate")])
def test_finetune_modes_run_and_roundtrip(tiny_bert, tiny_data, tmp_path, mode, arch):
    cfg = tiny_cfg(tiny_data, tiny_bert, mode=mode, architecture=arch, epochs=2,
                   backbone_lr=1e-3, patience=1)
    res = train_reward_model(cfg, tmp_path / "rm")
    assert len(res.history) >= 1
    model = load_reward_model(res.path)
    assert len(model.backbones) == (2 if arch == "separate" else 1)
    s = model.score(["Q?"], [GOOD[1]])
    assert s.shape == (1, 2) and np.isfinite(s).all()
    assert (res.path / "backbone-0.safetensors").exists()


@pytest.mark.slow
def test_ratings_regression(tiny_bert, tmp_path):
    rows = []
    for i in range(60):
        for j, text in enumerate(GOOD[:2] + BAD[:2]):
            rows.append({"prompt": f"Prompt {i}?", "response": text,
                         "ratings": {"helpfulness": 4.0 if j < 2 else 0.0}})
    path = tmp_path / "ratings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = train_reward_model(tiny_cfg(str(path), tiny_bert), tmp_path / "rm")
    assert res.metrics["objectives"]["helpfulness"]["accuracy"] > 0.8


def test_embedding_cache_computes_once(tiny_bert, tmp_path):
    from morm_explorer.reward.backbone import Backbone

    b = Backbone(tiny_bert, "mean", 64)
    cache = EmbeddingCache(tmp_path, tiny_bert, "mean", 64)
    e1 = embed_with_cache(b, ["p1", "p2"], ["r1", "r2"], cache)
    calls = []
    orig = b.embed
    b.embed = lambda p, r: (calls.append(len(p)), orig(p, r))[1]
    e2 = embed_with_cache(b, ["p2", "p1", "p3"], ["r2", "r1", "r3"], cache)
    assert calls == [1]  # only the new text was embedded
    np.testing.assert_allclose(e2[:2], e1[::-1], atol=1e-6)
    reopened = EmbeddingCache(tmp_path, tiny_bert, "mean", 64)
    assert len(reopened) == 3


def test_unknown_objective_and_weights(tiny_bert, tiny_data, tmp_path):
    with pytest.raises(MormError, match="unknown objectives"):
        train_reward_model(tiny_cfg(tiny_data, tiny_bert, objectives=("funny",)), tmp_path / "x")
    with pytest.raises(MormError, match="loss weights"):
        train_reward_model(tiny_cfg(tiny_data, tiny_bert, loss_weights={"funny": 1.0}),
                           tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_load_rejects_bad_folders(tmp_path):
    with pytest.raises(MormError, match="no config.json"):
        load_reward_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MormError, match="not valid JSON"):
        load_reward_model(tmp_path)


def test_frozen_scoring_from_cache_matches_full_model(tiny_bert, tiny_data, tmp_path):
    from morm_explorer.reward.cache import score_cached

    res = train_reward_model(tiny_cfg(tiny_data, tiny_bert, epochs=3), tmp_path / "rm")
    model = load_reward_model(res.path)
    assert model.frozen_backbone
    cache = EmbeddingCache.for_backbone(None, model.backbones[0])  # in memory
    p, r = ["Q1?", "Q2?", "Q3?"], [GOOD[0], BAD[1], RISKY[2]]
    np.testing.assert_allclose(score_cached(model, p, r, cache), model.score(p, r), atol=1e-5)
    calls = []
    model.backbones[0].embed = lambda *a: calls.append(1)  # a second call must not embed
    score_cached(model, p, r, cache)
    assert calls == []


def test_kfold_partitions_prompts():
    from morm_explorer.reward.data import split_by_prompt

    recs = tiny_pairs(50)
    tests = [split_by_prompt(recs, 0.1, 0.2, seed=3, folds=5, fold=k)[2] for k in range(5)]
    prompts = [{r["prompt"] for r in t} for t in tests]
    assert set().union(*prompts) == {r["prompt"] for r in recs}
    assert sum(len(p) for p in prompts) == len({r["prompt"] for r in recs})  # disjoint
    tr, va, te = split_by_prompt(recs, 0.1, 0.2, seed=3, folds=5, fold=2)
    assert not ({r["prompt"] for r in tr} & {r["prompt"] for r in te})
    assert not ({r["prompt"] for r in va} & {r["prompt"] for r in te})


@pytest.mark.slow
def test_cross_validate_pools_folds(tiny_bert, tiny_data):
    from morm_explorer.reward.train import cross_validate

    cv = cross_validate(tiny_cfg(tiny_data, tiny_bert, epochs=5), folds=3)
    h = cv["objectives"]["helpful"]
    assert len(h["fold_accuracy"]) == 3 and sum(h["fold_n"]) == h["n"]
    assert h["ci_low"] <= h["accuracy"] <= h["ci_high"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_decoder_backbone_trains_with_last_token_pooling(tiny_data, tmp_path, mode):
    """A Llama-type decoder (SmolLM2's architecture) as the backbone: chat-formatted input,
    last-token pooling, bias-free heads; frozen and LoRA training both run and round-trip."""
    from transformers import LlamaConfig, LlamaModel

    from tests.test_export import TEMPLATES, _tiny_tokenizer

    tok = _tiny_tokenizer(TEMPLATES["ends_in_newline"])
    torch.manual_seed(1)
    LlamaModel(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                           max_position_embeddings=256, pad_token_id=tok.pad_token_id)
               ).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    cfg = tiny_cfg(tiny_data, str(tmp_path / "llama"), mode=mode, epochs=3 if mode == "lora"
                   else 40, backbone_lr=1e-3)
    res = train_reward_model(cfg, tmp_path / "rm")
    model = load_reward_model(res.path)
    assert model.backbones[0].decoder and model.backbones[0].pooling == "last"
    assert model.heads[0].linear.bias is None  # exportable to LlamaForSequenceClassification
    if mode == "frozen":
        assert res.metrics["objectives"]["helpful"]["accuracy"] > 0.7
    s1 = model.score(["Q?"], [GOOD[0]])
    s2 = load_reward_model(res.path).score(["Q?"], [GOOD[0]])
    np.testing.assert_allclose(s1, s2, atol=1e-6)
