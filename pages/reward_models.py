"""Reward models: train a multi-objective reward model as a job, watch it live, and read what
each trained model learned: per-objective accuracy, curves, head correlation, calibration, and
what one overall reward model would have hidden."""

import time
from dataclasses import fields
from pathlib import Path

import pandas as pd
import streamlit as st

from morm_explorer.errors import MormError
from morm_explorer.reward.config import ARCHITECTURES, HEADS, MODES, POOLINGS, TIES, TrainConfig
from morm_explorer.reward.evaluations import data_label, evaluations_table
from morm_explorer.reward.jobs import GROUP, TrainRewardModelJob
from morm_explorer.reward.report import (
    largest_gap_sentence,
    list_reward_models,
    load_model_report,
)
from morm_explorer.ui import reward_figures as rfig
from morm_explorer.ui.text import plain
from morm_explorer.workspace import sanitize_name
from pages.common import job_page, presenting, queue_note
from pages.reward_add import add_form, compose_form, manifest_summary

KIND = TrainRewardModelJob.kind
RECENT = 20  # training jobs listed (and polled for)
DEFAULT = {f.name: f.default for f in fields(TrainConfig)}
MODE_HELP = {"frozen": "frozen backbone: embeddings cached once, heads only (seconds on a CPU)",
             "full": "fine-tune the whole backbone (a GPU helps)",
             "lora": "fine-tune LoRA adapters of the backbone (a GPU helps)"}
ws, backend = job_page(
    "Reward models",
    "Train one reward per objective, with one shared backbone and K heads "
    "(L = Σ_k w_k L_pref,k) or K separate models, and see what each head learned on "
    "held-out prompts.")


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {int(s % 60):02d} s"


# -- train ---------------------------------------------------------------------------------
datasets = {d.name: d for d in ws.list_datasets()}
models = sorted(list_reward_models(ws), key=lambda m: -m["created_at"])


def reset_for_dataset() -> None:
    """A new dataset: its objectives (all but `overall`, the single-RM label, when others
    exist: the rule training applies by default) and a model name after it."""
    name = st.session_state["rm_dataset"]
    objs = list(datasets[name].objectives)
    st.session_state["rm_objectives"] = [o for o in objs if o != "overall"] or objs
    st.session_state["rm_name"] = f"{name}-rm"


