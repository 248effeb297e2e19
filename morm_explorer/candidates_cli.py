"""`morm cands ...` (candidate sets: import, sample, list, show, delete) and `morm score`
(score a candidate set with a reward model; optionally pick best-of-N winners by weights)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from dataclasses import fields

from morm_explorer.errors import MormError


def _ws(args):
    from morm_explorer.workspace import Workspace

    return Workspace(args.workspace)


def parse_weights(text: str | None) -> dict[str, float]:
    """``"helpful=0.5,harmless=0.3"`` -> {"helpful": 0.5, "harmless": 0.3}."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise MormError(f"expected objective=number, got {part!r}", field="weights")
    return out


def parse_constraints(items: list[str] | None):
    """``["harmless>=0.2"]`` -> [Constraint("harmless", 0.2)]."""
    from morm_explorer.objectives import Constraint

    out = []
    for item in items or []:
        m = re.fullmatch(r"\s*([A-Za-z][\w\-]*)\s*>=\s*(-?[\d.eE+\-]+)\s*", item)
        if not m:
            raise MormError(f"expected objective>=number, got {item!r}", field="constraint")
        out.append(Constraint(m.group(1), float(m.group(2))))
    return out


def cmd_import(args) -> int:
    from morm_explorer.data.candidates import read_candidates, save_candidate_set

    cset = read_candidates(args.file, args.fmt, default_source=args.source,
                           max_chars=args.max_chars, drop_bad=args.drop_bad,
                           max_bytes=args.max_bytes)
    info = save_candidate_set(_ws(args), args.name, cset, overwrite=args.overwrite)
    report = cset.report
    print(f"saved candidate set {info.name!r}: {info.n_candidates} candidates for "
          f"{info.n_prompts} prompts from {', '.join(info.sources)}")
    if report is not None and (report.n_bad_rows or report.warnings):
        print(f"{report.n_bad_rows} bad rows dropped, {len(report.warnings)} warnings")
        for issue in report.issues[:20]:
            print(f"  {issue}")
    return 0


def cmd_list(args) -> int:
    from morm_explorer.data.candidates import list_candidate_sets

    infos = list_candidate_sets(_ws(args))
    if not infos:
        print("no candidate sets yet: `morm demo`, `morm cands import` or `morm cands sample`")
    for c in infos:
        print(f"{c.name:28s} {c.n_candidates:7d} candidates {c.n_prompts:6d} prompts  "
              f"{', '.join(c.sources)[:60]}")
    return 0


def cmd_show(args) -> int:
    from morm_explorer.data.candidates import candidate_set_info, load_candidate_set

    ws = _ws(args)
    info = candidate_set_info(ws, args.name)
    cset = load_candidate_set(ws, args.name)
    print(f"{info.name}: {info.n_candidates} candidates, {info.n_prompts} prompts "
          f"(fingerprint {info.fingerprint}); origin: {info.origin}")
    print(cset.frame.groupby("source").size().rename("candidates").to_string())
    for r in cset.frame.head(args.head).itertuples():
        print(f"\n[{r.prompt_id}] {r.prompt[:200]}\n  ({r.source}) {r.response[:300]}")
    return 0


def cmd_delete(args) -> int:
    from morm_explorer.data.candidates import candidate_set_info, delete_candidate_set

    ws = _ws(args)
    info = candidate_set_info(ws, args.name)
    delete_candidate_set(ws, info.name)
    print(f"deleted candidate set {info.name!r}")
    return 0


