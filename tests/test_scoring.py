"""The scoring engine: batched equals unbatched, the embedding cache, the score cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.jobs.worker import run_inline
from morm_explorer.reward.artifact import load_reward_model
from morm_explorer.reward.cache import EmbeddingCache
from morm_explorer.scoring import (
    ScoreCandidatesJob,
    model_fingerprint,
    read_cached_scores,
    score,
    score_candidate_set,
    store_scores,
)

TEXTS = ["Boil it for nine minutes.", "No.", "I'm not sure, but roughly ten minutes " * 3,
         "Sure, here is a long and detailed answer " * 6, "", "Use a timer."]


def tiny_set(n_prompts: int = 5):
    return from_records([{"prompt_id": f"p{i}", "prompt": f"Question {i}? " * (1 + i % 3),
                          "response": t, "source": f"s{j % 2}"}
                         for i in range(n_prompts) for j, t in enumerate(TEXTS)], "test")


def install(ws, rm_folder, name="rm"):
    dest = ws.root / "reward_models" / name
    shutil.copytree(rm_folder, dest)
    return dest


def test_batched_scores_equal_one_at_a_time(tiny_rm):
    model = load_reward_model(tiny_rm)
    cset = tiny_set()
    batched = score(model, cset, batch_size=7).to_numpy()
    frame = cset.frame
    single = np.stack([model([p], [r]).detach().numpy()[0]
                       for p, r in zip(frame["prompt"], frame["response"], strict=True)])
    assert batched.shape == (len(cset), 2)
    assert np.abs(batched - single).max() < 1e-5


def test_cached_embeddings_give_the_same_scores_and_skip_the_backbone(tiny_rm, tmp_path):
    model = load_reward_model(tiny_rm)
    cset = tiny_set()
    cache = EmbeddingCache.for_backbone(tmp_path, model.backbones[0])
    full = score(model, cset).to_numpy()
    first = score(model, cset, embedding_cache=cache).to_numpy()
    assert np.abs(full - first).max() < 1e-5 and len(cache) == len(cset)
    with torch.no_grad():  # new heads: the cache still holds, only heads run
        model.heads[0].linear.weight.mul_(-1)
    calls = []
    model.backbones[0].register_forward_hook(lambda *a: calls.append(1))
    again = score(model, cset, embedding_cache=cache).to_numpy()
    bias = model.heads[0].linear.bias.detach().numpy()
    assert calls == [] and np.allclose(again, -first + 2 * bias, atol=1e-5)


def test_score_candidate_set_caches_on_disk(ws, tiny_rm, monkeypatch):
    install(ws, tiny_rm)
    cset = tiny_set()
    save_candidate_set(ws, "c", cset)
    progress = []
    first = score_candidate_set(ws, "rm", "c", device="cpu", progress=lambda d, t:
                                progress.append((d, t)))
    assert not first.cached and first.values.shape == (len(cset), 2)
    assert progress[-1][0] == progress[-1][1]

    def no_model(*a, **k):
        raise AssertionError("a cached score must not load the model")

    monkeypatch.setattr("morm_explorer.reward.artifact.load_reward_model", no_model)
    second = score_candidate_set(ws, "rm", "c")
    assert second.cached and np.array_equal(second.values, first.values)
    assert second.objectives == ["helpful", "harmless"] and second.stats is not None
    # a retrained model (new heads) has a new fingerprint: its scores are never reused
    fp = model_fingerprint(ws.root / "reward_models" / "rm")
    heads = ws.root / "reward_models" / "rm" / "heads.safetensors"
    heads.write_bytes(heads.read_bytes() + b" ")
    assert model_fingerprint(ws.root / "reward_models" / "rm") != fp
    assert read_cached_scores(ws, "rm", cset) is None


def test_store_scores_checks_shape_and_damaged_cache_is_ignored(ws, tiny_rm):
    install(ws, tiny_rm)
    cset = tiny_set(2)
    with pytest.raises(MormError, match="shape"):
        store_scores(ws, "rm", cset, np.zeros((3, 2)), ["helpful", "harmless"])
    path = store_scores(ws, "rm", cset, np.ones((len(cset), 2)), ["helpful", "harmless"])
    assert read_cached_scores(ws, "rm", cset).values.sum() == 2 * len(cset)
    path.write_bytes(b"garbage")
    assert read_cached_scores(ws, "rm", cset) is None
    with pytest.raises(MormError, match="no reward model"):
        read_cached_scores(ws, "nope", cset)


def test_scoring_job(ws, tiny_rm):
    install(ws, tiny_rm)
    save_candidate_set(ws, "c", tiny_set())
    info = run_inline(ws, ScoreCandidatesJob(model="rm", candidates="c", batch_size=4,
                                             device="cpu"))
    assert info.status == "succeeded", info.error
    assert info.result["n"] == 5 * len(TEXTS) and not info.result["cached"]
    assert read_cached_scores(ws, "rm", tiny_set()) is not None
    with pytest.raises(MormError, match="batch_size"):
        ScoreCandidatesJob(model="rm", candidates="c", batch_size=0)
