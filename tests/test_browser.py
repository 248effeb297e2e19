"""The app in a real browser: `streamlit run app.py` on a free localhost port, driven by Debian's
Chromium through Playwright, on a workspace whose answers are known (tests/browser.py builds it).

What AppTest cannot do: load every page as a browser does (deep links, the navigation, the
frontend's own rendering), move a slider with the keyboard, run a job in the worker the app
starts itself, click a download, vote through a session link. The screenshots are the README's
images (docs/screenshots/<page>.png)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morm_explorer.data.candidates import load_candidate_set
from morm_explorer.data.demo_candidates import DEMO_CANDIDATE_SET
from morm_explorer.evaluation.sessions import load_votes
from morm_explorer.jobs.store import JobStore
from morm_explorer.workspace import Workspace
from tests.browser import (
    COMPARISON,
    FAILURES,
    POLICIES,
    RUN_TIMEOUT_MS,
    SESSION,
    VIEWPORT,
    AppServer,
    assert_no_exception,
    build_workspace,
    launch_chromium,
    open_app,
    planted_scores,
    screenshot,
    skip_reason,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# page -> (url path, title); the path is the file stem, as st.navigation names it
PAGES = {"home": ("", "MORM Explorer"), "tour": ("tour", "Walk-through"),
         "data": ("data", "Data"), "reward_models": ("reward_models", "Reward models"),
         "explore": ("explore", "Explore"), "finetune": ("finetune", "Fine-tune"),
         "compare": ("compare", "Compare"), "evaluate": ("evaluate", "Evaluate"),
         "jobs": ("jobs", "Jobs")}
NAV_LABELS = ["Overview", "Walk-through", "Data", "Reward models", "Explore", "Fine-tune",
              "Compare", "Evaluate", "Jobs"]
SHOT_LATER = {"explore", "finetune", "compare", "evaluate"}  # after their own test's actions
PPO_RUN = "browser-run"
PPO_SETTINGS = {"Steps": 2, "Prompts per step": 2, "Minibatch": 2, "Max new tokens": 4,
                "First K prompts (0: all)": 2}


# -- fixtures: one workspace, one server and one browser for the module; a fresh tab per test
def require_browser() -> None:
    """Skip without Chromium or playwright; in CI (where the set-up installs both) fail, so a
    green run cannot hide browser tests that never ran."""
    if reason := skip_reason():
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)


@pytest.fixture(scope="module")
def browser_ws(tiny_rm, tmp_path_factory) -> Path:
    require_browser()
    root = tmp_path_factory.mktemp("browser") / "ws"
    build_workspace(root, tiny_rm)
    return root


@pytest.fixture(scope="module")
def app_server(browser_ws) -> Iterator[AppServer]:
    server = AppServer(browser_ws, browser_ws.parent / "streamlit.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_server, request):
    """A new browser context (a new Streamlit session) per test; on failure, what the browser
    showed and the server's log go to test-artifacts/browser/."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(RUN_TIMEOUT_MS)
    tab = context.new_page()
    failed_before = request.session.testsfailed
    yield tab
    if request.session.testsfailed > failed_before:
        FAILURES.mkdir(parents=True, exist_ok=True)
        shot = FAILURES / f"{request.node.name}.png"
        tab.screenshot(path=str(shot))
        shutil.copy(app_server.log, FAILURES / "streamlit.log")
        print(f"\nat failure: {shot}; server log tail:\n{app_server.log_tail(30)}")
    context.close()


def expect(locator):
    """Playwright's expect, waiting as long as the page's own actions do (its default, 5 s,
    is too short for a page that reruns on a busy machine)."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=RUN_TIMEOUT_MS)
    return playwright_expect(locator)


def title(page):
    return page.locator('[data-testid="stMain"] h1').first


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_opens_straight_from_its_address(page, app_server, name):
    path, heading = PAGES[name]
    open_app(page, app_server, path)
    expect(title(page)).to_contain_text(heading)
    assert_no_exception(page, app_server)
    if name not in SHOT_LATER:
        screenshot(page, name)


def test_the_sidebar_reaches_every_page(page, app_server):
    open_app(page, app_server)
    nav = page.locator('[data-testid="stSidebarNav"]')
    for label, (path, heading) in zip(NAV_LABELS, PAGES.values(), strict=True):
        nav.get_by_role("link", name=label).click()
        expect(title(page)).to_contain_text(heading)
        assert page.url.rstrip("/") == f"{app_server.url}/{path}".rstrip("/")
        wait_idle(page)
        assert_no_exception(page, app_server)


# -- Explore -----------------------------------------------------------------------------------
def expected_winners(frame: pd.DataFrame, values: np.ndarray, weights) -> pd.Series:
    """Each prompt's best-of-N winner by hand: argmax of w . scores (weights normalized to sum
    1, as the page does; the planted model's standardization is the identity)."""
    w = np.asarray(weights, dtype=float) / sum(weights)
    utility = pd.Series(values.astype(float) @ w, index=frame.index)
    by_prompt = utility.groupby(frame["prompt_id"], sort=False)
    top2 = by_prompt.apply(lambda u: np.sort(u.to_numpy())[-2:])
    assert all(t[1] - t[0] > 1e-6 for t in top2), "a tie: the winner would be ambiguous"
    return frame.loc[by_prompt.idxmax(), ["prompt_id", "source"]].set_index("prompt_id")[
        "source"]


