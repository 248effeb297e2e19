"""Plotly figures of reward models: held-out accuracy, training curves, head correlation,
calibration and the single-vs-multi comparison. Each builder takes plain data (the frames of
`morm_explorer.reward.report.load_model_report`, or a job's wide metrics) and returns a Figure.
Objective names pass through `plotly_text`, so they show as written.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from morm_explorer.ui.text import plotly_text

# One color per objective across every figure; objectives not named here take the palette.
OBJECTIVE_COLORS = {"helpful": "#4C6EF5", "harmless": "#37B24D", "honest": "#F59F00",
                    "overall": "#868E96"}
PALETTE = ["#AE3EC9", "#F03E3E", "#1098AD", "#74B816", "#D6336C", "#5C7CFA", "#FD7E14"]
LAYOUT = dict(height=340, margin=dict(t=50, b=30, l=40, r=10), legend_orientation="h")
# Figures with an x-axis title keep their legend below it.
LAYOUT_XTITLE = {**LAYOUT, "margin": dict(t=50, b=40, l=50, r=10),
                 "legend": dict(orientation="h", y=-0.25, yanchor="top")}


def objective_color(objective: str, objectives: list[str] | None = None) -> str:
    """The objective's color: a fixed one for the usual names, else by its position."""
    if objective in OBJECTIVE_COLORS:
        return OBJECTIVE_COLORS[objective]
    others = [o for o in (objectives or [objective]) if o not in OBJECTIVE_COLORS]
    i = others.index(objective) if objective in others else len(others)
    return PALETTE[i % len(PALETTE)]


def _errors(value: pd.Series, low: pd.Series, high: pd.Series) -> dict:
    """Asymmetric error bars from an interval (NaN where there is none)."""
    return dict(type="data", symmetric=False, array=(high - value).clip(lower=0).tolist(),
                arrayminus=(value - low).clip(lower=0).tolist(), thickness=1.5, width=6)


def _chance_line(fig: go.Figure) -> None:
    fig.add_hline(y=0.5, line_dash="dot", line_color="#868E96")  # a coin flip


def accuracy_figure(accuracy: pd.DataFrame) -> go.Figure:
    """Held-out accuracy per objective with its 95% bootstrap interval, beside the accuracy
    against the hidden true ordering where the data has one (built-in data)."""
    objs = list(accuracy.index)
    colors = [objective_color(o, objs) for o in objs]
    shown = [plotly_text(o) for o in objs]
    fig = go.Figure()
    fig.add_bar(x=shown, y=accuracy["accuracy"], name="vs labels (95% CI)", marker_color=colors,
                error_y=_errors(accuracy["accuracy"], accuracy["ci_low"], accuracy["ci_high"]),
                text=[f"{a:.0%}" for a in accuracy["accuracy"]], textposition="inside",
                insidetextanchor="start",
                customdata=accuracy["n"],
                hovertemplate="%{x}: %{y:.1%} on %{customdata} pairs<extra></extra>")
    if "truth_accuracy" in accuracy and accuracy["truth_accuracy"].notna().any():
        fig.add_bar(x=shown, y=accuracy["truth_accuracy"], name="vs true ordering",
                    marker_color=colors, marker_opacity=0.45, marker_pattern_shape="/",
                    hovertemplate="%{x}: %{y:.1%} vs true scores<extra></extra>")
    _chance_line(fig)
    fig.update_layout(title="Held-out accuracy per objective", barmode="group",
                      yaxis=dict(range=[0, 1.05], tickformat=".0%"), **LAYOUT)
    return fig


