"""Scoring candidate sets with a reward model: ``score(model, candidates) -> (N, K)``, cached.

- `score`: batches of similar length (less padding), under ``torch.inference_mode``, with
  bf16 (or fp16) autocast on CUDA and float32 on the CPU. A model whose backbone was never
  trained reads pooled embeddings from the embedding cache, so scoring a new set of heads on
  known texts costs the heads alone.
- `score_candidate_set`: the same for a stored candidate set and a saved model, with the scores
  cached on disk per (model fingerprint, candidate-set fingerprint) as safetensors; a second
  call, or the Explore page, reads them back without loading a model. Beside the scores it
  keeps each text's distance to the model's training texts (`reward.trust`), measured on the
  pooled vectors the scoring pass computed anyway.

torch is imported inside the functions that need it: reading cached scores stays light.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from morm_explorer.checks import check_int
from morm_explorer.data.candidates import CandidateSet, load_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.jobs.spec import JobSpec, register_job
from morm_explorer.reward.config import check_stats, read_config
from morm_explorer.reward.manifest import linked_fingerprint
from morm_explorer.reward.report import model_path
from morm_explorer.workspace import Workspace

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


def model_fingerprint(path: str | Path) -> str:
    """A hash of a saved model's config and heads (the backbone by size and mtime): a model
    retrained under the same name gets a new fingerprint, so stale scores are never reused.
    An external model or a composite adds the files it points to (by size and mtime)."""
    path = Path(path)
    h = hashlib.sha256()
    for name in ("config.json", "heads.safetensors"):
        f = path / name
        h.update(f.read_bytes() if f.is_file() else b"-")
    for f in sorted(path.glob("backbone-*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(linked_fingerprint(path).encode())
    return h.hexdigest()[:16]


def _cache_file(ws: Workspace, mpath: Path, cset: CandidateSet) -> Path:
    return ws.root / "cache" / "scores" / f"{model_fingerprint(mpath)}-{cset.fingerprint()}" \
        ".safetensors"


@dataclass
class Scores:
    """Per-objective scores (N, K) of a candidate set under one reward model."""

    candidates: CandidateSet
    values: np.ndarray  # (N, K) float32, row i = candidate i
    objectives: list[str]
    stats: dict | None = None  # the model's reward statistics (mean, std per objective)
    model: str = ""
    cached: bool = False
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)
    distance: np.ndarray | None = None  # (N,) to the model's training texts (reward.trust)
    reference: dict | None = None  # the model's TrainingReference.summary()

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, columns=self.objectives)


def score(model, candidates: CandidateSet | pd.DataFrame, *, batch_size: int = 64,
          embedding_cache=None, progress: Progress | None = None) -> pd.DataFrame:
    """Rewards of every candidate as a frame (N, K), columns = the model's objectives."""
    frame = candidates.frame if isinstance(candidates, CandidateSet) else candidates
    values, _ = score_and_embed(model, frame, batch_size=batch_size,
                                embedding_cache=embedding_cache, progress=progress)
    return pd.DataFrame(values, columns=model.objectives, index=frame.index)


