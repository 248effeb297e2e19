"""`morm rm ...`: train, evaluate, list and export reward models from the command line.

The flags of `morm rm train` are the fields of `TrainConfig`, named as the fields are (with
`-` or `_`), with the fields' docstrings as help.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import types
import typing

from morm_explorer.errors import MormError
from morm_explorer.reward.config import CHOICES, TrainConfig, read_config
from morm_explorer.reward.manifest import model_kind


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a field) of a dataclass and of the
    dataclasses it derives from."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body  # type: ignore[attr-defined]
        for prev, node in zip(body, body[1:], strict=False):
            if (isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name)
                    and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)):
                docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def _parse_weights(text: str) -> dict[str, float]:
    """'helpful=1,harmless=2.5' -> {'helpful': 1.0, 'harmless': 2.5}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"expected objective=number, got {part!r}")
    return out


def _json_list(text: str) -> list:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON list: {e}") from e
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("expected a JSON list")
    return value


def _optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "") else float(text)


class _ExtendTuple(argparse.Action):
    """A tuple flag's comma-separated values; a repeated flag adds its values to the earlier
    ones (``--report_to tensorboard --report_to wandb``)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        earlier = getattr(namespace, self.dest)
        setattr(namespace, self.dest, (*(() if earlier is self.default else earlier), *values))


def add_config_flags(p: argparse.ArgumentParser, cls=TrainConfig) -> None:
    """One flag per field of the config dataclass ``cls``: its name (dashed spelling too), its
    docstring as help; dicts as ``objective=w,...``, lists as JSON, ``float | None`` as a
    number or ``none``, tuples as comma-separated names (the flag may be repeated)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        # The field's name is the flag's name; the dashed spelling is accepted too.
        flags = list(dict.fromkeys([f"--{f.name}", f"--{f.name.replace('_', '-')}"]))
        help_ = docs.get(f.name, "")
        kind = hints[f.name]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            p.add_argument(*flags, dest=f.name, required=True, help=help_)
        elif typing.get_origin(kind) is list:
            p.add_argument(*flags, dest=f.name, type=_json_list, default=f.default_factory(),
                           help=help_ + " (JSON)")
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            p.add_argument(*flags, dest=f.name, type=_optional_float, default=f.default,
                           help=f"{help_} (default: {f.default})")
        elif kind is bool:
            p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=f.default, help=help_)
        elif typing.get_origin(kind) is dict:
            p.add_argument(*flags, dest=f.name, type=_parse_weights, default={},
                           help=help_ + " Format: objective=w,objective=w.")
        elif typing.get_origin(kind) is tuple:
            p.add_argument(*flags, dest=f.name, default=(), action=_ExtendTuple,
                           type=lambda s: tuple(x.strip() for x in s.split(",") if x.strip()),
                           help=help_ + " Comma-separated or repeated.")
        else:
            default = f" (default: {f.default})" if f.default != "" else ""
            p.add_argument(*flags, dest=f.name, type=kind, default=f.default,
                           choices=CHOICES.get(f.name), help=f"{help_}{default}".strip())


def config_from_args(args, cls=TrainConfig):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _workspace(args):
    from morm_explorer.workspace import Workspace

    return Workspace(args.workspace)


def cmd_train(args) -> int:
    from morm_explorer.reward.jobs import GROUP, TrainRewardModelJob

    cfg = config_from_args(args)
    ws = _workspace(args)
    if args.submit:
        from morm_explorer.jobs.cli import submit_job

        return submit_job(ws, TrainRewardModelJob(cfg.to_dict(), args.overwrite))
    from tqdm import tqdm

    from morm_explorer.reward.train import Hooks, train_reward_model

    target = ws.artifact_dir(GROUP, cfg.name)
    if target.exists() and not args.overwrite:
        raise MormError(f"{GROUP}/{target.name} exists; pass --overwrite or another --name")
    with tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(frac: float, msg: str = "") -> None:
            bar.n = round(100 * frac)
            bar.set_description(msg)

        result = train_reward_model(cfg, target, workspace=ws, hooks=Hooks(progress=progress),
                                    cache_root=ws.root / "cache" / "embeddings")
    print_metrics(result.metrics)
    print(f"saved {result.path}")
    return 0


def print_metrics(metrics: dict) -> None:
    print("held-out accuracy per objective (ties excluded, bootstrap 95% interval):")
    for obj, m in metrics.get("objectives", {}).items():
        truth = (f"  vs true ordering {m['truth_accuracy']:.3f}" if "truth_accuracy" in m
                 else "")
        print(f"  {obj:24s} {m['accuracy']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
              f"  n={m['n']:<5d} loss={m['loss']:.3f} ece={m['ece']:.3f}{truth}")
    if "single_vs_multi" in metrics:
        print("single overall RM vs per-objective heads, accuracy on each objective's labels:")
        for obj, row in metrics["single_vs_multi"].items():
            print(f"  {obj:24s} multi-head {row['multi_head']:.3f}   single overall "
                  f"{row['single']:.3f} [{row['single_ci'][0]:.3f}, {row['single_ci'][1]:.3f}]")
    if "train_seconds" in metrics:
        print(f"training time: {metrics['train_seconds']:.1f} s")


