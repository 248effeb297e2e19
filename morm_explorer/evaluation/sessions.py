"""Blind human rating sessions: raters compare two policies' responses, labelled A and B.

A session is built once from a stored candidate set whose ``source`` column names the
policies: for each prompt it pairs the responses of two different policies, puts them in a
random A/B order drawn from a seeded RNG per item, and stores the item (texts, candidate rows,
policies, ``flipped``) in the workspace database, so the session is self-contained and the order
is recorded. Raters join by name (only listed raters when the session has a list), see their
items in a per-rater shuffled order without policy names, and answer per objective: ``a``,
``b``, ``tie`` or ``both_bad``, plus an optional overall choice and comment.

Every vote is one row, written in its own transaction as it is cast; the primary key
(session, item_id, rater) stores it exactly once however many raters vote at once. Re-sending
the same vote is a no-op ("unchanged"); a different answer for an already voted item is an error
unless ``revise=True``. Policy names are revealed to a rater only after they voted on the item,
and only in a session made with ``reveal_after_vote``.
What a rater sees next depends on the database alone, so a rater can stop and resume anywhere.
The spec, pairing and orders are pure functions in `session_spec`; statistics live in
`agreement`, exports in `exports`.
"""

from __future__ import annotations

import json
import numbers
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode

import pandas as pd

from morm_explorer.data.candidates import load_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.evaluation.session_spec import (
    ANSWERS,
    SessionSpec,
    answer_column,
    build_items,
    check_answers,
    check_rater_name,
    check_session_name,
    rater_order,
)
from morm_explorer.workspace import Workspace, retry_busy, sanitize_name

__all__ = ["ANSWERS", "Item", "SessionInfo", "SessionSpec", "close_session", "create_session",
           "delete_session", "get_session", "get_vote", "item_view", "join", "list_sessions",
           "load_votes", "next_item", "progress", "reveal", "session_link", "vote"]

VoteStatus = Literal["inserted", "unchanged", "revised"]
VOTE_COLUMNS = ["item_id", "rater", "prompt_id", "category", "prompt", "response_a",
                "response_b", "row_a", "row_b", "policy_a", "policy_b", "flipped", "overall",
                "comment", "cast_at", "revisions"]


@dataclass(frozen=True)
class SessionInfo:
    name: str
    spec: SessionSpec
    status: str
    created_at: float
    closed_at: float | None = None
    n_items: int = 0
    n_raters: int = 0
    n_votes: int = 0
    summary: dict = field(default_factory=dict)  # prompts used, what creation skipped


@dataclass(frozen=True)
class Item:
    """One A/B comparison as a rater sees it: no policy names."""

    session: str
    item_id: int
    prompt_id: str
    prompt: str
    response_a: str
    response_b: str
    category: str | None = None
    position: int = 0  # 1-based place in the rater's order (0 when not asked for a rater)
    total: int = 0  # items in the rater's order


def _session_row(con: sqlite3.Connection, name: str) -> tuple[SessionSpec, str]:
    row = con.execute("SELECT spec, status FROM rating_sessions WHERE name=?",
                      (name,)).fetchone()
    if row is None:
        raise MormError(f"no rating session named {name!r}", field="session")
    return SessionSpec.from_dict(json.loads(row["spec"])), row["status"]


def _open_session(con: sqlite3.Connection, name: str) -> SessionSpec:
    """The spec of session ``name``, which must still accept raters and votes."""
    spec, status = _session_row(con, name)
    if status != "open":
        raise MormError(f"rating session {name!r} is closed", field="session")
    return spec


