"""The `morm` command: every action of the app is also a command.

Errors in user input print one clear message (file, line, field) and exit with status 2;
`morm data validate` exits 1 when the file has errors.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from morm_explorer import __version__
from morm_explorer.errors import MormError, database_error


def _workspace(args):
    from morm_explorer.workspace import Workspace

    return Workspace(args.workspace)


def _add_load_options(p: argparse.ArgumentParser) -> None:
    from morm_explorer.data.readers import FORMATS, add_size_flags

    p.add_argument("file", help="a JSONL/CSV/Parquet file, an HF dataset folder (save_to_disk) "
                   "or a hub name hf:OWNER/NAME (e.g. hf:Anthropic/hh-rlhf)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, help="file format (default: from "
                   "the name)")
    p.add_argument("--preset", help="map a known public format: hh-rlhf, pku-saferlhf, "
                   "helpsteer2, ultrafeedback (default: canonical records)")
    p.add_argument("--objective", help="objective of single-objective presets (HH-RLHF; "
                   "default: from the subset or file name)")
    p.add_argument("--split", help="split of an HF dataset (hub default: train)")
    p.add_argument("--subset", help="data_dir of a hub dataset, e.g. harmless-base of "
                   "hf:Anthropic/hh-rlhf")
    p.add_argument("--revision", help="branch, tag or commit of a hub dataset")
    p.add_argument("--limit", type=int, help="keep a random sample of this many rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample "
                   "(default: %(default)s)")
    add_size_flags(p, "record")


def _load_kwargs(args) -> dict:
    """The loading options of `_add_load_options`; hub downloads are cached in the workspace."""
    from morm_explorer.data.hub import hub_cache_dir
    from morm_explorer.workspace import default_root

    return {"fmt": args.fmt, "preset": args.preset, "objective": args.objective,
            "split": args.split, "subset": args.subset, "revision": args.revision,
            "limit": args.limit, "seed": args.seed, "max_chars": args.max_chars,
            "max_bytes": args.max_bytes,
            "cache_dir": hub_cache_dir(args.workspace or default_root())}


def cmd_data_validate(args) -> int:
    from morm_explorer.data.loaders import validate_file

    _, report = validate_file(args.file, **_load_kwargs(args))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.to_text(max_issues=args.max_issues))
    failed = bool(report.errors) or (args.strict and bool(report.warnings))
    return 1 if failed or report.n_valid == 0 else 0


def cmd_data_summary(args) -> int:
    from morm_explorer.data.convert import summarize
    from morm_explorer.data.loaders import load_preference_data

    ds = load_preference_data(args.file, **_load_kwargs(args), on_error="drop")
    s = summarize(ds.records, ds.kind)
    if args.json:
        print(json.dumps(s.to_dict(), indent=2))
        return 0
    print(f"{args.file}: {s.n_records} {s.kind} records, {s.n_prompts} prompts"
          f" ({ds.report.n_bad_rows} bad rows dropped)")
    print("\nrecords per category:\n" + s.categories.to_string())
    print("\nper objective:\n" + s.per_objective.round(3).to_string())
    print("\nobjectives preferring opposite responses, share of pairs labelled a/b on both:\n"
          + s.disagreement.round(3).to_string())
    print("\n... share of all pairs labelled on both (ties included, a tie is no conflict):\n"
          + s.conflict.round(3).to_string())
    return 0


def cmd_data_synth(args) -> int:
    from morm_explorer.data.builtin import describe_builtin, generate_builtin, write_builtin
    from morm_explorer.data.rlcd import SHIPPED, write_responses

    responses = args.responses or SHIPPED
    if args.generate:
        print(f"writing the policy's responses to {args.generate} (resumes a stopped run) ...")
        kept = write_responses(args.generate, seed=args.seed, device=args.device)
        print("share kept by the behaviour check: "
              + ", ".join(f"{b} {s:.0%}" for b, s in kept.items()))
        responses = args.generate
    if args.out is None:
        return 0
    n = write_builtin(args.out, seed=args.seed, kind=args.kind, n_prompts=args.prompts,
                      responses=responses)
    print(f"wrote {n} pairwise records to {args.out} (kind {args.kind}, seed {args.seed})")
    if args.describe:
        records = generate_builtin(args.seed, args.kind, args.prompts, responses)
        print(json.dumps(describe_builtin(records, responses), indent=2))
    return 0


def cmd_data_import(args) -> int:
    from morm_explorer.data.loaders import load_preference_data

    ds = load_preference_data(args.file, **_load_kwargs(args),
                              on_error="drop" if args.drop_bad else "stop")
    info = _workspace(args).save_dataset(args.name, ds, overwrite=args.overwrite)
    dropped = ds.report.n_bad_rows
    print(f"saved dataset {info.name!r}: {info.n_records} {info.kind} records, objectives "
          f"{', '.join(info.objectives)}" + (f"; dropped {dropped} bad rows" if dropped else "")
          + f"\n  from {info.source}")
    return 0


def cmd_data_convert(args) -> int:
    from morm_explorer.data.convert import ratings_to_pairs
    from morm_explorer.data.loaders import load_preference_data
    from morm_explorer.workspace import atomic_write_jsonl

    ds = load_preference_data(args.file, **_load_kwargs(args))
    if ds.kind != "ratings":
        raise MormError("expected ratings records (response, ratings)", file=args.file)
    n = atomic_write_jsonl(args.out, ratings_to_pairs(ds.records, margin=args.margin))
    print(f"wrote {n} pairwise records to {args.out}")
    return 0


def cmd_data_list(args) -> int:
    infos = _workspace(args).list_datasets()
    if not infos:
        print("no datasets yet: import one with `morm data import`")
    for d in infos:
        print(f"{d.name:32s} {d.kind:9s} {d.n_records:7d}  {', '.join(d.objectives)}")
    return 0


def cmd_demo(args) -> int:
    from morm_explorer.demo import ensure_demo

    if args.write_bundle:
        return _write_demo_bundle(args)
    ws = _workspace(args)
    built = ensure_demo(ws)
    print(f"demo workspace {ws.root}: " + (f"built {', '.join(built)}" if built
                                           else "already complete"))
    if not args.full:
        return 0
    from morm_explorer.demo_jobs import PrepareDemoJob
    from morm_explorer.jobs.worker import run_inline

    info = run_inline(ws, PrepareDemoJob(use_bundle=not args.no_bundle, device=args.device))
    if info.status != "succeeded":
        print(f"the demo build {info.status}: {info.error}", file=sys.stderr)
        return 1
    result = info.result or {}
    print("full demo ready; built " + (", ".join(result.get("built", [])) or "nothing"))
    for name, seconds in result.get("timings_s", {}).items():
        print(f"  {name:24s} {seconds:8.1f} s")
    return 0


def _write_demo_bundle(args) -> int:
    """Build the full demo from scratch in a fresh workspace and pack it (demo_bundle)."""
    import tempfile
    import time

    from morm_explorer.demo import ensure_demo
    from morm_explorer.demo_bundle import write_bundle
    from morm_explorer.demo_jobs import PrepareDemoJob
    from morm_explorer.jobs.worker import run_inline
    from morm_explorer.workspace import Workspace

    spec = PrepareDemoJob(use_bundle=False, real_pairs=0, device=args.device)
    with tempfile.TemporaryDirectory(prefix="morm-demo-bundle-") as tmp:
        ws = Workspace(args.build_dir or tmp)
        ensure_demo(ws)
        t0 = time.perf_counter()
        info = run_inline(ws, spec)
        if info.status != "succeeded":
            print(f"the demo build {info.status}: {info.error}", file=sys.stderr)
            return 1
        # a build resumed in the same --build-dir keeps the times of the parts made before
        record = Path(ws.root) / "bundle-timings.json"
        before = json.loads(record.read_text()) if record.is_file() else {}
        timings = {**before, **info.result.get("timings_s", {})}
        record.write_text(json.dumps(timings))
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        print(f"built in {time.perf_counter() - t0:.0f} s")
        manifest = write_bundle(ws, args.write_bundle, spec, timings,
                                command=f"morm demo --write-bundle {args.write_bundle}")
    size = Path(args.write_bundle).stat().st_size
    print(f"wrote {args.write_bundle} ({size / 2**20:.1f} MiB, {len(manifest['files'])} files) "
          f"in {timings['total']:.0f} s")
    for name, seconds in timings.items():
        print(f"  {name:24s} {seconds:8.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="morm", description="MORM Explorer: multi-objective reward models, from "
        "preference data to compared policies.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"morm {__version__}")
    parser.add_argument("--workspace", help="workspace folder (default: $MORM_WORKSPACE or "
                        "./workspace)")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    data = groups.add_parser("data", help="preference data: validate, summarize, synthesize, "
                             "import, convert, list")
    sub = data.add_subparsers(dest="command", metavar="ACTION", required=True)

    p = sub.add_parser("validate", help="check a preference file; exit 1 when it has errors")
    _add_load_options(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--max-issues", type=int, default=200, help="issues to print")
    p.set_defaults(func=cmd_data_validate)

    p = sub.add_parser("summary", help="per-objective counts, coverage, ties, disagreement")
    _add_load_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_data_summary)

    p = sub.add_parser("synth", help="write the built-in demo preference dataset")
    p.add_argument("--out", help="output JSONL file")
    p.add_argument("--kind", choices=("model", "templates"), default="model",
                   help="model: the policy's own responses under contrasting instructions "
                   "beside the template pairs; templates: the template pairs alone "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--prompts", type=int, default=420, help="number of template prompts")
    p.add_argument("--generate", metavar="FILE",
                   help="write the model-written responses anew with the default policy "
                   "(JSONL, .gz to compress; about an hour on a 2-core CPU) and use them")
    p.add_argument("--responses", metavar="FILE",
                   help="model-written responses to use (default: the file shipped with the "
                   "package)")
    p.add_argument("--device", default="auto", help="device for --generate")
    p.add_argument("--describe", action="store_true", help="print counts and label stats")
    p.set_defaults(func=cmd_data_synth)

    p = sub.add_parser("import", help="validate a file and save it as a named dataset")
    _add_load_options(p)
    p.add_argument("--name", required=True, help="dataset name in the workspace")
    p.add_argument("--drop-bad", action="store_true", help="drop bad rows instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset of that name")
    p.set_defaults(func=cmd_data_import)

    p = sub.add_parser("convert", help="ratings -> pairwise records (all pairs per prompt)")
    _add_load_options(p)
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--margin", type=float, default=0.0, help="rating differences within this "
                   "margin are ties (default: %(default)s)")
    p.set_defaults(func=cmd_data_convert)

    p = sub.add_parser("list", help="datasets in the workspace")
    p.set_defaults(func=cmd_data_list)

    p = groups.add_parser("demo", help="build the demo workspace (what the app builds on first "
                          "start)")
    p.add_argument("--full", action="store_true", help="also build (or install from the "
                   "shipped demo) the demo's models, samples, fine-tuned policies and "
                   "comparison, in the foreground: what the app's background build does")
    p.add_argument("--no-bundle", action="store_true", help="with --full: build every part "
                   "here instead of installing the shipped demo (uses real HH-RLHF when the "
                   "hub answers)")
    p.add_argument("--write-bundle", metavar="PATH", default="", help="build the full demo "
                   "from scratch in a fresh workspace (built-in data) and pack it, fine-tuned "
                   "policies included, into PATH (the shipped one is "
                   "morm_explorer/data/demo_bundle.tar.xz)")
    p.add_argument("--build-dir", default="", help="with --write-bundle: build in this folder "
                   "and keep it, instead of a temporary one (run again, it goes on from the "
                   "parts already there)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=cmd_demo)

    from morm_explorer.candidates_cli import add_candidate_commands
    from morm_explorer.evaluation.cli import add_evaluation_commands
    from morm_explorer.jobs.cli import add_job_commands
    from morm_explorer.policy.cli import add_ppo_commands
    from morm_explorer.reward.cli import add_rm_commands

    add_rm_commands(groups)
    add_candidate_commands(groups)
    add_ppo_commands(groups)
    add_evaluation_commands(groups)
    add_job_commands(groups)
    parser.epilog = _command_index(groups)
    return parser


def _command_index(groups: argparse._SubParsersAction) -> str:
    """Every command with its help, for the top-level --help."""
    rows = []
    for action in groups._choices_actions:
        sub = groups.choices[action.dest]
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested:
            rows.append((action.dest, action.help))
        for n in nested:
            rows.extend((f"{action.dest} {child.dest}", child.help)
                        for child in n._choices_actions)
    width = max(len(name) for name, _ in rows)
    return "commands:\n" + "\n".join(f"  morm {name:{width}s}  {h}" for name, h in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MormError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (sqlite3.DatabaseError, OSError) as e:
        # A fault met outside the workspace's own reads and writes (which raise it as a
        # MormError already): the same message, e.g. a full disk or a corrupt database.
        from morm_explorer.workspace import default_root

        root = Path(args.workspace or default_root())
        err = database_error(e, Path(e.filename).parent if getattr(e, "filename", None)
                             else root)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
