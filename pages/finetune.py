"""Fine-tune: launch short multi-objective RL runs (PPO, GRPO or RLOO) with the weights chosen
on Explore, watch per-objective scores, KL, entropy and the Lagrange multipliers live, and list
past runs.
Also launches weight sweeps and rewarded soups (interpolations of two fine-tuned policies)."""

import json
import time

import pandas as pd
import streamlit as st

from morm_explorer.errors import MormError
from morm_explorer.jobs.backend import retry
from morm_explorer.policy.cost import estimate_ppo, time_left
from morm_explorer.policy.ppo_config import AGGREGATIONS, ALGORITHMS, PPOConfig
from morm_explorer.policy.ppo_jobs import (
    PPOJob,
    check_new_run,
    run_history,
    runs_without_jobs,
    trained_policies,
)
from morm_explorer.policy.soup import SoupJob
from morm_explorer.reward.report import list_reward_models
from morm_explorer.ui import ppo_figures as pf
from morm_explorer.ui.text import plain
from morm_explorer.workspace import sanitize_name
from pages.common import job_page, presenting, queue_note
from pages.policy_picker import checked_policy, pick_policy, remember

ws, backend = job_page(
    "Fine-tune",
    "Short RL runs (PPO, GRPO or RLOO) against a multi-objective reward model: rewards are "
    "scored per objective, standardized, and scalarized with your weights; PPO's value head "
    "keeps one value per objective, GRPO and RLOO compare each response with the others to "
    "its prompt. Constraints (objective ≥ τ) get a Lagrange multiplier each.")
DEFAULT = PPOConfig()
models = sorted(list_reward_models(ws), key=lambda m: -m["created_at"])
by_name = {m["name"]: m for m in models}
if not models:
    st.info("Train a reward model first (Reward models, or the demo model on Explore).")
    st.stop()


def saved_policies() -> list[str]:
    root = ws.root / "policies"
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) \
        if root.is_dir() else []


def cell(v: object) -> str:
    """A table cell as text: numbers to 3 decimals, "—" for none."""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


