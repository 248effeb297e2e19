"""The demo reward models' training data: real HH-RLHF where the hub answers, else built-in.

`prepare_demo_data` is the first step of the background demo build. It tries once to fetch a
seeded sample of Anthropic's HH-RLHF ``helpful-base`` and ``harmless-base`` training pairs (MIT
licence) from the Hugging Face hub, maps them with the ``hh-rlhf`` preset and saves them merged
as the workspace dataset ``demo-hh-rlhf`` (objectives helpful and harmless), its ``source``
saying exactly where they came from; then a second sample, sharing no prompt with the first, as
``demo-judge-hh-rlhf`` for the held-out judge. Whatever goes wrong (the hub unreachable, offline
mode, ``MORM_DEMO_REAL=0``) the demo trains on the built-in data instead (its reward-model and
judge parts, which share no prompt either); never does the fetch stop the demo. The outcome is
written to ``<workspace>/demo-data.json`` for the Overview to say.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

from morm_explorer.data.hub import HUB_PREFIX, hub_cache_dir, hub_offline, hub_reachable
from morm_explorer.data.loaders import Dataset, load_preference_data
from morm_explorer.data.validation import ValidationReport
from morm_explorer.demo import DEMO_DATASET, DEMO_JUDGE_DATASET
from morm_explorer.errors import MormError
from morm_explorer.workspace import Workspace, atomic_write_text

DEMO_REAL_DATASET = "demo-hh-rlhf"
DEMO_REAL_JUDGE_DATASET = "demo-judge-hh-rlhf"
HH_HUB_NAME = "Anthropic/hh-rlhf"
HH_SUBSETS: tuple[str, ...] = ("helpful-base", "harmless-base")
HH_LICENCE = "MIT"
DEMO_REAL_PAIRS = 1500  # per subset: the CPU build embeds 2 x 3,000 texts per model in minutes
NOTE_FILE = "demo-data.json"


@dataclass(frozen=True)
class DemoData:
    """Which dataset the demo reward models train on, where it came from, and why."""

    dataset: str
    real: bool
    source: str
    reason: str = ""
    """why the built-in data, when it is"""
    judge_dataset: str = ""
    """the held-out judge's training data, sharing no prompt with `dataset`"""

    def describe(self) -> str:
        if self.real:
            return f"real data, {self.dataset}: {self.source}"
        why = f": {self.reason}" if self.reason else ""
        return f"the built-in demo data ({self.dataset}){why}"


def real_data_enabled() -> bool:
    """Whether the demo may try the hub (``MORM_DEMO_REAL=0`` switches it off)."""
    return os.environ.get("MORM_DEMO_REAL", "1").strip().lower() not in ("0", "false", "no",
                                                                          "off")


def merge_subsets(parts: list[tuple[str, Dataset]], source: str) -> Dataset:
    """One pairwise dataset of several HH-RLHF subsets; ids get the subset as prefix, since
    ids assigned per subset (from the row number) repeat across subsets."""
    records = [{**r, "id": f"{subset}-{r['id']}"} for subset, ds in parts for r in ds.records]
    report = ValidationReport(file=source, kind="pairwise",
                              n_rows=sum(ds.report.n_rows for _, ds in parts),
                              n_valid=len(records),
                              issues=[i for _, ds in parts for i in ds.report.issues])
    return Dataset(records=records, kind="pairwise", report=report, source=source)


def _load_subset(ws: Workspace, subset: str, limit: int, seed: int, split: str) -> Dataset:
    """A seeded sample of `limit` rows of one HH-RLHF subset (cached in the workspace)."""
    return load_preference_data(f"{HUB_PREFIX}{HH_HUB_NAME}", preset="hh-rlhf", subset=subset,
                                split=split, limit=limit, seed=seed,
                                cache_dir=hub_cache_dir(ws.root), on_error="drop")


def fetch_demo_hh(ws: Workspace, pairs: int = DEMO_REAL_PAIRS, seed: int = 0,
                  split: str = "train") -> Dataset:
    """A seeded sample of `pairs` rows of each HH-RLHF subset, fetched from the hub (cached in
    the workspace), merged and saved as `DEMO_REAL_DATASET`; `MormError` when the hub fails."""
    parts = [(subset, _load_subset(ws, subset, pairs, seed, split)) for subset in HH_SUBSETS]
    source = (f"Anthropic HH-RLHF ({HH_LICENCE} licence), "
              + "; ".join(f"{ds.source}: {len(ds):,} pairs" for _, ds in parts))
    merged = merge_subsets(parts, source)
    ws.save_dataset(DEMO_REAL_DATASET, merged, overwrite=True)
    return merged


