"""Loading from every supported format, with stop/drop semantics and id handling."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from morm_explorer.data.loaders import (
    inspect_upload,
    load_preference_data,
    records_to_frame,
    validate_file,
)
from morm_explorer.data.readers import detect_format
from morm_explorer.errors import MormError
from tests.conftest import good_pair


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_roundtrip_and_objectives(tmp_path):
    rows = [good_pair(i) for i in range(3)]
    rows[2]["labels"] = {"honest": "b"}
    ds = load_preference_data(write_jsonl(tmp_path / "d.jsonl", rows))
    assert ds.kind == "pairwise" and len(ds) == 3
    assert ds.objectives == ["helpful", "harmless", "honest"]
    frame = ds.to_frame()
    assert list(frame["label:honest"].fillna("-")) == ["-", "-", "b"]


def test_gzip_jsonl_and_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(good_pair(1)) + "\n\n" + json.dumps(good_pair(2)) + "\n")
    ds = load_preference_data(path)
    assert [r["id"] for r in ds.records] == ["p1", "p2"]


def test_stop_raises_with_line_and_drop_counts(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [good_pair(1), good_pair(2, prompt=""),
                                              good_pair(3)])
    with pytest.raises(MormError) as e:
        load_preference_data(path)
    assert "d.jsonl:2: field 'prompt'" in str(e.value)
    ds = load_preference_data(path, on_error="drop")
    assert len(ds) == 2 and ds.report.n_bad_rows == 1


def test_missing_ids_assigned_uniquely(tmp_path):
    rows = [{k: v for k, v in good_pair(i).items() if k != "id"} for i in range(3)]
    ds = load_preference_data(write_jsonl(tmp_path / "x.jsonl", rows))
    ids = [r["id"] for r in ds.records]
    assert len(set(ids)) == 3 and ids[0] == "x-1-0"


def test_csv_with_label_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        "id,prompt,response_a,response_b,label_helpful,label_harmless,category\n"
        'c1,"Hi, there",Hello!,Go away.,a,,chat\n'
        "c2,Q,A1,A2,b,tie,\n", encoding="utf-8")
    ds = load_preference_data(path)
    assert ds.records[0]["labels"] == {"helpful": "a"}  # empty cell = not labelled
    assert ds.records[0]["prompt"] == "Hi, there"
    assert ds.records[1]["labels"] == {"helpful": "b", "harmless": "tie"}
    assert "category" not in ds.records[1]


def test_csv_ratings_and_bad_utf8(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("prompt,response,rating_helpful,rating_honest\nQ,A,3.5,\nQ,B,1,2\n")
    ds = load_preference_data(path)
    assert ds.kind == "ratings"
    assert ds.records[0]["ratings"] == {"helpful": 3.5}
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"prompt,response,rating_h\nQ,A,1\nQ,\xff,2\n")
    _, report = validate_file(bad)
    assert report.errors[0].line == 3 and "UTF-8" in report.errors[0].message


def test_parquet_struct_and_flat(tmp_path):
    rows = [good_pair(1), good_pair(2, labels={"helpful": "b"})]
    path = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(path)
    ds = load_preference_data(path)
    assert [r["labels"] for r in ds.records] == [{"helpful": "a", "harmless": "tie"},
                                                 {"helpful": "b"}]


def test_hf_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [good_pair(i) for i in range(4)]
    flat = [{**{k: v for k, v in r.items() if k != "labels"},
             "label_helpful": r["labels"]["helpful"]} for r in rows]
    datasets.Dataset.from_list(flat).save_to_disk(tmp_path / "hfds")
    assert detect_format(tmp_path / "hfds") == "hf"
    ds = load_preference_data(tmp_path / "hfds")
    assert len(ds) == 4 and ds.objectives == ["helpful"]


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(MormError, match="cannot tell the format"):
        load_preference_data(tmp_path / "data.txt")
    with pytest.raises(MormError, match="no such file"):
        load_preference_data(tmp_path / "nope.jsonl")


def test_upload_report_names_uploaded_file():
    data = (json.dumps(good_pair(1)) + "\n" + json.dumps(good_pair(2, labels=3)) + "\n").encode()
    ds, report = inspect_upload("../../etc/my data.jsonl", data, on_error="drop")
    assert len(ds) == 1
    assert report.issues[0].file == "../../etc/my data.jsonl" and report.issues[0].line == 2
    ds, _ = inspect_upload("my.jsonl", data, on_error="stop")
    assert ds is None


def test_records_to_frame_ratings():
    recs = [{"id": "1", "prompt": "p", "response": "r", "ratings": {"h": 1.0}}]
    frame = records_to_frame(recs, "ratings")
    assert list(frame.columns) == ["id", "category", "prompt", "response", "rating:h"]
