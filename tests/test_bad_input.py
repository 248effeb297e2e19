"""Bad input at every entry point: each hostile input gets a clear message and leaves the
workspace as it was.

One table, `CASES`: (entry point, case id, action, expected message fragment). A library
action must raise `MormError`; a CLI action (``morm ...`` run in-process) must exit 1 or 2
with the message on stderr and no traceback. Before and after each action the workspace is
snapshot (files, sizes, hashes of small files, SQLite row counts) and must be unchanged.
Bugs found are in the table with ``xfail(strict=True)`` and their reason.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import shutil
import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from morm_explorer.cli import main
from morm_explorer.errors import MormError
from tests.conftest import good_pair

EVIL = "<script>alert(1)</script>"
NAN, INF = float("nan"), float("inf")


# -- workspace snapshot -------------------------------------------------------------------
def snapshot(ws) -> dict:
    """Relative paths with sizes (and sha256 of files under 1 MB), plus row counts of every
    SQLite table. The database's own files are left to the row counts (WAL pages move)."""
    files = {}
    for p in sorted(ws.root.rglob("*")):
        rel = p.relative_to(ws.root).as_posix()
        if p.is_dir() or rel.startswith("morm.sqlite"):
            continue
        size = p.stat().st_size
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if size < 1 << 20 else None
        files[rel] = (size, digest)
    con = sqlite3.connect(ws.db_path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()
    return {"files": files, "rows": rows}


# -- the table ------------------------------------------------------------------------------
@dataclass
class Env:
    ws: object
    tmp: Path

    def file(self, name: str, data: bytes | str) -> Path:
        p = self.tmp / "in" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p


@dataclass
class Case:
    entry: str
    id: str
    action: Callable[[Env], object] | list  # a callable (library) or argv (CLI)
    expect: str | tuple[str, ...]  # fragment(s) of the message
    bug: str | None = None  # an xfail(strict=True) reason
    setup: Callable[[Env], None] | None = None
    marks: list = field(default_factory=list)
    timeout: int | None = None  # seconds before a case that hangs fails


CASES: list[Case] = []


def case(entry, id_, action, expect, *, bug=None, setup=None, slow=False,
         timeout=None) -> None:
    # ``bug`` records a defect this case found, now fixed: the case must pass like any other
    CASES.append(Case(entry, id_, action, expect, None, setup,
                      [pytest.mark.slow] if slow else [], timeout))


# -- hostile files ------------------------------------------------------------------------
GOOD_PAIRS = "".join(json.dumps(good_pair(i)) + "\n" for i in range(200))
GOOD_CANDS = "".join(json.dumps({"prompt_id": f"p{i}", "prompt": f"Question {i}?",
                                 "response": f"Answer {i} " * 20}) + "\n" for i in range(200))


def truncated_gz(text: str) -> bytes:
    data = gzip.compress(text.encode())
    return data[: len(data) // 2]


def _latin1(env: Env, name: str, kind: str) -> Path:
    rec = good_pair(0) if kind == "pairs" else {"prompt_id": "p", "prompt": "q",
                                                 "response": "r"}
    return env.file(name, json.dumps(rec).encode().replace(b'"', b'"\xe9', 1) + b"\n")


FILE_DEFECTS: list[tuple[str, Callable[[Env, str], Path], str]] = [
    # (id, make(env, kind) -> path, message fragment)
    ("truncated gzip", lambda e, k: e.file(
        "t.jsonl.gz", truncated_gz(GOOD_PAIRS if k == "pairs" else GOOD_CANDS)),
     "cannot read file"),
    ("not gzip at all", lambda e, k: e.file("t.jsonl.gz", b"plain text"), "Not a gzipped file"),
    ("corrupted parquet", lambda e, k: e.file("t.parquet", b"PAR1" + b"\x00garbage" * 50),
     "cannot read Parquet file"),
    ("csv wrong columns", lambda e, k: e.file("t.csv", "a,b\n1,2\n"), "errors in"),
    ("empty csv", lambda e, k: e.file("t.csv", b""), "no header row"),
    ("json array instead of jsonl", lambda e, k: e.file(
        "t.json", json.dumps([good_pair(0), good_pair(1)], indent=2)), "malformed JSON"),
    ("one-line json array", lambda e, k: e.file("t.json", json.dumps([good_pair(0)])),
     "errors in"),
    ("non-utf8 jsonl", lambda e, k: _latin1(e, "t.jsonl", k), "invalid UTF-8 byte 0xe9"),
    ("non-utf8 csv", lambda e, k: e.file("t.csv", b"prompt,response_a\n\xe9,b\n"),
     "invalid UTF-8"),
    ("empty jsonl", lambda e, k: e.file("t.jsonl", b""), "no valid"),
    ("nul bytes", lambda e, k: e.file("t.jsonl", b"\x00\x00\x00\n"), "malformed JSON"),
    ("unknown extension", lambda e, k: e.file("t.txt", "hello"), "cannot tell the format"),
    ("missing file", lambda e, k: e.tmp / "in" / "nope.jsonl", "no such file"),
    ("a folder that is no dataset", lambda e, k: (e.tmp / "in" / "folder").mkdir(
        parents=True, exist_ok=True) or e.tmp / "in" / "folder", "cannot load Hugging Face"),
]


def _truncated_csv_gz(env: Env) -> Path:
    rows = "".join(f"p{i},Question {i}?,Answer {i}\n" for i in range(5000))
    return env.file("t.csv.gz", truncated_gz("prompt_id,prompt,response\n" + rows))


for _id, _make, _msg in FILE_DEFECTS:
    case("data.load_preference_data", _id,
         lambda e, m=_make: __import__("morm_explorer.data.loaders", fromlist=["x"])
         .load_preference_data(m(e, "pairs")), _msg)
    case("data.read_candidates", _id,
         lambda e, m=_make: __import__("morm_explorer.data.candidates", fromlist=["x"])
         .read_candidates(m(e, "cands")), _msg)
    case("cli: morm data import", _id,
         lambda e, m=_make: ["data", "import", m(e, "pairs"), "--name", "d"], _msg)
    case("cli: morm cands import", _id,
         lambda e, m=_make: ["cands", "import", m(e, "cands"), "--name", "c"], _msg)

_CSV_GZ_BUG = ("read_csv (morm_explorer/data/readers.py) reads a .csv.gz with fh.read() outside "
               "any try: a truncated gzip raises EOFError, a traceback; wrap the read as "
               "read_jsonl does (OSError, EOFError, gzip.BadGzipFile -> MormError)")
case("data.load_preference_data", "truncated csv.gz",
     lambda e: __import__("morm_explorer.data.loaders", fromlist=["x"])
     .load_preference_data(_truncated_csv_gz(e)), "cannot read file", bug=_CSV_GZ_BUG)
case("cli: morm cands import", "truncated csv.gz",
     lambda e: ["cands", "import", _truncated_csv_gz(e), "--name", "c"], "cannot read file",
     bug=_CSV_GZ_BUG)


def _huge_response(env: Env) -> Path:
    """A record whose response is 100 MB, written in chunks."""
    p = env.tmp / "in" / "huge.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = json.dumps(good_pair(0, response_a="@")).encode()
    head, tail = rec.split(b'"@"')
    with p.open("wb") as fh:
        fh.write(head + b'"')
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            fh.write(chunk)
        fh.write(b'"' + tail + b"\n")
    return p


case("cli: morm data import", "100 MB response",
     lambda e: ["data", "import", _huge_response(e), "--name", "d"],
     "texts of at most 100,000 characters", slow=True)
case("cli: morm data validate", "100 MB response, --max-chars",
     lambda e: ["data", "validate", _huge_response(e), "--max-chars", "1000"],
     "texts of at most 1,000 characters", slow=True)
case("cli: morm data import", "overlong response under --max-chars",
     lambda e: ["data", "import", e.file("l.jsonl", json.dumps(
         good_pair(0, response_a="y" * 5000)) + "\n"), "--name", "d", "--max-chars", "1000"],
     "the limit is 1,000")
case("data.read_candidates", "prompt_id with two prompt texts",
     lambda e: __import__("morm_explorer.data.candidates", fromlist=["x"]).read_candidates(
         e.file("c.jsonl", GOOD_CANDS + json.dumps(
             {"prompt_id": "p1", "prompt": "other", "response": "r"}) + "\n")),
     "one prompt_id must name one prompt")
case("cli: morm cands import", "non-string prompt_id and response",
     lambda e: ["cands", "import", e.file("c.jsonl", json.dumps(
         {"prompt_id": [1], "prompt": "q", "response": {"a": 1}}) + "\n"), "--name", "c"],
     "expected a string")
case("cli: morm data validate", "unknown preset",
     lambda e: ["data", "validate", e.file("v.jsonl", GOOD_PAIRS), "--preset", "bogus"],
     "hh-rlhf")
for _row, _kind in [("[1, 2]", "list"), ('"text"', "str"), ("42", "int"), ("null", "null")]:
    case("cli: morm cands sample", f"--prompts line {_row}", lambda e, r=_row: [
        "cands", "sample", "--name", "s", "--prompts",
        e.file("p.jsonl", f'{{"prompt": "Hi?"}}\n{r}\n')],
        ("p.jsonl", "line 2", f"expected a JSON object such as {{\"prompt\": \"...\"}}, "
         f"got {_kind}"))


# -- input that must not run away: gzip bombs, endless lines, deep JSON, huge cells, links ---
BOMB = 4_000_000  # inflated bytes of the gzip bombs below (about 4 KB on disk)
DEEP = "[" * 3000 + "]" * 3000  # 6 KB of JSON nested past Python's recursion limit


def _bomb(env: Env) -> Path:
    """A .jsonl.gz of one line of BOMB bytes with no newline."""
    return env.file("bomb.jsonl.gz", gzip.compress(b"x" * BOMB, compresslevel=1))


def _among_good(name: str, bad: str, kind: str = "pairs") -> Callable[[Env], Path]:
    """A JSONL file of 200 good rows with the line ``bad`` in the middle (line 101)."""
    good = (GOOD_PAIRS if kind == "pairs" else GOOD_CANDS).splitlines(keepends=True)
    return lambda e: e.file(name, "".join(good[:100]) + bad + "\n" + "".join(good[100:]))


def _csv_cell(kind: str, chars: int) -> Callable[[Env], Path]:
    """A CSV of 3 good rows and, in the middle, one whose response is ``chars`` characters."""
    if kind == "pairs":
        head, row = "prompt,response_a,response_b,label_helpful\n", "Q{i},A{i},{r},a\n"
    else:
        head, row = "prompt_id,prompt,response\n", "p{i},Q{i},{r}\n"
    rows = [row.format(i=i, r="y" * chars if i == 1 else f"B{i}") for i in range(3)]
    return lambda e: e.file(f"{kind}-cell.csv", head + "".join(rows))


_HUGE_INT = '{"prompt": ' + "1" * 5000 + "}"
_DEEP_META = {  # parsed by json.loads, but too deep for json.dumps in a deeper stack
    k: json.dumps(rec).replace('"@"', '{"a": ' * 900 + "1" + "}" * 900)
    for k, rec in [("pairs", good_pair(1000, meta="@")),
                   ("cands", {"prompt_id": "pm", "prompt": "Q?", "response": "A", "meta": "@"})]}
_DEEP_LABELS = 'prompt,response_a,response_b,labels\nQ,A,B,"' + DEEP + '"\n'
_LOADERS = "morm_explorer.data.loaders"
_CANDS = "morm_explorer.data.candidates"
for _entry, _id, _act, _msg in [
    # a gzip bomb: stopped at --max-bytes of inflated data, a clear file-level error
    ("cli: morm data validate", "gzip bomb past --max-bytes",
     lambda e: ["data", "validate", _bomb(e), "--max-bytes", "1000000"],
     "over the limit of 1,000,000 bytes once decompressed"),
    ("cli: morm data import", "gzip bomb past --max-bytes",
     lambda e: ["data", "import", _bomb(e), "--name", "d", "--max-bytes", "1000000"],
     "over the limit of 1,000,000 bytes once decompressed"),
    ("cli: morm cands import", "gzip bomb past --max-bytes",
     lambda e: ["cands", "import", _bomb(e), "--name", "c", "--max-bytes", "1000000"],
     "over the limit of 1,000,000 bytes once decompressed"),
    ("data.load_preference_data", "gzip bomb past max_bytes",
     lambda e: __import__(_LOADERS, fromlist=["x"]).load_preference_data(
         _bomb(e), max_bytes=1_000_000), "over the limit of 1,000,000 bytes"),
    ("data.read_candidates", "gzip bomb past max_bytes",
     lambda e: __import__(_CANDS, fromlist=["x"]).read_candidates(_bomb(e), max_bytes=1_000_000),
     "over the limit of 1,000,000 bytes"),
    # one endless line: cut at the line limit that --max-chars sets, never held whole
    ("cli: morm data validate", "4 MB line without newline, --max-chars",
     lambda e: ["data", "validate", _bomb(e), "--max-chars", "1000"], "line is too long"),
    ("cli: morm cands import", "4 MB line without newline, --max-chars",
     lambda e: ["cands", "import", _bomb(e), "--name", "c", "--max-chars", "1000"],
     "line is too long"),
    # JSON that json.loads cannot take or that breaks what comes after it
    ("cli: morm data validate", "3,000 nested brackets",
     lambda e: ["data", "validate", _among_good("deep.jsonl", DEEP)(e)], "nested deeper than"),
    ("data.load_preference_data", "3,000 nested brackets",
     lambda e: __import__(_LOADERS, fromlist=["x"]).load_preference_data(
         _among_good("deep.jsonl", DEEP)(e)), "nested deeper than"),
    ("cli: morm cands import", "3,000 nested brackets",
     lambda e: ["cands", "import", _among_good("deep.jsonl", DEEP, "cands")(e), "--name", "c"],
     "nested deeper than"),
    ("cli: morm data import", "meta nested 900 deep",
     lambda e: ["data", "import", _among_good("meta.jsonl", _DEEP_META["pairs"])(e), "--name", "d"],
     "nested deeper than"),
    ("cli: morm data validate", "5,000-digit number",
     lambda e: ["data", "validate", _among_good("int.jsonl", _HUGE_INT)(e)],
     "integer string conversion"),
    ("cli: morm cands import", "5,000-digit number",
     lambda e: ["cands", "import", _among_good("int.jsonl", _HUGE_INT, "cands")(e), "--name",
                "c"], "integer string conversion"),
    ("cli: morm data validate", "csv labels cell nested 3,000 deep",
     lambda e: ["data", "validate", e.file("labels.csv", _DEEP_LABELS)], "nested deeper than"),
    # a CSV cell past the csv module's default limit (131,072 characters)
    ("cli: morm data import", "csv cell of 200,000 characters",
     lambda e: ["data", "import", _csv_cell("pairs", 200_000)(e), "--name", "d"],
     "text is 200,000 characters; the limit is 100,000"),
    ("data.read_candidates", "csv cell of 200,000 characters",
     lambda e: __import__(_CANDS, fromlist=["x"]).read_candidates(
         _csv_cell("cands", 200_000)(e)), "text is 200,000 characters; the limit is 100,000"),
    ("cli: morm cands import", "csv cell of 200,000 characters",
     lambda e: ["cands", "import", _csv_cell("cands", 200_000)(e), "--name", "c"],
     "text is 200,000 characters; the limit is 100,000"),
]:
    case(_entry, _id, _act, _msg)


def _link_out(env: Env, group: str) -> None:
    """A stored dataset or candidate set whose data file is a symlink to a file outside."""
    from morm_explorer.data.candidates import read_candidates, save_candidate_set
    from morm_explorer.data.loaders import load_preference_data

    if group == "datasets":
        env.ws.save_dataset("d", load_preference_data(env.file("ok.jsonl", GOOD_PAIRS)))
        inside, outside = env.ws.dataset_path("d"), env.file("outside.jsonl", GOOD_PAIRS)
    else:
        cset = read_candidates(env.file("ok.jsonl", GOOD_CANDS))
        save_candidate_set(env.ws, "c", cset)
        inside = env.ws.root / "candidates" / "c" / "candidates.parquet"
        outside = env.tmp / "in" / "outside.parquet"
        cset.frame.to_parquet(outside)
    inside.unlink()
    inside.symlink_to(outside)


case("workspace.load_dataset", "data.jsonl is a symlink out of the workspace",
     lambda e: e.ws.load_dataset("d"), "symbolic link", setup=lambda e: _link_out(e, "datasets"))
case("data.load_candidate_set", "candidates.parquet is a symlink out of the workspace",
     lambda e: __import__(_CANDS, fromlist=["x"]).load_candidate_set(e.ws, "c"),
     "symbolic link", setup=lambda e: _link_out(e, "candidates"))


def _stored(ws, group: str, name: str) -> int:
    """Rows stored under ``name``, from the workspace's records of it."""
    from morm_explorer.data.candidates import candidate_set_info

    if group == "data":
        return {d.name: d.n_records for d in ws.list_datasets()}[name]
    return candidate_set_info(ws, name).n_candidates


@pytest.mark.parametrize("bad", ["x" * 200_000, DEEP, _HUGE_INT, "deep meta"],
                         ids=["line over the limit", "deep JSON", "huge int", "deep meta"])
@pytest.mark.parametrize("group", ["data", "cands"])
def test_drop_bad_keeps_the_good_rows(ws, tmp_path, capsys, group, bad):
    """A row the readers cannot parse is one bad row: --drop-bad drops it and keeps the rest."""
    kind = "pairs" if group == "data" else "cands"
    bad = _DEEP_META[kind] if bad == "deep meta" else bad
    path = _among_good(f"{group}.jsonl", bad, kind)(Env(ws, tmp_path))
    argv = [group, "import", str(path), "--name", "x", "--drop-bad", "--max-chars", "1000"]
    assert main(["--workspace", str(ws.root), *argv]) == 0, capsys.readouterr().err
    assert _stored(ws, group, "x") == 200


@pytest.mark.parametrize("group", ["data", "cands"])
def test_csv_cells_past_the_csv_default_limit(ws, tmp_path, capsys, group):
    """Texts between csv's default cell limit (131,072) and --max-chars load; longer ones are
    bad rows that --drop-bad drops."""
    kind = "pairs" if group == "data" else "cands"
    env = Env(ws, tmp_path)
    argv = [group, "import", str(_csv_cell(kind, 150_000)(env)), "--name", "long",
            "--max-chars", "200000"]
    assert main(["--workspace", str(ws.root), *argv]) == 0, capsys.readouterr().err
    argv = [group, "import", str(_csv_cell(kind, 300_000)(env)), "--name", "short",
            "--drop-bad"]
    assert main(["--workspace", str(ws.root), *argv]) == 0, capsys.readouterr().err
    assert [_stored(ws, group, n) for n in ("long", "short")] == [3, 2]


def test_an_endless_line_is_read_in_bounded_memory(tmp_path):
    """32 MB inflated from a gzip, one line with no newline: memory stays near the line limit
    (--max-chars 1000 -> about 1 MB), and the line is reported, not read."""
    import tracemalloc

    from morm_explorer.data.loaders import validate_file

    path = tmp_path / "endless.jsonl.gz"
    path.write_bytes(gzip.compress(b"x" * (32 << 20), compresslevel=1))
    tracemalloc.start()
    try:
        _, report = validate_file(path, max_chars=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert [(i.line, "line is too long" in i.message) for i in report.errors] == [(1, True)]


# -- weights and constraints --------------------------------------------------------------
def _wv(weights):
    from morm_explorer.objectives import weight_vector

    return lambda e: weight_vector(weights, ["helpful", "harmless"])


for _id, _w, _msg in [
    ("NaN weight", {"helpful": NAN}, "finite number"),
    ("infinite weight", {"helpful": INF}, "finite number"),
    ("negative weight", {"helpful": -1.0, "harmless": 1.0}, ">= 0"),
    ("all-zero weights", {"helpful": 0.0, "harmless": 0.0}, "all weights are zero"),
    ("empty weights", {}, "all weights are zero"),
    ("unknown objective", {"funny": 1.0}, "unknown objectives ['funny']"),
    ("text weight", {"helpful": "1"}, "finite number"),
    ("bool weight", {"helpful": True}, "finite number"),
]:
    case("objectives.weight_vector", _id, _wv(_w), _msg)


def _constraint(t):
    from morm_explorer.objectives import Constraint

    return lambda e: Constraint("harmless", t)


for _id, _t in [("NaN threshold", NAN), ("inf threshold", -INF), ("text threshold", "abc"),
                ("None threshold", None)]:
    case("objectives.Constraint", _id, _constraint(_t), "finite number")


def _preset(**kw):
    from morm_explorer.weight_presets import WeightPreset

    return lambda e: WeightPreset(**{"name": "p", "weights": {"helpful": 1.0}, **kw})


_PRESET_BUG = ("WeightPreset.__post_init__ (morm_explorer/weight_presets.py) indexes "
               "c['objective'] / c['threshold'] unchecked: a constraint that is not an object "
               "with both keys raises {}; check the shape and raise MormError "
               "(field='constraints[i]') as PPOConfig does")
for _id, _kw, _msg, _bug in [
    ("preset NaN weight", {"weights": {"helpful": NAN}}, "finite number", None),
    ("preset negative weight", {"weights": {"helpful": -2}}, "finite number >= 0", None),
    ("preset no weights", {"weights": {}}, "at least one weight", None),
    ("preset unknown scalarizer", {"scalarizer": "median"}, "unknown scalarizer", None),
    ("preset bad threshold", {"constraints": [{"objective": "h", "threshold": "abc"}]},
     "finite number", None),
    ("preset constraint without threshold", {"constraints": [{"objective": "helpful"}]},
     "threshold", _PRESET_BUG.format("KeyError")),
    ("preset constraint as text", {"constraints": ["helpful>=1"]}, "constraint",
     _PRESET_BUG.format("TypeError")),
]:
    case("weight_presets.WeightPreset", _id, _preset(**_kw), _msg, bug=_bug)


def _planted(env: Env) -> None:
    """A stored candidate set with planted scores of model 'rm' (no model is run)."""
    from morm_explorer.data.candidates import from_records, save_candidate_set
    from morm_explorer.scoring import store_scores

    recs = [{"prompt_id": f"p{p}", "prompt": f"Prompt {p} {EVIL}?",
             "response": f"**{k}** {EVIL} {p}", "source": k}
            for p in range(4) for k in ("risky", "refusal", "balanced")]
    cset = from_records(recs)
    save_candidate_set(env.ws, "known", cset)
    rm = env.ws.root / "reward_models" / "rm"
    shutil.copytree(env.tiny_rm, rm)
    store_scores(env.ws, "rm", cset, np.random.default_rng(0).normal(size=(len(recs), 2)),
                 ["helpful", "harmless"])


def _explorer_select(weights, constraints=(), standardized=False):
    def act(env: Env):
        from morm_explorer.explore import Choice, Explorer
        from morm_explorer.scoring import score_candidate_set

        scores = score_candidate_set(env.ws, "rm", "known")
        Explorer(scores).select(Choice.of(weights, standardized=standardized,
                                          constraints=constraints))
    return act


for _id, _w, _msg in [("NaN weight", {"helpful": NAN}, "finite number"),
                      ("all zero", {"helpful": 0, "harmless": 0}, "all weights are zero"),
                      ("unknown objective", {"honest": 1}, "unknown objectives"),
                      ("negative", {"helpful": -1, "harmless": 2}, ">= 0")]:
    case("explore.Explorer.select", _id, _explorer_select(_w), _msg, setup=_planted, slow=True)


def _unknown_constraint(env):
    from morm_explorer.objectives import Constraint

    return _explorer_select({"helpful": 1}, [Constraint("honest", 0.0)])(env)


case("explore.Explorer.select", "constraint on unknown objective", _unknown_constraint,
     "unknown objective 'honest'", setup=_planted, slow=True)

SCORE = ["score", "--model", "rm", "--candidates", "known"]
for _id, _extra, _msg in [
    ("NaN weight", ["--weights", "helpful=nan"], "finite number"),
    ("inf weight", ["--weights", "helpful=inf,harmless=1"], "finite number"),
    ("negative weight", ["--weights", "helpful=-1,harmless=1"], ">= 0"),
    ("all zero", ["--weights", "helpful=0,harmless=0"], "all weights are zero"),
    ("unknown objective", ["--weights", "funny=1"], "unknown objectives"),
    ("weight not a number", ["--weights", "helpful=lots"], "expected objective=number"),
    ("constraint with <", ["--weights", "helpful=1", "--constraint", "harmless<3"],
     "expected objective>=number"),
    ("constraint not a number", ["--weights", "helpful=1", "--constraint", "harmless>=abc"],
     "expected objective>=number"),
    ("constraint on unknown objective", ["--weights", "helpful=1", "--constraint",
                                         "honest>=0"], "unknown objective"),
    ("unknown out format", ["--weights", "helpful=1", "--out", "x.xlsx"], "--out must end"),
]:
    case("cli: morm score", _id, lambda e, x=_extra: SCORE + x, _msg, setup=_planted,
         slow=True)


# -- job specs --------------------------------------------------------------------------------
def _spec(kind, data):
    def act(env):
        from morm_explorer.jobs.spec import spec_from_dict

        spec_from_dict(kind, data)
    return act


def _all_kinds() -> list[str]:
    from morm_explorer.jobs.spec import known_kinds

    return known_kinds()


for _kind in _all_kinds():
    case("jobs.spec_from_dict", f"{_kind}: unknown field", _spec(_kind, {"bogus": 1}),
         "unknown field(s) bogus")
    case("jobs.spec_from_dict", f"{_kind}: not an object", _spec(_kind, ["x"]),
         "must be an object")

_SOUP = {"name": "s", "policy_a": "a", "policy_b": "b", "reward_model": "rm"}
_CMP = {"name": "c", "reward_model": "rm"}
_ABSURD = ("{} accepts {}: there is no upper bound, so a typo queues a job that never ends "
           "(or allocates without limit); bound it in __post_init__ as SleepJob and SweepJob "
           "(grid_steps 1..10) do")
for _id, _kind, _data, _msg, _bug in [
    ("job kind unknown", "teleport", {}, "unknown job kind 'teleport'", None),
    ("ppo steps -1", "ppo", {"config": {"steps": -1}}, "steps must be >= 1", None),
    ("ppo steps as text", "ppo", {"config": {"steps": "ten"}}, "must be an integer", None),
    ("ppo steps 2.5", "ppo", {"config": {"steps": 2.5}}, "must be an integer", None),
    ("ppo batch_size 0", "ppo", {"config": {"batch_size": 0}}, "batch_size must be >= 1", None),
    ("ppo lr nan", "ppo", {"config": {"lr": NAN}}, "lr must be a finite number", None),
    ("ppo lr inf", "ppo", {"config": {"lr": INF}}, "lr must be a finite number", None),
    ("ppo kl_coef -1", "ppo", {"config": {"kl_coef": -1}}, "kl_coef must be >= 0", None),
    ("ppo unknown config field", "ppo", {"config": {"bogus": 1}}, "unknown PPOConfig", None),
    ("ppo config not an object", "ppo", {"config": "x"}, "must be an object", None),
    ("ppo NaN weight", "ppo", {"config": {"weights": {"helpful": NAN}}}, "finite number", None),
    ("ppo all-zero weights", "ppo", {"config": {"weights": {"helpful": 0, "harmless": 0}}},
     "all weights are zero", None),
    ("ppo unknown scalarizer", "ppo", {"config": {"scalarizer": "x"}}, "scalarizer must", None),
    ("ppo constraint without threshold", "ppo",
     {"config": {"constraints": [{"objective": "harmless"}]}}, "'objective' and 'threshold'",
     None),
    ("ppo mini batch > batch", "ppo", {"config": {"mini_batch_size": 16, "batch_size": 8}},
     "must be <= batch_size", None),
    ("ppo schedule step -1", "ppo",
     {"config": {"weight_schedule": [{"step": -1, "weights": {}}]}}, "must be >= 0", None),
    ("ppo steps 10**12", "ppo", {"config": {"steps": 10**12}}, "steps",
     _ABSURD.format("PPOConfig (morm_explorer/policy/ppo_config.py)", "steps=10**12")),
    ("ppo overwrite 'no'", "ppo", {"config": {}, "overwrite": "no"}, "overwrite",
     "PPOJob (morm_explorer/policy/ppo_jobs.py) does not type-check overwrite: the string "
     "'no' is truthy, so a job spec meaning 'do not overwrite' replaces the run; require a "
     "bool in __post_init__"),
    ("sample temperature -1", "sample_candidates", {"name": "s", "sampling": {"temperature": -1}},
     "temperature must be >= 0", None),
    ("sample temperature nan", "sample_candidates",
     {"name": "s", "sampling": {"temperature": NAN}}, "finite number", None),
    ("sample n 0", "sample_candidates", {"name": "s", "sampling": {"n": 0}}, "n must be in 1..1024",
     None),
    ("sample top_p 2", "sample_candidates", {"name": "s", "sampling": {"top_p": 2}},
     "top_p must be in (0, 1]", None),
    ("sample limit -5", "sample_candidates", {"name": "s", "limit": -5}, "limit must be", None),
    ("sample device tpu", "sample_candidates", {"name": "s", "device": "tpu"},
     "device must be", None),
    ("sample n 10**9", "sample_candidates", {"name": "s", "sampling": {"n": 10**9}}, "n",
     _ABSURD.format("SamplingConfig (morm_explorer/policy/config.py)", "n=10**9")),
    ("soup lambdas [2]", "soup", {**_SOUP, "lambdas": [2]}, "lambdas must be numbers in [0, 1]",
     None),
    ("soup lambdas [nan]", "soup", {**_SOUP, "lambdas": [NAN]}, "lambdas must be", None),
    ("soup lambdas []", "soup", {**_SOUP, "lambdas": []}, "lambdas must be", None),
    ("soup lambdas text", "soup", {**_SOUP, "lambdas": "0.5"}, "lambdas must be", None),
    ("soup without policy_a", "soup", {**_SOUP, "policy_a": "", "lambdas": [0.5]},
     "policy_a is required", None),
    ("sweep grid_steps 0", "ppo_sweep",
     {"config": {}, "objectives": ["helpful", "harmless"], "grid_steps": 0},
     "grid_steps must be in 1..10", None),
    ("sweep grid_steps 10**6", "ppo_sweep",
     {"config": {}, "objectives": ["helpful", "harmless"], "grid_steps": 10**6},
     "grid_steps must be", None),
    ("sweep one objective twice", "ppo_sweep",
     {"config": {}, "objectives": ["helpful", "helpful"]}, "two or more distinct", None),
    ("sweep bad nested config", "ppo_sweep",
     {"config": {"steps": -1}, "objectives": ["helpful", "harmless"]}, "steps must be", None),
    ("rm epochs -1", "train_reward_model", {"config": {"dataset": "d", "epochs": -1}},
     "epochs must be > 0", None),
    ("rm lr nan", "train_reward_model", {"config": {"dataset": "d", "lr": NAN}},
     "finite number", None),
    ("rm unknown mode", "train_reward_model", {"config": {"dataset": "d", "mode": "quantum"}},
     "mode must be one of", None),
    ("rm batch_size 0", "train_reward_model", {"config": {"dataset": "d", "batch_size": 0}},
     "batch_size must be > 0", None),
    ("rm val_fraction 1.5", "train_reward_model",
     {"config": {"dataset": "d", "val_fraction": 1.5}}, "val_fraction must be", None),
    ("rm unknown config field", "train_reward_model",
     {"config": {"dataset": "d", "bogus": 1}}, "unknown TrainConfig fields", None),
    ("rm epochs as text", "train_reward_model", {"config": {"dataset": "d", "epochs": "many"}},
     "epochs must be an integer", None),
    ("rm config without dataset", "train_reward_model", {"config": {}}, "dataset",
     "TrainRewardModelJob (morm_explorer/reward/jobs.py) builds TrainConfig(**config) without "
     "catching TypeError: a config missing the required 'dataset' raises TypeError "
     "'missing 1 required keyword-only argument'; TrainConfig.from_dict should check "
     "required fields and raise MormError(field='dataset')"),
    ("compare 1 policy", "compare", {**_CMP, "policies": ["a"]}, "compare 2 to 4 policies",
     None),
    ("compare 5 policies", "compare", {**_CMP, "policies": list("abcde")},
     "compare 2 to 4 policies", None),
    ("compare a policy twice", "compare", {**_CMP, "policies": ["a", "a"]}, "listed twice",
     None),
    ("compare policies as text", "compare", {**_CMP, "policies": "ab"}, "must be a list", None),
    ("compare limit -1", "compare", {**_CMP, "policies": ["a", "b"], "limit": -1},
     "limit must be", None),
    ("score batch_size 0", "score_candidates", {"model": "m", "candidates": "c",
                                                 "batch_size": 0}, "batch_size must be", None),
    ("sleep seconds nan", "sleep", {"seconds": NAN}, "seconds must be in", None),
    ("prepare_demo rm_epochs -1", "prepare_demo", {"rm_epochs": -1}, "rm_epochs",
     "PrepareDemoJob (morm_explorer/demo_jobs.py) validates none of its fields: rm_epochs=-1, "
     "samples=0 and ppo_steps=10**12 are all accepted; add a __post_init__ with ranges"),
    ("prepare_demo algorithm sgd", "prepare_demo", {"algorithm": "sgd"}, "algorithm must be",
     None),
    ("prepare_demo rl_lr -1", "prepare_demo", {"rl_lr": -1}, "rl_lr", None),
    ("prepare_demo group_size 0", "prepare_demo", {"group_size": 0}, "group_size", None),
    ("prepare_demo lora_target_modules text", "prepare_demo",
     {"lora_target_modules": "q_proj"}, "lora_target_modules must be a list", None),
    ("prepare_demo adapter_dtype int8", "prepare_demo", {"adapter_dtype": "int8"},
     "adapter_dtype must be one of", None),
    ("ppo lora_target_modules [1]", "ppo", {"config": {"lora_target_modules": [1]}},
     "lora_target_modules must be layer names", None),
    ("ppo adapter_dtype bfloat16", "ppo", {"config": {"adapter_dtype": "bfloat16"}},
     "adapter_dtype must be one of float32, float16", None),
]:
    case("jobs.spec_from_dict", _id, _spec(_kind, _data), _msg, bug=_bug)

# the same through the CLI flags (argparse errors exit 2 with usage on stderr)
for _id, _argv, _msg, _bug in [
    ("ppo train --steps -1", ["ppo", "train", "--steps", "-1"], "steps must be >= 1", None),
    ("ppo train --steps abc", ["ppo", "train", "--steps", "abc"], "invalid int value", None),
    ("ppo train --batch-size 0", ["ppo", "train", "--batch-size", "0"], "batch_size must be",
     None),
    ("ppo train --lr nan", ["ppo", "train", "--lr", "nan"], "finite number", None),
    ("ppo train --weights helpful=nan", ["ppo", "train", "--weights", "helpful=nan"],
     "finite number", None),
    ("ppo train all-zero weights", ["ppo", "train", "--weights", "helpful=0,harmless=0"],
     "all weights are zero", None),
    ("ppo train --constraints not JSON", ["ppo", "train", "--constraints", "not json"],
     "expected a JSON list", None),
    ("ppo sweep --grid-steps 0", ["ppo", "sweep", "--objectives", "helpful,harmless",
                                  "--grid-steps", "0"], "grid_steps must be", None),
    ("ppo soup --lambdas 2", ["ppo", "soup", "--name", "s", "--policy-a", "a", "--policy-b",
                              "b", "--reward-model", "rm", "--lambdas", "2"],
     "lambdas must be numbers in [0, 1]", None),
    ("ppo soup --lambdas 0.5,abc", ["ppo", "soup", "--name", "s", "--policy-a", "a",
                                    "--policy-b", "b", "--reward-model", "rm", "--lambdas",
                                    "0.5,abc"], "lambdas",
     "cmd_soup (morm_explorer/policy/cli.py) parses --lambdas with a bare float(x): a "
     "non-number raises ValueError, a traceback; parse it in an argparse type= function or "
     "raise MormError(field='lambdas')"),
    ("rm train --epochs -1", ["rm", "train", "--dataset", "d", "--epochs", "-1"],
     "epochs must be > 0", None),
    ("rm train --lr inf", ["rm", "train", "--dataset", "d", "--lr", "inf"], "finite number",
     None),
    ("rm train --mode quantum", ["rm", "train", "--dataset", "d", "--mode", "quantum"],
     "invalid choice", None),
    ("rm train unknown dataset", ["rm", "train", "--dataset", "nope"], "no dataset named",
     None),
    ("rm train --loss-weights text", ["rm", "train", "--dataset", "d", "--loss-weights",
                                      "helpful=abc"], "expected objective=number", None),
    ("cands sample --temperature -1", ["cands", "sample", "--name", "s", "--temperature",
                                       "-1"], "temperature must be >= 0", None),
    ("cands sample --n 0", ["cands", "sample", "--name", "s", "--n", "0"], "n must be in 1..1024",
     None),
    ("cands sample --top-p nan", ["cands", "sample", "--name", "s", "--top-p", "nan"],
     "finite number", None),
    ("cands sample --limit -3", ["cands", "sample", "--name", "s", "--limit", "-3"],
     "limit must be", None),
    ("jobs unknown action", ["jobs", "submit", "bogus"], "invalid choice", None),
]:
    case("cli: job flags", _id, _argv, _msg, bug=_bug)


# -- paths that escape the workspace (refused; sanitized ones are in test_names_stay_inside)
HOSTILE_NAMES = ["../../etc/passwd", "/abs/path", "..", "a/../../b", "", "x" * 200, ".",
                 "  ", "../", "~root"]
REFUSED = {"..", "", "x" * 200, ".", "  ", "../"}
for _name in sorted(REFUSED):
    _label = f"{_name[:12]!r}" + ("x200" if len(_name) == 200 else "")
    case("workspace.artifact_dir", f"name {_label}",
         lambda e, n=_name: e.ws.artifact_dir("datasets", n), "invalid name")
    case("cli: morm data import", f"--name {_label}",
         lambda e, n=_name: ["data", "import", e.file("ok.jsonl", GOOD_PAIRS), "--name", n],
         "invalid name")
    case("cli: morm cands import", f"--name {_label}",
         lambda e, n=_name: ["cands", "import", e.file("ok.jsonl", GOOD_CANDS), "--name", n],
         "invalid name")
    case("cli: morm rm train", f"--name {_label}",
         lambda e, n=_name: ["rm", "train", "--dataset", "d", "--name", n], "invalid name")
    case("cli: morm cands sample", f"--name {_label}",
         lambda e, n=_name: ["cands", "sample", "--name", n], "invalid name")


# -- model folders ------------------------------------------------------------------------------
def _rm_folder(env: Env, damage: str) -> Path:
    dest = env.tmp / "models" / "rm"
    shutil.copytree(env.tiny_rm, dest)
    if damage == "pickle heads":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(str(dest / "heads.safetensors")), dest / "heads.bin")
        (dest / "heads.safetensors").unlink()
    elif damage == "config not JSON":
        (dest / "config.json").write_text("{not json")
    elif damage == "config without model":
        (dest / "config.json").write_text("{}")
    elif damage == "truncated safetensors":
        data = (dest / "heads.safetensors").read_bytes()
        (dest / "heads.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage safetensors":
        (dest / "heads.safetensors").write_bytes(b"\xff" * 64)
    elif damage == "no config":
        (dest / "config.json").unlink()
    elif damage.startswith("heads: "):
        _damage_safetensors(dest / "heads.safetensors", damage.removeprefix("heads: "))
    elif damage == "head weight of shape (3, 7)":
        from safetensors.torch import load_file, save_file

        heads = load_file(str(dest / "heads.safetensors"))
        heads["0.linear.weight"] = heads["0.linear.weight"].new_zeros(3, 7)
        save_file(heads, str(dest / "heads.safetensors"))
    elif damage == "backbone weight of the wrong shape":
        from safetensors.torch import load_file, save_file

        config = json.loads((dest / "config.json").read_text())
        state = load_file(str(Path(config["model"]["backbone"]) / "model.safetensors"))
        state["embeddings.word_embeddings.weight"] = state[
            "embeddings.word_embeddings.weight"][:7].clone()
        save_file(state, str(dest / "backbone-0.safetensors"))
        _edit_config(dest, backbone_trained=True)
    elif damage == "stats.mean as text":
        config = json.loads((dest / "config.json").read_text())
        _edit_config(dest, stats={**config["stats"], "mean": "high"})
    elif damage == "n_backbones -1":
        _edit_config(dest, n_backbones=-1)
    return dest


def _edit_config(folder: Path, **fields) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **fields}))


