"""Plotly figures of a policy comparison (the Compare page and the HTML report share them).

Each builder takes the plain tables of `morm_explorer.evaluation.stats` (`policy_summary`,
`win_rates`, `slices`, `soup_curve`) or the comparison's tidy frame and returns a Figure; nothing
here touches Streamlit. Colour encodes the policy (the baseline first, in grey), in every figure
in the same order. Names that come from users (policies, objectives, categories) pass through
`plotly_text` and stay out of hover templates (``meta`` holds them), since plotly renders a
subset of HTML in text and fills ``%{...}`` in templates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from morm_explorer.ui.reward_figures import LAYOUT, LAYOUT_XTITLE
from morm_explorer.ui.text import plotly_text

POLICY_COLORS = ["#495057", "#AE3EC9", "#1098AD", "#FD7E14", "#74B816", "#D6336C"]
FRONT_COLOR = "#E03131"
SOUP_COLOR = "#868E96"


def policy_colors(policies: Sequence[str]) -> dict[str, str]:
    """One colour per policy, in comparison order (the first, the baseline, is grey)."""
    return {p: POLICY_COLORS[i % len(POLICY_COLORS)] for i, p in enumerate(policies)}


def weights_label(weights: Mapping[str, float] | None) -> str:
    """``helpful 0.70 · harmless 0.30`` for a policy's training weights; ``base`` for none."""
    if not weights:
        return "base"
    return " · ".join(f"{o} {float(w):.2f}" for o, w in weights.items())


def _err(summary: pd.DataFrame, col: str) -> dict | None:
    """Asymmetric error bars from ``<col>_low`` / ``<col>_high`` (none where missing)."""
    if f"{col}_low" not in summary:
        return None
    v, lo, hi = summary[col], summary[f"{col}_low"], summary[f"{col}_high"]
    return dict(type="data", symmetric=False, array=(hi - v).clip(lower=0).fillna(0).tolist(),
                arrayminus=(v - lo).clip(lower=0).fillna(0).tolist(), thickness=1.2, width=4)


def objective_space_figure(summary: pd.DataFrame, x: str, y: str, *,
                           labels: Mapping[str, str] | None = None,
                           front: np.ndarray | None = None, hypervolume: float | None = None,
                           soup: pd.DataFrame | None = None) -> go.Figure:
    """The policies as points (mean score, 95% interval bars) on objectives ``x`` and ``y``
    (columns of `policy_summary`), each labelled with its training weights (``labels``), their
    own Pareto front as a line, and the soup curve (mean scores per lambda) where given."""
    colors = policy_colors(list(summary.index))
    fig = go.Figure()
    if soup is not None and {x, y} <= set(soup.columns):
        fig.add_scatter(x=soup[x], y=soup[y], mode="lines+markers", name="soup curve",
                        line=dict(color=SOUP_COLOR, dash="dot"), marker_size=6,
                        text=[f"λ={lam:g}" for lam in soup.index], textposition="bottom right",
                        hovertemplate="soup %{text}: (%{x:.3f}, %{y:.3f})<extra></extra>")
    if front is not None and np.asarray(front).any():
        # The attainment staircase of a maximised front: down from each point, then across.
        pts = summary[np.asarray(front, dtype=bool)].sort_values(x)
        name = "policies' front" + (f" (HV {hypervolume:.3g})" if hypervolume is not None
                                    else "")
        fig.add_scatter(x=pts[x], y=pts[y], mode="lines", name=name,
                        line=dict(color=FRONT_COLOR, width=2, shape="vh"), hoverinfo="skip")
    # Names beside the markers, placed in turn above, below, right and left along x, so that
    # close policies do not print over each other; the weights go to the legend and hover.
    places = ["top center", "bottom center", "middle right", "middle left"]
    order = {p: i for i, p in enumerate(summary.sort_values(x).index)}
    for policy in summary.index:
        label = plotly_text(policy)
        weights = plotly_text((labels or {}).get(policy, ""))
        one = summary.loc[[policy]]
        fig.add_scatter(x=one[x], y=one[y], mode="markers+text",
                        name=f"{label} ({weights})" if weights else label,
                        meta=[label, weights],
                        marker=dict(size=13, color=colors[policy], line_width=1),
                        error_x=_err(one, x), error_y=_err(one, y), text=[label],
                        textposition=places[order[policy] % len(places)],
                        hovertemplate="%{meta[0]} %{meta[1]}: (%{x:.3f}, %{y:.3f})"
                                      "<extra></extra>")
    fig.update_layout(**{**LAYOUT_XTITLE, "height": 420}, title="Policies in objective space",
                      xaxis_title=f"mean {plotly_text(x)}", yaxis_title=f"mean {plotly_text(y)}")
    return fig


