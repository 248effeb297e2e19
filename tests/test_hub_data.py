"""Public datasets by hub name (``hf:NAME``) and the demo's real data, all offline.

Tiny ``save_to_disk`` folders with the real schemas of HH-RLHF, PKU-SafeRLHF, HelpSteer2 and
UltraFeedback stand in for the hub: the one function that calls ``datasets.load_dataset``
(`hub.load_from_hub`) is replaced by one that reads them and records what it was asked for.
"""

from __future__ import annotations

import json
import time

import pytest

from morm_explorer.cli import main
from morm_explorer.data import hub
from morm_explorer.data.loaders import load_preference_data
from morm_explorer.demo import ensure_demo
from morm_explorer.demo_data import (
    DEMO_REAL_DATASET,
    DEMO_REAL_JUDGE_DATASET,
    HH_HUB_NAME,
    prepare_demo_data,
    read_demo_data,
)
from morm_explorer.demo_jobs import demo_data_line
from morm_explorer.errors import MormError
from morm_explorer.ui.text import plain

N_HH = 12  # rows per HH-RLHF subset and split
N_DEMO = N_HH // 2  # demo pairs per subset: the judge's sample takes its own from the rest


def _hh_rows(subset: str, split: str) -> list[dict]:
    """HH-RLHF rows: chosen/rejected dialogues sharing everything up to the last answer."""
    rows = []
    for i in range(N_HH):
        prompt = f"\n\nHuman: {subset} {split} question {i}: how do I fix my bike chain?"
        if subset.startswith("harmless"):
            good, bad = "I would rather not help with anything dangerous.", "Here is how to hurt."
        else:
            good, bad = "Clean it, oil it, then re-thread it link by link.", "No idea."
        rows.append({"chosen": f"{prompt}\n\nAssistant: {good}",
                     "rejected": f"{prompt}\n\nAssistant: {bad}"})
    return rows


def _pku_rows(split: str) -> list[dict]:
    return [{"prompt": f"{split} prompt {i}", "response_0": f"answer {i} zero",
             "response_1": f"answer {i} one", "prompt_source": "Alpaca3-70B",
             "is_response_0_safe": i % 2 == 0, "is_response_1_safe": True,
             "better_response_id": i % 2, "safer_response_id": 1 - i % 2} for i in range(4)]


def _helpsteer2_rows(split: str) -> list[dict]:
    return [{"prompt": f"{split} explain gravity {i}", "response": f"Mass attracts mass ({i}).",
             "helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1,
             "verbosity": i % 5} for i in range(3)]


def _aspect(rating: str) -> dict:
    return {"Rating": rating, "Rationale": "because", "Rationale For Rating": "r", "Type": ["1"]}


def _ultrafeedback_rows() -> list[dict]:
    rows = []
    for i in range(2):
        completions = [{"model": model, "response": f"{model} answer {i}",
                        "annotations": {"helpfulness": _aspect(str(r)), "honesty": _aspect("5"),
                                        "instruction_following": _aspect(str(r)),
                                        "truthfulness": _aspect("N/A")},
                        "fine-grained_score": float(r), "overall_score": 2.0 * r,
                        "custom_system_prompt": "", "principle": "helpfulness",
                        "critique": "ok"} for model, r in (("gpt-4", 4), ("alpaca-7b", 2))]
        rows.append({"source": "evol_instruct", "instruction": f"Write a haiku {i}.",
                     "models": ["gpt-4", "alpaca-7b"], "completions": completions,
                     "correct_answers": ["None"], "incorrect_answers": ["None"]})
    return rows


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory) -> dict[tuple[str, str | None], str]:
    """(hub name, data_dir) -> a DatasetDict folder written by `save_to_disk`."""
    from datasets import Dataset, DatasetDict

    root = tmp_path_factory.mktemp("hub")
    tables = {(HH_HUB_NAME, s): {sp: _hh_rows(s, sp) for sp in ("train", "test")}
              for s in ("harmless-base", "helpful-base")}
    tables[("PKU-Alignment/PKU-SafeRLHF", None)] = {sp: _pku_rows(sp) for sp in ("train", "test")}
    tables[("nvidia/HelpSteer2", None)] = {sp: _helpsteer2_rows(sp)
                                           for sp in ("train", "validation")}
    tables[("openbmb/UltraFeedback", None)] = {"train": _ultrafeedback_rows()}
    folders = {}
    for (name, data_dir), splits in tables.items():
        folder = root / f"{name.replace('/', '--')}-{data_dir}"
        DatasetDict({sp: Dataset.from_list(rows) for sp, rows in splits.items()}).save_to_disk(
            str(folder))
        folders[(name, data_dir)] = str(folder)
    return folders