def _st_split(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's JSON header and its data bytes."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def _damage_safetensors(path: Path, damage: str) -> None:
    """Rewrite a safetensors file's header; ``n`` is the header length it then declares."""
    header, body = _st_split(path)
    raw, n = json.dumps(header).encode(), None
    first = header[min(k for k in header if k != "__metadata__")]
    if damage == "header length 2^62":
        n = 2**62
    elif damage == "header length past the end":
        n = len(raw) + len(body) + 1
    elif damage == "header not JSON":
        raw = b"{not json" + b" " * 7
    elif damage == "tensor past the end":
        first["data_offsets"][1] = len(body) + 4096
        raw = json.dumps(header).encode()
    elif damage == "shape of 2^62 bytes":
        first["shape"] = [2**31, 2**29]  # float32: 2^60 numbers
        raw = json.dumps(header).encode()
    path.write_bytes((len(raw) if n is None else n).to_bytes(8, "little") + raw + body)


# (damage, what the message says after "<file>: cannot read safetensors file: ")
SAFETENSORS_DAMAGES = [
    ("header length 2^62", "its header length, 4,611,686,018,427,387,904 bytes, runs past "
                           "the end of the file"),
    ("header length past the end", "runs past the end of the file"),
    ("header not JSON", "its header is not valid JSON"),
    ("tensor past the end", "lie outside the file's"),
    ("shape of 2^62 bytes", "need 4,611,686,018,427,387,904 bytes, but its data_offsets span"),
]


def _load_rm(damage):
    def act(env):
        from morm_explorer.reward.artifact import load_reward_model

        load_reward_model(_rm_folder(env, damage))
    return act


for _damage, _msg in [("pickle heads", "only safetensors are read"),
                      ("config not JSON", "config"), ("config without model", "model config"),
                      ("truncated safetensors", "cannot read safetensors"),
                      ("garbage safetensors", "cannot read safetensors"),
                      ("no config", "config")]:
    case("reward.artifact.load_reward_model", _damage, _load_rm(_damage), _msg, slow=True)

RM_DAMAGES = [(f"heads: {d}", ("heads.safetensors: cannot read safetensors file: ", m))
              for d, m in SAFETENSORS_DAMAGES] + [
    ("head weight of shape (3, 7)",
     ("heads.safetensors: tensor '0.linear.weight' has shape (3, 7); the config "
      "(hidden 64, 2 objectives) needs (2, 64)")),
    ("backbone weight of the wrong shape",
     ("backbone-0.safetensors: tensor 'embeddings.word_embeddings.weight' has shape (7, 32)",
      "needs (")),
    ("stats.mean as text", ("config.json, field 'stats.mean': expected a list of 2 finite "
                            "numbers, got 'high'")),
    ("n_backbones -1", ("config.json, field 'n_backbones': must be 1 or 2",
                        "got -1")),
]
for _damage, _msg in RM_DAMAGES:
    case("reward.artifact.load_reward_model", _damage, _load_rm(_damage), _msg, slow=True)
    case("cli: morm rm eval", _damage, lambda e, d=_damage: [
        "rm", "eval", _rm_folder(e, d), "--data", e.file("pairs.jsonl", GOOD_PAIRS)], _msg,
        slow=True)


def _policy_folder(env: Env, damage: str) -> Path:
    from tests.test_policy import _save_tiny

    dest = env.tmp / "models" / "pol"
    _save_tiny(dest)
    if damage == "pickle weights only":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(str(dest / "model.safetensors")), dest / "pytorch_model.bin")
        (dest / "model.safetensors").unlink()
    elif damage == "no config.json":
        (dest / "config.json").unlink()
    elif damage == "truncated safetensors":
        data = (dest / "model.safetensors").read_bytes()
        (dest / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif damage == "weights: lm_head.weight of shape (3, 7)":
        from safetensors.torch import load_file, save_file

        state = load_file(str(dest / "model.safetensors"))
        state["lm_head.weight"] = state["lm_head.weight"].new_zeros(3, 7)
        save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    elif damage.startswith("weights: "):
        _damage_safetensors(dest / "model.safetensors", damage.removeprefix("weights: "))
    elif damage in CHAT_TEMPLATES:
        (dest / "chat_template.jinja").write_text(CHAT_TEMPLATES[damage])
    return dest


CHAT_TEMPLATES = {  # hostile chat templates: each must stop within seconds
    "template looping 10^10 times": "{% for i in range(10000000000) %}x{% endfor %}",
    "template nesting loops 10^10 times": "{% for i in range(100000) %}{% for j in "
                                          "range(100000) %}{% endfor %}{% endfor %}",
    "template writing 10^7 characters": "{% for i in range(100) %}{{ 'x' * 100000 }}"
                                        "{% endfor %}",
    "template building a 10^7-character string": "{{ 'x' * 10000000 }}",
}


def _load_pol(damage):
    def act(env):
        from morm_explorer.policy.load import load_policy

        load_policy(str(_policy_folder(env, damage)), workspace=env.ws)
    return act


for _damage, _msg, _bug in [("pickle weights only", "cannot load policy", None),
                            ("no config.json", "no config.json", None),
                            ("truncated safetensors", "cannot load policy",
                             "load_policy (morm_explorer/policy/load.py) catches only OSError, "
                             "ValueError and KeyError around from_pretrained: a truncated "
                             "model.safetensors raises safetensors' SafetensorError, a "
                             "traceback; catch safetensors.SafetensorError too")]:
    case("policy.load.load_policy", _damage, _load_pol(_damage), _msg, bug=_bug, slow=True)

_SAMPLE = ["--name", "s", "--limit", "1", "--n", "1", "--max-new-tokens", "2"]
for _damage, _msg in [*SAFETENSORS_DAMAGES, (
        "lm_head.weight of shape (3, 7)",
        "tensor 'lm_head.weight' has shape (3, 7); its config.json needs (35, 32)")]:
    _msg = ("model.safetensors: cannot load policy", _msg)
    case("policy.load.load_policy", f"weights: {_damage}", _load_pol(f"weights: {_damage}"),
         _msg, slow=True)
    case("cli: morm cands sample", f"weights: {_damage}", lambda e, d=_damage: [
        "cands", "sample", "--policy", _policy_folder(e, f"weights: {d}"), *_SAMPLE], _msg,
        slow=True)


def _checkpoint_pieces():
    """A Linear "policy", a value head and AdamW after one step, as test_faults makes them."""
    import torch

    torch.manual_seed(0)
    model, head = torch.nn.Linear(64, 64), torch.nn.Linear(64, 2)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()])
    (model(torch.ones(1, 64)).sum() + head(torch.ones(1, 64)).sum()).backward()
    opt.step()
    return model, head, opt


