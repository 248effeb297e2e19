"""What a reward-model folder records about how far it can be trusted: the evaluations it was
given and where its training data came from.

``evaluations.json`` in the folder holds one entry per evaluation data (data name, its source,
how many pairs, per-objective accuracy with its 95% interval and decided-pair count, the date);
training writes the first one, on its held-out split, and every `morm rm eval` adds one,
replacing an older entry on the same data. The file is written atomically, under a lock, and
is not part of the model's fingerprint, so cached scores survive a new evaluation.
A folder saved before the file existed gets its training evaluation from config.json.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from morm_explorer.errors import MormError
from morm_explorer.workspace import atomic_write_text

EVALUATIONS = "evaluations.json"
KEPT = ("accuracy", "ci_low", "ci_high", "n")  # per objective


def evaluation_entry(data: str, metrics: dict, *, source: str = "", fingerprint: str = "",
                     split: str = "", pairs: int | None = None, date: str | None = None
                     ) -> dict:
    """One stored evaluation from metrics as `reward.train.evaluate_model` returns them."""
    per = {o: {k: m[k] for k in KEPT if k in m} for o, m in metrics.get("objectives", {}).items()}
    return {"data": data, "source": source, "fingerprint": fingerprint, "split": split,
            "pairs": int(pairs if pairs is not None else metrics.get("n_pairs", 0)),
            "objectives": per,
            "date": date if date is not None
            else datetime.now(timezone.utc).isoformat(timespec="seconds")}


def heldout_name(config: dict) -> str:
    """The data name of a model's own held-out split: '<training dataset> held-out split'."""
    return f"{training_data(config)['name']} held-out split"


def training_entry(config: dict) -> dict | None:
    """The training run's held-out evaluation as config.json records it (None without one)."""
    metrics = config.get("metrics") or {}
    if not metrics.get("objectives"):
        return None
    data = config.get("data") or {}
    created = config.get("created_at")
    date = (datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="seconds")
            if created is not None else "")
    return evaluation_entry(heldout_name(config), metrics, source=training_data(config)["source"],
                            fingerprint=data.get("fingerprint", ""), split="held-out",
                            pairs=metrics.get("n_test_pairs") or 0, date=date)


def _read(path: Path) -> list[dict]:
    file = path / EVALUATIONS
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MormError(f"{EVALUATIONS} is not valid JSON: {e}", file=str(file)) from e
    if not isinstance(entries, list):
        raise MormError(f"{EVALUATIONS} should hold a list of evaluations", file=str(file))
    return entries


