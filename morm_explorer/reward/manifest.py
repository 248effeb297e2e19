"""Reward models not trained here, external ones (`reward.external`) and composites
(`reward.composite`): what they share.

Their folder, reward_models/<name>, holds one file, config.json: a manifest in the format of a
trained model's config (``format``, ``model.objectives``, ``stats``), so that listing, the score
cache, the reports and the pages read it unchanged, plus ``kind`` ("external" or "composite";
absent for a model trained here), which tells `artifact.load_reward_model` how to rebuild it.
No weights and no code are copied: the manifest points at them.

- `reference_texts`: the texts whose scores give a model's per-objective statistics (a
  candidate set or a dataset of the workspace; by default the demo's);
- `nan_stats`: those statistics, leaving out missing scores (NaN);
- `write_manifest`: the folder, written beside its place and renamed into it, so a failed
  registration leaves nothing behind;
- `linked_fingerprint`: what a manifest points to (a local model's files, a composite's parts),
  so cached scores are not reused after the weights they came from changed.

Nothing here imports torch: `scoring.model_fingerprint` stays light.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morm_explorer import __version__
from morm_explorer.errors import MormError
from morm_explorer.workspace import Workspace, atomic_write_text, replace_dir

GROUP = "reward_models"
KINDS = ("external", "composite")
REFERENCE_MAX = 2000  # texts scored for the statistics: a seeded sample of a larger set
DEMO_REFERENCES = ("demo-candidates", "demo-preferences")  # candidate set, then dataset


def model_kind(config: dict) -> str:
    """"trained", "external" or "composite"."""
    kind = config.get("kind", "trained")
    return kind if kind in KINDS else "trained"


@dataclass(frozen=True)
class ReferenceTexts:
    """(prompt, response) texts of a reference set, at most `REFERENCE_MAX` of them."""

    name: str
    kind: str  # "candidate set" or "dataset"
    prompts: list[str]
    responses: list[str]
    n_total: int  # texts in the set before sampling

    def summary(self) -> dict:
        return {"name": self.name, "kind": self.kind, "n_texts": len(self.prompts),
                "n_total": self.n_total}


def reference_texts(ws: Workspace, reference: str | None = None,
                    limit: int = REFERENCE_MAX) -> ReferenceTexts:
    """The texts of ``reference``, a candidate set or a dataset of the workspace (a dataset
    gives each distinct (prompt, response) of its pairs); by default the demo candidate set,
    else the demo data. More than ``limit`` texts: a sample of ``limit`` (seed 0)."""
    from morm_explorer.data.candidates import list_candidate_sets, load_candidate_set

    sets = {c.name for c in list_candidate_sets(ws)}
    datasets = {d.name for d in ws.list_datasets()}
    if not reference:
        reference = next((r for r in DEMO_REFERENCES if r in sets | datasets), None)
        if reference is None:
            raise MormError("no reference set to compute the score statistics on: the "
                            "workspace has neither the demo candidate set nor the demo data; "
                            "pass --reference with a candidate set or dataset name "
                            f"(candidate sets: {', '.join(sorted(sets)) or 'none'}; datasets: "
                            f"{', '.join(sorted(datasets)) or 'none'})", field="reference")
    if reference in sets:
        frame = load_candidate_set(ws, reference).frame
        kind, prompts, responses = "candidate set", list(frame["prompt"]), list(frame["response"])
    elif reference in datasets:
        from morm_explorer.reward.data import as_pairs, pair_set

        texts = pair_set(as_pairs(ws.load_dataset(reference)), [])
        kind, prompts, responses = "dataset", texts.prompts, texts.responses
    else:
        raise MormError(f"no candidate set or dataset named {reference!r} in the workspace",
                        field="reference")
    if not prompts:
        raise MormError(f"the {kind} {reference!r} has no texts", field="reference")
    n = len(prompts)
    if n > limit:
        keep = np.sort(np.random.default_rng(0).choice(n, limit, replace=False))
        prompts, responses = [prompts[i] for i in keep], [responses[i] for i in keep]
    return ReferenceTexts(reference, kind, prompts, responses, n)


def nan_stats(scores: np.ndarray) -> dict:
    """Per-objective statistics of scores (N, K) on a reference set, as
    `artifact.reward_stats` computes them, over each objective's scores that are not missing
    (NaN); ``n_scored`` counts those. An objective with none gets mean 0 and std 1."""
    from morm_explorer.reward.artifact import QUANTILES

    cols = [c[~np.isnan(c)] for c in np.asarray(scores).T]  # K arrays
    return {
        "mean": [float(c.mean()) if len(c) else 0.0 for c in cols],
        "std": [max(float(c.std()), 1e-6) if len(c) else 1.0 for c in cols],
        "quantiles": {str(q): [float(np.quantile(c, q)) if len(c) else 0.0 for c in cols]
                      for q in QUANTILES},
        "n": int(scores.shape[0]),
        "n_scored": [len(c) for c in cols],
    }


def check_free(ws: Workspace, name: str, overwrite: bool) -> Path:
    """The folder of reward model ``name``, refused when taken and not ``overwrite``."""
    target = ws.artifact_dir(GROUP, name)
    if target.exists() and not overwrite:
        raise MormError(f"{GROUP}/{target.name} exists; pass --overwrite or another name",
                        field="name")
    return target


def manifest(kind: str, objectives: list[str], description: str, stats: dict,
             reference: ReferenceTexts, **fields) -> dict:
    """A manifest's config.json: the fields every reader of a model folder needs, then
    ``fields`` of its kind. ``description`` stands where a trained model names its backbone."""
    return {"format": "morm-reward-model", "kind": kind, "morm_version": __version__,
            "created_at": time.time(),
            "model": {"objectives": list(objectives), "architecture": kind,
                      "backbone": description},
            "data": {"name": f"unknown ({kind} model)", "source": ""},
            **fields, "reference_set": reference.summary(), "stats": stats}


def write_manifest(ws: Workspace, name: str, config: dict, overwrite: bool = False) -> Path:
    """reward_models/<name>/config.json, written in a folder beside it and renamed into place
    (replacing a model of that name only with ``overwrite``)."""
    target = check_free(ws, name, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        atomic_write_text(tmp / "config.json", json.dumps(config, indent=2))
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _stat(f: Path) -> str:
    try:
        st = f.stat()
    except OSError:
        return f"{f.name}:-"
    return f"{f.name}:{st.st_size}:{st.st_mtime_ns}"


def linked_fingerprint(path: str | Path, depth: int = 0) -> str:
    """Sizes and times of the files a manifest points to: an external model's local folder
    (its top-level files), a composite's part folders (and what they point to); "" for a
    trained model or a folder that cannot be read."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(config, dict) or depth > 2:
        return ""
    out = []
    kind = model_kind(config)
    source = config.get("source")
    if kind == "external" and isinstance(source, dict) and source.get("local"):
        folder = Path(str(source.get("model", "")))
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        out += [_stat(f) for f in files if f.is_file()]
    elif kind == "composite":
        for part in config.get("parts") or []:
            if isinstance(part, dict) and part.get("kind") == "model":
                folder = path.parent / str(part.get("model", ""))
                files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
                out += [_stat(f) for f in files] + [linked_fingerprint(folder, depth + 1)]
    return "|".join(out)
