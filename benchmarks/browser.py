"""Explore in a real browser: a weight slider's keyboard step, timed to the updated winners.

Debian's Chromium driven by Playwright, the app served by `streamlit run`:

    python benchmarks/browser.py [--sizes demo,100000] [--objectives 4] [--repeats 20]
        [--warmup 2] [--strict] [--out results.json]

A temporary workspace holds the demo data and, per size N, a synthetic set of N candidates
(N / --per-prompt prompts, texts of a realistic length); two stand-in reward models (K = 3:
helpful, harmless, honest; K = --objectives) whose scores are stored for every set, so the page
only reads cached scores: the demo set's are its behaviours' true values (K = 3, like the
demo's model), a synthetic set's are correlated, partly trading off (benchmarks/explore.py).

Per size the page opens on that (model, set); then each step presses End or Home (alternately)
on the first objective's slider, so the winners change on every step, and times, from the
keydown (performance.now() in the page, seen by a MutationObserver):
- table: until the winners table shows new rows (reported as winners_ms). Targets: <= 150 ms
  for the demo set, <= 500 ms at 100,000 candidates (median);
- metrics: until the headline figures (winners changed, winners' means) change, info;
- done: until that script run has finished (the figures included), info;
- browser_busy and server_cpu: the time the page's main thread spent in tasks (Chrome's
  TaskDuration, wall clock within its tasks, so on a busy machine it includes waits for a core
  too) and the CPU time of the app's server (which does not), over the step (info).

Timings are wall-clock on a possibly shared machine: the load average is printed at the start
and the end. The exit code is 0 (it is a report) unless --strict and a target failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # this folder's modules and the repo, run any way

from bench_table import check  # noqa: E402
from explore import trade_off_scores  # noqa: E402

OBJECTIVES = ["helpful", "harmless", "honest", "concise", "fluent", "brief"]
TARGET_MS = {"demo": 150.0, 100_000: 500.0}
WORDS = ("the of and a to in is you that it he was for on are as with his they at be this "
         "have from or one had by word but not what all were we when your can said there use an "
         "each which she do how their if will up other about out many then them these so some "
         "answer question careful consider reason example detail step because however").split()

# Installed in the page before the steps: a capture-phase keydown listener stamps t0; a
# MutationObserver stamps `metrics` when the headline metrics' text first differs from what it
# was before the step, `table` when the winners table's rows do (the grid mirrors the rows it
# draws in an accessible <table>), then `done` when the app's script state is back to
# notRunning after both.
OBSERVER_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const metrics = () => Array.from(document.querySelectorAll(
      '[data-testid="stMetricValue"]')).map(e => e.textContent).join('|');
  const table = () => {
    for (const d of document.querySelectorAll('[data-testid="stDataFrame"]')) {
      const head = Array.from(d.querySelectorAll('thead th')).map(t => t.textContent.trim());
      if (head.includes('prompt_id')) {
        const body = d.querySelector('tbody');
        return body ? body.textContent : '';
      }
    }
    return '';
  };
  window.__bench = {t0: null, metrics: null, table: null, done: null, read: () => [metrics(),
                    table()]};
  document.addEventListener('keydown', () => {
    if (window.__bench.t0 === null) window.__bench.t0 = performance.now();
  }, true);
  new MutationObserver(() => {
    const b = window.__bench;
    if (b.t0 === null) return;
    const now = performance.now();
    if (b.metrics === null && metrics() !== b.before[0]) b.metrics = now;
    if (b.table === null && table() !== b.before[1]) b.table = now;
    if (b.metrics !== null && b.table !== null && b.done === null
        && app.getAttribute('data-test-script-state') === 'notRunning') b.done = now;
  }).observe(document.body, {subtree: true, childList: true, characterData: true,
                             attributes: true, attributeFilter: ['data-test-script-state']});
}"""
ARM_JS = """() => { const b = window.__bench;
  b.t0 = null; b.metrics = null; b.table = null; b.done = null; b.before = b.read(); }"""
MEASURES = ("metrics", "table", "done")
CPU_MEASURES = ("browser_busy", "server_cpu")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def model_config(objectives: list[str]) -> dict:
    """config.json of a stand-in reward model: enough for the pages to list it and read its
    cached scores (stats mean 0, std 1: standardizing is the identity); it has no weights."""
    k = len(objectives)
    return {"format": "morm-reward-model", "kind": "trained", "created_at": time.time(),
            "model": {"objectives": objectives, "architecture": "multi_head",
                      "backbone": "benchmark-stand-in"},
            "training": {"mode": "frozen", "dataset": "none"},
            "stats": {"mean": [0.0] * k, "std": [1.0] * k}}


