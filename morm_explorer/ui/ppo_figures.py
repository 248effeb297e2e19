"""Plotly figures of PPO runs, from a job's wide metrics frame (index: step; columns: metric keys
such as ``objective/scores/harmless``, ``objective/kl``, ``lagrange/harmless``). Pure functions of
their inputs; nothing here touches Streamlit. Objective and run names pass through `plotly_text`,
so they show as written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from morm_explorer.ui.reward_figures import LAYOUT, LAYOUT_XTITLE, PALETTE, objective_color
from morm_explorer.ui.text import plotly_text

SCORE = "objective/scores/"
WEIGHT = "scalarization/weight/"
LAGRANGE = "lagrange/"


def objectives_in(metrics: pd.DataFrame, prefix: str = SCORE) -> list[str]:
    """The objectives that have a column under ``prefix``, in column order."""
    return [c[len(prefix):] for c in metrics.columns if c.startswith(prefix)]


def _smooth(y: pd.Series, window: int) -> pd.Series:
    return y.rolling(window, min_periods=1).mean() if window > 1 else y


def scores_figure(metrics: pd.DataFrame, smooth: int = 1, title: str = "Reward-model scores "
                  "per objective") -> go.Figure:
    """Mean raw score of each objective per step (one line each), and the scalarized reward."""
    fig = go.Figure()
    objs = objectives_in(metrics)
    for obj in objs:
        y = _smooth(metrics[SCORE + obj], smooth)
        fig.add_scatter(x=metrics.index, y=y, name=plotly_text(obj), mode="lines+markers",
                        line_color=objective_color(obj, objs), marker_size=4)
    if "objective/rlhf_reward" in metrics:
        fig.add_scatter(x=metrics.index, y=_smooth(metrics["objective/rlhf_reward"], smooth),
                        name="RLHF reward (scalarized - KL)", mode="lines",
                        line=dict(color="#495057", dash="dot"))
    fig.update_layout(**LAYOUT_XTITLE, title=plotly_text(title), xaxis_title="step",
                      yaxis_title="mean score")
    return fig


def training_figure(metrics: pd.DataFrame, smooth: int = 1) -> go.Figure:
    """KL to the reference, entropy, losses and clip fractions: one small panel each. The KL
    is the k3 estimate (Schulman 2020, never negative) where the run logged it, else k1."""
    kl = ("objective/kl3", "KL to reference (k3, nats)") if "objective/kl3" in metrics else \
        ("objective/kl", "KL to reference (k1, nats)")
    panels = [kl, ("objective/entropy", "entropy"),
              ("loss/policy_avg", "policy loss"), ("loss/value_avg", "value loss"),
              ("policy/clipfrac_avg", "policy clip fraction"),
              ("objective/kl_coef", "KL coefficient")]
    panels = [(k, t) for k, t in panels if k in metrics]
    if not panels:
        return go.Figure(layout={**LAYOUT, "title": "No training metrics yet"})
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for _, t in panels],
                        vertical_spacing=0.18, horizontal_spacing=0.12)
    for i, (key, _) in enumerate(panels):
        fig.add_scatter(x=metrics.index, y=_smooth(metrics[key], smooth), mode="lines",
                        line_color=PALETTE[i % len(PALETTE)], showlegend=False,
                        row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(**{**LAYOUT, "height": 230 * rows, "margin": dict(t=70, b=30, l=50, r=10)},
                      title="Training")
    return fig


def weights_figure(metrics: pd.DataFrame) -> go.Figure:
    """The scalarization weights per step (a schedule shows as moving lines) and the Lagrange
    multipliers of the constraints, on a second axis."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    objs = objectives_in(metrics, WEIGHT)
    for obj in objs:
        fig.add_scatter(x=metrics.index, y=metrics[WEIGHT + obj], name=f"w {plotly_text(obj)}",
                        mode="lines", line_color=objective_color(obj, objs))
    for obj in objectives_in(metrics, LAGRANGE):
        fig.add_scatter(x=metrics.index, y=metrics[LAGRANGE + obj],
                        name=f"λ {plotly_text(obj)}",
                        mode="lines", line=dict(dash="dash", color=objective_color(obj, objs)),
                        secondary_y=True)
    fig.update_layout(**LAYOUT_XTITLE, title="Weights and Lagrange multipliers", xaxis_title="step")
    fig.update_yaxes(title_text="weight", secondary_y=False)
    fig.update_yaxes(title_text="λ", secondary_y=True)
    return fig


def runs_scores_figure(finals: Mapping[str, Mapping[str, float]],
                       objectives: Sequence[str]) -> go.Figure:
    """Grouped bars: the final mean score per objective of several runs."""
    runs = [plotly_text(r) for r in finals]
    fig = go.Figure()
    for obj in objectives:
        fig.add_bar(x=runs, y=[finals[r].get(obj, np.nan) for r in finals],
                    name=plotly_text(obj), marker_color=objective_color(obj, list(objectives)))
    fig.update_layout(**LAYOUT, barmode="group", title="Final scores per run",
                      yaxis_title="mean score (last steps)")
    return fig