def fetch_demo_judge_hh(ws: Workspace, pairs: int = DEMO_REAL_PAIRS, seed: int = 1,
                        split: str = "train") -> Dataset:
    """The held-out judge's sample, saved as `DEMO_REAL_JUDGE_DATASET`: per subset, `pairs`
    rows of a seeded sample of twice as many whose prompts `DEMO_REAL_DATASET` (saved first)
    does not hold, so the two share no prompt; `MormError` when none are left."""
    taken = {r["prompt"] for r in ws.load_dataset(DEMO_REAL_DATASET).records}
    parts, said = [], []
    for subset in HH_SUBSETS:
        ds = _load_subset(ws, subset, 2 * pairs, seed, split)
        fresh = [r for r in ds.records if r["prompt"] not in taken]
        if not fresh:
            raise MormError(f"every sampled {subset} row shares its prompt with "
                            f"{DEMO_REAL_DATASET}: no held-out rows for the judge")
        parts.append((subset, Dataset(fresh[:pairs], ds.kind, ds.report, ds.source)))
        said.append(f"{ds.source}: {min(len(fresh), pairs):,} pairs "
                    f"({len(ds) - len(fresh):,} sharing a prompt left out)")
    source = (f"Anthropic HH-RLHF ({HH_LICENCE} licence), held-out judge sample sharing no "
              f"prompt with {DEMO_REAL_DATASET}, " + "; ".join(said))
    merged = merge_subsets(parts, source)
    ws.save_dataset(DEMO_REAL_JUDGE_DATASET, merged, overwrite=True)
    return merged


def _source_of(ws: Workspace, name: str) -> str:
    """The recorded source of workspace dataset `name`; "" when there is no such dataset."""
    info = {d.name: d for d in ws.list_datasets()}.get(name)
    return info.source if info else ""


def _try_hub(ws: Workspace, pairs: int, timeout: float,
             fetches: list[Callable[..., Dataset]]) -> str:
    """Fetch the real data; the reason it could not be had, or "" when it is saved."""
    if pairs <= 0 or not real_data_enabled():
        return "real data switched off (MORM_DEMO_REAL=0)"
    if hub_offline():
        return "the Hugging Face hub is switched off on this machine (HF_HUB_OFFLINE)"
    if not hub_reachable(timeout):
        return f"the Hugging Face hub could not be reached within {timeout:g} s"
    try:
        for fetch in fetches:
            fetch(ws, pairs)
    except MormError as e:
        return str(e)
    except Exception as e:  # the demo must never fail on the fetch: record it and go on
        return f"fetching {HH_HUB_NAME} failed: {type(e).__name__}: {e}"
    return ""


def prepare_demo_data(ws: Workspace, pairs: int = DEMO_REAL_PAIRS, *, timeout: float = 5.0,
                      log: Callable[[str], None] = lambda message: None,
                      fetch: Callable[..., Dataset] = fetch_demo_hh,
                      fetch_judge: Callable[..., Dataset] = fetch_demo_judge_hh) -> DemoData:
    """The datasets the demo reward model and its held-out judge are to train on (see module
    docstring); written to the workspace's ``demo-data.json`` and returned. Never raises for a
    failed fetch."""
    missing = [f for name, f in ((DEMO_REAL_DATASET, fetch), (DEMO_REAL_JUDGE_DATASET,
                                                                fetch_judge))
               if not _source_of(ws, name)]
    reason = _try_hub(ws, pairs, timeout, missing) if missing else ""
    if reason:
        data = DemoData(DEMO_DATASET, False, _source_of(ws, DEMO_DATASET), reason,
                        DEMO_JUDGE_DATASET)
    else:  # fetched now, or kept from an earlier build
        data = DemoData(DEMO_REAL_DATASET, True, _source_of(ws, DEMO_REAL_DATASET),
                        judge_dataset=DEMO_REAL_JUDGE_DATASET)
    atomic_write_text(ws.root / NOTE_FILE, json.dumps(asdict(data), indent=2))
    log(f"the demo reward model trains on {data.describe()}; the held-out judge on "
        f"{data.judge_dataset}, which shares no prompt with it")
    return data


def read_demo_data(ws: Workspace) -> DemoData | None:
    """What `prepare_demo_data` last decided, or None before it ran (or if unreadable)."""
    try:
        raw = json.loads((ws.root / NOTE_FILE).read_text(encoding="utf-8"))
        return DemoData(**raw)
    except (OSError, ValueError, TypeError):
        return None