@pytest.fixture
def fake_hub(monkeypatch, hub_folders) -> list[dict]:
    """`hub.load_from_hub` reads the folders above; returns the calls it received."""
    import datasets

    calls: list[dict] = []

    def load(name, *, data_dir, split, revision, cache_dir):
        calls.append({"name": name, "data_dir": data_dir, "split": split,
                      "revision": revision, "cache_dir": cache_dir})
        return datasets.load_from_disk(hub_folders[(name, data_dir)])[split]

    monkeypatch.setattr(hub, "load_from_hub", load)
    return calls


@pytest.fixture
def dead_hub(monkeypatch) -> list[str]:
    """`hub.load_from_hub` fails as `datasets` does when the hub does not answer."""
    calls: list[str] = []

    def load(name, **kw):
        calls.append(name)
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(hub, "load_from_hub", load)
    return calls


# -- hf:NAME sources ---------------------------------------------------------------------------


def test_cli_imports_an_hh_subset_by_hub_name(ws, fake_hub, capsys):
    rc = main(["--workspace", str(ws.root), "data", "import", "hf:Anthropic/hh-rlhf",
               "--preset", "hh-rlhf", "--subset", "harmless-base", "--revision", "abc123",
               "--limit", "5", "--name", "hh-harmless"])
    assert rc == 0, capsys.readouterr().err
    assert fake_hub == [{"name": "Anthropic/hh-rlhf", "data_dir": "harmless-base",
                         "split": "train", "revision": "abc123",
                         "cache_dir": str(ws.root / "cache" / "hf-datasets")}]
    (info,) = ws.list_datasets()
    assert (info.name, info.n_records, info.objectives) == ("hh-harmless", 5, ["harmless"])
    assert info.source == ("hf:Anthropic/hh-rlhf (subset harmless-base, split train, revision "
                           "abc123, 5 of 12 rows sampled with seed 0)")
    assert "from hf:Anthropic/hh-rlhf (subset harmless-base" in capsys.readouterr().out
    records = ws.load_dataset("hh-harmless").records
    assert all(r["prompt"].startswith("Human: harmless-base train question") for r in records)
    assert all(r["response_a"].startswith("I would rather not") for r in records)


def test_the_objective_comes_from_the_subset_and_split_and_sample_are_kept(ws, fake_hub):
    kw = {"preset": "hh-rlhf", "subset": "helpful-base", "split": "test", "limit": 4,
          "cache_dir": ws.root / "cache"}
    first = load_preference_data("hf:Anthropic/hh-rlhf", **kw)
    again = load_preference_data("hf:Anthropic/hh-rlhf", **kw)
    other = load_preference_data("hf:Anthropic/hh-rlhf", **kw, seed=1)
    assert first.objectives == ["helpful"] and len(first) == 4
    assert first.records == again.records  # the sample is seeded
    assert {r["prompt"] for r in first.records} != {r["prompt"] for r in other.records}
    assert all("helpful-base test question" in r["prompt"] for r in first.records)
    assert [c["split"] for c in fake_hub] == ["test"] * 3
    whole = load_preference_data("hf:Anthropic/hh-rlhf", preset="hh-rlhf",
                                 subset="helpful-base")
    assert len(whole) == N_HH and whole.source.endswith("(subset helpful-base, split train, "
                                                        "12 rows)")


