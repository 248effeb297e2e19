"""The workspace: safe names, atomic writes, the database, dataset round trips."""

from __future__ import annotations

import json
import os
import sqlite3
from unittest import mock

import pytest

from morm_explorer.data.loaders import load_preference_data
from morm_explorer.errors import MormError
from morm_explorer.workspace import Workspace, atomic_write_bytes, sanitize_name
from tests.conftest import good_pair


@pytest.mark.parametrize("raw, safe", [
    ("my data", "my-data"), ("../../etc/passwd", "etc-passwd"), (".hidden", "hidden"),
    ("a/b\\c", "a-b-c"), ("ok_name-1.2", "ok_name-1.2"), ("héllo wörld", "h-llo-w-rld"),
])
def test_sanitize_name(raw, safe):
    assert sanitize_name(raw) == safe


@pytest.mark.parametrize("bad", ["", "..", "///", "x" * 65, None])
def test_sanitize_name_rejects(bad):
    with pytest.raises(MormError):
        sanitize_name(bad)


def test_artifact_dir_stays_inside(ws):
    assert ws.artifact_dir("datasets", "../../x").parent == (ws.root / "datasets").resolve()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_bytes(path, b"old")
    with mock.patch("os.replace", side_effect=OSError("disk full")), \
            pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.txt"]  # no temp file left behind


def test_database_is_wal_and_versioned(ws):
    con = ws.connect()
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] >= 1
    Workspace(ws.root)  # re-opening migrates nothing twice
    assert ws.connect().execute("PRAGMA user_version").fetchone()[0] >= 1


def test_dataset_save_load_roundtrip(ws, tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(good_pair(i)) + "\n" for i in range(3)))
    ds = load_preference_data(src)
    info = ws.save_dataset("my set", ds)
    assert info.name == "my-set" and info.objectives == ["helpful", "harmless"]
    assert [d.name for d in ws.list_datasets()] == ["my-set"]
    back = ws.load_dataset("my-set")
    assert back.records == ds.records and back.fingerprint() == ds.fingerprint()


def test_dataset_overwrite_refused_and_nothing_lost(ws, tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps(good_pair(1)) + "\n")
    ws.save_dataset("d", load_preference_data(src))
    src.write_text(json.dumps(good_pair(2)) + "\n")
    with pytest.raises(MormError, match="exists"):
        ws.save_dataset("d", load_preference_data(src))
    assert ws.load_dataset("d").records[0]["id"] == "p1"
    ws.save_dataset("d", load_preference_data(src), overwrite=True)
    assert ws.load_dataset("d").records[0]["id"] == "p2"
    ws.delete_dataset("d")
    assert ws.list_datasets() == []


def test_corrupt_database_is_a_clear_error(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    (root / "morm.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(MormError, match="unreadable"):
        Workspace(root)


def test_missing_dataset(ws):
    with pytest.raises(MormError, match="no dataset named"):
        ws.dataset_path("nope")
    assert isinstance(ws.connect(), sqlite3.Connection)


def test_a_dataset_imported_with_a_higher_max_chars_reloads(ws, tmp_path, capsys):
    from morm_explorer.cli import main
    from morm_explorer.data.schema import MAX_TEXT_CHARS

    long_text = "y" * (MAX_TEXT_CHARS + 50_000)
    src = tmp_path / "long.jsonl"
    src.write_text(json.dumps(good_pair(0, response_a=long_text)) + "\n")
    assert main(["--workspace", str(ws.root), "data", "import", str(src), "--name", "long",
                 "--max-chars", str(2 * MAX_TEXT_CHARS)]) == 0
    info = json.loads((ws.root / "datasets" / "long" / "info.json").read_text())
    assert info["max_chars"] == 2 * MAX_TEXT_CHARS
    assert ws.load_dataset("long").records[0]["response_a"] == long_text
    del info["max_chars"]  # a dataset saved before the limit was stored: the default
    (ws.root / "datasets" / "long" / "info.json").write_text(json.dumps(info))
    assert ws.dataset_max_chars("long") == MAX_TEXT_CHARS
    with pytest.raises(MormError, match=f"the limit is {MAX_TEXT_CHARS:,}"):
        ws.load_dataset("long")
