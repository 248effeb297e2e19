"""Data: load preference data, see its validation report and per-objective summary, save it."""

from pathlib import Path

import pandas as pd
import streamlit as st

from morm_explorer.data.convert import summarize
from morm_explorer.data.loaders import inspect_file, inspect_upload, records_to_frame
from morm_explorer.data.presets import PRESETS
from morm_explorer.errors import MormError
from morm_explorer.ui import figures
from morm_explorer.ui.text import plain
from pages.common import workspace

ws = workspace()


# Validation runs once per file content and options, not on every widget interaction.
@st.cache_data(max_entries=8, show_spinner=False)
def inspect_uploaded(name: str, data: bytes, **options):
    return inspect_upload(name, data, **options)


@st.cache_data(max_entries=8, show_spinner=False)
def inspect_path(path: str, modified: float, **options):
    return inspect_file(path, **options)


def modified(path) -> float:
    p = Path(path)
    return p.stat().st_mtime if p.exists() else 0.0


st.title("Data")
st.caption("Per-objective preference data: pairs labelled per objective, or per-response "
           "ratings. Everything you load is validated; nothing is stored until you save it.")

# -- inputs --------------------------------------------------------------------------------
SOURCES = ["Workspace dataset", "Upload a file", "Path or HF dataset on this machine"]
source = st.radio("Source", SOURCES, horizontal=True, key="data_source")
preset_names = ["canonical"] + list(PRESETS)
left, mid, right = st.columns([2, 2, 1])
preset = left.selectbox(
    "Format preset", preset_names, key="data_preset",
    format_func=lambda p: "canonical (pairs or ratings)" if p == "canonical"
    else f"{p}: {PRESETS[p].description}",
    disabled=source == SOURCES[0],
)
objective = mid.text_input("Objective (HH-RLHF only)", key="data_objective",
                           placeholder="from the file name, e.g. harmless-base -> harmless")
on_error = right.radio("Bad rows", ["stop", "drop"], key="data_on_error",
                       format_func=lambda x: "stop the load" if x == "stop" else "drop them")
options = {"preset": None if preset == "canonical" else preset,
           "objective": objective.strip() or None, "on_error": on_error}

dataset, report = None, None
try:
    if source == SOURCES[0]:
        names = [d.name for d in ws.list_datasets()]
        if not names:
            st.info("The workspace has no datasets yet: upload one.")
        else:
            name = st.selectbox("Dataset", names, key="data_ws_name")
            path = ws.dataset_path(name)
            dataset, report = inspect_path(str(path), modified(path), display_name=name,
                                           fmt="jsonl", on_error=on_error,
                                           max_chars=ws.dataset_max_chars(name))
    elif source == SOURCES[1]:
        up = st.file_uploader("Preference file", type=["jsonl", "json", "csv", "parquet", "gz"],
                              key="data_upload")
        if up is not None:
            with st.spinner(f"Validating {plain(up.name)} ..."):
                dataset, report = inspect_uploaded(up.name, up.getvalue(), **options)
    else:
        path = st.text_input("Path, dataset folder or hub name", key="data_path")
        if path.strip():
            with st.spinner(f"Validating {plain(path)} ..."):
                dataset, report = inspect_path(path.strip(), modified(path.strip()), **options)
except MormError as e:
    st.error(plain(e))

if report is None:
    st.stop()

# -- validation report ---------------------------------------------------------------------
st.subheader("Validation")
m = st.columns(5)
m[0].metric("Rows read", f"{report.n_rows:,}")
m[1].metric("Valid", f"{report.n_valid:,}")
m[2].metric("Errors", len(report.errors))
m[3].metric("Warnings", len(report.warnings))
m[4].metric("Kind", report.kind or "?")
if report.issues:
    issues = pd.DataFrame([{"line": i.line, "field": i.field or "", "severity": i.severity,
                            "message": i.message} for i in report.issues])
    with st.expander(f"{len(issues)} issues in {plain(report.file)}",
                     expanded=bool(report.errors)):
        st.dataframe(issues, hide_index=True, width="stretch")
if dataset is None:
    st.error(f"{len(report.errors)} errors in {report.n_bad_rows} rows. Fix the file, or "
             "choose **drop them** under *Bad rows* to keep the valid rows.")
    st.stop()
if report.n_bad_rows:
    st.warning(f"Dropped {report.n_bad_rows} bad rows; {report.n_valid} kept.")
else:
    st.success(f"All {report.n_valid:,} records are valid.")

# -- summary -------------------------------------------------------------------------------
summary = summarize(dataset.records, dataset.kind)
st.subheader("Per-objective summary")
st.caption(f"{summary.n_records:,} {summary.kind} records over {summary.n_prompts:,} prompts; "
           f"objectives: {plain(', '.join(dataset.objectives))}")
c1, c2 = st.columns(2)
c1.plotly_chart(figures.label_counts_figure(summary) if dataset.kind == "pairwise"
                else figures.ratings_figure(summary), key="fig_labels")
among = c2.segmented_control("Disagreement among", ["decided", "labelled"], default="decided",
                              key="data_among",
                              format_func=lambda x: "pairs decided on both" if x == "decided"
                              else "all pairs labelled on both")
c2.plotly_chart(figures.disagreement_figure(summary, among or "decided"), key="fig_disagree")
c3, c4 = st.columns(2)
c3.dataframe(summary.per_objective.round(3), width="stretch")
c4.plotly_chart(figures.categories_figure(summary), key="fig_categories")

# -- examples ------------------------------------------------------------------------------
st.subheader("Examples")
frame = records_to_frame(dataset.records, dataset.kind)
cats = sorted(frame["category"].dropna().unique())
f1, f2 = st.columns(2)
cat = f1.selectbox("Category", ["all"] + cats, key="data_cat")
text = f2.text_input("Prompt contains", key="data_search")
view = frame if cat == "all" else frame[frame["category"] == cat]
if text:
    view = view[view["prompt"].str.contains(text, case=False, regex=False)]
st.caption(f"{len(view):,} of {len(frame):,} records")
st.dataframe(view.head(2000), hide_index=True, width="stretch", key="data_table")
if len(view):
    pick = st.number_input("Show record", 0, len(view) - 1, 0, key="data_pick")
    rec = view.iloc[int(pick)]
    st.markdown("**Prompt**")
    st.text(rec["prompt"])
    for col in [c for c in ("response_a", "response_b", "response") if c in view]:
        st.markdown(f"**{col}**")
        st.text(rec[col] or "(empty)")
    label_cols = [c for c in view.columns if c.startswith(("label:", "rating:"))]
    st.dataframe(rec[label_cols].to_frame("value").T, hide_index=True)

# -- save ----------------------------------------------------------------------------------
st.subheader("Save to the workspace")
s1, s2, s3 = st.columns([3, 1, 1])
default_name = report.file.rsplit("/", 1)[-1].split(".")[0]
save_name = s1.text_input("Dataset name", value=default_name, key="data_save_name")
overwrite = s2.checkbox("Overwrite", key="data_overwrite")
if s3.button("Save", type="primary", key="data_save"):
    try:
        info = ws.save_dataset(save_name, dataset, overwrite=overwrite)
        st.success(f"Saved {info.n_records:,} records as **{plain(info.name)}**.")
    except MormError as e:
        st.error(plain(e))
