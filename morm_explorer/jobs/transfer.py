"""What a job carries to a Ray node that cannot read the workspace, and what it brings back.

No Ray here: this module packs and unpacks, names things by content and decides what a job
needs and what it changed. `morm_explorer.jobs.ray_remote` moves the bytes.

- **Inputs.** `job_inputs` finds the workspace folders a spec names (a dataset, a reward model,
  a policy, a candidate set, a PPO run's folder to resume from) and the folders those name in
  their own JSON files (an adapter's base policy), plus files and folders the spec gives as
  absolute paths on the app's machine; those paths are rewritten to where the node unpacks
  them (`SHADOW` stands for the node's copy of the workspace until it exists).
- **Content addresses.** Each input is a tar of a folder named by the SHA-256 of its files
  (`digest`), packed once into ``<workspace>/cache/remote/<digest>.tar`` and kept by nodes in
  their own cache (`NodeCache`), so a model a node already holds is not sent again.
- **Outputs.** The node runs the job in a workspace of its own (the *shadow*), made of the
  inputs. `snapshot` before and `changed_units` after tell which artifacts the job wrote (a
  policy folder, a candidate set, a run folder, a score-cache file); the app's side commits
  each one into the real workspace by renames, in one database transaction (`commit_units`).
- **Storage.** `Storage` is a `pyarrow.fs` filesystem at a URI (``file://``, ``s3://``,
  ``gs://``), credentials from the environment as pyarrow reads them, never from a spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from morm_explorer.errors import MormError
from morm_explorer.workspace import (
    Workspace,
    atomic_write_bytes,
    atomic_write_text,
    replace_dir,
    sanitize_name,
)

# The node's workspace root in a rewritten spec, replaced by the node before the job runs.
SHADOW = "${MORM_SHADOW}"
# Workspace folders a spec can name, by plain name; ``runs/ppo`` holds a run to resume.
GROUPS = ("datasets", "reward_models", "policies", "candidates", "comparisons", "models",
          "runs/ppo")
# Outputs travel as whole units: <group>/<name>, runs/ppo/<name>, cache/<kind>/<entry>.
THREE_LEVELS = ("runs", "cache")
# Never sent back: the job's own bookkeeping, logs, the node-only copy of the packaged SmolLM2
# (`derived_models`), the unpacked external inputs, and the app's pack cache.
NOT_OUTPUT = ("jobs", "logs", "external", "morm.sqlite", "morm.sqlite-wal", "morm.sqlite-shm",
              "morm.sqlite-journal")
# Artifacts with a database row that must come back with their folder: group -> table.
TABLES = {"datasets": "datasets", "candidates": "candidate_sets"}
# Inputs the job may change in place: copied onto the node, never hard-linked to its cache.
MUTABLE = ("runs", "cache")
# A JSON file larger than this in an input folder is data, not a reference to read.
MAX_REF_JSON = 1 << 20
# An absolute path a job names travels as an input only up to this many files.
MAX_EXTERNAL_FILES = 10_000
# A folder named inside an input's JSON travels only if it looks like a model.
MODEL_MARKERS = ("config.json", "adapter_config.json", "tokenizer_config.json")
CHUNK = 1 << 20


def derived_models() -> tuple[str, ...]:
    """Model folders a node makes itself from an installed package: never shipped, either way."""
    from morm_explorer.models import SMOLLM2_DIR  # light: no torch in the relay or the node

    return (f"models/{SMOLLM2_DIR}",)


# -- content addresses ------------------------------------------------------------------------
def _files(root: Path, hidden: bool = False) -> list[Path]:
    """The regular files of ``root`` (a file or a folder), sorted (without names starting with
    a dot unless ``hidden``); links are refused, as the workspace never follows them."""
    if root.is_symlink():
        raise MormError("a symbolic link cannot be sent to a Ray node", file=str(root))
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if hidden or not d.startswith("."))
        for name in sorted(filenames):
            if not hidden and name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_symlink():
                raise MormError("a symbolic link cannot be sent to a Ray node", file=str(path))
            out.append(path)
    return out


def digest(root: Path) -> str:
    """SHA-256 of ``root``'s file names and contents (a folder or one file), in hex."""
    h = hashlib.sha256()
    root = Path(root)
    for path in _files(root):
        rel = path.name if path == root else path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0" + str(path.stat().st_size).encode() + b"\0")
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
    return h.hexdigest()