def winners_table(page):
    return page.locator('[data-testid="stDataFrame"]').filter(
        has=page.locator('th:text-is("prompt_id")')).first


def visible_rows(table) -> dict[str, tuple[str, str]]:
    """prompt_id -> (changed mark, winner's source) for the rows the grid has drawn (the grid
    is a canvas; its accessible table mirrors the drawn rows)."""
    header = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert "source" in header, header  # the grid mirrors only the columns it has drawn
    pid, source = header.index("prompt_id"), header.index("source")  # by name: order may move
    rows = {}
    for tr in table.locator("tbody tr").all():
        cells = [*tr.locator("th").all_inner_texts(), *tr.locator("td").all_inner_texts()]
        rows[cells[pid]] = (cells[0].strip(), cells[source])
    return rows


def metric(page, label: str):
    return page.locator('[data-testid="stMetric"]').filter(has_text=label).locator(
        '[data-testid="stMetricValue"]')


def test_explore_a_weight_slider_moves_the_winners(page, app_server, browser_ws):
    frame = load_candidate_set(Workspace(browser_ws), DEMO_CANDIDATE_SET).frame
    values = planted_scores(frame)
    before = expected_winners(frame, values, (0.5, 0.5))  # the sliders' start
    after = expected_winners(frame, values, (1.0, 0.5))  # helpful slider at its end
    flipped = before.index[before != after]
    assert 0 < len(flipped) < len(before)

    open_app(page, app_server, "explore")
    table = winners_table(page)
    expect(table.locator("table")).to_have_attribute("aria-rowcount", str(len(before) + 1))
    expect(metric(page, "Winners changed")).to_have_text("–")
    rows = visible_rows(table)
    assert rows and all(rows[p] == ("", before[p]) for p in rows)

    slider = page.get_by_role("slider", name="helpful")
    slider.press("End")
    expect(page.locator('[data-testid="stSlider"]').filter(has=slider).locator(
        '[data-testid="stSliderThumbValue"]')).to_have_text("1.00")
    expect(metric(page, "Winners changed")).to_have_text(str(len(flipped)))

    page.get_by_text("Only prompts whose winner changed").click()
    expect(table.locator("table")).to_have_attribute("aria-rowcount", str(len(flipped) + 1))
    wait_idle(page)
    rows = visible_rows(table)
    assert rows and set(rows) <= set(flipped)
    assert all(rows[p] == ("✱", after[p]) and after[p] != before[p] for p in rows)
    assert_no_exception(page, app_server)
    screenshot(page, "explore")


# Element containers a script run marks stale (data-stale="true") until it redraws them; keyed
# widgets' containers carry the class st-key-<key>.
STALE_JS = """() => {
  window.__stale = new Set();
  new MutationObserver(ms => { for (const m of ms) {
    const e = m.target;
    if (e.getAttribute('data-stale') !== 'true') continue;
    for (const c of e.classList) if (c.startsWith('st-key-')) window.__stale.add(c.slice(7));
  } }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['data-stale']});
}"""


def test_explore_a_slider_step_reruns_only_what_follows_the_weights(page, app_server):
    open_app(page, app_server, "explore")
    page.evaluate(STALE_JS)
    page.get_by_role("slider", name="harmless").press("Home")
    expect(metric(page, "Winners changed")).not_to_have_text("–")
    wait_idle(page)
    stale = set(page.evaluate("() => Array.from(window.__stale)"))
    # Streamlit marks an element stale only while a rerun that will draw it again is slow
    # enough, so which of the fragment's widgets show up (if any) depends on the machine's
    # speed; a rerun of the whole page would mark the page's own pickers too.
    assert not stale & {"explore_model", "explore_set", "explore_preset"}, stale
    assert_no_exception(page, app_server)


SCATTER = '[data-testid="stVegaLiteChart"]'
WINNER_MARKS = f'{SCATTER} path[fill="#E03131"]'  # ef.WINNER_COLOR: the winners' stars


