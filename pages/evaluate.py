"""Evaluate: blind rating sessions, the owner's view. Create a session, hand raters its link
(which opens the rating view alone, pages/rate.py), rate here too, read the results (win rates
with intervals, agreement between raters and with the reward model) and export the votes as
preference pairs to retrain on. Raters learn which policies wrote A and B only in a session
made to reveal them after each vote."""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from morm_explorer.data.candidates import list_candidate_sets
from morm_explorer.errors import MormError
from morm_explorer.evaluation.agreement import results
from morm_explorer.evaluation.exports import (
    to_csv,
    to_dataset,
    to_llm_comparator,
    write_pairs_jsonl,
)
from morm_explorer.evaluation.session_report import session_report
from morm_explorer.evaluation.sessions import (
    close_session,
    create_session,
    list_sessions,
    progress_shown,
)
from morm_explorer.reward.report import list_reward_models
from morm_explorer.ui.text import plain
from morm_explorer.workspace import sanitize_name
from pages.common import presenting, workspace
from pages.rating import rater_panel

ws = workspace()
st.title("Evaluate")
st.caption("Blind A/B rating sessions per objective. Policy names stay hidden from raters "
           "unless a session is made to reveal them after each vote; every vote is saved the "
           "moment it is cast, so a closed tab loses nothing.")

models = sorted(list_reward_models(ws), key=lambda m: -m["created_at"])
sessions = {s.name: s for s in list_sessions(ws)}

# -- new session ------------------------------------------------------------------------------
if not presenting():
    with st.expander("New rating session", expanded=not sessions):
        sets = {c.name: c for c in list_candidate_sets(ws) if len(c.sources) >= 2}
        if not sets:
            st.info("A session needs a candidate set with responses from two or more sources "
                    "(policies): run a comparison, or import one.")
        else:
            c1, c2 = st.columns(2)
            cset = c1.selectbox("Candidate set", list(sets), key="eval_new_set")
            policies = c2.multiselect("Policies to pair (2 or more)", sets[cset].sources,
                                      default=sets[cset].sources[:2], key="eval_new_pols")
            default_objs = models[0]["objectives"] if models else ["helpful", "harmless"]
            objectives = st.multiselect("Objectives to rate",
                                        sorted({*default_objs, "helpful", "harmless", "honest"}),
                                        default=default_objs, key="eval_new_objs")
            c1, c2, c3, c4 = st.columns(4)
            name = c1.text_input("Session name", key="eval_new_name")
            raters = c2.text_input("Raters (comma-separated; empty: anyone)",
                                   key="eval_new_raters")
            limit = c3.number_input("Prompts (0: all)", 0, 10_000, 20, key="eval_new_limit")
            seed = c4.number_input("Seed", 0, 2**31 - 1, 0, key="eval_new_seed")
            reveal_after_vote = st.checkbox(
                "Show raters the policies behind A and B after each vote",
                key="eval_new_reveal", help="Off: raters never learn which policy wrote what, "
                "so their later votes cannot follow a policy's name.")
            if st.button("Create session", type="primary", key="eval_create",
                         disabled=not name or len(policies) < 2 or not objectives):
                try:
                    info = create_session(
                        ws, name, cset, objectives=objectives, policies=policies,
                        raters=[r.strip() for r in raters.split(",") if r.strip()],
                        limit_prompts=int(limit), seed=int(seed),
                        reveal_after_vote=reveal_after_vote)
                except MormError as e:
                    st.error(plain(e))
                else:
                    st.session_state["eval_session_next"] = info.name
                    st.rerun()
if not sessions:
    st.info("No rating session yet." + ("" if presenting() else " Create one above."))
    st.stop()
if st.session_state.get("eval_session_next") in sessions:
    st.session_state["eval_session"] = st.session_state.pop("eval_session_next")
if st.session_state.get("eval_session") not in sessions:
    st.session_state["eval_session"] = next(reversed(sessions))
name = st.selectbox("Session", list(sessions), key="eval_session", format_func=lambda s: (
    f"{s} · {sessions[s].n_items} pairs · {sessions[s].status}"))
