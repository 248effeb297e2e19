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
keydown (performance.now() in the page):
- table: until the winners table draws new rows (reported as winners_ms). Targets: <= 150 ms
  for the demo set, <= 500 ms at 100,000 candidates (median). The grid (glide-data-grid)
  draws its cells on a canvas with fillText: the step's time is that of the first animation
  frame after the keydown that redraws the whole winners grid with other texts than its last
  full redraw before the step (steps where none is seen fall back to table_a11y and are
  counted as "not seen drawn");
- table_a11y: until that accessible <table> shows the new rows, info. The grid updates it
  200 ms after its last change (a debounced memo), so it lags the drawn rows by >= 200 ms;
  before this benchmark timed the canvas, it was the table's figure;
- metrics: until the headline figures (winners changed, winners' means) change, info;
- done: until that script run has finished (the figures included) and the table is drawn,
  info;
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
# was before the step, `a11y` when the winners table's accessible rows do, and `done` when the
# app's script state is back to notRunning after it ran. fillText on the winners grid's canvas
# is recorded per animation frame (document.timeline.currentTime); a frame that draws the
# header (a full redraw, not one cell's) is a picture of the table, and `drawn()` gives the
# time of the first such picture after t0 that differs from the last one before it (null when
# none was seen).
OBSERVER_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const metrics = () => Array.from(document.querySelectorAll(
      '[data-testid="stMetricValue"]')).map(e => e.textContent).join('|');
  const winnersGrid = () => {
    for (const d of document.querySelectorAll('[data-testid="stDataFrame"]')) {
      const head = Array.from(d.querySelectorAll('thead th')).map(t => t.textContent.trim());
      if (head.includes('prompt_id')) return d;
    }
    return null;
  };
  const table = () => {
    const body = winnersGrid()?.querySelector('tbody');
    return body ? body.textContent : '';
  };
  const isWinners = new WeakMap();  // grid element -> whether it is the winners table
  const full = f => f.texts.includes('prompt_id');
  window.__bench = {t0: null, metrics: null, a11y: null, done: null, ran: false, frames: [],
                    read: () => [metrics(), table()],
                    drawn: () => {
                      const b = window.__bench;
                      if (b.old === null) return null;
                      const hit = b.frames.find(f => f.t >= b.t0 && full(f)
                                                && f.texts.join('\\n') !== b.old);
                      return hit ? hit.t : null;
                    },
                    last: () => {
                      const f = window.__bench.frames.filter(full).pop();
                      return f ? f.texts.join('\\n') : null;
                    }};
  const fillText = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
    const b = window.__bench, grid = this.canvas.closest('[data-testid="stDataFrame"]');
    if (grid !== null && !isWinners.get(grid)) isWinners.set(grid, grid === winnersGrid());
    if (grid !== null && isWinners.get(grid) && b.a11y === null) {
      const frame = document.timeline.currentTime, f = b.frames[b.frames.length - 1];
      if (f && f.frame === frame) f.texts.push(String(text));
      else b.frames.push({frame: frame, t: performance.now(), texts: [String(text)]});
    }
    return fillText.call(this, text, ...rest);
  };
  document.addEventListener('keydown', () => {
    if (window.__bench.t0 === null) window.__bench.t0 = performance.now();
  }, true);
  new MutationObserver(records => {
    const b = window.__bench;
    if (b.t0 === null) return;
    const now = performance.now();
    if (b.metrics === null && metrics() !== b.before[0]) b.metrics = now;
    if (b.a11y === null && table() !== b.before[1]) b.a11y = now;
    if (records.some(r => r.type === 'attributes')) b.ran = true;  // the script state changed
    if (b.ran && b.metrics !== null && b.done === null
        && app.getAttribute('data-test-script-state') === 'notRunning') b.done = now;
  }).observe(document.body, {subtree: true, childList: true, characterData: true,
                             attributes: true, attributeFilter: ['data-test-script-state']});
}"""
# The picture of the table before the step is the last full frame drawn since the previous arm
# (the previous step's new rows); the first step after installing has none, so it falls back to
# the accessible mirror's time (a warmup step).
ARM_JS = """() => { const b = window.__bench;
  b.old = b.last(); b.frames = [];
  b.t0 = null; b.metrics = null; b.a11y = null; b.done = null; b.ran = false;
  b.before = b.read(); }"""
MEASURES = ("metrics", "table", "table_a11y", "done")
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
    misses = 0  # steps whose new rows were not seen drawn on the canvas
    for i in range(warmup + steps):
        page.evaluate(ARM_JS)
        busy, cpu = browser_busy_s(cdp), server_cpu_s(server.proc.pid)
        slider.press("End" if i % 2 == 0 else "Home")
        page.wait_for_function("() => window.__bench.done !== null && window.__bench.a11y "
                               "!== null", timeout=120_000)
        b = page.evaluate("() => ({...window.__bench, table: window.__bench.drawn()})")
        if b["table"] is None:  # the new rows not seen drawn: the mirror's time
            b["table"], misses = b["a11y"], misses + (i >= warmup)
        b["table_a11y"] = b["a11y"]
        b["done"] = max(b["done"], b["table"])  # the run over and its table drawn
        if i >= warmup:
            for m in MEASURES:
                times[m].append(b[m] - b["t0"])
            times["browser_busy"].append(1e3 * (browser_busy_s(cdp) - busy))
            times["server_cpu"].append(1e3 * (server_cpu_s(server.proc.pid) - cpu))
        wait_idle(page, settle_ms=100)
    if page.locator('[data-testid="stException"]').count():
        raise RuntimeError("the page shows an exception: "
                           + page.locator('[data-testid="stException"]').first.inner_text())
    return {"canvas_misses": misses,
            **{m: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
                   "all_ms": [round(x, 1) for x in v]} for m, v in times.items()}}


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
                    for m in ("metrics", "table_a11y", "done"):
                        check(checks, f"browser/{size}/{m}_ms", r[m]["median_ms"], "ms", "",
                              None)
                    print(f"{size} ({cset}, {model}; {args.repeats} steps): slider step to "
                          f"the updated winners table median {line}, p90 "
                          f"{r['table']['p90_ms']:.0f} ms (its accessible mirror "
                          f"{r['table_a11y']['median_ms']:.0f} ms; steps not seen drawn "
                          f"{r['canvas_misses']}); headline metrics median "
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
