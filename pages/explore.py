"""Explore: score candidate responses with a reward model, see their Pareto fronts, and move the
scalarization weights: the best-of-N winners, the weight map and the tables follow at once.

Scores are computed once per (reward model, candidate set) and cached; a slider move is numpy
over those scores (morm_explorer.explore), never a model call."""

import time

import numpy as np
import streamlit as st

from morm_explorer.data.candidates import (
    candidate_set_info,
    list_candidate_sets,
    load_candidate_set,
)
from morm_explorer.demo import DEMO_DATASET
from morm_explorer.errors import MormError
from morm_explorer.explore import Choice, Explorer, Selection
from morm_explorer.objectives import Constraint
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.jobs import TrainRewardModelJob
from morm_explorer.reward.report import list_reward_models
from morm_explorer.scoring import (
    ScoreCandidatesJob,
    model_fingerprint,
    read_cached_scores,
    score_candidate_set,
)
from morm_explorer.ui import explore_figures as ef
from morm_explorer.ui.text import plain
from morm_explorer.weight_presets import (
    WeightPreset,
    builtin_presets,
    list_presets,
    save_preset,
)
from pages.common import follow_page_job, job_page, presenting, queue_note, show_trust
from pages.explore_sets import import_tab, sample_tab

INLINE_SCORING = 1000  # candidates scored in the page; larger sets run as a job
# Points drawn on the 2D scatter, and at most as many winners; a slider step only replaces its
# winners' data (ef.Scatter2D), but the 3D view is redrawn from scratch.
SCATTER_POINTS = 2000
SCALARIZER_NAMES = {"weighted_sum": "Weighted sum", "chebyshev": "Chebyshev (reaches "
                    "non-convex fronts)", "min": "Worst objective (max-min)"}
ws, backend = job_page(
    "Explore",
    "Score N candidate responses per prompt with a multi-objective reward model, then "
    "move the weights: each prompt's best-of-N winner, the Pareto fronts and the "
    "trade-off map update at once.")


# -- jobs launched from this page ------------------------------------------------------------
def job_status(job_id: str) -> None:
    """A launched job's progress, polled from the job store; reruns the page when it ends."""
    info = backend.get(job_id)
    what = {"train_reward_model": "Training the reward model",
            "sample_candidates": "Sampling candidates",
            "score_candidates": "Scoring candidates"}.get(info.kind, info.kind)
    if info.done:
        st.session_state.pop("explore_job", None)
        if info.status == "succeeded":
            st.toast(f"{what}: done")
        else:
            st.session_state["explore_job_error"] = (f"{what} {info.status}: "
                                                     f"{plain(info.error or '')}")
        st.rerun(scope="app")
    st.progress(info.progress, text=f"{what} ({info.status}) {plain(info.message)}")
    if note := queue_note(backend, info):
        st.caption(note)
    if st.button("Cancel", key="explore_cancel", icon=":material/stop:"):
        backend.cancel(job_id)
    lines = backend.logs(job_id)
    if lines:
        st.code("\n".join(lines[-4:]), language=None, wrap_lines=True)


def launch(spec) -> None:
    st.session_state["explore_job"] = backend.submit(spec)


if "explore_job_error" in st.session_state:
    st.error(st.session_state.pop("explore_job_error"))
if follow_page_job(backend, "explore_job"):  # launched in this tab, or from Explore elsewhere
    st.fragment(job_status, run_every=1.5)(st.session_state["explore_job"])

# -- choose a reward model and a candidate set ------------------------------------------------
models = sorted(list_reward_models(ws), key=lambda m: -m["created_at"])
sets = {c.name: c for c in list_candidate_sets(ws)}
if not models:
    st.info("No reward model yet. Train one on **Reward models**, or train the demo model "
            "here: a frozen MiniLM backbone with one head per objective on the built-in "
            "preference data (about 30 s on a CPU).")
    if not presenting() and st.button(
            "Train the demo reward model", type="primary", icon=":material/play_arrow:",
            disabled=bool(st.session_state.get("explore_job")), key="explore_train_demo"):
        cfg = TrainConfig(dataset=DEMO_DATASET, name="demo-rm")
        launch(TrainRewardModelJob(config=cfg.to_dict(), overwrite=True))
        st.rerun()
    st.stop()
