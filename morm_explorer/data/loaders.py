"""Loading preference data: read a file, map a preset, validate, and return a `Dataset`.

Every entry point (the CLI, the Data page, training jobs) goes through `load_preference_data`,
so the same validation applies everywhere. Bad rows either stop the load (the default) or are
dropped and counted, never silently.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pandas as pd

from morm_explorer.data import presets as preset_lib
from morm_explorer.data.readers import MAX_FILE_BYTES, read_source
from morm_explorer.data.schema import MAX_TEXT_CHARS, Kind, record_kind
from morm_explorer.data.validation import Issue, ValidationReport, check_record
from morm_explorer.errors import MormError

OnError = Literal["stop", "drop"]


@dataclass
class Dataset:
    """Validated canonical records of one kind, with the report that produced them and the
    longest text they were checked against (``max_chars``, stored with a saved dataset so that
    reloading it checks with the same limit)."""

    records: list[dict]
    kind: Kind
    report: ValidationReport
    source: str = ""
    max_chars: int = MAX_TEXT_CHARS

    @property
    def objectives(self) -> list[str]:
        key = "labels" if self.kind == "pairwise" else "ratings"
        seen: dict[str, None] = {}
        for r in self.records:
            seen.update(dict.fromkeys(r[key]))
        return list(seen)

    def __len__(self) -> int:
        return len(self.records)

    def to_frame(self) -> pd.DataFrame:
        return records_to_frame(self.records, self.kind)

    def fingerprint(self) -> str:
        """A content hash of the records: equal data gives an equal fingerprint."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
        return h.hexdigest()[:16]


def records_to_frame(records: list[dict], kind: Kind) -> pd.DataFrame:
    """Canonical records as a DataFrame, with one column per objective (``label:<obj>`` for
    pairs, ``rating:<obj>`` for ratings) beside the text columns."""
    key, prefix = ("labels", "label:") if kind == "pairwise" else ("ratings", "rating:")
    texts = ("prompt", "response_a", "response_b") if kind == "pairwise" else ("prompt", "response")
    base = pd.DataFrame(
        {
            "id": [r.get("id") for r in records],
            "category": [r.get("category") for r in records],
            **{t: [r[t] for r in records] for t in texts},
        }
    )
    per_obj = pd.DataFrame([r[key] for r in records], index=base.index)
    per_obj.columns = [prefix + str(c) for c in per_obj.columns]
    return pd.concat([base, per_obj], axis=1)


def _rows_to_records(rows, file, preset, options) -> Iterable[tuple[int, dict | Issue]]:
    """Apply a preset to raw rows; a row that cannot be mapped becomes an Issue."""
    for line, row in rows:
        if isinstance(row, Issue) or preset is None:
            yield line, row
            continue
        try:
            for rec in preset.convert(row, options):
                yield line, rec
        except MormError as e:
            yield line, Issue(file, line, e.field, e.message)


def _assign_ids(records: list[dict], file: str, report: ValidationReport) -> list[dict]:
    seen: set[str] = set()
    out = []
    for line, rec in records:
        rid = rec.get("id")
        if rid is not None and rid in seen:
            report.issues.append(Issue(file, line, "id", f"duplicate id {rid!r}"))
            continue
        if rid is None:
            rid = f"{Path(file).stem.split('.')[0]}-{line}-{len(out)}"
            while rid in seen:
                rid += "x"
            rec["id"] = rid
        seen.add(rid)
        out.append(rec)
    return out


def _hh_objective(preset, objective: str | None, file: str, subset: str | None) -> str | None:
    """HH-RLHF holds one objective per subset: the one given, else the subset's or file's."""
    if preset is None or preset.name != "hh-rlhf" or objective:
        return objective
    objective = preset_lib.hh_objective_from_source(f"{subset or ''} {file}")
    if objective is None:
        raise MormError("HH-RLHF files hold one objective; neither the subset nor the file name "
                        "says which (e.g. harmless-base): pass it as the objective", file=file)
    return objective