def mean_scores_figure(summary: pd.DataFrame, objectives: list[str],
                       judge: pd.DataFrame | None = None,
                       judge_objectives: list[str] | None = None) -> go.Figure:
    """Mean score per objective and policy with 95% t intervals over prompts; beside it the
    held-out judge's scores where there is one (a policy ahead on the training reward model
    but not on the judge is the sign of reward hacking)."""
    panels = [("training reward model", summary, objectives)]
    if judge is not None and judge_objectives:
        panels.append(("held-out judge", judge, judge_objectives))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
    colors = policy_colors(list(summary.index))
    for c, (_, table, objs) in enumerate(panels, start=1):
        for policy in table.index:
            row = table.loc[[policy]]
            fig.add_bar(x=[plotly_text(o) for o in objs], y=[row[o].iloc[0] for o in objs],
                        name=plotly_text(policy), legendgroup=plotly_text(policy),
                        marker_color=colors.get(policy, SOUP_COLOR),
                        showlegend=c == 1, error_y=_stack_err(row, objs),
                        row=1, col=c)
    fig.update_layout(**{**LAYOUT, "margin": dict(t=80, b=30, l=40, r=10)}, barmode="group",
                      title="Mean score per objective (95% CI over prompts)")
    return fig


def _stack_err(row: pd.DataFrame, objs: list[str]) -> dict:
    """Error bars of one policy's row across objectives."""
    v = np.array([row[o].iloc[0] for o in objs], dtype=float)
    lo = np.array([row[f"{o}_low"].iloc[0] for o in objs], dtype=float)
    hi = np.array([row[f"{o}_high"].iloc[0] for o in objs], dtype=float)
    return dict(type="data", symmetric=False, array=np.nan_to_num(np.clip(hi - v, 0, None)),
                arrayminus=np.nan_to_num(np.clip(v - lo, 0, None)), thickness=1.2, width=4)


def win_rates_figure(wins: pd.DataFrame, baseline: str, policies: Sequence[str],
                     judge_wins: pd.DataFrame | None = None) -> go.Figure:
    """Paired win rate of each policy against ``baseline`` per objective (95% paired
    bootstrap interval over prompts); the judge's win rates beside them, hatched. Win rates are
    free of each model's score scale, so the two can be read side by side."""
    colors = policy_colors(list(policies))
    fig = go.Figure()
    for source, table in (("", wins), (" (judge)", judge_wins)):
        if table is None or table.empty:
            continue
        for policy, g in table.groupby("policy", sort=False):
            fig.add_bar(x=[plotly_text(o) for o in g["objective"]], y=g["rate"],
                        name=plotly_text(policy) + source,
                        marker_color=colors.get(policy, SOUP_COLOR),
                        marker_pattern_shape="/" if source else "",
                        marker_opacity=0.55 if source else 1.0,
                        error_y=dict(type="data", symmetric=False,
                                     array=(g["ci_high"] - g["rate"]).fillna(0).clip(lower=0),
                                     arrayminus=(g["rate"] - g["ci_low"]).fillna(0)
                                     .clip(lower=0), thickness=1.2, width=4),
                        customdata=np.stack([g["win"], g["tie"], g["loss"], g["n"]], axis=1),
                        hovertemplate="%{x}: %{y:.1%} (win %{customdata[0]:.0%}, tie "
                        "%{customdata[1]:.0%}, loss %{customdata[2]:.0%}, "
                        "%{customdata[3]} prompts)<extra></extra>")
    fig.add_hline(y=0.5, line_dash="dot", line_color="#868E96")  # as good as the baseline
    fig.update_layout(**LAYOUT, barmode="group", yaxis=dict(range=[0, 1.05], tickformat=".0%"),
                      title=f"Win rate against {plotly_text(baseline)} (paired bootstrap 95% CI)")
    return fig


