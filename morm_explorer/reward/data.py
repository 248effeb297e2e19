"""Preference data shaped for reward-model training: splits by prompt and target tensors.

Pairs become index arrays into a table of unique (prompt, response) texts plus a target matrix
(P, K) with 1 (a), 0 (b), 0.5 (tie) and NaN (unlabelled); ratings become per-item targets
(N, K), standardized per objective. Splits are by prompt, so no prompt of the test split was
seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from morm_explorer.data.convert import ratings_to_pairs
from morm_explorer.data.loaders import Dataset
from morm_explorer.errors import MormError
from morm_explorer.reward.losses import LABEL_TARGET


@dataclass
class PairSet:
    """Pairs over unique texts: texts[ia[p]] vs texts[ib[p]], targets (P, K)."""

    prompts: list[str]  # (U,) unique (prompt, response) texts
    responses: list[str]
    ia: np.ndarray  # (P,)
    ib: np.ndarray  # (P,)
    targets: np.ndarray  # (P, K), NaN = unlabelled
    records: list[dict]  # the source records, in pair order

    def __len__(self) -> int:
        return len(self.ia)


@dataclass
class ItemSet:
    """Rated items, targets (N, K) standardized, NaN = unrated."""

    prompts: list[str]
    responses: list[str]
    targets: np.ndarray


def split_by_prompt(records: list[dict], val: float, test: float, seed: int,
                    folds: int = 0, fold: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """Train / validation / test records, split over distinct prompts. With ``folds`` > 0 the
    test prompts are fold ``fold`` of a k-fold partition (the same shuffle for every fold)."""
    prompts = sorted({r["prompt"] for r in records})
    rng = np.random.default_rng(seed)
    rng.shuffle(prompts)
    if folds:
        test_list = prompts[fold::folds]
        rest = [p for i, p in enumerate(prompts) if i % folds != fold]
        prompts = test_list + rest  # test first, then validation, then train
        n_test = len(test_list)
    else:
        n_test = max(1, round(test * len(prompts)))
    n_val = round(val * len(prompts)) if val > 0 else 0
    test_p = set(prompts[:n_test])
    val_p = set(prompts[n_test:n_test + n_val])
    if len(prompts) - n_test - n_val < 1:
        raise MormError(f"only {len(prompts)} distinct prompts: too few to split into train, "
                        "validation and test")
    parts: tuple[list[dict], list[dict], list[dict]] = ([], [], [])
    for r in records:
        p = r["prompt"]
        parts[2 if p in test_p else 1 if p in val_p else 0].append(r)
    return parts


def pair_set(records: list[dict], objectives: list[str]) -> PairSet:
    index: dict[tuple[str, str], int] = {}

    def idx(p: str, r: str) -> int:
        return index.setdefault((p, r), len(index))

    ia = np.array([idx(r["prompt"], r["response_a"]) for r in records], dtype=np.int64)
    ib = np.array([idx(r["prompt"], r["response_b"]) for r in records], dtype=np.int64)
    targets = np.full((len(records), len(objectives)), np.nan, dtype=np.float32)
    for i, r in enumerate(records):
        for k, obj in enumerate(objectives):
            if obj in r["labels"]:
                targets[i, k] = LABEL_TARGET[r["labels"][obj]]
    texts = list(index)
    return PairSet([p for p, _ in texts], [r for _, r in texts], ia, ib, targets, records)


def item_set(records: list[dict], objectives: list[str],
             stats: dict[str, tuple[float, float]]) -> ItemSet:
    targets = np.full((len(records), len(objectives)), np.nan, dtype=np.float32)
    for i, r in enumerate(records):
        for k, obj in enumerate(objectives):
            if obj in r["ratings"]:
                mean, std = stats[obj]
                targets[i, k] = (r["ratings"][obj] - mean) / std
    return ItemSet([r["prompt"] for r in records], [r["response"] for r in records], targets)


def rating_stats(records: list[dict], objectives: list[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for obj in objectives:
        v = np.array([r["ratings"][obj] for r in records if obj in r["ratings"]], dtype=float)
        if len(v) == 0:
            raise MormError(f"objective {obj!r} has no ratings in the training split",
                            field="objectives")
        out[obj] = (float(v.mean()), float(v.std()) or 1.0)
    return out


def choose_objectives(dataset: Dataset, requested: tuple[str, ...]) -> list[str]:
    available = dataset.objectives
    if not requested:
        return available
    unknown = [o for o in requested if o not in available]
    if unknown:
        raise MormError(f"unknown objectives {unknown}; the data has {available}",
                        field="objectives")
    return list(requested)


def as_pairs(dataset: Dataset) -> list[dict]:
    """Pairwise records of a dataset (ratings are turned into all pairs per prompt)."""
    return dataset.records if dataset.kind == "pairwise" else ratings_to_pairs(dataset.records)
