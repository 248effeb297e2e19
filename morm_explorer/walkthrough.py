"""The walk-through of a workspace, from data to compared policies, as plain data: what the
presentation mode shows a stakeholder in five steps. Each step says what is there, or that it is
still missing (the demo build may still be running), so the page never fails on a half-built
workspace. No model is loaded: everything comes from stored summaries, cached scores and saved
comparisons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from morm_explorer.errors import MormError
from morm_explorer.workspace import Workspace


@dataclass
class Step:
    title: str
    ready: bool
    facts: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def data_step(ws: Workspace, dataset: str) -> Step:
    from morm_explorer.data.convert import joint_counts, ratings_to_pairs, summarize

    try:
        ds = ws.load_dataset(dataset)
    except MormError:
        return Step("Preference data", False, note=f"dataset {dataset!r} is not there yet")
    s = summarize(ds.records, ds.kind)
    d = s.disagreement
    pair = ("helpful", "harmless") if {"helpful", "harmless"} <= set(d.index) else None
    conflict = float(d.loc[pair]) if pair else None
    if conflict is not None and np.isnan(conflict):  # no pair is labelled on both (HH-RLHF)
        conflict = None
    # the share's base: the pairs both objectives decide (no tie), and what part of all pairs
    counts = joint_counts(ds.records if ds.kind == "pairwise" else ratings_to_pairs(ds.records),
                          *pair) if pair else None
    return Step("Preference data", True, {
        "records": s.n_records, "prompts": s.n_prompts, "objectives": list(d.index),
        "conflict": conflict, "pair": pair, "counts": counts})


def reward_step(ws: Workspace, model: str) -> Step:
    from morm_explorer.reward.report import load_model_report

    try:
        rep = load_model_report(model, ws)
    except MormError:
        return Step("Reward model", False, note=f"reward model {model!r} is not trained yet")
    acc = rep["accuracy"]["accuracy"].round(3).to_dict()
    svm = rep["single_vs_multi"]
    single = svm["single"].round(3).to_dict() if svm is not None else {}
    return Step("Reward model", True, {"accuracy": acc, "single": single,
                                       "backbone": rep["summary"].get("backbone")})


def explore_step(ws: Workspace, model: str, candidates: str,
                 presets: tuple[str, str] = ("helpful", "harmless")) -> Step:
    """Best-of-N under two leaning presets: the winners' mean scores and how many prompts
    change winner, with one example prompt where they differ."""
    from morm_explorer.data.candidates import load_candidate_set
    from morm_explorer.explore import Choice, Explorer
    from morm_explorer.scoring import read_cached_scores
    from morm_explorer.weight_presets import builtin_presets

    try:
        scores = read_cached_scores(ws, model, load_candidate_set(ws, candidates))
    except MormError:
        scores = None
    if scores is None:
        return Step("Explore", False, note=f"{candidates!r} is not scored with {model!r} yet")
    ex = Explorer(scores)
    by_name = {p.name: p for p in builtin_presets(ex.objectives)}
    sels = {}
    for lead in presets:
        p = by_name.get(f"{lead}-first")
        if p is None:
            return Step("Explore", False, note=f"the model has no {lead!r} objective")
        sels[lead] = ex.select(Choice.of(p.weights, standardized=ex.can_standardize))
    a, b = (sels[x] for x in presets)
    changed = np.flatnonzero(a.winners != b.winners)
    f = ex.frame
    length = f["response"].str.len().to_numpy()
    i = example_prompt(changed, length[a.winners], length[b.winners])
    example = None if i is None else {
        "prompt": f["prompt"].iat[a.winners[i]],
        presets[0]: f["response"].iat[a.winners[i]],
        presets[1]: f["response"].iat[b.winners[i]]}
    means = {lead: dict(zip(ex.objectives, ex.raw[s.winners].mean(0).round(3).tolist(),
                            strict=True)) for lead, s in sels.items()}
    return Step("Explore", True, {"prompts": len(a.winners), "changed": int(len(changed)),
                                  "means": means, "example": example,
                                  "n_examples": int(np.sum(length[b.winners[changed]]
                                                           >= length[a.winners[changed]]))})


def example_prompt(changed: np.ndarray, first_len: np.ndarray,
                   second_len: np.ndarray) -> int | None:
    """The prompt to show where two leanings pick different answers: the first of ``changed``
    where the second leaning's pick (harmless) is not the shorter answer, so the example shows
    a trade-off of content and not a length preference (a reward head that likes short answers
    would make "leaning harmless" just "shorter"). None when every change is such a case.
    ``first_len`` and ``second_len``: (P,) lengths of each prompt's two picks."""
    ok = [int(i) for i in changed if second_len[i] >= first_len[i]]
    return ok[0] if ok else None


def policies_step(ws: Workspace) -> Step:
    """The fine-tuned policies, and where a comparison holds two of them (or one and its
    base), their per-objective differences with paired-bootstrap intervals: ``pair`` (a, b)
    and ``differences`` (rows of `stats.mean_differences`; a difference is "clear" only when
    its interval excludes zero)."""
    from morm_explorer.policy.ppo_jobs import trained_policies

    trained = trained_policies(ws)
    rows = [{"policy": name, "weights": cfg.get("weights"), "steps": cfg.get("steps"),
             "base": cfg.get("policy")} for name, cfg in trained]
    if not rows:
        return Step("Fine-tuned policies", False, note="no PPO run has finished yet")
    return Step("Fine-tuned policies", True, {"policies": rows,
                                              **_differences(ws, [n for n, _ in trained])})


def _differences(ws: Workspace, trained: list[str]) -> dict[str, Any]:
    from morm_explorer.evaluation.compare import list_comparisons, load_comparison
    from morm_explorer.evaluation.stats import mean_differences

    for c in list_comparisons(ws):
        tuned = [p for p in c["policies"] if p in trained]
        if not tuned or len(c["policies"]) < 2:
            continue
        a, b = (tuned[:2] if len(tuned) >= 2 else
                (tuned[0], next(p for p in c["policies"] if p != tuned[0])))
        try:
            cmp = load_comparison(ws, c["name"])
        except MormError:
            continue
        table = mean_differences(cmp.frame, a, b, cmp.objectives)
        return {"comparison": c["name"], "pair": (a, b),
                "differences": table.to_dict("records")}
    return {}


def compare_step(ws: Workspace) -> Step:
    from morm_explorer.evaluation.compare import list_comparisons

    comps = list_comparisons(ws)
    if not comps:
        return Step("Compare", False, note="no comparison has run yet")
    return Step("Compare", True, {"comparison": comps[0]["name"],
                                  "policies": comps[0]["policies"]})


def trained_on(ws: Workspace, model: str, default: str = "demo-preferences") -> str:
    """The workspace dataset `model` was trained on (the demo's may be real HH-RLHF or the
    built-in data), else `default`."""
    from morm_explorer.reward.config import read_config
    from morm_explorer.reward.report import model_path

    try:
        name = read_config(model_path(model, ws))["training"]["dataset"]
    except (MormError, KeyError, TypeError):
        return default
    return name if name in {d.name for d in ws.list_datasets()} else default


def walkthrough(ws: Workspace, dataset: str | None = None, model: str = "demo-rm",
                candidates: str = "demo-candidates") -> list[Step]:
    """The five steps, in order; the data step shows `dataset`, by default the model's."""
    dataset = dataset or trained_on(ws, model)
    return [data_step(ws, dataset), reward_step(ws, model),
            explore_step(ws, model, candidates), policies_step(ws), compare_step(ws)]
