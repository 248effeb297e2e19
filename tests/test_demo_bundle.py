"""The shipped demo: packing a built demo, installing it into a fresh workspace, refusing a
damaged or stale bundle; and the shipped bundle itself against the current code (a slice of its
scores and of its comparison's samples made again, the latter with the shipped policies)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

import morm_explorer.demo_bundle as demo_bundle
from morm_explorer.data.demo_candidates import DEMO_CANDIDATE_SET
from morm_explorer.demo import ensure_demo
from morm_explorer.demo_bundle import Bundle, bundle_path, write_bundle
from morm_explorer.demo_jobs import (
    COMPARISON,
    JUDGE,
    POLICIES,
    RM,
    SAMPLED,
    PrepareDemoJob,
    demo_complete,
)
from morm_explorer.errors import MormError
from morm_explorer.jobs.worker import run_inline
from morm_explorer.workspace import Workspace
from tests.test_policy import _save_tiny


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_bert):
    """A tiny full demo built from scratch, its spec and its bundle."""
    tmp = tmp_path_factory.mktemp("bundle")
    ws = Workspace(tmp / "ws")
    ensure_demo(ws)
    spec = PrepareDemoJob(backbone=tiny_bert, max_length=64, rm_epochs=2, real_pairs=0,
                          policy=_save_tiny(tmp / "policy"), samples=1, max_new_tokens=4,
                          rl_steps=2, rl_batch=2, group_size=2, compare_prompts=2,
                          compare_samples=1, device="cpu", use_bundle=False)
    info = run_inline(ws, spec)
    assert info.status == "succeeded", info.error
    assert set(info.result["timings_s"]) >= {JUDGE, RM, SAMPLED, *POLICIES, COMPARISON}
    out = tmp / "bundle.tar.xz"
    manifest = write_bundle(ws, out, spec, info.result["timings_s"], command="test")
    return ws, spec, out, manifest


def _fresh(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "fresh")
    ensure_demo(ws)
    return ws


@pytest.mark.slow
def test_the_bundle_installs_the_whole_demo_into_a_fresh_workspace(built, tmp_path,
                                                                   monkeypatch):
    from morm_explorer.data.candidates import load_candidate_set
    from morm_explorer.evaluation.compare import load_comparison
    from morm_explorer.policy.load import load_policy
    from morm_explorer.policy.ppo_jobs import run_history
    from morm_explorer.scoring import read_cached_scores

    source, spec, out, manifest = built
    assert all("reference.safetensors" not in f for f in manifest["files"])
    monkeypatch.setattr(demo_bundle, "bundle_path", lambda: out)
    ws = _fresh(tmp_path)
    info = run_inline(ws, PrepareDemoJob(**{**spec.__dict__, "use_bundle": True}))
    assert info.status == "succeeded", info.error
    assert sorted(info.result["built"]) == sorted(
        [JUDGE, RM, SAMPLED, "compare-" + COMPARISON, *POLICIES, COMPARISON])
    # nothing was trained or sampled here: the policies ship too
    assert set(info.result["timings_s"]) <= {"shipped demo", "scores"}
    assert demo_complete(ws)
    for name in POLICIES:
        assert not run_history(ws, name)[0].empty  # Fine-tune's curves came along
        adapter = f"policies/{name}/adapter_model.safetensors"
        assert (ws.root / adapter).read_bytes() == (source.root / adapter).read_bytes()
        cfg = json.loads((ws.root / f"policies/{name}/adapter_config.json").read_text())
        assert sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
        load_policy(name, workspace=ws)  # over the base its morm_ppo.json names
    a, b = load_comparison(source, COMPARISON), load_comparison(ws, COMPARISON)
    assert a.frame.equals(b.frame) and a.manifest == b.manifest
    for model in (RM, JUDGE):  # the shipped scores are found where scoring looks
        want = read_cached_scores(source, source.root / "reward_models" / model,
                                  load_candidate_set(source, SAMPLED))
        got = read_cached_scores(ws, ws.root / "reward_models" / model,
                                 load_candidate_set(ws, SAMPLED))
        assert (got is None) == (want is None) and (model == JUDGE or got is not None)
        assert got is None or np.array_equal(got.values, want.values)
    # Explore's demo set (made here from the built-in data) has the shipped scores: found by
    # the fingerprints of the installed model and of the set made here, not scored again.
    demo = load_candidate_set(ws, DEMO_CANDIDATE_SET)
    got = read_cached_scores(ws, ws.root / "reward_models" / RM, demo)
    want = read_cached_scores(source, source.root / "reward_models" / RM,
                              load_candidate_set(source, DEMO_CANDIDATE_SET))
    assert got is not None and np.array_equal(got.values, want.values)
    again = run_inline(ws, PrepareDemoJob(**{**spec.__dict__, "use_bundle": True}))
    assert again.status == "succeeded" and again.result["built"] == []


@pytest.mark.slow
def test_a_bundle_without_policies_leaves_them_to_the_build(built, tmp_path, monkeypatch):
    source, spec, _, _ = built
    out = tmp_path / "no-policies.tar.xz"
    manifest = write_bundle(source, out, spec, {}, with_policies=False)
    assert not any(f.startswith("policies/") for f in manifest["files"])
    monkeypatch.setattr(demo_bundle, "bundle_path", lambda: out)
    ws = _fresh(tmp_path)
    info = run_inline(ws, PrepareDemoJob(**{**spec.__dict__, "use_bundle": True}))
    assert info.status == "succeeded", info.error
    assert set(POLICIES) <= set(info.result["timings_s"])  # trained here
    assert demo_complete(ws)


@pytest.mark.slow
def test_a_bundle_made_with_other_settings_is_not_used(built, tmp_path, monkeypatch):
    source, spec, out, _ = built
    monkeypatch.setattr(demo_bundle, "bundle_path", lambda: out)
    other = PrepareDemoJob(**{**spec.__dict__, "rl_steps": 3, "use_bundle": True})
    assert not Bundle(out).matches(other) and Bundle(out).matches(spec)
    neutral = PrepareDemoJob(**{**spec.__dict__, "device": "auto", "real_pairs": 10})
    assert Bundle(out).matches(neutral)
    lora = PrepareDemoJob(**{**spec.__dict__, "lora_target_modules": ()})
    assert not Bundle(out).matches(lora)
    # a bundle made before a field existed does not say what it held: not a match
    old = Bundle(out)
    del old.manifest["spec"]["adapter_dtype"]
    assert not old.matches(spec)


@pytest.mark.slow
def test_a_damaged_bundle_installs_nothing(built, tmp_path, monkeypatch):
    from morm_explorer.data.candidates import list_candidate_sets

    _, spec, out, manifest = built
    with tarfile.open(out, "r:xz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar}
    victim = next(f for f in manifest["files"] if f.startswith("reward_models/demo-rm/"))
    files[victim] = files[victim][:-1] + bytes([files[victim][-1] ^ 1])
    bad = tmp_path / "bad.tar.xz"
    with tarfile.open(bad, "w:xz") as tar:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    monkeypatch.setattr(demo_bundle, "bundle_path", lambda: bad)
    ws = _fresh(tmp_path)
    before = {c.name for c in list_candidate_sets(ws)}
    bundle = Bundle(bad)
    with pytest.raises(MormError, match="SHA-256"):
        bundle.read(victim)
    with pytest.raises(MormError, match="SHA-256"):
        demo_bundle.install_bundle(ws, bundle, lambda part: part != f"reward_models/{RM}",
                                   log=lambda m: None)
    assert not (ws.root / "reward_models" / RM).exists()  # no half-installed folder
    assert not list((ws.root / "reward_models").glob(".*"))
    assert {c.name for c in list_candidate_sets(ws)} == before


def test_a_bundle_with_an_escaping_entry_is_refused(tmp_path):
    path = tmp_path / "evil.tar.xz"
    with tarfile.open(path, "w:xz") as tar:
        entry = tarfile.TarInfo("../outside.txt")
        entry.size = 1
        tar.addfile(entry, io.BytesIO(b"x"))
    with pytest.raises(MormError, match="unexpected entry"):
        Bundle(path)
    path.write_bytes(b"not a tar")
    with pytest.raises(MormError, match="cannot read"):
        Bundle(path)


# -- the shipped bundle ---------------------------------------------------------------------

shipped = pytest.mark.skipif(not bundle_path().is_file(), reason="no shipped demo bundle")


@shipped
def test_the_shipped_bundle_is_whole_and_made_with_the_current_demo_settings():
    bundle = Bundle(bundle_path())
    assert bundle.matches(PrepareDemoJob()), (
        "the demo's settings changed since the bundle was made: run `morm demo "
        "--write-bundle morm_explorer/data/demo_bundle.tar.xz`")
    for rel in bundle.manifest["files"]:
        bundle.read(rel)  # each against its SHA-256
    assert bundle_path().stat().st_size < 8 * 2**20  # the repository carries it
    for name in POLICIES:  # the policies ship: small LoRA adapters, safetensors only
        files = bundle.parts[f"policies/{name}"]
        assert f"policies/{name}/morm_ppo.json" in files
        assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
        config = json.loads(bundle.read(f"policies/{name}/adapter_config.json"))
        assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
        assert config["r"] == 16
        run = json.loads(bundle.read(f"policies/{name}/morm_ppo.json"))
        assert run["config"]["policy"] == "smollm2" and run["reward_model"] == RM
        assert run["weights"]["weights"] == POLICIES[name]
        weights = bundle.read(f"policies/{name}/adapter_model.safetensors")
        assert len(weights) < 2.5 * 2**20
        header = json.loads(weights[8:8 + int.from_bytes(weights[:8], "little")])
        assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}


@shipped
@pytest.mark.slow
def test_a_slice_of_the_shipped_demo_made_again_matches(tmp_path):
    """Scores of the shipped comparison's first responses under the shipped reward model, made
    again here with MiniLM, equal the shipped ones."""
    import time

    from morm_explorer.data.candidates import CandidateSet, load_candidate_set
    from morm_explorer.evaluation.compare import candidate_set_name
    from morm_explorer.scoring import read_cached_scores, score_candidate_set

    ws = Workspace(tmp_path / "ws")
    ensure_demo(ws)
    bundle = Bundle(bundle_path())
    t0 = time.perf_counter()
    installed = demo_bundle.install_bundle(ws, bundle, lambda p: False, log=lambda m: None)
    print(f"the shipped demo installed in {time.perf_counter() - t0:.1f} s")
    assert set(installed) == set(bundle.parts)
    assert {f"reward_models/{RM}", f"reward_models/{JUDGE}", f"comparisons/{COMPARISON}",
            f"candidates/{SAMPLED}"} <= set(installed)
    name = candidate_set_name(COMPARISON)
    full = load_candidate_set(ws, name)
    shipped_scores = read_cached_scores(ws, ws.root / "reward_models" / RM, full)
    assert shipped_scores is not None
    head = CandidateSet(full.frame.iloc[:8].reset_index(drop=True), origin="slice")
    again = score_candidate_set(ws, RM, head, device="cpu")
    np.testing.assert_allclose(again.values, shipped_scores.values[:8],
                               atol=1e-4)
    demo = load_candidate_set(ws, DEMO_CANDIDATE_SET)  # made here from the built-in data
    shipped_demo = read_cached_scores(ws, ws.root / "reward_models" / RM, demo)
    assert shipped_demo is not None, "the demo set's scores do not ship (or no longer match)"
    rows = np.linspace(0, len(demo) - 1, 8).astype(int)
    head = CandidateSet(demo.frame.iloc[rows].reset_index(drop=True), origin="slice")
    again = score_candidate_set(ws, RM, head, device="cpu")
    np.testing.assert_allclose(again.values, shipped_demo.values[rows], atol=1e-4)
    manifest = json.loads(json.dumps(bundle.manifest))
    assert manifest["spec"]["policy"] == "smollm2"


@shipped
def test_the_overview_counts_the_shipped_parts_as_seconds(tmp_path):
    from morm_explorer.demo_jobs import PART_SECONDS, demo_time_left

    ws = Workspace(tmp_path / "ws")
    ensure_demo(ws)
    left, parts = demo_time_left(ws)
    by_name = {label.split()[-1]: sec for label, _, sec in parts}
    assert by_name[RM] == by_name[JUDGE] == by_name[COMPARISON] == 1.0
    assert all(by_name[p] == 1.0 for p in POLICIES)  # the policies ship too
    assert left < sum(PART_SECONDS.values())


@shipped
@pytest.mark.slow
def test_the_shipped_policies_sample_the_shipped_comparison_again(tmp_path):
    """The first sampling batch of the shipped comparison (its 4 shortest prompts x 4 samples,
    seeded by the batch), sampled again here from each shipped adapter over SmolLM2, gives the
    shipped texts: the comparison was made with these policies."""
    import difflib

    from morm_explorer.evaluation.compare import load_comparison
    from morm_explorer.policy.config import SamplingConfig
    from morm_explorer.policy.generate import format_prompt, sample
    from morm_explorer.policy.load import load_policy

    ws = Workspace(tmp_path / "ws")
    ensure_demo(ws)
    bundle = Bundle(bundle_path())
    demo_bundle.install_bundle(ws, bundle, lambda p: False, log=lambda m: None)
    comparison = load_comparison(ws, COMPARISON)
    config = SamplingConfig.from_dict(comparison.manifest["sampling"])
    frame = comparison.frame
    prompts = frame.drop_duplicates("prompt_id")[["prompt_id", "prompt"]]
    assert config.batch_size % config.n == 0 and len(prompts) == PrepareDemoJob().compare_prompts
    ratios = []
    for name in POLICIES:
        model, tok = load_policy(name, workspace=ws)
        texts = [format_prompt(tok, p, config.system) for p in prompts["prompt"]]
        special = not getattr(tok, "chat_template", None)
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=special)["input_ids"]]
        # `sample`'s first batch: the shortest prompts (ties by position), n copies each
        first = sorted(sorted(range(len(texts)), key=lambda i: (lengths[i], i))
                       [:config.batch_size // config.n])
        again = sample(model, tok, [prompts["prompt"].iloc[i] for i in first], config)
        for i, samples in zip(first, again, strict=True):
            rows = frame[(frame["policy"] == name)
                         & (frame["prompt_id"] == prompts["prompt_id"].iloc[i])]
            shipped = rows.sort_values("sample")["response"].tolist()
            ratios += [difflib.SequenceMatcher(None, s["response"], t).ratio()
                       for s, t in zip(samples, shipped, strict=True)]
    # the same seeds and batch: the same text, short of a float rounding that flips a token
    assert np.mean(ratios) > 0.9 and sum(r == 1.0 for r in ratios) >= len(ratios) // 2, ratios