if not presenting():  # presentation mode: results only, no training controls
    left, right = st.columns([5, 6], gap="large")
    with left:
        st.subheader("Train")
        if not datasets:
            st.info("The workspace has no datasets yet: load one on **Data**.")
        else:
            if st.session_state.get("rm_dataset") not in datasets:
                st.session_state["rm_dataset"] = next(iter(datasets))
                reset_for_dataset()
            dataset = st.selectbox("Dataset", list(datasets), key="rm_dataset",
                                   on_change=reset_for_dataset,
                                   format_func=lambda n: f"{n} ({datasets[n].n_records:,} "
                                   f"{datasets[n].kind} records)")
            objs = st.multiselect("Objectives (one head each)", datasets[dataset].objectives,
                                  key="rm_objectives")
            c1, c2, c3 = st.columns(3)
            arch = c1.radio("Architecture", ARCHITECTURES, key="rm_arch",
                            format_func=lambda a: a.replace("_", "-"),
                            help="multi-head: one backbone, K heads; separate: K models")
            mode = c2.radio("Backbone", MODES, key="rm_mode", help="\n\n".join(
                f"**{m}**: {h}" for m, h in MODE_HELP.items()))
            head = c3.radio("Head", HEADS, key="rm_head", help="linear, or an MLP with one "
                            "hidden layer")
            weights = {}
            if objs:
                st.markdown("Loss weights $w_k$ in $L = \\sum_k w_k L_{pref,k}$")
                wcols = st.columns(min(len(objs), 4))
                for i, o in enumerate(objs):
                    weights[o] = wcols[i % len(wcols)].number_input(
                        plain(o), min_value=0.0, max_value=100.0, value=1.0, step=0.1,
                        key=f"rm_w_{o}")
            with st.expander("Advanced"):
                a1, a2, a3 = st.columns(3)
                epochs = a1.number_input("Epochs", 1, 10_000, DEFAULT["epochs"], key="rm_epochs")
                batch = a2.number_input("Batch size", 1, 65_536, DEFAULT["batch_size"],
                                        key="rm_batch")
                seed = a3.number_input("Seed", 0, 2**31 - 1, DEFAULT["seed"], key="rm_seed")
                lr = a1.number_input("Head lr", 1e-6, 1.0, DEFAULT["lr"], format="%.1e",
                                     step=1e-4, key="rm_lr")
                backbone_lr = a2.number_input("Backbone lr", 1e-7, 1.0, DEFAULT["backbone_lr"],
                                              format="%.1e", step=1e-5, key="rm_backbone_lr",
                                              help="full and LoRA modes")
                test_fraction = a3.number_input("Test fraction", 0.01, 0.49,
                                                DEFAULT["test_fraction"], step=0.05,
                                                key="rm_test_fraction",
                                                help="held-out prompts for evaluation")
                margin = a1.number_input("Margin m", 0.0, 10.0, DEFAULT["margin"], step=0.1,
                                         key="rm_margin",
                                         help="-log σ(r_chosen − r_rejected − m), decided pairs")
                center = a2.number_input("Center coef", 0.0, 10.0, DEFAULT["center_coef"],
                                         step=0.01, key="rm_center",
                                         help="c · mean((r_a + r_b)²), as in TRL")
                ties = a3.selectbox("Ties", TIES, key="rm_ties",
                                    help="half: a 0.5 target; skip: ignored")
                backbone = a1.text_input("Backbone", DEFAULT["backbone"], key="rm_backbone",
                                         help="minilm, a Hugging Face name or a local folder")
                pooling = a2.selectbox("Pooling", POOLINGS, key="rm_pooling")
                patience = a3.number_input("Patience", 0, 10_000, DEFAULT["patience"],
                                           key="rm_patience", help="early stopping: epochs "
                                           "without validation improvement (0: off)")
                compare = st.checkbox("Also train one overall RM to compare with",
                                      DEFAULT["compare_overall"], key="rm_compare",
                                      help="on data with an `overall` label: one single-output "
                                      "RM on it, with the same settings")
            st.session_state.setdefault("rm_name", f"{dataset}-rm")
            n1, n2 = st.columns([3, 1], vertical_alignment="bottom")
            name = n1.text_input("Model name", key="rm_name")
            overwrite = n2.checkbox("Overwrite", key="rm_overwrite")
            if st.button("Start training", type="primary", key="rm_start",
                         icon=":material/play_arrow:"):
                try:
                    cfg = TrainConfig(
                        dataset=dataset, name=name.strip(), objectives=tuple(objs),
                        backbone=backbone.strip(), architecture=arch, pooling=pooling, head=head,
                        mode=mode, loss_weights=weights, epochs=int(epochs),
                        batch_size=int(batch), lr=float(lr), backbone_lr=float(backbone_lr),
                        margin=float(margin), center_coef=float(center), ties=ties,
                        test_fraction=float(test_fraction), patience=int(patience),
                        compare_overall=compare,
                        seed=int(seed))
                    if not overwrite and ws.artifact_dir(GROUP, cfg.name).exists():
                        raise MormError(f"a reward model named {cfg.name!r} exists: choose "
                                        "another name or tick Overwrite", field="name")
                    job_id = backend.submit(TrainRewardModelJob(config=cfg.to_dict(),
                                                                overwrite=overwrite))
                    st.session_state["rm_job"] = job_id
                    st.toast(f"Training job {job_id} queued", icon=":material/schedule:")
                except MormError as e:
                    st.error(plain(e))


    # -- the live job panel --------------------------------------------------------------------
    def model_of(info) -> str:
        """The model folder a training job writes (or wrote)."""
        path = (info.result or {}).get("path")
        return Path(path).name if path else sanitize_name(info.spec["config"]["name"])


    def job_panel(job_id: str, polling: bool) -> None:
        """One job's state, re-read from the job store on every run of this fragment."""
        try:
            info = backend.get(job_id)
        except MormError as e:
            st.error(plain(e))
            return
        seen = st.session_state.setdefault("rm_seen_status", {})
        before, seen[job_id] = seen.get(job_id), info.status
        if info.done and before in ("queued", "running"):
            if info.status == "succeeded":
                st.session_state["rm_select_next"] = model_of(info)
            st.rerun(scope="app")  # once, so the models section lists the new model

        head = st.container()
        if not info.done and st.button("Cancel", key="rm_cancel", icon=":material/stop:"):
            info = backend.cancel(job_id)
        cfg = info.spec["config"]
        color = {"succeeded": "green", "failed": "red", "cancelled": "gray",
                 "running": "blue"}.get(info.status, "orange")
        with head:
            st.markdown(f"**{plain(model_of(info))}** on *{plain(cfg['dataset'])}* "
                        f":{color}-badge[{info.status}]")
            st.progress(info.progress, text=plain(info.message or info.status))
            st.caption(f"job `{info.id}` · elapsed {fmt_seconds(info.elapsed(time.time()))}"
                       + (f" · device {plain(info.device)}" if info.device else ""))
            if info.status == "queued":
                st.caption(queue_note(backend, info))
            elif info.cancel_requested and not info.done:
                st.caption("Cancel requested: the worker stops the job within seconds.")
            elif info.status == "succeeded":
                acc = ", ".join(f"{plain(o)} {a:.1%}" for o, a in (info.result or {}).get(
                    "accuracy", {}).items())
                st.success(f"Trained **{plain(model_of(info))}**: held-out accuracy {acc}.")
            elif info.status == "failed":
                st.error("Training failed.")
                st.code(info.error or "(no error recorded)", language=None, wrap_lines=True)
            elif info.status == "cancelled":
                st.warning("Cancelled.")
        curves = backend.metrics(job_id, wide=True)
        if not curves.empty:
            st.plotly_chart(rfig.curves_figure(curves, "Loss" if info.done else "Live loss",
                                               cfg.get("objectives") or None),
                            key="rm_live_curves")
        lines = backend.logs(job_id)
        if lines:
            st.code("\n".join(lines[-12:]), language=None, wrap_lines=True)
        jobs = backend.list(kind=KIND, limit=RECENT)
        jobs_table(jobs)
        if polling and all(j.done for j in jobs):
            st.rerun(scope="app")  # every job is over: stop polling


    def jobs_table(jobs: list) -> None:
        now = time.time()
        rows = [{"model": j.spec.get("config", {}).get("name", "?"), "status": j.status,
                 "progress": j.progress, "message": j.message,
                 "created": time.strftime("%m-%d %H:%M", time.localtime(j.created_at)),
                 "elapsed": fmt_seconds(j.elapsed(now)), "id": j.id} for j in jobs]
        st.markdown("**Recent training jobs**")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="rm_jobs_table",
                     column_config={"progress": st.column_config.ProgressColumn(
                         "progress", min_value=0.0, max_value=1.0, format="percent")})


    with right:
        st.subheader("Training job")
        recent = backend.list(kind=KIND, limit=RECENT)
        if not recent:
            st.caption("No training job yet: start one on the left, or run "
                       "`morm rm train --submit`.")
        else:
            by_id = {j.id: j for j in recent}
            if st.session_state.get("rm_job") not in by_id:
                # a tab's first view: a job still to finish (launched anywhere), else the newest
                st.session_state["rm_job"] = next((j.id for j in recent if not j.done),
                                                  recent[0].id)
            job_id = st.selectbox("Job", list(by_id), key="rm_job", format_func=lambda i: (
                f"{by_id[i].spec.get('config', {}).get('name', '?')} · "
                f"{time.strftime('%m-%d %H:%M:%S', time.localtime(by_id[i].created_at))}"))
            active = any(not j.done for j in recent)
            # Poll the store every 2 s while a job is queued or running; the script never waits.
            st.fragment(job_panel, run_every=2.0 if active else None)(job_id, active)


    with st.expander("Add an existing model", icon=":material/add:"):
        add_form(ws)
    with st.expander("Compose a reward from parts", icon=":material/join:"):
        compose_form(ws, models)


