"""`morm session create|list|results|export|close`: the Evaluate page's rating sessions from the
command line. Raters still vote in the app (the link `create` prints opens the rating view
alone); these commands make a session, follow it, read its statistics and export its votes.

`create`'s flags are the fields of `SessionSpec` (dashed or not; lists comma-separated). Its
candidate set is ``--candidates SET`` or the samples of ``--comparison NAME``; the objectives
default to those of the comparison's reward model, else of the newest reward model, as on the
page. `export` writes what the page's download buttons give, atomically: preference pairs
(JSONL, to retrain a reward model on), the votes as CSV, or LLM Comparator JSON; or it saves
the pairs as a workspace dataset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from morm_explorer.errors import MormError
from morm_explorer.evaluation.cli import flags, fmt_time, names, open_workspace, records

FORMATS = {"pairs": ".jsonl", "csv": ".csv", "llm-comparator": ".json"}
RESULT_TITLES = {
    "win_rates": "win rates per objective (ties count half; Wilson 95% intervals)",
    "agreement": "agreement between raters (Fleiss' kappa, Krippendorff's alpha; Cohen's "
                 "kappa for two raters)",
    "position": "position bias: how often the response shown as A wins",
    "reward_model": "raters vs the reward model: share of decided votes where the model's "
                    "score difference points the same way"}


def _objectives(ws, args, comparison_objectives: list[str] | None) -> list[str]:
    from morm_explorer.reward.report import list_reward_models

    if args.objectives:
        return args.objectives
    if comparison_objectives:
        return comparison_objectives
    models = sorted(list_reward_models(ws), key=lambda m: -m["created_at"])
    if not models:
        raise MormError("no reward model to take the objectives from: pass --objectives, "
                        "e.g. helpful,harmless", field="objectives")
    return list(models[0]["objectives"])


def cmd_create(args) -> int:
    from morm_explorer.evaluation.compare import candidate_set_name
    from morm_explorer.evaluation.session_spec import check_session_name
    from morm_explorer.evaluation.sessions import create_session, session_link

    ws = open_workspace(args)
    check_session_name(args.name)
    if bool(args.candidates) == bool(args.comparison):
        raise MormError("give the responses to rate: --candidates SET or --comparison NAME "
                        "(one of the two)", field="candidates")
    objectives = None
    cset = args.candidates
    if args.comparison:
        from morm_explorer.evaluation.cli import comparison

        cmp = comparison(ws, args.comparison)
        cset, objectives = candidate_set_name(cmp.name), cmp.objectives
    info = create_session(
        ws, args.name, cset, objectives=_objectives(ws, args, objectives),
        policies=args.policies or None, raters=args.raters, prompts=args.prompts,
        items_per_prompt=args.items_per_prompt, limit_prompts=args.limit_prompts,
        pairs_per_rater=args.pairs_per_rater, seed=args.seed,
        reveal_after_vote=args.reveal_after_vote)
    spec, skipped = info.spec, info.summary.get("skipped", {})
    print(f"created rating session {info.name!r}: {info.n_items} pairs from "
          f"{info.summary.get('n_prompts')} prompts of {spec.candidate_set}; policies "
          f"{', '.join(spec.policies)}; objectives {', '.join(spec.objectives)}; policy names "
          + ("shown to a rater after each vote" if spec.reveal_after_vote else "never shown"))
    left = {k: v for k, v in skipped.items() if v}
    if left:
        print("skipped: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in left.items()))
    base = args.base_url
    print("raters open (the rating view alone):")
    for rater in spec.raters or ("YOUR-NAME",):
        print(f"  {session_link(base, info.name, rater)}")
    return 0


def cmd_list(args) -> int:
    from morm_explorer.evaluation.sessions import list_sessions

    sessions = list_sessions(open_workspace(args))
    if args.json:
        print(json.dumps([{"name": s.name, "status": s.status, "created_at": s.created_at,
                           "closed_at": s.closed_at, "n_items": s.n_items,
                           "n_raters": s.n_raters, "n_votes": s.n_votes,
                           "spec": s.spec.to_dict(), "summary": s.summary} for s in sessions],
                         indent=2))
        return 0
    if not sessions:
        print("no rating sessions yet: `morm session create`")
    for s in sessions:
        print(f"{s.name:24s} {s.status:6s} {fmt_time(s.created_at)}  {s.n_items:4d} pairs "
              f"{s.n_raters:3d} raters {s.n_votes:5d} votes  {s.spec.candidate_set}: "
              f"{', '.join(s.spec.policies)} on {', '.join(s.spec.objectives)}")
    return 0


def cmd_results(args) -> int:
    from morm_explorer.evaluation.agreement import results
    from morm_explorer.evaluation.sessions import get_session, progress

    ws = open_workspace(args)
    info = get_session(ws, args.name)
    prog = progress(ws, info.name)
    res = results(ws, info.name, reward_model=args.reward_model)
    if args.json:
        print(json.dumps({"name": info.name, "status": info.status, "n_items": info.n_items,
                          "n_votes": info.n_votes, "progress": records(prog),
                          **{k: records(v) for k, v in res.items()}}, indent=2))
        return 0
    print(f"session {info.name} ({info.status}): {info.n_items} pairs, {info.n_votes} votes "
          f"from {info.n_raters} raters")
    prog["last_vote_at"] = [fmt_time(t) if t == t else "-" for t in prog["last_vote_at"]]
    print("\nprogress per rater:\n" + (prog.to_string(index=False) if len(prog)
                                       else "(no rater yet)"))
    for key, title in RESULT_TITLES.items():
        table = res.get(key)
        if table is None or (key == "reward_model" and not args.reward_model):
            continue
        print(f"\n{title}:\n" + (table.round(3).to_string(index=False, na_rep="-") if len(table)
                                 else "(no votes yet)"))
    return 0


def _format(args) -> str:
    if args.format:
        return args.format
    by_suffix = {v: k for k, v in FORMATS.items()}
    fmt = by_suffix.get(Path(args.out).suffix.lower())
    if fmt is None:
        raise MormError(f"cannot tell the format from {args.out!r}: give --format "
                        f"{'|'.join(FORMATS)} or a name ending in .jsonl, .csv or .json",
                        field="format")
    return fmt


def cmd_export(args) -> int:
    from morm_explorer.evaluation import exports
    from morm_explorer.evaluation.sessions import get_session

    ws = open_workspace(args)
    info = get_session(ws, args.name)
    if bool(args.out) == bool(args.dataset):
        raise MormError("give where the votes go: --out FILE or --dataset NAME (one of the "
                        "two)", field="out")
    if args.dataset:
        ds = exports.to_dataset(ws, info.name, args.dataset, overwrite=args.overwrite)
        print(f"saved dataset {ds.name!r}: {ds.n_records} preference pairs on "
              f"{', '.join(ds.objectives)} (train a reward model on it: morm rm train "
              f"--dataset {ds.name})")
        return 0
    fmt = _format(args)
    if fmt != "llm-comparator" and (args.objective or args.policies):
        raise MormError("--objective and --policies choose what an LLM Comparator file "
                        "shows; the other formats hold every vote", field="format")
    if fmt == "pairs":
        out = exports.write_pairs_jsonl(ws, info.name, args.out)
    elif fmt == "csv":
        out = exports.to_csv(ws, info.name, args.out)
    else:
        out = exports.to_llm_comparator(ws, info.name, args.out, objective=args.objective,
                                        policies=args.policies or None)
    print(f"wrote {out.n_records} {'examples' if fmt == 'llm-comparator' else 'records'} to "
          f"{out.path}" + (f"; {out.n_skipped} left out (no preference in them)"
                           if out.n_skipped else ""))
    return 0


def cmd_close(args) -> int:
    from morm_explorer.evaluation.sessions import close_session

    info = close_session(open_workspace(args), args.name)
    print(f"closed rating session {info.name!r}: {info.n_votes} votes kept; results, reports "
          "and exports still work")
    return 0


def add_session_commands(groups: argparse._SubParsersAction) -> None:
    """Add ``morm session create|list|results|export|close``."""
    session = groups.add_parser("session", help="blind rating sessions: create, list, results, "
                                "export, close")
    sub = session.add_subparsers(dest="command", metavar="ACTION", required=True)

    p = sub.add_parser("create", help="a session from a comparison or a candidate set with "
                       "two or more sources")
    p.add_argument("name", help="session name (letters, digits, '.', '_', '-')")
    p.add_argument("--comparison", help="rate the samples of this comparison")
    p.add_argument("--candidates", help="... or of this candidate set (its sources are the "
                   "policies)")
    p.add_argument("--policies", type=names, default=[], help="comma-separated policies to "
                   "pair (default: all of the set's sources)")
    p.add_argument("--objectives", type=names, default=[], help="comma-separated objectives "
                   "to rate (default: the comparison's, else the newest reward model's)")
    p.add_argument("--raters", type=names, default=[], help="comma-separated rater names "
                   "(default: anyone who opens the link)")
    p.add_argument("--prompts", type=names, default=[], help="comma-separated prompt ids "
                   "(default: all)")
    p.add_argument(*flags("items_per_prompt"), dest="items_per_prompt", type=int, default=1,
                   help="pairs per prompt (default: %(default)s)")
    p.add_argument(*flags("limit_prompts"), dest="limit_prompts", type=int, default=0,
                   help="a seeded sample of this many prompts (0: all; default: %(default)s)")
    p.add_argument(*flags("pairs_per_rater"), dest="pairs_per_rater", type=int, default=0,
                   help="pairs each rater sees (0: all; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pairing, the A/B order "
                   "and the raters' orders (default: %(default)s)")
    p.add_argument(*flags("reveal_after_vote"), dest="reveal_after_vote", action="store_true",
                   help="show a rater the policies behind A and B after each vote (default: "
                   "never)")
    p.add_argument("--base-url", default="http://localhost:8501/", help="the app's address, "
                   "for the raters' links (default: %(default)s)")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("list", help="sessions with their pairs, raters and votes")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("results", help="progress per rater, win rates, agreement, position "
                       "bias (and agreement with a reward model)")
    p.add_argument("name", help="session name")
    p.add_argument(*flags("reward_model"), dest="reward_model", help="compare the raters with "
                   "this reward model")
    p.add_argument("--json", action="store_true", help="print the tables as JSON")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("export", help="the votes as preference pairs (JSONL), CSV or LLM "
                       "Comparator JSON, or as a workspace dataset")
    p.add_argument("name", help="session name")
    p.add_argument("--out", help="file to write (atomically)")
    p.add_argument("--format", choices=list(FORMATS), help="default: from --out's suffix "
                   "(.jsonl pairs, .csv, .json llm-comparator)")
    p.add_argument("--dataset", help="save the preference pairs as this workspace dataset "
                   "instead")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset of that name")
    p.add_argument("--objective", help="llm-comparator: the objective scored (or 'overall'; "
                   "default: the first)")
    p.add_argument("--policies", type=names, default=[], help="llm-comparator: the two "
                   "policies shown (default: the session's two)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("close", help="stop taking votes (results and exports keep working)")
    p.add_argument("name", help="session name")
    p.set_defaults(func=cmd_close)
