"""The demo workspace: what a fresh install builds on first start so the app has data to show.

It holds the demo preference data and the demo candidate set (the project's own prompts, one
response per behaviour). `ensure_demo` is idempotent: it builds only what is missing and
returns what it built.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from morm_explorer.data.loaders import load_preference_data
from morm_explorer.workspace import Workspace

DEMO_DATASET = "demo-preferences"
DEMO_SEED = 0


def ensure_demo(ws: Workspace) -> list[str]:
    """Build the parts of the demo workspace that are missing; return their names."""
    from morm_explorer.data.synth import write_synth

    built: list[str] = []
    if DEMO_DATASET not in {d.name for d in ws.list_datasets()}:
        # A private temp file: two app processes starting at once must not share one.
        with tempfile.TemporaryDirectory(dir=ws.root) as tmp:
            raw = Path(tmp) / f"{DEMO_DATASET}.jsonl"
            write_synth(raw, seed=DEMO_SEED)
            dataset = load_preference_data(raw, fmt="jsonl")
        dataset.source = f"built-in demo data (morm data synth --seed {DEMO_SEED})"
        ws.save_dataset(DEMO_DATASET, dataset, overwrite=True)
        built.append(DEMO_DATASET)
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
