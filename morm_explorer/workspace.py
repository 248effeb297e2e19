"""Where artifacts live on disk: the workspace folder, atomic writes, and its SQLite database.

Layout::

    <workspace>/morm.sqlite          metadata (datasets now; jobs, metrics, ratings later), WAL
    <workspace>/datasets/<name>/     data.jsonl + info.json (with the import's max_chars), one
                                     folder per named dataset
    <workspace>/candidates/<name>/   candidates.parquet + info.json, one per candidate set
    <workspace>/reward_models/<name> reward-model artifacts; cache/ holds embeddings and scores

The workspace is ``--workspace``, else ``$MORM_WORKSPACE``, else ``./workspace``. Names that
become paths go through `sanitize_name`; every file is written to a temporary file in the same
folder and renamed into place, so a crash never leaves half a file under its real name, and
gets the mode a plain ``open`` would give under the process umask (shared workspaces).
`retry_busy` retries a write while another process holds the database locked. Reads go through
`Workspace.reading` (read-only, so they work on a full disk); a database that cannot be used
raises the one message of `errors.database_error` (full disk, corrupt file).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from morm_explorer.errors import MormError, database_error, is_disk_full

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LEN = 64
T = TypeVar("T")

# Each entry upgrades the schema by one version (PRAGMA user_version); never edit old entries.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE datasets (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        n_records INTEGER NOT NULL,
        objectives TEXT NOT NULL,      -- JSON list
        source TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # Jobs (morm_explorer.jobs.store): the queue, live progress, metrics, logs and workers.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        spec TEXT NOT NULL,            -- JSON object
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        worker_id TEXT,
        heartbeat_at REAL,
        progress REAL NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        error TEXT,
        result TEXT,                   -- JSON object once succeeded
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        device TEXT,
        pid INTEGER                    -- the process running the job's runner
    );
    CREATE INDEX jobs_by_status ON jobs (status, created_at);
    CREATE TABLE job_metrics (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        key TEXT NOT NULL,
        value REAL,
        t REAL NOT NULL
    );
    CREATE INDEX job_metrics_by_job ON job_metrics (job_id, step);
    CREATE TABLE job_logs (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        t REAL NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        device TEXT,
        job_id TEXT
    );
    """,
    # Candidate sets (morm_explorer.data.candidates): responses to score on the Explore page.
    """
    CREATE TABLE candidate_sets (
        name TEXT PRIMARY KEY,
        n_candidates INTEGER NOT NULL,
        n_prompts INTEGER NOT NULL,
        sources TEXT NOT NULL,         -- JSON list
        origin TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # Named scalarization settings (morm_explorer.weight_presets), shared by Explore and PPO.
    """
    CREATE TABLE weight_presets (
        name TEXT PRIMARY KEY,
        preset TEXT NOT NULL,          -- JSON: weights, scalarizer, standardized, constraints
        created_at REAL NOT NULL
    );
    """,
    # Blind human rating sessions (morm_explorer.evaluation.sessions): items shown as A/B in a
    # recorded random order, the raters who joined, and one vote per (item, rater).
    """
    CREATE TABLE rating_sessions (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,            -- JSON: SessionSpec
        summary TEXT NOT NULL,         -- JSON: what creation kept and skipped
        status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
        created_at REAL NOT NULL,
        closed_at REAL
    );
    CREATE TABLE rating_items (
        session TEXT NOT NULL REFERENCES rating_sessions (name) ON DELETE CASCADE,
        item_id INTEGER NOT NULL,
        prompt_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        category TEXT,
        row_a INTEGER NOT NULL,        -- candidate rows, in the order shown (A, B)
        row_b INTEGER NOT NULL,
        response_a TEXT NOT NULL,
        response_b TEXT NOT NULL,
        policy_a TEXT NOT NULL,
        policy_b TEXT NOT NULL,
        flipped INTEGER NOT NULL CHECK (flipped IN (0, 1)),
        PRIMARY KEY (session, item_id)
    );
    CREATE TABLE rating_raters (
        session TEXT NOT NULL REFERENCES rating_sessions (name) ON DELETE CASCADE,
        rater TEXT NOT NULL,
        joined_at REAL NOT NULL,
        PRIMARY KEY (session, rater)
    );
    CREATE TABLE rating_votes (
        session TEXT NOT NULL,
        item_id INTEGER NOT NULL,
        rater TEXT NOT NULL,
        answers TEXT NOT NULL,         -- JSON: objective -> a, b, tie or both_bad
        overall TEXT CHECK (overall IS NULL OR overall IN ('a', 'b', 'tie', 'both_bad')),
        comment TEXT NOT NULL DEFAULT '',
        cast_at REAL NOT NULL,
        revisions INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session, item_id, rater),
        FOREIGN KEY (session, item_id) REFERENCES rating_items (session, item_id)
            ON DELETE CASCADE,
        FOREIGN KEY (session, rater) REFERENCES rating_raters (session, rater)
            ON DELETE CASCADE
    );
    """,
    # Job priorities (morm_explorer.jobs.spec: a user's work runs before the background demo
    # build) and who launched a job (a page, the CLI, the demo build).
    """
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN launched_by TEXT;
    UPDATE jobs SET priority = 0, launched_by = 'demo build' WHERE kind = 'prepare_demo';
    """,
]


def sanitize_name(name: str) -> str:
    """A safe artifact name: letters, digits, '.', '_' and '-', at most 64 characters.

    Other characters become '-'; leading dots are removed so that no name is hidden or refers
    to a parent folder. Raises `MormError` when nothing usable is left.
    """
    if not isinstance(name, str):
        raise MormError(f"artifact name must be text, got {type(name).__name__}")
    cleaned = _NAME_OK.sub("-", name.strip()).strip("-.")
    if not cleaned or len(cleaned) > MAX_NAME_LEN:
        raise MormError(
            f"invalid name {name!r}: use 1-{MAX_NAME_LEN} letters, digits, '.', '_' or '-'"
        )
    return cleaned


def read_umask() -> int:
    """The process umask, read from /proc where it can be: os.umask only reads it by setting
    it, which a thread creating a file at that moment would see."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~read_umask())  # what a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out`` by rename, replacing a folder already there
    (moved aside first, removed after), so ``out`` is never half-written. An empty ``out`` (a
    job's staging folder prepared for the result) is simply replaced. ``tmp`` gets the mode of
    a plain mkdir (a mkdtemp folder is 0700: others sharing the workspace could not read it)."""
    os.chmod(tmp, 0o777 & ~read_umask())
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{time.time_ns()}")
        out.rename(backup)
        tmp.rename(out)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        tmp.rename(out)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str
    n_records: int
    objectives: list[str]
    source: str
    fingerprint: str
    created_at: float


def default_root() -> Path:
    return Path(os.environ.get("MORM_WORKSPACE") or "workspace")


def _is_busy(e: BaseException | None) -> bool:
    while e is not None:  # a failed ROLLBACK after a busy BEGIN hides the busy error
        if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e)):
            return True
        e = e.__context__
    return False


def retry_busy(fn: Callable[[], T], tries: int = 8) -> T:
    """Run a write, retrying with a short random backoff while the database is locked; after
    ``tries`` attempts raise `MormError` saying nothing was stored."""
    for attempt in range(tries):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _is_busy(e):
                raise
            if attempt == tries - 1:
                raise MormError("the workspace database stayed busy; nothing was stored, "
                                "try again") from e
            time.sleep(min(0.5, 0.01 * 2 ** attempt) * (1 + random.random()))
    raise AssertionError("unreachable")


class Workspace:
    """One workspace folder and its database."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "morm.sqlite"
        self._migrate()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- database -------------------------------------------------------------------------
    @contextmanager
    def _faults(self):
        """Raise `database_error`'s message for a database fault (or a full disk) inside."""
        try:
            yield
        except (sqlite3.DatabaseError, OSError) as e:
            err = database_error(e, self.root)
            if err is None:
                raise
            raise err from e

    def connect(self, readonly: bool = False) -> sqlite3.Connection:
        """A connection to the database; ``readonly`` opens it read-only (see `reading`)."""
        with self._faults():
            if readonly:
                return self._connect_readonly()
            con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            try:
                con.row_factory = sqlite3.Row
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA busy_timeout=30000")
                con.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                con.close()
                raise
            return con

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = f"{self.db_path.resolve().as_uri()}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA user_version").fetchone()  # opens the WAL index
            return con
        except sqlite3.OperationalError as e:
            con.close()
            if not is_disk_full(e, self.root):
                raise
            full = e
        # On a full disk WAL readers cannot size the shared-memory index file (-shm). With
        # exclusive locking SQLite keeps that index in memory instead; query_only refuses
        # writes. The lock waits for other connections, so it is the fallback only.
        try:
            con = sqlite3.connect(self.db_path, timeout=2, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA locking_mode=EXCLUSIVE")
            con.execute("PRAGMA query_only=1")
            con.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error:
            con.close()
            raise full from None
        return con

    @contextmanager
    def reading(self):
        """A read-only connection, closed after: what list and show commands and page loads
        use, so that they work on a full disk and never write."""
        con = self.connect(readonly=True)
        try:
            with self._faults():
                yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self):
        """A write transaction taken up front (BEGIN IMMEDIATE), so two processes never race
        between a read and the write that depends on it."""
        con = self.connect()
        try:
            with self._faults():
                con.execute("BEGIN IMMEDIATE")  # may raise "database is locked": nothing to undo
                try:
                    yield con
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
        finally:
            con.close()

    def _migrate(self) -> None:
        """Create or upgrade the schema. One already current is only read, so that opening a
        workspace writes nothing (read-only commands work on a full disk)."""
        if self.db_path.exists():
            with self.reading() as con:
                if con.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
                    return
        with self.transaction() as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                for stmt in filter(str.strip, sql.split(";")):
                    con.execute(stmt)
                con.execute(f"PRAGMA user_version={i}")

    # -- paths ----------------------------------------------------------------------------
    def artifact_dir(self, group: str, name: str) -> Path:
        """The folder of artifact ``name`` in ``group``; never outside the workspace."""
        path = (self.root / sanitize_name(group) / sanitize_name(name)).resolve()
        if self.root.resolve() not in path.parents:
            raise MormError(f"name {name!r} escapes the workspace")
        return path

    def artifact_file(self, group: str, name: str, filename: str) -> Path:
        """A file of artifact ``name`` in ``group``; a symbolic link, which could point
        anywhere, is refused as `artifact_dir` refuses a linked folder that leads outside."""
        path = self.artifact_dir(group, name) / filename
        if path.is_symlink():
            raise MormError("a symbolic link, not a file: links in the workspace are not "
                            "followed", file=str(path))
        return path

    # -- datasets -------------------------------------------------------------------------
    def save_dataset(self, name: str, dataset, *, overwrite: bool = False) -> DatasetInfo:
        """Store a loaded `Dataset` under ``name`` (data.jsonl + info.json + a database row)."""
        name = sanitize_name(name)
        folder = self.artifact_dir("datasets", name)
        info = DatasetInfo(
            name=name, kind=dataset.kind, n_records=len(dataset), objectives=dataset.objectives,
            source=str(dataset.source), fingerprint=dataset.fingerprint(), created_at=time.time(),
        )
        new_folder = False
        try:
            with self.transaction() as con:
                exists = con.execute("SELECT 1 FROM datasets WHERE name=?", (name,)).fetchone()
                if exists and not overwrite:
                    raise MormError(f"a dataset named {name!r} exists; choose another name or "
                                    "overwrite it")
                new_folder = not folder.exists()  # under the write lock: no other save races
                atomic_write_jsonl(folder / "data.jsonl", dataset.records)
                atomic_write_text(folder / "info.json", json.dumps(
                    {**info.__dict__, "max_chars": dataset.max_chars}, indent=2))
                con.execute(
                    "INSERT OR REPLACE INTO datasets VALUES (?,?,?,?,?,?,?)",
                    (name, info.kind, info.n_records, json.dumps(info.objectives), info.source,
                     info.fingerprint, info.created_at),
                )
        except BaseException:
            if new_folder:  # a write or the commit failed (a full disk): no folder without a row
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return info

    def list_datasets(self) -> list[DatasetInfo]:
        with self.reading() as con:
            rows = con.execute("SELECT * FROM datasets ORDER BY created_at").fetchall()
        return [DatasetInfo(**{**dict(r), "objectives": json.loads(r["objectives"])})
                for r in rows]

    def dataset_path(self, name: str) -> Path:
        path = self.artifact_file("datasets", name, "data.jsonl")
        if not path.exists():
            raise MormError(f"no dataset named {name!r} in {self.root}")
        return path

    def dataset_max_chars(self, name: str) -> int:
        """The longest text the dataset was imported with (``max_chars`` in its info.json),
        never below the default; datasets saved before it was stored get the default."""
        from morm_explorer.data.schema import MAX_TEXT_CHARS

        path = self.artifact_file("datasets", name, "info.json")
        try:
            value = json.loads(path.read_text("utf-8")).get("max_chars", MAX_TEXT_CHARS)
        except FileNotFoundError:
            return MAX_TEXT_CHARS
        except (OSError, ValueError, AttributeError) as e:
            raise MormError(f"cannot read the dataset's info: {e}", file=str(path)) from e
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MormError(f"expected a whole number >= 1, got {value!r}", file=str(path),
                            field="max_chars")
        return max(value, MAX_TEXT_CHARS)

    def load_dataset(self, name: str):
        """The dataset ``name``, validated again with the text limit it was imported with."""
        from morm_explorer.data.loaders import load_preference_data

        return load_preference_data(self.dataset_path(name), fmt="jsonl",
                                    max_chars=self.dataset_max_chars(name))

    def delete_dataset(self, name: str) -> None:
        folder = self.artifact_dir("datasets", name)
        with self.transaction() as con:
            con.execute("DELETE FROM datasets WHERE name=?", (sanitize_name(name),))
        shutil.rmtree(folder, ignore_errors=True)