# -- trained models ------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=32)
def model_report(path: str, created_at: float) -> dict:
    return load_model_report(path)  # created_at: a retrained model at the same path reloads


st.divider()
st.subheader("Trained models")
if notice := st.session_state.pop("rm_notice", None):
    st.success(plain(notice))
if not models:
    st.info("No trained reward models yet: start a training job above, or run "
            "`morm rm train --dataset demo-preferences`.")
    st.stop()
st.markdown("**Evaluations of every model** (accuracy with its 95% interval and the number "
            "of decided pairs, per objective)")
st.dataframe(evaluations_table(models), hide_index=True, width="stretch",
             key="rm_table_evaluations")
st.caption("Training stores each model's held-out evaluation; "
           "`morm rm eval <model> --data <dataset or file>` adds one on other data (the same "
           "data evaluated again replaces its row).")
by_name = {m["name"]: m for m in models}
if (pick := st.session_state.pop("rm_select_next", None)) in by_name:
    st.session_state["rm_model"] = pick
model_name = st.selectbox("Model", list(by_name), key="rm_model", format_func=lambda n: (
    f"{n} · {', '.join(by_name[n]['objectives'])} · "
    f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(by_name[n]['created_at']))}"))
try:
    report = model_report(by_name[model_name]["path"], by_name[model_name]["created_at"])