def pack(root: Path, out: Path, hidden: bool = False,
         rewrite: list[tuple[str, str]] | None = None) -> None:
    """Write ``root`` (a folder, or one file) as an uncompressed tar at ``out``, atomically:
    members relative to it (a file as its own name), no owners, no times; entries whose names
    start with a dot (temporary ones) left out unless ``hidden``; in JSON files, the paths of
    ``rewrite`` swapped (a node's paths for the app's, see `localize_json`)."""
    import io

    pairs = _json_pairs(rewrite or [])
    root = Path(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in _files(root, hidden):
                rel = path.name if path == root else path.relative_to(root).as_posix()
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                info.mode = 0o644 | (info.mode & 0o111)
                if pairs and path.suffix == ".json" and info.size <= MAX_REF_JSON:
                    data = rewrite_json(path.read_bytes(), pairs)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    continue
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unpack(tar_path: Path, dest: Path) -> None:
    """Extract ``tar_path`` into the new folder ``dest`` (made here): regular files and folders
    only, nothing outside ``dest`` (tarfile's "data" filter)."""
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with tarfile.open(tar_path, "r") as tar:
            for member in tar.getmembers():
                if not (member.isfile() or member.isdir()):
                    raise MormError(f"{member.name!r} is not a file or a folder",
                                    file=str(tar_path))
            tar.extractall(dest, filter="data")
    except tarfile.TarError as e:
        raise MormError(f"not a readable tar: {e}", file=str(tar_path)) from e


class PackCache:
    """The app's packed inputs, ``<workspace>/cache/remote/<digest>.tar``, and an index that
    remembers each folder's digest while its files' sizes and times are unchanged."""

    def __init__(self, ws: Workspace) -> None:
        self.root = ws.root / "cache" / "remote"
        self.index_path = self.root / "index.json"

    def _index(self) -> dict[str, Any]:
        try:
            return json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @staticmethod
    def signature(path: Path) -> str:
        """What changes when a file under ``path`` changes (names, sizes, times; not contents)."""
        h = hashlib.sha256()
        for f in _files(path, hidden=False):
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def add(self, path: Path) -> tuple[str, Path, int]:
        """Pack ``path`` unless packed already; returns (digest, tar path, tar size)."""
        index = self._index()
        sig = self.signature(path)
        known = index.get(str(path))
        if known and known.get("signature") == sig and (self.root / f"{known['digest']}.tar"
                                                         ).is_file():
            d = known["digest"]
        else:
            d = digest(path)
            if not (self.root / f"{d}.tar").is_file():
                pack(path, self.root / f"{d}.tar")
            index[str(path)] = {"signature": sig, "digest": d}
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.index_path, json.dumps(index, indent=1))
        tar = self.root / f"{d}.tar"
        return d, tar, tar.stat().st_size


# -- inputs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Input:
    """One thing a job reads: ``rel``, where it goes in the node's workspace; ``source``, where
    it is on the app's machine."""

    rel: str
    source: Path


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {k: _rewrite(v, mapping) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rewrite(v, mapping) for v in value]
    return value


def _json_strings(folder: Path) -> Iterator[str]:
    """The strings in ``folder``'s top-level JSON files (configs and manifests)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        try:
            if path.stat().st_size <= MAX_REF_JSON:
                yield from _strings(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue


def _external_ok(path: Path, top: bool, ws: Workspace) -> bool:
    """Whether an absolute path a job names may travel as an input: a file, or a folder that
    is not the workspace, one of its parents or the root, of at most `MAX_EXTERNAL_FILES`
    files; one named inside an input's JSON must be a model folder (a backbone) or a file."""
    try:
        resolved = path.resolve()
    except OSError:
        return False
    if path.is_file():
        return True
    if not path.is_dir() or resolved == Path(resolved.anchor) \
            or resolved == ws.root.resolve() or resolved in ws.root.resolve().parents:
        return False
    if not top and not any((path / f).is_file() for f in MODEL_MARKERS):
        return False
    n = 0
    for _, _, files in os.walk(path):
        n += len(files)
        if n > MAX_EXTERNAL_FILES:
            return False
    return True


