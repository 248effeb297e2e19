"""Figures of the Explore page: N candidates scored on K objectives (all maximised), their
Pareto front and the best-of-N winners under the current weights, the weight simplex, and how the
winners move when the weights do. Each builder takes numpy arrays, never modifies them, and
returns a Plotly Figure, or for the 2D scatter a Vega-Lite spec (a dict); nothing here touches
Streamlit.

Conventions the page relies on:

- Row indices. In `scatter_3d` every marker carries ``customdata`` = its row index into the
  full (N, K) arrays, whatever was downsampled or split into traces; in `scatter_2d` every
  dataset row carries ``row``. In `ternary_map` ``customdata[0]`` is the grid row.
- `scatter_2d` keeps what the weights move (the winners) in a dataset of its own, so a slider
  step changes that dataset only and the browser updates the drawn chart in place; its box
  selection maps back to candidates with `brushed_rows`.
- Traces (`scatter_3d`). Each shown row sits in exactly one marker trace: winners in
  ``WINNERS``, other front points in ``FRONT``, the rest in one trace per ``color`` value (or
  ``CANDIDATES``), so the legend toggles sources. Trace ``uid`` = name and a fixed
  ``uirevision`` keep zoom and legend state across reruns.
- Display downsampling keeps every front point, then (`scatter_3d`, `parallel_coordinates`)
  winners up to half the budget left, then a sample of the rest, each drawn by one seeded
  priority per row, so the background stays put while the weights move.
- Plotly hover text is plain text: whitespace collapsed, cut to ``HOVER_CHARS``, then
  `plotly_text`. Every name shown (objectives, sources, labels) passes through `plotly_text`
  too; hover templates hold no such name: a trace's ``meta`` does, and the template reads
  ``%{meta[i]}``. Vega draws its labels and tooltips as text, so `scatter_2d`'s are not
  escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from morm_explorer.ui.reward_figures import LAYOUT, PALETTE, objective_color
from morm_explorer.ui.text import plotly_text

CANDIDATES = "candidates"
FRONT = "Pareto front"
WINNERS = "best-of-N winner"
FRONT_LINE = "front (line)"
CURRENT = "current weights"
HOVER_CHARS = 120
HOVER_CACHE = 20_000  # hover texts kept (see _hover_label)

WINNER_COLOR = "#E03131"
EDGE_COLOR = "#212529"
CANDIDATE_COLOR = "#748FFC"  # when no `color` categories are given
OTHERS_COLOR = "#CED4DA"
# Categories take the shared palette minus its red, which would read as a winner.
CATEGORY_PALETTE = [c for c in PALETTE if c != "#F03E3E"]

# Marker per role; 3D scenes know fewer symbols (no star) and draw sizes larger.
_STYLE_2D = {"rest": dict(size=5, opacity=0.35),
             "front": dict(size=9, symbol="diamond", line=dict(color=EDGE_COLOR, width=1.5)),
             "winner": dict(size=14, symbol="star", color=WINNER_COLOR,
                            line=dict(color=EDGE_COLOR, width=1))}
_STYLE_3D = {"rest": dict(size=2, opacity=0.35),
             "front": dict(size=4, symbol="circle", line=dict(color=EDGE_COLOR, width=1)),
             "winner": dict(size=6, symbol="diamond", color=WINNER_COLOR,
                            line=dict(color=EDGE_COLOR, width=1))}


def _escape_hover(text: object, limit: int = HOVER_CHARS) -> str:
    """Plain text for a plotly hover label, which renders a subset of HTML: whitespace runs
    become one space, text over ``limit`` characters is cut with an ellipsis, then it goes
    through `plotly_text` (model outputs may contain markup such as ``<script>``)."""
    s = " ".join(str(text)[: limit * 4].split())  # only the head is ever shown
    if len(s) > limit:
        s = s[: limit - 1].rstrip() + "…"
    return plotly_text(s)


@lru_cache(maxsize=HOVER_CACHE)
def _hover_label(category: str | None, body: str | None) -> str:
    """A point's hover text, "category · body", escaped; cached, as a slider move redraws
    mostly the same points."""
    return _escape_hover(" · ".join(str(p) for p in (category, body) if p is not None))


def _check_scores(scores: np.ndarray, objectives: Sequence[str]) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[1] != len(objectives):
        raise ValueError(f"scores must have shape (N, {len(objectives)}) for objectives "
                         f"{list(objectives)}, got {s.shape}")
    return s


def _columns(objectives: Sequence[str], names: Sequence[str]) -> list[int]:
    """Column index of each name; unknown names raise, all of them named."""
    unknown = [n for n in names if n not in objectives]
    if unknown:
        raise ValueError(f"unknown objective(s) {', '.join(map(repr, unknown))}; "
                         f"expected one of {', '.join(objectives)}")
    return [list(objectives).index(n) for n in names]


def _mask(mask: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if mask is None:
        return np.zeros(n, dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.shape != (n,):
        raise ValueError(f"{name} must be a boolean array of shape ({n},), got {m.shape}")
    return m


def _per_row(values: Sequence[str] | None, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    a = np.asarray(values, dtype=object)
    if a.shape != (n,):
        raise ValueError(f"{name} must have one entry per candidate ({n}), got shape {a.shape}")
    return a


def _display_rows(n: int, keep: np.ndarray, max_points: int, seed: int,
                  prefer: np.ndarray | None = None) -> np.ndarray:
    """Sorted rows to draw: all when n <= max_points; else every ``keep`` row, then ``prefer``
    rows (at most half the budget ``keep`` leaves, unless the others are fewer, so they still
    show), then the others,
    each group cut by lowest seeded priority: max_points in all (more only if ``keep`` alone
    exceeds it). The priority is fixed per row, so what is drawn stays put while the weights
    move."""
    if n <= max_points:
        return np.arange(n)
    priority = np.random.default_rng(seed).random(n)  # (N,) fixed per row, whatever `keep` is
    prefer = np.zeros(n, dtype=bool) if prefer is None else prefer & ~keep
    pref, rest = np.flatnonzero(prefer), np.flatnonzero(~keep & ~prefer)
    budget = max(0, max_points - int(keep.sum()))
    n_pref = min(len(pref), max(budget // 2, budget - len(rest)))
    rows = [np.flatnonzero(keep)]
    for group, take in ((pref, n_pref), (rest, min(len(rest), budget - n_pref))):
        rows.append(group[np.argpartition(priority[group], take)[:take]]
                    if take < len(group) else group)
    return np.sort(np.concatenate(rows))


def _categories(color: Sequence[str] | pd.Categorical | None, n: int
                ) -> tuple[np.ndarray, list[str]]:
    """(N,) codes into the sorted category names; one category ``CANDIDATES`` without color.
    A `pd.Categorical` (e.g. factorized once per candidate set) brings its codes, so a redraw
    need not hash N texts again."""
    if isinstance(color, pd.Categorical):
        if color.shape != (n,):
            raise ValueError(f"color must have one entry per candidate ({n}), "
                             f"got shape {color.shape}")
        color = color.remove_unused_categories()
        codes, uniques = color.codes.astype(int), list(color.categories)
        if (codes < 0).any():  # missing values: a category of their own, as below
            codes = np.where(codes < 0, len(uniques), codes)
            uniques.append(np.nan)
    else:
        a = _per_row(color, n, "color")
        if a is None:
            return np.zeros(n, dtype=int), [CANDIDATES]
        codes, uniques = pd.factorize(a, use_na_sentinel=False)  # O(N) hashing, no sort of N
    names = [str(u) for u in uniques]
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(names), dtype=int)
    rank[order] = np.arange(len(names))
    return rank[codes], [names[i] for i in order]


def _split(s: np.ndarray, front: np.ndarray, winners: np.ndarray, hover: Sequence[str] | None,
           color: Sequence[str] | pd.Categorical | None, max_points: int, seed: int
           ) -> tuple[list, str]:
    """The shown rows as (name, role, rows, text, point colors) per marker trace, and a title
    suffix saying how many are shown."""
    n = len(s)
    front, winners = _mask(front, n, "front"), _mask(winners, n, "winners")
    hover_rows = _per_row(hover, n, "hover")
    codes, names = _categories(color, n)
    palette = (np.array([CANDIDATE_COLOR], dtype=object) if color is None else
               np.array([CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i in range(len(names))],
                        dtype=object))
    # Every front point; the winners (one per prompt: 10,000 for 10,000 prompts) up to half
    # the budget left, then the rest.
    shown = _display_rows(n, front, max_points, seed, prefer=winners)
    text = np.full(n, "", dtype=object)  # (N,) filled for shown rows only
    if hover_rows is not None or color is not None:
        cats = [names[c] for c in codes[shown]] if color is not None else [None] * len(shown)
        bodies = hover_rows[shown] if hover_rows is not None else [None] * len(shown)
        text[shown] = [_hover_label(c, b) for c, b in zip(cats, bodies, strict=True)]
    win = shown[winners[shown]]
    fr = shown[front[shown] & ~winners[shown]]
    rest = shown[~front[shown] & ~winners[shown]]
    traces = []
    for c, name in enumerate(names):
        rows = rest[codes[rest] == c]
        if len(rows):
            traces.append((_escape_hover(name, 40), "rest", rows, text[rows], palette[c]))
    if len(fr):
        traces.append((FRONT, "front", fr, text[fr], palette[codes[fr]].tolist()))
    if len(win):
        traces.append((WINNERS, "winner", win, text[win], None))
    suffix = f" · showing {len(shown):,} of {n:,}" if len(shown) < n else ""
    if len(win) < int(winners.sum()):
        suffix += f" ({len(win):,} of the {int(winners.sum()):,} winners)"
    return traces, suffix


def _template(refs: Sequence[str], with_text: bool) -> str:
    """The hover template of a marker trace whose ``meta`` is its axes' names, in order."""
    lines = ["row %{customdata}"] + [f"%{{meta[{i}]}}: %{{{r}:.3f}}"
                                     for i, r in enumerate(refs)]
    return "<br>".join(lines + (["%{text}"] if with_text else []))