def test_subsample_is_seeded_sorted_and_complete_when_the_limit_is_large():
    a = hub.subsample(1000, 10, seed=3)
    assert a == hub.subsample(1000, 10, seed=3) and a == sorted(set(a)) and len(a) == 10
    assert a != hub.subsample(1000, 10, seed=4)
    assert hub.subsample(5, 5) is None and hub.subsample(5, None) is None
    with pytest.raises(MormError, match="limit"):
        hub.subsample(5, 0)


@pytest.mark.parametrize(("name", "preset", "split", "expected"), [
    ("PKU-Alignment/PKU-SafeRLHF", "pku-saferlhf", "test",
     {"kind": "pairwise", "n": 4, "objectives": ["helpful", "harmless"],
      "prompt": "test prompt 0"}),
    ("nvidia/HelpSteer2", "helpsteer2", "validation",
     {"kind": "ratings", "n": 3, "objectives": ["helpfulness", "correctness", "coherence",
                                                "complexity", "verbosity"],
      "prompt": "validation explain gravity 0"}),
    ("openbmb/UltraFeedback", "ultrafeedback", None,
     {"kind": "ratings", "n": 4, "objectives": ["helpfulness", "honesty",
                                                "instruction_following"],
      "prompt": "Write a haiku 0."}),
])
def test_each_public_preset_loads_by_hub_name(ws, fake_hub, name, preset, split, expected):
    ds = load_preference_data(f"hf:{name}", preset=preset, split=split,
                              cache_dir=ws.root / "cache" / "hf-datasets")
    assert (ds.kind, len(ds), ds.objectives) == (expected["kind"], expected["n"],
                                                 expected["objectives"])
    assert ds.records[0]["prompt"] == expected["prompt"]
    assert fake_hub == [{"name": name, "data_dir": None, "split": split or "train",
                         "revision": None,
                         "cache_dir": str(ws.root / "cache" / "hf-datasets")}]
    assert ds.source.startswith(f"hf:{name} (split {split or 'train'}")


def test_an_unreachable_hub_is_one_clear_message(ws, dead_hub, capsys):
    rc = main(["--workspace", str(ws.root), "data", "import", "hf:Anthropic/hh-rlhf",
               "--preset", "hh-rlhf", "--subset", "harmless-base", "--name", "hh"])
    err = capsys.readouterr().err
    assert rc == 2 and dead_hub == ["Anthropic/hh-rlhf"]
    assert err.startswith("error: hf:Anthropic/hh-rlhf: the Hugging Face hub could not be "
                          "reached")
    assert "save_to_disk" in err and "Traceback" not in err
    assert ws.list_datasets() == []


def test_a_missing_hub_dataset_is_not_called_unreachable(monkeypatch):
    def load(name, **kw):
        raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")

    monkeypatch.setattr(hub, "load_from_hub", load)
    with pytest.raises(MormError) as err:
        load_preference_data("hf:nobody/nothing", preset="helpsteer2")
    assert "doesn't exist" in str(err.value) and "could not be reached" not in str(err.value)


def test_offline_the_real_datasets_call_fails_at_once_with_the_message(tmp_path):
    # No patch: the real `datasets.load_dataset` with HF_HUB_OFFLINE=1 (set for all tests)
    # takes the arguments and reports the hub as unreachable without any network wait.
    start = time.perf_counter()
    with pytest.raises(MormError, match="could not be reached") as err:
        load_preference_data("hf:Anthropic/hh-rlhf", preset="hh-rlhf", subset="harmless-base",
                             revision="main", cache_dir=tmp_path / "hf-datasets")
    assert err.value.file == "hf:Anthropic/hh-rlhf"
    assert time.perf_counter() - start < 60  # the import of datasets; no retries


