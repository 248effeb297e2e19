"""The one exception type that bad user input raises, with where it happened, and
`database_error`: the one message for a workspace database that cannot be used.

Every message a user sees names the file, the line (or row) and the field when they are known,
so it can be acted on without a traceback.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path


class MormError(Exception):
    """An error in user input or user action that the app and the CLI report as a message."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


# SQLite's primary result codes: the low byte of `sqlite3.Error.sqlite_errorcode`.
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 3, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26
# SQLite reports a -shm or -wal file that cannot grow as an I/O error, not as a full disk; with
# less free space than this on the device, take it for one.
_NEARLY_FULL = 1 << 20


def _sqlite_code(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_disk_full(e: BaseException, folder: Path) -> bool:
    """Whether ``e`` (an OSError or a SQLite error met in ``folder``) means the disk is full."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    code = _sqlite_code(e)
    if code == _SQLITE_FULL or "database or disk is full" in str(e):
        return True
    if code == _SQLITE_IOERR or "disk I/O error" in str(e):
        try:
            return shutil.disk_usage(folder).free < _NEARLY_FULL
        except OSError:
            return False
    return False


def database_error(e: BaseException, root: Path) -> MormError | None:
    """The one message for a workspace database that cannot be used, shared by every entry
    point; None for other errors (busy, a constraint, a bug), which the caller re-raises.

    Only a corrupt file gets the advice to move it aside: a full disk or a failing one leaves
    the database intact, and a new one would orphan its jobs and votes.
    """
    db = str(Path(root) / "morm.sqlite")
    if is_disk_full(e, Path(root)):
        return MormError(f"no space left on the device holding {root}; free some space and "
                         "try again")
    if not isinstance(e, sqlite3.DatabaseError):
        return None
    code = _sqlite_code(e)
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or type(e) is sqlite3.DatabaseError:
        return MormError(f"workspace database is unreadable ({e}); move it aside to start a "
                         "new one", file=db)
    if code in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN):
        return MormError(f"cannot use the workspace database ({e}); check the disk and that "
                         f"you may read and write {root}", file=db)
    return None
