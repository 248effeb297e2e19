"""Compare: two to four policies on the same prompts with the same seeds: responses side by side,
mean scores with intervals, paired win rates against a baseline, KL from the base and length,
the policies' own front (and a soup curve), a held-out judge beside the training reward model,
per-category slices, and a self-contained HTML report."""

import tempfile
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from morm_explorer.data.candidates import list_candidate_sets
from morm_explorer.errors import MormError
from morm_explorer.evaluation.compare import CompareJob, list_comparisons, load_comparison
from morm_explorer.evaluation.report import comparison_figures, comparison_report
from morm_explorer.evaluation.stats import (
    largest_differences,
    mean_differences,
    policy_summary,
    slices,
    soup_curve,
    win_rates,
)
from morm_explorer.reward.report import judge_training_note, list_reward_models
from morm_explorer.ui.text import plain
from morm_explorer.workspace import sanitize_name
from pages.common import follow_page_job, job_page, presenting, show_trust
from pages.policy_picker import checked_policy, other_inputs, policy_options, remember

PER_PAGE = 8
ws, backend = job_page(
    "Compare",
    "Policies side by side on the same prompts and sampling seeds: which trade-off does "
    "each make, and does a held-out judge agree with the reward model they were trained "
    "against?")


def add_policy_form(options: dict, chosen: list[str]) -> None:
    """Add a local folder or hub name to the policies compared, once it is checked."""
    with st.container(border=True):
        st.caption("Add a policy that is not listed: a local folder or hub name")
        name, revision, trust = other_inputs("cmp_add")
        if st.button("Add", key="cmp_add", disabled=not name):
            source = checked_policy(ws, name, revision, trust)
            if source is not None:
                remember(ws, source)  # an option of the multiselect from now on
                st.session_state["cmp_pols_next"] = [
                    *(p for p in chosen if p != source.ref), source.ref][-4:]
                st.rerun()
    needs = [p for p in chosen if options[p].trust_remote_code]
    if needs:
        st.caption(f"Remote code is allowed for this comparison, as {plain(', '.join(needs))} "
                   "needs it.")


def job_status(job_id: str) -> None:
    info = backend.get(job_id)
    if info.done:
        st.session_state.pop("cmp_job", None)
        if info.status != "succeeded":
            st.session_state["cmp_error"] = f"Comparison {info.status}: {plain(info.error or '')}"
        st.rerun(scope="app")
    st.progress(info.progress,
                text=f"Generating and scoring ({info.status}) {plain(info.message)}")
    if st.button("Cancel", key="cmp_cancel", icon=":material/stop:"):
        backend.cancel(job_id)


if "cmp_error" in st.session_state:
    st.error(st.session_state.pop("cmp_error"))
if follow_page_job(backend, "cmp_job"):  # launched in this tab, or from Compare elsewhere
    st.fragment(job_status, run_every=1.5)(st.session_state["cmp_job"])

# -- launch a comparison ----------------------------------------------------------------------
models = [m["name"] for m in sorted(list_reward_models(ws), key=lambda m: -m["created_at"])]
comparisons = list_comparisons(ws)
if not presenting():
    with st.expander("New comparison", expanded=not comparisons):
        if not models:
            st.info("Train a reward model first.")
        else:
            options = policy_options(ws)
            if "cmp_pols_next" in st.session_state:  # a policy was just added
                st.session_state["cmp_pols"] = st.session_state.pop("cmp_pols_next")
                st.session_state["cmp_add_other"] = ""
            st.session_state["cmp_pols"] = [p for p in st.session_state.get(
                "cmp_pols", list(options)[:2]) if p in options][:4]
            pols = st.multiselect("Policies (2 to 4; the first is the baseline)",
                                  list(options), max_selections=4, key="cmp_pols")
            add_policy_form(options, pols)
            c1, c2 = st.columns(2)
            rm = c1.selectbox("Reward model (the one they were trained against)", models,
                              key="cmp_rm")
            judge = c2.selectbox("Held-out judge (optional)", ["(none)", *models],
                                 key="cmp_judge", help="A reward model the policies were not "
                                 "optimized against: a gap between the two shows reward "
                                 "hacking.")
            c1, c2, c3, c4 = st.columns(4)
            prompts = c1.text_input("Prompts", "demo", key="cmp_prompts")
            limit = c2.number_input("First K prompts (0: all)", 0, 100_000, 24, key="cmp_limit")
            n = c3.number_input("Samples per prompt", 1, 16, 2, key="cmp_n")
            tokens = c4.number_input("Max new tokens", 8, 1024, 64, key="cmp_tokens")
            name = st.text_input("Name", f"cmp-{time.strftime('%m%d-%H%M')}", key="cmp_name")
            if st.button("Compare as a job", type="primary", disabled=len(pols) < 2,
                         key="cmp_launch"):
                sources = [checked_policy(ws, p, "", options[p].trust_remote_code)
                           for p in pols]  # a refused one shows why, and nothing is queued
                try:
                    if None in sources:
                        raise MormError("nothing was queued: choose other policies")
                    job = CompareJob(name=sanitize_name(name), policies=[s.ref for s in sources],
                                     prompts=prompts, limit=int(limit), reward_model=rm,
                                     judge_model="" if judge == "(none)" else judge,
                                     sampling={"n": int(n), "max_new_tokens": int(tokens)},
                                     trust_remote_code=any(s.trust_remote_code
                                                           for s in sources))
                    st.session_state["cmp_job"] = backend.submit(job)
                except MormError as e:
                    st.error(plain(e))
                else:
                    st.rerun()
