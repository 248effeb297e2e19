"""Names and texts from users and models show as written in every Plotly figure: no tag in them
is acted on (Plotly renders <a href>, <b>, <br>... in titles, legends, ticks and hovers) and no
``%{...}`` in them is read as a template variable; hover templates hold no such text."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from morm_explorer.data.convert import summarize
from morm_explorer.evaluation.compare import Comparison
from morm_explorer.evaluation.report import comparison_figures
from morm_explorer.evaluation.session_report import win_rates_figure as session_wins_figure
from morm_explorer.ui import explore_figures as ef
from morm_explorer.ui import figures
from morm_explorer.ui import ppo_figures as pf
from morm_explorer.ui import reward_figures as rf
from morm_explorer.ui.text import plotly_text

EVIL = ('<a href="http://evil.example">link</a><img src=x onerror=alert(1)><b>bold</b>'
        '<extra>e</extra>%{x}%{meta[0]}&amp;')
# What must never reach a figure raw: tags Plotly acts on, and template variables.
RAW = ("<a href", "</a>", "<img", "<b>", "</b>", "<extra>e", "%{x}%{meta")
OBJS = [f"{EVIL} o{i}" for i in range(3)]
POLICIES = [f"{EVIL} p{i}" for i in range(3)]
CATS = [f"{EVIL} c{i}" for i in range(2)]


def test_plotly_text_hand_cases():
    assert plotly_text("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert plotly_text("a & b") == "a &amp; b"
    assert plotly_text("%{x} 50%") == "&#37;{x} 50&#37;"
    assert plotly_text('"quoted" it\'s') == '"quoted" it\'s'
    assert plotly_text(3) == "3"


def _strings(value, key=""):
    """(key, string) of every string in a figure's JSON, dict keys included."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield key, str(k)
            yield from _strings(v, k)
    elif isinstance(value, list | tuple | np.ndarray):
        for v in value:
            yield from _strings(v, key)


def _check(fig) -> None:
    strings = list(_strings(fig.to_plotly_json()))
    for key, s in strings:
        assert not any(r in s for r in RAW), (key, s)
        if key in ("hovertemplate", "texttemplate"):
            assert "evil" not in s and "&lt;" not in s, (key, s)
    assert any(plotly_text(EVIL)[:40] in s for _, s in strings)  # the names are still shown


# -- the figures, each with hostile names ----------------------------------------------------------
def _pairwise_records():
    return [{"prompt": f"{EVIL} q{i}", "response_a": EVIL, "response_b": "b",
             "category": CATS[i % 2], "labels": {o: "ab"[(i + k) % 2] for k, o in
                                                  enumerate(OBJS)}} for i in range(6)]


def _ratings_records():
    return [{"prompt": f"q{i // 2}", "response": f"r{i}", "category": CATS[i % 2],
             "ratings": {o: float((i + k) % 5) for k, o in enumerate(OBJS)}} for i in range(8)]


def _data_figures():
    pairs, ratings = summarize(_pairwise_records(), "pairwise"), summarize(
        _ratings_records(), "ratings")
    return [figures.label_counts_figure(pairs), figures.ratings_figure(ratings),
            figures.disagreement_figure(pairs), figures.disagreement_figure(pairs, "labelled"),
            figures.categories_figure(pairs)]


def _comparison() -> Comparison:
    rng = np.random.default_rng(0)
    rows = [{"prompt_id": f"p{i}", "sample": j, "policy": policy, "prompt": f"{EVIL} {i}",
             "category": CATS[i % 2], "response": EVIL, "n_tokens": 5 + 3 * k + j + i,
             "n_chars": 20, "finish": "eos", "kl": 0.0 if k == 0 else 1.0 + k,
             **{f"rm:{o}": rng.normal(k, 1) for o in OBJS},
             **{f"judge:{o}": rng.normal(0, 1) for o in OBJS}}
            for k, policy in enumerate(POLICIES) for i in range(6) for j in range(2)]
    manifest = {
        "policies": [{"label": p, "kind": "ppo" if k else "base",
                      "weights": {o: 1 / 3 for o in OBJS} if k else None}
                     for k, p in enumerate(POLICIES)],
        "baseline": POLICIES[0], "reward_model": {"name": EVIL, "objectives": OBJS},
        "judge_model": {"name": EVIL, "objectives": OBJS}}
    return Comparison(EVIL, pd.DataFrame(rows), manifest)


def _compare_figures():
    soup = pd.DataFrame({o: [0.1, 0.2, 0.3] for o in OBJS}, index=[0.0, 0.5, 1.0])
    figs = comparison_figures(_comparison(), objective=OBJS[1], soup=soup, n_boot=50)
    assert set(figs) == {"objective space", "mean scores", "win rates", "kl and length",
                         "slices"}
    return list(figs.values())


def _reward_figures():
    idx = pd.Index(OBJS)
    acc = pd.DataFrame({"accuracy": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 40,
                        "truth_accuracy": 0.75}, index=idx)
    history = pd.DataFrame({**{f"loss/{o}": [0.7, 0.6] for o in OBJS}, "loss/total": [1.0, 0.9],
                            "eval/loss": [0.8, 0.7]}, index=[1, 2])
    corr = pd.DataFrame(np.eye(3), index=idx, columns=idx)
    calib = {o: pd.DataFrame({"predicted": [0.2, 0.8], "observed": [0.3, 0.7],
                              "count": [5, 6]}) for o in OBJS}
    svm = pd.DataFrame({c: 0.7 for c in ("multi_head", "multi_low", "multi_high", "single",
                                         "single_low", "single_high")}, index=idx)
    return [rf.accuracy_figure(acc), rf.curves_figure(history, f"{EVIL} title", OBJS),
            rf.correlation_figure(corr), rf.calibration_figure(calib, {o: 0.05 for o in OBJS}),
            rf.single_vs_multi_figure(svm)]


