"""Blind rating sessions: creation checks, a really random A/B order, hidden policy names,
resuming, rater lists, rejected votes storing nothing, and 20 raters voting at once."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter

import pytest
from scipy.stats import binomtest, chisquare

from morm_explorer.data.candidates import from_records, load_candidate_set, save_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.evaluation.sessions import (
    close_session,
    create_session,
    delete_session,
    get_session,
    get_vote,
    item_view,
    join,
    list_sessions,
    load_votes,
    next_item,
    progress,
    reveal,
    session_link,
    vote,
)
from morm_explorer.workspace import Workspace

OBJ = ("helpful", "harmless")


def make_set(ws: Workspace, n_prompts: int = 12, policies=("alpha", "beta"), name: str = "cs",
             category: str | None = "chat") -> None:
    """Prompt i answered by every policy, with texts that name neither the policy nor its
    position, so that a leak of a policy name into what a rater sees would show."""
    recs = [{"prompt_id": f"q{i}", "prompt": f"Question number {i}?",
             "response": f"Answer {j} to question {i}.", "source": p,
             **({"category": category} if category else {})}
            for i in range(n_prompts) for j, p in enumerate(policies)]
    save_candidate_set(ws, name, from_records(recs))


def items(ws: Workspace, session: str) -> list[dict]:
    con = ws.connect()
    try:
        return [dict(r) for r in con.execute(
            "SELECT * FROM rating_items WHERE session=? ORDER BY item_id", (session,))]
    finally:
        con.close()


def ans(a: str = "a", b: str = "tie") -> dict[str, str]:
    return {"helpful": a, "harmless": b}


@pytest.mark.parametrize("kwargs, fld", [
    ({"policies": ["alpha", "nobody"]}, "policies"),
    ({"policies": ["alpha"]}, "policies"),
    ({"policies": ["alpha", "alpha"]}, "policies"),
    ({"objectives": ["be nice!"]}, "objectives"),
    ({"objectives": []}, "objectives"),
    ({"objectives": ["helpful", "helpful"]}, "objectives"),
    ({"objectives": "helpful"}, "objectives"),
    ({"objectives": ["helpful", "overall"]}, "objectives"),
    ({"raters": ["ann", "bad name"]}, "raters"),
    ({"prompts": ["q0", "nope"]}, "prompts"),
    ({"items_per_prompt": 0}, "items_per_prompt"),
    ({"limit_prompts": -1}, "limit_prompts"),
    ({"seed": -3}, "seed"),
    ({"reveal_after_vote": "yes"}, "reveal_after_vote"),
    ({"name": "my session"}, "name"),
    ({"name": "../up"}, "name"),
])
def test_create_session_rejects_bad_input_naming_the_field(ws, kwargs, fld):
    make_set(ws)
    args = {"name": "s", "objectives": OBJ, **kwargs}
    with pytest.raises(MormError) as e:
        create_session(ws, args.pop("name"), "cs", **args)
    assert e.value.field == fld
    assert list_sessions(ws) == []


def test_create_session_other_refusals(ws):
    make_set(ws)
    with pytest.raises(MormError, match="no candidate set"):
        create_session(ws, "s", "missing", objectives=OBJ)
    create_session(ws, "s", "cs", objectives=OBJ)
    with pytest.raises(MormError, match="exists") as e:
        create_session(ws, "s", "cs", objectives=OBJ)
    assert e.value.field == "name"


def test_items_pair_two_different_policies_on_the_same_prompt(ws):
    make_set(ws, n_prompts=6, policies=("alpha", "beta", "gamma"))
    recs = load_candidate_set(ws, "cs").records() + [
        {"prompt_id": "solo", "prompt": "Only one policy here?", "response": "x",
         "source": "alpha"},
        {"prompt_id": "same", "prompt": "Same text?", "response": "same", "source": "alpha"},
        {"prompt_id": "same", "prompt": "Same text?", "response": "same ", "source": "beta"}]
    save_candidate_set(ws, "cs2", from_records(recs))
    info = create_session(ws, "s", "cs2", objectives=OBJ, items_per_prompt=3)
    frame = load_candidate_set(ws, "cs2").frame
    rows = items(ws, "s")
    assert info.n_items == len(rows) == 6 * 3  # every pair of 3 policies on each prompt
    for r in rows:
        a, b = frame.iloc[r["row_a"]], frame.iloc[r["row_b"]]
        assert r["policy_a"] != r["policy_b"]
        assert (a.source, b.source) == (r["policy_a"], r["policy_b"])
        assert a.prompt_id == b.prompt_id == r["prompt_id"]
        assert (r["response_a"], r["response_b"]) == (a.response, b.response)
    per_prompt = Counter(r["prompt_id"] for r in rows)
    assert set(per_prompt.values()) == {3}
    assert info.summary["skipped"]["prompts_with_fewer_than_2_policies"] == 1
    assert info.summary["skipped"]["identical_responses"] == 1
    assert "solo" not in info.spec.prompts and "same" not in info.spec.prompts
    assert info.spec.policies == ("alpha", "beta", "gamma")  # default: every source
    limited = create_session(ws, "t", "cs2", objectives=OBJ, policies=["beta", "gamma"],
                             limit_prompts=4)
    assert limited.n_items == 4 and len(limited.spec.prompts) == 4
    assert {r["policy_a"] for r in items(ws, "t")} <= {"beta", "gamma"}


def test_ab_order_is_really_random_and_independent_of_the_policy(ws):
    make_set(ws, n_prompts=400, policies=("alpha", "beta", "gamma"))
    info = create_session(ws, "big", "cs", objectives=OBJ, seed=7)
    rows = items(ws, "big")
    assert info.n_items == 400
    flips = [r["flipped"] for r in rows]
    # About half flipped: a two-sided binomial test at 1% (deterministic for this seed).
    assert binomtest(sum(flips), len(flips)).pvalue > 0.01
    # flipped means the later policy of the pair (in session order) is shown as A.
    order = {p: i for i, p in enumerate(info.spec.policies)}
    for r in rows:
        assert r["flipped"] == int(order[r["policy_a"]] > order[r["policy_b"]])
    # Each policy is shown as A about as often as B, whichever pair it is in.
    for p in info.spec.policies:
        shown = [r["policy_a"] == p for r in rows if p in (r["policy_a"], r["policy_b"])]
        assert binomtest(sum(shown), len(shown)).pvalue > 0.01
    # Not a pattern over items: consecutive orders agree about half the time, and the four
    # (previous, next) combinations are equally frequent (chi-square).
    pairs = Counter(zip(flips, flips[1:], strict=False))
    assert chisquare([pairs[k] for k in [(0, 0), (0, 1), (1, 0), (1, 1)]]).pvalue > 0.01
    # Recorded and reproducible: the same seed gives the same order, another seed another.
    delete_session(ws, "big")
    create_session(ws, "big", "cs", objectives=OBJ, seed=7)
    assert [r["flipped"] for r in items(ws, "big")] == flips
    create_session(ws, "other", "cs", objectives=OBJ, seed=8)
    assert [r["flipped"] for r in items(ws, "other")] != flips


def test_policy_names_stay_hidden_until_the_rater_voted(ws):
    make_set(ws, policies=("policy-alpha", "policy-beta"))
    create_session(ws, "s", "cs", objectives=OBJ, reveal_after_vote=True)
    join(ws, "s", "ann")
    join(ws, "s", "bob")
    item = next_item(ws, "s", "ann")
    shown = json.dumps(dataclasses.asdict(item))
    assert "policy-" not in shown and "policy-" not in json.dumps(
        dataclasses.asdict(item_view(ws, "s", item.item_id)))
    with pytest.raises(MormError, match="hidden"):
        reveal(ws, "s", item.item_id, "ann")
    assert vote(ws, "s", item.item_id, "ann", ans()) == "inserted"
    names = reveal(ws, "s", item.item_id, "ann")
    row = items(ws, "s")[item.item_id - 1]
    assert names == {"a": row["policy_a"], "b": row["policy_b"]}
    with pytest.raises(MormError, match="hidden"):  # bob has not voted on it yet
        reveal(ws, "s", item.item_id, "bob")


def test_a_session_reveals_no_policy_unless_made_to(ws):
    make_set(ws)
    info = create_session(ws, "s", "cs", objectives=OBJ)
    assert info.spec.reveal_after_vote is False
    join(ws, "s", "ann")
    item = next_item(ws, "s", "ann")
    vote(ws, "s", item.item_id, "ann", ans())
    with pytest.raises(MormError, match="hidden from raters"):
        reveal(ws, "s", item.item_id, "ann")
    # a session stored before the option existed has no such key: it reveals nothing
    con = ws.connect()
    try:
        spec = json.loads(con.execute("SELECT spec FROM rating_sessions").fetchone()[0])
        del spec["reveal_after_vote"]
        with con:
            con.execute("UPDATE rating_sessions SET spec=?", (json.dumps(spec),))
    finally:
        con.close()
    assert get_session(ws, "s").spec.reveal_after_vote is False
    with pytest.raises(MormError, match="hidden from raters"):
        reveal(ws, "s", item.item_id, "ann")


def test_raters_see_their_own_order_and_resume_after_a_restart(ws):
    make_set(ws, n_prompts=20)
    create_session(ws, "s", "cs", objectives=OBJ)
    join(ws, "s", "ann")
    join(ws, "s", "bob")
    first = next_item(ws, "s", "ann")
    assert next_item(ws, "s", "ann") == first  # nothing changes until a vote
    done = []
    for _ in range(7):
        it = next_item(ws, "s", "ann")
        vote(ws, "s", it.item_id, "ann", ans())
        done.append(it.item_id)
    fresh = Workspace(ws.root)  # a restarted server: only the database remains
    join(fresh, "s", "ann")  # re-joining to resume is harmless
    resumed = next_item(fresh, "s", "ann")
    assert resumed.position == 8 and resumed.total == 20 and resumed.item_id not in done
    bob_order = []
    while (it := next_item(fresh, "s", "bob")) is not None:
        bob_order.append(it.item_id)
        vote(fresh, "s", it.item_id, "bob", ans("b"))
    assert sorted(bob_order) == list(range(1, 21)) and bob_order[:7] != done
    table = progress(fresh, "s").set_index("rater")
    assert table.loc["ann", "voted"] == 7 and table.loc["ann", "remaining"] == 13
    assert table.loc["bob", "voted"] == 20 and table.loc["bob", "remaining"] == 0
    assert next_item(fresh, "s", "bob") is None


def test_rater_list_and_pairs_per_rater_are_enforced(ws):
    make_set(ws, n_prompts=10)
    create_session(ws, "s", "cs", objectives=OBJ, raters=["ann", "bob"], pairs_per_rater=4)
    with pytest.raises(MormError) as e:
        join(ws, "s", "eve")
    assert e.value.field == "rater"
    for bad in ("", "a b", "../x", 7):
        with pytest.raises(MormError):
            join(ws, "s", bad)
    assert join(ws, "s", " ann ") == "ann"
    with pytest.raises(MormError, match="join"):
        next_item(ws, "s", "bob")
    with pytest.raises(MormError, match="join"):
        vote(ws, "s", 1, "bob", ans())
    mine = []
    while (it := next_item(ws, "s", "ann")) is not None:
        mine.append(it.item_id)
        vote(ws, "s", it.item_id, "ann", ans())
    assert len(mine) == 4
    outside = next(i for i in range(1, 11) if i not in mine)
    with pytest.raises(MormError, match="not among"):
        vote(ws, "s", outside, "ann", ans())
    table = progress(ws, "s").set_index("rater")
    assert table.loc["ann"].tolist()[:4] == [True, 4, 4, 0]
    assert table.loc["bob"].tolist()[:4] == [False, 0, 4, 4]


@pytest.mark.parametrize("answers, extra", [
    ({"helpful": "a"}, {}),  # an objective missing
    ({"helpful": "a", "harmless": "b", "honest": "a"}, {}),  # an unknown objective
    ({"helpful": "maybe", "harmless": "b"}, {}),
    ({"helpful": None, "harmless": "b"}, {}),
    (["a", "b"], {}),
    (ans(), {"overall": "c"}),
    (ans(), {"comment": "x" * 6000}),
    (ans(), {"item_id": 999}),
    (ans(), {"item_id": "1"}),
    (ans(), {"rater": "bad name"}),
])
def test_invalid_votes_are_rejected_and_nothing_is_stored(ws, answers, extra):
    make_set(ws)
    create_session(ws, "s", "cs", objectives=OBJ)
    join(ws, "s", "ann")
    args = {"item_id": 1, "rater": "ann", **extra}
    with pytest.raises(MormError):
        vote(ws, "s", args.pop("item_id"), args.pop("rater"), answers, **args)
    assert get_session(ws, "s").n_votes == 0


def test_a_vote_is_stored_once_resent_is_a_no_op_and_changes_need_revise(ws):
    make_set(ws)
    create_session(ws, "s", "cs", objectives=OBJ)
    join(ws, "s", "ann")
    assert vote(ws, "s", 1, "ann", {"helpful": "A ", "harmless": "Both_Bad"}, "a",
                "nice") == "inserted"
    assert vote(ws, "s", 1, "ann", ans("a", "both_bad"), "a", "nice") == "unchanged"
    with pytest.raises(MormError, match="revise"):
        vote(ws, "s", 1, "ann", ans("b", "tie"))
    assert get_vote(ws, "s", 1, "ann")["answers"] == ans("a", "both_bad")
    assert vote(ws, "s", 1, "ann", ans("b", "tie"), revise=True) == "revised"
    stored = get_vote(ws, "s", 1, "ann")
    assert stored["answers"] == ans("b", "tie") and stored["overall"] is None
    assert stored["revisions"] == 1 and get_session(ws, "s").n_votes == 1


def test_closed_sessions_take_no_votes_or_raters(ws):
    make_set(ws)
    create_session(ws, "s", "cs", objectives=OBJ)
    join(ws, "s", "ann")
    vote(ws, "s", 1, "ann", ans())
    info = close_session(ws, "s")
    assert info.status == "closed" and info.closed_at is not None
    with pytest.raises(MormError, match="closed"):
        vote(ws, "s", 2, "ann", ans())
    with pytest.raises(MormError, match="closed"):
        join(ws, "s", "bob")
    assert next_item(ws, "s", "ann") is None
    assert len(load_votes(ws, "s")) == 1  # results and exports still read it
    delete_session(ws, "s")
    assert list_sessions(ws) == []
    with pytest.raises(MormError, match="no rating session"):
        get_session(ws, "s")


def test_session_link():
    assert session_link("http://host:8501/evaluate", "s-1", "ann") == \
        "http://host:8501/evaluate?session=s-1&rater=ann"


def test_twenty_raters_voting_at_once_store_every_vote_exactly_once(ws):
    n_raters, n_items = 20, 50
    make_set(ws, n_prompts=n_items)
    create_session(ws, "s", "cs", objectives=OBJ)
    raters = [f"rater{i:02d}" for i in range(n_raters)]
    for r in raters:
        join(ws, "s", r)
    choices = ("a", "b", "tie", "both_bad")

    def answer(rater: str, item_id: int) -> dict[str, str]:
        k = int(rater[-2:]) + item_id
        return {"helpful": choices[k % 4], "harmless": choices[(k // 4) % 4]}

    start = threading.Barrier(n_raters)
    statuses: dict[str, Counter] = {}
    errors: list[BaseException] = []

    def rate(rater: str) -> None:
        own = Workspace(ws.root)  # each rater its own server-side object, one database
        seen: Counter = Counter()
        try:
            start.wait()
            for item_id in range(1, n_items + 1):
                seen[vote(own, "s", item_id, rater, answer(rater, item_id))] += 1
                if item_id % 10 == 0:  # a browser retrying a request it thinks was lost
                    seen[vote(own, "s", item_id, rater, answer(rater, item_id))] += 1
        except BaseException as e:  # reported below: a thread's exception is lost otherwise
            errors.append(e)
        statuses[rater] = seen

    threads = [threading.Thread(target=rate, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert all(s == Counter(inserted=50, unchanged=5) for s in statuses.values())
    votes = load_votes(ws, "s")
    assert len(votes) == n_raters * n_items == 1000
    assert not votes.duplicated(["item_id", "rater"]).any()
    assert set(zip(votes.item_id, votes.rater, strict=True)) == {
        (i, r) for i in range(1, n_items + 1) for r in raters}
    for row in votes.to_dict("records"):  # what each rater sent, not a neighbour's vote
        want = answer(row["rater"], row["item_id"])
        assert (row["answer:helpful"], row["answer:harmless"]) == (want["helpful"],
                                                                   want["harmless"])
    assert progress(ws, "s")["remaining"].eq(0).all()