def synthetic_set(n: int, per_prompt: int, rng: np.random.Generator):
    """A CandidateSet of n candidates in prompt blocks, prompts ~80 and responses ~400
    characters."""
    import pandas as pd

    from morm_explorer.data.candidates import CandidateSet

    prompts = max(1, n // per_prompt)
    n = prompts * per_prompt
    words = np.asarray(WORDS)
    pid = np.repeat([f"q{i:06d}" for i in range(prompts)], per_prompt)
    body = [" ".join(words[rng.integers(0, len(words), 80)]) for _ in range(512)]
    frame = pd.DataFrame({
        "prompt_id": pid,
        "prompt": [f"Question {p}: " + body[i % 512][:70] for i, p in enumerate(pid)],
        "response": [f"Answer {i}: " + body[(i * 7) % 512] for i in range(n)],
        "source": np.tile([f"policy-{j % 4}" for j in range(per_prompt)], prompts),
        "category": "synthetic", "meta": [None] * n})
    return CandidateSet(frame, origin="benchmarks/browser.py")


def build_workspace(root: Path, sizes: list, k: int, per_prompt: int, seed: int) -> dict:
    """The workspace; returns size -> (model name, set name)."""
    from morm_explorer.data.candidates import load_candidate_set, save_candidate_set
    from morm_explorer.data.demo_candidates import DEMO_CANDIDATE_SET
    from morm_explorer.demo import ensure_demo
    from morm_explorer.scoring import store_scores
    from morm_explorer.workspace import Workspace

    ws = Workspace(root)
    ensure_demo(ws)
    models = {3: "bench-k3", k: f"bench-k{k}"}
    for kk, name in models.items():
        folder = root / "reward_models" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(model_config(OBJECTIVES[:kk])))
    rng = np.random.default_rng(seed)
    demo = load_candidate_set(ws, DEMO_CANDIDATE_SET)
    metas = [json.loads(m) if isinstance(m, str) else m for m in demo.frame["meta"]]
    true = np.array([[m["true"][o] for o in OBJECTIVES[:3]] for m in metas])  # (N, 3)
    extra = rng.normal(size=(len(true), max(0, k - 3)))
    sets = {DEMO_CANDIDATE_SET: (demo, np.column_stack([true, extra]))}
    for size in sizes:
        if size != "demo":
            cset = synthetic_set(size, per_prompt, rng)
            values = trade_off_scores(rng, cset.n_prompts, per_prompt, k)
            save_candidate_set(ws, f"bench-{size}", cset, overwrite=True)
            sets[f"bench-{size}"] = (cset, values)
    for cset, values in sets.values():  # every set under every model: nothing to score
        for kk, name in models.items():
            store_scores(ws, name, cset, values[:, :kk], OBJECTIVES[:kk])
    return {s: (models[3], DEMO_CANDIDATE_SET) if s == "demo" else (models[k], f"bench-{s}")
            for s in sizes}


def browser_busy_s(cdp) -> float:
    """Seconds the page's main thread has spent in tasks (script, style, layout, paint), by
    the wall clock."""
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of the app's server process so far, every thread."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def choose(page, label: str, option: str) -> None:
    """Pick the option whose text starts with ``option`` in the selectbox labelled ``label``."""
    from tests.browser import wait_idle

    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label)
    if box.locator("input").input_value().split(" (")[0] == option:
        return
    box.click()
    page.get_by_role("option", name=re.compile(f"^{re.escape(option)}( |$)")).click()
    wait_idle(page)