def curves_figure(frame: pd.DataFrame, title: str = "Training curves",
                  objectives: list[str] | None = None) -> go.Figure:
    """Loss against step: ``loss/<objective>`` per objective (in the order of
    ``objectives`` when given), ``loss/total`` (the weighted sum), ``eval/loss`` (validation)
    and ``loss/step`` where present. ``frame``: index step, one column per metric key (a
    job's wide metrics, or an artifact's history)."""
    fig = go.Figure()
    found = [c.split("/", 1)[1] for c in frame.columns
             if c.startswith("loss/") and c not in ("loss/total", "loss/step")]
    objs = [o for o in objectives or [] if o in found] + sorted(
        o for o in found if o not in (objectives or []))
    styles = {"loss/step": ("train loss per step", dict(color="#CED4DA", width=1)),
              "loss/total": ("total Σ w_k L_k", dict(color="#212529", width=2, dash="dash")),
              "eval/loss": ("validation", dict(color="#212529", width=2, dash="dot"))}
    for col in ["loss/step"] + [f"loss/{o}" for o in objs] + ["loss/total", "eval/loss"]:
        if col not in frame:
            continue
        y = frame[col].dropna()
        name, line = styles.get(col, (plotly_text(col.split("/", 1)[1]),
                                      dict(color=objective_color(col[5:], objs), width=2)))
        fig.add_scatter(x=y.index, y=y.values, mode="lines", name=name, line=line)
    if not fig.data:
        fig.add_annotation(text="no metrics yet", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    fig.update_layout(title=plotly_text(title), xaxis_title="step", yaxis_title="loss",
                      **LAYOUT_XTITLE)
    return fig


def correlation_figure(corr: pd.DataFrame) -> go.Figure:
    """Pearson correlation of the heads' rewards over held-out responses: near 1 means two
    heads rank responses alike; negative means they trade off."""
    text = corr.map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    fig = go.Figure(go.Heatmap(z=corr.values, x=[plotly_text(o) for o in corr.columns],
                               y=[plotly_text(o) for o in corr.index],
                               text=text.values, texttemplate="%{text}", colorscale="RdBu",
                               zmin=-1, zmax=1, zmid=0, colorbar=dict(title="r")))
    fig.update_layout(title="Head correlation (held-out responses)", yaxis_autorange="reversed",
                      **{**LAYOUT, "margin": dict(t=50, b=30, l=70, r=10)})
    return fig


def calibration_figure(calibration: dict[str, pd.DataFrame],
                       ece: dict[str, float] | None = None) -> go.Figure:
    """Reliability diagram: mean predicted P(a preferred) = sigmoid(r_a - r_b) per bin against
    how often a was preferred, one line per objective; a calibrated head lies on the diagonal.
    Marker area follows the bin's pair count."""
    objs = list(calibration)
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect",
                    line=dict(color="#ADB5BD", dash="dash", width=1), hoverinfo="skip")
    for obj, table in calibration.items():
        if table.empty:
            continue
        size = 6 + 14 * np.sqrt(table["count"] / table["count"].max())
        shown = plotly_text(obj)
        name = shown if not ece or obj not in ece else f"{shown} (ECE {ece[obj]:.3f})"
        fig.add_scatter(x=table["predicted"], y=table["observed"], mode="lines+markers",
                        name=name, marker=dict(size=size, color=objective_color(obj, objs)),
                        line=dict(color=objective_color(obj, objs), width=1.5),
                        customdata=table["count"], meta=[shown],
                        hovertemplate="predicted %{x:.2f}, observed %{y:.2f}, "
                                      "%{customdata} pairs<extra>%{meta[0]}</extra>")
    fig.update_layout(title="Calibration (held-out pairs)",
                      xaxis=dict(title="predicted P(a preferred)", range=[-0.03, 1.03]),
                      yaxis=dict(title="observed share a preferred", range=[-0.03, 1.03]),
                      **{**LAYOUT_XTITLE, "height": 400})
    return fig


def single_vs_multi_figure(table: pd.DataFrame) -> go.Figure:
    """Held-out accuracy on each objective's labels: that objective's head against one single
    RM trained on the overall label, with 95% intervals."""
    objs = list(table.index)
    shown = [plotly_text(o) for o in objs]
    fig = go.Figure()
    fig.add_bar(x=shown, y=table["multi_head"], name="its head (multi-objective)",
                marker_color=[objective_color(o, objs) for o in objs],
                error_y=_errors(table["multi_head"], table["multi_low"], table["multi_high"]),
                text=[f"{v:.0%}" for v in table["multi_head"]], textposition="inside",
                insidetextanchor="start")
    fig.add_bar(x=shown, y=table["single"], name="single overall RM",
                marker_color=OBJECTIVE_COLORS["overall"],
                error_y=_errors(table["single"], table["single_low"], table["single_high"]),
                text=[f"{v:.0%}" for v in table["single"]], textposition="inside",
                insidetextanchor="start")
    _chance_line(fig)
    fig.update_layout(title="Per-objective head vs one overall RM", barmode="group",
                      yaxis=dict(range=[0, 1.05], tickformat=".0%", title="held-out accuracy"),
                      **LAYOUT)
    return fig
