"""`morm rm add` (an external model, `reward.external`) and `morm rm compose` (a composite,
`reward.composite`): reward models made elsewhere or from parts, registered in the workspace.

The flags of `morm rm add` are the fields of `ExternalConfig`, with their docstrings as help.
"""

from __future__ import annotations

import argparse
import sys

from morm_explorer.reward.config import DEVICES


def _progress_bar(what: str):
    from tqdm import tqdm

    bar = tqdm(total=0, unit="text", file=sys.stderr, dynamic_ncols=True, desc=what)

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()
    return bar, progress


def _device(name: str) -> str:
    from morm_explorer.reward.train import pick_device

    return pick_device(name)


def _reference_line(config: dict) -> str:
    ref = config["reference_set"]
    return (f"statistics on {ref['n_texts']:,} texts of the {ref['kind']} {ref['name']!r}"
            + (f" (a sample of {ref['n_total']:,})" if ref["n_total"] > ref["n_texts"] else ""))


def cmd_add(args) -> int:
    from morm_explorer.reward.cli import _workspace, config_from_args
    from morm_explorer.reward.config import read_config
    from morm_explorer.reward.external import ExternalConfig, add_external

    cfg = config_from_args(args, ExternalConfig)
    bar, progress = _progress_bar("scoring the reference set")
    with bar:
        path = add_external(_workspace(args), args.name, cfg, reference=args.reference,
                            device=_device(args.device), overwrite=args.overwrite,
                            progress=progress)
    config = read_config(path)
    print(f"registered {path}: {', '.join(config['model']['objectives'])} from "
          f"{config['model']['backbone']}; {_reference_line(config)}")
    print(f"it reads {config['input_note']}")
    return 0


def cmd_compose(args) -> int:
    from morm_explorer.reward.cli import _workspace
    from morm_explorer.reward.composite import compose
    from morm_explorer.reward.config import read_config

    bar, progress = _progress_bar("scoring the reference set")
    with bar:
        path = compose(_workspace(args), args.name, args.part, allow_code=args.allow_code,
                       reference=args.reference, time_limit=args.time_limit,
                       device=_device(args.device), overwrite=args.overwrite, progress=progress)
    config = read_config(path)
    print(f"composed {path}: {config['model']['backbone']}; {_reference_line(config)}")
    return 0


def _common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="name of the reward model in the workspace")
    p.add_argument("--reference", default=None,
                   help="candidate set or dataset whose texts give each objective's score "
                   "statistics (default: the demo candidate set, else the demo data)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the reference set is scored (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a model of that name")


def add_external_commands(sub: argparse._SubParsersAction) -> None:
    from morm_explorer.reward.cli import add_config_flags
    from morm_explorer.reward.external_config import ExternalConfig

    p = sub.add_parser("add", help="register an existing AutoModelForSequenceClassification "
                       "(a hub name or a folder; encoder or decoder) as a reward model, one "
                       "objective per output")
    _common_flags(p)
    add_config_flags(p, ExternalConfig)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("compose", help="a reward with one objective per part: objectives of "
                       "reward models, rules, Python reward functions")
    _common_flags(p)
    p.add_argument("--part", action="append", default=[], metavar="OBJECTIVE=SPEC",
                   help="repeat per objective. SPEC: MODEL or MODEL:OBJECTIVE (a reward model "
                   "of the workspace), rule:length (whitespace tokens), rule:refusal, "
                   "rule:regex=PATTERN, rule:format=json, or py:FILE.py:FUNCTION (TRL's "
                   "f(prompts, completions, **kwargs) -> list[float | None]; needs "
                   "--allow-code)")
    p.add_argument("--allow-code", "--allow_code", dest="allow_code", action="store_true",
                   help="let py: parts run their code, now and whenever the composite scores "
                   "(recorded in its manifest)")
    p.add_argument("--time_limit", "--time-limit", dest="time_limit", type=float, default=60.0,
                   help="seconds a py: part may take per batch of texts (default: "
                   "%(default)s)")
    p.set_defaults(func=cmd_compose)