if not sets:
    st.info("No candidate set yet: import or sample one below.")

if st.session_state.get("explore_set_next") in sets:  # a set just imported or sampled
    st.session_state["explore_set"] = st.session_state.pop("explore_set_next")
c1, c2 = st.columns(2)
model_names = [m["name"] for m in models]
model_name = c1.selectbox("Reward model", model_names, key="explore_model",
                          help="Trained on the Reward models page or with `morm rm train`.")
set_name = c2.selectbox("Candidate set", list(sets), key="explore_set",
                        format_func=lambda n: f"{n} ({sets[n].n_candidates:,} candidates, "
                                              f"{sets[n].n_prompts:,} prompts)")


if not presenting():
    # Drawn only while open: every element on the page is redrawn when a slider step starts,
    # and the import and sampling forms are a quarter of them.
    add = st.expander("Add a candidate set", expanded=not sets, key="explore_add_set",
                      on_change="rerun")
    if add.open:
        with add:
            t1, t2 = st.tabs(["Import a file", "Sample from a policy"])
            with t1:
                import_tab(ws)
            with t2:
                sample_tab(ws, launch)
if not set_name:
    st.stop()


# -- scores: cached on disk per (model, set); prepared once per server ------------------------
@st.cache_resource(max_entries=6, show_spinner="Preparing scores and Pareto fronts ...")
def explorer_for(model: str, model_fp: str, cset: str, cset_fp: str) -> Explorer:
    """Raises when the set is not scored yet (an exception is never cached)."""
    scores = read_cached_scores(ws, model, load_candidate_set(ws, cset))
    if scores is None:
        raise LookupError("not scored")
    return Explorer(scores)


try:
    info = candidate_set_info(ws, set_name)
    model_fp = model_fingerprint(next(m["path"] for m in models if m["name"] == model_name))
    explorer = explorer_for(model_name, model_fp, set_name, info.fingerprint)
except MormError as e:
    st.error(plain(e))
    st.stop()
except LookupError:
    if info.n_candidates <= INLINE_SCORING:
        bar = st.progress(0.0, text=f"Scoring {info.n_candidates:,} candidates with "
                                    f"{plain(model_name)} ...")
        t0 = time.perf_counter()
        try:
            score_candidate_set(ws, model_name, set_name, progress=lambda d, t: bar.progress(
                d / max(t, 1), text=f"Scoring: {d:,} of {t:,} texts"))
        except MormError as e:
            st.error(plain(e))
            st.stop()
        st.session_state["explore_scored_in"] = time.perf_counter() - t0
        st.rerun()
    st.info(f"{info.n_candidates:,} candidates are not scored with {plain(model_name)} yet; "
            "that runs as a job (scores are cached, so only once).")
    if st.button("Score as a job", type="primary",
                 disabled=bool(st.session_state.get("explore_job"))):
        launch(ScoreCandidatesJob(model=model_name, candidates=set_name))
        st.rerun()
    st.stop()

objectives = explorer.objectives
K = len(objectives)
if "explore_scored_in" in st.session_state:
    st.toast(f"Scored in {st.session_state.pop('explore_scored_in'):.1f} s; cached from now on.")
show_trust(explorer.trust)  # far from the training texts? heads following length?


# -- controls (sidebar) -------------------------------------------------------------------------
def wkey(obj: str) -> str:
    return f"explore_w_{obj}"


def apply_preset() -> None:
    presets = st.session_state["explore_presets"]
    p = presets.get(st.session_state.get("explore_preset"))
    if p is None:
        return
    total = sum(p.weights.get(o, 0.0) for o in objectives) or 1.0
    for o in objectives:
        st.session_state[wkey(o)] = round(p.weights.get(o, 0.0) / total, 2)
    st.session_state["explore_method"] = p.scalarizer
    st.session_state["explore_std"] = p.standardized and explorer.can_standardize
    st.session_state["explore_constrained"] = [c["objective"] for c in p.constraints
                                               if c["objective"] in objectives]
    for c in p.constraints:
        st.session_state[f"explore_tau_{c['objective']}"] = float(c["threshold"])