if not comparisons:
    st.info("No comparison yet." + ("" if presenting() else " Start one above."))
    st.stop()

# -- choose a comparison ----------------------------------------------------------------------
by_name = {c["name"]: c for c in comparisons}
name = st.selectbox("Comparison", list(by_name), key="cmp_name_sel", format_func=lambda c: (
    f"{c} · {', '.join(by_name[c]['policies'])} · {by_name[c]['n_prompts']} prompts"))


@st.cache_data(max_entries=8, show_spinner=False)
def comparison(name: str, created_at: float):
    return load_comparison(ws, name)


try:
    cmp = comparison(name, by_name[name]["created_at"])
except MormError as e:
    st.error(plain(e))
    st.stop()
frame, objectives = cmp.frame, cmp.objectives
c1, c2, c3 = st.columns(3)
baseline = c1.selectbox("Baseline for win rates", cmp.policies, key="cmp_baseline")
objective = c2.selectbox("Objective for details", objectives, key="cmp_objective")
soups = [c.name for c in list_candidate_sets(ws)
         if any(s.startswith("soup lam=") for s in c.sources)]
soup_name = c3.selectbox("Soup curve", ["(none)", *soups], key="cmp_soup")
soup = None
if soup_name != "(none)":
    try:
        soup = soup_curve(ws, soup_name, cmp.manifest["reward_model"]["name"])
    except MormError as e:
        st.warning(f"No soup curve: {plain(e)}")

@st.cache_data(max_entries=16, show_spinner="Bootstrapping the win rates ...")
def figures_and_wins(name: str, created_at: float, baseline: str, objective: str,
                     soup_name: str, _soup):
    """Figures and win rates (paired bootstrap: the costly part) once per choice of controls,
    not on every rerun."""
    c = comparison(name, created_at)
    return (comparison_figures(c, baseline=baseline, objective=objective, soup=_soup),
            win_rates(c.frame, baseline, c.objectives))


@st.cache_data(max_entries=16, show_spinner="Bootstrapping the differences ...")
def differences(name: str, created_at: float, baseline: str) -> pd.DataFrame:
    c = comparison(name, created_at)
    parts = [mean_differences(c.frame, p, baseline, c.objectives).assign(policy=p)
             for p in c.policies if p != baseline]
    cols = ["policy", "objective", "diff", "low", "high", "n", "verdict"]
    return pd.concat(parts)[cols] if parts else pd.DataFrame(columns=cols)


figures, wins = figures_and_wins(name, by_name[name]["created_at"], baseline, objective,
                                 soup_name, soup)
tabs = st.tabs([plain(title) for title in figures])
for tab, (title, fig) in zip(tabs, figures.items(), strict=True):
    with tab:
        st.plotly_chart(fig, key=f"cmp_fig_{title}")

st.subheader("Scores per policy")
rm_name = cmp.manifest["reward_model"]["name"]
for key, trust in cmp.trust():
    show_trust(trust, label="Judge" if key == "judge" else "")
summary = policy_summary(frame, objectives)
st.dataframe(summary.round(3), width="stretch", key="cmp_summary")
st.caption("kl: the mean over prompts of log π(y|x) − log π_base(y|x) on the sampled "
           "responses, in nats: an unbiased estimate of the KL from the base that can come out "
           "slightly below zero for a policy close to it.")
if cmp.judge_objectives:
    judge_name = cmp.manifest["judge_model"]["name"]
    st.caption(plain(f"Held-out judge {judge_name}:"))
    st.dataframe(policy_summary(frame, cmp.judge_objectives, prefix="judge:").round(3),
                 width="stretch", key="cmp_judge_summary")
    disjoint, note = judge_training_note(ws, rm_name, judge_name)
    (st.info if disjoint else st.warning)(plain(note), icon=":material/dataset:")