def stored_evaluations(path: str | Path, config: dict | None = None) -> list[dict]:
    """A model's evaluations, oldest first; with ``config`` (its config.json) the training
    run's held-out evaluation comes first for a folder that predates the file."""
    entries = _read(Path(path))
    if config is not None and not any(e.get("data") == heldout_name(config) for e in entries):
        first = training_entry(config)
        entries = ([first] if first else []) + entries
    return entries


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder's evaluations, so two evaluations never lose one."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks: the atomic write still keeps the file whole
        yield
        return
    with open(folder / f".{EVALUATIONS}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def store_evaluation(path: str | Path, entry: dict) -> list[dict]:
    """Add ``entry`` to the folder's evaluations, replacing one on the same data; returns
    them all."""
    folder = Path(path)
    with _locked(folder):
        entries = [e for e in _read(folder) if e.get("data") != entry["data"]] + [entry]
        atomic_write_text(folder / EVALUATIONS, json.dumps(entries, indent=2, default=float))
    return entries


# -- where the training data came from ---------------------------------------------------------


def dataset_provenance(ref: str, dataset, workspace=None) -> dict:
    """The data as a model folder records it: its name (the workspace dataset's, or the
    file's), its ``source`` (what the workspace recorded when it was loaded, or the file's
    path), kind, size and content fingerprint; a file's full ``path`` too."""
    out = {"name": Path(ref).name, "source": str(dataset.source), "kind": dataset.kind,
           "n_records": len(dataset), "fingerprint": dataset.fingerprint()}
    infos = {d.name: d for d in workspace.list_datasets()} if workspace is not None else {}
    if ref in infos:
        return {**out, "name": ref, "source": infos[ref].source}
    return {**out, "path": str(Path(ref).expanduser().resolve())}


def training_data(config: dict, sources: dict[str, str] | None = None) -> dict:
    """Name, source, fingerprint and split of a model's training data from its config.json.
    Folders that predate the recorded name get it from the training config; ``sources``
    (workspace dataset name -> source) fills in the source they recorded as a file path."""
    data, training = config.get("data") or {}, config.get("training") or {}
    name = data.get("name") or Path(str(training.get("dataset", "?"))).name
    source = data.get("source", "")
    if "name" not in data and sources and name in sources:
        source = sources[name]
    return {"name": name, "source": source, "fingerprint": data.get("fingerprint", ""),
            "seed": training.get("seed"), "val_fraction": training.get("val_fraction"),
            "test_fraction": training.get("test_fraction")}


def data_label(data: dict) -> str:
    """'name (source)', or the name alone when the source says nothing more."""
    src = data.get("source") or ""
    return f"{data['name']} ({src})" if src and src != data["name"] else data["name"]


def training_overlap(rm: dict, judge: dict) -> tuple[bool, str]:
    """Whether a judge's training data (`training_data`) is disjoint from a reward model's, and
    a sentence saying on what each was trained."""
    said = (f"The judge was trained on {data_label(judge)}; the reward model on "
            f"{data_label(rm)}.")
    same = (rm["fingerprint"] == judge["fingerprint"] if rm["fingerprint"] and
            judge["fingerprint"] else rm["name"] == judge["name"])
    if not same:
        return True, (f"{said} Different datasets: the judge's training data is disjoint from "
                      "the reward model's (by dataset; texts the two files may share are not "
                      "checked).")
    split = ("the same split" if (rm["seed"], rm["test_fraction"]) == (judge["seed"],
                                                                       judge["test_fraction"])
             else f"split seeds {rm['seed']} and {judge['seed']}")
    return False, (f"{said} The same data ({split}): their training texts overlap, so the "
                   "judge is not held out from what the reward model learned from, and its "
                   "agreement is weak evidence.")


# -- the table the Reward models page and `morm rm list` show ----------------------------------


def short_data(name: str) -> str:
    """A file's path cut to its folder and name; a workspace name as it is."""
    parts = Path(name).parts
    return str(Path(*parts[-2:])) if len(parts) > 2 else name


def accuracy_cell(m: dict) -> str:
    """'91.2% [85.1, 96.0] n=60' ('– n=0' without decided pairs)."""
    if not math.isfinite(m.get("accuracy", float("nan"))):
        return f"– n={m.get('n', 0)}"
    return (f"{m['accuracy']:.1%} [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}] "
            f"n={m.get('n', 0)}")


def evaluations_table(models: list[dict]) -> pd.DataFrame:
    """One row per (model, evaluation): model, trained on, data, pairs, one accuracy column
    per objective ('accuracy [low, high] n=decided pairs', blank where not evaluated), date.
    ``models`` are rows of `report.list_reward_models`."""
    rows = []
    for m in models:
        for e in m.get("evaluations", []):
            row = {"model": m["name"], "trained on": data_label(m["training_data"]),
                   "data": short_data(e["data"]), "pairs": e.get("pairs", 0)}
            row.update({o: accuracy_cell(v) for o, v in e.get("objectives", {}).items()})
            row["date"] = str(e.get("date", ""))[:16].replace("T", " ")
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["model", "trained on", "data", "pairs", "date"])
    objectives = [c for c in frame.columns if c not in ("model", "trained on", "data", "pairs",
                                                        "date")]
    return frame[["model", "trained on", "data", "pairs", *objectives, "date"]].fillna("")


def evaluation_lines(model: dict) -> list[str]:
    """The plain-text lines `morm rm list` prints under a model."""
    lines = [f"  trained on {data_label(model['training_data'])}"]
    for e in model.get("evaluations", []):
        acc = ", ".join(f"{o} {accuracy_cell(v)}" for o, v in e.get("objectives", {}).items())
        lines.append(f"  evaluated on {short_data(e['data'])} ({e.get('pairs', 0)} pairs, "
                     f"{str(e.get('date', ''))[:10]}): {acc}")
    return lines
