"""The demo workspace: what a fresh install builds on first start so the app has data to show.

It holds the built-in preference data in two parts that share no prompt (`builtin.part_of`):
``demo-preferences`` for the demo reward model and ``demo-judge-preferences`` for the held-out
judge, and the demo candidate set (the project's own prompts, one response per behaviour).
`ensure_demo` is idempotent: it builds only what is missing (or a demo dataset whose recorded
source is not the current one, as one made by an older version) and returns what it built.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from morm_explorer.data.loaders import load_preference_data
from morm_explorer.workspace import Workspace

DEMO_DATASET = "demo-preferences"
DEMO_JUDGE_DATASET = "demo-judge-preferences"
DEMO_SEED = 0
DEMO_PARTS = {DEMO_DATASET: "rm", DEMO_JUDGE_DATASET: "judge"}  # dataset -> builtin part


def demo_source(part: str) -> str:
    """What the demo dataset of built-in ``part`` ("rm" or "judge") is, in words."""
    which = ("reward-model part" if part == "rm"
             else "judge part, prompts disjoint from the reward-model part's")
    return ("built-in data: SmolLM2 responses under contrasting instructions + template pairs "
            f"(morm data synth --kind model --seed {DEMO_SEED}), {which}")


def save_demo_dataset(ws: Workspace, name: str) -> None:
    """Save part `DEMO_PARTS[name]` of the built-in data as workspace dataset `name`."""
    from morm_explorer.data.builtin import write_builtin

    part = DEMO_PARTS[name]
    # A private temp file: two app processes starting at once must not share one.
    with tempfile.TemporaryDirectory(dir=ws.root) as tmp:
        raw = Path(tmp) / f"{name}.jsonl"
        write_builtin(raw, seed=DEMO_SEED, kind="model", part=part)
        dataset = load_preference_data(raw, fmt="jsonl")
    dataset.source = demo_source(part)
    ws.save_dataset(name, dataset, overwrite=True)


def ensure_demo(ws: Workspace) -> list[str]:
    """Build the parts of the demo workspace that are missing; return their names."""
    built: list[str] = []
    sources = {d.name: d.source for d in ws.list_datasets()}
    for name, part in DEMO_PARTS.items():
        if sources.get(name) != demo_source(part):
            save_demo_dataset(ws, name)
            built.append(name)
    from morm_explorer.data.candidates import (
        from_records,
        list_candidate_sets,
        save_candidate_set,
    )
    from morm_explorer.data.demo_candidates import DEMO_CANDIDATE_SET, demo_candidates

    if DEMO_CANDIDATE_SET not in {c.name for c in list_candidate_sets(ws)}:
        cset = from_records(demo_candidates(seed=DEMO_SEED),
                            origin=f"built-in demo prompts, one response per behaviour "
                                   f"(seed {DEMO_SEED})")
        save_candidate_set(ws, DEMO_CANDIDATE_SET, cset, overwrite=True)
        built.append(DEMO_CANDIDATE_SET)
    return built
