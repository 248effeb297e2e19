"""Overview: what MORM Explorer is for, and what the workspace holds."""

import time

import pandas as pd
import streamlit as st

from morm_explorer.data.candidates import list_candidate_sets
from morm_explorer.demo_jobs import (
    PrepareDemoJob,
    demo_complete,
    demo_data_line,
    demo_time_left,
)
from morm_explorer.jobs.backend import get_backend
from morm_explorer.reward.report import list_reward_models
from morm_explorer.ui.text import plain
from pages.common import presenting, start_demo_job, workspace

ws = workspace()
st.title("MORM Explorer")
st.markdown(
    "A single reward model averages *helpful*, *harmless* and *honest* into one number and "
    "hides the trade-offs. A **multi-objective reward model** keeps one reward per objective; "
    "you choose the trade-off explicitly with scalarization weights, "
    "$R = \\sum_k w_k R_k$, and see what that choice does."
)

datasets = ws.list_datasets()
candidate_sets = list_candidate_sets(ws)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Datasets", len(datasets))
c2.metric("Records", f"{sum(d.n_records for d in datasets):,}")
c3.metric("Reward models", len(list_reward_models(ws)))
c4.metric("Candidate sets", len(candidate_sets))
demo_data = demo_data_line(ws)
if demo_data:
    st.caption(plain(demo_data))  # names a data source: a hub name, a file

def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min"


def demo_status() -> None:
    """The background build of the full demo, polled while it runs."""
    jobs = backend.list(kind=PrepareDemoJob.kind, limit=1)
    if not jobs or demo_complete(ws):
        return
    job = jobs[0]
    if not job.done:
        from morm_explorer.policy.cost import busy_factor

        left, parts = demo_time_left(ws, busy=busy_factor() if job.status == "running" else 1.0)
        shipped = "installing" in (job.message or "")
        st.info("Preparing the full demo in the background: reward models, SmolLM2 samples, "
                "two fine-tuned policies and a comparison "
                + ("(from the shipped demo: seconds). " if shipped else
                   f"(about {_minutes(left)} left on this machine, building each part "
                   "here). ")
                + "Every page works meanwhile.")
        st.progress(job.progress, text=plain(job.message or job.status))
        st.caption(" · ".join(f"✓ {label}" if ready else f"… {label} (~{_minutes(sec)})"
                              for label, ready, sec in parts))
    elif job.status != "succeeded":
        st.warning(f"The demo build {job.status}: {plain((job.error or '').strip()[:300])}")
        if not presenting() and st.button("Try again", key="home_demo_retry"):
            start_demo_job(ws, retry=True)
            st.rerun()
    if not job.done:
        st.session_state["home_demo_running"] = True
    elif st.session_state.pop("home_demo_running", False):
        st.rerun(scope="app")  # once, as the build ends: the counts above change


backend = get_backend(ws)
running = any(not j.done for j in backend.list(kind=PrepareDemoJob.kind, limit=1))
st.fragment(demo_status, run_every=3.0 if running else None)()

st.subheader("Workspace")
st.caption(f"Folder: {plain(ws.root.resolve())}")
if datasets:
    st.dataframe(
        pd.DataFrame(
            [{"name": d.name, "kind": d.kind, "records": d.n_records,
              "objectives": ", ".join(d.objectives), "source": d.source,
              "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(d.created_at))}
             for d in datasets]
        ),
        hide_index=True, width="stretch",
    )
else:
    st.info("No datasets yet. Open **Data** to load one.")

st.subheader("Start here")
st.page_link("pages/data.py", label="Data: load, validate and summarize preference data",
             icon=":material/table_view:")
st.page_link("pages/reward_models.py",
             label="Reward models: train per-objective heads and see what each learned",
             icon=":material/model_training:")
st.page_link("pages/explore.py",
             label="Explore: score candidates, see the Pareto fronts, move the weight sliders",
             icon=":material/tune:")
st.page_link("pages/finetune.py", label="Fine-tune: PPO runs with your weights, live",
             icon=":material/rocket_launch:")
st.page_link("pages/compare.py", label="Compare: fine-tuned policies side by side",
             icon=":material/compare:")
st.page_link("pages/evaluate.py", label="Evaluate: blind A/B rating sessions",
             icon=":material/how_to_vote:")
st.markdown(
    "- **Canonical pairs**: `prompt`, `response_a`, `response_b`, "
    "`labels: {objective: a | b | tie}` (an objective left out is not annotated).\n"
    "- **Ratings**: `prompt`, `response`, `ratings: {objective: number}`.\n"
    "- **Presets** for HH-RLHF, PKU-SafeRLHF, HelpSteer2 and UltraFeedback map those public "
    "formats onto the canonical one.\n"
    "- The built-in demo data (*demo-preferences*) has three objectives that really conflict: "
    "complying with a harmful request is helpful but harmful; refusing a harmless one is "
    "harmless but unhelpful. Its other part, *demo-judge-preferences*, shares no prompt with it "
    "and trains the held-out judge."
)
