"""A comparison as ONE self-contained HTML file that opens in a browser with no server.

`comparison_figures` builds the report's plotly figures (the Compare page draws the same ones,
from `morm_explorer.ui.compare_figures`); `comparison_report` writes them with plotly.js
embedded once, inline, in the page's head, then each figure as a div (``include_plotlyjs=False``),
beside tables of the statistics, the policies' weights and models, chosen examples side by side,
and the date. Every prompt, response and name is passed through `html.escape` (a model's output
may contain ``<script>``); plotly's own figure JSON escapes ``<`` and ``/`` itself. The file is
written atomically.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from morm_explorer.evaluation import stats
from morm_explorer.evaluation.compare import Comparison
from morm_explorer.ui import compare_figures as cf
from morm_explorer.workspace import atomic_write_text

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#212529}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #dee2e6;padding:4px 8px;
vertical-align:top;text-align:left}th{background:#f1f3f5}.grid{display:grid;gap:8px;
grid-template-columns:repeat(var(--n),1fr)}.resp{white-space:pre-wrap;border:1px solid #dee2e6;
padding:6px;margin-bottom:6px}.muted{color:#868e96;font-size:.9em}"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _table(header: list[str], rows: list[list[object]]) -> str:
    """An HTML table; every cell and header escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ci(row: pd.Series, col: str) -> str:
    lo, hi = row.get(f"{col}_low", math.nan), row.get(f"{col}_high", math.nan)
    bounds = "" if math.isnan(lo) else f" [{lo:.3f}, {hi:.3f}]"
    return f"{row[col]:.3f}{bounds}"


def summary_table(summary: pd.DataFrame, objectives: list[str]) -> str:
    """Per policy: mean [95% CI] per objective, mean KL [CI], mean length, prompts."""
    header = ["policy", *objectives, "KL from base", "tokens", "chars", "prompts"]
    rows = [[p, *(_ci(r, o) for o in objectives), _ci(r, "kl") if "kl" in r else "",
             r.get("n_tokens", math.nan), r.get("n_chars", math.nan), int(r["n_prompts"])]
            for p, r in summary.iterrows()]
    return _table(header, rows)


def wins_table(wins: pd.DataFrame) -> str:
    """Per (policy, objective): win rate [paired bootstrap CI], win / tie / loss shares."""
    rows = [[r["policy"], r["objective"], f"{r['rate']:.1%} [{r['ci_low']:.1%}, "
             f"{r['ci_high']:.1%}]", f"{r['win']:.0%}", f"{r['tie']:.0%}", f"{r['loss']:.0%}",
             r["n"]] for _, r in wins.iterrows()]
    return _table(["policy", "objective", "win rate", "win", "tie", "loss", "prompts"], rows)


def policies_table(comparison: Comparison) -> str:
    """The weights and models behind each policy."""
    rows = []
    for p in comparison.manifest["policies"]:
        rows.append([p["label"], p["kind"], cf.weights_label(p.get("weights")),
                     p.get("scalarizer") or "", p.get("reward_model") or "",
                     p.get("base") or "", p["ref"]])
    return _table(["policy", "kind", "weights", "scalarizer", "trained on", "base", "from"],
                  rows)


def _statistics(comparison: Comparison, baseline: str, n_boot: int, seed: int) -> dict:
    """The tables behind the report: summaries and win rates, for the training reward model
    and (None without one) the judge."""
    frame, objs, jobjs = comparison.frame, comparison.objectives, comparison.judge_objectives
    out = {"summary": stats.policy_summary(frame, objs),
           "wins": stats.win_rates(frame, baseline, objs, n_boot=n_boot, seed=seed),
           "judge": None, "judge_wins": None}
    if jobjs:
        out["judge"] = stats.policy_summary(frame, jobjs, prefix="judge:")
        out["judge_wins"] = stats.win_rates(frame, baseline, jobjs, prefix="judge:",
                                            n_boot=n_boot, seed=seed)
    return out


def _figures(comparison: Comparison, tables: dict, baseline: str, objective: str,
             soup: pd.DataFrame | None) -> dict[str, go.Figure]:
    frame, objs, summary = comparison.frame, comparison.objectives, tables["summary"]
    x, y = (objs[0], objs[1]) if len(objs) >= 2 else ("kl", objs[0])
    front = stats.front_of_policies(summary, [x, y] if len(objs) >= 2 else objs)
    labels = {p: cf.weights_label(w) for p in comparison.policies
              if (w := comparison.policy(p).get("weights"))}
    figs = {
        "objective space": cf.objective_space_figure(
            summary, x, y, labels=labels, front=front.on_front,
            hypervolume=front.hypervolume, soup=soup),
        "mean scores": cf.mean_scores_figure(summary, objs, tables["judge"],
                                             comparison.judge_objectives),
        "win rates": cf.win_rates_figure(tables["wins"], baseline, comparison.policies,
                                         tables["judge_wins"]),
        "kl and length": cf.kl_length_figure(frame, summary, objective),
    }
    if frame["category"].nunique(dropna=False) > 1:
        figs["slices"] = cf.slices_figure(stats.slices(frame, objs), objective)
    return figs


