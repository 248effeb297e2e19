"""Every benchmark of the project in one run, one table: `python benchmarks/all.py`.

Runs, one after another in subprocesses on this machine: the Explore benchmark (slider moves,
Pareto sets, scoring throughput), PPO throughput on the tiny model (and on SmolLM2 with
``--smollm2``), and the reward-model cost of K heads. Prints one table of the figures with their
targets and the ratios each benchmark measured within its own run, with the machine it ran on,
and writes it as markdown with ``--out`` (docs/benchmarks.md keeps the latest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        tv = torch.__version__
    except ImportError:
        gpu, tv = "no GPU", "?"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}, Python "
            f"{platform.python_version()}, torch {tv}")


def run(name: str, args: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, *args, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {"failed": True, "seconds": seconds}
    print(f"{name}: {seconds:.0f} s", flush=True)
    return {**json.loads(out.read_text()), "seconds": seconds}


def rows_from(results: dict) -> list[tuple[str, str, str, str]]:
    """(metric, value, target, result) rows from every benchmark's output."""
    rows = []
    for c in results.get("explore", {}).get("summary", []):
        rows.append((f"explore/{c['metric']}", f"{c['value']:.4g} {c['unit']}".strip(),
                     c.get("target") or "-", c["result"]))
    for key in ("ppo_tiny", "ppo_smollm2"):
        s = results.get(key, {}).get("summary")
        if s:
            rows.append((f"{key}/tokens_per_s", f"{s['tokens_per_s_median']:.1f} tok/s", "-",
                         "info"))
            rows.append((f"{key}/step_s", f"{s['step_s_median']:.3f} s", "-", "info"))
    timing = results.get("reward", {}).get("timing")
    if isinstance(timing, dict):
        for k, v in timing.items():
            if isinstance(v, (int, float)) and ("ratio" in k or k.endswith("_x")):
                rows.append((f"reward/timing/{k}", f"{v:.3g}", "-", "info"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smollm2", action="store_true", help="also PPO on SmolLM2 (minutes)")
    ap.add_argument("--workspace", help="workspace with demo-rm (for --smollm2)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--out", help="write the table as markdown here")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="morm-bench-"))
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    print(results["machine"], flush=True)
    results["explore"] = run("explore", ["benchmarks/explore.py", "--device", args.device],
                             tmp / "explore.json")
    results["ppo_tiny"] = run("ppo (tiny)", ["benchmarks/ppo.py", "--steps", "20",
                                             "--device", args.device], tmp / "ppo.json")
    if args.smollm2:
        extra = ["--workspace", args.workspace] if args.workspace else []
        results["ppo_smollm2"] = run("ppo (smollm2)", [
            "benchmarks/ppo.py", "--policy", "smollm2", "--reward-model", "demo-rm",
            "--steps", "3", "--device", args.device, *extra], tmp / "ppo2.json")
    results["reward"] = run("reward models (timing)", [
        "benchmarks/reward_models.py", "--sections", "timing", "--repeats", "1",
        "--device", args.device], tmp / "reward.json")
    rows = rows_from(results)
    width = max(len(r[0]) for r in rows) if rows else 10
    lines = [f"Machine: {results['machine']}; {results['date']}; command: "
             f"`python benchmarks/all.py{' --smollm2' if args.smollm2 else ''}`", "",
             "| metric | value | target | result |", "| --- | --- | --- | --- |"]
    lines += [f"| {m} | {v} | {t} | {r} |" for m, v, t, r in rows]
    print("\n" + "\n".join(f"{m:<{width}}  {v:>16}  {t:<10}  {r}" for m, v, t, r in rows))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    failed = [r for r in rows if r[3] == "FAIL"]
    print(f"\n{len(rows)} figures, {len(failed)} below target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