def test_bad_hub_names_and_options_are_refused(tmp_path):
    with pytest.raises(MormError, match="hf:OWNER/NAME"):
        load_preference_data("hf:../etc", preset="hh-rlhf", objective="helpful")
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response_a": "a", "response_b": "b",
                                "labels": {"helpful": "a"}}) + "\n")
    with pytest.raises(MormError, match="hub datasets"):
        load_preference_data(path, subset="harmless-base")


# -- the demo's data ---------------------------------------------------------------------------


@pytest.fixture
def hub_answers(monkeypatch):
    """The hub counts as online and answering (the loader itself is patched separately)."""
    import morm_explorer.demo_data as demo_data

    monkeypatch.setattr(demo_data, "hub_offline", lambda: False)
    monkeypatch.setattr(demo_data, "hub_reachable", lambda timeout=5.0: True)


def test_the_demo_fetches_and_merges_real_hh_rlhf(ws, fake_hub, hub_answers):
    ensure_demo(ws)
    data = prepare_demo_data(ws, pairs=8)
    assert data.real and data.dataset == DEMO_REAL_DATASET
    assert [(c["data_dir"], c["split"]) for c in fake_hub] == 2 * [("helpful-base", "train"),
                                                                  ("harmless-base", "train")]
    assert {c["cache_dir"] for c in fake_hub} == {str(ws.root / "cache" / "hf-datasets")}
    ds = ws.load_dataset(DEMO_REAL_DATASET)
    assert len(ds) == 16 and ds.objectives == ["helpful", "harmless"]
    assert len({r["id"] for r in ds.records}) == 16
    info = {d.name: d for d in ws.list_datasets()}[DEMO_REAL_DATASET]
    for part in ("Anthropic HH-RLHF (MIT licence)", "hf:Anthropic/hh-rlhf (subset helpful-base, "
                 "split train, 8 of 12 rows sampled with seed 0): 8 pairs",
                 "subset harmless-base"):
        assert part in info.source
    assert read_demo_data(ws) == data and data.judge_dataset == DEMO_REAL_JUDGE_DATASET
    assert prepare_demo_data(ws, pairs=8).real and len(fake_hub) == 4  # kept, not re-fetched


def test_the_judges_real_sample_shares_no_prompt_with_the_reward_models(ws, fake_hub,
                                                                        hub_answers):
    ensure_demo(ws)
    prepare_demo_data(ws, pairs=N_DEMO)
    rm, judge = (ws.load_dataset(n).records for n in (DEMO_REAL_DATASET, DEMO_REAL_JUDGE_DATASET))
    assert len(rm) == len(judge) == 2 * N_DEMO  # the judge's: the rows the sample left
    assert not {r["prompt"] for r in rm} & {r["prompt"] for r in judge}
    info = {d.name: d for d in ws.list_datasets()}[DEMO_REAL_JUDGE_DATASET]
    assert "sharing no prompt with demo-hh-rlhf" in info.source
    assert f"{N_DEMO} pairs ({N_HH - N_DEMO} sharing a prompt left out)" in info.source


def test_no_held_out_rows_for_the_judge_leaves_the_demo_on_built_in_data(ws, fake_hub,
                                                                        hub_answers):
    ensure_demo(ws)
    data = prepare_demo_data(ws, pairs=N_HH)  # the reward model's sample takes every row
    assert not data.real and "no held-out rows for the judge" in data.reason
    assert (data.dataset, data.judge_dataset) == ("demo-preferences", "demo-judge-preferences")


def test_an_unreachable_hub_leaves_the_demo_on_built_in_data(ws, dead_hub, hub_answers):
    ensure_demo(ws)
    data = prepare_demo_data(ws, pairs=8)
    assert not data.real and data.dataset == "demo-preferences" and dead_hub
    assert "could not be reached" in data.reason
    assert DEMO_REAL_DATASET not in {d.name for d in ws.list_datasets()}
    line = demo_data_line(ws)
    assert line.startswith("The demo reward model demo-rm is being trained on the built-in "
                           "demo data (demo-preferences)")
    assert "could not be reached" in line


