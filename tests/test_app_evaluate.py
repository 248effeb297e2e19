"""The Evaluate page and the rating view under AppTest: create a session, rate through a session
link (the rating view alone: no results, exports or other pages), names revealed after the vote
only in a session made to reveal them, resume, results and exports, saving the votes as a
dataset without replacing one unasked."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.data.loaders import load_preference_data
from morm_explorer.evaluation.exports import to_preference_pairs
from morm_explorer.evaluation.sessions import create_session, get_session, join, load_votes, vote
from tests.conftest import REPO

pytestmark = pytest.mark.slow

PAGE = "pages/evaluate.py"


@pytest.fixture
def cands(ws):
    recs = [{"prompt_id": f"p{i}", "prompt": f"Question {i}?", "response": f"{pol} says "
             f"<b>{i}</b>", "source": pol, "category": "test"}
            for i in range(3) for pol in ("pol-x", "pol-y")]
    save_candidate_set(ws, "ab", from_records(recs))
    return ws


def open_page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def open_link(**query) -> AppTest:
    """The app as a session link opens it."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def test_create_a_session_from_the_page(cands):
    at = open_page()
    at.text_input(key="eval_new_name").input("s1").run()
    at.multiselect(key="eval_new_objs").set_value(["helpful", "harmless"]).run()
    at.button(key="eval_create").click().run()
    assert not at.exception
    assert at.selectbox(key="eval_session").value == "s1"
    assert get_session(cands, "s1").spec.reveal_after_vote is False  # off unless ticked
    at.text_input(key="eval_new_name").input("s2").run()
    at.checkbox(key="eval_new_reveal").check().run()
    at.button(key="eval_create").click().run()
    assert get_session(cands, "s2").spec.reveal_after_vote is True


def vote_current(at, **answers) -> None:
    for r in at.radio:
        for obj, value in answers.items():
            if r.key and r.key.endswith(f"_{obj}"):
                r.set_value(value)
    next(b for b in at.button if b.label == "Submit vote").click().run()
    assert not at.exception


def shown(at) -> str:
    """Every text of the page but the prompt and responses (st.text)."""
    return " ".join(str(e.value) for kind in ("title", "markdown", "caption", "info", "success",
                                             "error", "warning", "code")
                    for e in getattr(at, kind))


def assert_rating_view_only(at) -> None:
    """The rating view: no tabs, tables, downloads or sidebar."""
    assert [t.value for t in at.title] == ["Rating"]
    assert not at.tabs and not at.dataframe and not at.get("download_button")
    assert not at.sidebar.children and not at.toggle  # no presentation-mode toggle either


def assert_no_other_page(at) -> None:
    """A session link's app registers the rating view alone: no other page to switch to."""
    for page in ("pages/evaluate.py", "pages/home.py", "pages/compare.py", "pages/explore.py",
                 "pages/data.py"):
        with pytest.raises(ValueError, match="navigation page"):
            at.switch_page(page)


def test_a_rater_link_opens_the_rating_view_alone_and_reveals_nothing(cands):
    create_session(cands, "s", "ab", objectives=["helpful", "harmless"], seed=1)
    at = open_link(session="s", rater="ann")
    assert_rating_view_only(at)
    assert_no_other_page(at)
    assert at.text_input(key="eval_rater").value == "ann"
    texts = [t.value for t in at.text]
    assert "Question 0?" in texts and any("<b>0</b>" in t for t in texts)  # as text
    assert "pol-" not in shown(at)
    vote_current(at, helpful="a")  # harmless unanswered: refused, nothing stored
    assert any("Answer every objective" in e.value for e in at.error)
    assert load_votes(cands, "s").empty
    vote_current(at, helpful="a", harmless="tie")
    assert any(i.value == "Saved your vote on pair 1." for i in at.info)
    assert "pol-" not in shown(at) and "pol\\-" not in shown(at)  # not even escaped
    assert_rating_view_only(at)
    assert len(load_votes(cands, "s")) == 1
    again = open_link(session="s", rater="ann")  # a new tab: resumes at pair 2
    assert "Question 0?" not in [t.value for t in again.text]
    assert any("Pair 2 of 3" in str(p.proto) for p in again.get("progress"))
    vote_current(again, helpful="b", harmless="both_bad")
    vote_current(again, helpful="tie", harmless="a")
    assert any("rated every pair" in s.value for s in again.success)
    assert_rating_view_only(again)  # done: still no results
    assert "pol-" not in shown(again)
    assert len(load_votes(cands, "s")) == 3