def create_session(ws: Workspace, name: str, candidate_set: str, *, objectives: Sequence[str],
                   policies: Sequence[str] | None = None, raters: Sequence[str] = (),
                   prompts: Sequence[str] = (), items_per_prompt: int = 1,
                   limit_prompts: int = 0, pairs_per_rater: int = 0, seed: int = 0,
                   reveal_after_vote: bool = False) -> SessionInfo:
    """Make a session from a stored candidate set; ``policies`` default to all its sources.
    Each prompt gets up to ``items_per_prompt`` pairs of two different policies; a prompt with
    fewer than 2 of the policies is skipped and counted in ``summary``. With
    ``reveal_after_vote`` a rater learns the policies behind A and B after voting on an item."""
    name = check_session_name(name)
    cset = load_candidate_set(ws, candidate_set)
    policies = cset.sources if policies is None else list(policies)
    spec = SessionSpec(candidate_set=sanitize_name(candidate_set), policies=policies,
                       objectives=objectives, raters=raters,  # type: ignore[arg-type]
                       prompts=prompts, items_per_prompt=items_per_prompt,
                       limit_prompts=limit_prompts, pairs_per_rater=pairs_per_rater, seed=seed,
                       fingerprint=cset.fingerprint(), reveal_after_vote=reveal_after_vote)
    unknown = sorted(set(spec.policies) - set(cset.sources))
    if unknown:
        raise MormError(f"policies {unknown} are not sources of candidate set "
                        f"{candidate_set!r} (it has {cset.sources})", field="policies")
    items, used, skipped = build_items(cset, spec, name)
    if not items:
        raise MormError("no prompt has responses from two of the policies: nothing to rate",
                        field="policies")
    summary = {"n_prompts": len(used), "skipped": skipped}
    spec = SessionSpec.from_dict({**spec.to_dict(), "prompts": used})
    now = time.time()
    with ws.transaction() as con:
        if con.execute("SELECT 1 FROM rating_sessions WHERE name=?", (name,)).fetchone():
            raise MormError(f"a rating session named {name!r} exists; choose another name",
                            field="name")
        con.execute("INSERT INTO rating_sessions VALUES (?,?,?,?,?,?)",
                    (name, json.dumps(spec.to_dict()), json.dumps(summary), "open", now, None))
        con.executemany("INSERT INTO rating_items VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        [(name, *it) for it in items])
    return get_session(ws, name)


_INFO_SQL = """SELECT s.*,
    (SELECT COUNT(*) FROM rating_items i WHERE i.session = s.name) AS n_items,
    (SELECT COUNT(*) FROM rating_raters r WHERE r.session = s.name) AS n_raters,
    (SELECT COUNT(*) FROM rating_votes v WHERE v.session = s.name) AS n_votes
    FROM rating_sessions s"""


def _info(row: sqlite3.Row) -> SessionInfo:
    return SessionInfo(name=row["name"], spec=SessionSpec.from_dict(json.loads(row["spec"])),
                       status=row["status"], created_at=row["created_at"],
                       closed_at=row["closed_at"], n_items=row["n_items"],
                       n_raters=row["n_raters"], n_votes=row["n_votes"],
                       summary=json.loads(row["summary"]))


def list_sessions(ws: Workspace) -> list[SessionInfo]:
    with ws.reading() as con:
        return [_info(r) for r in con.execute(_INFO_SQL + " ORDER BY s.created_at")]


def get_session(ws: Workspace, name: str) -> SessionInfo:
    with ws.reading() as con:
        row = con.execute(_INFO_SQL + " WHERE s.name=?", (name,)).fetchone()
    if row is None:
        raise MormError(f"no rating session named {name!r}", field="session")
    return _info(row)


def close_session(ws: Workspace, name: str) -> SessionInfo:
    """Stop accepting votes (results and exports keep working)."""
    with ws.transaction() as con:
        _session_row(con, name)
        con.execute("UPDATE rating_sessions SET status='closed', closed_at=? WHERE name=?",
                    (time.time(), name))
    return get_session(ws, name)


def delete_session(ws: Workspace, name: str) -> None:
    """Remove a session with its items, raters and votes."""
    with ws.transaction() as con:
        _session_row(con, name)
        con.execute("DELETE FROM rating_sessions WHERE name=?", (name,))


def session_link(base_url: str, session: str, rater: str | None = None) -> str:
    """The link a rater opens: ``<base_url>?session=<name>[&rater=<name>]``."""
    query = {"session": session, **({"rater": rater} if rater else {})}
    return f"{base_url.rstrip('?')}?{urlencode(query)}"


# -- raters and votes --------------------------------------------------------------------------


def join(ws: Workspace, session: str, rater: str) -> str:
    """Open a session as ``rater`` (again, to resume): returns the checked rater name. A session
    with a rater list admits those names only; a closed session admits no one."""
    rater = check_rater_name(rater)

    def write() -> str:
        with ws.transaction() as con:
            spec = _open_session(con, session)
            if spec.raters and rater not in spec.raters:
                raise MormError(f"{rater!r} is not a rater of session {session!r}; ask its "
                                "owner to add you", field="rater")
            con.execute("INSERT OR IGNORE INTO rating_raters VALUES (?,?,?)",
                        (session, rater, time.time()))
        return rater

    return retry_busy(write)


def _require_joined(con: sqlite3.Connection, session: str, rater: str) -> None:
    if not con.execute("SELECT 1 FROM rating_raters WHERE session=? AND rater=?",
                       (session, rater)).fetchone():
        raise MormError(f"{rater!r} has not joined session {session!r}; join it first",
                        field="rater")


def _n_items(con: sqlite3.Connection, session: str) -> int:
    return con.execute("SELECT COUNT(*) FROM rating_items WHERE session=?",
                       (session,)).fetchone()[0]


def _item_id(item_id: object) -> int:
    if isinstance(item_id, bool) or not isinstance(item_id, numbers.Integral):
        raise MormError(f"an item id is an integer, got {item_id!r}", field="item_id")
    return int(item_id)


def _item(con: sqlite3.Connection, session: str, item_id: int) -> sqlite3.Row:
    row = con.execute("SELECT * FROM rating_items WHERE session=? AND item_id=?",
                      (session, _item_id(item_id))).fetchone()
    if row is None:
        raise MormError(f"session {session!r} has no item {item_id!r}", field="item_id")
    return row


def _view(row: sqlite3.Row, position: int = 0, total: int = 0) -> Item:
    return Item(session=row["session"], item_id=row["item_id"], prompt_id=row["prompt_id"],
                prompt=row["prompt"], response_a=row["response_a"],
                response_b=row["response_b"], category=row["category"], position=position,
                total=total)


def item_view(ws: Workspace, session: str, item_id: int) -> Item:
    """The prompt and responses A and B of one item, without policy names."""
    with ws.reading() as con:
        return _view(_item(con, session, item_id))


def next_item(ws: Workspace, session: str, rater: str) -> Item | None:
    """The rater's first unvoted item in their own order; None when done or the session is
    closed. It reads the database only, so a rater resumes where they stopped."""
    rater = check_rater_name(rater)
    with ws.reading() as con:
        spec, status = _session_row(con, session)
        _require_joined(con, session, rater)
        if status != "open":
            return None
        order = rater_order(spec, session, rater, _n_items(con, session))
        voted = {r[0] for r in con.execute(
            "SELECT item_id FROM rating_votes WHERE session=? AND rater=?", (session, rater))}
        for pos, item_id in enumerate(order, start=1):
            if item_id not in voted:
                return _view(_item(con, session, item_id), pos, len(order))
        return None


def vote(ws: Workspace, session: str, item_id: int, rater: str, answers: Mapping[str, str],
         overall: str | None = None, comment: str = "", *, revise: bool = False) -> VoteStatus:
    """Store one rater's answers on one item, in one transaction, as they are cast.

    Returns "inserted"; "unchanged" when the same vote is sent again (a retried request);
    "revised" when ``revise`` replaces an earlier, different vote. A different vote without
    ``revise`` raises `MormError`, as does any invalid input; then nothing is stored.
    """
    rater = check_rater_name(rater)

    def write() -> VoteStatus:
        with ws.transaction() as con:
            spec = _open_session(con, session)
            clean, overall_ = check_answers(spec, answers, overall, comment)
            _require_joined(con, session, rater)
            iid = _item(con, session, item_id)["item_id"]
            if spec.pairs_per_rater and iid not in rater_order(
                    spec, session, rater, _n_items(con, session)):
                raise MormError(f"item {iid} is not among {rater!r}'s items", field="item_id")
            key = (session, iid, rater)
            old = con.execute("SELECT answers, overall, comment FROM rating_votes WHERE "
                              "session=? AND item_id=? AND rater=?", key).fetchone()
            body = (json.dumps(clean, sort_keys=True), overall_, comment)
            if old is None:
                con.execute("INSERT INTO rating_votes VALUES (?,?,?,?,?,?,?,0)",
                            (*key, *body, time.time()))
                return "inserted"
            if tuple(old) == body:
                return "unchanged"
            if not revise:
                raise MormError(f"{rater!r} already voted on item {iid} differently; "
                                "revise the vote to replace it", field="item_id")
            con.execute("UPDATE rating_votes SET answers=?, overall=?, comment=?, cast_at=?, "
                        "revisions=revisions+1 WHERE session=? AND item_id=? AND rater=?",
                        (*body, time.time(), *key))
            return "revised"

    return retry_busy(write)


def get_vote(ws: Workspace, session: str, item_id: int, rater: str) -> dict | None:
    """The rater's stored vote on an item ({answers, overall, comment, cast_at}), or None."""
    with ws.reading() as con:
        row = con.execute("SELECT answers, overall, comment, cast_at, revisions FROM "
                          "rating_votes WHERE session=? AND item_id=? AND rater=?",
                          (session, _item_id(item_id), rater)).fetchone()
    return None if row is None else {**dict(row), "answers": json.loads(row["answers"])}


def reveal(ws: Workspace, session: str, item_id: int, rater: str) -> dict[str, str]:
    """The policies behind A and B, ``{"a": ..., "b": ...}``, once ``rater`` voted on the item,
    in a session made with ``reveal_after_vote``."""
    if not get_session(ws, session).spec.reveal_after_vote:
        raise MormError(f"session {session!r} keeps the policies hidden from raters "
                        "(it was made without reveal_after_vote)", field="session")
    if get_vote(ws, session, item_id, rater) is None:
        raise MormError(f"{rater!r} has not voted on item {item_id}: the policies stay hidden "
                        "until then", field="item_id")
    with ws.reading() as con:
        row = _item(con, session, item_id)
    return {"a": row["policy_a"], "b": row["policy_b"]}


def progress(ws: Workspace, session: str) -> pd.DataFrame:
    """One row per rater (listed or joined): joined, voted, total, remaining, last_vote_at."""
    with ws.reading() as con:
        spec, _ = _session_row(con, session)
        n = _n_items(con, session)
        joined = {r["rater"]: r["joined_at"] for r in con.execute(
            "SELECT rater, joined_at FROM rating_raters WHERE session=?", (session,))}
        votes = con.execute("SELECT rater, item_id, cast_at FROM rating_votes WHERE session=?",
                            (session,)).fetchall()
    rows = []
    for rater in list(spec.raters) + sorted(set(joined) - set(spec.raters)):
        order = set(rater_order(spec, session, rater, n))
        mine = [v["cast_at"] for v in votes if v["rater"] == rater and v["item_id"] in order]
        rows.append({"rater": rater, "joined": rater in joined, "voted": len(mine),
                     "total": len(order), "remaining": len(order) - len(mine),
                     "last_vote_at": max(mine) if mine else None})
    return pd.DataFrame(rows, columns=["rater", "joined", "voted", "total", "remaining",
                                       "last_vote_at"])


def local_time(t: float | None) -> str:
    """A Unix time as the local date and time, to the minute ("—" for none)."""
    if t is None or t != t:  # None or NaN
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def progress_shown(ws: Workspace, session: str) -> pd.DataFrame:
    """`progress` for people: ``last_vote_at`` as a local date and time ("—" before the
    rater's first vote), in a column "last vote"."""
    prog = progress(ws, session)
    prog["last_vote_at"] = [local_time(t) for t in prog["last_vote_at"]]
    return prog.rename(columns={"last_vote_at": "last vote"})


def load_votes(ws: Workspace, session: str) -> pd.DataFrame:
    """Every vote with its item: item and text columns, policies, ``flipped``, overall, comment,
    cast_at, and one ``answer:<objective>`` column per objective; ordered by item, rater."""
    with ws.reading() as con:
        spec, _ = _session_row(con, session)
        rows = con.execute(
            "SELECT v.item_id, v.rater, i.prompt_id, i.category, i.prompt, i.response_a, "
            "i.response_b, i.row_a, i.row_b, i.policy_a, i.policy_b, i.flipped, v.answers, "
            "v.overall, v.comment, v.cast_at, v.revisions FROM rating_votes v JOIN rating_items "
            "i ON i.session = v.session AND i.item_id = v.item_id WHERE v.session=? "
            "ORDER BY v.item_id, v.rater", (session,)).fetchall()
    records = []
    for r in rows:
        rec = {k: r[k] for k in r.keys() if k != "answers"}
        answers = json.loads(r["answers"])
        rec.update({answer_column(o): answers.get(o) for o in spec.objectives})
        records.append(rec)
    frame = pd.DataFrame(records)
    if frame.empty:
        frame = pd.DataFrame(columns=VOTE_COLUMNS + [answer_column(o) for o in spec.objectives])
    return frame