# A five-pointed star (Vega's symbol shapes have none), in the unit square Vega scales.
STAR_PATH = ("M0,-1L0.2245,-0.309L0.9511,-0.309L0.3633,0.118L0.5878,0.809L0,0.382"
             "L-0.5878,0.809L-0.3633,0.118L-0.9511,-0.309L-0.2245,-0.309Z")
BRUSH = "brush"  # the scatter's box selection, as `scatter_2d` names it


@lru_cache(maxsize=HOVER_CACHE)
def _plain_label(category: str | None, body: str | None) -> str:
    """A point's tooltip text, "category · body", whitespace collapsed and cut to
    ``HOVER_CHARS``. Plain text: Vega's tooltip writes values as text, never as HTML. Cached,
    as a slider step draws mostly the same points."""
    s = " ".join(" · ".join(str(p) for p in (category, body) if p is not None)
                 [: HOVER_CHARS * 4].split())
    return s if len(s) <= HOVER_CHARS else s[: HOVER_CHARS - 1].rstrip() + "…"


class Scatter2D:
    """Candidates on two objectives as a Vega-Lite spec: faint points per ``color`` category,
    ``front`` points as outlined diamonds, a step line through them sorted by x (the 2D front
    only if ``front`` was computed on x and y, ``front_line``), and the winners as red stars.

    Only the winners depend on the weights, and they are a dataset of their own: built once,
    this holds the spec and the other datasets (``base``), and `spec` adds the winners of a
    step, so the spec and the other datasets stay the same while the weights move and
    Streamlit updates the drawn chart's data in place instead of drawing a new chart. For that
    the points drawn never depend on the winners: every front point, then a seeded sample of
    the rest, ``max_points`` in all (more only if the front alone exceeds it); winners beyond
    ``max_winners`` are sampled the same way. Every dataset row carries ``row``, its index into
    ``scores``. ``encode`` (e.g. to Arrow bytes) is applied once to the datasets that stay. A
    box (drag) is the selection named `BRUSH` (`brushed_rows` maps it back to candidates); the
    wheel zooms, shift-drag pans, a double click resets."""

    def __init__(self, scores: np.ndarray, objectives: list[str], x: str, y: str, *,
                 front: np.ndarray, hover: Sequence[str] | None = None,
                 color: Sequence[str] | pd.Categorical | None = None, front_line: bool = True,
                 max_points: int = 4000, max_winners: int = 2000, seed: int = 0,
                 encode: Callable[[pd.DataFrame], Any] | None = None) -> None:
        s = self._s = _check_scores(scores, objectives)
        n = len(s)
        self._cx, self._cy = _columns(objectives, [x, y])
        self._front = front = _mask(front, n, "front")
        self._hover = _per_row(hover, n, "hover")
        self._colored = color is not None
        self._codes, names = _categories(color, n)
        self._names = names
        self._max_winners, self._seed = max_winners, seed
        palette = ([CANDIDATE_COLOR] if color is None else
                   [CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i in range(len(names))])
        shown = _display_rows(n, front, max_points, seed)
        on_front = np.flatnonzero(front)
        line = on_front[np.argsort(s[on_front, self._cx], kind="stable")] if front_line \
            else on_front[:0]
        tx, ty = str(x), str(y)
        tooltip = [{"field": "row", "title": "row"},
                   {"field": "x", "title": tx, "format": ".3f"},
                   {"field": "y", "title": ty, "format": ".3f"},
                   *([{"field": "label", "title": "text"}] if hover is not None
                     or color is not None else [])]
        enc = {"x": {"field": "x", "type": "quantitative", "title": tx,
                     "scale": {"zero": False}},
               "y": {"field": "y", "type": "quantitative", "title": ty,
                     "scale": {"zero": False}}}
        colour = {"field": "source", "type": "nominal", "title": "source",
                  "scale": {"domain": names, "range": palette},
                  **({} if color is not None else {"legend": None})}
        title = f"{ty} vs {tx}" + (f" · showing {len(shown):,} of {n:,}" if len(shown) < n
                                   else "")
        drag = "[pointerdown[{}event.shiftKey], window:pointerup] > window:pointermove!"
        layers = [
            {"data": {"name": "points"}, "transform": [{"filter": "datum.role == 'candidate'"}],
             "params": [
                 {"name": BRUSH, "select": {"type": "interval", "encodings": ["x", "y"],
                                            "on": drag.format("!")}},
                 {"name": "zoom", "bind": "scales",
                  "select": {"type": "interval", "encodings": ["x", "y"], "zoom": "wheel!",
                             "translate": drag.format("")}}],
             "mark": {"type": "circle", "size": 28, "opacity": 0.35},
             "encoding": {**enc, "color": colour, "tooltip": tooltip}},
            {"data": {"name": "front_line"},
             "mark": {"type": "line", "interpolate": "step-before", "color": EDGE_COLOR,
                      "strokeWidth": 1.5, "strokeDash": [4, 3]},
             "encoding": {**enc, "order": {"field": "x", "type": "quantitative"}}},
            {"data": {"name": "points"}, "transform": [{"filter": "datum.role == 'front'"}],
             "mark": {"type": "point", "shape": "diamond", "filled": True, "size": 90,
                      "opacity": 1, "stroke": EDGE_COLOR, "strokeWidth": 1.5},
             "encoding": {**enc, "color": colour, "tooltip": tooltip}},
            {"data": {"name": "winners"},
             "mark": {"type": "point", "shape": STAR_PATH, "filled": True, "size": 200,
                      "opacity": 1, "fill": WINNER_COLOR, "stroke": EDGE_COLOR,
                      "strokeWidth": 1},
             "encoding": {**enc, "tooltip": tooltip}},
        ]
        points = self._table(shown)
        points["role"] = np.where(front[shown], "front", "candidate")
        stay = {"points": points, "front_line": self._table(line)[["row", "x", "y"]]}
        self.base = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json",
                     "title": title, "height": 480, "layer": layers,
                     "datasets": {k: encode(v) if encode else v for k, v in stay.items()}}

    def _table(self, rows: np.ndarray) -> pd.DataFrame:
        s, names = self._s, self._names
        cats = [names[c] for c in self._codes[rows]]
        bodies = self._hover[rows] if self._hover is not None else [None] * len(rows)
        return pd.DataFrame({
            "row": rows, "x": s[rows, self._cx], "y": s[rows, self._cy], "source": cats,
            "label": [_plain_label(c if self._colored else None, b)
                      for c, b in zip(cats, bodies, strict=True)]})

    def spec(self, winners: np.ndarray) -> dict:
        """The chart with these winners (N,) bool; ``base`` is left as it is."""
        win = _mask(winners, len(self._s), "winners")
        rows = _sample(np.flatnonzero(win), self._max_winners, self._seed + 1)
        return {**self.base, "datasets": {**self.base["datasets"], "winners": self._table(rows)}}


