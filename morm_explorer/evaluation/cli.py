"""`morm compare run|list|show` and `morm report comparison|session`: what the Compare page
and the report buttons of Compare and Evaluate do, from the command line.

`morm compare run` builds a `CompareJob` from its flags (the job's field names, dashed or not;
the sampling flags are `SamplingConfig`'s) and, like `morm ppo train`, runs it here through
the job system or, with ``--submit``, queues it for the worker. `morm compare show` prints the
Compare page's tables: per policy the mean score per objective with its 95% t-interval over
prompts, and the paired win rates against a baseline with their bootstrap intervals (the
training reward model's and, where there is one, the held-out judge's). The reports are the
pages' self-contained HTML files, written atomically. Rating sessions are `session_cli`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import pandas as pd

from morm_explorer.checks import check_int
from morm_explorer.errors import MormError


def open_workspace(args):
    from morm_explorer.workspace import Workspace

    return Workspace(args.workspace)


def names(text: str) -> list[str]:
    """``"a, b,c"`` -> ["a", "b", "c"] (a comma-separated flag's values)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def flags(name: str) -> list[str]:
    """A field's flag in both spellings, ``--reward-model`` and ``--reward_model``."""
    return list(dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"]))


def fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def records(frame: pd.DataFrame) -> list[dict]:
    """A frame as JSON-ready rows (NaN -> null)."""
    return json.loads(frame.to_json(orient="records"))


def comparison(ws, name: str):
    """The saved comparison ``name``; an unknown name lists the ones there are."""
    from morm_explorer.evaluation.compare import list_comparisons, load_comparison

    known = [c["name"] for c in list_comparisons(ws)]
    if name not in known:
        raise MormError(f"no comparison named {name!r}; saved: "
                        f"{', '.join(known) or 'none yet (morm compare run)'}",
                        field="comparison")
    return load_comparison(ws, name)


# -- morm compare -----------------------------------------------------------------------------


def _check_before_queueing(ws, spec) -> None:
    """What would make the job fail at once, refused before anything is queued or loaded."""
    from morm_explorer.evaluation.compare import COMPARISONS, MANIFEST
    from morm_explorer.policy.jobs import load_prompts
    from morm_explorer.reward.report import model_path

    if (ws.artifact_dir(COMPARISONS, spec.name) / MANIFEST).is_file() and not spec.overwrite:
        raise MormError(f"a comparison named {spec.name!r} exists; choose another --name or "
                        "pass --overwrite", field="name")
    for fld in ("reward_model", "judge_model"):
        ref = getattr(spec, fld)
        if ref:
            try:
                model_path(ref, ws)
            except MormError as e:
                raise MormError(e.message, field=fld) from None
    if not load_prompts(spec.prompts, spec.limit):
        raise MormError("no prompts to sample", field="prompts")


def cmd_compare_run(args) -> int:
    from morm_explorer.evaluation.compare import CompareJob
    from morm_explorer.jobs.cli import submit_job
    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.policy.source import check_policy_source, remember_policy

    ws = open_workspace(args)
    sampling = {k: getattr(args, k) for k in ("n", "temperature", "top_p", "max_new_tokens",
                                              "seed", "batch_size")}
    spec = CompareJob(name=args.name, policies=args.policies, prompts=args.prompts,
                      limit=args.limit, sampling=sampling, reward_model=args.reward_model,
                      judge_model=args.judge_model or "", base_policy=args.base_policy or "",
                      device=args.device, overwrite=args.overwrite,
                      trust_remote_code=args.trust_remote_code)
    sources = [check_policy_source(p, trust_remote_code=args.trust_remote_code, workspace=ws)
               for p in spec.policies]  # each checked before anything is queued or loaded
    spec = dataclasses.replace(spec, policies=[s.ref for s in sources])
    _check_before_queueing(ws, spec)
    check_int("n_boot", args.n_boot, 1)
    if args.submit:
        rc = submit_job(ws, spec, where="on the Compare page")
    else:
        print(f"comparing {len(spec.policies)} policies on {spec.prompts} prompts "
              f"({spec.limit or 'all'}) x {spec.sampling['n']} samples here; --submit queues "
              "it as a job instead", flush=True)
        t0 = time.perf_counter()
        info = run_inline(ws, spec)
        print(f"job {info.id} {info.status} in {time.perf_counter() - t0:.1f} s")
        if info.status != "succeeded":
            print(info.error or "", file=sys.stderr)
            return 1
        rc = print_comparison(comparison(ws, spec.name), n_boot=args.n_boot)
    for source in sources:  # offered by the app's policy pickers from now on
        remember_policy(ws, source)
    return rc


def cmd_compare_list(args) -> int:
    from morm_explorer.evaluation.compare import list_comparisons

    rows = list_comparisons(open_workspace(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no comparisons yet: `morm compare run`")
    for c in rows:
        print(f"{c['name']:28s} {fmt_time(c['created_at'])}  {c['n_prompts']:4d} prompts  "
              f"rm {c['reward_model']}" + (f", judge {c['judge_model']}" if c["judge_model"]
                                           else "") + f"  {', '.join(c['policies'])}")
    return 0


def _with_ci(value: float, low: float, high: float, pct: bool = False) -> str:
    f = (lambda x: f"{x:.1%}") if pct else (lambda x: f"{x:.3f}")
    if math.isnan(value):
        return "-"
    return f(value) + ("" if math.isnan(low) else f" [{f(low)}, {f(high)}]")


def summary_text(summary: pd.DataFrame, objectives: list[str]) -> str:
    """Per policy: mean [95% CI] per objective, KL from the base [CI], tokens, prompts."""
    cols = {o: [_with_ci(r[o], r[f"{o}_low"], r[f"{o}_high"]) for _, r in summary.iterrows()]
            for o in objectives}
    if "kl" in summary:
        cols["KL from base"] = [_with_ci(r["kl"], r["kl_low"], r["kl_high"])
                                for _, r in summary.iterrows()]
    table = pd.DataFrame(cols, index=summary.index)
    if "n_tokens" in summary:
        table["tokens"] = summary["n_tokens"].round(1)
    table["prompts"] = summary["n_prompts"].astype(int)
    return table.reset_index().to_string(index=False)


def wins_text(wins: pd.DataFrame) -> str:
    """Per (policy, objective): win rate [paired bootstrap CI], win / tie / loss shares."""
    if wins.empty:
        return "(no paired prompts)"
    table = pd.DataFrame({
        "policy": wins["policy"], "objective": wins["objective"],
        "win rate": [_with_ci(r.rate, r.ci_low, r.ci_high, pct=True) for r in
                     wins.itertuples()],
        "win": wins["win"].map("{:.0%}".format), "tie": wins["tie"].map("{:.0%}".format),
        "loss": wins["loss"].map("{:.0%}".format), "prompts": wins["n"]})
    return table.to_string(index=False)


def comparison_tables(cmp, baseline: str, n_boot: int) -> dict[str, pd.DataFrame | None]:
    """The Compare page's tables: summaries and win rates, the training reward model's and the
    held-out judge's (None without one)."""
    from morm_explorer.evaluation.stats import policy_summary, win_rates

    frame, objs, jobjs = cmp.frame, cmp.objectives, cmp.judge_objectives
    return {"summary": policy_summary(frame, objs),
            "wins": win_rates(frame, baseline, objs, n_boot=n_boot),
            "judge_summary": policy_summary(frame, jobjs, prefix="judge:") if jobjs else None,
            "judge_wins": (win_rates(frame, baseline, jobjs, prefix="judge:", n_boot=n_boot)
                           if jobjs else None)}


def print_comparison(cmp, baseline: str | None = None, n_boot: int = 2000,
                     as_json: bool = False) -> int:
    check_int("n_boot", n_boot, 1)
    baseline = baseline or cmp.baseline
    tables = comparison_tables(cmp, baseline, n_boot)
    m = cmp.manifest
    judge = (m.get("judge_model") or {}).get("name")
    if as_json:
        out = {"name": cmp.name, "created_at": cmp.created_at, "baseline": baseline,
               "policies": m["policies"], "reward_model": m["reward_model"],
               "judge_model": m.get("judge_model"), "base_policy": m["base_policy"],
               "sampling": m["sampling"], "prompts": m["prompts"],
               "n_prompts": m["n_prompts"], "candidate_set": m["candidate_set"]}
        for key, table in tables.items():
            out[key] = None if table is None else records(
                table.reset_index() if key.endswith("summary") else table)
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"comparison {cmp.name} (run {fmt_time(cmp.created_at)}): {m['n_prompts']} prompts "
          f"from {m['prompts']}, {m['sampling']['n']} samples each; KL measured from "
          f"{m['base_policy']}; candidate set {m['candidate_set']}")
    for p in m["policies"]:
        w = p.get("weights")
        print(f"  {p['label']} ({p['kind']}" + (f", weights {json.dumps(w)}" if w else "")
              + (f", trained on {p['reward_model']}" if p.get("reward_model") else "")
              + f"): {p['ref']}")
    for who, name, objs, summary, wins in (
            ("training reward model", m["reward_model"]["name"], cmp.objectives,
             tables["summary"], tables["wins"]),
            ("held-out judge", judge, cmp.judge_objectives, tables["judge_summary"],
             tables["judge_wins"])):
        if summary is None:
            continue
        print(f"\nscores by the {who} {name} (mean [95% t-interval] over prompts):")
        print(summary_text(summary, objs))
        print(f"\nwin rates against {baseline} by the {who} (per prompt the samples are "
              "averaged; a tie counts half; paired bootstrap 95% interval over prompts):")
        print(wins_text(wins))
    return 0


def print_details(cmp, baseline: str, objective: str, by_category: bool, examples: int
                  ) -> None:
    """Per-category scores, and the ``examples`` prompts where the first other policy differs
    most from ``baseline`` on ``objective``, every policy's responses in full."""
    from morm_explorer.evaluation.stats import largest_differences, slices

    if by_category:
        for category, part in slices(cmp.frame, cmp.objectives).groupby(level=0, sort=False):
            print(f"\ncategory {category}:\n"
                  + summary_text(part.droplevel(0), cmp.objectives))
    if not examples:
        return
    other = next(p for p in cmp.policies if p != baseline)
    diffs = largest_differences(cmp.frame, other, baseline, objective).head(examples)
    for r in diffs.itertuples():
        print(f"\n[{r.prompt_id}] {other} - {baseline} on {objective}: {r.diff:+.3f}\n"
              f"{r.prompt}")
        rows = cmp.frame[cmp.frame["prompt_id"] == r.prompt_id].rename(
            columns={f"rm:{objective}": "score"})
        for s in rows.itertuples():
            print(f"  ({s.policy}, sample {s.sample}, {objective} {s.score:.3f}) "
                  f"{s.response}")


def cmd_compare_show(args) -> int:
    cmp = comparison(open_workspace(args), args.name)
    for fld, value, allowed in (("baseline", args.baseline, cmp.policies),
                                ("objective", args.objective, cmp.objectives)):
        if value and value not in allowed:
            raise MormError(f"{value!r} is not one of {allowed}", field=fld)
    check_int("examples", args.examples, 0)
    rc = print_comparison(cmp, args.baseline, args.n_boot, args.json)
    if not args.json:
        print_details(cmp, args.baseline or cmp.baseline, args.objective or cmp.objectives[0],
                      args.by_category, args.examples)
    return rc


# -- morm report ------------------------------------------------------------------------------


def _html_out(out: str | None, default: str) -> Path:
    path = Path(out or default)
    if path.suffix.lower() not in (".html", ".htm"):
        raise MormError(f"a report is one HTML file: give a name ending in .html, got {path}",
                        field="out")
    return path


def cmd_report_comparison(args) -> int:
    from morm_explorer.evaluation.report import comparison_report
    from morm_explorer.evaluation.stats import soup_curve

    ws = open_workspace(args)
    cmp = comparison(ws, args.name)
    out = _html_out(args.out, f"{cmp.name}-report.html")
    for fld, value, allowed in (("baseline", args.baseline, cmp.policies),
                                ("objective", args.objective, cmp.objectives)):
        if value and value not in allowed:
            raise MormError(f"{value!r} is not one of {allowed}", field=fld)
    check_int("n_boot", args.n_boot, 1)
    check_int("n_examples", args.n_examples, 0)
    examples = names(args.examples) if args.examples else None
    unknown = sorted(set(examples or ()) - set(cmp.frame["prompt_id"]))
    if unknown:
        raise MormError(f"prompts not in the comparison: {unknown[:5]}", field="examples")
    soup = None
    if args.soup:
        soup = soup_curve(ws, args.soup, cmp.manifest["reward_model"]["name"])
        if soup is None:
            raise MormError(f"no soup samples in a candidate set named {args.soup!r} "
                            "(morm ppo soup makes them)", field="soup")
    path = comparison_report(cmp, out, baseline=args.baseline, objective=args.objective,
                             examples=examples, n_examples=args.n_examples, soup=soup,
                             n_boot=args.n_boot)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, one HTML file, no server needed)")
    return 0


def cmd_report_session(args) -> int:
    from morm_explorer.evaluation.session_report import session_report
    from morm_explorer.evaluation.sessions import get_session

    ws = open_workspace(args)
    info = get_session(ws, args.name)
    out = _html_out(args.out, f"{info.name}-report.html")
    path = session_report(ws, info.name, out, reward_model=args.reward_model)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, one HTML file, no server needed)")
    return 0


# -- the parsers ------------------------------------------------------------------------------


def _add_compare_run(sub: argparse._SubParsersAction) -> None:
    from morm_explorer.policy.config import SamplingConfig
    from morm_explorer.reward.cli import field_docs

    p = sub.add_parser("run", help="sample 2-4 policies on the same prompts and seeds, score "
                       "them with the reward model (and a held-out judge), measure KL")
    p.add_argument("--name", required=True, help="name of the comparison (its samples are "
                   "the candidate set compare-<name>)")
    p.add_argument("--policies", required=True, type=names, help="2-4 comma-separated "
                   "policies: smollm2, policies fine-tuned in the workspace, folders, hub names "
                   "(org/name[@revision]); the first is the baseline")
    p.add_argument(*flags("reward_model"), dest="reward_model", required=True,
                   help="the reward model the policies were trained against (name or folder)")
    p.add_argument(*flags("judge_model"), dest="judge_model", help="a held-out judge reward "
                   "model the policies were not optimized against (optional)")
    p.add_argument("--prompts", default="demo", help="'demo', 'demo-heldout', 'demo-train' or "
                   "a JSONL/CSV/Parquet file with a prompt column (default: %(default)s)")
    p.add_argument("--limit", type=int, default=24, help="first this many prompts (0: all; "
                   "default: %(default)s, as on the page)")
    docs = field_docs(SamplingConfig)
    defaults = {"n": 2, "max_new_tokens": 64}  # the Compare page's
    for f in dataclasses.fields(SamplingConfig):
        if f.name != "system":
            default = defaults.get(f.name, f.default)
            p.add_argument(*flags(f.name), dest=f.name, type=type(f.default), default=default,
                           help=f"{docs.get(f.name, '')} (default: {default})")
    p.add_argument(*flags("base_policy"), dest="base_policy", help="policy the KL is measured "
                   "from (default: the base the policies were fine-tuned from, else the first)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(*flags("trust_remote_code"), dest="trust_remote_code", action="store_true",
                   help="run the policies' own code (a config's auto_map): only for code you "
                   "have read and trust")
    p.add_argument("--overwrite", action="store_true", help="replace a comparison of that name")
    p.add_argument("--submit", action="store_true", help="run as a job on the worker (follow "
                   "it with morm jobs show, or on the Compare page)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the win "
                   "rates printed at the end (default: %(default)s)")
    p.set_defaults(func=cmd_compare_run)


def add_evaluation_commands(groups: argparse._SubParsersAction) -> None:
    """Add ``morm compare run|list|show``, ``morm session ...`` (`session_cli`) and ``morm
    report comparison|session``."""
    from morm_explorer.evaluation.session_cli import add_session_commands

    compare = groups.add_parser("compare", help="compare policies on the same prompts: run, "
                                "list, show")
    sub = compare.add_subparsers(dest="command", metavar="ACTION", required=True)
    _add_compare_run(sub)
    p = sub.add_parser("list", help="saved comparisons, newest first")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=cmd_compare_list)
    p = sub.add_parser("show", help="a comparison's scores with intervals and paired win "
                       "rates")
    p.add_argument("name", help="comparison name (from morm compare list)")
    p.add_argument("--baseline", help="policy the win rates are against (default: the first)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default: "
                   "%(default)s)")
    p.add_argument("--by-category", action="store_true", help="the scores per prompt "
                   "category too")
    p.add_argument("--examples", type=int, default=0, help="print this many prompts where "
                   "the policies differ most, with every response (default: %(default)s)")
    p.add_argument("--objective", help="objective of --examples (default: the first)")
    p.add_argument("--json", action="store_true", help="print the tables as JSON")
    p.set_defaults(func=cmd_compare_show)
    add_session_commands(groups)

    report = groups.add_parser("report", help="a comparison's or a rating session's report: "
                               "one self-contained HTML file")
    sub = report.add_subparsers(dest="command", metavar="ACTION", required=True)
    p = sub.add_parser("comparison", help="the Compare page's report")
    p.add_argument("name", help="comparison name")
    p.add_argument("--out", help="HTML file to write (default: NAME-report.html)")
    p.add_argument("--baseline", help="policy the win rates are against (default: the first)")
    p.add_argument("--objective", help="objective of the detail figures and the chosen "
                   "examples (default: the first)")
    p.add_argument("--examples", help="comma-separated prompt ids to show side by side "
                   "(default: where the policies differ most)")
    p.add_argument("--n-examples", type=int, default=3, help="examples chosen by default "
                   "(default: %(default)s)")
    p.add_argument("--soup", help="candidate set of a soup run to draw as a curve")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default: "
                   "%(default)s)")
    p.set_defaults(func=cmd_report_comparison)
    p = sub.add_parser("session", help="the Evaluate page's report of a rating session")
    p.add_argument("name", help="session name")
    p.add_argument("--out", help="HTML file to write (default: NAME-report.html)")
    p.add_argument(*flags("reward_model"), dest="reward_model", help="compare the raters with "
                   "this reward model too")
    p.set_defaults(func=cmd_report_session)
