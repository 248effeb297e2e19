"""No user- or model-provided string renders as markdown: hostile names and texts (a link, a
remote image, raw HTML) planted in a workspace, a session link and an upload reach every page,
and every element that renders markdown (bodies, labels, tooltips, progress texts, radio
options, expander and tab labels) shows them with their markdown characters escaped."""

from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from morm_explorer.data.candidates import from_records, save_candidate_set
from morm_explorer.demo_jobs import PrepareDemoJob
from morm_explorer.evaluation.sessions import create_session
from morm_explorer.jobs.store import JobStore
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.jobs import TrainRewardModelJob
from morm_explorer.ui.text import plain
from tests.conftest import REPO

pytestmark = pytest.mark.slow

LINK = "[click](http://evil.example)"
IMAGE = "![x](http://evil.example/x.png)"
HTML = "<img src=http://evil.example/y.png>"
HOSTILE = f"{LINK} {IMAGE} {HTML}"
RATER = "[Session expired - sign in again](http://evil.example) ![x](http://evil.example/x.png)"
SOURCES = [f"pol-a {LINK}", f"pol-b {IMAGE}", f"pol-c {HTML}"]
# A link, an image or an HTML tag whose markdown characters are not escaped.
UNESCAPED = re.compile(r"(?<!\\)\]\(|(?<!\\)!\[|(?<!\\)<img", re.IGNORECASE)
MARKDOWN_BODIES = {"markdown", "caption", "error", "warning", "info", "success", "title",
                   "header", "subheader", "toast"}
PAGES = ["pages/home.py", "pages/tour.py", "pages/data.py", "pages/reward_models.py",
         "pages/explore.py", "pages/finetune.py", "pages/compare.py", "pages/evaluate.py",
         "pages/jobs.py"]


def rendered_markdown(at: AppTest) -> list[str]:
    """Every string of the page that Streamlit renders as markdown."""
    out: list[str] = []

    def walk(node) -> None:
        kind = getattr(node, "type", "")
        if kind in MARKDOWN_BODIES:
            out.append(str(node.value))
        elif kind == "progress":
            out.append(node.text)
        elif kind == "radio":
            out.extend(str(o) for o in node.options)
        for attr in ("label", "help"):
            if isinstance(getattr(node, attr, None), str):
                out.append(getattr(node, attr))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return out


def assert_escaped(at: AppTest, must_show: bool = True) -> None:
    """No unescaped link, image or tag in what the page renders as markdown; with
    ``must_show``, the hostile strings did reach it (escaped)."""
    assert not at.exception, at.exception
    shown = rendered_markdown(at)
    bad = [s for s in shown if "evil" in s and UNESCAPED.search(s)]
    assert not bad, bad
    if must_show:
        assert any("evil" in s for s in shown), shown


@pytest.fixture
def hostile_ws(ws, no_worker):
    """Candidate sources, categories and prompts with markdown; a three-policy session that
    reveals names; a running job whose message and a failed demo build whose error hold it."""
    recs = [{"prompt_id": f"p{i}", "prompt": f"Question {i} {HOSTILE}?",
             "response": f"{pol} answers {i}: {HOSTILE}", "source": pol, "category": HOSTILE}
            for i in range(3) for pol in SOURCES]
    save_candidate_set(ws, "ab", from_records(recs))
    create_session(ws, "s", "ab", objectives=["helpful"], seed=1, reveal_after_vote=True)
    store = JobStore(ws)
    train = store.submit(TrainRewardModelJob(config=TrainConfig(
        dataset="demo-preferences", name="evil-rm").to_dict()))
    store.claim("w", job_id=train)
    store.set_progress(train, 0.5, f"epoch 1 {HOSTILE}")
    demo = store.submit(PrepareDemoJob())
    store.claim("w", job_id=demo)
    store.fail(demo, "w", f"build failed: {HOSTILE}")
    return ws


def app(**query) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def vote_first(at: AppTest) -> None:
    at.radio(key=next(r.key for r in at.radio if r.key.endswith("_helpful"))).set_value("a")
    next(b for b in at.button if b.label == "Submit vote").click().run()


def test_a_rater_name_from_a_session_link_is_not_markdown(hostile_ws):
    at = app(session="s", rater=RATER)
    assert any("invalid rater name" in e.value for e in at.error)
    assert_escaped(at)


def test_a_rater_name_typed_on_the_evaluate_page_is_not_markdown(hostile_ws):
    at = app()
    at.switch_page("pages/evaluate.py").run()
    at.text_input(key="eval_rater").input(RATER).run()
    assert at.error
    assert_escaped(at)


def test_sources_and_categories_shown_to_a_rater_are_not_markdown(hostile_ws):
    at = app(session="s", rater="ann")
    assert_escaped(at)  # the category of the item
    vote_first(at)
    (saved,) = [i.value for i in at.info if i.value.startswith("Saved.")]
    assert any(plain(s) in saved for s in SOURCES)  # revealed, escaped
    assert_escaped(at)


def test_sources_revealed_on_the_evaluate_page_are_not_markdown(hostile_ws):
    at = app()
    at.switch_page("pages/evaluate.py").run()
    at.text_input(key="eval_rater").input("ann").run()
    assert_escaped(at)
    vote_first(at)
    assert any(i.value.startswith("Saved.") for i in at.info)
    assert_escaped(at)  # also the export that names the three policies in its refusal


def test_an_uploaded_file_name_and_its_categories_are_not_markdown(hostile_ws):
    rows = [{"prompt": f"Prompt {i} {HOSTILE}", "response_a": "Yes.", "response_b": "No.",
             "labels": {"helpful": "a"}, "category": HOSTILE} for i in range(3)]
    rows.append({**rows[0], "prompt": "Another prompt", "extra": HOSTILE})  # an issue row
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    at = app()
    at.switch_page("pages/data.py").run()
    at.radio(key="data_source").set_value("Upload a file").run()
    at.file_uploader(key="data_upload").set_value((f"{HOSTILE}.jsonl", data,
                                                   "application/json")).run()
    assert [e.label for e in at.expander if "issues in" in e.label]  # the file's name
    assert_escaped(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_the_workspace_s_strings_as_plain_text(hostile_ws, page):
    at = app()
    at.switch_page(page).run()
    # Overview shows the failed demo build, Reward models and Jobs the job's message, Evaluate
    # the export refusal naming the session's policies; the other pages must merely not render
    # any.
    assert_escaped(at, must_show=page in ("pages/home.py", "pages/reward_models.py",
                                          "pages/evaluate.py", "pages/jobs.py"))