st.subheader(f"Win rates against {plain(baseline)}")
st.caption("Per prompt, each policy's samples are averaged; win = higher score (a tie counts "
           "half); 95% intervals from a paired bootstrap over prompts.")
st.dataframe(wins.round(3), hide_index=True, width="stretch", key="cmp_wins")
st.subheader(f"Differences from {plain(baseline)}")
st.caption("Each policy's mean score minus the baseline's, per objective, over the prompts "
           "both answered, with a paired-bootstrap 95% interval over prompts. A policy is said "
           "to score higher or lower only when the interval excludes zero; otherwise: no clear "
           "difference.")
st.dataframe(differences(name, by_name[name]["created_at"], baseline).round(3),
             hide_index=True, width="stretch", key="cmp_diffs")
if frame["category"].nunique() > 1:
    st.subheader("Per category")
    st.dataframe(slices(frame, objectives).round(3), width="stretch", key="cmp_slices")

# -- side by side ---------------------------------------------------------------------------
st.subheader("Responses side by side")
c1, c2, c3 = st.columns([2, 2, 1])
cats = sorted(frame["category"].fillna("(none)").unique())
picked = c1.multiselect("Categories", cats, key="cmp_cats")
sort = c2.selectbox("Sort by", ["largest difference", "longest responses", "prompt"],
                    key="cmp_sort")
others = [p for p in cmp.policies if p != baseline] or cmp.policies
versus = c3.selectbox("Difference of", others, key="cmp_versus",
                      help=f"... against {plain(baseline)}, on {plain(objective)}")
prompts = largest_differences(frame, versus, baseline, objective) if len(cmp.policies) > 1 \
    else frame.drop_duplicates("prompt_id")[["prompt_id", "prompt", "category"]]
if picked:
    prompts = prompts[prompts["category"].fillna("(none)").isin(picked)]
if sort == "longest responses":
    longest = frame.groupby("prompt_id")["n_tokens"].mean()
    prompts = prompts.assign(_len=prompts["prompt_id"].map(longest)).sort_values(
        "_len", ascending=False)
elif sort == "prompt":
    prompts = prompts.sort_values("prompt_id")
pages = max(1, -(-len(prompts) // PER_PAGE))
page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="cmp_page")
score_cols = [c for c in frame.columns if c.startswith(("rm:", "judge:"))]
for row in prompts.iloc[(page - 1) * PER_PAGE: page * PER_PAGE].itertuples():
    with st.container(border=True):
        st.caption(f"{plain(row.prompt_id)} · {plain(row.category or '')}"
                   + (f" · {plain(versus)} − {plain(baseline)} on {plain(objective)}: "
                      f"{row.diff:+.3f}"
                      if hasattr(row, "diff") else ""))
        st.text(row.prompt)
        cols = st.columns(len(cmp.policies))
        sub = frame[frame["prompt_id"] == row.prompt_id]
        for col, pol in zip(cols, cmp.policies, strict=True):
            with col:
                st.markdown(f"**{plain(pol)}**")
                for s in sub[sub["policy"] == pol].itertuples():
                    st.text(s.response)
                st.dataframe(sub[sub["policy"] == pol][[*score_cols, "kl", "n_tokens"]]
                             .round(3), hide_index=True, width="stretch",
                             key=f"cmp_s_{row.prompt_id}_{pol}")

# -- report ---------------------------------------------------------------------------------
st.subheader("Report for stakeholders")
examples = st.multiselect("Examples to include", prompts["prompt_id"].tolist()[:50],
                          default=prompts["prompt_id"].tolist()[:3], key="cmp_examples")
if st.button("Build the HTML report", key="cmp_build"):
    with tempfile.TemporaryDirectory() as tmp:
        path = comparison_report(cmp, Path(tmp) / f"{name}.html", baseline=baseline,
                                 objective=objective, examples=examples or None, soup=soup)
        st.session_state["cmp_report"] = (name, path.read_bytes())
if st.session_state.get("cmp_report", (None,))[0] == name:
    st.download_button("Download the report (one HTML file, no server needed)",
                       st.session_state["cmp_report"][1], file_name=f"{name}-report.html",
                       mime="text/html", key="cmp_download", icon=":material/download:")
summary_note = time.strftime("%Y-%m-%d %H:%M", time.localtime(cmp.created_at))
st.caption(f"Comparison run {summary_note}; reward model "
           f"{plain(cmp.manifest['reward_model']['name'])}"
           + (f", judge {plain(cmp.manifest['judge_model']['name'])}" if cmp.judge_objectives
              else ""))