def cmd_eval(args) -> int:
    from morm_explorer.reward.report import evaluate_artifact

    metrics = evaluate_artifact(args.model, args.data, workspace=_workspace(args))
    if args.json:
        print(json.dumps(metrics, indent=2, default=float))
    else:
        print_metrics(metrics)
        print(f"stored with the model's evaluations as {metrics['data']!r} "
              "(see `morm rm list`)")
    return 0


def cmd_export(args) -> int:
    from morm_explorer.reward.report import model_path

    ws = _workspace(args)
    path = model_path(args.model, ws)
    kind = model_kind(read_config(path))
    if kind != "trained":
        raise MormError(f"{path.name} is a{'n' if kind == 'external' else ''} {kind} reward "
                        "model: export writes models trained here (an external model already "
                        "is a transformers folder)")
    if args.export_as == "reward-function":
        return _export_function(args, ws, path)
    if args.preset or args.standardize is not None:
        raise MormError("--preset and --standardize apply to --as reward-function only")
    from morm_explorer.reward.export import export_reward_model

    out = export_reward_model(path, args.out, weights=args.weights,
                              normalize_weights=args.normalize)
    print(f"exported to {out}: load it with "
          f"AutoModelForSequenceClassification.from_pretrained({str(out)!r})")
    return 0


def _export_function(args, ws, path) -> int:
    from morm_explorer.reward.config import read_config
    from morm_explorer.reward.function_export import export_reward_function, find_preset

    weights, standardize = args.weights, args.standardize
    if args.preset:
        if weights:
            raise MormError("pass --weights or --preset, not both", field="preset")
        preset = find_preset(ws, args.preset, list(read_config(path)["model"]["objectives"]))
        weights = preset.weights
        standardize = preset.standardized if standardize is None else standardize
    out = export_reward_function(path, args.out, weights=weights, standardize=standardize,
                                 normalize_weights=args.normalize, preset=args.preset)
    info = json.loads((out / "morm_export.json").read_text(encoding="utf-8"))
    funcs = ", ".join(info["functions"].values())
    shown = ", ".join(f"{o}={w:g}" for o, w in info["weights"].items())
    print(f"exported to {out}: from morm_reward import {funcs} (TRL reward_funcs; weights "
          f"{shown}; {'standardized' if info['standardized'] else 'raw'} rewards) and "
          f"compute_score for verl; see {out / 'README.md'}")
    return 0


def cmd_list(args) -> int:
    from morm_explorer.reward.evaluations import evaluation_lines
    from morm_explorer.reward.report import list_reward_models

    rows = list_reward_models(_workspace(args))
    if not rows:
        print("no reward models yet: train one with `morm rm train`")
    for r in rows:
        if r["kind"] != "trained":  # external or composite: no training to report
            print(f"{r['name']:28s} {r['kind']:10s} {', '.join(r['objectives'])}")
            print("\n".join([f"  source: {r['source']}", *evaluation_lines(r)[1:]]))
            continue
        acc = ", ".join(f"{o} {a:.2f}" for o, a in r["accuracy"].items())
        print(f"{r['name']:28s} {r['architecture']:10s} {r['mode']:6s} {acc}")
        print("\n".join(evaluation_lines(r)))
    return 0


def add_rm_commands(groups: argparse._SubParsersAction) -> None:
    rm = groups.add_parser("rm", help="reward models: train, add, compose, eval, list, "
                           "export")
    sub = rm.add_subparsers(dest="command", metavar="ACTION", required=True)
    p = sub.add_parser("train", help="train a multi-head or separate reward model")
    add_config_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace a model of that name")
    p.add_argument("--submit", action="store_true",
                   help="run as a background job (the worker) instead of in this process")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="held-out accuracy with intervals, loss, calibration, "
                       "head correlation, single-vs-multi; kept with the model's evaluations")
    p.add_argument("model", help="reward model name in the workspace, or a folder")
    p.add_argument("--data", required=True, help="workspace dataset name or preference file")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval)

    from morm_explorer.reward.external_cli import add_external_commands

    add_external_commands(sub)

    p = sub.add_parser("list", help="reward models in the workspace, with their training data "
                       "and stored evaluations")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", help="write a folder that transformers' "
                       "AutoModelForSequenceClassification loads (K outputs, or 1 with "
                       "--weights), or reward functions for TRL and verl (--as reward-function)")
    p.add_argument("model", help="reward model name in the workspace, or a folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--as", dest="export_as", choices=("transformers", "reward-function"),
                   default="transformers",
                   help="transformers: a sequence-classifier folder; reward-function: a Python "
                   "module with one TRL reward function per objective and verl's compute_score "
                   "(default: %(default)s)")
    p.add_argument("--weights", type=_parse_weights, default=None,
                   help="scalarize: objective=w,... gives one output sum_k w_k r_k (with --as "
                   "reward-function: the weights of compute_score and TRL's reward_weights; "
                   "default equal)")
    p.add_argument("--normalize", action="store_true",
                   help="divide the weights by the sum of their absolute values")
    p.add_argument("--preset", help="reward-function: the weights (and standardization) of a "
                   "saved weight preset, or a built-in one: equal, <objective>-first")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="reward-function: z-score each objective with the model's stored "
                   "statistics (default: the preset's setting, else when the model has them)")
    p.set_defaults(func=cmd_export)