def _load_checkpoint(damage):
    def act(env):
        from safetensors.torch import load_file, save_file

        from morm_explorer.policy import ppo_checkpoint as pc
        from morm_explorer.policy.ppo_config import PPOConfig

        cfg = PPOConfig(name="x", reward_model="rm")
        ckpt = pc.save_checkpoint(env.tmp / "run", cfg, *_checkpoint_pieces(), step=1,
                                  history=[])
        file, what = damage.split(": ")
        if what == "weight of shape (3, 7)":
            tensors = load_file(str(ckpt / file))
            tensors["weight"] = tensors["weight"].new_zeros(3, 7)
            save_file(tensors, str(ckpt / file))
        else:
            _damage_safetensors(ckpt / file, what)
        pc.load_checkpoint(ckpt, cfg, *_checkpoint_pieces())
    return act


for _damage, _msg in [
    ("policy.safetensors: weight of shape (3, 7)",
     "policy.safetensors: tensor 'weight' has shape (3, 7); the policy needs (64, 64)"),
    ("value_head.safetensors: weight of shape (3, 7)",
     "value_head.safetensors: tensor 'weight' has shape (3, 7); the value head needs (2, 64)"),
    ("optimizer.safetensors: header length 2^62",
     "optimizer.safetensors: cannot read safetensors file: its header length, "
     "4,611,686,018,427,387,904 bytes, runs past the end of the file"),
]:
    case("policy.ppo_checkpoint.load_checkpoint", _damage, _load_checkpoint(_damage), _msg)