# -- launch ---------------------------------------------------------------------------------
def launch_form() -> None:
    """The new-run form (hidden in presentation mode)."""
    st.subheader("New run")
    rm = st.selectbox("Reward model", list(by_name), key="ft_model")
    objectives = list(by_name[rm]["objectives"])
    policy, revision, _ = pick_policy(
        ws, "Base policy", "ft_policy", remote_code=False,
        help="smollm2 is SmolLM2-135M-Instruct, shipped with the app; fine-tuned policies of "
             "earlier runs and the folders and hub names added before are listed too.")
    st.markdown("**Weights** (seeded from Explore's sliders)")
    # Explore keeps its sliders' values in "explore_weights"; when they moved since this form
    # was seeded, the form takes them again (its own values otherwise stay as the user set them).
    seed = {o: float(w) for o, w in (st.session_state.get("explore_weights") or {}).items()
            if o in objectives}
    if seed and st.session_state.get("ft_weights_seed") != seed:
        for o, w in seed.items():
            st.session_state[f"ft_w_{o}"] = w
        st.session_state["ft_weights_seed"] = seed
    for o in objectives:
        st.session_state.setdefault(f"ft_w_{o}", float(st.session_state.get(
            f"explore_w_{o}", round(1.0 / len(objectives), 2))))
    wcols = st.columns(len(objectives))
    weights = {o: wcols[i].slider(plain(o), 0.0, 1.0, step=0.05, key=f"ft_w_{o}")
               for i, o in enumerate(objectives)}
    schedule = st.toggle("Move the weights during the run (linear schedule)", key="ft_sched")
    end = {}
    if schedule:
        ecols = st.columns(len(objectives))
        end = {o: ecols[i].slider(f"{plain(o)} at the end", 0.0, 1.0, weights[o], 0.05,
                                  key=f"ft_wend_{o}") for i, o in enumerate(objectives)}
    scalarizer = st.radio("Scalarizer", ["weighted_sum", "chebyshev", "min"], key="ft_scal",
                          horizontal=True)
    algorithm = st.radio("Algorithm", ALGORITHMS, key="ft_algo", horizontal=True,
                         help="ppo: a value head per objective and GAE; grpo (group mean "
                              "baseline) and rloo (leave-one-out baseline) sample several "
                              "responses per prompt and need no value head")
    group = {}
    if algorithm != "ppo":
        g1, g2 = st.columns(2)
        group = {"group_size": int(g1.number_input("Responses per prompt", 2, 64,
                                                   DEFAULT.group_size, key="ft_group")),
                 "multi_objective_aggregation": g2.radio(
                     "Objectives combined", AGGREGATIONS, key="ft_agg",
                     help="sum_then_normalize: scalarize, then compare within the group; "
                          "normalize_then_sum (GDPO): standardize each objective within the "
                          "group, then combine")}
    standardize = st.toggle("Standardize rewards", value=True, key="ft_std",
                            help="z-scores with the reward model's stored statistics")
    constrained = st.multiselect("Constraints: objective ≥ τ (Lagrange multipliers)",
                                 objectives, key="ft_constrained")
    constraints = [{"objective": o, "threshold": float(st.number_input(
        f"{plain(o)} ≥", value=0.0, step=0.1, key=f"ft_tau_{o}"))} for o in constrained]
    with st.expander("Run settings", expanded=False):
        c1, c2 = st.columns(2)  # two columns: the launch column is narrow
        steps = c1.number_input("Steps", 1, 10_000, DEFAULT.steps, key="ft_steps")
        batch = c2.number_input("Prompts per step", 1, 512, DEFAULT.batch_size, key="ft_batch")
        mini = c1.number_input("Minibatch", 1, 512, DEFAULT.mini_batch_size, key="ft_mini")
        epochs = c2.number_input("Epochs per rollout", 1, 16, DEFAULT.ppo_epochs, key="ft_epochs")
        lr = c1.number_input("Learning rate", 1e-7, 1e-2, DEFAULT.lr, format="%.1e",
                             key="ft_lr")
        new_tokens = c2.number_input("Max new tokens", 4, 1024, DEFAULT.max_new_tokens,
                                     key="ft_tokens")
        kl = c1.number_input("KL coefficient β", 0.0, 10.0, DEFAULT.kl_coef, 0.01,
                             key="ft_kl")
        adaptive = c2.toggle("Adaptive β", value=DEFAULT.adaptive_kl, key="ft_adaptive")
        target_kl = c2.number_input("Target KL", 0.1, 100.0, DEFAULT.target_kl,
                                    key="ft_target", disabled=not adaptive)
        temperature = c1.number_input("Temperature", 0.1, 2.0, DEFAULT.temperature, 0.05,
                                      key="ft_temp")
        seed = c2.number_input("Seed", 0, 2**31 - 1, 0, key="ft_seed")
        prompts = c1.text_input("Prompts", "demo", key="ft_prompts",
                                help="'demo' or a prompt file on this machine")
        limit = c2.number_input("First K prompts (0: all)", 0, 100_000, 0, key="ft_limit")
        lora = st.toggle("LoRA", value=DEFAULT.lora, key="ft_lora",
                         help="LoRA adapters (the reference is the base with adapters off); "
                              "off: full fine-tune with a frozen copy as reference")
    name = st.text_input("Run name", value=f"ppo-{time.strftime('%m%d-%H%M')}", key="ft_name")
    try:
        safe = sanitize_name(name)
        if safe != name:
            st.caption(f"Saved as {plain(repr(safe))} (names keep to letters, digits, '.', "
                       "'_', '-').")
        cfg = PPOConfig(
            name=safe, policy=policy, reward_model=rm, prompts=prompts, prompt_limit=int(limit),
            weights=weights, scalarizer=scalarizer, standardize=standardize,
            weight_schedule=[{"step": 0, "weights": weights},
                             {"step": int(steps), "weights": end}] if schedule else [],
            constraints=constraints, steps=int(steps), batch_size=int(batch),
            mini_batch_size=int(min(mini, batch * group.get("group_size", 1))),
            ppo_epochs=int(epochs), lr=float(lr),
            lora=lora, kl_coef=float(kl), adaptive_kl=adaptive, target_kl=float(target_kl),
            max_new_tokens=int(new_tokens), temperature=float(temperature), seed=int(seed),
            algorithm=algorithm, **group)
    except MormError as e:
        st.error(plain(e))
        cfg = None
    if cfg is not None:
        devices = {w.device for w in getattr(backend, "workers", list)() if w.device}
        st.caption(estimate_ppo(cfg, "cuda" if "cuda" in devices else "cpu",
                                workspace=ws).sentence())
    if st.button("Launch", type="primary", disabled=cfg is None, key="ft_launch",
                 icon=":material/rocket_launch:"):
        source = checked_policy(ws, policy, revision)
        if source is None:
            return
        try:
            check_new_run(ws, cfg.name, backend.list(status=("queued", "running"),
                                                     kind=PPOJob.kind))
            st.session_state["ft_job"] = backend.submit(PPOJob(config={
                **cfg.to_dict(), "policy": source.ref}))
        except MormError as e:
            st.error(plain(e))
        else:
            remember(ws, source)
            st.rerun()