def measure(page, server, model: str, cset: str, objective: str, steps: int, warmup: int,
            tab: str | None = None) -> dict:
    """Open Explore on (model, set) and its figure tab ``tab``, then time ``warmup + steps``
    slider steps."""
    from tests.browser import open_app, wait_idle

    open_app(page, server, "explore")
    choose(page, "Reward model", model)
    choose(page, "Candidate set", cset)
    if tab:
        page.get_by_role("tab", name=tab).click()
        wait_idle(page)
    slider = page.get_by_role("slider", name=objective)
    slider.wait_for()
    wait_idle(page)
    page.evaluate(OBSERVER_JS)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    times: dict[str, list[float]] = {m: [] for m in (*MEASURES, *CPU_MEASURES)}
    for i in range(warmup + steps):
        page.evaluate(ARM_JS)
        busy, cpu = browser_busy_s(cdp), server_cpu_s(server.proc.pid)
        slider.press("End" if i % 2 == 0 else "Home")
        page.wait_for_function("() => window.__bench.done !== null", timeout=120_000)
        b = page.evaluate("() => window.__bench")
        if i >= warmup:
            for m in MEASURES:
                times[m].append(b[m] - b["t0"])
            times["browser_busy"].append(1e3 * (browser_busy_s(cdp) - busy))
            times["server_cpu"].append(1e3 * (server_cpu_s(server.proc.pid) - cpu))
        wait_idle(page, settle_ms=100)
    if page.locator('[data-testid="stException"]').count():
        raise RuntimeError("the page shows an exception: "
                           + page.locator('[data-testid="stException"]').first.inner_text())
    return {m: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
                "all_ms": [round(x, 1) for x in v]} for m, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="demo,100000",
                    help="comma-separated: 'demo' (the demo set) or a number of candidates")
    ap.add_argument("--objectives", type=int, default=4, help="K of the synthetic sets (>= 3)")
    ap.add_argument("--per-prompt", type=int, default=10, help="candidates per prompt")
    ap.add_argument("--repeats", type=int, default=20, help="timed slider steps per size")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--tab", help="the figure tab open during the steps (default: the first, "
                                  "Scatter and fronts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if not 3 <= args.objectives <= len(OBJECTIVES):
        ap.error(f"--objectives must be 3 to {len(OBJECTIVES)}, got {args.objectives}")
    try:
        sizes = [s if s == "demo" else int(s) for s in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes takes 'demo' and numbers of candidates, got {args.sizes!r}")
    from tests.browser import VIEWPORT, AppServer, launch_chromium, skip_reason

    if reason := skip_reason():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    results: dict = {"sizes": {}, "load_start": load()}
    print(results["load_start"], flush=True)
    checks: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="morm-browser-bench-") as tmp:
        root = Path(tmp) / "ws"
        t = time.perf_counter()
        plan = build_workspace(root, sizes, args.objectives, args.per_prompt, args.seed)
        print(f"workspace built in {time.perf_counter() - t:.1f} s", flush=True)
        server = AppServer(root, Path(tmp) / "streamlit.log")
        server.start()
        try:
            with sync_playwright() as pw:
                chromium = launch_chromium(pw)
                context = chromium.new_context(viewport=VIEWPORT)
                context.set_default_timeout(120_000)
                page = context.new_page()
                for size, (model, cset) in plan.items():
                    r = measure(page, server, model, cset, OBJECTIVES[0], args.repeats,
                                args.warmup, args.tab)
                    results["sizes"][str(size)] = {"model": model, "set": cset, **r}
                    target = TARGET_MS.get(size)
                    w = r["table"]["median_ms"]
                    line = check(checks, f"browser/{size}/winners_ms", w, "ms",
                                 f"<= {target:.0f} ms" if target else "",
                                 w <= target if target else None)
                    for m in ("metrics", "done"):
                        check(checks, f"browser/{size}/{m}_ms", r[m]["median_ms"], "ms", "",
                              None)
                    print(f"{size} ({cset}, {model}; {args.repeats} steps): slider step to "
                          f"the updated winners table median {line}, p90 "
                          f"{r['table']['p90_ms']:.0f} ms; headline metrics median "
                          f"{r['metrics']['median_ms']:.0f} ms; run done median "
                          f"{r['done']['median_ms']:.0f} ms, p90 {r['done']['p90_ms']:.0f} ms; "
                          f"busy per step: browser main thread "
                          f"{r['browser_busy']['median_ms']:.0f} ms, server CPU "
                          f"{r['server_cpu']['median_ms']:.0f} ms ({load()})", flush=True)
                    for m in CPU_MEASURES:
                        check(checks, f"browser/{size}/{m}_ms", r[m]["median_ms"], "ms", "",
                              None)
                chromium.close()
        finally:
            server.stop()
            if "Traceback" in server.log.read_text(errors="replace"):
                print(server.log_tail(), file=sys.stderr)
    results["load_end"], results["summary"] = load(), checks
    print(f"done; {results['load_end']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    failed = [c["metric"] for c in checks if c["result"] == "FAIL"]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
