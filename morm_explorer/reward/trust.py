"""How far a reward model's scores on a set can be trusted: two checks, pure numpy and scipy.

- **Distance to the training texts.** At training time a `TrainingReference` keeps the pooled
  vectors the heads read for up to `MAX_POINTS` training texts, standardized per coordinate,
  and the 95th and 99th percentiles of the distance of held-out training texts to them (the
  distance: mean Euclidean distance to the `K_NEIGHBOURS` nearest reference points, per
  coordinate). A set whose texts mostly lie beyond the held-out 99th percentile is one the model
  never saw the like of: its scores may not mean there what they meant in training.
- **Length following.** A head whose scores follow response length, |Spearman| > 0.5 on the
  set, may reward length rather than its objective (a known reward-hacking route).

`assess_set` turns both into the plain-text warnings and notes the pages show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

MAX_POINTS = 2000  # training texts kept in the reference
K_NEIGHBOURS = 5
FAR_SHARE = 0.25  # warn when more of a set than this lies beyond the held-out 99th percentile
LENGTH_RHO = 0.5  # warn when |Spearman(score, length)| exceeds this
_CHUNK = 1024  # candidate rows per distance block: (chunk, M) floats at a time


def knn_distance(x: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance (N,) of each row of ``x`` (N, H) to its ``k`` nearest rows of
    ``points`` (M, H), divided by sqrt(H) so that it reads per coordinate."""
    x = np.asarray(x, dtype=np.float32)
    points = np.asarray(points, dtype=np.float32)
    k = max(1, min(k, len(points)))
    p2 = (points * points).sum(1)  # (M,)
    out = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), _CHUNK):
        block = x[start:start + _CHUNK]
        # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, clipped at 0 against rounding
        d2 = (block * block).sum(1)[:, None] + p2[None, :] - 2.0 * block @ points.T  # (n, M)
        nearest = np.partition(np.maximum(d2, 0.0), k - 1, axis=1)[:, :k]
        out[start:start + len(block)] = np.sqrt(nearest.astype(np.float64)).mean(1)
    return out / np.sqrt(x.shape[1])


@dataclass(frozen=True)
class TrainingReference:
    """Training embeddings and the held-out distances that calibrate them (see the module
    docstring). ``points`` are standardized with ``mean`` and ``scale``."""

    mean: np.ndarray  # (H,)
    scale: np.ndarray  # (H,)
    points: np.ndarray  # (M, H)
    k: int
    p95: float
    p99: float
    n_train: int  # training texts the points were drawn from
    n_heldout: int  # held-out texts the percentiles come from

    @classmethod
    def fit(cls, train: np.ndarray, heldout: np.ndarray, k: int = K_NEIGHBOURS,
            max_points: int = MAX_POINTS, seed: int = 0) -> TrainingReference:
        """A reference from training embeddings (N, H) and held-out ones (N', H)."""
        if len(train) == 0 or len(heldout) == 0:
            raise ValueError("a training reference needs training and held-out embeddings")
        train = np.asarray(train, dtype=np.float32)
        mean = train.mean(0)
        std = train.std(0)
        # a coordinate that barely varies in training must not blow distances up on its own
        scale = np.maximum(std, 0.01 * float(std.mean()) + 1e-12)
        keep = np.random.default_rng(seed).permutation(len(train))[:max_points]
        points = (train[np.sort(keep)] - mean) / scale
        d = knn_distance((np.asarray(heldout, dtype=np.float32) - mean) / scale, points, k)
        return cls(mean, scale, points, min(k, len(points)), float(np.quantile(d, 0.95)),
                   float(np.quantile(d, 0.99)), len(train), len(heldout))

    def distance(self, emb: np.ndarray) -> np.ndarray:
        """Distance (N,) of embeddings (N, H) to the training texts."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != len(self.mean):
            raise ValueError(f"embeddings of shape {emb.shape}; the reference has width "
                             f"{len(self.mean)}")
        return knn_distance((emb - self.mean) / self.scale, self.points, self.k)

    def summary(self) -> dict:
        """What a page needs to judge distances: the percentiles and how they were made."""
        return {"metric": f"mean distance to the {self.k} nearest training texts",
                "k": self.k, "p95": self.p95, "p99": self.p99, "n_points": len(self.points),
                "n_train": self.n_train, "n_heldout": self.n_heldout}

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays to save (points as float16: a 2,000 x 768 reference is 3 MB)."""
        return {"mean": self.mean.astype(np.float32), "scale": self.scale.astype(np.float32),
                "points": self.points.astype(np.float16)}

    @classmethod
    def from_saved(cls, tensors: dict[str, np.ndarray], summary: dict) -> TrainingReference:
        return cls(tensors["mean"].astype(np.float32), tensors["scale"].astype(np.float32),
                   tensors["points"].astype(np.float32), int(summary["k"]),
                   float(summary["p95"]), float(summary["p99"]), int(summary["n_train"]),
                   int(summary["n_heldout"]))