def scatter_2d(scores: np.ndarray, objectives: list[str], x: str, y: str, *, front: np.ndarray,
               winners: np.ndarray, **kwargs: Any) -> dict:
    """`Scatter2D` built and drawn once, with ``winners``: the Vega-Lite spec."""
    return Scatter2D(scores, objectives, x, y, front=front, **kwargs).spec(winners)


def _sample(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """At most ``k`` of ``rows``, sorted, by a seeded priority fixed per row index."""
    if len(rows) <= k:
        return rows
    priority = np.random.default_rng(seed).random(int(rows.max()) + 1)[rows]
    return np.sort(rows[np.argpartition(priority, k)[:k]])


def brushed_rows(scores: np.ndarray, objectives: list[str], x: str, y: str,
                 selection: Mapping | None) -> np.ndarray:
    """Sorted rows of every candidate (drawn or not) inside the box of a Streamlit
    ``on_select`` selection of `scatter_2d` on axes ``x`` and ``y``; none without a box."""
    box = ((selection or {}).get(BRUSH) or {})
    if not box or "x" not in box or "y" not in box:
        return np.zeros(0, dtype=int)
    s = _check_scores(scores, objectives)
    cx, cy = _columns(objectives, [x, y])
    (x0, x1), (y0, y1) = sorted(box["x"][:2]), sorted(box["y"][:2])
    inside = (s[:, cx] >= x0) & (s[:, cx] <= x1) & (s[:, cy] >= y0) & (s[:, cy] <= y1)
    return np.flatnonzero(inside)


def scatter_3d(scores: np.ndarray, objectives: list[str], axes: tuple[str, str, str], *,
               front: np.ndarray, winners: np.ndarray, hover: Sequence[str] | None = None,
               color: Sequence[str] | pd.Categorical | None = None, max_points: int = 4000,
               seed: int = 0) -> go.Figure:
    """The layers of `scatter_2d` on three objectives (no front line). Plotly has no box or
    lasso selection in 3D scenes; ``customdata`` still holds each point's row for clicks."""
    s = _check_scores(scores, objectives)
    cols = _columns(objectives, list(axes))
    traces, suffix = _split(s, front, winners, hover, color, max_points, seed)
    template = _template(["x", "y", "z"], hover is not None or color is not None)
    shown = [plotly_text(a) for a in axes]
    fig = go.Figure()
    for name, role, rows, text, colors in traces:
        marker = {**_STYLE_3D[role], **({"color": colors} if colors is not None else {})}
        fig.add_scatter3d(x=s[rows, cols[0]], y=s[rows, cols[1]], z=s[rows, cols[2]],
                          mode="markers", name=name, uid=name, customdata=rows, text=text,
                          marker=marker, meta=shown, hovertemplate=template)
    fig.update_layout(title=f"{' / '.join(shown)}{suffix}", uirevision="3d|" + "|".join(shown),
                      scene=dict(xaxis_title=shown[0], yaxis_title=shown[1],
                                 zaxis_title=shown[2]),
                      legend_itemsizing="constant", **{**LAYOUT, "height": 560})
    return fig


def ternary_map(grid: np.ndarray, values: np.ndarray, corners: tuple[str, str, str], *,
                current: np.ndarray | None = None, value_label: str = "value",
                hover_values: Mapping[str, np.ndarray] | None = None) -> go.Figure:
    """The weight simplex of three objectives: one marker per weight vector of ``grid`` (G, 3)
    (rows sum to 1, column i the weight of ``corners[i]``), coloured by ``values`` (G,), with
    ``current`` (3,) as a star. ``hover_values`` (name -> (G,)) are shown on hover;
    ``customdata`` is (G, 2 + M): grid row, value, then the hover values in order; ``meta`` the
    names the hover shows: the corners, ``value_label``, then the hover values' names."""
    g, v = np.asarray(grid, dtype=float), np.asarray(values, dtype=float)
    if g.ndim != 2 or g.shape[1] != 3 or v.shape != (len(g),) or len(corners) != 3:
        raise ValueError(f"need grid (G, 3), values (G,) and 3 corners; got grid {g.shape}, "
                         f"values {v.shape}, {len(corners)} corners")
    if (g < -1e-9).any() or not np.allclose(g.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("grid rows must be non-negative weights that sum to 1")
    extra = {k: np.asarray(a, dtype=float) for k, a in (hover_values or {}).items()}
    bad = [k for k, a in extra.items() if a.shape != (len(g),)]
    if bad:
        raise ValueError(f"hover_values {bad} must each have shape ({len(g)},)")
    custom = np.column_stack([np.arange(len(g)), v, *extra.values()])  # (G, 2 + M)
    names = [_escape_hover(c) for c in corners]
    label = plotly_text(value_label)
    meta = [*names, label, *(_escape_hover(k) for k in extra)]
    weights = ", ".join(f"%{{meta[{i}]}} %{{{r}:.2f}}" for i, r in enumerate("abc"))
    template = "<br>".join([weights, "%{meta[3]}: %{customdata[1]:.3f}"]
                           + [f"%{{meta[{i + 4}]}}: %{{customdata[{i + 2}]:.3f}}"
                              for i in range(len(extra))]) + "<extra></extra>"
    size = float(np.clip(140 / np.sqrt(max(len(g), 1)), 4, 14))  # denser grids, smaller marks
    fig = go.Figure(go.Scatterternary(
        a=g[:, 0], b=g[:, 1], c=g[:, 2], mode="markers", name=label, customdata=custom,
        meta=meta, hovertemplate=template,
        marker=dict(color=v, colorscale="Viridis", size=size, symbol="hexagon",
                    colorbar=dict(title=label))))
    if current is not None:
        w = np.asarray(current, dtype=float).reshape(3)
        fig.add_scatterternary(a=[w[0]], b=[w[1]], c=[w[2]], mode="markers", name=CURRENT,
                               meta=meta, hovertemplate=CURRENT + ": " + weights
                               + "<extra></extra>",
                               marker=dict(symbol="star", size=22, color=WINNER_COLOR,
                                           line=dict(color=EDGE_COLOR, width=1.5)))
    axis = [dict(title=dict(text=plotly_text(c)), min=0, ticks="outside") for c in corners]
    fig.update_layout(title=f"{label} over the weights", showlegend=False,
                      ternary=dict(sum=1, aaxis=axis[0], baxis=axis[1], caxis=axis[2]),
                      **{**LAYOUT, "height": 460, "margin": dict(t=60, b=40, l=50, r=50)})
    return fig


def parallel_coordinates(scores: np.ndarray, objectives: list[str], *,
                         highlight: np.ndarray | None = None, max_points: int = 3000,
                         seed: int = 0) -> go.Figure:
    """One line per candidate across the objectives' axes, ``highlight`` (N,) rows (e.g. the
    winners) in red and drawn last, on top. Axis ranges span all N rows, not just those shown."""
    s = _check_scores(scores, objectives)
    hl = _mask(highlight, len(s), "highlight")
    shown = _display_rows(len(s), hl, max_points, seed)
    shown = np.concatenate([shown[~hl[shown]], shown[hl[shown]]])
    low, high = (s.min(axis=0), s.max(axis=0)) if len(s) else (np.zeros(len(objectives)),) * 2
    dims = [dict(label=plotly_text(o), values=s[shown, k], range=[low[k], high[k]])
            for k, o in enumerate(objectives)]
    line = dict(color=hl[shown].astype(int), colorscale=[[0, OTHERS_COLOR], [1, WINNER_COLOR]],
                cmin=0, cmax=1, showscale=False)
    title = "Candidates across objectives" + (f" (red: {int(hl.sum()):,} highlighted)"
                                              if hl.any() else "")
    if len(shown) < len(s):
        title += f" · showing {len(shown):,} of {len(s):,}"
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line))
    fig.update_layout(title=title, **{**LAYOUT, "margin": dict(t=70, b=30, l=50, r=50)})
    return fig


