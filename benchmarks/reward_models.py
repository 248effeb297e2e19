"""Reward-model benchmarks: accuracy on the built-in data and on HH-RLHF, and training cost.

    python benchmarks/reward_models.py [--hh FILE] [--device auto] [--sections demo,timing,hh]
        [--finetune] [--out results.json]

Sections:
- demo: multi-head frozen MiniLM + linear heads on the built-in data, three seeds (test split
  20% of prompts): accuracy against the simulated labels and the hidden true ordering, and the
  single overall RM beside the heads; with --finetune also a fully fine-tuned MiniLM;
- timing: one epoch of fine-tuning on the same pairs for one single-head model, one multi-head
  model with K=3 heads and K=3 separate models; the ratios are measured in the same run;
- hh: 5-fold cross-validation of a harmless head on the HH-RLHF harmless-base test file, frozen
  MiniLM and (with --finetune) fine-tuned MiniLM;
- hh-variants: further settings for that head (pooling, learning rate, LoRA).
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

from morm_explorer.data.loaders import load_preference_data
from morm_explorer.data.synth import write_synth
from morm_explorer.reward.config import TrainConfig
from morm_explorer.reward.train import cross_validate, train_reward_model
from morm_explorer.workspace import Workspace


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} {platform.machine()}, {torch.get_num_threads()} threads, {gpu}"


def demo(ws, cache, args) -> dict:
    out = {}
    modes = [("frozen", {}), ("full", {"epochs": 3, "batch_size": 32, "lr": 1e-3,
                                       "patience": 2})]
    for mode, extra in modes[: 2 if args.finetune else 1]:
        runs = []
        for seed in (0, 1, 2):
            kw = dict(dataset="demo", name="b", mode=mode, seed=seed, epochs=200, patience=10,
                      test_fraction=0.2, backbone=args.backbone, device=args.device)
            cfg = TrainConfig(**{**kw, **extra})
            res = train_reward_model(cfg, ws.root / "tmp" / f"demo-{mode}-{seed}", ws,
                                     cache_root=cache)
            m = res.metrics
            runs.append({o: {"label": v["accuracy"], "truth": v["truth_accuracy"],
                             "ci": [v["ci_low"], v["ci_high"]], "n": v["n"]}
                         for o, v in m["objectives"].items()})
            runs[-1]["_single"] = {o: r["single"] for o, r in m["single_vs_multi"].items()}
            runs[-1]["_seconds"] = m["train_seconds"]
            print(f"demo {mode} seed {seed}: " + ", ".join(
                f"{o} {v['label']:.3f}/{v['truth']:.3f}" for o, v in runs[-1].items()
                if not o.startswith("_")) + f"  single {runs[-1]['_single']}", flush=True)
        out[mode] = runs
    return out


def timing(ws, args) -> dict:
    base = dict(dataset="demo-timing", name="t", mode="full", epochs=1, batch_size=16, patience=0,
                val_fraction=0.0, test_fraction=0.05, compare_overall=False,
                backbone=args.backbone, device=args.device)
    variants = {"single-head (K=1)": dict(objectives=("helpful",)),
                "multi-head (K=3)": dict(objectives=("helpful", "harmless", "honest")),
                "separate (K=3)": dict(objectives=("helpful", "harmless", "honest"),
                                       architecture="separate")}
    rows = {}
    for repeat in range(args.repeats):
        for name, kw in variants.items():
            res = train_reward_model(TrainConfig(**base, **kw), ws.root / "tmp" / "t", ws)
            rows.setdefault(name, []).append(res.metrics["loop_seconds"])
            print(f"timing {name} run {repeat}: {res.metrics['loop_seconds']:.2f} s "
                  f"({res.metrics['steps']} steps)", flush=True)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    one = med["single-head (K=1)"]
    return {"seconds": rows, "median": med,
            "ratio_multi": med["multi-head (K=3)"] / one,
            "ratio_separate": med["separate (K=3)"] / one}


def hh(ws, cache, args) -> dict:
    ds = load_preference_data(args.hh, preset="hh-rlhf")
    ws.save_dataset("hh-harmless", ds, overwrite=True)
    out = {}
    modes = [("frozen", {"epochs": 200, "patience": 10}),
             ("full", {"epochs": 2, "batch_size": 32, "lr": 1e-3, "patience": 1})]
    for mode, extra in modes[: 2 if args.finetune else 1]:
        cfg = TrainConfig(dataset="hh-harmless", name="hh", mode=mode, backbone=args.backbone,
                          device=args.device, **extra)
        t = time.perf_counter()
        cv = cross_validate(cfg, folds=5, workspace=ws, cache_root=cache)
        h = cv["objectives"]["harmless"]
        print(f"hh 5-fold {mode}: {h['accuracy']:.3f} [{h['ci_low']:.3f}, {h['ci_high']:.3f}] "
              f"folds {[round(a, 3) for a in h['fold_accuracy']]} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
        out[mode] = cv
    return out


HH_VARIANTS = {
    "frozen, mean_response pooling": dict(mode="frozen", pooling="mean_response", epochs=200,
                                          patience=10),
    "full, 3 epochs, backbone lr 5e-5": dict(mode="full", epochs=3, batch_size=32, lr=1e-3,
                                             backbone_lr=5e-5, patience=1),
    "lora r=16": dict(mode="lora", lora_r=16, lora_alpha=32, epochs=3, batch_size=32, lr=1e-3,
                      backbone_lr=5e-4, patience=1),
}


def hh_variants(ws, cache, args) -> dict:
    """Further settings tried for the harmless head (5-fold each)."""
    out = {}
    for name, kw in HH_VARIANTS.items():
        cfg = TrainConfig(dataset="hh-harmless", name="hh", backbone=args.backbone,
                          device=args.device, **kw)
        cv = cross_validate(cfg, folds=5, workspace=ws, cache_root=cache)
        h = cv["objectives"]["harmless"]
        print(f"hh 5-fold {name}: {h['accuracy']:.3f} [{h['ci_low']:.3f}, {h['ci_high']:.3f}]",
              flush=True)
        out[name] = cv
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hh", help="HH-RLHF harmless-base test.jsonl.gz")
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sections", default="demo,timing,hh")
    ap.add_argument("--finetune", action="store_true", help="also fine-tuned runs (GPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-prompts", type=int, default=420,
                    help="prompts of the built-in data used for the timing runs")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    results = {"machine": machine(), "torch": torch.__version__}
    print(results["machine"], flush=True)
    with tempfile.TemporaryDirectory(prefix="morm-bench-") as tmp:
        ws = Workspace(tmp)
        write_synth(Path(tmp) / "demo.jsonl", seed=0)
        ws.save_dataset("demo", load_preference_data(Path(tmp) / "demo.jsonl"))
        write_synth(Path(tmp) / "timing.jsonl", seed=0, n_prompts=args.timing_prompts)
        ws.save_dataset("demo-timing", load_preference_data(Path(tmp) / "timing.jsonl"))
        cache = Path(tmp) / "cache"
        sections = args.sections.split(",")
        if "demo" in sections:
            results["demo"] = demo(ws, cache, args)
        if "timing" in sections:
            results["timing"] = timing(ws, args)
            t = results["timing"]
            print(f"ratios to one single-head model: multi-head K=3 {t['ratio_multi']:.2f}x, "
                  f"K=3 separate {t['ratio_separate']:.2f}x", flush=True)
        if "hh" in sections and args.hh:
            results["hh"] = hh(ws, cache, args)
        if "hh-variants" in sections and args.hh:
            if "hh" not in sections:
                ws.save_dataset("hh-harmless", load_preference_data(args.hh, preset="hh-rlhf"))
            results["hh_variants"] = hh_variants(ws, cache, args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
