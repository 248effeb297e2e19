"""The pages' modules are imported once, under one lock, before any page runs."""

from __future__ import annotations

import sys
import threading
import time

from morm_explorer.ui import warm
from tests.conftest import REPO


def test_page_imports_lists_the_modules_the_pages_import(tmp_path):
    (tmp_path / "a.py").write_text("from __future__ import annotations\nimport json, os.path\n"
                                   "from pages.common import x\nfrom . import y\n"
                                   "def f():\n    import tomllib\n")
    (tmp_path / "b.txt").write_text("import nothing_here\n")
    assert warm.page_imports(tmp_path) == ["json", "os.path", "pages.common"]
    real = warm.page_imports(REPO / "pages")
    assert {"pages.common", "morm_explorer.explore", "streamlit"} <= set(real)


def test_a_first_import_that_fails_midway_is_made_again_not_half_seen(tmp_path, monkeypatch):
    """A session whose first import of a page's module stops midway (an exception in its body)
    leaves that half-run module to any session already waiting for it, which then cannot find
    the names defined further down; behind `warm_imports`, the waiting session imports it anew
    and finds them."""
    flag = tmp_path / "fail-once"
    flag.write_text("")
    (tmp_path / "warm_flaky.py").write_text(
        "import pathlib, time\nEARLY = True\ntime.sleep(0.4)\n"
        f"flag = pathlib.Path({str(flag)!r})\n"
        "if flag.exists():\n    flag.unlink()\n    raise RuntimeError('stopped midway')\n"
        "LATE = True\n")
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "p.py").write_text("from warm_flaky import LATE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "warm_flaky", raising=False)
    results: dict[str, object] = {}

    def session(name: str) -> None:
        try:
            warm.warm_imports(pages)
            from warm_flaky import LATE  # what the page itself runs
            results[name] = LATE
        except Exception as e:  # noqa: BLE001
            results[name] = e

    first = threading.Thread(target=session, args=("first",))
    first.start()
    for _ in range(2000):  # until the first session is inside the import
        if "warm_flaky" in sys.modules:
            break
        time.sleep(0.001)
    second = threading.Thread(target=session, args=("second",))
    second.start()
    first.join()
    second.join()
    assert isinstance(results["first"], RuntimeError)  # its own import failed, as it would
    assert results["second"] is True
    monkeypatch.delitem(sys.modules, "warm_flaky", raising=False)