# Widget values are dropped when the user opens another page; a plain key keeps the weights
# for the next visit and for Fine-tune, which starts from them.
for o in objectives:
    st.session_state.setdefault(wkey(o), (st.session_state.get("explore_weights") or {}).get(
        o, round(1.0 / K, 2)))
with st.sidebar:
    st.subheader("Scalarization")
    presets = {p.name: p for p in builtin_presets(objectives)}
    presets.update({p.name: p for p in list_presets(ws) if set(p.weights) <= set(objectives)})
    st.session_state["explore_presets"] = presets
    pc1, pc2 = st.columns([3, 2], vertical_alignment="bottom")
    pc1.selectbox("Preset", list(presets), key="explore_preset")
    pc2.button("Apply", on_click=apply_preset, key="explore_apply", width="stretch")


def read_choice() -> Choice:
    """The sidebar's weights, scalarizer and constraints, as one `Choice`, read from the
    widgets' state before they are drawn (`draw_controls`), so a step's winners reach the
    browser ahead of the sidebar. Defaults go into the state, never through ``value=``."""
    saved = st.session_state.get("explore_weights") or {}
    weights = {o: float(st.session_state[wkey(o)]) for o in objectives}
    st.session_state["explore_weights"] = {**saved, **weights}
    st.session_state.setdefault("explore_simplex", True)
    st.session_state.setdefault("explore_method", next(iter(SCALARIZER_NAMES)))
    st.session_state.setdefault("explore_std", explorer.can_standardize)
    st.session_state.setdefault("explore_constrained", [])
    standardized = st.session_state["explore_std"]
    constraints = []
    for o in st.session_state["explore_constrained"]:
        if o in objectives:
            k = objectives.index(o)
            values = explorer.values(standardized and explorer.can_standardize)
            default = float(np.round(np.quantile(values[:, k], 0.25), 2))
            tau = st.session_state.setdefault(f"explore_tau_{o}", default)
            constraints.append(Constraint(o, float(tau)))
    return Choice.of(weights, st.session_state["explore_method"], standardized, constraints,
                     st.session_state["explore_simplex"])


def draw_controls(choice: Choice) -> None:
    """The widgets `read_choice` read, in the sidebar."""
    for o in objectives:
        st.slider(plain(o), 0.0, 1.0, step=0.05, key=wkey(o))
    st.toggle("Normalize weights to sum 1", key="explore_simplex")
    st.radio("Scalarizer", list(SCALARIZER_NAMES), key="explore_method",
             format_func=SCALARIZER_NAMES.get)
    st.toggle("Standardize scores (model's mean and std)", key="explore_std",
              disabled=not explorer.can_standardize,
              help="Objectives' raw scores have different scales; z-scores make a weight "
                   "mean what it says.")
    st.multiselect("Constraints: objective ≥ threshold", objectives, key="explore_constrained")
    for c in choice.constraints:
        st.number_input(f"{plain(c.objective)} ≥", step=0.1, key=f"explore_tau_{c.objective}",
                        help="in z-score units" if choice.standardized else "in raw score units")
    with st.popover("Save as preset", icon=":material/bookmark_add:",
                    disabled=presenting()):
        pname = st.text_input("Preset name", key="explore_preset_name")
        if st.button("Save", key="explore_preset_save", disabled=not pname):
            try:
                preset = save_preset(ws, WeightPreset(
                    pname, dict(choice.weights), choice.method, bool(choice.standardized),
                    [{"objective": c.objective, "threshold": c.threshold}
                     for c in choice.constraints]))
            except MormError as e:
                st.error(plain(e))
            else:
                st.toast(f"Saved preset {plain(preset.name)}.")
                st.rerun()  # the whole page, so the preset list shows it


def previous(sel: Selection) -> Selection | None:
    """The selection before this one (for "changed since the last weights"), kept per
    (model, set)."""
    hist = st.session_state.setdefault("explore_hist", {})
    key = (model_name, model_fp, set_name, info.fingerprint)
    entry = hist.get(key)
    if entry is None or len(entry["sel"].winners) != len(sel.winners):
        entry = hist[key] = {"sel": sel, "prev": None}
    elif entry["sel"].choice != sel.choice:
        entry = hist[key] = {"sel": sel, "prev": entry["sel"]}
    return entry["prev"]


