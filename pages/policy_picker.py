"""The policy pickers of Fine-tune, Compare and Explore's sampler: the built-in policy, those
fine-tuned here and those added before, or another local folder or hub name, checked by
`morm_explorer.policy.source` before a job is queued. (A module of the pages, not a page:
app.py lists the pages.)"""

from __future__ import annotations

import streamlit as st

from morm_explorer.errors import MormError
from morm_explorer.policy.source import (
    PolicySource,
    check_policy_source,
    known_policies,
    remember_policy,
)
from morm_explorer.ui.text import plain
from morm_explorer.workspace import Workspace

OTHER = "Other: a local folder or hub name"
REMOTE_CODE_HELP = ("Run the model's own Python code (its config.json's auto_map), as "
                    "transformers' trust_remote_code does. Only for code you have read and "
                    "trust: it runs with this app's rights.")


def policy_options(ws: Workspace, remote_code: bool = True) -> dict[str, PolicySource]:
    """The known policies by reference; without ``remote_code``, none that needs it."""
    try:
        sources = known_policies(ws)
    except MormError as e:
        st.warning(f"The policies added earlier are not listed: {plain(e)}")
        sources = known_policies(ws, remembered=False)
    return {s.ref: s for s in sources if remote_code or not s.trust_remote_code}


def other_inputs(key: str, remote_code: bool = True) -> tuple[str, str, bool]:
    """Inputs for a policy not listed: (folder or hub name, revision, trust remote code)."""
    c1, c2 = st.columns([3, 1])
    name = c1.text_input("Local folder or hub name", key=f"{key}_other",
                         placeholder="/path/to/model or org/name",
                         help="A folder with config.json of a causal LM, its tokenizer and "
                              "safetensors weights, or a Hugging Face hub name (from the "
                              "local cache when HF_HUB_OFFLINE is set).")
    revision = c2.text_input("Revision (optional)", key=f"{key}_revision",
                             help="Hub names only: a branch, tag or commit (default: main).")
    trust = st.checkbox("Trust remote code", key=f"{key}_trust",
                        help=REMOTE_CODE_HELP) if remote_code else False
    return name.strip(), revision.strip(), trust


def pick_policy(ws: Workspace, label: str, key: str, help: str,
                remote_code: bool = True) -> tuple[str, str, bool]:
    """A selectbox of the known policies and "Other"; returns the choice as (name or folder,
    revision, trust remote code), not checked yet (`checked_policy` does, at launch)."""
    options = policy_options(ws, remote_code)
    choice = st.selectbox(label, [*options, OTHER], key=key, help=help)
    if choice == OTHER:
        return other_inputs(key, remote_code)
    return choice, "", options[choice].trust_remote_code


def checked_policy(ws: Workspace, name: str, revision: str = "",
                   trust: bool = False) -> PolicySource | None:
    """The policy checked (`check_policy_source`), or None after showing why not. Pass it to
    `remember` once its job is queued."""
    try:
        source = check_policy_source(name, revision or None, trust, workspace=ws)
    except MormError as e:
        st.error(plain(e))
        return None
    if source.note:
        st.toast(plain(source.note), icon=":material/download:")
    return source


def remember(ws: Workspace, *sources: PolicySource) -> None:
    """Offer these policies in the pickers from now on (their job is queued)."""
    try:
        for source in sources:
            remember_policy(ws, source)
    except MormError as e:  # the job is queued all the same
        st.warning(f"The policy is not added to the list: {plain(e)}")