def test_a_link_without_a_name_asks_for_one(cands):
    create_session(cands, "s", "ab", objectives=["helpful"])
    at = open_link(session="s")
    assert_rating_view_only(at)
    assert_no_other_page(at)
    assert not at.text and not at.radio  # no item before a name
    at.text_input(key="eval_rater").input("bob").run()
    assert "Question" in " ".join(t.value for t in at.text)
    missing = open_link(session="nope", rater="bob")
    assert any("no rating session named" in e.value for e in missing.error)
    assert_rating_view_only(missing)


def test_a_session_made_to_reveal_names_the_policies_after_the_vote(cands):
    create_session(cands, "s", "ab", objectives=["helpful"], seed=1, reveal_after_vote=True)
    at = open_link(session="s", rater="ann")
    assert "pol-" not in shown(at)  # hidden before the vote
    vote_current(at, helpful="a")
    (revealed,) = [i.value for i in at.info if i.value.startswith("Saved.")]
    # the names as plain text: markdown characters escaped
    assert "A was" in revealed and "pol\\-x" in revealed and "pol\\-y" in revealed
    assert_rating_view_only(at)


def test_the_owner_sees_results_and_exports(cands):
    create_session(cands, "s", "ab", objectives=["helpful"], seed=1)
    for rater, answer in (("ann", "a"), ("bob", "b")):
        join(cands, "s", rater)
        vote(cands, "s", 1, rater, {"helpful": answer})
    at = open_page()
    assert any("win_rate" in d.value.columns for d in at.dataframe)
    prog = next(d.value for d in at.dataframe if "last vote" in d.value.columns)
    assert "last_vote_at" not in prog.columns
    assert all(v == "—" or len(v) == len("2026-01-31 12:00") for v in prog["last vote"])
    assert (prog["last vote"] != "—").sum() == 2  # ann and bob voted
    assert {b.label for b in at.get("download_button")} >= {"votes.csv", "pairs.jsonl"}


def datasets(ws) -> dict[str, int]:
    return {d.name: d.n_records for d in ws.list_datasets()}


def test_saving_votes_as_a_dataset_never_replaces_one_unasked(cands):
    create_session(cands, "s", "ab", objectives=["helpful"], seed=1)
    join(cands, "s", "ann")
    vote(cands, "s", 1, "ann", {"helpful": "a"})
    assert len(to_preference_pairs(cands, "s")) == 1
    recs = [{"prompt": f"Prompt {i}?", "response_a": "Yes.", "response_b": "No.",
             "labels": {"helpful": "a"}} for i in range(5)]
    path = cands.root.parent / "big.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cands.save_dataset("big", load_preference_data(path))
    at = open_page()
    at.text_input(key="eval_ds_name").input("big").run()
    replace = at.checkbox(key="eval_ds_replace_big")
    assert "Replace the existing dataset big" in replace.label and not replace.value
    at.button(key="eval_to_dataset").click().run()
    assert not at.exception
    assert any("exists" in e.value for e in at.error)
    assert datasets(cands)["big"] == 5  # unchanged
    at.checkbox(key="eval_ds_replace_big").check().run()
    at.button(key="eval_to_dataset").click().run()
    assert any("Saved dataset big (1 pairs)" in s.value for s in at.success)
    assert datasets(cands)["big"] == 1
    at.text_input(key="eval_ds_name").input("fresh").run()  # a new name: no question
    assert not [c for c in at.checkbox if c.key.startswith("eval_ds_replace")]
    at.button(key="eval_to_dataset").click().run()
    assert (datasets(cands)["big"], datasets(cands)["fresh"]) == (1, 1)


def test_presentation_mode_hides_forms(cands):
    create_session(cands, "s", "ab", objectives=["helpful"])
    at = open_page({"present": "1"})
    assert not [b for b in at.button if b.key in ("eval_create", "eval_close")]