info = sessions[name]
rate_tab, results_tab, export_tab = st.tabs(["Rate", "Results", "Export"])


with rate_tab:
    st.caption("Rate here. Once a name is entered, the link below opens this form alone, "
               "without results, exports or any other page: send it to a rater with their own "
               "name in it.")
    rater_panel(ws, info)

with results_tab:
    st.dataframe(progress_shown(ws, name), hide_index=True, width="stretch",
                 key="eval_progress")
    rm = st.selectbox("Compare raters with the reward model", ["(none)"] +
                      [m["name"] for m in models], key="eval_rm")
    try:
        res = results(ws, name, reward_model=None if rm == "(none)" else rm)
    except MormError as e:
        st.warning(plain(e))
        res = {}
    labels = {"win_rates": "Win rates per objective (ties count half; Wilson 95% intervals)",
              "agreement": "Agreement between raters (Fleiss' kappa, Krippendorff's alpha; "
                           "Cohen's kappa for two raters)",
              "position": "Position bias: how often the response shown as A wins",
              "reward_model": "Raters vs the reward model: share of decided votes where the "
                              "model's score difference points the same way"}
    for key, label in labels.items():
        table = res.get(key)
        if isinstance(table, pd.DataFrame) and not table.empty:
            st.markdown(f"**{label}**")
            st.dataframe(table.round(3), hide_index=True, width="stretch",
                         key=f"eval_res_{key}")
    if not presenting() and info.status == "open" and st.button("Close the session",
                                                                 key="eval_close"):
        close_session(ws, name)
        st.rerun()

def save_dataset(col) -> None:
    """Save the votes as a workspace dataset; an existing dataset of that name is replaced
    only when the checkbox naming it is ticked."""
    dname = col.text_input("Dataset name", f"{name}-votes", key="eval_ds_name",
                           label_visibility="collapsed")
    try:
        target = sanitize_name(dname)
    except MormError:
        target = None  # to_dataset says what is wrong with the name
    existing = {d.name: d for d in ws.list_datasets()}
    replace = target in existing and col.checkbox(
        f"Replace the existing dataset {plain(target)} ({existing[target].n_records:,} "
        "records)", key=f"eval_ds_replace_{target}")
    if col.button("Save as a dataset", key="eval_to_dataset"):
        try:
            ds = to_dataset(ws, name, dname, overwrite=replace)
        except MormError as e:
            st.error(plain(e))
        else:
            st.success(f"Saved dataset {plain(ds.name)} ({ds.n_records} pairs): pick it on "
                       "Reward models to retrain.")


with export_tab:
    st.caption("Votes as per-objective preference pairs in the project's format (retrain the "
               "reward model on them), as CSV, or as LLM Comparator JSON.")
    formats = {"pairs.jsonl": write_pairs_jsonl, "votes.csv": to_csv,
               "llm_comparator.json": to_llm_comparator}
    cols = st.columns(len(formats) + 1)
    for col, (suffix, fn) in zip(cols, formats.items(), strict=False):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                out = fn(ws, name, Path(tmp) / f"{name}-{suffix}")
                data = Path(out.path).read_bytes()
            except MormError as e:
                col.caption(f"{suffix}: {plain(e)}")
                continue
        col.download_button(suffix, data, file_name=f"{name}-{suffix}",
                            key=f"eval_dl_{suffix}", icon=":material/download:")
    if st.button("Build the session report", key="eval_build_report"):
        with tempfile.TemporaryDirectory() as tmp:  # plotly.js inside: built on demand only
            st.session_state["eval_report"] = (name, session_report(
                ws, name, Path(tmp) / f"{name}.html",
                reward_model=None if rm == "(none)" else rm).read_bytes())
    if st.session_state.get("eval_report", (None,))[0] == name:
        st.download_button("Download the report (one HTML file, no server needed)",
                           st.session_state["eval_report"][1], file_name=f"{name}-report.html",
                           mime="text/html", key="eval_report_dl",
                           icon=":material/description:")
    if not presenting():
        save_dataset(cols[-1])