def cmd_sample(args) -> int:
    from morm_explorer.jobs.cli import submit_job
    from morm_explorer.jobs.context import detect_device
    from morm_explorer.policy.jobs import SampleCandidatesJob, sample_candidates
    from morm_explorer.policy.source import check_policy_source, remember_policy

    sampling = {k: getattr(args, k) for k in ("n", "temperature", "top_p", "max_new_tokens",
                                              "seed", "batch_size")}
    spec = SampleCandidatesJob(name=args.name, policy=args.policy, prompts=args.prompts,
                               limit=args.limit, sampling=sampling, device=args.device,
                               overwrite=args.overwrite,
                               trust_remote_code=args.trust_remote_code)
    ws = _ws(args)
    source = check_policy_source(args.policy, args.revision, args.trust_remote_code,
                                 workspace=ws)  # before anything is queued or loaded
    spec = dataclasses.replace(spec, policy=source.ref)
    if args.submit:
        rc = submit_job(ws, spec)
        remember_policy(ws, source)  # offered by the app's pickers from now on
        return rc
    device = detect_device() if args.device == "auto" else args.device
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\r  {done}/{total}", end="", file=sys.stderr, flush=True)

    info = sample_candidates(ws, spec, device=device, progress=progress)
    remember_policy(ws, source)
    print(f"\nsaved candidate set {info.name!r}: {info.n_candidates} candidates, "
          f"{info.n_prompts} prompts in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_score(args) -> int:
    import numpy as np

    from morm_explorer.jobs.cli import submit_job
    from morm_explorer.objectives import scalarize, standardize, violation, weight_vector
    from morm_explorer.scoring import ScoreCandidatesJob, score_candidate_set
    from morm_explorer.selection import Selector

    ws = _ws(args)
    if args.submit:
        spec = ScoreCandidatesJob(model=args.model, candidates=args.candidates,
                                  batch_size=args.batch_size, device=args.device,
                                  refresh=args.refresh)
        return submit_job(ws, spec)
    result = score_candidate_set(ws, args.model, args.candidates, device=args.device,
                                 batch_size=args.batch_size, refresh=args.refresh)
    frame = result.candidates.frame
    scores = result.frame()
    how = "from the cache" if result.cached else f"in {result.seconds:.1f} s"
    print(f"scored {len(frame):,} candidates of {args.candidates!r} with {result.model!r} "
          f"{how}")
    print(scores.describe().T[["mean", "std", "min", "max"]].round(3).to_string())
    print("\nmean score by source:")
    print(scores.groupby(frame["source"].to_numpy()).mean().round(3).to_string())
    out = frame[["prompt_id", "source"]].join(scores)
    if args.weights:
        objectives = result.objectives
        w = weight_vector(parse_weights(args.weights), objectives)
        values = result.values
        if args.standardize:
            if not result.stats:
                raise MormError("this model stores no score statistics", field="standardize")
            values = standardize(values, result.stats)
        u = scalarize(values, w, args.scalarizer)
        sel = Selector(frame["prompt_id"].to_numpy())
        shortfall = violation(values, objectives, parse_constraints(args.constraint)) \
            if args.constraint else None
        winners = sel.winners(u, sel.eligible(shortfall))
        out["utility"] = u
        out["winner"] = np.isin(np.arange(len(frame)), winners)
        shown = ", ".join(f"{o}={x:.3f}" for o, x in zip(objectives, w, strict=True))
        print(f"\nbest-of-N winners under weights {shown} "
              f"({args.scalarizer}{', standardized' if args.standardize else ''}):")
        print(frame.iloc[winners]["source"].value_counts().to_string())
        print("mean winner scores: " + ", ".join(
            f"{o} {v:.3f}" for o, v in zip(objectives, result.values[winners].mean(0),
                                            strict=True)))
        if shortfall is not None:
            infeasible = int((shortfall[winners] > 0).sum())
            print(f"prompts with no candidate meeting the constraints (least-violating "
                  f"winner): {infeasible}")
    if args.out:
        _write_table(out.join(frame[["prompt", "response"]]), args.out)
        print(f"wrote {args.out}")
    return 0


def _write_table(frame, path: str) -> None:
    from morm_explorer.workspace import atomic_write_bytes, atomic_write_jsonl

    if path.endswith(".csv"):
        atomic_write_bytes(path, frame.to_csv(index=False).encode("utf-8"))
    elif path.endswith((".parquet", ".pq")):
        import io

        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        atomic_write_bytes(path, buf.getvalue())
    elif path.endswith((".jsonl", ".json")):
        atomic_write_jsonl(path, json.loads(frame.to_json(orient="records")))
    else:
        raise MormError("--out must end in .csv, .parquet or .jsonl", field="out")


def add_candidate_commands(groups: argparse._SubParsersAction) -> None:
    from morm_explorer.data.readers import FORMATS, add_size_flags

    cands = groups.add_parser("cands", help="candidate sets: import, sample, list, show, delete")
    sub = cands.add_subparsers(dest="command", metavar="ACTION", required=True)

    p = sub.add_parser("import", help="validate a candidate file (prompt_id, prompt, response, "
                       "source, category) and save it as a named set")
    p.add_argument("file", help="a JSONL, CSV or Parquet file")
    p.add_argument("--name", required=True, help="candidate set name in the workspace")
    p.add_argument("--format", dest="fmt", choices=[f for f in FORMATS if f != "hf"])
    p.add_argument("--source", help="source of rows without one (default: the file name)")
    add_size_flags(p)
    p.add_argument("--drop-bad", action="store_true", help="drop bad rows instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="replace a set of that name")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("sample", help="sample N responses per prompt from a policy "
                       "(default SmolLM2-135M-Instruct) into a candidate set")
    p.add_argument("--name", required=True, help="candidate set name")
    p.add_argument("--policy", default="smollm2", help="a causal LM: smollm2 (built in), a "
                   "policy fine-tuned in the workspace, a local folder or a hub name "
                   "(default: %(default)s)")
    p.add_argument("--revision", help="branch, tag or commit of a hub model (default: main)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model's own "
                   "code (its config's auto_map); only for code you have read and trust")
    p.add_argument("--prompts", default="demo", help="'demo' (the built-in prompt set) or a "
                   "JSONL/CSV/Parquet file with a prompt column (default: %(default)s)")
    p.add_argument("--limit", type=int, default=0, help="first this many prompts (0: all)")
    from morm_explorer.policy.config import SamplingConfig

    for f in fields(SamplingConfig):
        if f.name in ("n", "temperature", "top_p", "max_new_tokens", "seed", "batch_size"):
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default),
                           default=f.default, help=f"(default: {f.default})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--submit", action="store_true", help="run as a job on the worker")
    p.add_argument("--overwrite", action="store_true", help="replace a set of that name")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("list", help="candidate sets in the workspace")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="counts and the first candidates of a set")
    p.add_argument("name")
    p.add_argument("--head", type=int, default=3, help="candidates to print")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("delete", help="delete a candidate set")
    p.add_argument("name")
    p.set_defaults(func=cmd_delete)

    p = groups.add_parser("score", help="score a candidate set with a reward model (cached); "
                          "with --weights, pick each prompt's best-of-N winner")
    p.add_argument("--model", required=True, help="reward model name or folder")
    p.add_argument("--candidates", required=True, help="candidate set name")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--refresh", action="store_true", help="ignore cached scores")
    p.add_argument("--submit", action="store_true", help="run as a job on the worker")
    p.add_argument("--weights", help="scalarization weights, e.g. helpful=0.5,harmless=0.5 "
                   "(normalized to sum 1)")
    p.add_argument("--scalarizer", default="weighted_sum",
                   choices=["weighted_sum", "chebyshev", "min"])
    p.add_argument("--standardize", action="store_true", help="z-score each objective with "
                   "the model's stored statistics before scalarizing")
    p.add_argument("--constraint", action="append", help="objective>=threshold (repeatable)")
    p.add_argument("--out", help="write candidates with scores to .csv, .parquet or .jsonl")
    p.set_defaults(func=cmd_score)