def far_share(distance: np.ndarray, threshold: float) -> float:
    """Share of the set whose distance exceeds ``threshold`` (NaN for an empty set)."""
    distance = np.asarray(distance, dtype=float)
    return float((distance > threshold).mean()) if len(distance) else float("nan")


@dataclass(frozen=True)
class LengthFollowing:
    """One head whose scores follow response length on a set."""

    objective: str
    rho: float  # Spearman correlation of the head's scores with response length

    def message(self) -> str:
        way = "longer responses score higher" if self.rho > 0 else "shorter responses score " \
            "higher"
        return (f"{self.objective} follows response length on this set (Spearman "
                f"{self.rho:.2f}: {way})")


def length_following(scores: np.ndarray, lengths: np.ndarray, names: list[str],
                     limit: float = LENGTH_RHO) -> list[LengthFollowing]:
    """The heads (columns of ``scores`` (N, K), named ``names``) whose |Spearman| with
    ``lengths`` (N,) exceeds ``limit``; a constant column or length gives no correlation."""
    scores = np.asarray(scores, dtype=float).reshape(len(lengths), -1)
    lengths = np.asarray(lengths, dtype=float)
    if len(names) != scores.shape[1]:
        raise ValueError(f"{len(names)} names for {scores.shape[1]} score columns")
    out = []
    if len(lengths) < 3 or np.ptp(lengths) == 0:
        return out
    for k, name in enumerate(names):
        if np.ptp(scores[:, k]) == 0:
            continue
        rho = float(stats.spearmanr(scores[:, k], lengths).statistic)
        if abs(rho) > limit:
            out.append(LengthFollowing(name, rho))
    return out


@dataclass(frozen=True)
class SetTrust:
    """What the checks found on one (model, set): ``warnings`` to show as warnings, ``notes``
    on what could not be checked, and ``summary``, one line on what was."""

    far_share: float | None = None
    following: list[LengthFollowing] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str = ""


def assess_set(scores: np.ndarray, lengths: np.ndarray, names: list[str], model: str, *,
               distance: np.ndarray | None = None, reference: dict | None = None,
               far_limit: float = FAR_SHARE, rho_limit: float = LENGTH_RHO) -> SetTrust:
    """Both checks on a set scored by ``model``: scores (N, K) with head ``names``, response
    lengths (N,), each text's distance to the training texts (N,) and the model's reference
    summary (`TrainingReference.summary`), either None when the model or the scores lack it."""
    following = length_following(scores, lengths, names, rho_limit)
    warnings = [f.message() for f in following]
    notes, summary, share = [], "", None
    if reference is None:
        notes.append(f"{model} keeps no reference of its training texts (a model saved before "
                     "it did, or one with a backbone per objective), so how far this set lies "
                     "from them is not checked.")
    elif distance is None or len(distance) != len(lengths):
        notes.append(f"These scores were saved without their distance to {model}'s training "
                     "texts; score the set again to check how far it lies from them.")
    else:
        share = far_share(distance, reference["p99"])
        if share > far_limit:
            warnings.insert(0, f"{share:.0%} of this set's texts lie farther from {model}'s "
                               "training texts than 99% of its held-out training texts: its "
                               "scores may not mean here what they meant in training.")
        else:
            summary = (f"{share:.0%} of this set's texts lie farther from {model}'s training "
                       "texts than 99% of its held-out training texts.")
    return SetTrust(share, following, warnings, notes, summary)