# -- headline numbers ---------------------------------------------------------------------------
def headline(sel: Selection, prev: Selection | None) -> None:
    means = explorer.raw[sel.winners].mean(0)
    before = explorer.raw[prev.winners].mean(0) if prev is not None else None
    changed = int((prev.winners != sel.winners).sum()) if prev is not None else 0
    cols = st.columns(K + 2)
    cols[0].metric("Prompts", f"{len(sel.winners):,}",
                   help=f"{len(explorer):,} candidates, about "
                        f"{len(explorer) / len(sel.winners):.1f} per prompt")
    cols[1].metric("Winners changed", changed if prev is not None else "–",
                   help="Prompts whose best-of-N winner differs from the one under the "
                        "previous weights.")
    for i, o in enumerate(objectives):
        cols[i + 2].metric(f"{plain(o)} (winners' mean)", f"{means[i]:.3f}",
                           delta=None if before is None else f"{means[i] - before[i]:+.3f}")
    if sel.choice.constraints and not sel.feasible.all():
        st.warning(f"{int((~sel.feasible).sum())} prompts have no candidate meeting the "
                   "constraints: their winner is the least-violating candidate (marked "
                   "feasible = false in the table).")


# -- figures: only the open tab's is built ---------------------------------------------------------
def scatter(sel: Selection) -> None:
    """The scatter of two (or three) objectives; points selected on the 2D view filter the
    winners table (`scatter_selection`)."""
    a, b, c, d = st.columns(4)
    x = a.selectbox("x", objectives, index=0, key="explore_x")
    y = b.selectbox("y", objectives, index=min(1, K - 1), key="explore_y")
    scope = c.radio("Front over", ["the two axes", "all objectives"], horizontal=True,
                    key="explore_front_scope")
    three_d = d.toggle("3D view", value=False, key="explore_3d", disabled=K < 3)
    front = explorer.front_of((x, y)) if scope == "the two axes" else explorer.front
    if three_d and K >= 3:
        z = d.selectbox("z", objectives, index=2, key="explore_z")
        fig = ef.scatter_3d(explorer.raw, objectives, (x, y, z), front=front,
                            winners=sel.is_winner, hover=explorer.labels,
                            color=explorer.sources, max_points=SCATTER_POINTS)
        st.plotly_chart(fig, key="explore_scatter3d")
        st.caption("Select points on the 2D view to filter the table.")
    else:
        chart = scatter_chart(model_name, model_fp, set_name, info.fingerprint, x, y,
                              scope == "all objectives")
        # Keyed by its axes: a box drawn on other axes selects nothing here.
        st.vega_lite_chart(chart.spec(sel.is_winner), key=scatter_key(x, y),
                           on_select="rerun", selection_mode=[ef.BRUSH])
    st.caption(f"{int(front.sum()):,} candidates on the front over {scope} (diamonds); "
               f"{int(explorer.front_in_prompt.sum()):,} are on their own prompt's front. "
               "Winners are the red stars. Drag a box to filter the table; the wheel zooms, "
               "shift-drag pans, a double click resets.")


@st.cache_resource(max_entries=12, show_spinner=False)
def scatter_chart(model: str, model_fp: str, cset: str, cset_fp: str, x: str, y: str,
                  whole_front: bool) -> ef.Scatter2D:
    """The 2D scatter without its winners, built once per (scores, axes, front): its points
    and front line, already in Arrow, are what a slider step sends again unchanged."""
    from streamlit.dataframe_util import convert_pandas_df_to_arrow_bytes

    ex = explorer_for(model, model_fp, cset, cset_fp)
    return ef.Scatter2D(ex.raw, ex.objectives, x, y,
                        front=ex.front if whole_front else ex.front_of((x, y)),
                        hover=ex.labels, color=ex.sources, max_points=SCATTER_POINTS,
                        max_winners=SCATTER_POINTS, encode=convert_pandas_df_to_arrow_bytes)


def scatter_key(x: str, y: str) -> str:
    return f"explore_scatter|{x}|{y}"