except MormError as e:
    st.error(plain(e))
    st.stop()

if by_name[model_name]["kind"] != "trained":  # external or composite: its manifest
    manifest_summary(report)
    st.stop()
s, acc, svm = report["summary"], report["accuracy"], report["single_vs_multi"]
st.markdown(
    f"{plain(s['backbone'])} backbone ({s['mode']}) · {s['architecture'].replace('_', '-')}, "
    f"{s['head']} heads · objectives {plain(', '.join(s['objectives']))} · trained on "
    f"*{plain(s['dataset'])}* ({s['n_train'] or 0:,} training, {s['n_test_pairs'] or 0:,} held-out "
    f"pairs) · {fmt_seconds(s['train_seconds'])} of training"
    + (" · loss weights " + ", ".join(f"{plain(o)} {w:g}" for o, w in s["loss_weights"].items())
       if s["loss_weights"] else ""))
st.caption(plain(f"Training data: {data_label(by_name[model_name]['training_data'])}"))
if len(acc):
    mcols = st.columns(min(len(acc), 6))
    for i, (obj, row) in enumerate(acc.iterrows()):
        mcols[i % len(mcols)].metric(
            f"{plain(obj)} accuracy", f"{row['accuracy']:.1%}",
            help=f"95% bootstrap interval {row['ci_low']:.1%} to {row['ci_high']:.1%} on "
            f"{int(row['n'])} held-out decided pairs; ECE {row['ece']:.3f}")

g1, g2 = st.columns(2)
if len(acc):
    g1.plotly_chart(rfig.accuracy_figure(acc), key="rm_fig_accuracy")
    if acc["truth_accuracy"].notna().any():
        g1.caption("Hatched: accuracy against the hidden true scores the built-in data "
                   "carries, free of annotator noise. Dotted line: a coin flip.")
if svm is not None:
    g2.plotly_chart(rfig.single_vs_multi_figure(svm), key="rm_fig_single")
    g2.info(plain(largest_gap_sentence(svm)))
else:
    g2.info("No single overall RM was trained beside this model (the data has no `overall` "
            "label, or the comparison was off), so there is no single-vs-multi comparison.")
g3, g4 = st.columns(2)
g3.plotly_chart(rfig.curves_figure(report["history"], objectives=s["objectives"]),
               key="rm_fig_curves")
if not report["correlation"].empty:
    g4.plotly_chart(rfig.correlation_figure(report["correlation"]), key="rm_fig_corr")
g5, g6 = st.columns(2)
g5.plotly_chart(rfig.calibration_figure(report["calibration"], acc["ece"].to_dict()),
                key="rm_fig_calibration")
with g6:
    st.markdown("**Held-out metrics**")
    table = acc.drop(columns="truth_n").dropna(axis=1, how="all").rename(columns={
        "ci_low": "95% low", "ci_high": "95% high", "n": "pairs", "loss": "BT loss",
        "ece": "ECE", "truth_accuracy": "vs truth"})
    pct = st.column_config.NumberColumn(format="percent")
    st.dataframe(table, width="stretch", key="rm_table_accuracy",
                 column_config={c: pct for c in ("accuracy", "95% low", "95% high",
                                                 "vs truth")})
    n_ref = report["config"].get("stats", {}).get("n") or 0
    st.markdown(f"**Reward statistics** over {n_ref:,} training responses (used to "
                "normalize scores)")
    st.dataframe(report["stats"].drop(columns="n", errors="ignore").round(3), width="stretch",
                 key="rm_table_stats")
st.caption(f"Folder: {plain(report['path'])} · evaluate on other data with "
           f"`morm rm eval {model_name} --data <dataset>`")  # a model name holds no backtick
