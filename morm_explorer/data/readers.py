"""Reading raw rows out of files: JSONL (optionally gzipped), CSV, Parquet and HF datasets
(``save_to_disk`` folders, or hub names ``hf:NAME`` fetched through `hub`).

Each reader yields ``(line, row)`` where ``row`` is a dict or, for a line that cannot be read
(bad UTF-8, malformed JSON), an `Issue`. Line numbers are 1-based lines of the file for JSONL and
CSV (the CSV header is line 1) and 1-based row numbers for Parquet and datasets.

Flat tables (CSV, Parquet) carry labels either as one JSON column ``labels`` / ``ratings`` or as
one column per objective, ``label_<objective>`` / ``rating_<objective>``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from morm_explorer.data.hub import (
    HUB_PREFIX,
    describe_source,
    hub_name,
    load_hub_dataset,
    subsample,
)
from morm_explorer.data.validation import Issue
from morm_explorer.errors import MormError

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet", "hf")
Row = tuple[int, "dict | Issue"]


def detect_format(path: str | Path) -> str:
    """The file format from the path: a folder is an HF dataset, else by suffix."""
    p = Path(path)
    if p.is_dir() or str(path).startswith(HUB_PREFIX):
        return "hf"
    name = p.name.lower().removesuffix(".gz")
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                        (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            return fmt
    if not p.exists() and "/" in str(path) and not str(path).startswith((".", "/")):
        return "hf"  # looks like a hub name such as "Anthropic/hh-rlhf"
    raise MormError(
        f"cannot tell the format from the name; pass one of {', '.join(FORMATS)}", file=str(path)
    )


def _open_bytes(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _decode_line(raw: bytes, file: str, line: int) -> str | Issue:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Issue(file, line, None,
                     f"invalid UTF-8 byte 0x{raw[e.start]:02x} at byte {e.start + 1}")


def read_jsonl(path: Path) -> Iterator[Row]:
    file = str(path)
    try:
        with _open_bytes(path) as fh:
            for line_no, raw in enumerate(fh, start=1):
                text = _decode_line(raw, file, line_no)
                if isinstance(text, Issue):
                    yield line_no, text
                    continue
                if not text.strip():
                    continue  # blank lines are allowed between records
                try:
                    yield line_no, json.loads(text)
                except json.JSONDecodeError as e:
                    yield line_no, Issue(file, line_no, None,
                                         f"malformed JSON: {e.msg} (column {e.colno})")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise MormError(f"cannot read file: {e}", file=file) from e


def _unflatten(row: dict[str, Any], line: int, file: str) -> dict | Issue:
    """Fold ``label_<obj>`` / ``rating_<obj>`` columns (or JSON text columns) into dicts."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, float) and math.isnan(value):
            value = None  # an empty cell in a table
        for prefix, target in (("label_", "labels"), ("rating_", "ratings")):
            if key.startswith(prefix):
                out.setdefault(target, {})[key[len(prefix):]] = value
                break
        else:
            if key in ("labels", "ratings", "meta") and isinstance(value, str):
                try:
                    value = json.loads(value) if value.strip() else None
                except json.JSONDecodeError as e:
                    return Issue(file, line, key, f"malformed JSON in column: {e.msg}")
            if value is not None or key not in out:
                out[key] = value
    return out


def _coerce_cell(value: str) -> Any:
    """CSV cells are text: turn numeric rating cells into numbers, empty cells into None."""
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def read_csv(path: Path) -> Iterator[Row]:
    file = str(path)
    try:
        with _open_bytes(path) as fh:
            data = fh.read()
    except (OSError, EOFError) as e:  # a truncated or non-gzip .gz: BadGzipFile is an OSError
        raise MormError(f"cannot read file: {e}", file=file) from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        yield line, Issue(file, line, None,
                          f"invalid UTF-8 byte 0x{data[e.start]:02x}: the whole file is unreadable")
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise MormError("empty CSV file: no header row", file=file)
    for row in reader:
        line = reader.line_num
        if None in row:
            yield line, Issue(file, line, None, "more cells than header columns")
            continue
        cells = {k: (_coerce_cell(v) if k.startswith("rating_") else (v if v != "" else None))
                 for k, v in row.items()}
        yield line, _unflatten(cells, line, file)


