"""Reading raw rows out of files: JSONL (optionally gzipped), CSV, Parquet and HF datasets
(``save_to_disk`` folders, or hub names ``hf:NAME`` fetched through `hub`).

Each reader yields ``(line, row)`` where ``row`` is a dict or, for a line that cannot be read
(bad UTF-8, malformed JSON), an `Issue`. Line numbers are 1-based lines of the file for JSONL and
CSV (the CSV header is line 1) and 1-based row numbers for Parquet and datasets.

Flat tables (CSV, Parquet) carry labels either as one JSON column ``labels`` / ``ratings`` or as
one column per objective, ``label_<objective>`` / ``rating_<objective>``.

Nothing a file holds may run away with memory or escape the error path: JSONL and CSV are read
in chunks, a line longer than `max_line_bytes` (set by ``max_chars``) is a bad row read no
further, more than ``max_bytes`` of data (after decompressing a .gz) stops the file, and JSON too
deep or with numbers too long to parse is a bad row like any other.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import math
import re
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from morm_explorer.data.hub import (
    HUB_PREFIX,
    describe_source,
    hub_name,
    load_hub_dataset,
    subsample,
)
from morm_explorer.data.schema import MAX_TEXT_CHARS
from morm_explorer.data.validation import Issue
from morm_explorer.errors import MormError

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet", "hf")
Row = tuple[int, "dict | Issue"]

# The most data read from one file: bytes of a JSONL or CSV file after decompression, or the
# uncompressed size of a Parquet table. A 200 MB .gz can inflate a thousandfold; this stops it.
MAX_FILE_BYTES = 4 << 30
MAX_JSON_DEPTH = 100  # real records nest a few levels; thousands overflow Python's stack
_CHUNK = 1 << 20
_CSV_LIMIT_LOCK = threading.Lock()
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")  # a line end of old Mac files, as newline="" reads it


def add_size_flags(parser, row: str = "row") -> None:
    """``--max-chars`` and ``--max-bytes`` of a command that reads a file (one wording for
    every such command)."""
    parser.add_argument("--max-chars", type=int, default=MAX_TEXT_CHARS,
                        help=f"longest prompt or response accepted; a line longer than such a "
                        f"{row} can be is a bad row, read no further (default: %(default)s)")
    parser.add_argument("--max-bytes", type=int, default=MAX_FILE_BYTES,
                        help="most bytes of data read from a file, counted after decompressing "
                        "a .gz (Parquet: the uncompressed table); past it the file is refused, "
                        "which stops a decompression bomb (default: %(default)s, 4 GiB)")


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


def max_line_bytes(max_chars: int) -> int:
    """The longest line read: three texts of ``max_chars`` characters at 12 bytes each (a JSON
    escaped surrogate pair is 12 bytes for one character), and 64 KiB for the other fields."""
    return 36 * max_chars + (1 << 16)


def _check_limits(max_chars: int, max_bytes: int) -> None:
    for name, value in (("max_chars", max_chars), ("max_bytes", max_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MormError(f"expected a whole number >= 1, got {value!r}", field=name)


@contextmanager
def _reading(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed for .gz; read errors become `MormError`."""
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as fh:
            yield fh  # type: ignore[misc]
    except (OSError, EOFError, zlib.error) as e:  # truncated or damaged .gz; BadGzipFile: OSError
        raise MormError(f"cannot read file: {e}", file=str(path)) from e


