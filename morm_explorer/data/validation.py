"""Validation of raw preference records against the canonical schema.

`check_record` turns one raw row into a canonical record plus the issues it has; the report
types collect those issues with file, line and field so the CLI and the Data page can show
them. Reading files lives in `readers`, orchestration in `loaders`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from morm_explorer.data.schema import (
    LABEL_VALUES,
    MAX_TEXT_CHARS,
    OPTIONAL_FIELDS,
    PAIR_TEXT_FIELDS,
    RATING_TEXT_FIELDS,
    Kind,
    is_valid_objective,
)

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    """One problem found in one place of a file."""

    file: str
    line: int | None
    field: str | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        fld = f" field '{self.field}'" if self.field else ""
        return f"{where}:{fld} {self.severity}: {self.message}"


@dataclass
class ValidationReport:
    """What validating one file found: rows read, rows kept, and every issue."""

    file: str
    kind: Kind | None = None
    n_rows: int = 0
    n_valid: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_bad_rows(self) -> int:
        return self.n_rows - self.n_valid

    def counts_by_message(self) -> Counter:
        """Issue counts by (severity, field), for a compact summary."""
        return Counter((i.severity, i.field or "-") for i in self.issues)

    def to_text(self, max_issues: int = 200) -> str:
        head = (
            f"{self.file}: {self.n_rows} rows read, {self.n_valid} valid, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
            + (f" (kind: {self.kind})" if self.kind else "")
        )
        lines = [head] + [str(i) for i in self.issues[:max_issues]]
        if len(self.issues) > max_issues:
            lines.append(f"... and {len(self.issues) - max_issues} more issues")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "n_rows": self.n_rows,
            "n_valid": self.n_valid,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "issues": [asdict(i) for i in self.issues],
        }


class _Collector:
    """Accumulates the issues of one row, tagging them with file and line."""

    def __init__(self, file: str, line: int | None) -> None:
        self.file, self.line = file, line
        self.issues: list[Issue] = []

    def error(self, fld: str | None, message: str) -> None:
        self.issues.append(Issue(self.file, self.line, fld, message, "error"))

    def warn(self, fld: str | None, message: str) -> None:
        self.issues.append(Issue(self.file, self.line, fld, message, "warning"))

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_text(c: _Collector, row: dict, name: str, max_chars: int) -> str | None:
    if name not in row:
        c.error(name, "missing required field")
        return None
    value = row[name]
    if not isinstance(value, str):
        c.error(name, f"expected a string, got {_type_name(value)}")
        return None
    if len(value) > max_chars:
        c.error(name, f"text is {len(value):,} characters; the limit is {max_chars:,}")
        return None
    if not value.strip():
        if name == "prompt":
            c.error(name, "empty prompt")
            return None
        # An empty answer is a real behaviour (real data prefers it at times): keep, but say so.
        c.warn(name, "empty response")
    return value


def _check_optional(c: _Collector, row: dict, out: dict) -> None:
    if row.get("id") is not None:
        rid = row["id"]
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            c.error("id", f"expected a string or integer, got {_type_name(rid)}")
        elif not str(rid).strip():
            c.error("id", "empty id")
        else:
            out["id"] = str(rid)
    if row.get("category") is not None:
        if isinstance(row["category"], str):
            out["category"] = row["category"]
        else:
            c.error("category", f"expected a string, got {_type_name(row['category'])}")
    if row.get("meta") is not None:
        if isinstance(row["meta"], dict):
            out["meta"] = row["meta"]
        else:
            c.error("meta", f"expected an object, got {_type_name(row['meta'])}")


def _check_mapping(c: _Collector, row: dict, name: str) -> dict | None:
    if name not in row:
        c.error(name, "missing required field")
        return None
    value = row[name]
    if not isinstance(value, dict):
        c.error(name, f"expected an object of objective -> value, got {_type_name(value)}")
        return None
    return value


def _check_labels(c: _Collector, labels: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for obj, value in labels.items():
        fld = f"labels.{obj}"
        if not is_valid_objective(obj):
            c.error(fld, f"invalid objective name {obj!r}: use letters, digits, _ or -")
        elif value is None:
            continue  # explicit null: not annotated for this objective
        elif not isinstance(value, str) or value.strip().lower() not in LABEL_VALUES:
            c.error(fld, f"unknown label {value!r}; expected one of {', '.join(LABEL_VALUES)}")
        else:
            out[obj] = value.strip().lower()
    if not labels:
        c.warn("labels", "no objective is labelled: the pair carries no preference")
    return out


def _check_ratings(c: _Collector, ratings: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for obj, value in ratings.items():
        fld = f"ratings.{obj}"
        if not is_valid_objective(obj):
            c.error(fld, f"invalid objective name {obj!r}: use letters, digits, _ or -")
        elif value is None:
            continue
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            c.error(fld, f"expected a number, got {_type_name(value)} {value!r}")
        elif math.isnan(value):
            c.error(fld, "rating is NaN")
        elif math.isinf(value):
            c.error(fld, "rating is infinite")
        else:
            out[obj] = float(value)
    if not ratings:
        c.warn("ratings", "no objective is rated")
    return out


KNOWN_FIELDS = {
    "pairwise": set(PAIR_TEXT_FIELDS) | {"labels"} | set(OPTIONAL_FIELDS),
    "ratings": set(RATING_TEXT_FIELDS) | {"ratings"} | set(OPTIONAL_FIELDS),
}


def check_record(
    row: Any,
    kind: Kind,
    *,
    file: str,
    line: int | None,
    max_chars: int = MAX_TEXT_CHARS,
) -> tuple[dict | None, list[Issue]]:
    """Check one raw row as a record of `kind`; return (canonical record or None, issues).

    The record is None when the row has any error; warnings leave it usable.
    """
    c = _Collector(file, line)
    if not isinstance(row, dict):
        c.error(None, f"expected a JSON object, got {_type_name(row)}")
        return None, c.issues
    text_fields = PAIR_TEXT_FIELDS if kind == "pairwise" else RATING_TEXT_FIELDS
    out: dict[str, Any] = {}
    for name in text_fields:
        out[name] = _check_text(c, row, name, max_chars)
    if kind == "pairwise":
        a, b = out["response_a"], out["response_b"]
        if a is not None and b is not None and a.strip() == b.strip():
            c.error("response_b", "identical responses: a pair needs two different responses")
        labels = _check_mapping(c, row, "labels")
        out["labels"] = _check_labels(c, labels) if labels is not None else None
    else:
        ratings = _check_mapping(c, row, "ratings")
        out["ratings"] = _check_ratings(c, ratings) if ratings is not None else None
    _check_optional(c, row, out)
    for extra in sorted(set(row) - KNOWN_FIELDS[kind]):
        c.warn(str(extra), "unknown field ignored")
    return (None if c.has_errors else out), c.issues