def scatter_selection() -> np.ndarray:
    """The candidates inside the box drawn on the 2D scatter, read before it is drawn (it is
    drawn after the table, see `weights_and_winners`); none while the scatter is not shown."""
    x, y = st.session_state.get("explore_x"), st.session_state.get("explore_y")
    state = st.session_state.get(scatter_key(x, y)) if x in objectives and y in objectives \
        else None
    return ef.brushed_rows(explorer.raw, objectives, x, y, state.get("selection")
                           if state else None)


def weight_map(sel: Selection) -> None:
    """Winners' means over a grid of weights (cached per scalarizer and constraints: a step
    of the sliders only moves the star)."""
    a, b, c = st.columns([2, 1, 1])
    corners = a.multiselect("Corners (three objectives)", objectives, default=objectives[:3],
                            max_selections=3, key="explore_corners")
    color_by = b.selectbox("Colour by the winners' mean", objectives, key="explore_color")
    steps = c.slider("Grid steps", 4, 20, 10, key="explore_steps")
    if len(corners) != 3:
        st.info("Choose three objectives for the corners.")
        return
    grid, grid_means = explorer.simplex_map(sel.choice, corners, steps)
    idx = [objectives.index(o) for o in corners]
    cw = sel.weights[idx]
    current = cw / cw.sum() if cw.sum() > 0 else None
    st.plotly_chart(ef.ternary_map(
        grid, grid_means[:, objectives.index(color_by)], tuple(corners), current=current,
        value_label=f"mean {color_by}",
        hover_values={o: grid_means[:, k] for k, o in enumerate(objectives)}),
        key="explore_ternary")
    st.caption(f"Each dot is a weight vector over {plain(', '.join(corners))} "
               + ("(other objectives keep their weight) " if K > 3 else "")
               + f"and shows the mean {plain(color_by)} of the best-of-N winners it would "
               "select; the star is where the sliders are.")


def figures(sel: Selection, prev: Selection | None) -> None:
    """The figure tabs; only the open one is drawn."""
    tab_scatter, tab_map, tab_par, tab_dist = st.tabs(
        ["Scatter and fronts", "Weight map", "Parallel coordinates", "Score distributions"],
        key="explore_tab", on_change="rerun")
    if tab_scatter.open:
        with tab_scatter:
            scatter(sel)
    with tab_map:
        if K < 3:
            st.info("The weight map needs a model with at least three objectives.")
        elif tab_map.open:
            weight_map(sel)
    if tab_par.open:
        tab_par.plotly_chart(ef.parallel_coordinates(explorer.raw, objectives,
                                                     highlight=sel.is_winner),
                             key="explore_parcoords")
    if tab_dist.open:
        with tab_dist:
            st.plotly_chart(ef.score_distributions(explorer.raw, objectives,
                                                   winners=sel.is_winner), key="explore_dist")
            if prev is not None:
                st.plotly_chart(ef.winner_shift_bar(explorer.raw[prev.winners].mean(0),
                                                    explorer.raw[sel.winners].mean(0),
                                                    objectives), key="explore_shift")
            st.dataframe(explorer.distribution_stats().round(3), width="stretch")