def score_and_embed(model, frame: pd.DataFrame, *, batch_size: int = 64, embedding_cache=None,
                    progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Rewards (N, K) of a candidate frame and the pooled vectors (N, H) the heads read (None
    for a model with a backbone per objective)."""
    from morm_explorer.reward.cache import score_with_embeddings

    if batch_size < 1:
        raise MormError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    return score_with_embeddings(model, frame["prompt"].tolist(), frame["response"].tolist(),
                                 embedding_cache, batch_size=batch_size, progress=progress)


def read_cached_scores(ws: Workspace, model_ref: str | Path, cset: CandidateSet
                       ) -> Scores | None:
    """The cached scores of this (model, candidate set), or None. Loads no model."""
    mpath = model_path(model_ref, ws)
    path = _cache_file(ws, mpath, cset)
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        values = tensors["scores"]
    except Exception:  # a damaged cache file only costs a rescoring
        return None
    config = read_config(mpath)
    objectives = list(config["model"]["objectives"])
    if values.shape != (len(cset), len(objectives)):
        return None
    check_stats(config.get("stats"), objectives, str(mpath / "config.json"))
    distance = tensors.get("distance")
    return Scores(cset, values, objectives, config.get("stats"), model=mpath.name, cached=True,
                  distance=distance if distance is not None and distance.shape == (len(cset),)
                  else None, reference=config.get("reference"))


def store_scores(ws: Workspace, model_ref: str | Path, cset: CandidateSet, values: np.ndarray,
                 objectives: list[str], meta: dict[str, str] | None = None,
                 distance: np.ndarray | None = None) -> Path:
    """Write scores (N, K), and each text's distance to the training texts (N,) when given,
    to the cache of (model, candidate set), atomically."""
    mpath = model_path(model_ref, ws)
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.shape != (len(cset), len(objectives)):
        raise MormError(f"scores of shape {values.shape} for {len(cset)} candidates and "
                        f"{len(objectives)} objectives")
    path = _cache_file(ws, mpath, cset)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    meta = {**(meta or {}), "objectives": json.dumps(objectives), "n": str(len(cset))}
    tensors = {"scores": values}
    if distance is not None:
        tensors["distance"] = np.ascontiguousarray(distance, dtype=np.float32).reshape(len(cset))
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: readers see the whole file or none
    return path


def score_candidate_set(ws: Workspace, model_ref: str | Path, candidates: str | CandidateSet, *,
                        device: str = "auto", batch_size: int = 64, refresh: bool = False,
                        progress: Progress | None = None, model=None) -> Scores:
    """Scores of a stored candidate set (by name, or a `CandidateSet`) under a saved reward
    model, from the disk cache when there, else computed and cached. ``model`` passes an
    already loaded copy of the same model (the app keeps one in memory)."""
    cset = load_candidate_set(ws, candidates) if isinstance(candidates, str) else candidates
    if not refresh:
        hit = read_cached_scores(ws, model_ref, cset)
        if hit is not None:
            return hit
    from morm_explorer.jobs.context import detect_device
    from morm_explorer.reward.artifact import load_reference, load_reward_model
    from morm_explorer.reward.cache import EmbeddingCache

    mpath = model_path(model_ref, ws)
    device = detect_device() if device == "auto" else device
    t0 = time.perf_counter()
    model = model if model is not None else load_reward_model(mpath, device=device)
    cache = None
    if model.frozen_backbone:
        cache = EmbeddingCache.for_backbone(ws.root / "cache" / "embeddings", model.backbones[0])
    values, emb = score_and_embed(model, cset.frame, batch_size=batch_size,
                                  embedding_cache=cache, progress=progress)
    values = values.astype(np.float32)
    try:
        reference = load_reference(mpath)
    except MormError as e:  # the scores stand without it; the pages then say it is unchecked
        log.warning("scoring without distances to the training texts: %s", e)
        reference = None
    distance = reference.distance(emb) if reference is not None and emb is not None else None
    seconds = time.perf_counter() - t0
    meta = {"model": mpath.name, "device": str(model.device)}
    store_scores(ws, mpath, cset, values, model.objectives, meta, distance)
    return Scores(cset, values, model.objectives, getattr(model, "stats", None),
                  model=mpath.name, cached=False, seconds=seconds, meta=meta,
                  distance=distance, reference=reference.summary() if reference else None)


# -- the scoring job: large sets run on a worker ----------------------------------------------


@dataclass(frozen=True)
class ScoreCandidatesJob(JobSpec):
    """Score a stored candidate set with a saved reward model into the score cache."""

    kind: ClassVar[str] = "score_candidates"

    model: str = ""
    """reward model name in the workspace (or a model folder)"""
    candidates: str = ""
    """candidate set name"""
    batch_size: int = 64
    """texts per forward pass"""
    device: str = "auto"
    """auto, cpu or cuda"""
    refresh: bool = False
    """score again even when cached scores exist"""

    def __post_init__(self) -> None:
        if not self.model or not self.candidates:
            raise MormError("a scoring job needs a model and a candidate set",
                            field="model" if not self.model else "candidates")
        check_int("batch_size", self.batch_size, 1)


def run_score_candidates(spec: ScoreCandidatesJob, ctx) -> dict:
    ws = ctx.store.ws
    device = ctx.device if spec.device == "auto" else spec.device
    ctx.log(f"scoring {spec.candidates!r} with {spec.model!r} on {device}")

    def progress(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(done / max(total, 1), f"{done:,}/{total:,} texts")

    result = score_candidate_set(ws, spec.model, spec.candidates, device=device,
                                 batch_size=spec.batch_size, refresh=spec.refresh,
                                 progress=progress)
    n = len(result.values)
    ctx.log(f"scored {n:,} candidates in {result.seconds:.1f} s"
            + (" (from the cache)" if result.cached else ""))
    means = dict(zip(result.objectives, result.values.mean(0).round(4).tolist(), strict=True))
    return {"n": n, "seconds": round(result.seconds, 2), "cached": result.cached,
            "mean": means}


register_job(ScoreCandidatesJob.kind, ScoreCandidatesJob, run_score_candidates)
