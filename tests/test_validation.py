"""Row-level validation: every defect is reported with its line and field."""

from __future__ import annotations

import math

from morm_explorer.data.loaders import validate_file
from morm_explorer.data.validation import check_record
from tests.conftest import MAX_CHARS_FOR_DEFECTS, good_pair, write_defect_file


def test_good_record_is_canonical():
    rec, issues = check_record(good_pair(1, labels={"helpful": "A ", "honest": None}),
                               "pairwise", file="f", line=1)
    assert issues == []
    assert rec["labels"] == {"helpful": "a"}  # null = not annotated; labels normalised
    assert rec["id"] == "p1" and rec["category"] == "howto"


def test_every_defect_reported_with_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    expected = write_defect_file(path)
    records, report = validate_file(path, max_chars=MAX_CHARS_FOR_DEFECTS)
    found = {(i.line, i.field, i.severity) for i in report.issues}
    for line, kind, fld, sev in expected:
        assert (line, fld, sev) in found, f"{kind} not reported at line {line} ({fld})"
    # Only the two good lines and the warning-only lines survive.
    assert [r["id"] for r in records] == ["p0", "p14", "p15", "p99"]
    assert report.n_rows == len(expected) + 2
    assert not report.ok


def test_ratings_nan_inf_and_types():
    row = {"prompt": "p", "response": "r",
           "ratings": {"helpful": math.nan, "honest": math.inf, "harmless": "4", "ok": 3}}
    rec, issues = check_record(row, "ratings", file="f", line=7)
    assert rec is None
    msgs = {i.field: i.message for i in issues}
    assert "NaN" in msgs["ratings.helpful"]
    assert "infinite" in msgs["ratings.honest"]
    assert "expected a number" in msgs["ratings.harmless"]
    assert all(i.line == 7 for i in issues)


def test_bool_is_not_a_rating():
    _, issues = check_record({"prompt": "p", "response": "r", "ratings": {"h": True}},
                             "ratings", file="f", line=1)
    assert issues and issues[0].field == "ratings.h"


def test_issue_text_names_file_line_field():
    _, issues = check_record(good_pair(1, prompt=3), "pairwise", file="data.jsonl", line=12)
    assert str(issues[0]) == "data.jsonl:12: field 'prompt' error: expected a string, got int"