def _mean_std(a: np.ndarray) -> str:
    return f"{a.mean():.2f} ± {a.std():.2f}" if len(a) else "–"


def score_distributions(scores: np.ndarray, objectives: list[str], *,
                        winners: np.ndarray | None = None, bins: int = 40) -> go.Figure:
    """Per objective (one subplot each, own x axis): the share of candidates per score bin, the
    winners' share over it on the same bins, and mean ± std of both in the subplot title.
    Bins are counted here, so the figure carries 2 * K * bins numbers, not N scores."""
    s = _check_scores(scores, objectives)
    w = _mask(winners, len(s), "winners") if winners is not None else None
    titles = [f"{plotly_text(o)}: {_mean_std(s[:, k])}" + (f"<br>winners {_mean_std(s[w, k])}"
                                               if w is not None else "")
              for k, o in enumerate(objectives)]
    fig = make_subplots(rows=1, cols=len(objectives), subplot_titles=titles,
                        horizontal_spacing=0.06)
    for k in range(len(objectives)):
        edges = np.histogram_bin_edges(s[:, k], bins=bins)  # (bins + 1,)
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        groups = [("all candidates", np.ones(len(s), dtype=bool), OTHERS_COLOR, 1.0)]
        if w is not None and w.any():
            groups.append(("winners", w, WINNER_COLOR, 0.65))
        for name, rows, color, opacity in groups:
            counts = np.histogram(s[rows, k], bins=edges)[0] / max(int(rows.sum()), 1)
            fig.add_bar(x=centres, y=counts, width=width, name=name, legendgroup=name,
                        showlegend=k == 0, marker_color=color, opacity=opacity,
                        hovertemplate=f"{name}: %{{y:.1%}} at %{{x:.2f}}<extra></extra>",
                        row=1, col=k + 1)
    fig.update_yaxes(tickformat=".0%")
    fig.update_yaxes(title_text="share", row=1, col=1)
    fig.update_layout(barmode="overlay", bargap=0,
                      **{**LAYOUT, "margin": dict(t=70, b=30, l=50, r=10)})
    return fig


def winner_shift_bar(before: np.ndarray, after: np.ndarray, objectives: list[str]) -> go.Figure:
    """Mean score of the winners per objective under the previous weights (faint) and the
    current ones, labelled with the change; ``before`` may be NaN where there is none."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != (len(objectives),) or a.shape != b.shape:
        raise ValueError(f"before and after must have shape ({len(objectives)},), "
                         f"got {b.shape} and {a.shape}")
    colors = [objective_color(o, objectives) for o in objectives]
    shown = [plotly_text(o) for o in objectives]
    fig = go.Figure()
    fig.add_bar(x=shown, y=b, name="previous weights", marker_color=colors, marker_opacity=0.4)
    fig.add_bar(x=shown, y=a, name=CURRENT, marker_color=colors, textposition="outside",
                text=[f"{d:+.2f}" if np.isfinite(d) else "" for d in a - b], cliponaxis=False)
    fig.update_layout(title="Winners' mean score: previous vs current weights", barmode="group",
                      **{**LAYOUT, "height": 260})
    return fig
