"""Every benchmark of the project in one run, one table: `python benchmarks/all.py`.

Runs, one after another in subprocesses on this machine: the Explore benchmark (slider moves,
Pareto sets, scoring throughput), PPO throughput on the tiny model and on SmolLM2 (against the
demo reward model, trained here first), and the reward-model benchmarks (accuracy on the
built-in data, the cost of K heads against K models, and a 5-fold harmless head on HH-RLHF when
the file is there), and the default reward model trained on the built-in data scored zero-shot
on that file (`reward_transfer.py`). ``--skip`` leaves parts out. Prints one table of the
figures with their targets and the ratios each benchmark measured within its own run, with the
machine it ran on, and writes it as markdown with ``--out`` (docs/benchmarks.md keeps the
latest).
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
from statistics import fmean

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
            rows.append((f"{key}/rollout_share", f"{100 * s['rollout_share']:.0f} %", "-",
                         "info"))
    reward = results.get("reward", {})
    runs = reward.get("demo", {}).get("frozen", [])
    if runs:  # accuracy against the simulated labels and the hidden truth, mean over seeds
        for obj in [o for o in runs[0] if not o.startswith("_")]:
            rows.append((f"reward/demo/{obj}_accuracy",
                         f"{fmean([r[obj]['label'] for r in runs]):.3f}", "-", "info"))
            rows.append((f"reward/demo/{obj}_truth_accuracy",
                         f"{fmean([r[obj]['truth'] for r in runs]):.3f}", "-", "info"))
    hh = reward.get("hh", {}).get("frozen", {}).get("objectives", {}).get("harmless")
    if hh:
        rows.append(("reward/hh_harmless/5fold_accuracy",
                     f"{hh['accuracy']:.3f} [{hh['ci_low']:.3f}, {hh['ci_high']:.3f}]", "-",
                     "info"))
    rows += transfer_rows(results.get("transfer", {}))
    timing = reward.get("timing")
    if isinstance(timing, dict):
        for k, v in timing.items():
            if isinstance(v, (int, float)) and ("ratio" in k or k.endswith("_x")):
                rows.append((f"reward/timing/{k}", f"{v:.3g}x", "-", "info"))
    return rows


def transfer_rows(transfer: dict) -> list[tuple[str, str, str, str]]:
    """The default RM trained on the built-in data, zero-shot on HH-RLHF harmless, against
    the targets of docs/benchmarks.md ("the default reward on real text")."""
    rows = []
    base = transfer.get("hh_baselines", {}).get("shorter wins")
    for r in transfer.get("runs", []):
        acc, lo, hi = r["hh_harmless"]
        ok = acc >= 0.58 and (base is None or acc > base[0])
        rows.append((f"transfer/{r['kind']}/hh_harmless_zero_shot",
                     f"{acc:.3f} [{lo:.3f}, {hi:.3f}]", ">= 0.58, > shorter wins",
                     "PASS" if ok else "FAIL"))
        for obj, v in r["builtin_heldout"].items():
            rows.append((f"transfer/{r['kind']}/builtin_heldout/{obj}", f"{v[0]:.3f}",
                         ">= 0.90", "PASS" if v[0] >= 0.90 else "FAIL"))
    if base:
        rows.append(("transfer/hh_harmless/shorter_wins", f"{base[0]:.3f}", "-", "info"))
    for obj, row in transfer.get("features", {}).get("model", {}).items():
        rows.append((f"transfer/model/best_one_feature/{obj}", f"{row['best']:.3f}", "<= 0.65",
                     "PASS" if row["best"] <= 0.65 else "FAIL"))
    return rows


def demo_workspace(root: Path) -> str:
    """A workspace with the demo reward model ``demo-rm`` (the PPO benchmark's reward), built
    with the project's own commands (about half a minute on a CPU)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MORM_DEMO": "data"}
    morm = [sys.executable, "-m", "morm_explorer.cli", "--workspace", str(root)]
    subprocess.run([*morm, "demo"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*morm, "rm", "train", "--dataset", "demo-preferences", "--name", "demo-rm"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    return str(root)


def default_hh() -> str | None:
    """The HH-RLHF harmless-base test file where the shared data lies beside the checkout."""
    path = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base" / "test.jsonl.gz"
    return str(path) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip", default="", help="comma-separated: explore, ppo, smollm2, reward, "
                    "hh, transfer (the slow parts are smollm2, a few minutes on a CPU, hh and "
                    "transfer)")
    ap.add_argument("--workspace", help="workspace with demo-rm for the SmolLM2 PPO run "
                    "(default: one built here)")
    ap.add_argument("--hh", default=default_hh(), help="HH-RLHF harmless-base test.jsonl.gz "
                    "(default: ../shared/data/..., when there)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--out", help="write the table as markdown here")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    tmp = Path(tempfile.mkdtemp(prefix="morm-bench-"))
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    print(results["machine"], flush=True)
    t_all = time.perf_counter()
    if "explore" not in skip:
        results["explore"] = run("explore", ["benchmarks/explore.py", "--device", args.device],
                                 tmp / "explore.json")
    if "ppo" not in skip:
        results["ppo_tiny"] = run("ppo (tiny)", ["benchmarks/ppo.py", "--steps", "20",
                                                 "--device", args.device], tmp / "ppo.json")
    if "smollm2" not in skip:
        ws = args.workspace or demo_workspace(tmp / "ws")
        results["ppo_smollm2"] = run("ppo (smollm2)", [
            "benchmarks/ppo.py", "--policy", "smollm2", "--reward-model", "demo-rm",
            "--workspace", ws, "--steps", "3", "--device", args.device], tmp / "ppo2.json")
    if "reward" not in skip:
        sections = "demo,timing" + (",hh" if args.hh and "hh" not in skip else "")
        results["reward"] = run("reward models", [
            "benchmarks/reward_models.py", "--sections", sections, "--repeats", "1",
            "--timing-prompts", "60", "--device", args.device,
            *(["--hh", args.hh] if args.hh else [])], tmp / "reward.json")
    if "transfer" not in skip and args.hh:
        results["transfer"] = run("reward transfer", [
            "benchmarks/reward_transfer.py", "--kind", "model", "--hh", args.hh],
            tmp / "transfer.json")
    rows = rows_from(results)
    width = max(len(r[0]) for r in rows) if rows else 10
    command = "python benchmarks/all.py" + (f" --skip {args.skip}" if skip else "") + (
        f" --device {args.device}" if args.device != "auto" else "")
    lines = [f"Machine: {results['machine']}; {results['date']}; "
             f"{time.perf_counter() - t_all:.0f} s in all; command: `{command}`", "",
             "| metric | value | target | result |", "| --- | --- | --- | --- |"]
    lines += [f"| {m} | {v} | {t} | {r} |" for m, v, t, r in rows]
    failed_runs = [k for k, v in results.items() if isinstance(v, dict) and v.get("failed")]
    print("\n" + "\n".join(f"{m:<{width}}  {v:>16}  {t:<10}  {r}" for m, v, t, r in rows))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    failed = [r for r in rows if r[3] == "FAIL"]
    print(f"\n{len(rows)} figures, {len(failed)} below target"
          + (f"; benchmarks that failed to run: {', '.join(failed_runs)}" if failed_runs else ""))
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