if presenting():
    live_col = st.container()
else:
    launch_col, live_col = st.columns([2, 3], gap="large")
    with launch_col:
        launch_form()


# -- live view of a run -----------------------------------------------------------------------
def samples_of(lines: list[str]) -> pd.DataFrame:
    rows = []
    for line in lines:
        if line.startswith("sample: "):
            try:
                rows.append(json.loads(line[len("sample: "):]))
            except json.JSONDecodeError:
                continue
    return pd.DataFrame(rows)


def run_views(metrics: pd.DataFrame, samples: pd.DataFrame, key: str,
              weights: bool = True) -> None:
    """A run's curves (scores, training, and the weights unless ``weights`` is off) and its
    latest sample generations; ``key`` prefixes the element keys."""
    if not metrics.empty:
        smooth = 3 if len(metrics) > 20 else 1
        st.plotly_chart(pf.scores_figure(metrics, smooth), key=f"{key}_scores")
        st.plotly_chart(pf.training_figure(metrics, smooth), key=f"{key}_training")
        if weights:
            st.plotly_chart(pf.weights_figure(metrics), key=f"{key}_weights")
    if not samples.empty:
        st.markdown("**Sample generations** (latest first)")
        st.dataframe(samples.iloc[::-1].head(30), hide_index=True, width="stretch",
                     key=f"{key}_samples")


def run_panel(job_id: str, polling: bool) -> None:
    info = backend.get(job_id)
    cfg = info.spec.get("config", {})
    seen = st.session_state.setdefault("ft_seen", {})
    before, seen[job_id] = seen.get(job_id), info.status
    if info.done and before in ("queued", "running"):
        st.rerun(scope="app")
    color = {"succeeded": "green", "failed": "red", "cancelled": "gray",
             "running": "blue"}.get(info.status, "orange")
    st.markdown(f"**{plain(cfg.get('name', '?'))}** :{color}-badge[{info.status}]")
    steps = (info.result or {}).get("steps", cfg.get("steps", "?"))
    ended = f"succeeded after {steps} steps" if info.status == "succeeded" else \
        f"{info.status}: {plain(info.message)}"
    st.progress(info.progress, text=ended if info.done else plain(info.message or info.status))
    curves = backend.metrics(job_id, wide=True)
    left = None if info.done or "time/step_s" not in curves else time_left(
        curves["time/step_s"].tolist(), int(cfg.get("steps", 0)))
    st.caption(f"job `{info.id}` · elapsed {fmt_seconds(info.elapsed(time.time()))}"
               + (f" · about {fmt_seconds(left)} left (from this run's steps)"
                  if left is not None else "")
               + (f" · device {plain(info.device)}" if info.device else ""))
    if note := queue_note(backend, info):
        st.caption(note)
    if not info.done and not presenting() and st.button("Cancel", key="ft_cancel",
                                                        icon=":material/stop:"):
        backend.cancel(job_id)
        st.rerun(scope="fragment")
    if info.status == "failed":
        st.code(info.error or "(no error recorded)", language=None, wrap_lines=True)
    # A job cancelled before it ever ran has nothing to resume.
    if info.status in ("failed", "cancelled") and info.attempts and not presenting() and st.button(
            "Resume", key="ft_resume", icon=":material/replay:",
            help="Submit the run again: it goes on from its last checkpoint."):
        st.session_state["ft_job_next"] = retry(backend, job_id)
        st.rerun(scope="app")
    lines = backend.logs(job_id)
    run_views(curves, samples_of(lines), "ft")
    other = [x for x in lines if not x.startswith("sample: ")]
    if other:
        st.code("\n".join(other[-8:]), language=None, wrap_lines=True)
    if polling and info.done:
        st.rerun(scope="app")