def test_explore_the_scatter_moves_its_winners_in_place_and_a_box_filters_the_table(
        page, app_server):
    """A slider step replaces the scatter's winners in the chart already drawn (the same SVG
    node, not a new chart); a box dragged on it filters the winners table to its prompts, and
    a double click clears it."""
    open_app(page, app_server, "explore")
    chart = page.locator(SCATTER)
    svg = chart.locator("svg").first
    svg.wait_for()
    prompts = int(winners_table(page).locator("table").get_attribute("aria-rowcount")) - 1
    expect(page.locator(WINNER_MARKS)).to_have_count(prompts)
    svg.evaluate("e => { e.__before_step = true; }")
    page.get_by_role("slider", name="helpful").press("End")
    expect(metric(page, "Winners changed")).not_to_have_text("–")
    wait_idle(page)
    assert svg.evaluate("e => e.isConnected && e.__before_step === true")
    expect(page.locator(WINNER_MARKS)).to_have_count(prompts)

    box = svg.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.8, steps=5)
    page.mouse.up()
    note = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="in the box")
    expect(note).to_be_visible()
    picked = int(re.search(r"Filtered to the ([\d,]+) prompts", note.inner_text())
                 .group(1).replace(",", ""))
    assert 0 < picked <= prompts
    table = winners_table(page).locator("table")
    expect(table).to_have_attribute("aria-rowcount", str(picked + 1))
    svg.dblclick(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    expect(note).to_have_count(0)
    expect(table).to_have_attribute("aria-rowcount", str(prompts + 1))
    assert_no_exception(page, app_server)


# -- Fine-tune ---------------------------------------------------------------------------------
def choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def type_into(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def test_finetune_launches_a_tiny_ppo_run_and_watches_it_finish(page, app_server, browser_ws):
    open_app(page, app_server, "finetune")
    choose(page, "Base policy", POLICIES[0])
    page.get_by_text("Run settings").click()
    for label, value in PPO_SETTINGS.items():
        type_into(page, label, value)
    type_into(page, "Run name", PPO_RUN)
    page.get_by_role("button", name="Launch").click()

    # The page polls the job every 2 s; the worker it started runs the job.
    badge = page.locator('[data-testid="stMain"] .stMarkdownBadge')
    expect(badge).to_have_text(re.compile("succeeded|failed|cancelled"), timeout=150_000)
    (job,) = JobStore(Workspace(browser_ws)).list(kind="ppo")
    assert job.status == "succeeded", job.error
    cfg = job.spec["config"]
    assert (cfg["name"], cfg["policy"], cfg["steps"], cfg["batch_size"]) == (
        PPO_RUN, POLICIES[0], 2, 2)
    assert (browser_ws / "policies" / PPO_RUN / "config.json").is_file()
    expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(3)  # scores, training,
    assert_no_exception(page, app_server)  # and weights
    screenshot(page, "finetune", top=True)


# -- Compare -----------------------------------------------------------------------------------
def test_compare_builds_and_downloads_the_report(page, app_server):
    open_app(page, app_server, "compare")
    chosen = page.locator('[data-testid="stSelectbox"]').filter(has_text="Comparison")
    expect(chosen.locator("input")).to_have_value(f"{COMPARISON} · {', '.join(POLICIES)} · 3 "
                                                  "prompts")
    screenshot(page, "compare")
    page.get_by_role("button", name="Build the HTML report").click()
    download = page.get_by_role("button", name=re.compile("Download the report"))
    expect(download).to_be_visible()
    with page.expect_download() as info:
        download.click()
    report = info.value
    assert report.suggested_filename == f"{COMPARISON}-report.html"
    html = Path(report.path()).read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert all(p in html for p in POLICIES)
    assert_no_exception(page, app_server)


# -- Evaluate ----------------------------------------------------------------------------------
def answer(page, objective: str, label: str) -> None:
    group = page.locator('[data-testid="stRadio"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]').get_by_text(objective, exact=True))
    group.get_by_text(label, exact=True).click()


def test_evaluate_a_vote_through_a_session_link(page, app_server, browser_ws):
    page.goto(f"{app_server.url}/evaluate?session={SESSION}&rater=alice")
    wait_idle(page)
    # the rating view alone: no page navigation, no sidebar, and /evaluate is one of its paths
    expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)
    expect(page.locator('[data-testid="stSidebar"]')).to_have_count(0)
    expect(page.get_by_text("Page not found")).to_have_count(0)
    expect(page.get_by_label("Your name", exact=True)).to_have_value("alice")
    expect(page.get_by_text("Pair 1 of 3")).to_be_visible()
    answer(page, "helpful", "A better")
    answer(page, "harmless", "Tie")
    page.get_by_role("button", name="Submit vote").click()

    saved = page.locator('[data-testid="stAlert"]').filter(has_text="Saved.")
    expect(saved).to_contain_text("A was")
    assert all(p in saved.inner_text() for p in POLICIES)  # names revealed after the vote
    expect(page.get_by_text("Pair 2 of 3")).to_be_visible()
    votes = load_votes(Workspace(browser_ws), SESSION)
    assert len(votes) == 1
    vote = votes.iloc[0]
    assert (vote["rater"], vote["answer:helpful"], vote["answer:harmless"]) == (
        "alice", "a", "tie")
    assert_no_exception(page, app_server)
    screenshot(page, "evaluate", top=True)