def _table_rows(records: Iterator[dict], file: str) -> Iterator[Row]:
    for i, row in enumerate(records, start=1):
        yield i, _unflatten(dict(row), i, file)


def read_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq  # heavy import, only when needed

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise MormError(f"cannot read Parquet file: {e}", file=str(path)) from e
    yield from _table_rows(iter(table.to_pylist()), str(path))


def open_hf(name: str, split: str | None = None, *, subset: str | None = None,
            revision: str | None = None, cache_dir: str | Path | None = None) -> Any:
    """One split of a local `datasets` folder (save_to_disk) or of a hub dataset (``hf:NAME``,
    or a bare ``OWNER/NAME`` that is no local folder) as a `datasets.Dataset`."""
    import datasets  # heavy import, only when needed

    hub = hub_name(name)
    if hub is None and Path(name).is_dir():
        if subset or revision:
            raise MormError("subset and revision apply to hub datasets (hf:NAME), not to a "
                            "local folder", file=name)
        try:
            ds = datasets.load_from_disk(name)
        except Exception as e:  # datasets raises many types; the message is what matters
            raise MormError(f"cannot load Hugging Face dataset folder: {e}", file=name) from e
    else:
        ds = load_hub_dataset(hub or name, subset=subset, split=split, revision=revision,
                              cache_dir=cache_dir)
    if isinstance(ds, datasets.DatasetDict):
        if split is None and len(ds) > 1:
            raise MormError(f"dataset has splits {list(ds)}; choose one with --split", file=name)
        if split is not None and split not in ds:
            raise MormError(f"no split {split!r}; the dataset has {list(ds)}", file=name)
        ds = ds[split] if split else next(iter(ds.values()))
    return ds


def _hf_rows(ds: Any, indices: list[int] | None, file: str) -> Iterator[Row]:
    """Rows of a `datasets.Dataset`, numbered 1.. by their place in the whole dataset."""
    if indices is None:
        yield from _table_rows(iter(ds), file)
        return
    for i, row in zip(indices, ds.select(indices), strict=True):
        yield i + 1, _unflatten(dict(row), i + 1, file)


def read_hf(name: str, split: str | None = None) -> Iterator[Row]:
    """A local `datasets` folder (save_to_disk) or, where the hub is reachable, a hub name."""
    yield from _hf_rows(open_hf(name, split), None, name)


def read_source(path: str | Path, fmt: str | None = None, split: str | None = None, *,
                subset: str | None = None, revision: str | None = None,
                cache_dir: str | Path | None = None, limit: int | None = None,
                seed: int = 0) -> tuple[Iterator[Row], str]:
    """Raw rows of a file, folder or hub name, with where they came from in words (see
    `hub.describe_source`): ``limit`` keeps a seeded random sample of that many rows, in their
    original order and with their original line numbers."""
    fmt = fmt or detect_format(path)
    name = str(path)
    if fmt == "hf":
        ds = open_hf(name, split, subset=subset, revision=revision, cache_dir=cache_dir)
        hub = hub_name(name) is not None or not Path(name).is_dir()
        used_split = (split or "train") if hub else split
        indices = subsample(len(ds), limit, seed)
        return _hf_rows(ds, indices, name), describe_source(
            name, n_rows=len(ds), subset=subset, split=used_split, revision=revision,
            limit=limit, seed=seed)
    if subset or revision:
        raise MormError("subset and revision apply to hub datasets (hf:NAME) only", file=name)
    rows = read_rows(path, fmt, split)
    if limit is None:
        return rows, name
    everything = list(rows)
    indices = subsample(len(everything), limit, seed)
    if indices is None:
        return iter(everything), name
    return iter([everything[i] for i in indices]), describe_source(
        name, n_rows=len(everything), limit=limit, seed=seed)


def read_rows(path: str | Path, fmt: str | None = None, split: str | None = None) -> Iterator[Row]:
    """Raw rows of a file in any supported format (see module docstring)."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise MormError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "hf":
        return read_hf(str(path), split)
    p = Path(path)
    if not p.is_file():
        raise MormError("no such file", file=str(path))
    return {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}[fmt](p)