def _ppo_figures():
    metrics = pd.DataFrame({**{pf.SCORE + o: [0.1, 0.2] for o in OBJS},
                            **{pf.WEIGHT + o: [0.5, 0.5] for o in OBJS},
                            pf.LAGRANGE + OBJS[0]: [0.0, 0.1], "objective/kl": [0.0, 0.1],
                            "objective/rlhf_reward": [0.1, 0.2]}, index=[1, 2])
    return [pf.scores_figure(metrics, title=f"{EVIL} run"), pf.weights_figure(metrics),
            pf.runs_scores_figure({p: {o: 1.0 for o in OBJS} for p in POLICIES}, OBJS)]


def _explore_figures():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 3))
    front, winners = np.zeros(40, bool), np.zeros(40, bool)
    front[:5], winners[:2] = True, True
    hover = [f"{EVIL} prompt · {EVIL} response"] * 40
    color = [POLICIES[i % 3] for i in range(40)]
    grid = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]])
    return [  # (the 2D scatter is a Vega-Lite chart: Vega draws its texts as text)
        ef.scatter_3d(scores, OBJS, tuple(OBJS), front=front, winners=winners, hover=hover,
                      color=color),
        ef.ternary_map(grid, np.arange(4.0), tuple(OBJS), current=grid[3],
                       value_label=f"mean {OBJS[0]}",
                       hover_values={o: np.arange(4.0) for o in OBJS}),
        ef.parallel_coordinates(scores, OBJS, highlight=winners),
        ef.score_distributions(scores, OBJS, winners=winners),
        ef.winner_shift_bar(np.zeros(3), np.ones(3), OBJS),
    ]


def _session_figures():
    wins = pd.DataFrame({"policy": POLICIES[0], "opponent": POLICIES[1], "objective": OBJS,
                         "win_rate": 0.6, "win_rate_low": 0.4, "win_rate_high": 0.8})
    return [session_wins_figure(wins)]


@pytest.mark.parametrize("build", [_data_figures, _compare_figures, _reward_figures,
                                   _ppo_figures, _explore_figures, _session_figures])
def test_hostile_names_show_as_text_in_every_figure(build):
    for fig in build():
        _check(fig)


def test_names_stay_out_of_hover_templates_and_come_from_meta():
    fig = _explore_figures()[0]
    marker = next(t for t in fig.data if t.hovertemplate)
    assert marker.hovertemplate.startswith("row %{customdata}<br>%{meta[0]}: %{x:.3f}")
    assert list(marker.meta) == [plotly_text(o) for o in OBJS]
    ternary = _explore_figures()[1].data[0]
    assert "%{meta[4]}: %{customdata[2]:.3f}" in ternary.hovertemplate
    assert ternary.meta[4] == plotly_text(OBJS[0])
    space = _compare_figures()[0]
    point = next(t for t in space.data if t.name.startswith(plotly_text(POLICIES[1])))
    assert point.hovertemplate == "%{meta[0]} %{meta[1]}: (%{x:.3f}, %{y:.3f})<extra></extra>"
    assert point.meta[0] == plotly_text(POLICIES[1])


# -- in a real browser: what plotly.js draws -----------------------------------------------------
@pytest.mark.browser
@pytest.mark.slow
def test_plotly_draws_hostile_names_as_text(tmp_path):
    """Chromium draws the figures: the legend, axis titles and hover label show the names
    character for character (``%{meta[i]}`` filled from ``meta``), and no link or bold tag of
    theirs becomes an element."""
    from tests.browser import launch_chromium, skip_reason

    if reason := skip_reason():
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)
    from playwright.sync_api import sync_playwright

    space = _compare_figures()[0]
    page_html = tmp_path / "figs.html"
    page_html.write_text("<html><body>" + space.to_html(full_html=False, include_plotlyjs=True,
                                                        div_id="space") + "</body></html>")
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_html.as_uri())
            page.wait_for_selector("#space .legend")
            drawn = {}
            for div, trace in (("space", 2),):  # a marker trace
                page.evaluate(f"Plotly.Fx.hover('{div}', [{{curveNumber: {trace}, "
                              "pointNumber: 0}])")
                page.wait_for_selector(f"#{div} .hoverlayer .hovertext")
                drawn[div] = {
                    **{k: page.eval_on_selector(f"#{div} .{layer}", "e => e.textContent")
                       for k, layer in (("hover", "hoverlayer"), ("legend", "legend"),
                                        ("titles", "infolayer"))},
                    "links": page.locator(f"#{div} svg a").count(),
                    "bold": page.locator(f"#{div} svg tspan[style*='bold']").count()}
        finally:
            browser.close()
    for div, d in drawn.items():
        assert d["links"] == 0 and d["bold"] == 0, (div, d)
    assert f"{EVIL} p0 : (" in drawn["space"]["hover"]  # the baseline, without weights
    assert f"{EVIL} p2 ({EVIL} o0 0.33" in drawn["space"]["legend"]
