"""The evaluations a reward-model folder keeps and where its training data came from: the
stored file, the table, the judge's disjointness, and `morm rm eval` -> `morm rm list`."""

from __future__ import annotations

import json

import pytest

from morm_explorer.reward.evaluations import (
    EVALUATIONS,
    accuracy_cell,
    evaluation_entry,
    evaluations_table,
    store_evaluation,
    stored_evaluations,
    training_overlap,
)

METRICS = {"objectives": {"helpful": {"accuracy": 0.9125, "ci_low": 0.851, "ci_high": 0.96,
                                      "n": 60, "loss": 0.3, "calibration": []}},
           "n_pairs": 64}


def test_entry_keeps_accuracy_interval_and_size():
    e = evaluation_entry("hh-test", METRICS, source="/data/hh.jsonl", split="whole file",
                         date="2025-01-02T03:04:05+00:00")
    assert e == {"data": "hh-test", "source": "/data/hh.jsonl", "fingerprint": "",
                 "split": "whole file", "pairs": 64, "date": "2025-01-02T03:04:05+00:00",
                 "objectives": {"helpful": {"accuracy": 0.9125, "ci_low": 0.851,
                                            "ci_high": 0.96, "n": 60}}}
    assert accuracy_cell(e["objectives"]["helpful"]) == "91.2% [85.1, 96.0] n=60"


def test_store_replaces_the_same_data_and_keeps_the_rest(tmp_path):
    store_evaluation(tmp_path, evaluation_entry("a", METRICS, date="d1"))
    store_evaluation(tmp_path, evaluation_entry("b", METRICS, date="d2"))
    again = {**METRICS, "n_pairs": 10}
    entries = store_evaluation(tmp_path, evaluation_entry("a", again, date="d3"))
    assert [(e["data"], e["pairs"], e["date"]) for e in entries] == [("b", 64, "d2"),
                                                                     ("a", 10, "d3")]
    assert json.loads((tmp_path / EVALUATIONS).read_text()) == entries
    assert not list(tmp_path.glob("*.tmp"))  # written through a renamed temp file


def test_a_folder_from_before_the_file_gets_its_training_evaluation(tmp_path):
    config = {"created_at": 0.0, "training": {"dataset": "/x/demo.jsonl", "seed": 0},
              "data": {"source": "/x/demo.jsonl", "fingerprint": "f1"},
              "metrics": {**METRICS, "n_test_pairs": 64}}
    (first,) = stored_evaluations(tmp_path, config)
    assert first["data"] == "demo.jsonl held-out split" and first["pairs"] == 64
    assert first["split"] == "held-out" and first["date"].startswith("1970-01-01")
    store_evaluation(tmp_path, evaluation_entry("hh", METRICS))
    assert [e["data"] for e in stored_evaluations(tmp_path, config)] == [
        "demo.jsonl held-out split", "hh"]


def test_table_one_row_per_model_and_data():
    models = [{"name": "rm", "training_data": {"name": "demo", "source": "built-in demo"},
               "evaluations": [
                   evaluation_entry("demo held-out split", METRICS, date="2025-01-02T03:04:05"),
                   evaluation_entry("/a/b/hh/test.jsonl", {"objectives": {"harmless": {
                       "accuracy": 0.6, "ci_low": 0.58, "ci_high": 0.62, "n": 2312}},
                       "n_pairs": 2312}, date="2025-02-03T00:00:00")]}]
    table = evaluations_table(models)
    assert list(table.columns) == ["model", "trained on", "data", "pairs", "helpful",
                                   "harmless", "date"]
    assert table["data"].tolist() == ["demo held-out split", "hh/test.jsonl"]
    assert table["trained on"].tolist() == ["demo (built-in demo)"] * 2
    assert table["harmless"].tolist() == ["", "60.0% [58.0, 62.0] n=2312"]
    assert table["date"].tolist() == ["2025-01-02 03:04", "2025-02-03 00:00"]
    assert evaluations_table([]).empty


def _data(name, fingerprint, seed=0, test=0.1):
    return {"name": name, "source": f"synth {name}", "fingerprint": fingerprint, "seed": seed,
            "val_fraction": 0.1, "test_fraction": test}


def test_judge_disjointness():
    ok, note = training_overlap(_data("demo", "f1"), _data("judge-data", "f2"))
    assert ok and note.startswith("The judge was trained on judge-data (synth judge-data); the "
                                  "reward model on demo (synth demo).")
    same, note = training_overlap(_data("demo", "f1"), _data("demo", "f1", seed=1))
    assert not same and "split seeds 0 and 1" in note and "not held out" in note
    renamed, _ = training_overlap(_data("demo", "f1"), _data("copy", "f1"))
    assert not renamed  # the same contents under another name
    same, note = training_overlap(_data("demo", "f1"), _data("demo", "f1"))
    assert not same and "the same split" in note


# -- `morm rm eval` stores, `morm rm list` shows -----------------------------------------------


@pytest.fixture
def trained(ws, tiny_bert, tmp_path):
    from morm_explorer.data.loaders import load_preference_data
    from morm_explorer.reward.train import train_reward_model
    from tests.test_reward import tiny_cfg, tiny_pairs

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs()))
    data = load_preference_data(path)
    data.source = "tiny pairs written by the test"
    ws.save_dataset("tiny", data)
    other = tmp_path / "other" / "pairs-2.jsonl"
    other.parent.mkdir()
    other.write_text("".join(json.dumps(r) + "\n" for r in tiny_pairs(40, seed=3)))
    train_reward_model(tiny_cfg("tiny", tiny_bert, epochs=3), ws.root / "reward_models" / "t",
                       workspace=ws)
    return ws, other


def test_rm_eval_stores_and_rm_list_shows(trained, capsys):
    from morm_explorer.cli import main

    ws, other = trained
    folder = ws.root / "reward_models" / "t"
    assert [e["data"] for e in stored_evaluations(folder)] == ["tiny held-out split"]
    assert main(["--workspace", str(ws.root), "rm", "eval", "t", "--data", str(other)]) == 0
    assert f"stored with the model's evaluations as {str(other.resolve())!r}" in \
        capsys.readouterr().out
    entries = stored_evaluations(folder)
    assert [e["data"] for e in entries] == ["tiny held-out split", str(other.resolve())]
    assert entries[1]["pairs"] == 40 and entries[1]["split"] == "whole file"
    assert sum(o["n"] for o in entries[1]["objectives"].values()) == 40
    # the same data again replaces its entry; the training data again replaces the held-out one
    main(["--workspace", str(ws.root), "rm", "eval", "t", "--data", str(other), "--json"])
    main(["--workspace", str(ws.root), "rm", "eval", "t", "--data", "tiny", "--json"])
    capsys.readouterr()
    assert [e["data"] for e in stored_evaluations(folder)] == [str(other.resolve()),
                                                               "tiny held-out split"]
    assert main(["--workspace", str(ws.root), "rm", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "  trained on tiny (tiny pairs written by the test)"
    assert out[2].startswith("  evaluated on other/pairs-2.jsonl (40 pairs, ")
    assert out[3].startswith("  evaluated on tiny held-out split (") and "helpful" in out[3]


def test_a_damaged_file_hides_evaluations_not_the_model(trained):
    from morm_explorer.reward.report import list_reward_models

    ws, _ = trained
    (ws.root / "reward_models" / "t" / EVALUATIONS).write_text("{not json")
    (row,) = list_reward_models(ws)
    assert [e["data"] for e in row["evaluations"]] == ["tiny held-out split"]
    assert accuracy_cell({"accuracy": float("nan"), "n": 0}) == "– n=0"