def folder_run_panel(name: str) -> None:
    """A finished run that has no job here (one made inside another job, such as the demo
    build): its curves and samples, read from its run folder."""
    curves, samples = run_history(ws, name)
    config = dict(trained_policies(ws)).get(name, {})
    weights = ", ".join(f"{plain(o)} {w:.2f}" for o, w in config.get("weights", {}).items())
    st.caption(f"{config.get('steps', '?')} steps against "
               f"{plain(config.get('reward_model', '?'))}"
               + (f" · weights {weights}" if weights else ""))
    run_views(curves, samples, "ft_folder", weights=False)


with live_col:
    st.subheader("Runs")
    runs = backend.list(kind=PPOJob.kind, limit=30)
    folder_runs = runs_without_jobs(
        ws, {j.spec.get("config", {}).get("name") for j in runs})
    if folder_runs:
        with st.expander(f"Runs made inside other jobs: the demo build, sweeps "
                         f"({len(folder_runs)})", expanded=not runs):
            folder_run_panel(st.selectbox("Finished run", folder_runs, key="ft_folder_run"))
    if not runs:
        st.caption("No RL run yet." if presenting() else
                   "No RL run yet: launch one on the left, or `morm rl train --submit`.")
    else:
        ids = {j.id: j for j in runs}
        if st.session_state.get("ft_job_next") in ids:  # a run just resumed
            st.session_state["ft_job"] = st.session_state.pop("ft_job_next")
        if st.session_state.get("ft_job") not in ids:
            # a tab's first view: the running run (launched anywhere), else the newest
            st.session_state["ft_job"] = next((j.id for j in runs if j.status == "running"),
                                              next((j.id for j in runs if not j.done),
                                                   runs[0].id))
        # no status in the label: a selectbox keeps an option's first label while it runs
        job_id = st.selectbox("Run", list(ids), key="ft_job", format_func=lambda i: (
            f"{ids[i].spec.get('config', {}).get('name', '?')} · "
            f"{time.strftime('%m-%d %H:%M', time.localtime(ids[i].created_at))}"))
        active = not ids[job_id].done
        st.fragment(run_panel, run_every=2.0 if active else None)(job_id, active)
        table = pd.DataFrame([{
            "run": j.spec.get("config", {}).get("name"), "status": j.status,
            "weights": ", ".join(f"{o} {w:.2f}" for o, w in
                                 j.spec.get("config", {}).get("weights", {}).items()),
            "steps": j.spec.get("config", {}).get("steps"),
            **{k.removeprefix("objective/scores/"): v for k, v in
               (j.result or {}).get("final", {}).items() if k.startswith("objective/scores/")},
            "created": time.strftime("%m-%d %H:%M", time.localtime(j.created_at)),
        } for j in runs])
        st.markdown("**Past runs** (final mean scores per objective; — where a run has none)")
        st.dataframe(table.astype(object).map(cell), hide_index=True, width="stretch",
                     key="ft_runs")

# -- soups -----------------------------------------------------------------------------------
def soup_form() -> None:
    st.caption("θ(λ) = (1 − λ) θ_a + λ θ_b over a grid of λ: a cheap approximation of the "
               "front between two runs from the same base (Rame et al. 2023). Every mix is "
               "sampled on the same prompts and scored; the samples become a candidate set "
               "for Explore.")
    pols = saved_policies()
    if len(pols) < 2:
        st.info("Needs two fine-tuned policies (two finished runs).")
    else:
        rm = st.selectbox("Reward model to score the mixes", list(by_name), key="soup_rm")
        c1, c2, c3 = st.columns(3)
        pa = c1.selectbox("Policy a (λ = 0)", pols, key="soup_a")
        pb = c2.selectbox("Policy b (λ = 1)", pols, index=1, key="soup_b")
        steps_l = c3.number_input("Grid points", 2, 21, 5, key="soup_points")
        soup_name = st.text_input("Candidate set name", f"soup-{pa}-{pb}", key="soup_name")
        if st.button("Launch soup", key="soup_launch"):
            try:
                lams = [i / (steps_l - 1) for i in range(int(steps_l))]
                backend.submit(SoupJob(name=soup_name, policy_a=pa, policy_b=pb, lambdas=lams,
                                       reward_model=rm))
                st.success("Soup job submitted; its result appears as a candidate set.")
            except MormError as e:
                st.error(plain(e))


if not presenting():
    with st.expander("Rewarded soup: interpolate two fine-tuned policies"):
        soup_form()
