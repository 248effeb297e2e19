"""A rating session as ONE self-contained HTML file (no server): what was rated and by whom,
win rates per objective with Wilson intervals (a figure and a table), agreement between raters
and with the reward model, position bias, the raters' comments, and the date. plotly.js is
embedded once; every text from the session (prompts, responses, comments, names) is escaped."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from morm_explorer.evaluation.agreement import results
from morm_explorer.evaluation.report import _e, _table, write_page
from morm_explorer.evaluation.sessions import get_session, load_votes, progress_shown
from morm_explorer.ui.reward_figures import LAYOUT, PALETTE
from morm_explorer.ui.text import plotly_text
from morm_explorer.workspace import Workspace

MAX_COMMENTS = 30


def win_rates_figure(wins: pd.DataFrame) -> go.Figure:
    """Win rate of each policy over its opponent per objective, with Wilson 95% intervals."""
    fig = go.Figure()
    if wins.empty:
        return fig.update_layout(**LAYOUT, title="No decided votes yet")
    low = next((c for c in wins.columns if c.endswith("low")), None)
    high = next((c for c in wins.columns if c.endswith("high")), None)
    for i, ((pol, opp), part) in enumerate(wins.groupby(["policy", "opponent"], sort=False)):
        err = None
        if low and high:
            err = dict(type="data", symmetric=False, array=part[high] - part["win_rate"],
                       arrayminus=part["win_rate"] - part[low])
        fig.add_bar(x=[plotly_text(o) for o in part["objective"]], y=part["win_rate"],
                    name=f"{plotly_text(pol)} over {plotly_text(opp)}",
                    error_y=err, marker_color=PALETTE[i % len(PALETTE)])
    fig.add_hline(y=0.5, line_dash="dot", line_color="#868e96")
    fig.update_layout(**LAYOUT, barmode="group", title="Win rates per objective (ties count "
                      "half; Wilson 95% intervals)", yaxis_range=[0, 1])
    return fig


def _frame_table(frame: pd.DataFrame | None) -> str:
    if frame is None or frame.empty:
        return "<p class='muted'>none yet</p>"
    frame = frame.round(3)
    return _table(list(frame.columns), frame.astype(object).where(frame.notna(), "").values
                  .tolist())


def session_report(ws: Workspace, session: str, out_path: str | Path, *,
                   reward_model: str | None = None, now: datetime | None = None) -> Path:
    """Write the session's report to ``out_path`` (atomically); returns the path."""
    info = get_session(ws, session)
    res = results(ws, session, reward_model=reward_model)
    votes = load_votes(ws, session)
    fig = win_rates_figure(res.get("win_rates", pd.DataFrame()))
    spec = info.spec
    date = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    comments = votes[votes["comment"].fillna("").str.strip() != ""] if not votes.empty \
        else votes
    comment_rows = [[r.rater, r.prompt_id, r.comment] for r in
                    comments.head(MAX_COMMENTS).itertuples()]
    body = [
        f"<h1>Rating session {_e(info.name)}</h1>",
        f"<p class='muted'>Report made {_e(date)}; status {_e(info.status)}.</p>",
        "<h2>What was rated</h2>",
        _table(["setting", "value"], [
            ["candidate set", spec.candidate_set], ["policies", ", ".join(spec.policies)],
            ["objectives", ", ".join(spec.objectives)], ["pairs", info.n_items],
            ["raters", ", ".join(spec.raters) or "anyone who joined"],
            ["votes", len(votes)], ["reward model compared", reward_model or "none"]]),
        "<h2>Progress</h2>", _frame_table(progress_shown(ws, session)),
        "<h2>Win rates</h2>",
        fig.to_html(full_html=False, include_plotlyjs=False, div_id="figure-0"),
        _frame_table(res.get("win_rates")),
        "<h2>Agreement between raters</h2>", _frame_table(res.get("agreement")),
        "<h2>Position bias</h2>", _frame_table(res.get("position")),
        "<h2>Raters and the reward model</h2>", _frame_table(res.get("reward_model")),
        "<h2>Comments</h2>", _table(["rater", "prompt", "comment"], comment_rows)
        if comment_rows else "<p class='muted'>none</p>",
    ]
    return write_page(out_path, f"Session {info.name}", body)
