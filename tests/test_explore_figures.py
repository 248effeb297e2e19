"""Explore page figures: row indices survive trace splits and downsampling, every front point
and winner is drawn, hover text is escaped, and each builder's shape matches its inputs."""

from __future__ import annotations

import json
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


def _layer(spec: dict, dataset: str, role: str | None = None) -> dict:
    return next(layer for layer in spec["layer"] if layer["data"]["name"] == dataset
                and (role is None or f"'{role}'" in json.dumps(layer.get("transform", []))))


def test_scatter_2d_datasets_and_rows():
    scores, front, winners, color = _data(300)
    before = scores.copy()
    spec = ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front, winners=winners,
                         color=color)
    np.testing.assert_array_equal(scores, before)
    d = spec["datasets"]
    points, line, wins = d["points"], d["front_line"], d["winners"]
    np.testing.assert_array_equal(points["row"], np.arange(300))  # each row once, in order
    for t in (points, line, wins):  # every row's x and y are its scores on the two axes
        np.testing.assert_array_equal(t["x"], scores[t["row"], 0])
        np.testing.assert_array_equal(t["y"], scores[t["row"], 2])
    np.testing.assert_array_equal(points["role"] == "front", front)
    assert list(points["source"]) == color
    np.testing.assert_array_equal(wins["row"], np.flatnonzero(winners))
    assert sorted(line["row"]) == list(np.flatnonzero(front))
    assert line["x"].is_monotonic_increasing
    assert _layer(spec, "front_line")["mark"]["interpolate"] == "step-before"
    assert _layer(spec, "winners")["mark"]["fill"] == ef.WINNER_COLOR
    assert _layer(spec, "points", "candidate")["params"][0]["name"] == ef.BRUSH
    enc = _layer(spec, "points", "front")["encoding"]
    assert (enc["x"]["title"], enc["y"]["title"]) == ("helpful", "honest")
    assert enc["color"]["scale"]["domain"] == ["base", "ppo", "sft"]
    assert spec["title"] == "honest vs helpful"


def test_scatter_2d_only_the_winners_follow_the_weights():
    """A slider step changes the winners only: the spec and the other datasets stay equal,
    so Streamlit swaps the winners' data in the drawn chart rather than drawing a new one."""
    scores, front, winners, color = _data(5000, n_front=40, n_win=500)
    moved = np.roll(winners, 7)
    a, b = (ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front, winners=w,
                          color=color, max_points=1000, max_winners=300)
            for w in (winners, moved))
    da, db = a.pop("datasets"), b.pop("datasets")
    assert json.dumps(a) == json.dumps(b)
    for name in ("points", "front_line"):
        pd.testing.assert_frame_equal(da[name], db[name])
    assert not da["winners"]["row"].equals(db["winners"]["row"])
    assert len(da["points"]) == 1000
    assert set(np.flatnonzero(front)) <= set(da["points"]["row"])
    assert "showing 1,000 of 5,000" in a["title"]
    # Winners beyond the cap: a sample fixed per row, so most stay drawn when a few change.
    drawn = set(da["winners"]["row"])
    assert len(drawn) == 300 and drawn <= set(np.flatnonzero(winners))
    few = winners.copy()
    few[np.flatnonzero(winners)[:10]] = False
    again = ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front, winners=few,
                          max_points=1000, max_winners=300)["datasets"]["winners"]["row"]
    assert len(set(again) & drawn) > 0.9 * 300


def test_scatter_2d_color_as_categorical_matches_text():
    """A factorized ``color`` (the page's, built once per set) draws what its texts draw:
    unused categories drop out, a missing source is a category of its own."""
    scores, front, winners, color = _data(300)
    color[7] = None
    cat = pd.Categorical(color, categories=["unused", "sft", "ppo", "base"])
    a, b = (ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front, winners=winners,
                          color=c) for c in (color, cat))
    pd.testing.assert_frame_equal(a["datasets"]["points"], b["datasets"]["points"])
    domain = _layer(b, "points", "front")["encoding"]["color"]["scale"]["domain"]
    assert "nan" in domain and "unused" not in domain
    with pytest.raises(ValueError, match="one entry per candidate"):
        ef.scatter_2d(scores, OBJS, "helpful", "honest", front=front, winners=winners,
                      color=cat[:10])


