"""The Reward models page's forms that add a model not trained here: an existing sequence
classifier (`reward.external`) or a composite of parts (`reward.composite`), and the summary
shown for such a model. (A module of the page, not a page: app.py lists the pages.)"""

import pandas as pd
import streamlit as st

from morm_explorer.data.candidates import list_candidate_sets
from morm_explorer.errors import MormError
from morm_explorer.reward.manifest import DEMO_REFERENCES
from morm_explorer.ui.text import plain
from morm_explorer.workspace import Workspace

PART_FORMS = ("**MODEL** or **MODEL:OBJECTIVE** (a reward model listed below) · "
              "**rule:length** (whitespace tokens) · **rule:refusal** · "
              "**rule:regex=PATTERN** · **rule:format=json** · **py:FILE.py:FUNCTION** (TRL's "
              "f(prompts, completions, \\*\\*kwargs); needs the code consent below)")


def _reference(ws: Workspace, key: str) -> str:
    """A select box of the workspace's candidate sets and datasets, the demo's first."""
    names = [c.name for c in list_candidate_sets(ws)] + [d.name for d in ws.list_datasets()]
    names = sorted(dict.fromkeys(names), key=lambda n: (n not in DEMO_REFERENCES, n))
    return st.selectbox("Reference set (score statistics)", names, key=key,
                        help="A candidate set or dataset whose texts give each objective's "
                             "mean and spread, used to standardize scores (up to 2,000 texts "
                             "are scored now).")


def _done(name: str, what: str) -> None:
    st.session_state["rm_select_next"] = name
    st.session_state["rm_notice"] = what
    st.rerun()


def _run(action, what: str):
    """``action(progress)`` with a progress bar; its `MormError` shown, None returned."""
    bar = st.progress(0.0, text=f"{what} ...")
    try:
        return action(lambda d, t: bar.progress(d / max(t, 1), text=f"{what}: {d:,} of "
                                                                    f"{t:,} texts"))
    except MormError as e:
        bar.empty()
        st.error(plain(e))
        return None


def add_form(ws: Workspace) -> None:
    """Register an AutoModelForSequenceClassification as a reward model."""
    c1, c2 = st.columns([3, 2])
    model = c1.text_input("Model", key="rm_add_model",
                          help="A Hugging Face name (offline: one in the Hugging Face cache) "
                               "or a local folder; only safetensors weights are read")
    name = c2.text_input("Name", key="rm_add_name")
    c3, c4 = st.columns([3, 2])
    objectives = c3.text_input("Objectives, in output order", key="rm_add_objectives",
                               help="Comma-separated. Empty: the model's labels (id2label), "
                                    "or 'reward' for a model with one output")
    revision = c4.text_input("Revision", key="rm_add_revision", help="hub names only")
    reference = _reference(ws, "rm_add_reference")
    trust = st.checkbox("Run the model's own code (trust_remote_code)", key="rm_add_trust",
                        help="Needed for a model whose config maps to its own Python code "
                             "(auto_map); read that code first")
    overwrite = st.checkbox("Overwrite", key="rm_add_overwrite")
    if st.button("Add the model", type="primary", key="rm_add_start"):
        from morm_explorer.reward.external import ExternalConfig, add_external  # loads torch

        try:
            cfg = ExternalConfig(model=model.strip(), revision=revision.strip(),
                                 objectives=tuple(o.strip() for o in objectives.split(",")
                                                  if o.strip()),
                                 trust_remote_code=trust)
        except MormError as e:
            st.error(plain(e))
            return
        path = _run(lambda progress: add_external(ws, name.strip(), cfg, reference=reference,
                                                  device="auto", overwrite=overwrite,
                                                  progress=progress),
                    "Scoring the reference set")
        if path is not None:
            _done(path.name, f"Added {path.name} from {cfg.model}.")


def compose_form(ws: Workspace, models: list[dict]) -> None:
    """Build a composite reward from parts, one objective per line."""
    name = st.text_input("Name", key="rm_compose_name")
    parts = st.text_area("Parts, one per line: OBJECTIVE=SPEC", key="rm_compose_parts",
                         placeholder="helpful=my-rm:helpful\nbrevity=rule:length")
    st.caption(PART_FORMS)
    if models:
        listed = [f"{plain(m['name'])} ({plain(', '.join(m['objectives']))})"
                  for m in models if m["kind"] != "composite"]
        st.caption("Models: " + "; ".join(listed))
    reference = _reference(ws, "rm_compose_reference")
    c1, c2, c3 = st.columns(3)
    allow = c1.checkbox("Allow py: parts to run their code", key="rm_compose_allow",
                        help="Recorded in the composite: its Python parts then run whenever "
                             "it scores")
    limit = c2.number_input("Seconds per batch (py: parts)", 1.0, 3600.0, 60.0,
                            key="rm_compose_limit")
    overwrite = c3.checkbox("Overwrite", key="rm_compose_overwrite")
    lines = [x.strip() for x in parts.splitlines() if x.strip()]
    if st.button("Compose", type="primary", key="rm_compose_start"):
        from morm_explorer.reward.composite import compose  # loads torch

        path = _run(lambda progress: compose(ws, name.strip(), lines, allow_code=allow,
                                             reference=reference, time_limit=float(limit),
                                             device="auto", overwrite=overwrite,
                                             progress=progress),
                    "Scoring the reference set")
        if path is not None:
            _done(path.name, f"Composed {path.name} from {len(lines)} parts.")


def manifest_summary(report: dict) -> None:
    """What an external or composite model's manifest says: its source, how it reads a
    conversation (external), its parts (composite) and its score statistics."""
    config, s = report["config"], report["summary"]
    ref = config.get("reference_set") or {}
    if config.get("kind") == "external":
        st.markdown(f"**External model** {plain(s['backbone'])} · objectives "
                    f"{plain(', '.join(s['objectives']))} · reads "
                    f"{plain(config.get('input_note', '?'))}")
    else:
        st.markdown(f"**Composite** of {len(config.get('parts', []))} parts")
        st.dataframe(pd.DataFrame([{"objective": p.get("objective"), "part": p.get("spec")}
                                   for p in config.get("parts", [])]), hide_index=True,
                     key="rm_table_parts")
        if config.get("allow_code"):
            st.caption("Its py: parts run their code whenever it scores (allowed when it "
                       "was composed).")
    st.markdown(f"**Reward statistics** over {ref.get('n_texts', 0):,} texts of the "
                f"{plain(ref.get('kind', ''))} *{plain(ref.get('name', '?'))}* (used to "
                "normalize scores)")
    st.dataframe(report["stats"].drop(columns="n", errors="ignore").round(3), width="stretch",
                 key="rm_table_stats")
    st.caption("Not trained here: no training curves or held-out metrics; "
               f"`morm rm eval {report['name']} --data <dataset>` evaluates it on preference "
               f"data. Manifest: {plain(report['path'])}")