def _sample_tiny(damage):
    def act(env):
        from morm_explorer.policy.config import SamplingConfig
        from morm_explorer.policy.generate import sample
        from morm_explorer.policy.load import load_policy

        model, tok = load_policy(str(_policy_folder(env, damage)))
        sample(model, tok, ["hello"], SamplingConfig(n=1, max_new_tokens=2))
    return act


for _damage, _msg in [
    ("template looping 10^10 times", "passes 1e+10 to a call; the limit is 1,000,000"),
    ("template nesting loops 10^10 times", "ran past its time limit of 2 s"),
    ("template writing 10^7 characters", "wrote over 1,000,000 characters (the limit)"),
    ("template building a 10^7-character string",
     "builds a value of over 1,000,000 characters (the limit)"),
]:
    _msg = ("the chat template of ", "models/pol", _msg)
    case("policy.generate.sample", _damage, _sample_tiny(_damage), _msg, slow=True, timeout=30)
    case("cli: morm cands sample", _damage, lambda e, d=_damage: [
        "cands", "sample", "--policy", _policy_folder(e, d), *_SAMPLE], _msg, slow=True,
        timeout=30)


# -- policies named for a job: checked before anything is queued (policy.source) ---------------
def _named_policy(damage: str) -> Callable[[Env], str]:
    """A policy reference: a copy of the tiny policy folder with ``damage``, or the folder
    missing, or (``name: ...``) a name as it is."""
    def make(env: Env) -> str:
        from tests.test_policy import _save_tiny

        if damage.startswith("name: "):
            return damage.removeprefix("name: ")
        dest = env.tmp / "models" / "pol"
        if damage == "missing folder":
            return str(dest)
        _save_tiny(dest)
        config = json.loads((dest / "config.json").read_text())
        if damage == "no config.json":
            (dest / "config.json").unlink()
        elif damage == "a BERT config":
            (dest / "config.json").write_text(json.dumps({
                "model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 32,
                "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}))
        elif damage == "auto_map without the flag":
            (dest / "my_model.py").write_text("raise SystemExit('remote code ran')\n")
            (dest / "config.json").write_text(json.dumps({**config, "model_type": "mine",
                "auto_map": {"AutoModelForCausalLM": "my_model.MyModel"}}))
        elif damage == "no tokenizer":
            for f in ("tokenizer.json", "tokenizer_config.json"):
                (dest / f).unlink(missing_ok=True)
        elif damage == "pickle weights only":
            (dest / "model.safetensors").rename(dest / "pytorch_model.bin")
        return str(dest)
    return make


def _check_source(damage: str, revision: str | None = None):
    def act(env):
        from morm_explorer.policy.source import check_policy_source

        check_policy_source(_named_policy(damage)(env), revision, workspace=env.ws)
    return act


POLICY_SOURCES = [  # (damage, revision, message fragment, a folder is built)
    ("missing folder", None, "no such folder", False),
    ("no config.json", None, "not a model folder: no config.json", True),
    ("a BERT config", None, "not a causal LM: its config.json names BertForMaskedLM", True),
    ("auto_map without the flag", None, "which is run only with trust_remote_code", True),
    ("no tokenizer", None, "no tokenizer: the folder holds none of", True),
    ("pickle weights only", None, "only pytorch_model.bin, pickle files", True),
    ("name: no-such-org/no-such-model", None, "HF_HUB_OFFLINE is set, so nothing is "
     "downloaded", False),
    ("name: no-such-policy", None, "no policy fine-tuned here", False),
    ("name: org/<script>alert(1)</script>", None, "no such folder", False),
    ("name: <b>model</b>", None, "neither a local folder nor a hub name", False),
    ("name: org/x\x00y", None, "neither a local folder nor a hub name", False),
    ("name: " + "x" * 5000, None, "policy must be at most 4096 characters", False),
    ("name: ~no-such-user-here/m", None, "no such folder", False),
    ("name: org/model", "../../etc/passwd", "revision must be a branch, tag or commit", False),
    ("name: org/model@v1", "v2", "two revisions given", False),
    ("name: smollm2", "v1", "is the built-in policy", False),
    ("tiny folder with a revision", "main", "is a local folder", True),
]
for _damage, _rev, _msg, _slow in POLICY_SOURCES:
    _label = _damage[:40] + (f" @ {_rev}" if _rev else "")
    case("policy.source.check_policy_source", _label, _check_source(_damage, _rev), _msg,
         slow=_slow)
for _damage, _flag, _msg in [
    ("missing folder", "--policy", "no such folder"),
    ("a BERT config", "--policy", "not a causal LM"),
    ("auto_map without the flag", "--policy", "which is run only with trust_remote_code"),
    ("name: no-such-org/no-such-model", "--policy", "HF_HUB_OFFLINE is set"),
]:
    case("cli: morm cands sample", f"--policy {_damage[:30]}", lambda e, d=_damage: [
        "cands", "sample", "--name", "s", "--policy", _named_policy(d)(e)], _msg,
        slow=_damage in ("a BERT config", "auto_map without the flag"))
    case("cli: morm ppo train", f"--policy {_damage[:30]}", lambda e, d=_damage: [
        "ppo", "train", "--name", "r", "--policy", _named_policy(d)(e)], _msg,
        slow=_damage in ("a BERT config", "auto_map without the flag"))
case("cli: morm cands sample", "--revision ../x", [
    "cands", "sample", "--name", "s", "--policy", "org/model", "--revision", "../x"],
     "revision must be a branch")
case("cli: morm ppo soup", "--policy-b missing", [
    "ppo", "soup", "--name", "s", "--policy-a", "smollm2", "--policy-b", "no-such-policy",
    "--reward-model", "rm"], "no policy fine-tuned here")


# -- rating votes ----------------------------------------------------------------------------
def _session(env: Env) -> None:
    from morm_explorer.data.candidates import from_records, save_candidate_set
    from morm_explorer.evaluation.sessions import create_session, join

    recs = [{"prompt_id": f"q{i}", "prompt": f"Q {i} {EVIL}", "response": f"A{j} {i} {EVIL}",
             "source": p} for i in range(3) for j, p in enumerate(("alpha", "beta"))]
    save_candidate_set(env.ws, "cs", from_records(recs))
    create_session(env.ws, "s", "cs", objectives=["helpful", "harmless"])
    join(env.ws, "s", "ann")


def _vote(answers, item=1, rater="ann", **kw):
    def act(env):
        from morm_explorer.evaluation.sessions import vote

        vote(env.ws, "s", item, rater, answers, **kw)
    return act


_OK = {"helpful": "a", "harmless": "tie"}
for _id, _act, _msg in [
    ("unknown objective", _vote({**_OK, "honest": "a"}), "honest"),
    ("missing objective", _vote({"helpful": "a"}), "harmless"),
    ("bad answer value", _vote({**_OK, "helpful": "maybe"}), "maybe"),
    ("answer None", _vote({**_OK, "helpful": None}), "helpful"),
    ("answers as a list", _vote(["a", "b"]), "answers"),
    ("overlong comment", _vote(_OK, comment="x" * 100_000), "comment"),
    ("bad overall", _vote(_OK, overall="c"), "overall"),
    ("unknown item", _vote(_OK, item=999), "999"),
    ("item id as text", _vote(_OK, item="1"), "item id is an integer"),
    ("rater not joined", _vote(_OK, rater="bob"), "has not joined"),
    ("hostile rater name", _vote(_OK, rater=EVIL), "rater"),
    ("unknown session", lambda e: __import__("morm_explorer.evaluation.sessions",
                                             fromlist=["x"]).vote(e.ws, "nope", 1, "ann", _OK),
     "no rating session named 'nope'"),
]:
    case("evaluation.sessions.vote", _id, _act, _msg, setup=_session)

for _name in ["../../etc/passwd", "/abs/path", "..", "", "x" * 200, EVIL]:
    case("evaluation.sessions.create_session", f"name {_name[:16]!r}",
         lambda e, n=_name: __import__("morm_explorer.evaluation.sessions", fromlist=["x"])
         .create_session(e.ws, n, "cs", objectives=["helpful"]), "name", setup=_session)


# -- reward models not trained here: external classifiers and composites (reward.external,
# reward.composite); the reference set 'ref' is in the workspace before the snapshot ----------
def _reference(env: Env) -> None:
    from tests.test_external_rm import add_reference

    add_reference(env.ws)


def _classifier(env: Env, damage: str) -> str:
    """A tiny BERT classifier folder (3 outputs where the damage needs them) with ``damage``."""
    from tests.test_external_rm import LABELS3, save_bert

    dest = env.tmp / "models" / "cls"
    if damage == "3 labels that are no objective names":
        return save_bert(dest, 3, {0: "very good", 1: "bad!", 2: "ok"})
    save_bert(dest, 3, LABELS3) if damage == "3 outputs, 2 --objectives" else save_bert(dest)
    if damage == "folder without safetensors":
        (dest / "model.safetensors").rename(dest / "pytorch_model.bin")
    elif damage == "auto_map without --trust-remote-code":
        (dest / "modeling_x.py").write_text("raise SystemExit('remote code ran')\n")
        config = json.loads((dest / "config.json").read_text())
        (dest / "config.json").write_text(json.dumps(
            {**config, "auto_map": {"AutoModelForSequenceClassification": "modeling_x.X"}}))
    return str(dest)


def _add_external(damage: str):
    def act(env):
        from morm_explorer.reward.external import ExternalConfig, add_external

        objectives = ("a", "b") if damage == "3 outputs, 2 --objectives" else ()
        add_external(env.ws, "ext", ExternalConfig(model=_classifier(env, damage),
                                                   objectives=objectives), reference="ref")
    return act


for _damage, _msg in [
    ("folder without safetensors", "no safetensors weights in the folder"),
    ("auto_map without --trust-remote-code", "config.json has auto_map"),
    ("3 outputs, 2 --objectives", "--objectives has 2 names for the model's 3 outputs"),
    ("3 labels that are no objective names", "are not 3 distinct objective names"),
]:
    case("reward.external.add_external", _damage, _add_external(_damage), _msg,
         setup=_reference, slow=True)
    case("cli: morm rm add", _damage, lambda e, d=_damage: [
        "rm", "add", "ext", "--model", _classifier(e, d), "--reference", "ref", "--device",
        "cpu", *(["--objectives", "a,b"] if d == "3 outputs, 2 --objectives" else [])],
        _msg, setup=_reference, slow=True)

REWARD_FUNCTIONS = """
import math, time
def raises(prompts, completions, **kwargs):
    raise ValueError("no score for you")
def short(prompts, completions, **kwargs):
    return [1.0] * (len(completions) - 1)
def nan(prompts, completions, **kwargs):
    return [math.nan] * len(completions)
def slow(prompts, completions, **kwargs):
    time.sleep(60)
"""


def _compose(function: str, allow_code: bool = True):
    def act(env):
        from morm_explorer.reward.composite import compose

        file = env.file("funcs.py", REWARD_FUNCTIONS)
        compose(env.ws, "combo", [f"f=py:{file}:{function}"], reference="ref",
                allow_code=allow_code, time_limit=1.0)
    return act


for _id, _act, _msg in [
    ("reward function raises", _compose("raises"), "part 'f' (funcs.py:raises) raised "
                                                   "ValueError: no score for you"),
    ("reward function returns the wrong length", _compose("short"),
     "part 'f' (funcs.py:short) returned 11 values for a batch of 12 completions"),
    ("reward function returns NaN", _compose("nan"),
     "part 'f' (funcs.py:nan) returned nan for completion 0"),
    ("reward function takes too long", _compose("slow"),
     "part 'f' (funcs.py:slow) ran past its time limit of 1 s"),
    ("code part without --allow-code", _compose("short", allow_code=False),
     "needs consent (--allow-code"),
    ("unknown rule", lambda e: __import__("morm_explorer.reward.composite", fromlist=["x"])
     .compose(e.ws, "combo", ["f=rule:size"], reference="ref"), "unknown rule 'size'"),
    ("catastrophic pattern", lambda e: __import__("morm_explorer.reward.composite",
                                                  fromlist=["x"])
     .compose(e.ws, "combo", ["f=rule:regex=" + "x" * 600], reference="ref"),
     "a pattern of 1 to 500 characters"),
]:
    case("reward.composite.compose", _id, _act, _msg, setup=_reference, timeout=60)
case("cli: morm rm compose", "reward function raises", lambda e: [
    "rm", "compose", "combo", "--part", f"f=py:{e.file('funcs.py', REWARD_FUNCTIONS)}:raises",
    "--allow-code", "--reference", "ref", "--device", "cpu"],
    "raised ValueError: no score for you", setup=_reference)
case("cli: morm rm compose", "code part without --allow-code", lambda e: [
    "rm", "compose", "combo", "--part", f"f=py:{e.file('funcs.py', REWARD_FUNCTIONS)}:nan",
    "--reference", "ref"], "needs consent (--allow-code", setup=_reference)


def _manifest(env: Env, damage: str) -> Path:
    """A manifest folder written by hand, with ``damage``."""
    dest = env.tmp / "models" / "manifest"
    dest.mkdir(parents=True)
    config = {"format": "morm-reward-model", "kind": "external",
              "model": {"objectives": ["reward"], "architecture": "external", "backbone": "x"},
              "source": {"model": str(env.tmp / "gone"), "local": True}, "stats": None}
    if damage == "unknown kind":
        config["kind"] = "plugin"
    elif damage == "composite with code and no consent":
        file = env.file("funcs.py", REWARD_FUNCTIONS)
        config.update(kind="composite", allow_code=False, parts=[{
            "objective": "reward", "kind": "py", "spec": f"py:{file}:nan", "file": str(file),
            "sha256": hashlib.sha256(file.read_bytes()).hexdigest(), "function": "nan"}])
    elif damage == "composite part outside the workspace":
        config.update(kind="composite", parts=[{"objective": "reward", "kind": "model",
                                                "spec": "..", "model": "../../etc"}])
    (dest / "config.json").write_text(json.dumps(config))
    return dest


for _damage, _msg in [("external model whose folder is gone", "not a model folder"),
                      ("unknown kind", "unknown kind 'plugin'"),
                      ("composite with code and no consent", "needs consent"),
                      ("composite part outside the workspace", "a part is not valid")]:
    case("reward.artifact.load_reward_model", _damage, lambda e, d=_damage: __import__(
        "morm_explorer.reward.artifact", fromlist=["x"]).load_reward_model(_manifest(e, d)),
        _msg)


# -- the runner ----------------------------------------------------------------------------
def _params():
    out = []
    for c in CASES:
        marks = list(c.marks)
        if c.bug:
            marks.append(pytest.mark.xfail(strict=True, reason=c.bug))
        out.append(pytest.param(c, id=f"{c.entry} | {c.id}", marks=marks))
    return out


@pytest.fixture
def env(ws, tmp_path, request):
    e = Env(ws, tmp_path)
    e.tiny_rm = None
    return e


def _needs_tiny_rm(c: Case) -> bool:
    return c.setup is _planted or c.entry in ("reward.artifact.load_reward_model",
                                              "cli: morm rm eval")


@contextmanager
def _time_limit(seconds: int | None) -> Iterator[None]:
    """Fail a case still running after ``seconds`` rather than hang the suite (SIGALRM
    interrupts Python code in the main thread)."""
    if not seconds:
        yield
        return

    def expire(signum, frame):
        pytest.fail(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("c", _params())
def test_bad_input(c: Case, env, request, capsys, monkeypatch):
    if _needs_tiny_rm(c):
        env.tiny_rm = request.getfixturevalue("tiny_rm")
    if c.setup:
        c.setup(env)
    before = snapshot(env.ws)
    if c.entry.startswith(("reward.artifact", "policy.load")):
        _forbid_unpickling(monkeypatch)
    expect = c.expect if isinstance(c.expect, tuple) else (c.expect,)
    if c.entry.startswith("cli"):
        argv = c.action(env) if callable(c.action) else c.action
        capsys.readouterr()
        try:
            with _time_limit(c.timeout):
                rc = main(["--workspace", str(env.ws.root), *map(str, argv)])
        except SystemExit as e:  # argparse: usage and the error on stderr
            rc = e.code
        out, err = capsys.readouterr()
        assert rc in (1, 2), (rc, err)
        assert "Traceback" not in err
        if rc == 1:  # `morm data validate` prints its report on stdout
            err += out
        assert all(x in err for x in expect), err
    else:
        with pytest.raises(MormError) as info, _time_limit(c.timeout):
            c.action(env)
        assert all(x in str(info.value) for x in expect), str(info.value)
    assert snapshot(env.ws) == before


def _forbid_unpickling(monkeypatch) -> None:
    import torch

    def refuse(*a, **k):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)


# -- sanitized, not refused: the path stays inside ---------------------------------------------
@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if n not in REFUSED])
def test_names_stay_inside(ws, name):
    from morm_explorer.data.candidates import from_records, save_candidate_set
    from morm_explorer.data.loaders import Dataset
    from morm_explorer.data.validation import ValidationReport
    from morm_explorer.weight_presets import WeightPreset, save_preset

    root = ws.root.resolve()
    for group in ("datasets", "candidates", "policies", "comparisons", "reward_models"):
        path = ws.artifact_dir(group, name)
        assert root in path.parents and ".." not in path.parts
    ds = Dataset([good_pair(0)], "pairwise", ValidationReport(file="x"))
    info = ws.save_dataset(name, ds)
    assert "/" not in info.name and root in ws.dataset_path(info.name).resolve().parents
    cinfo = save_candidate_set(ws, name, from_records(
        [{"prompt_id": "p", "prompt": "q", "response": "r"}]))
    assert "/" not in cinfo.name
    preset = save_preset(ws, WeightPreset(name, {"helpful": 1.0}))
    assert "/" not in preset.name
    outside = [p for p in ws.root.parent.rglob("*")
               if ws.root not in p.parents and p != ws.root]
    assert all(p.name in ("ws",) or p.is_dir() for p in outside), outside


def test_case_count():
    by_entry: dict[str, int] = {}
    for c in CASES:
        by_entry[c.entry] = by_entry.get(c.entry, 0) + 1
    print(f"\n{len(CASES)} bad-input cases:", json.dumps(by_entry, indent=1))
    assert len(CASES) >= 60


def test_hostile_text_is_escaped_in_the_session_report(ws, tmp_path):
    """Prompts, responses and comments carrying a script tag come out as text, never markup."""
    from morm_explorer.evaluation.session_report import session_report
    from morm_explorer.evaluation.sessions import next_item, vote

    _session(Env(ws, tmp_path))
    while (item := next_item(ws, "s", "ann")) is not None:
        vote(ws, "s", item.item_id, "ann", _OK, comment=f"{EVIL} **bold**")
    page = session_report(ws, "s", tmp_path / "r.html").read_text(encoding="utf-8")
    assert EVIL not in page and "&lt;script&gt;" in page