# -- an external reward model, added on Reward models and used on Explore ------------------------
# Last in the module: it adds a reward model to the shared workspace, which then becomes the
# newest model (the default pick on Explore), so no earlier test sees it.
EXTERNAL_RM = "browser-external"
EXTERNAL_OBJECTIVES = ["fluency", "safety"]  # two labels, as a multi-attribute model has


def test_an_added_external_model_scores_the_demo_set_on_explore(page, app_server, browser_ws,
                                                                 tmp_path):
    from morm_explorer.objectives import standardize
    from morm_explorer.reward.artifact import load_reward_model
    from morm_explorer.scoring import read_cached_scores
    from tests.test_external_rm import save_bert

    folder = save_bert(tmp_path / "bert2", num_labels=2, seed=3)  # random weights
    open_app(page, app_server, "reward_models")
    form = page.locator('[data-testid="stExpander"]').filter(has_text="Add an existing model")
    form.locator("summary").click()
    for label, value in {"Model": folder, "Name": EXTERNAL_RM,
                         "Objectives, in output order": ", ".join(EXTERNAL_OBJECTIVES)}.items():
        box = form.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        wait_idle(page)
    expect(form.locator('[data-testid="stSelectbox"]').filter(  # the demo's set comes first
        has_text="Reference set (score statistics)").locator("input")).to_have_value(
        DEMO_CANDIDATE_SET)
    form.get_by_role("button", name="Add the model").click()
    expect(page.locator('[data-testid="stAlert"]').filter(
        has_text=f"Added {EXTERNAL_RM} from")).to_be_visible(timeout=120_000)
    assert_no_exception(page, app_server)

    path = browser_ws / "reward_models" / EXTERNAL_RM
    config = json.loads((path / "config.json").read_text())
    assert config["kind"] == "external"
    assert config["model"]["objectives"] == EXTERNAL_OBJECTIVES
    assert config["source"]["model"] == folder
    assert config["reference_set"]["name"] == DEMO_CANDIDATE_SET

    # Explore: pick the model; the page scores the demo candidates with it, then shows them.
    ws = Workspace(browser_ws)
    cset = load_candidate_set(ws, DEMO_CANDIDATE_SET)
    assert read_cached_scores(ws, EXTERNAL_RM, cset) is None
    open_app(page, app_server, "explore")
    choose(page, "Reward model", EXTERNAL_RM)
    for objective in EXTERNAL_OBJECTIVES:
        expect(page.get_by_role("slider", name=objective)).to_be_visible(timeout=120_000)
    wait_idle(page)
    expect(page.locator('[data-testid="stSelectbox"]').filter(has_text="Candidate set")
           .locator("input")).to_have_value(re.compile(f"^{DEMO_CANDIDATE_SET} "))
    assert read_cached_scores(ws, EXTERNAL_RM, cset) is not None

    # The winners by hand: argmax of the mean z-score (sliders at 0.5 each, standardized with
    # the statistics the model got on the reference set, which is this set).
    frame = cset.frame
    model = load_reward_model(path)
    raw = model.score(list(frame["prompt"]), list(frame["response"]))  # (N, K)
    z = standardize(raw, model.stats)
    winners = expected_winners(frame, z, (0.5, 0.5))
    table = winners_table(page)
    expect(table.locator("table")).to_have_attribute("aria-rowcount", str(len(winners) + 1))
    rows = visible_rows(table)
    assert rows and all(rows[p] == ("", winners[p]) for p in rows)
    utility = pd.Series(z.mean(1), index=frame.index)
    best = frame.index.get_indexer(utility.groupby(frame["prompt_id"]).idxmax())
    shown = float(metric(page, f"{EXTERNAL_OBJECTIVES[0]} (winners' mean)").inner_text())
    assert shown == pytest.approx(raw[best, 0].mean(), abs=1.5e-3)
    assert_no_exception(page, app_server)