def comparison_figures(comparison: Comparison, *, baseline: str | None = None,
                       objective: str | None = None, soup: pd.DataFrame | None = None,
                       n_boot: int = 2000, seed: int = 0) -> dict[str, go.Figure]:
    """The report's figures by title: objective space (the policies' front and hypervolume,
    weights labels, the soup curve), mean scores with CIs (and the judge's), win rates vs the
    baseline (and the judge's), score vs KL and vs length, and the per-category slices where
    there is more than one category. The first two objectives span the objective space (one
    objective: KL against it)."""
    baseline = baseline or comparison.baseline
    tables = _statistics(comparison, baseline, n_boot, seed)
    return _figures(comparison, tables, baseline, objective or comparison.objectives[0], soup)


def _example(comparison: Comparison, prompt_id: str) -> str:
    """One prompt and every policy's responses to it side by side, with their scores."""
    rows = comparison.frame[comparison.frame["prompt_id"] == prompt_id]
    if rows.empty:
        return ""
    first = rows.iloc[0]
    score_cols = [c for c in rows.columns if c.startswith(("rm:", "judge:"))]
    cells = []
    for policy in comparison.policies:
        blocks = []
        for _, r in rows[rows["policy"] == policy].sort_values("sample").iterrows():
            scores = ", ".join(f"{c} {r[c]:.3f}" for c in score_cols)
            blocks.append(f"<div class='resp'>{_e(r['response'])}</div><div class='muted'>"
                          f"{_e(scores)}; KL {r['kl']:.3f}; {_e(r['n_tokens'])} tokens</div>")
        cells.append(f"<div><b>{_e(policy)}</b>{''.join(blocks)}</div>")
    return (f"<h3>{_e(prompt_id)} <span class='muted'>{_e(first['category'] or '')}</span></h3>"
            f"<p>{_e(first['prompt'])}</p><div class='grid' style='--n:{len(cells)}'>"
            + "".join(cells) + "</div>")


def _default_examples(comparison: Comparison, baseline: str, objective: str, n: int
                      ) -> list[str]:
    """The ``n`` prompts where the first other policy differs most from the baseline."""
    others = [p for p in comparison.policies if p != baseline]
    diffs = stats.largest_differences(comparison.frame, others[0], baseline, objective)
    return diffs["prompt_id"].head(n).tolist()


def comparison_report(comparison: Comparison, out_path: str | Path, *,
                      baseline: str | None = None, objective: str | None = None,
                      examples: list[str] | None = None, n_examples: int = 3,
                      soup: pd.DataFrame | None = None, n_boot: int = 2000,
                      now: datetime | None = None) -> Path:
    """Write the comparison as one self-contained HTML file at ``out_path``; returns it.
    ``examples``: prompt_ids to show side by side (default: the ``n_examples`` prompts where
    the first non-baseline policy differs most from the baseline on ``objective``)."""
    baseline = baseline or comparison.baseline
    objective = objective or comparison.objectives[0]
    objs, m = comparison.objectives, comparison.manifest
    tables = _statistics(comparison, baseline, n_boot, seed=0)
    figs = _figures(comparison, tables, baseline, objective, soup)
    divs = [f"<h3>{_e(t)}</h3>" + f.to_html(full_html=False, include_plotlyjs=False,
                                           div_id=f"figure-{i}")
            for i, (t, f) in enumerate(figs.items())]
    examples = examples if examples is not None else _default_examples(
        comparison, baseline, objective, n_examples)
    judge_html = ""
    if tables["judge"] is not None:
        judge_html = (f"<h2>Held-out judge: {_e(m['judge_model']['name'])}</h2>"
                      + summary_table(tables["judge"], comparison.judge_objectives)
                      + wins_table(tables["judge_wins"]))
    date = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M %Z").strip()
    made = datetime.fromtimestamp(comparison.created_at, timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")
    models = _table(["setting", "value"], [
        ["training reward model", f"{m['reward_model']['name']} ({', '.join(objs)})"],
        ["held-out judge", m["judge_model"]["name"] if m.get("judge_model") else "none"],
        ["KL measured from", m["base_policy"]], ["baseline", baseline],
        ["prompts", f"{m['prompts']} ({m['n_prompts']} prompts)"],
        ["sampling", json.dumps(m["sampling"])], ["candidate set", m["candidate_set"]]])
    body = [
        f"<h1>Comparison {_e(comparison.name)}</h1>",
        f"<p class='muted'>Report made {_e(date)}; comparison run {_e(made)}.</p>",
        "<h2>Policies and models</h2>", policies_table(comparison), models,
        "<h2>Scores (training reward model)</h2>",
        summary_table(tables["summary"], objs),
        f"<h2>Win rates against {_e(baseline)}</h2>", wins_table(tables["wins"]), judge_html,
        "<h2>Figures</h2>", *divs,
        "<h2>Examples</h2>", *(_example(comparison, pid) for pid in examples)]
    return write_page(out_path, f"Comparison {comparison.name}", body)


def write_page(out_path: str | Path, title: str, body: list[str]) -> Path:
    """Write one self-contained HTML page, atomically: ``title`` (escaped here), the report's
    CSS and plotly.js inline in the head (figures in ``body`` are divs made with
    ``include_plotlyjs=False``), then the already escaped HTML pieces of ``body``."""
    from plotly.offline import get_plotlyjs

    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script>"
            f"</head><body>{''.join(body)}</body></html>")
    out = Path(out_path)
    atomic_write_text(out, page)
    return out