def job_inputs(ws: Workspace, spec: dict[str, Any]
               ) -> tuple[dict[str, Any], list[Input], dict[str, str]]:
    """The inputs of a job whose spec is ``spec``: (the spec with its absolute paths rewritten
    to the node's copies, the inputs, that rewriting: original path -> `SHADOW`/external/...).
    Workspace names are matched against `GROUPS` in the spec and, transitively, in the JSON
    files of the folders found; absolute paths there (a reward model's backbone) travel too and
    are rewritten in the node's copies of those files (`localize_json`)."""
    found: dict[str, Input] = {}
    mapping: dict[str, str] = {}
    derived = set(derived_models())

    def visit(strings: Iterable[str], top: bool) -> list[Path]:
        new = []
        for s in strings:
            if not s or len(s) > 4096 or "\0" in s:
                continue
            if "/" not in s and s not in (".", ".."):
                for group in GROUPS:
                    rel = f"{group}/{s}"
                    path = ws.root / group / s
                    if rel not in found and rel not in derived and path.is_dir() \
                            and not path.is_symlink():
                        found[rel] = Input(rel, path)
                        new.append(path)
            elif s.startswith(("/", "~")) and s not in mapping:
                path = Path(os.path.expanduser(s))
                if path.exists() and _external_ok(path, top, ws):
                    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
                    rel = f"external/{key}/{sanitize_name(path.name)}"
                    found[rel] = Input(rel, path)
                    mapping[s] = f"{SHADOW}/{rel}"
                    new.append(path)
        return new

    frontier = visit(_strings(spec), top=True)
    for _ in range(4):  # an adapter names its base policy, which names its own model, ...
        frontier = [p for folder in frontier for p in visit(_json_strings(folder), top=False)]
        if not frontier:
            break
    return _rewrite(spec, mapping), sorted(found.values(), key=lambda i: i.rel), mapping