def test_scatter_2d_without_color_or_line():
    scores, front, winners, _ = _data(50, n_front=5, n_win=5)
    spec = ef.scatter_2d(scores, OBJS, "harmless", "helpful", front=front, winners=winners,
                         front_line=False)
    assert len(spec["datasets"]["front_line"]) == 0
    assert set(spec["datasets"]["points"]["source"]) == {ef.CANDIDATES}
    tooltip = _layer(spec, "winners")["encoding"]["tooltip"]
    assert [t["field"] for t in tooltip] == ["row", "x", "y"]  # no text without hover or color


def test_scatter_2d_labels_are_plain_text_cut_short():
    """Vega writes tooltip values as text, so labels are not HTML-escaped (an escaped "&lt;"
    would show as written); whitespace is collapsed and long texts are cut."""
    scores, front, winners, color = _data(40, n_front=3, n_win=3)
    hover = [f"reply {i}" for i in range(40)]
    hover[0] = "<script>alert('x')</script> &\n <b>bold</b>"
    hover[1] = "word " * 100
    points = ef.scatter_2d(scores, OBJS, "helpful", "harmless", front=front, winners=winners,
                           hover=hover, color=color)["datasets"]["points"]
    labels = dict(zip(points["row"], points["label"], strict=True))
    assert labels[0] == f"{color[0]} · <script>alert('x')</script> & <b>bold</b>"
    assert len(labels[1]) == ef.HOVER_CHARS and labels[1].endswith("…")
    assert labels[5] == f"{color[5]} · reply 5"


def test_brushed_rows_are_every_candidate_in_the_box():
    scores, _, _, _ = _data(2000, n_front=5, n_win=5)
    box = {ef.BRUSH: {"x": [0.5, -0.5], "y": [-1.0, 1.0]}}  # either order
    rows = ef.brushed_rows(scores, OBJS, "helpful", "honest", box)
    inside = (np.abs(scores[:, 0]) <= 0.5) & (np.abs(scores[:, 2]) <= 1.0)
    np.testing.assert_array_equal(rows, np.flatnonzero(inside))
    for empty in (None, {}, {ef.BRUSH: {}}, {ef.BRUSH: {"x": [0, 1]}}):
        assert len(ef.brushed_rows(scores, OBJS, "helpful", "honest", empty)) == 0


AXES = ("helpful", "harmless", "honest")


def test_downsampling_beyond_budget_keeps_the_front_then_samples_the_winners():
    """`scatter_3d` (`scatter_2d` samples its winners apart). One winner per prompt: 10,000
    prompts make 10,000 winners, more than a scatter draws fluidly. Every front point is
    drawn, winners up to half the budget left, then the rest."""
    scores, front, winners, _ = _data(1000, n_front=0, n_win=600)
    fig = ef.scatter_3d(scores, OBJS, AXES, front=front, winners=winners,
                        max_points=500)
    rows = _rows(fig)
    assert len(rows) == 500 and len(set(rows) & set(np.flatnonzero(winners))) == 250
    assert "showing 500 of 1,000 (250 of the 600 winners)" in fig.layout.title.text
    moved = winners.copy()  # a slider move: most winners stay, so do most drawn ones
    moved[np.flatnonzero(winners)[:30]] = False
    moved[np.flatnonzero(~winners)[:30]] = True
    again = _rows(ef.scatter_3d(scores, OBJS, AXES, front=front,
                                winners=moved, max_points=500))
    assert len(set(rows) & set(again)) > 0.8 * 500
    scores, front, winners, _ = _data(1000, n_front=520, n_win=100)
    rows = _rows(ef.scatter_3d(scores, OBJS, AXES, front=front,
                               winners=winners, max_points=500))
    np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(front))  # the front, whole


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


def test_import_leaves_streamlit_out():
    code = ("import sys, morm_explorer.ui.explore_figures; "
            "assert 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
