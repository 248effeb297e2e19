"""How far the default reward model holds on real text: trained on the built-in data only,
scored zero-shot on the HH-RLHF harmless-base test, beside the simplest baselines.

    python benchmarks/reward_transfer.py [--hh FILE] [--kind model,templates]
        [--backbones minilm,smollm2] [--hh-limit N] [--out results.json]

For each kind of built-in data and each backbone (frozen, default pooling: `mean_layers` for
MiniLM, the last token for SmolLM2): train the default multi-head RM (`morm rm train` defaults)
on the built-in data, read its held-out accuracy per objective, then evaluate it on the HH
test pairs (`morm rm eval`, stored with the model), with "the shorter answer wins" and "the
longer answer wins" on the same pairs. Also the best one-feature baseline per objective of each
kind of built-in data (`morm_explorer.data.features`). The HH file is never trained on.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from morm_explorer.data.builtin import generate_builtin
from morm_explorer.data.features import feature_baselines
from morm_explorer.data.loaders import Dataset, load_preference_data
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.evaluate import bootstrap_ci
from morm_explorer.reward.report import evaluate_artifact
from morm_explorer.reward.train import train_reward_model
from morm_explorer.workspace import Workspace

DEFAULT_HH = Path(__file__).resolve().parents[2] / "shared/data/hh-rlhf-harmless-base/test.jsonl.gz"
OBJECTIVES = ("helpful", "harmless", "honest")


def length_baselines(records: list[dict]) -> dict[str, list[float]]:
    """Accuracy [low, high] of "the shorter answer wins" and "the longer answer wins" on pairs
    whose response_a is the chosen one."""
    la = np.array([len(r["response_a"]) for r in records], dtype=float)
    lb = np.array([len(r["response_b"]) for r in records], dtype=float)
    out = {}
    for name, (fa, fb) in {"shorter wins": (-la, -lb), "longer wins": (la, lb)}.items():
        d = np.sign(fa - fb)
        right = np.where(d == 0, 0.5, d > 0)
        out[name] = [float(right.mean()), *bootstrap_ci(right)]
    return out


def hh_dataset(path: Path, limit: int | None, seed: int = 0) -> Dataset:
    data = load_preference_data(path, preset="hh-rlhf", objective="harmless")
    if limit and limit < len(data.records):
        keep = np.sort(np.random.default_rng(seed).permutation(len(data.records))[:limit])
        data = Dataset(records=[data.records[i] for i in keep], kind=data.kind,
                       report=data.report, source=f"{data.source} ({limit} sampled)")
    return data


def run_one(ws: Workspace, kind: str, backbone: str, hh_name: str, seed: int,
            **train: object) -> dict:
    name = f"rm-{kind}-{backbone}-{seed}-{train.get('mode', 'frozen')}"
    cfg = TrainConfig(dataset=f"builtin-{kind}", name=name, backbone=backbone, seed=seed,
                      objectives=OBJECTIVES, **train)
    t0 = time.perf_counter()
    res = train_reward_model(cfg, ws.artifact_dir("reward_models", name), ws,
                             cache_root=ws.root / "cache" / "embeddings")
    train_s = time.perf_counter() - t0
    held = {o: [v["accuracy"], v["ci_low"], v["ci_high"]]
            for o, v in res.metrics["objectives"].items()}
    t0 = time.perf_counter()
    hh = evaluate_artifact(name, hh_name, workspace=ws)["objectives"]["harmless"]
    row = {"kind": kind, "backbone": backbone, "mode": cfg.mode, "seed": seed,
           "builtin_heldout": held,
           "hh_harmless": [hh["accuracy"], hh["ci_low"], hh["ci_high"]],
           "train_s": round(train_s, 1), "hh_eval_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict], base: dict) -> str:
    fmt = lambda v: f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"  # noqa: E731
    lines = ["| built-in data | backbone (mode) | seed | HH harmless, zero-shot | built-in "
             "held-out helpful / harmless / honest | train s |", "| --- | --- | --- | --- | "
             "--- | --- |"]
    for r in rows:
        held = " / ".join(f"{r['builtin_heldout'][o][0]:.3f}" for o in OBJECTIVES)
        lines.append(f"| {r['kind']} | {r['backbone']} ({r.get('mode', 'frozen')}) | "
                     f"{r['seed']} | {fmt(r['hh_harmless'])} | {held} | {r['train_s']} |")
    for name, v in base.items():
        lines.append(f"| baseline | {name} | - | {fmt(v)} | - | - |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hh", type=Path, default=DEFAULT_HH)
    ap.add_argument("--kind", default="model,templates")
    ap.add_argument("--backbones", default="minilm")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--hh-limit", type=int, default=None,
                    help="score a seeded sample of the HH pairs (slow backbones)")
    ap.add_argument("--builtin-limit", type=int, default=None,
                    help="train on a seeded sample of the built-in pairs (slow backbones)")
    ap.add_argument("--mode", default="frozen", choices=("frozen", "lora", "full"))
    ap.add_argument("--epochs", type=int, default=None, help="(default: the trainer's)")
    ap.add_argument("--max-length", type=int, default=None, help="(default: the trainer's)")
    ap.add_argument("--backbone-lr", type=float, default=None, help="(default: the trainer's)")
    ap.add_argument("--workspace", type=Path, default=None,
                    help="keep the models here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not args.hh.is_file():
        print(f"no HH-RLHF test file at {args.hh}", file=sys.stderr)
        return 2
    root = args.workspace or Path(tempfile.mkdtemp(prefix="morm-transfer-"))
    ws = Workspace(root)
    hh = hh_dataset(args.hh, args.hh_limit)
    ws.save_dataset("hh-harmless-test", hh, overwrite=True)
    base = length_baselines(hh.records)
    out: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                            f"torch {torch.__version__}", "hh_pairs": len(hh.records),
                 "hh_baselines": base, "features": {}, "runs": []}
    for kind in args.kind.split(","):
        records = generate_builtin(seed=0, kind=kind)
        if args.builtin_limit and args.builtin_limit < len(records):
            keep = np.random.default_rng(0).permutation(len(records))[:args.builtin_limit]
            records = [records[i] for i in np.sort(keep)]
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "data.jsonl"
            raw.write_text("".join(json.dumps(r) + "\n" for r in records))
            ws.save_dataset(f"builtin-{kind}", load_preference_data(raw, fmt="jsonl"),
                            overwrite=True)
        out["features"][kind] = {o: {k: round(v, 4) for k, v in row.items()}
                                 for o, row in feature_baselines(records, OBJECTIVES).items()}
        print(kind, "one-feature baselines:", json.dumps(out["features"][kind]), flush=True)
        for backbone in args.backbones.split(","):
            for seed in map(int, args.seeds.split(",")):
                train = {"mode": args.mode, **({"epochs": args.epochs} if args.epochs else {}),
                         **({"max_length": args.max_length} if args.max_length else {}),
                         **({"backbone_lr": args.backbone_lr} if args.backbone_lr else {})}
                out["runs"].append(run_one(ws, kind, backbone, "hh-harmless-test", seed,
                                           **train))
    print(table(out["runs"], base))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
