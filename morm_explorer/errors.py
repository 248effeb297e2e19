"""The one exception type that bad user input raises, with where it happened.

Every message a user sees names the file, the line (or row) and the field when they are known,
so it can be acted on without a traceback.
"""

from __future__ import annotations


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
