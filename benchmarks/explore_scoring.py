"""The scoring section of `benchmarks/explore.py`: batched against one-text-at-a-time scoring
on the demo candidate set, and re-scoring new heads from the embedding cache against
re-encoding (see that script's docstring for the targets)."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pandas as pd
import torch
from bench_table import check

from morm_explorer.data.candidates import CandidateSet, from_records
from morm_explorer.data.demo_candidates import demo_candidates
from morm_explorer.reward.cache import EmbeddingCache
from morm_explorer.reward.config import ModelConfig
from morm_explorer.reward.model import build_model
from morm_explorer.scoring import score

BATCH_SPEEDUP, CACHE_SPEEDUP, BATCH_TOL = 5.0, 50.0, 1e-5
DEMO_OBJECTIVES = ("helpful", "harmless", "honest")


# -- scoring ----------------------------------------------------------------------------------


def texts(n: int) -> CandidateSet:
    """The demo candidate set (408), cut to ``n`` or repeated with distinct prompt texts."""
    recs = demo_candidates(seed=0)
    out = []
    for i in range(n):
        r, copy = dict(recs[i % len(recs)]), i // len(recs)
        if copy:
            r["prompt_id"], r["prompt"] = f"{r['prompt_id']}-{copy}", f"{r['prompt']} ({copy})"
        out.append(r)
    return from_records(out)


def one_at_a_time(model, sub: pd.DataFrame) -> tuple[float, np.ndarray]:
    """Seconds and scores (n, K) of scoring ``sub`` one text per forward pass."""
    t = time.perf_counter()
    single = np.concatenate([model.score([p], [r], batch_size=1)
                             for p, r in zip(sub["prompt"], sub["response"], strict=True)])
    return time.perf_counter() - t, single


def batched_vs_single(model, sub: pd.DataFrame, device: str, args, checks: list[dict]) -> dict:
    """The batched run and the one-at-a-time loop over the same texts ``sub``."""
    n, out = len(sub), {}
    t = time.perf_counter()
    batched = score(model, sub, batch_size=args.batch_size).to_numpy()  # (n, K)
    out["batched_subset_s"] = time.perf_counter() - t
    out["loop_subset_s"], single = one_at_a_time(model, sub)
    out["speedup_batched"] = out["loop_subset_s"] / out["batched_subset_s"]
    out["max_abs_diff"] = float(np.abs(batched - single).max())
    print(f"scoring same {n} texts: batched {out['batched_subset_s']:.2f} s "
          f"({1e3 * out['batched_subset_s'] / n:.1f} ms/text), one at a time "
          f"{out['loop_subset_s']:.2f} s ({1e3 * out['loop_subset_s'] / n:.1f} ms/text)",
          flush=True)
    print("scoring batched / one-at-a-time speed-up: " + check(
        checks, "scoring/batched_speedup", out["speedup_batched"], "x",
        f">= {BATCH_SPEEDUP:g}x", out["speedup_batched"] >= BATCH_SPEEDUP), flush=True)
    threads = torch.get_num_threads()
    if device == "cpu" and threads > 1:
        # One text is too little work to split over threads: on a busy machine the intra-op
        # threads wait on each other and the loop looks slower than it need be.
        torch.set_num_threads(1)
        out["loop_subset_1thread_s"] = one_at_a_time(model, sub)[0]
        torch.set_num_threads(threads)
        ratio = out["loop_subset_1thread_s"] / out["batched_subset_s"]
        print(f"scoring one at a time with 1 torch thread: {out['loop_subset_1thread_s']:.2f} s "
              f"({1e3 * out['loop_subset_1thread_s'] / n:.1f} ms/text); speed-up of batched "
              f"({threads} threads) over it: " + check(
                  checks, "scoring/batched_speedup_vs_1thread_loop", ratio, "x", "", None),
              flush=True)
    # CUDA runs under bf16 autocast, where padding changes the numbers well beyond 1e-5
    tol = BATCH_TOL if device == "cpu" else 2e-2
    print("scoring max |batched - unbatched|: " + check(
        checks, "scoring/max_abs_diff", out["max_abs_diff"], "", f"<= {tol:g}",
        out["max_abs_diff"] <= tol), flush=True)
    return out


def scoring(args, checks: list[dict]) -> dict:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device
    cset = texts(args.n)
    t = time.perf_counter()
    model = build_model(ModelConfig(backbone=args.backbone, objectives=DEMO_OBJECTIVES),
                        device=device)
    model.frozen_backbone = True
    out = {"device": device, "n": len(cset), "load_s": time.perf_counter() - t}
    print(f"scoring: {len(cset)} demo candidates, {args.backbone} on {device} "
          f"(loaded in {out['load_s']:.1f} s), batch size {args.batch_size}", flush=True)
    score(model, cset.frame.iloc[:8], batch_size=8)  # warm-up: first-call allocations
    t = time.perf_counter()
    score(model, cset, batch_size=args.batch_size)
    out["batched_all_s"] = time.perf_counter() - t
    print(f"scoring batched, all {len(cset)}: {out['batched_all_s']:.2f} s "
          f"({len(cset) / out['batched_all_s']:.1f} texts/s)", flush=True)
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(len(cset), min(args.single_n, len(cset)), replace=False))
    sub = cset.frame.iloc[idx]  # a random subset, for the (slow) one-at-a-time loop
    out.update(batched_vs_single(model, sub, device, args, checks))
    out.update(cached_rescoring(model, cset, sub, idx, args, checks))
    return out


def cached_rescoring(model, cset: CandidateSet, sub: pd.DataFrame, idx: np.ndarray, args,
                     checks: list[dict]) -> dict:
    """Re-encoding (filling the embedding cache) against scoring new heads from it."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="morm-bench-") as tmp:
        cache = EmbeddingCache.for_backbone(tmp, model.backbones[0])
        t = time.perf_counter()
        score(model, cset, batch_size=args.batch_size, embedding_cache=cache)
        out["encode_s"] = time.perf_counter() - t
        torch.manual_seed(args.seed)
        for p in model.heads.parameters():  # new heads: what retraining with new weights gives
            torch.nn.init.normal_(p, std=model.backbones[0].hidden_size ** -0.5)
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            cached = score(model, cset, batch_size=args.batch_size, embedding_cache=cache)
            ts.append(time.perf_counter() - t)
        out["cached_s"] = float(np.median(ts))
        fresh = score(model, sub, batch_size=args.batch_size).to_numpy()  # full model, new heads
        out["cached_vs_full_diff"] = float(np.abs(cached.to_numpy()[idx] - fresh).max())
        t = time.perf_counter()  # a new session: the cache read back from its shards on disk
        score(model, cset, batch_size=args.batch_size,
              embedding_cache=EmbeddingCache.for_backbone(tmp, model.backbones[0]))
        out["cached_from_disk_s"] = time.perf_counter() - t
    out["speedup_cached"] = out["encode_s"] / out["cached_s"]
    print(f"scoring re-encoding (fills the cache) {out['encode_s']:.2f} s, new heads from the "
          f"cache {1e3 * out['cached_s']:.1f} ms (median of {args.repeats}), from a reopened "
          f"cache {1e3 * out['cached_from_disk_s']:.1f} ms; max |cached - full| "
          f"{out['cached_vs_full_diff']:.2g}", flush=True)
    print("scoring re-encoding / cached re-scoring: " + check(
        checks, "scoring/cached_speedup", out["speedup_cached"], "x", f">= {CACHE_SPEEDUP:g}x",
        out["speedup_cached"] >= CACHE_SPEEDUP), flush=True)
    return out