def _json_pairs(replace: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """(old, new) path pairs as they appear inside JSON strings, longest first."""
    pairs = {(json.dumps(a)[1:-1].encode(), json.dumps(b)[1:-1].encode())
             for a, b in replace if a != b}
    return sorted(pairs, key=lambda p: -len(p[0]))


def rewrite_json(data: bytes, pairs: list[tuple[bytes, bytes]]) -> bytes:
    for a, b in pairs:
        data = data.replace(a, b)
    return data


def localize_json(folder: Path, replace: list[tuple[str, str]]) -> None:
    """Rewrite the JSON files under ``folder`` (or the JSON file ``folder``), each up to
    `MAX_REF_JSON`, with each (old, new) path of ``replace`` swapped; a hard-linked file is
    unlinked first, so the node's cache keeps its original."""
    pairs = _json_pairs(replace)
    if not pairs:
        return
    files = [folder] if folder.is_file() else sorted(folder.rglob("*.json"))
    for path in files:
        if path.suffix != ".json" or not path.is_file() or path.is_symlink() \
                or path.stat().st_size > MAX_REF_JSON:
            continue
        data = path.read_bytes()
        new = rewrite_json(data, pairs)
        if new != data:
            path.unlink()
            atomic_write_bytes(path, new)


def needs_smollm2(spec: dict[str, Any], inputs: list[Input]) -> bool:
    """Whether the job may load the packaged SmolLM2 (named in its spec or its inputs' JSON)."""
    from morm_explorer.models import ALIASES, SMOLLM2

    names = {SMOLLM2.lower(), *(a for a, t in ALIASES.items() if t == SMOLLM2)}
    strings = [*_strings(spec), *(s for i in inputs for s in _json_strings(i.source))]
    return any(s.lower() in names for s in strings)


def check_input_rel(rel: str) -> list[str]:
    """The parts of an input's place in the node's workspace, refused unless plain."""
    parts = rel.split("/") if isinstance(rel, str) else []
    try:
        plain = 2 <= len(parts) <= 3 and all(sanitize_name(p) == p for p in parts)
    except MormError:
        plain = False
    if not plain:
        raise MormError(f"not a place for an input in a workspace: {rel!r}")
    return parts


def resolve_shadow(value: Any, root: Path) -> Any:
    """``value`` (a spec or part of one) with `SHADOW` replaced by the node's workspace."""
    return replace_in(value, SHADOW, str(root))


# -- on the node ---------------------------------------------------------------------------------
class NodeCache:
    """A node's unpacked inputs by digest, ``<root>/cas/<digest>/``, shared by its jobs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "cas").mkdir(parents=True, exist_ok=True)

    def path(self, d: str) -> Path:
        if len(d) != 64 or any(c not in "0123456789abcdef" for c in d):
            raise MormError(f"not a content digest: {d!r}")
        return self.root / "cas" / d

    def has(self, d: str) -> bool:
        return self.path(d).is_dir()

    def add(self, d: str, tar_path: Path) -> Path:
        """Unpack ``tar_path`` as ``d`` (checked against its digest), by rename: concurrent
        jobs never see half an input."""
        out = self.path(d)
        if out.is_dir():
            return out
        tmp = out.with_name(f".{d}.tmp-{secrets.token_hex(4)}")
        try:
            unpack(tar_path, tmp)
            entries = list(tmp.iterdir())
            single = entries[0] if len(entries) == 1 and entries[0].is_file() else None
            got = digest(single) if single is not None else digest(tmp)
            if got != d:
                raise MormError(f"input {d[:12]} arrived damaged (its content hashes to "
                                f"{got[:12]})", file=str(tar_path))
            try:
                os.rename(tmp, out)
            except OSError:
                if not out.is_dir():  # not another job's copy of the same input: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


def place(src: Path, dest: Path, link: bool, single_file: bool = False) -> None:
    """Copy the unpacked input ``src`` to ``dest``: the folder, or with ``single_file`` the one
    file it holds; files hard-linked when ``link`` (inputs a job only reads, on the cache's
    filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)

    def copy(s: str, d: str) -> None:
        if link:
            try:
                os.link(s, d)
                return
            except OSError:
                pass  # another filesystem, or links not allowed: a copy
        shutil.copy2(s, d)

    if single_file:
        files = [p for p in src.iterdir() if p.is_file()]
        if len(files) != 1:
            raise MormError("a single-file input holds no single file", file=str(src))
        copy(str(files[0]), str(dest))
    else:
        shutil.copytree(src, dest, copy_function=copy, dirs_exist_ok=True)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file of the node's workspace: relative path -> (size, mtime_ns, inode)."""
    out = {}
    for path in _walk(root):
        st = path.stat()
        out[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def unit_of(rel: str) -> str | None:
    """The unit a changed file belongs to (see the module docstring), or None when it is not
    an output at all."""
    parts = rel.split("/")
    if parts[0] in NOT_OUTPUT or any(p.startswith(".") for p in parts):
        return None
    depth = 3 if parts[0] in THREE_LEVELS else 2
    if len(parts) < depth:
        return None  # a loose file at the top of the workspace or a group
    unit = "/".join(parts[:depth])
    if unit in derived_models() or unit.startswith("cache/remote"):
        return None
    return unit


def changed_units(root: Path, before: dict[str, tuple[int, int, int]]) -> tuple[list[str],
                                                                                list[str]]:
    """(units with a new or changed file, units that were inputs and are gone)."""
    now = snapshot(root)
    changed = {u for rel, sig in now.items() if before.get(rel) != sig
               and (u := unit_of(rel)) is not None}
    gone = {u for rel in before if (u := unit_of(rel)) is not None
            and not (root / u).exists()}
    return sorted(changed), sorted(gone)


def insert_rows(ws: Workspace, rows: dict[str, list[dict]], con=None) -> None:
    """Insert or replace ``rows`` (table -> row dicts, as `unit_rows` gives) in ``ws``'s
    database; only the tables of `TABLES`, only their own columns."""
    def write(c) -> None:
        for table, table_rows in rows.items():
            if table not in TABLES.values():
                continue
            known = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
            for r in table_rows:
                cols = [k for k in r if k in known]
                c.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES "
                          f"({', '.join('?' * len(cols))})", [r[k] for k in cols])
    if con is not None:
        write(con)
    else:
        with ws.transaction() as c:
            write(c)


def unit_rows(root: Path, units: list[str]) -> dict[str, list[dict]]:
    """The database rows (datasets, candidate sets) of ``units`` in the node's workspace."""
    out: dict[str, list[dict]] = {}
    con = sqlite3.connect(root / "morm.sqlite")
    con.row_factory = sqlite3.Row
    try:
        for unit in units:
            group, _, name = unit.partition("/")
            table = TABLES.get(group)
            if table:
                rows = con.execute(f"SELECT * FROM {table} WHERE name=?", (name,)).fetchall()
                out.setdefault(table, []).extend(dict(r) for r in rows)
    finally:
        con.close()
    return out


# -- back on the app's side ------------------------------------------------------------------
def check_unit(unit: str) -> list[str]:
    """The parts of ``unit``, refused unless it is a plain path an output may have."""
    parts = unit.split("/") if isinstance(unit, str) else []
    try:
        plain = bool(parts) and all(sanitize_name(p) == p for p in parts)
    except MormError:
        plain = False
    if not plain or unit_of(unit) != unit:
        raise MormError(f"a Ray job sent back an output the workspace cannot take: {unit!r}")
    return parts


@dataclass
class Unit:
    """One output on its way into the workspace: ``tar`` unpacked, or ``gone``."""

    name: str
    tar: Path | None = None
    gone: bool = False


def commit_units(ws: Workspace, units: list[Unit], rows: dict[str, list[dict]], *,
                 may_replace: set[str], overwrite: bool, job_id: str, worker_id: str) -> list[str]:
    """Put ``units`` into the workspace in one database transaction that first checks the job
    is still ``worker_id``'s and running (so a cancelled job never publishes): each unpacked
    next to its target, then renamed into place. A unit already in the workspace is replaced
    only when it is in ``may_replace`` (the job's own inputs, runs and caches) or ``overwrite``.
    Returns the committed units. Raises `MormError`, committing nothing, on a refused unit."""
    staged: list[tuple[Path, Path]] = []  # (unpacked, target)
    gone: list[Path] = []
    try:
        for unit in units:
            parts = check_unit(unit.name)
            target = ws.root.joinpath(*parts)
            if unit.gone:
                if parts[0] in MUTABLE:
                    gone.append(target)
                continue
            if target.exists() and not (overwrite or unit.name in may_replace
                                        or parts[0] in MUTABLE):
                raise MormError(f"{unit.name} already exists in {ws.root}; choose another name "
                                "or allow overwriting", field="overwrite")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
            unpack(unit.tar, tmp)
            staged.append((tmp, target))
        done = []
        with ws.transaction() as con:
            row = con.execute("SELECT status, worker_id, cancel_requested FROM jobs WHERE id=?",
                              (job_id,)).fetchone()
            if row is None or row[0] != "running" or row[1] != worker_id or row[2]:
                raise MormError(f"job {job_id} was cancelled or is no longer running; its "
                                "outputs were not committed")
            for tmp, target in staged:
                entries = list(tmp.iterdir())
                if len(entries) == 1 and entries[0].is_file() and entries[0].name == target.name:
                    os.replace(entries[0], target)  # a single file (a score cache)
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    replace_dir(tmp, target)
                done.append(target.relative_to(ws.root).as_posix())
            for target in gone:
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
            insert_rows(ws, rows, con)
            from morm_explorer.jobs.store import JobStore

            for name in done:
                JobStore.write_log(con, job_id, f"committed {name} (from the Ray node)")
        return done
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def replace_in(value: Any, old: str, new: str) -> Any:
    """``value`` (JSON-like: text, dicts, lists) with ``old`` replaced by ``new`` in every
    string: the node's workspace for `SHADOW` in a spec, the app's for the node's in a result."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: replace_in(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [replace_in(v, old, new) for v in value]
    return value


# -- storage URIs ---------------------------------------------------------------------------------
class Storage:
    """Files at a storage URI through `pyarrow.fs` (``file:///path``, ``s3://bucket/prefix``,
    ``gs://bucket/prefix``); keys are relative paths under it. Credentials come from the
    environment (pyarrow's own lookup), never from the URI's user part, which is refused."""

    def __init__(self, uri: str) -> None:
        from urllib.parse import urlsplit

        if not isinstance(uri, str) or "://" not in uri:
            raise MormError(f"a storage URI looks like file:///path, s3://bucket/prefix or "
                            f"gs://bucket/prefix, got {uri!r}", field="storage")
        parts = urlsplit(uri)
        if parts.username or parts.password or parts.query:
            raise MormError("a storage URI must not carry credentials or options: set them in "
                            "the environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS,"
                            " ...)", field="storage")
        import pyarrow.fs as pafs

        try:
            self.fs, self.base = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as e:
            raise MormError(f"cannot open the storage at {uri}: {e}", field="storage") from e
        self.uri = uri.rstrip("/")

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    def _path(self, key: str) -> str:
        if any(p in ("", ".", "..") for p in key.split("/")):
            raise MormError(f"not a storage key: {key!r}")
        return f"{self.base.rstrip('/')}/{key}"

    def exists(self, key: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self._path(key)).type != pafs.FileType.NotFound

    def put(self, key: str, local: Path) -> None:
        """Upload ``local`` as ``key``: written under a temporary key, then moved, so a reader
        never sees half a file (on object stores the move is a copy, still whole)."""
        path = self._path(key)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        with open(local, "rb") as src, self.fs.open_output_stream(tmp) as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
        self.fs.move(tmp, path)

    def get(self, key: str, local: Path) -> None:
        """Download ``key`` to ``local`` (atomically)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", dir=local.parent)
        os.close(fd)
        try:
            with self.fs.open_input_stream(self._path(key)) as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            os.replace(tmp, local)
        except FileNotFoundError as e:
            Path(tmp).unlink(missing_ok=True)
            raise MormError(f"{self.uri}/{key} is not in the storage") from e
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
