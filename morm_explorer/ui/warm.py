"""The modules every page imports, imported once per server under one lock before any page
runs.

Each browser session runs the app in a thread of its own. On a fresh server, two sessions that
first import the pages' modules at the same moment (the Overview still loading when a user
opens Explore) can each hold a module the other needs; Python then breaks the cycle by handing
one of them a half-initialized module ("cannot import name ... from partially initialized
module"), and the page fails until it is reloaded. Importing everything here first, one
thread at a time, leaves the pages only modules that are already whole.
"""

from __future__ import annotations

import ast
import importlib
import threading
from pathlib import Path

_lock = threading.Lock()
_done: set[str] = set()  # the pages folders already warmed


def page_imports(pages: Path) -> list[str]:
    """The absolute modules imported at the top level of the ``*.py`` files in ``pages``."""
    names: set[str] = set()
    for f in sorted(Path(pages).glob("*.py")):
        for node in ast.parse(f.read_text(encoding="utf-8"), filename=str(f)).body:
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    names.discard("__future__")
    return sorted(names)


def warm_imports(pages: Path) -> None:
    """Import `page_imports` of ``pages``, once; every other caller waits until it is done."""
    key = str(Path(pages).resolve())
    if key in _done:
        return
    with _lock:
        if key in _done:
            return
        for name in page_imports(pages):
            importlib.import_module(name)
        _done.add(key)