def test_offline_or_switched_off_the_demo_never_asks_the_hub(ws, monkeypatch, dead_hub):
    import morm_explorer.demo_data as demo_data

    def never(timeout=5.0):
        raise AssertionError("probed the hub")

    monkeypatch.setattr(demo_data, "hub_reachable", never)
    ensure_demo(ws)
    start = time.perf_counter()
    data = prepare_demo_data(ws)  # HF_HUB_OFFLINE=1, as in every test
    assert not data.real and "HF_HUB_OFFLINE" in data.reason
    assert time.perf_counter() - start < 5
    monkeypatch.setattr(demo_data, "hub_offline", lambda: False)
    monkeypatch.setenv("MORM_DEMO_REAL", "0")
    data = prepare_demo_data(ws)
    assert not data.real and "MORM_DEMO_REAL=0" in data.reason and dead_hub == []


def test_the_reward_model_and_the_overview_say_it_was_real_data(ws, fake_hub, hub_answers,
                                                              tiny_bert):
    from streamlit.testing.v1 import AppTest

    from morm_explorer.reward.config import read_config
    from morm_explorer.reward.train import train_reward_model
    from morm_explorer.walkthrough import walkthrough
    from tests.conftest import REPO
    from tests.test_reward import tiny_cfg

    ensure_demo(ws)
    data = prepare_demo_data(ws, pairs=N_DEMO)
    cfg = tiny_cfg(data.dataset, tiny_bert, epochs=2, name="demo-rm", device="cpu")
    train_reward_model(cfg, ws.root / "reward_models" / "demo-rm", ws)
    config = read_config(ws.root / "reward_models" / "demo-rm")
    assert config["data"]["source"] == data.source  # the model records where its data came from
    assert "hf:Anthropic/hh-rlhf" in config["data"]["source"]
    line = demo_data_line(ws)
    assert line.startswith("The demo reward model demo-rm was trained on real data (")
    assert data.source in line
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()  # opens Overview
    assert not at.exception
    assert any(c.value == plain(line) for c in at.caption)  # shown as text, escaped
    data_step = walkthrough(ws)[0]  # the walk-through shows the data the model learned from
    assert data_step.facts["records"] == 2 * N_DEMO and data_step.facts["conflict"] is None


@pytest.mark.slow
def test_the_demo_build_trains_on_real_data_and_weights_only_its_objectives(
        ws, fake_hub, hub_answers, tiny_bert, tmp_path):
    from morm_explorer.demo_jobs import JUDGE, POLICIES, RM, PrepareDemoJob
    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.reward.config import read_config
    from morm_explorer.reward.report import judge_training_note
    from tests.test_policy import _save_tiny

    ensure_demo(ws)
    spec = PrepareDemoJob(real_pairs=N_DEMO, backbone=tiny_bert, max_length=64, rm_epochs=2,
                          policy=_save_tiny(tmp_path / "policy"), samples=1, max_new_tokens=4,
                          rl_steps=1, rl_batch=2, group_size=2, compare_prompts=2,
                          compare_samples=1, device="cpu")
    info = run_inline(ws, spec)
    assert info.status == "succeeded", info.error
    for name, dataset in ((JUDGE, DEMO_REAL_JUDGE_DATASET), (RM, DEMO_REAL_DATASET)):
        config = read_config(ws.root / "reward_models" / name)
        assert config["training"]["dataset"] == dataset
        assert config["model"]["objectives"] == ["helpful", "harmless"]
    disjoint, note = judge_training_note(ws, RM, JUDGE)  # what Compare says of the demo judge
    assert disjoint and "disjoint" in note and DEMO_REAL_JUDGE_DATASET in note
    for name in POLICIES:  # the built-in weights on honest are dropped: HH-RLHF has none
        manifest = json.loads((ws.root / "policies" / name / "morm_ppo.json").read_text())
        assert set(manifest["weights"]["weights"]) == {"helpful", "harmless"}
    assert "trained on real data" in demo_data_line(ws)