def validate_file(
    path: str | Path,
    *,
    fmt: str | None = None,
    preset: str | None = None,
    objective: str | None = None,
    split: str | None = None,
    subset: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_chars: int = MAX_TEXT_CHARS,
    max_bytes: int = MAX_FILE_BYTES,
) -> tuple[list[dict], ValidationReport]:
    """Read and check every row of a file, folder or hub name (``hf:NAME``, with `subset` the
    hub repository's data_dir); return the valid records and the full report. ``limit`` keeps a
    seeded random sample of that many rows; the report's ``file`` then says so. ``max_bytes``
    caps the data read from a file (after decompression; see `readers.read_rows`)."""
    file = str(path)
    p = preset_lib.get_preset(preset) if preset else None
    objective = _hh_objective(p, objective, file, subset)
    rows, described = read_source(path, fmt, split, subset=subset, revision=revision,
                                  cache_dir=cache_dir, limit=limit, seed=seed,
                                  max_chars=max_chars, max_bytes=max_bytes)
    report = ValidationReport(file=described)
    options = {"objective": objective, "source": f"{subset or ''} {file}".strip()}
    kind: Kind | None = p.kind if p else None  # type: ignore[assignment]
    kept: list[tuple[int, dict]] = []
    for line, row in _rows_to_records(rows, file, p, options):
        report.n_rows += 1
        if isinstance(row, Issue):
            report.issues.append(row)
            continue
        if kind is None and isinstance(row, dict):
            kind = record_kind(row)
            if kind is None:
                report.issues.append(Issue(file, line, None, "neither a pairwise record "
                                           "(response_a, response_b, labels) nor a ratings "
                                           "record (response, ratings)"))
                continue
        record, issues = check_record(row, kind or "pairwise", file=file, line=line,
                                      max_chars=max_chars)
        report.issues.extend(issues)
        if record is not None:
            kept.append((line, record))
    report.kind = kind
    records = _assign_ids(kept, file, report)
    report.issues.sort(key=lambda i: (i.line is None, i.line or 0))
    report.n_valid = len(records)
    return records, report


def load_preference_data(
    path: str | Path,
    *,
    on_error: OnError = "stop",
    **kw,
) -> Dataset:
    """Load a preference file, folder or hub name as a validated `Dataset`; ``kw`` are those of
    `validate_file` (format, preset, objective, split, subset, revision, cache_dir, limit...).

    ``on_error="stop"`` raises a `MormError` listing the first problems when any row has an
    error; ``"drop"`` keeps the valid rows, and the report says how many were dropped. The
    dataset's ``source`` says where it came from (`hub.describe_source`).
    """
    records, report = validate_file(path, **kw)
    if report.errors and on_error == "stop":
        first = "\n".join(str(i) for i in report.errors[:10])
        more = len(report.errors) - 10
        raise MormError(
            f"{len(report.errors)} errors in {report.n_bad_rows} of {report.n_rows} rows "
            f"(load with dropping bad rows to keep the {report.n_valid} valid ones):\n{first}"
            + (f"\n... and {more} more" if more > 0 else ""),
            file=str(path),
        )
    if not records:
        raise MormError("no valid records", file=str(path))
    return Dataset(records=records, kind=report.kind or "pairwise", report=report,
                   source=report.file, max_chars=kw.get("max_chars", MAX_TEXT_CHARS))


def inspect_file(
    path: str | Path,
    *,
    display_name: str | None = None,
    on_error: OnError = "stop",
    **kw,
) -> tuple[Dataset | None, ValidationReport]:
    """Validate a file for a UI: the report always, the dataset when it may be used.

    With ``on_error="stop"`` a file with errors gives no dataset; with ``"drop"`` it gives the
    valid rows. File-level problems (unreadable, unknown format) still raise `MormError`.
    """
    records, report = validate_file(path, **kw)
    if display_name:
        report.file = display_name
        report.issues = [replace(i, file=display_name) for i in report.issues]
    if not records or (report.errors and on_error == "stop"):
        return None, report
    dataset = Dataset(records=records, kind=report.kind or "pairwise", report=report,
                      source=report.file, max_chars=kw.get("max_chars", MAX_TEXT_CHARS))
    return dataset, report


def inspect_upload(
    filename: str, data: bytes, **kw
) -> tuple[Dataset | None, ValidationReport]:
    """`inspect_file` for bytes a user uploaded; the report names the uploaded file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).name).lstrip(".") or "upload"
    with tempfile.TemporaryDirectory(prefix="morm-upload-") as tmp:
        path = Path(tmp) / safe
        path.write_bytes(data)
        return inspect_file(path, display_name=filename, **kw)
