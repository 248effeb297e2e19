"""The Explore page's forms that add a candidate set: import a file, or sample from a policy.
(A module of the page, not a page: app.py lists the pages.)"""

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import streamlit as st

from morm_explorer.data.candidates import read_candidates, save_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.jobs.spec import JobSpec
from morm_explorer.policy.jobs import SampleCandidatesJob
from morm_explorer.ui.text import plain
from morm_explorer.workspace import Workspace, sanitize_name
from pages.policy_picker import checked_policy, pick_policy, remember


def import_tab(ws: Workspace) -> None:
    """Upload a candidate file, validate it and save it as a named set."""
    up = st.file_uploader("Candidate file (prompt_id, prompt, response, source, category)",
                          type=["jsonl", "json", "csv", "parquet"], key="explore_upload")
    name = st.text_input("Name", key="explore_import_name",
                         value=Path(up.name).stem if up is not None else "")
    drop = st.checkbox("Drop bad rows instead of stopping", key="explore_drop_bad")
    if st.button("Import", disabled=up is None or not name, key="explore_import"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(up.name).name
            path.write_bytes(up.getvalue())
            try:
                cset = read_candidates(path, default_source=Path(up.name).stem, drop_bad=drop)
                info = save_candidate_set(ws, name, cset)
            except MormError as e:
                st.error(plain(str(e).replace(str(path), up.name)))
                return
        st.session_state["explore_set_next"] = info.name
        st.rerun()


def sample_tab(ws: Workspace, launch: Callable[[JobSpec], None]) -> None:
    """Sample a new set from a policy, as a job submitted with ``launch`` once the policy is
    checked."""
    policy, revision, trust = pick_policy(
        ws, "Policy", "explore_policy",
        help="smollm2 is SmolLM2-135M-Instruct, shipped with the app; policies fine-tuned "
             "here and the folders and hub names added before are listed too.")
    with st.form("explore_sample"):
        a, c = st.columns(2)
        name = a.text_input("Name of the new set", value="smollm2-demo")
        prompts = c.text_input("Prompts", value="demo",
                               help="'demo' (72 built-in prompts) or a JSONL/CSV/Parquet file "
                                    "on this machine with a prompt column.")
        d, e, f, g, h = st.columns(5)
        n = d.number_input("Samples per prompt", 1, 64, 4)
        temperature = e.number_input("Temperature", 0.0, 2.0, 0.8, 0.05)
        top_p = f.number_input("Top-p", 0.05, 1.0, 0.95, 0.05)
        max_new = g.number_input("Max new tokens", 8, 1024, 96, 8)
        seed = h.number_input("Seed", 0, 2**31 - 1, 0)
        limit = st.number_input("Use the first K prompts (0: all)", 0, 100_000, 0)
        if st.form_submit_button("Sample as a job", type="primary"):
            try:
                spec = SampleCandidatesJob(
                    name=sanitize_name(name), policy=policy, prompts=prompts, limit=int(limit),
                    sampling={"n": int(n), "temperature": float(temperature),
                              "top_p": float(top_p), "max_new_tokens": int(max_new),
                              "seed": int(seed)})
                source = checked_policy(ws, policy, revision, trust)
                if source is None:  # why is shown; nothing is queued
                    return
                launch(replace(spec, policy=source.ref,
                               trust_remote_code=source.trust_remote_code))
                remember(ws, source)
            except MormError as err:
                st.error(plain(err))
                return
            st.session_state["explore_set_next"] = sanitize_name(name)
            st.rerun()
