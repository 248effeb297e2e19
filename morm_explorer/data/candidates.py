"""Candidate sets: N responses to each of a set of prompts, the input of the Explore page.

A candidate is ``{"prompt_id", "prompt", "response", "source", "category"?, "meta"?}``:
``source`` says where the response came from (a policy's name, a behaviour, a file), and every
candidate of one ``prompt_id`` shares one prompt text. Sets are read from JSONL / CSV / Parquet
with every problem reported by file, line and field, and stored in the workspace as
``candidates/<name>/candidates.parquet`` + ``info.json`` with a row in the database, so scores can
be cached per (reward model, candidate set fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morm_explorer.data.readers import MAX_FILE_BYTES, read_rows
from morm_explorer.data.schema import MAX_TEXT_CHARS
from morm_explorer.data.validation import Issue, ValidationReport
from morm_explorer.errors import MormError
from morm_explorer.workspace import Workspace, atomic_write_text, replace_dir, sanitize_name

GROUP = "candidates"
COLUMNS: tuple[str, ...] = ("prompt_id", "prompt", "response", "source", "category", "meta")
REQUIRED: tuple[str, ...] = ("prompt_id", "prompt", "response")
KNOWN = frozenset(COLUMNS)
MAX_SHOWN_ERRORS = 20


@dataclass
class CandidateSet:
    """Validated candidates as a DataFrame (columns `COLUMNS`; ``meta`` as JSON text), rows in
    file order. Row positions are the candidate indices everywhere (scores, fronts, winners)."""

    frame: pd.DataFrame
    origin: str = ""
    report: ValidationReport | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_prompts(self) -> int:
        return int(self.frame["prompt_id"].nunique())

    @property
    def sources(self) -> list[str]:
        return sorted(self.frame["source"].unique().tolist())

    def fingerprint(self) -> str:
        """A content hash of (prompt_id, prompt, response, source) in order."""
        h = hashlib.sha256()
        for col in ("prompt_id", "prompt", "response", "source"):
            for v in self.frame[col]:
                h.update(str(v).encode("utf-8", "surrogatepass"))
                h.update(b"\x00")
            h.update(b"\x01")
        return h.hexdigest()[:16]

    def prompts(self) -> pd.DataFrame:
        """One row per prompt: prompt_id, prompt, category, n (candidates), in first-seen order."""
        g = self.frame.groupby("prompt_id", sort=False)
        return pd.DataFrame({"prompt": g["prompt"].first(), "category": g["category"].first(),
                             "n": g.size()}).reset_index()

    def records(self) -> list[dict]:
        out = []
        for r in self.frame.to_dict("records"):
            r["meta"] = json.loads(r["meta"]) if r["meta"] else None
            out.append({k: v for k, v in r.items() if v is not None})
        return out


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_candidate(row: dict, file: str, line: int, *, default_source: str,
                    max_chars: int = MAX_TEXT_CHARS) -> tuple[dict | None, list[Issue]]:
    """One raw row as a canonical candidate (None when it has errors) and its issues."""
    issues: list[Issue] = []

    def err(fld: str | None, msg: str, severity: str = "error") -> None:
        issues.append(Issue(file, line, fld, msg, severity))  # type: ignore[arg-type]

    out: dict[str, Any] = {}
    for name in REQUIRED:
        value = row.get(name)
        if name == "prompt_id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if name not in row:
            err(name, "missing required field")
        elif not isinstance(value, str):
            err(name, f"expected a string, got {_type_name(value)}")
        elif len(value) > max_chars:
            err(name, f"text is {len(value):,} characters; the limit is {max_chars:,}")
        elif not value.strip() and name != "response":
            err(name, f"empty {name}")
        else:
            if name == "response" and not value.strip():
                err(name, "empty response", "warning")
            out[name] = value
    source = row.get("source")
    if source is None or (isinstance(source, str) and not source.strip()):
        out["source"] = default_source
    elif isinstance(source, str):
        out["source"] = source.strip()[:200]
    else:
        err("source", f"expected a string, got {_type_name(source)}")
    category = row.get("category")
    if category is not None and not isinstance(category, str):
        err("category", f"expected a string, got {_type_name(category)}")
    out["category"] = category if isinstance(category, str) and category else None
    meta = row.get("meta")
    if meta is not None and not isinstance(meta, dict):
        err("meta", f"expected an object, got {_type_name(meta)}")
    out["meta"] = json.dumps(meta, ensure_ascii=False) if isinstance(meta, dict) else None
    for extra in sorted(set(row) - KNOWN):
        err(extra, "unknown field (ignored)", "warning")
    if any(i.severity == "error" for i in issues):
        return None, issues
    return out, issues


def _check_prompt_ids(rows: list[tuple[int, dict]], file: str) -> list[Issue]:
    """Errors where one prompt_id carries two different prompt texts (the first one wins)."""
    first: dict[str, tuple[int, str]] = {}
    issues = []
    for line, r in rows:
        seen = first.setdefault(r["prompt_id"], (line, r["prompt"]))
        if seen[1] != r["prompt"]:
            issues.append(Issue(file, line, "prompt",
                                f"prompt_id {r['prompt_id']!r} has a different prompt text at "
                                f"line {seen[0]}; one prompt_id must name one prompt"))
    return issues


def read_candidates(path: str | Path, fmt: str | None = None, *, default_source: str | None = None,
                    max_chars: int = MAX_TEXT_CHARS, drop_bad: bool = False,
                    max_bytes: int = MAX_FILE_BYTES) -> CandidateSet:
    """Read and validate a candidate file. With errors it raises `MormError` listing them
    (file, line, field), unless ``drop_bad``: then bad rows are dropped and counted in the
    report. A file with no valid candidate is always an error. ``max_bytes`` caps the data
    read (after decompression; see `readers.read_rows`)."""
    file = str(path)
    default_source = default_source or Path(file).stem.removesuffix(".jsonl") or "imported"
    report = ValidationReport(file=file)
    good: list[tuple[int, dict]] = []
    for line, row in read_rows(path, fmt, max_chars=max_chars, max_bytes=max_bytes):
        report.n_rows += 1
        if isinstance(row, Issue):
            report.issues.append(row)
            continue
        if not isinstance(row, dict):
            report.issues.append(Issue(file, line, None, "expected a JSON object"))
            continue
        cand, issues = check_candidate(row, file, line, default_source=default_source,
                                       max_chars=max_chars)
        report.issues += issues
        if cand is not None:
            good.append((line, cand))
    conflicts = _check_prompt_ids(good, file)
    report.issues += conflicts
    bad_lines = {i.line for i in conflicts}
    good = [(line, c) for line, c in good if line not in bad_lines]
    report.n_valid = len(good)
    if report.errors and not drop_bad:
        shown = "\n".join(str(i) for i in report.errors[:MAX_SHOWN_ERRORS])
        more = len(report.errors) - MAX_SHOWN_ERRORS
        raise MormError(f"{len(report.errors)} errors in the candidate file:\n{shown}"
                        + (f"\n... and {more} more" if more > 0 else ""), file=file)
    if not good:
        raise MormError("no valid candidates in the file", file=file)
    frame = pd.DataFrame([c for _, c in good], columns=list(COLUMNS))
    return CandidateSet(frame, origin=file, report=report)


def from_records(records: list[dict], origin: str = "", *,
                 default_source: str = "unknown") -> CandidateSet:
    """A set from candidate dicts made in code (sampling, the demo), validated like a file."""
    issues: list[Issue] = []
    good = []
    for i, r in enumerate(records, start=1):
        cand, iss = check_candidate(r, origin or "<records>", i, default_source=default_source)
        issues += [x for x in iss if x.severity == "error"]
        if cand is not None:
            good.append((i, cand))
    issues += _check_prompt_ids(good, origin or "<records>")
    if issues or not good:
        raise MormError("invalid candidates: " + "; ".join(str(i) for i in issues[:5])
                        if issues else "no candidates")
    return CandidateSet(pd.DataFrame([c for _, c in good], columns=list(COLUMNS)), origin)


# -- workspace storage ----------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateSetInfo:
    name: str
    n_candidates: int
    n_prompts: int
    sources: list[str] = field(default_factory=list)
    origin: str = ""
    fingerprint: str = ""
    created_at: float = 0.0


def save_candidate_set(ws: Workspace, name: str, cset: CandidateSet, *,
                       overwrite: bool = False) -> CandidateSetInfo:
    """Store ``cset`` as ``candidates/<name>`` (written into a temp folder, then renamed)."""
    name = sanitize_name(name)
    folder = ws.artifact_dir(GROUP, name)
    info = CandidateSetInfo(name=name, n_candidates=len(cset), n_prompts=cset.n_prompts,
                            sources=cset.sources, origin=cset.origin,
                            fingerprint=cset.fingerprint(), created_at=time.time())
    with ws.transaction() as con:
        exists = con.execute("SELECT 1 FROM candidate_sets WHERE name=?", (name,)).fetchone()
        if (exists or folder.exists()) and not overwrite:
            raise MormError(f"a candidate set named {name!r} exists; choose another name or "
                            "overwrite it")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
        try:
            cset.frame.to_parquet(tmp / "candidates.parquet", index=False)
            atomic_write_text(tmp / "info.json", json.dumps(asdict(info), indent=2))
            replace_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        con.execute("INSERT OR REPLACE INTO candidate_sets VALUES (?,?,?,?,?,?,?)",
                    (name, info.n_candidates, info.n_prompts, json.dumps(info.sources),
                     info.origin, info.fingerprint, info.created_at))
    return info


def list_candidate_sets(ws: Workspace) -> list[CandidateSetInfo]:
    with ws.reading() as con:
        rows = con.execute("SELECT * FROM candidate_sets ORDER BY created_at").fetchall()
    return [CandidateSetInfo(**{**dict(r), "sources": json.loads(r["sources"])}) for r in rows]


def candidate_set_info(ws: Workspace, name: str) -> CandidateSetInfo:
    for info in list_candidate_sets(ws):
        if info.name == sanitize_name(name):
            return info
    raise MormError(f"no candidate set named {name!r} in {ws.root}")


def load_candidate_set(ws: Workspace, name: str) -> CandidateSet:
    path = ws.artifact_file(GROUP, name, "candidates.parquet")
    info_path = ws.artifact_file(GROUP, name, "info.json")
    if not path.is_file():
        raise MormError(f"no candidate set named {name!r} in {ws.root}")
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises its own types for damaged files
        raise MormError(f"cannot read the candidate set: {e}", file=str(path)) from e
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise MormError(f"candidate set lacks columns {missing}", file=str(path))
    frame = frame[list(COLUMNS)].replace({np.nan: None})
    info = json.loads(info_path.read_text("utf-8"))
    return CandidateSet(frame, origin=info.get("origin", ""))


def delete_candidate_set(ws: Workspace, name: str) -> None:
    folder = ws.artifact_dir(GROUP, name)
    with ws.transaction() as con:
        con.execute("DELETE FROM candidate_sets WHERE name=?", (sanitize_name(name),))
    shutil.rmtree(folder, ignore_errors=True)


def read_prompts(path: str | Path, fmt: str | None = None) -> list[dict]:
    """Prompts to sample candidates for: rows with ``prompt`` and optional ``prompt_id``
    (default ``p<line>``) and ``category``; any error raises `MormError` naming the line."""
    file = str(path)
    out: list[dict] = []
    seen: set[str] = set()
    for line, row in read_rows(path, fmt):
        if isinstance(row, Issue):
            raise MormError(row.message, file=file, line=line, field=row.field)
        if not isinstance(row, dict):
            kind = "null" if row is None else type(row).__name__
            raise MormError(f'expected a JSON object such as {{"prompt": "..."}}, got {kind}',
                            file=file, line=line)
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise MormError("expected a non-empty string", file=file, line=line, field="prompt")
        pid = row.get("prompt_id", f"p{line}")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not isinstance(pid, str) or not pid.strip():
            raise MormError("expected a non-empty string", file=file, line=line,
                            field="prompt_id")
        if pid in seen:
            raise MormError(f"duplicate prompt_id {pid!r}", file=file, line=line,
                            field="prompt_id")
        seen.add(pid)
        category = row.get("category")
        out.append({"prompt_id": pid, "prompt": prompt,
                    "category": category if isinstance(category, str) else None})
    if not out:
        raise MormError("no prompts in the file", file=file)
    return out
