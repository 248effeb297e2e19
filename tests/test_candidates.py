"""Candidate sets: reading with errors by file/line/field, storage round trips, prompts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from morm_explorer.data.candidates import (
    candidate_set_info,
    delete_candidate_set,
    from_records,
    list_candidate_sets,
    load_candidate_set,
    read_candidates,
    read_prompts,
    save_candidate_set,
)
from morm_explorer.errors import MormError


def cand(pid="p1", response="Boil it for nine minutes.", **over) -> dict:
    return {"prompt_id": pid, "prompt": f"Prompt {pid}?", "response": response,
            "source": "policy-a", **over}


def write_jsonl(path, rows) -> str:
    path.write_bytes(b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return str(path)


def test_reads_jsonl_csv_parquet_alike(tmp_path):
    rows = [cand("p1"), cand("p1", "Ten minutes."), cand("p2", category="howto")]
    a = read_candidates(write_jsonl(tmp_path / "c.jsonl", rows))
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    b = read_candidates(tmp_path / "c.csv")
    pd.DataFrame(rows).to_parquet(tmp_path / "c.parquet", index=False)
    c = read_candidates(tmp_path / "c.parquet")
    assert len(a) == len(b) == len(c) == 3
    assert a.fingerprint() == b.fingerprint() == c.fingerprint()
    assert a.n_prompts == 2 and a.sources == ["policy-a"]
    assert a.prompts()["n"].tolist() == [2, 1]


def test_every_defect_is_reported_with_line_and_field(tmp_path):
    rows = [
        cand("p1"),
        b"{not json",
        {"prompt": "x", "response": "y"},  # missing prompt_id
        cand(7, response=3),  # int prompt_id is fine, a number as response is not
        cand("p3", prompt=""),  # empty prompt
        b"\xff\xfe bad bytes",
        cand("p1", prompt="A different text for p1"),  # prompt_id conflict
        cand("p4", meta=[1]),  # meta not an object
        cand("p5", source=5),  # wrong type
        cand("p6", response=""),  # a warning, kept
        cand("p7", extra=1),  # unknown field: a warning
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(MormError) as e:
        read_candidates(path)
    text = str(e.value)
    for needle in ("bad.jsonl:2", ":3: field 'prompt_id' error: missing",
                   ":4: field 'response' error: expected a string, got int",
                   ":5: field 'prompt' error: empty prompt", ":6:", "invalid UTF-8",
                   ":7: field 'prompt' error: prompt_id 'p1' has a different prompt text at "
                   "line 1", ":8: field 'meta'", ":9: field 'source'"):
        assert needle in text, needle
    kept = read_candidates(path, drop_bad=True)
    assert kept.frame["prompt_id"].tolist() == ["p1", "p6", "p7"]
    assert kept.report.n_rows == 11 and kept.report.n_valid == 3
    warned = {(i.line, i.field) for i in kept.report.warnings}
    assert (10, "response") in warned and (11, "extra") in warned


def test_empty_and_huge_and_missing_files(tmp_path):
    with pytest.raises(MormError, match="no valid candidates"):
        read_candidates(write_jsonl(tmp_path / "e.jsonl", []))
    with pytest.raises(MormError, match="limit is 50"):
        read_candidates(write_jsonl(tmp_path / "h.jsonl", [cand(response="x" * 51)]),
                        max_chars=50)
    with pytest.raises(MormError, match="no such file"):
        read_candidates(tmp_path / "missing.jsonl")


def test_default_source_is_the_file_name(tmp_path):
    row = cand()
    del row["source"]
    cset = read_candidates(write_jsonl(tmp_path / "policy-b.jsonl", [row]))
    assert cset.sources == ["policy-b"]


def test_store_load_list_overwrite_delete(ws):
    cset = from_records([cand("p1"), cand("p1", "B", meta={"k": 1}), cand("p2")], "code")
    info = save_candidate_set(ws, "my set/../x", cset)
    assert info.name == "my-set-..-x"  # sanitized: never a path
    back = load_candidate_set(ws, info.name)
    assert back.fingerprint() == cset.fingerprint() == info.fingerprint
    assert back.records()[1]["meta"] == {"k": 1}
    assert [c.name for c in list_candidate_sets(ws)] == [info.name]
    with pytest.raises(MormError, match="exists"):
        save_candidate_set(ws, info.name, cset)
    bigger = from_records([cand("p9")] * 2, "code")
    save_candidate_set(ws, info.name, bigger, overwrite=True)
    assert candidate_set_info(ws, info.name).n_candidates == 2
    delete_candidate_set(ws, info.name)
    assert list_candidate_sets(ws) == []
    with pytest.raises(MormError, match="no candidate set"):
        load_candidate_set(ws, info.name)


def test_a_failed_save_keeps_the_stored_set(ws, monkeypatch):
    good = from_records([cand("p1")], "code")
    save_candidate_set(ws, "s", good)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError):
        save_candidate_set(ws, "s", from_records([cand("p2")], "code"), overwrite=True)
    monkeypatch.undo()
    assert load_candidate_set(ws, "s").fingerprint() == good.fingerprint()
    assert not [p for p in (ws.root / "candidates").iterdir() if p.name.startswith(".")]


def test_read_prompts(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi?"}, {"prompt": "Yo", "prompt_id":
                                                                  "x", "category": "c"}])
    assert read_prompts(path) == [{"prompt_id": "p1", "prompt": "Hi?", "category": None},
                                  {"prompt_id": "x", "prompt": "Yo", "category": "c"}]
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "a", "prompt_id": "x"},
                                             {"prompt": "b", "prompt_id": "x"}])
    with pytest.raises(MormError, match="line 2, field 'prompt_id': duplicate"):
        read_prompts(bad)
    with pytest.raises(MormError, match="line 1, field 'prompt'"):
        read_prompts(write_jsonl(tmp_path / "c.jsonl", [{"prompt": " "}]))
