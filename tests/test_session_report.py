"""A rating session's self-contained HTML report: parses, holds its figure and tables, escapes
every text from the session."""

from __future__ import annotations

from datetime import datetime, timezone
from html.parser import HTMLParser

from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.evaluation.session_report import session_report
from morm_explorer.evaluation.sessions import create_session, join, next_item, vote


class Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts, self.divs, self.text = [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self._in_script = True
            self.scripts.append(a)
        if tag == "div" and (a.get("id") or "").startswith("figure-"):
            self.divs.append(a["id"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if not self._in_script:
            self.text.append(data)


def test_session_report(ws, tmp_path):
    recs = [{"prompt_id": f"p{i}", "prompt": f"Q{i} <i>?</i>", "response": f"{p} {i}",
             "source": p} for i in range(4) for p in ("x", "y")]
    save_candidate_set(ws, "c", from_records(recs))
    create_session(ws, "s", "c", objectives=["helpful", "harmless"])
    for rater in ("ann", "bob"):
        join(ws, "s", rater)
        while (item := next_item(ws, "s", rater)) is not None:
            vote(ws, "s", item.item_id, rater, {"helpful": "a", "harmless": "tie"},
                 comment="<script>alert(1)</script> fine")
    out = session_report(ws, "s", tmp_path / "r.html",
                         now=datetime(2026, 11, 25, tzinfo=timezone.utc))
    page = out.read_text(encoding="utf-8")
    scan = Scan()
    scan.feed(page)
    assert scan.divs == ["figure-0"]
    assert sum("src" in s for s in scan.scripts) == 0  # nothing loaded from outside
    assert page.count("<script>alert(1)</script>") == 0
    assert "<script>alert(1)</script> fine" in "".join(scan.text)  # shown, as text
    assert "2026-11-25" in page and "helpful" in page and "Position bias" in page
    assert "Win rates" in page and "ann" in page and "bob" in page
    # the last vote as a local date and time, never a raw Unix timestamp
    import re
    import time

    assert time.strftime("%Y-%m-%d", time.localtime()) in "".join(scan.text)
    assert not re.search(r"\b1[0-9]{9}(\.[0-9]+)?\b", "".join(scan.text))