# -- winners table and drill-down ------------------------------------------------------------------
def winners(sel: Selection, prev: Selection | None, selected: np.ndarray) -> None:
    frame = explorer.frame
    st.subheader("Winners per prompt")
    table = explorer.winners_table(sel, prev)
    filters = st.container()  # drawn after the table, which a step's browser update leads with
    only_changed = bool(st.session_state.get("explore_only_changed")) and prev is not None
    picked = set(frame["prompt_id"].to_numpy()[selected]) if len(selected) else None
    if picked is not None:
        table = table[table["prompt_id"].isin(picked)]
    if only_changed:
        table = table[table["changed"]]
    shown = table.assign(changed=np.where(table["changed"], "✱", ""))[
        ["changed", "prompt_id", "source", *objectives, "utility", "prompt", "response",
         "feasible", "category", "n"]]
    event = st.dataframe(
        shown, hide_index=True, width="stretch", key="explore_table", on_select="rerun",
        selection_mode="single-row",
        column_config={"changed": st.column_config.TextColumn("", width=30,
                                                              help="winner changed"),
                       # Every width given: the grid need not measure cells on each step.
                       "prompt_id": st.column_config.TextColumn(width="small"),
                       "prompt": st.column_config.TextColumn(width="medium"),
                       "response": st.column_config.TextColumn(width="large"),
                       "source": st.column_config.TextColumn(width="medium"),
                       **{o: st.column_config.NumberColumn(format="%.3f", width="small")
                          for o in objectives},
                       "utility": st.column_config.NumberColumn(format="%.3f", width="small"),
                       "feasible": st.column_config.CheckboxColumn(width="small"),
                       "category": st.column_config.TextColumn(width="small"),
                       "n": st.column_config.NumberColumn("N", width=40,
                                                          help="candidates of the prompt")})
    f1, f2 = filters.columns(2)
    f1.toggle("Only prompts whose winner changed", key="explore_only_changed",
              disabled=prev is None)
    if picked is not None:
        f2.caption(f"Filtered to the {len(picked):,} prompts of the {len(selected):,} "
                   "candidates in the box on the scatter (double-click it to clear).")
    rows = event.selection.rows if event else []
    if rows:
        st.session_state["explore_prompt"] = shown.iloc[rows[0]]["prompt_id"]


def one_prompt(sel: Selection) -> None:
    frame = explorer.frame
    prompt_ids = list(explorer.prompt_ids)
    if st.session_state.get("explore_prompt") not in prompt_ids:
        st.session_state["explore_prompt"] = prompt_ids[0]
    st.subheader("One prompt, all its candidates")
    pid = st.selectbox("Prompt", prompt_ids, key="explore_prompt",
                       help="Or click a row of the table above.")
    detail = explorer.prompt_detail(pid, sel)
    st.text(frame["prompt"].iat[int(detail["candidate"].iat[0])])
    st.dataframe(detail, hide_index=True, width="stretch", key="explore_detail",
                 column_config={**{o: st.column_config.NumberColumn(format="%.3f")
                                   for o in objectives},
                                "utility": st.column_config.NumberColumn(format="%.3f"),
                                "dominated_by": st.column_config.TextColumn(
                                    "dominated by", help="candidates of this prompt at least "
                                    "as good on every objective and better on one")})
    # Keyed per set, and labelled by what never changes within it: the browser keeps a keyed
    # selectbox's label text while the same value stays valid, so labels from another set (or
    # a winner mark from other weights) would stay on screen. Whether it wins is said beside it.
    cand = st.selectbox("Read a candidate in full", detail["candidate"].tolist(),
                        key=f"explore_read_{set_name}_{info.fingerprint}",
                        format_func=lambda i: f"#{i} · {frame['source'].iat[i]}")
    st.caption(f"#{cand} · source {plain(frame['source'].iat[cand])} · "
               + ("the winner of its prompt under these weights" if sel.is_winner[cand]
                  else "not its prompt's winner under these weights"))
    with st.container(border=True):
        st.text(frame["response"].iat[cand])


# -- what follows the weights: reruns alone when they move -----------------------------------------
@st.fragment
def weights_and_winners() -> None:
    """A slider step (or any control below the preset) reruns this alone, not the page: the
    scores, fronts and weight maps it reads are prepared once per (model, set)."""
    choice = read_choice()
    try:
        sel = explorer.select(choice)
    except MormError as e:
        with st.sidebar:
            draw_controls(choice)
        st.warning(f"{plain(e)}. Move at least one weight slider above 0.")
        return
    prev = previous(sel)
    # What a step changes reaches the browser first: the winners table (the browser applies
    # each element of a run as it comes, so fewer go first), then the headline, the sidebar's
    # widgets (drawn after their values were read), the prompt's detail, and the figures,
    # which take longest to build, each into its place.
    headline_slot, figure_slot = st.container(), st.container()
    winners(sel, prev, scatter_selection())
    with headline_slot:
        headline(sel, prev)
    with st.sidebar:
        draw_controls(choice)
        st.caption("Weights used: " + ", ".join(f"{plain(o)} {w:.2f}" for o, w in
                                                zip(objectives, sel.weights, strict=True)))
    one_prompt(sel)
    with figure_slot:
        figures(sel, prev)


weights_and_winners()
