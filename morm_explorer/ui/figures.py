"""Plotly figures of preference data. Each builder takes plain data and returns a Figure;
objective and category names pass through `plotly_text`, so they show as written."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from morm_explorer.data.convert import Summary
from morm_explorer.ui.text import plotly_text

LABEL_COLORS = {"a": "#4C6EF5", "b": "#F59F00", "tie": "#ADB5BD", "missing": "#E9ECEF"}


def label_counts_figure(summary: Summary) -> go.Figure:
    """Stacked bars per objective: a / b / tie / not labelled (pairwise data)."""
    po = summary.per_objective
    missing = summary.n_records - po["labelled"]
    objs = [plotly_text(o) for o in po.index]
    fig = go.Figure()
    for name, values in (("a", po["a"]), ("b", po["b"]), ("tie", po["tie"]),
                         ("missing", missing)):
        fig.add_bar(x=objs, y=values, name="not labelled" if name == "missing" else name,
                    marker_color=LABEL_COLORS[name])
    fig.update_layout(barmode="stack", title="Labels per objective", yaxis_title="pairs",
                      height=340, margin=dict(t=50, b=30, l=40, r=10), legend_orientation="h")
    return fig


def ratings_figure(summary: Summary) -> go.Figure:
    """Mean ± std and coverage of each rated objective (ratings data)."""
    po = summary.per_objective
    fig = go.Figure(go.Bar(x=[plotly_text(o) for o in po.index], y=po["mean"],
                           error_y=dict(array=po["std"]), marker_color="#4C6EF5",
                           hovertext=[f"rated {int(n)} ({c:.0%})" for n, c in
                                      zip(po["rated"], po["coverage"], strict=True)]))
    fig.update_layout(title="Mean rating per objective (± std)", height=340,
                      margin=dict(t=50, b=30, l=40, r=10))
    return fig


def disagreement_figure(summary: Summary, among: str = "decided") -> go.Figure:
    """Heatmap of how often two objectives prefer opposite responses of the same pair, among
    pairs decided (a/b) on both, or among all pairs labelled on both."""
    d = summary.disagreement if among == "decided" else summary.conflict
    text = d.map(lambda v: "" if pd.isna(v) else f"{v:.0%}")
    fig = go.Figure(go.Heatmap(z=d.values, x=[plotly_text(o) for o in d.columns],
                               y=[plotly_text(o) for o in d.index], text=text.values,
                               texttemplate="%{text}", colorscale="Oranges", zmin=0, zmax=1,
                               colorbar=dict(title="disagree")))
    fig.update_layout(title="Where objectives disagree (" + ("pairs decided on both)" if among ==
                      "decided" else "all pairs labelled on both)"), height=340,
                      margin=dict(t=50, b=30, l=40, r=10), yaxis_autorange="reversed")
    return fig


def categories_figure(summary: Summary) -> go.Figure:
    c = summary.categories
    fig = go.Figure(go.Bar(x=c.values, y=[plotly_text(k) for k in c.index], orientation="h",
                           marker_color="#748FFC"))
    fig.update_layout(title="Records per category", height=340,
                      margin=dict(t=50, b=30, l=10, r=10), yaxis_autorange="reversed")
    return fig