def kl_length_figure(frame: pd.DataFrame, summary: pd.DataFrame, objective: str,
                     prefix: str = "rm:") -> go.Figure:
    """Left: each policy's mean score on ``objective`` against its mean KL from the base (what
    the score cost). Right: every sample's score against its length in tokens, with a least-
    squares line per policy: a slope that rises with length shows a verbosity bias."""
    shown = plotly_text(objective)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{shown} vs KL from the base",
                                                        f"{shown} vs response length"])
    colors = policy_colors(list(summary.index))
    col = prefix + objective
    for policy in summary.index:
        one, c = summary.loc[[policy]], colors[policy]
        name = plotly_text(policy)
        if "kl" in one:
            fig.add_scatter(x=one["kl"], y=one[objective], mode="markers", name=name,
                            legendgroup=name, marker=dict(size=12, color=c),
                            error_x=_err(one, "kl"), error_y=_err(one, objective), row=1, col=1)
        rows = frame[frame["policy"] == policy]
        fig.add_scatter(x=rows["n_tokens"], y=rows[col], mode="markers", name=name,
                        legendgroup=name, showlegend="kl" not in one,
                        marker=dict(size=5, color=c, opacity=0.5), row=1, col=2)
        ok = rows[["n_tokens", col]].dropna()
        if len(ok) >= 2 and ok["n_tokens"].nunique() > 1:
            slope, icept = np.polyfit(ok["n_tokens"].astype(float), ok[col], 1)
            xs = np.array([ok["n_tokens"].min(), ok["n_tokens"].max()], dtype=float)
            fig.add_scatter(x=xs, y=icept + slope * xs, mode="lines", legendgroup=name,
                            showlegend=False, line=dict(color=c, width=1.5),
                            meta=[name, f"{slope:.3g}"],
                            hovertemplate="%{meta[0]}: slope %{meta[1]} per token<extra></extra>",
                            row=1, col=2)
    fig.update_xaxes(title_text="mean KL (nats)", row=1, col=1)
    fig.update_xaxes(title_text="tokens", row=1, col=2)
    fig.update_layout(**{**LAYOUT_XTITLE, "height": 400, "margin": dict(t=80, b=40, l=50, r=10)},
                      title="Score vs KL and vs length")
    return fig


def slices_figure(slice_summary: pd.DataFrame, objective: str, by: str = "category"
                  ) -> go.Figure:
    """Mean score on ``objective`` per slice (rows of `stats.slices`) and policy, with 95%
    intervals."""
    table = slice_summary.reset_index()
    colors = policy_colors(list(pd.unique(table["policy"])))
    fig = go.Figure()
    for policy, g in table.groupby("policy", sort=False):
        fig.add_bar(x=[plotly_text(v) for v in g[by].astype(str)], y=g[objective],
                    name=plotly_text(policy), marker_color=colors[policy],
                    error_y=_err(g, objective))
    fig.update_layout(**LAYOUT_XTITLE, barmode="group", xaxis_title=plotly_text(by),
                      title=f"Mean {plotly_text(objective)} per {plotly_text(by)} (95% CI)")
    return fig
