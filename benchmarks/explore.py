"""Explore-page benchmarks: slider-move latency, Pareto fronts and scoring throughput, each
number printed with its target and PASS/FAIL.

    python benchmarks/explore.py [--sections select,pareto,scoring] [--device auto]
        [--prompts 10000] [--per-prompt 10] [--n 408] [--strict] [--out results.json]

Sections:
- select: one slider move on N = prompts x per-prompt candidates with K objectives, i.e.
  re-scalarizing + best-of-N per prompt + the weight-simplex map (66 grid points), through the
  low-level calls (`selection.Selector`) and through the page's own path (`explore.Explorer`:
  `select` + `simplex_map`); rows in prompt blocks and shuffled. Target: the Explorer move with
  a weighted sum (with and without a constraint) under 50 ms, median of --repeats moves. Then
  slider steps as the page makes them (winners, headline means, winners table; the weight map
  cached per scalarizer and constraints): target <= 5 ms per step, the map on top reported;
- pareto: the non-dominated set of --pareto-n points near the plane x+y+z=1 (a large front),
  library against moocore called directly on the same array (interleaved repeats). Targets:
  under 1 s, and at most 1.5x moocore;
- scoring: a frozen-backbone reward model on the demo candidate set. Targets: batched scoring
  at least 5x a one-text-at-a-time loop (same texts), re-scoring new heads from the embedding
  cache at least 50x faster than re-encoding, batched = unbatched to 1e-5. On a CPU the loop
  is also timed with one torch thread (info): with two threads on a busy machine a one-text
  forward stalls on its threads, which flatters the batched ratio.

Timings are wall-clock on a possibly shared machine: the load average is printed at the start
and the end. The exit code is 0 (it is a report) unless --strict and a target failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import moocore
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules, run any way

from bench_table import check  # noqa: E402
from explore_scoring import scoring  # noqa: E402

from morm_explorer.data.candidates import CandidateSet
from morm_explorer.explore import Choice, Explorer
from morm_explorer.objectives import Constraint, best_of_n, scalarize, violation
from morm_explorer.pareto import hypervolume, nondominated, pareto_ranks
from morm_explorer.scoring import Scores
from morm_explorer.selection import Selector, embed_grid, simplex_grid

OBJECTIVES = ("helpful", "harmless", "honest", "concise")
# Within-prompt correlations of the synthetic scores: helpful trades off against harmless and
# concise against harmless, honest goes mildly with both helpful and harmless.
CORR = np.array([[1.0, -0.5, 0.3, 0.0],
                 [-0.5, 1.0, 0.2, -0.3],
                 [0.3, 0.2, 1.0, 0.1],
                 [0.0, -0.3, 0.1, 1.0]])
MOVE_MS, STEP_MS, PARETO_S, PARETO_RATIO = 50.0, 5.0, 1.0, 1.5


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{torch.get_num_threads()} torch threads, {gpu}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def repeat(fn: Callable[[int], dict[str, float]], repeats: int, warmup: int = 1
           ) -> dict[str, dict[str, float]]:
    """Run ``fn(i)`` warm-up + repeats times; it returns named durations in seconds. Median
    and p90 (ms) of each name over the timed runs."""
    for i in range(warmup):
        fn(i)
    runs = [fn(warmup + i) for i in range(repeats)]
    return {k: {"median_ms": 1e3 * float(np.median([r[k] for r in runs])),
                "p90_ms": 1e3 * float(np.percentile([r[k] for r in runs], 90))}
            for k in runs[0]}


# -- select -----------------------------------------------------------------------------------


def trade_off_scores(rng: np.random.Generator, prompts: int, per_prompt: int, k: int
                     ) -> np.ndarray:
    """Scores (N, K) float32 in prompt blocks: a per-prompt offset (some prompts are easier on
    every objective) plus correlated, partly anti-correlated, candidate noise."""
    corr = np.eye(k)
    m = min(k, len(CORR))
    corr[:m, :m] = CORR[:m, :m]
    offset = rng.normal(scale=0.5, size=(prompts, 1, k))  # (P, 1, K)
    noise = rng.multivariate_normal(np.zeros(k), corr, size=(prompts, per_prompt))  # (P, M, K)
    return (offset + noise).reshape(prompts * per_prompt, k).astype(np.float32)


def candidate_explorer(values: np.ndarray, groups: np.ndarray, objectives: list[str]
                       ) -> tuple[Explorer, float]:
    n = len(values)
    frame = pd.DataFrame({"prompt_id": groups, "prompt": "q", "response": "r", "source": "s",
                          "category": "c", "meta": [None] * n})
    stats = {"mean": values.mean(0).tolist(), "std": values.std(0).tolist()}
    scores = Scores(candidates=CandidateSet(frame), values=values, objectives=objectives,
                    stats=stats)
    t = time.perf_counter()
    ex = Explorer(scores)
    return ex, time.perf_counter() - t


def low_level_moves(sel: Selector, ex: Explorer, weights: np.ndarray, repeats: int) -> dict:
    """Slider moves through `selection` alone: winners, then the simplex sweep and its means."""
    z, raw, grid = ex.z, ex.raw, simplex_grid(3, 10)

    def move(i: int) -> dict[str, float]:
        t0 = time.perf_counter()
        sel.winners(scalarize(z, weights[i]))
        t1 = time.perf_counter()
        sel.mean_scores(raw, sel.sweep(z, embed_grid(grid, weights[i], [0, 1, 2])))
        t2 = time.perf_counter()
        return {"select": t1 - t0, "map": t2 - t1, "move": t2 - t0}

    return repeat(move, repeats)


def explorer_moves(ex: Explorer, method: str, constraints: tuple[Constraint, ...],
                   weights: np.ndarray, repeats: int) -> dict:
    """Slider moves as the page makes them: `Explorer.select` + `Explorer.simplex_map`."""
    objectives, axes = ex.objectives, ex.objectives[:3]
    choices = [Choice.of(dict(zip(objectives, w.tolist(), strict=True)), method, True,
                         constraints) for w in weights]

    def move(i: int) -> dict[str, float]:
        t0 = time.perf_counter()
        ex.select(choices[i])
        t1 = time.perf_counter()
        ex.simplex_map(choices[i], axes, steps=10)
        t2 = time.perf_counter()
        return {"select": t1 - t0, "map": t2 - t1, "move": t2 - t0}

    r: dict = repeat(move, repeats)
    s = ex.select(choices[0])
    # the same winners as the plain group-by of objectives.best_of_n (winners are unique rows,
    # one per prompt, so equal sorted arrays mean equal winners)
    reference = best_of_n(scalarize(ex.z, s.weights, method), ex.frame["prompt_id"].to_numpy(),
                          violation(ex.z, objectives, constraints) if constraints else None)
    r["agrees_with_best_of_n"] = bool(np.array_equal(np.sort(s.winners),
                                                     np.sort(reference["winner"])))
    r["feasible_prompts"] = float(s.feasible.mean())
    return r


def slider_steps(ex: Explorer, repeats: int) -> dict:
    """Slider steps as a user makes them and as the Explore page computes them: one slider
    moves 0.05 (the first objective's, then the second's: every position is new), and each
    step selects the winners, their mean scores (the headline) and the winners table ("step"),
    and, with the Weight map tab open, the map over the first three objectives ("map"): read
    from the cache with K = 3, where a step only moves its star; with K > 3 the other
    objectives' share of the weights changes, so the map is computed again."""
    objectives, axes = ex.objectives, ex.objectives[:3]
    weights = dict.fromkeys(objectives, 0.5)
    ex.simplex_map(Choice.of(weights), axes)  # the first view of the map, before any step
    prev = ex.select(Choice.of(weights))

    def step(i: int) -> dict[str, float]:
        nonlocal prev
        weights[objectives[0]] = round(0.05 * (i % 19 + 1), 2)
        weights[objectives[1]] = round(0.5 + 0.05 * (i // 19 % 10), 2)
        choice = Choice.of(weights)
        c0, t0 = time.thread_time(), time.perf_counter()
        sel = ex.select(choice)
        ex.raw[sel.winners].mean(0)
        ex.winners_table(sel, prev)
        c1, t1 = time.thread_time(), time.perf_counter()
        ex.simplex_map(choice, axes)
        t2 = time.perf_counter()
        prev = sel
        return {"step": t1 - t0, "step_cpu": c1 - c0, "map": t2 - t1, "step_and_map": t2 - t0}

    return repeat(step, repeats)


def select_layout(layout: str, values: np.ndarray, groups: np.ndarray, weights: np.ndarray,
                  args, checks: list[dict]) -> dict:
    objectives = list(OBJECTIVES[:values.shape[1]]) + \
        [f"objective{k}" for k in range(len(OBJECTIVES), values.shape[1])]
    t = time.perf_counter()
    sel = Selector(groups)
    out: dict = {"selector_build_ms": 1e3 * (time.perf_counter() - t)}
    ex, build = candidate_explorer(values, groups, objectives)
    out["explorer_build_ms"] = 1e3 * build
    print(f"select {layout}: Selector built in {out['selector_build_ms']:.1f} ms, Explorer "
          f"(Selector + Pareto fronts) in {out['explorer_build_ms']:.0f} ms, "
          f"front {int(ex.front.sum()):,} of {len(ex):,}", flush=True)
    m = out["low_level"] = low_level_moves(sel, ex, weights, args.repeats)
    for key in ("selector_build_ms", "explorer_build_ms"):
        check(checks, f"select/{layout}/{key}", out[key], "ms", "", None)
    check(checks, f"select/{layout}/low_level/move_ms", m["move"]["median_ms"], "ms", "", None)
    print(f"select {layout} low-level weighted_sum: winners {m['select']['median_ms']:.1f} ms, "
          f"sweep + means {m['map']['median_ms']:.1f} ms, move median "
          f"{m['move']['median_ms']:.1f} ms p90 {m['move']['p90_ms']:.1f} ms", flush=True)
    # A constraint in z units that about a third of the candidates meet: some prompts have
    # none that does, so the least-violating fallback is exercised too.
    variants = {"weighted_sum": ("weighted_sum", ()),
                "weighted_sum + constraint": ("weighted_sum", (Constraint(objectives[1], 0.5),)),
                "chebyshev": ("chebyshev", ())}
    for name, (method, constraints) in variants.items():
        r = out[name] = explorer_moves(ex, method, constraints, weights, args.repeats)
        target = method == "weighted_sum"  # the target is for weighted sums only
        line = check(checks, f"select/{layout}/{name}/move_ms", r["move"]["median_ms"], "ms",
                     f"< {MOVE_MS:.0f} ms" if target else "",
                     r["move"]["median_ms"] < MOVE_MS if target else None)
        print(f"select {layout} Explorer {name}: select {r['select']['median_ms']:.1f} ms, "
              f"simplex_map {r['map']['median_ms']:.1f} ms, move median {line}, p90 "
              f"{r['move']['p90_ms']:.1f} ms; feasible prompts {r['feasible_prompts']:.1%}"
              f"; winners = objectives.best_of_n: {r['agrees_with_best_of_n']}", flush=True)
    r = out["slider_step"] = slider_steps(ex, args.repeats)
    line = check(checks, f"select/{layout}/slider_step/step_ms", r["step"]["median_ms"], "ms",
                 f"<= {STEP_MS:g} ms", r["step"]["median_ms"] <= STEP_MS)
    for name in ("step_cpu", "map"):
        check(checks, f"select/{layout}/slider_step/{name}_ms", r[name]["median_ms"], "ms", "",
              None)
    how = "cached: only its star moves" if len(objectives) == 3 else "recomputed: K > 3"
    print(f"select {layout} slider step (winners, headline, winners table): median {line}, "
          f"p90 {r['step']['p90_ms']:.1f} ms, CPU time {r['step_cpu']['median_ms']:.2f} ms "
          f"(wall clock less the waits for a core); the weight map on top "
          f"{r['map']['median_ms']:.2f} ms ({how})", flush=True)
    return out


def select(args, checks: list[dict]) -> dict:
    rng = np.random.default_rng(args.seed)
    k = args.objectives
    values = trade_off_scores(rng, args.prompts, args.per_prompt, k)  # (N, K)
    groups = np.repeat(np.array([f"p{i:06d}" for i in range(args.prompts)]), args.per_prompt)
    # one weight vector per move (warm-up included): every move is a new slider position
    weights = rng.dirichlet(np.ones(k), size=args.repeats + 1)  # (R + 1, K)
    out = {"n": len(values), "prompts": args.prompts, "objectives": k}
    print(f"select: N = {len(values):,} candidates ({args.prompts:,} prompts x "
          f"{args.per_prompt}), K = {k}, {args.repeats} moves after a warm-up", flush=True)
    out["contiguous"] = select_layout("contiguous", values, groups, weights, args, checks)
    perm = rng.permutation(len(values))
    out["shuffled"] = select_layout("shuffled", values[perm], groups[perm], weights, args,
                                    checks)
    return out


# -- pareto -----------------------------------------------------------------------------------


def pareto(args, checks: list[dict]) -> dict:
    rng = np.random.default_rng(args.seed)
    n = args.pareto_n
    # near the simplex x+y+z=1: most points trade one objective for another, a large front
    x = rng.dirichlet(np.ones(3), size=n) + rng.normal(scale=0.01, size=(n, 3))  # (N, 3)
    groups = np.repeat(np.arange(n // 10 + 1), 10)[:n]  # 10 candidates per prompt
    lib, direct = [], []
    for _ in range(args.pareto_repeats):  # interleaved, so both see the same machine load
        t = time.perf_counter()
        ref = moocore.is_nondominated(x, maximise=True, keep_weakly=True)
        direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        front = nondominated(x)
        lib.append(time.perf_counter() - t)
    out = {"n": n, "front": int(front.sum()), "same_as_moocore": bool((front == ref).all()),
           "library_s": float(np.median(lib)), "moocore_s": float(np.median(direct))}
    out["ratio"] = out["library_s"] / out["moocore_s"]
    line = check(checks, "pareto/nondominated_s", out["library_s"], "s", f"< {PARETO_S:g} s",
                 out["library_s"] < PARETO_S)
    print(f"pareto: N = {n:,} points in 3 objectives, front {out['front']:,} "
          f"(same as moocore: {out['same_as_moocore']})", flush=True)
    print(f"pareto nondominated: {line}; moocore directly {1e3 * out['moocore_s']:.1f} ms",
          flush=True)
    line = check(checks, "pareto/ratio_to_moocore", out["ratio"], "x",
                 f"<= {PARETO_RATIO:g}x", out["ratio"] <= PARETO_RATIO)
    print(f"pareto library / moocore: {line}", flush=True)
    for name, fn in {"per_prompt_s": lambda: nondominated(x, groups),
                     "ranks_s": lambda: pareto_ranks(x),
                     "hypervolume_s": lambda: hypervolume(x, x.min(axis=0) - 0.01)}.items():
        ts = []
        for _ in range(args.pareto_repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[name] = float(np.median(ts))
        print(f"pareto {name[:-2]}: {check(checks, f'pareto/{name}', out[name], 's', '', None)}",
              flush=True)
    out["per_prompt_front"] = int(nondominated(x, groups).sum())
    out["ranks"] = int(pareto_ranks(x).max()) + 1
    return out


# -- main -------------------------------------------------------------------------------------


def summary(checks: list[dict]) -> None:
    width = max(len(c["metric"]) for c in checks)
    print(f"\n{'metric':<{width}}  {'value':>12}  {'target':<12}  result")
    for c in checks:
        value = f"{c['value']:.4g} {c['unit']}".rstrip()
        print(f"{c['metric']:<{width}}  {value:>12}  {c['target'] or '-':<12}  {c['result']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="select,pareto,scoring")
    ap.add_argument("--prompts", type=int, default=10_000, help="select: prompts")
    ap.add_argument("--per-prompt", type=int, default=10, help="select: candidates per prompt")
    ap.add_argument("--objectives", type=int, default=4, help="select: K (>= 3)")
    ap.add_argument("--repeats", type=int, default=20, help="timed repeats after a warm-up")
    ap.add_argument("--pareto-n", type=int, default=100_000)
    ap.add_argument("--pareto-repeats", type=int, default=7)
    ap.add_argument("--backbone", default="minilm", help="scoring: backbone name or folder")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--n", type=int, default=408, help="scoring: candidates (demo set: 408)")
    ap.add_argument("--single-n", type=int, default=128,
                    help="scoring: texts in the one-at-a-time loop (and its batched twin)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.objectives < 3:
        ap.error(f"--objectives must be >= 3 (the simplex map has three axes), got "
                 f"{args.objectives}")
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = args.sections.split(",")
    unknown = set(sections) - {"select", "pareto", "scoring"}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; expected select, pareto, scoring")
    results: dict = {"machine": machine(), "torch": torch.__version__,
                     "numpy": np.__version__, "load_start": load()}
    print(f"{results['machine']}; {results['load_start']}", flush=True)
    checks: list[dict] = []
    for name, fn in (("select", select), ("pareto", pareto), ("scoring", scoring)):
        if name in sections:
            results[name] = fn(args, checks)
    results["load_end"], results["summary"] = load(), checks
    print(f"done; {results['load_end']}", flush=True)
    summary(checks)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    failed = [c["metric"] for c in checks if c["result"] == "FAIL"]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