def _lines(fh: BinaryIO, path: Path, max_line: int,
           max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes)`` of each line, read in chunks; a line over ``max_line`` bytes
    comes as None, its bytes counted but never held. Past ``max_bytes`` in all: `MormError`."""
    line_no, total, size, parts = 1, 0, 0, []
    while chunk := fh.read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            inflated = " once decompressed" if path.name.endswith(".gz") else ""
            raise MormError(f"the data is over the limit of {max_bytes:,} bytes{inflated} "
                            "(raise it with --max-bytes)", file=str(path))
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            size += end + 1 - start
            yield line_no, b"".join([*parts, chunk[start:end + 1]]) if size <= max_line else None
            line_no, size, parts = line_no + 1, 0, []
            start = end + 1
        if start < len(chunk):
            size += len(chunk) - start
            parts = [*parts, chunk[start:]] if size <= max_line else []
    if size:
        yield line_no, b"".join(parts) if size <= max_line else None


def _too_long(file: str, line: int, max_chars: int) -> Issue:
    return Issue(file, line, None, f"line is too long: over {max_line_bytes(max_chars):,} bytes, "
                 f"more than a record with texts of at most {max_chars:,} characters "
                 "(--max-chars) can take")


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether lists / dicts in ``value`` nest deeper than ``limit`` (without recursing)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        items = v.values() if isinstance(v, dict) else v
        stack.extend((x, depth + 1) for x in items if isinstance(x, (dict, list)))
    return False


def _parse_json(text: str, file: str, line: int, field: str | None) -> Any:
    """``json.loads(text)``, or an `Issue` for JSON that cannot be read or used."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return Issue(file, line, field, f"malformed JSON: {e.msg} (column {e.colno})")
    except RecursionError:
        return Issue(file, line, field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    except ValueError as e:  # a number of more than 4,300 digits
        return Issue(file, line, field, f"unreadable JSON: {str(e).split(';')[0]}")
    if _nested_deeper(value, MAX_JSON_DEPTH):
        return Issue(file, line, field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _decode_line(raw: bytes, file: str, line: int) -> str | Issue:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Issue(file, line, None,
                     f"invalid UTF-8 byte 0x{raw[e.start]:02x} at byte {e.start + 1}")


def read_jsonl(path: Path, *, max_chars: int = MAX_TEXT_CHARS,
               max_bytes: int = MAX_FILE_BYTES) -> Iterator[Row]:
    file = str(path)
    with _reading(path) as fh:
        for line_no, raw in _lines(fh, path, max_line_bytes(max_chars), max_bytes):
            if raw is None:
                yield line_no, _too_long(file, line_no, max_chars)
                continue
            text = _decode_line(raw, file, line_no)
            if isinstance(text, Issue):
                yield line_no, text
            elif text.strip():  # blank lines are allowed between records
                yield line_no, _parse_json(text, file, line_no, None)


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
                value = _parse_json(value, file, line, key) if value.strip() else None
                if isinstance(value, Issue):
                    return value
            elif _nested_deeper(value, MAX_JSON_DEPTH):  # Parquet and datasets nest too
                return Issue(file, line, key, f"nested deeper than {MAX_JSON_DEPTH} levels")
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


class _BadLine(Exception):
    """A CSV line that cannot be read (too long, bad UTF-8), carrying its `Issue`."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


class _CsvLines:
    """Decoded lines for `csv.reader`, numbered as they are handed out. An unreadable line
    raises `_BadLine` through the reader, which starts afresh on the next line when called
    again, so the bad line is one bad row."""

    def __init__(self, lines: Iterator[tuple[int, bytes | None]], file: str,
                 max_chars: int) -> None:
        self.lines, self.file, self.max_chars = lines, file, max_chars
        self.line_no = 0
        self.pending: list[bytes] = []

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        if not self.pending:
            _, raw = next(self.lines)
            if raw is None:
                self.line_no += 1
                raise _BadLine(_too_long(self.file, self.line_no, self.max_chars))
            if self.line_no == 0:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            self.pending = [part for part in _LONE_CR.split(raw) if part][::-1]
        self.line_no += 1
        text = _decode_line(self.pending.pop(), self.file, self.line_no)
        if isinstance(text, Issue):
            raise _BadLine(text)
        return text


def _allow_csv_cells(n: int) -> None:
    """Raise the csv module's cell size limit (one for the whole process, 131,072 characters
    by default) to ``n``; never lower it, so readers running side by side keep theirs."""
    n = min(n, 2**31 - 1)  # a C long on every platform
    with _CSV_LIMIT_LOCK:
        if csv.field_size_limit() < n:
            csv.field_size_limit(n)


def _next_csv_row(reader: Any, lines: _CsvLines, file: str) -> list[str] | Issue | None:
    """The next row's cells, an `Issue` for a row that cannot be read, or None at the end."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except _BadLine as e:
        return e.issue
    except csv.Error as e:  # a cell past the limit, a stray quote...
        return Issue(file, lines.line_no, None, f"unreadable CSV row: {e}")


def read_csv(path: Path, *, max_chars: int = MAX_TEXT_CHARS,
             max_bytes: int = MAX_FILE_BYTES) -> Iterator[Row]:
    file = str(path)
    max_line = max_line_bytes(max_chars)
    _allow_csv_cells(max_line)  # longer cells than texts may hold: the checks name the field
    with _reading(path) as fh:
        lines = _CsvLines(_lines(fh, path, max_line, max_bytes), file, max_chars)
        reader = csv.reader(lines)
        header: list[str] | Issue | None = []
        while header == []:  # blank lines before the header
            header = _next_csv_row(reader, lines, file)
        if header is None:
            raise MormError("empty CSV file: no header row", file=file)
        if isinstance(header, Issue):
            raise MormError(f"cannot read the header row: {header.message}", file=file,
                            line=header.line)
        while (cells := _next_csv_row(reader, lines, file)) is not None:
            line = lines.line_no  # the last line of the row
            if isinstance(cells, Issue):
                yield line, cells
                continue
            if not cells:  # a blank line
                continue
            if len(cells) > len(header):
                yield line, Issue(file, line, None, "more cells than header columns")
                continue
            row = dict.fromkeys(header, "") | dict(zip(header, cells, strict=False))
            yield line, _unflatten(
                {k: (_coerce_cell(v) if k.startswith("rating_") else (v if v != "" else None))
                 for k, v in row.items()}, line, file)


def _table_rows(records: Iterator[dict], file: str) -> Iterator[Row]:
    for i, row in enumerate(records, start=1):
        yield i, _unflatten(dict(row), i, file)


def read_parquet(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> Iterator[Row]:
    import pyarrow.parquet as pq  # heavy import, only when needed

    try:
        meta = pq.ParquetFile(path).metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        table = pq.read_table(path) if size <= max_bytes else None
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise MormError(f"cannot read Parquet file: {e}", file=str(path)) from e
    if table is None:
        raise MormError(f"the table is {size:,} bytes uncompressed, over the limit of "
                        f"{max_bytes:,} bytes (raise it with --max-bytes)", file=str(path))
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
                seed: int = 0, max_chars: int = MAX_TEXT_CHARS,
                max_bytes: int = MAX_FILE_BYTES) -> tuple[Iterator[Row], str]:
    """Raw rows of a file, folder or hub name, with where they came from in words (see
    `hub.describe_source`): ``limit`` keeps a seeded random sample of that many rows, in their
    original order and with their original line numbers. ``max_chars`` and ``max_bytes``
    bound what is read from a file (see `read_rows`)."""
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
    rows = read_rows(path, fmt, split, max_chars=max_chars, max_bytes=max_bytes)
    if limit is None:
        return rows, name
    everything = list(rows)
    indices = subsample(len(everything), limit, seed)
    if indices is None:
        return iter(everything), name
    return iter([everything[i] for i in indices]), describe_source(
        name, n_rows=len(everything), limit=limit, seed=seed)


def read_rows(path: str | Path, fmt: str | None = None, split: str | None = None, *,
              max_chars: int = MAX_TEXT_CHARS, max_bytes: int = MAX_FILE_BYTES) -> Iterator[Row]:
    """Raw rows of a file in any supported format (see module docstring). A line longer than
    `max_line_bytes` of ``max_chars`` is a bad row; a file of more than ``max_bytes`` bytes
    (JSONL, CSV: once decompressed; Parquet: uncompressed) raises `MormError`."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise MormError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    _check_limits(max_chars, max_bytes)
    if fmt == "hf":
        return read_hf(str(path), split)
    p = Path(path)
    if not p.is_file():
        raise MormError("no such file", file=str(path))
    if fmt == "parquet":
        return read_parquet(p, max_bytes=max_bytes)
    reader = read_jsonl if fmt == "jsonl" else read_csv
    return reader(p, max_chars=max_chars, max_bytes=max_bytes)
