"""The Evaluate page under AppTest: create a session, rate as a rater through a session link,
names revealed only after the vote, resume, results and exports."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.evaluation.sessions import create_session, load_votes
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


def test_create_a_session_from_the_page(cands):
    at = open_page()
    at.text_input(key="eval_new_name").input("s1").run()
    at.multiselect(key="eval_new_objs").set_value(["helpful", "harmless"]).run()
    at.button(key="eval_create").click().run()
    assert not at.exception
    assert at.selectbox(key="eval_session").value == "s1"


def vote_current(at, **answers) -> None:
    for r in at.radio:
        for obj, value in answers.items():
            if r.key and r.key.endswith(f"_{obj}"):
                r.set_value(value)
    next(b for b in at.button if b.label == "Submit vote").click().run()
    assert not at.exception


def test_rate_through_a_link_reveal_after_vote_and_resume(cands):
    create_session(cands, "s", "ab", objectives=["helpful", "harmless"], seed=1)
    at = open_page({"session": "s", "rater": "ann"})
    assert at.text_input(key="eval_rater").value == "ann"
    texts = [t.value for t in at.text]
    assert "Question 0?" in texts and any("<b>0</b>" in t for t in texts)  # as text
    shown = " ".join(m.value for m in at.markdown) + " ".join(i.value for i in at.info)
    assert "pol-x" not in shown and "pol-y" not in shown  # names hidden before the vote
    vote_current(at, helpful="a")  # harmless unanswered: refused, nothing stored
    assert any("Answer every objective" in e.value for e in at.error)
    assert load_votes(cands, "s").empty
    vote_current(at, helpful="a", harmless="tie")
    (revealed,) = [i.value for i in at.info if i.value.startswith("Saved.")]
    assert "A was" in revealed and "pol-x" in revealed and "pol-y" in revealed
    assert len(load_votes(cands, "s")) == 1
    again = open_page({"session": "s", "rater": "ann"})  # a new tab: resumes at pair 2
    assert "Question 0?" not in [t.value for t in again.text]
    assert any("Pair 2 of 3" in str(p.proto) for p in again.get("progress"))
    vote_current(again, helpful="b", harmless="both_bad")
    vote_current(again, helpful="tie", harmless="a")
    assert any("rated every pair" in s.value for s in again.success)
    tables = [d.value for d in again.dataframe]
    assert any("win_rate" in t.columns for t in tables)
    assert len(load_votes(cands, "s")) == 3


def test_presentation_mode_hides_forms(cands):
    create_session(cands, "s", "ab", objectives=["helpful"])
    at = open_page({"present": "1"})
    assert not [b for b in at.button if b.key in ("eval_create", "eval_close")]
