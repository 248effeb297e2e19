"""Explore page figures: row indices survive trace splits and downsampling, every front point
and winner is drawn, hover text is escaped, and each builder's shape matches its inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from morm_explorer.ui import explore_figures as ef
from morm_explorer.ui.explore_figures import _escape_hover

OBJS = ["helpful", "harmless", "honest"]


def _data(n: int, seed: int = 0, n_front: int = 15, n_win: int = 40):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, 3))  # (N, K)
    front = np.zeros(n, dtype=bool)
    front[rng.choice(n, n_front, replace=False)] = True
    winners = np.zeros(n, dtype=bool)
    winners[rng.choice(n, n_win, replace=False)] = True
    color = rng.choice(["sft", "ppo", "base"], n).tolist()
    return scores, front, winners, color


def _markers(fig: go.Figure) -> list:
    return [t for t in fig.data if t.mode == "markers"]


def _rows(fig: go.Figure) -> np.ndarray:
    return np.concatenate([np.asarray(t.customdata, dtype=int) for t in _markers(fig)])


def test_escape_hover_hand_cases():
    assert _escape_hover("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert _escape_hover("a & b") == "a &amp; b"
    assert _escape_hover("one\n\n  two\tthree") == "one two three"
    long = _escape_hover("x" * 300)
    assert len(long) == 120 and long.endswith("…")
    # Cut before escaping, so an entity is never split.
    assert _escape_hover("<" * 200) == "&lt;" * 119 + "…"
    assert _escape_hover(42) == "42"


def test_scatter_2d_layers_and_customdata():
    scores, front, winners, color = _data(300)
    before = scores.copy()
    fig = ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front, winners=winners,
                        color=color)
    np.testing.assert_array_equal(scores, before)
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    names = [t.name for t in fig.data]
    assert names == [ef.FRONT_LINE, "base", "ppo", "sft", ef.FRONT, ef.WINNERS]
    for t in _markers(fig):  # every point's customdata is its row in the full arrays
        rows = np.asarray(t.customdata, dtype=int)
        np.testing.assert_array_equal(t.x, scores[rows, 0])
        np.testing.assert_array_equal(t.y, scores[rows, 2])
        if t.name in ("base", "ppo", "sft"):
            assert {color[r] for r in rows} == {t.name}
    by_name = {t.name: np.asarray(t.customdata, dtype=int) for t in fig.data}
    np.testing.assert_array_equal(np.sort(_rows(fig)), np.arange(300))  # each row once
    np.testing.assert_array_equal(by_name[ef.WINNERS], np.flatnonzero(winners))
    np.testing.assert_array_equal(by_name[ef.FRONT], np.flatnonzero(front & ~winners))
    line = fig.data[0]
    assert line.line.shape == "vh" and np.all(np.diff(line.x) >= 0)
    assert sorted(by_name[ef.FRONT_LINE]) == list(np.flatnonzero(front))
    assert fig.layout.dragmode == "lasso"
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("helpful", "honest")
    assert "showing" not in fig.layout.title.text


def test_scatter_2d_color_as_categorical_matches_text():
    """A factorized ``color`` (the page's, built once per set) draws what its texts draw:
    unused categories drop out, a missing source is a category of its own."""
    scores, front, winners, color = _data(300)
    color[7] = None
    cat = pd.Categorical(color, categories=["unused", "sft", "ppo", "base"])
    a = ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front, winners=winners,
                      color=color)
    b = ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front, winners=winners,
                      color=cat)
    assert [t.name for t in a.data] == [t.name for t in b.data]
    assert "nan" in [t.name for t in b.data] and "unused" not in [t.name for t in b.data]
    for ta, tb in zip(a.data, b.data, strict=True):
        np.testing.assert_array_equal(np.asarray(ta.customdata), np.asarray(tb.customdata))
        assert ta.marker.color == tb.marker.color
    with pytest.raises(ValueError, match="one entry per candidate"):
        ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front, winners=winners,
                      color=cat[:10])


def test_scatter_2d_without_color_or_line():
    scores, front, winners, _ = _data(50, n_front=5, n_win=5)
    fig = ef.scatter_2d(scores, OBJS, "harmless", "helpful", front=front, winners=winners,
                        front_line=False)
    assert [t.name for t in fig.data] == [ef.CANDIDATES, ef.FRONT, ef.WINNERS]
    assert "%{text}" not in fig.data[0].hovertemplate


def test_scatter_2d_downsampling_keeps_front_and_winners():
    scores, front, winners, color = _data(20_000, n_front=200, n_win=500)
    fig = ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front, winners=winners,
                        color=color, max_points=4000, seed=3)
    rows = _rows(fig)
    assert len(rows) == 4000 and len(np.unique(rows)) == 4000
    assert set(np.flatnonzero(front | winners)) <= set(rows)
    assert "showing 4,000 of 20,000" in fig.layout.title.text
    for t in _markers(fig):
        cd = np.asarray(t.customdata, dtype=int)
        np.testing.assert_array_equal(t.x, scores[cd, 0])
    again = ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front, winners=winners,
                          color=color, max_points=4000, seed=3)
    np.testing.assert_array_equal(np.sort(_rows(again)), np.sort(rows))
    # New winners (a slider move) keep the background sample nearly where it was.
    moved = winners.copy()
    moved[np.flatnonzero(~winners)[:50]] = True
    shifted = _rows(ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front,
                                  winners=moved, max_points=4000, seed=3))
    assert len(set(rows) & set(shifted)) > 0.95 * 4000


def test_downsampling_beyond_budget_keeps_the_front_then_samples_the_winners():
    """One winner per prompt: 10,000 prompts make 10,000 winners, more than a scatter draws
    fluidly. Every front point is drawn, winners up to half the budget left, then the rest."""
    scores, front, winners, _ = _data(1000, n_front=0, n_win=600)
    fig = ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front, winners=winners,
                        max_points=500)
    rows = _rows(fig)
    assert len(rows) == 500 and len(set(rows) & set(np.flatnonzero(winners))) == 250
    assert "showing 500 of 1,000 (250 of the 600 winners)" in fig.layout.title.text
    moved = winners.copy()  # a slider move: most winners stay, so do most drawn ones
    moved[np.flatnonzero(winners)[:30]] = False
    moved[np.flatnonzero(~winners)[:30]] = True
    again = _rows(ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front,
                                winners=moved, max_points=500))
    assert len(set(rows) & set(again)) > 0.8 * 500
    scores, front, winners, _ = _data(1000, n_front=520, n_win=100)
    rows = _rows(ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front,
                               winners=winners, max_points=500))
    np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(front))  # the front, whole


def test_hover_is_escaped_and_truncated():
    scores, front, winners, color = _data(40, n_front=3, n_win=3)
    hover = [f"reply {i}" for i in range(40)]
    hover[0] = "<script>alert('x')</script> & <b>bold</b>"
    hover[1] = "word " * 100
    fig = ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front, winners=winners,
                        hover=hover, color=color)
    texts = {int(r): s for t in _markers(fig) for r, s in zip(t.customdata, t.text, strict=True)}
    assert "<" not in "".join(texts.values())
    assert "&lt;script&gt;" in texts[0] and texts[0].startswith(color[0] + " · ")
    assert len(texts[1]) <= 120 and texts[1].endswith("…")
    assert texts[5] == f"{color[5]} · reply 5"


def test_scatter_3d_layers_and_downsampling():
    scores, front, winners, color = _data(20_000, n_front=100, n_win=300)
    axes = ("honest", "helpful", "harmless")
    fig = ef.scatter_3d(scores, OBJS, axes, front=front, winners=winners, color=color,
                        max_points=2000)
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)
    rows = _rows(fig)
    assert len(rows) == 2000 and set(np.flatnonzero(front | winners)) <= set(rows)
    for t in fig.data:
        cd = np.asarray(t.customdata, dtype=int)
        np.testing.assert_array_equal(t.x, scores[cd, 2])
        np.testing.assert_array_equal(t.y, scores[cd, 0])
        np.testing.assert_array_equal(t.z, scores[cd, 1])
    assert fig.layout.scene.zaxis.title.text == "harmless"
    assert "showing 2,000 of 20,000" in fig.layout.title.text


def test_unknown_objective_and_bad_shapes_raise():
    scores, front, winners, _ = _data(30, n_front=2, n_win=2)
    with pytest.raises(ValueError, match="'kind'.*'witty'"):
        ef.scatter_2d(scores, OBJS, "kind", "witty", front=front, winners=winners)
    with pytest.raises(ValueError, match="'funny'"):
        ef.scatter_3d(scores, OBJS, ("helpful", "funny", "honest"), front=front,
                      winners=winners)
    with pytest.raises(ValueError, match="front"):
        ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front[:5], winners=winners)
    with pytest.raises(ValueError, match="scores"):
        ef.parallel_coordinates(scores[:, :2], OBJS)
    with pytest.raises(ValueError, match="hover"):
        ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front, winners=winners,
                      hover=["x"])


def _simplex(step: int) -> np.ndarray:
    return np.array([(i, j, step - i - j) for i in range(step + 1)
                     for j in range(step + 1 - i)], dtype=float) / step


def test_ternary_map():
    grid = _simplex(10)  # (66, 3)
    values = grid @ np.array([1.0, 2.0, 3.0])
    extra = {o: grid[:, k] * 10 for k, o in enumerate(OBJS)}
    fig = ef.ternary_map(grid, values, ("helpful", "harmless", "honest"),
                         current=np.array([0.2, 0.3, 0.5]), value_label="mean helpful",
                         hover_values=extra)
    assert len(fig.data) == 2 and all(isinstance(t, go.Scatterternary) for t in fig.data)
    grid_trace, current = fig.data
    assert len(grid_trace.a) == len(grid) and len(current.a) == 1
    assert (current.a[0], current.b[0], current.c[0]) == (0.2, 0.3, 0.5)
    np.testing.assert_array_equal(grid_trace.c, grid[:, 2])
    np.testing.assert_array_equal(grid_trace.marker.color, values)
    custom = np.asarray(grid_trace.customdata)  # (G, 2 + 3): row, value, hover values
    np.testing.assert_array_equal(custom[:, 0], np.arange(len(grid)))
    np.testing.assert_array_equal(custom[:, 4], extra["honest"])
    assert "%{meta[6]}: %{customdata[4]" in grid_trace.hovertemplate
    assert list(grid_trace.meta) == [*OBJS, "mean helpful", *OBJS]  # the names, by index
    assert grid_trace.marker.colorbar.title.text == "mean helpful"
    t = fig.layout.ternary
    assert [t.aaxis.title.text, t.baxis.title.text, t.caxis.title.text] == OBJS
    with pytest.raises(ValueError, match="sum to 1"):
        ef.ternary_map(grid * 2, values, ("helpful", "harmless", "honest"))


def test_parallel_coordinates_downsampling():
    scores, _, winners, _ = _data(20_000, n_win=400)
    fig = ef.parallel_coordinates(scores, OBJS, highlight=winners, max_points=3000)
    (trace,) = fig.data
    assert isinstance(trace, go.Parcoords)
    assert [d.label for d in trace.dimensions] == OBJS
    color = np.asarray(trace.line.color)
    assert all(len(d.values) == 3000 for d in trace.dimensions) and len(color) == 3000
    assert color.sum() == 400 and np.all(color[-400:] == 1)  # winners drawn last, on top
    assert trace.dimensions[0].range == (scores[:, 0].min(), scores[:, 0].max())
    assert "showing 3,000 of 20,000" in fig.layout.title.text
    small = ef.parallel_coordinates(scores[:100], OBJS)
    assert len(small.data[0].dimensions[1].values) == 100
    assert "showing" not in small.layout.title.text


def test_score_distributions():
    scores, _, winners, _ = _data(2000, n_win=100)
    fig = ef.score_distributions(scores, OBJS, winners=winners, bins=25)
    assert [t.xaxis for t in fig.data] == ["x", "x", "x2", "x2", "x3", "x3"]
    assert len([k for k in fig.layout.to_plotly_json() if k.startswith("xaxis")]) == 3
    for t in fig.data:
        assert isinstance(t, go.Bar) and len(t.y) == 25
        assert np.isclose(np.sum(t.y), 1.0)  # shares of all candidates / of the winners
    titles = [a.text for a in fig.layout.annotations]
    assert titles[2].startswith(f"honest: {scores[:, 2].mean():.2f} ± ")
    assert f"winners {scores[winners, 2].mean():.2f}" in titles[2]
    assert len(ef.score_distributions(scores, OBJS).data) == 3


def test_winner_shift_bar():
    fig = ef.winner_shift_bar(np.array([1.0, 0.5, np.nan]), np.array([1.5, 0.25, 0.0]), OBJS)
    assert len(fig.data) == 2 and list(fig.data[1].x) == OBJS
    assert list(fig.data[1].text) == ["+0.50", "-0.25", ""]
    with pytest.raises(ValueError, match="shape"):
        ef.winner_shift_bar(np.zeros(2), np.zeros(3), OBJS)


def test_selected_rows_from_streamlit_selection():
    scores, front, winners, _ = _data(100, n_front=5, n_win=5)
    fig = ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front, winners=winners)
    # What Streamlit returns for a lasso over the winners trace (point_index is per trace).
    win = fig.data[-1]
    points = [{"curve_number": len(fig.data) - 1, "point_index": i, "customdata": int(r)}
              for i, r in enumerate(win.customdata)]
    points.append({"curve_number": 0, "point_index": 0, "customdata": [int(win.customdata[0])]})
    np.testing.assert_array_equal(ef.selected_rows({"points": points}), np.flatnonzero(winners))
    assert len(ef.selected_rows(None)) == 0


def test_import_leaves_streamlit_out():
    code = ("import sys, morm_explorer.ui.explore_figures; "
            "assert 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
