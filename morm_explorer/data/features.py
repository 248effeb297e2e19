"""Surface features of a response, and the one-feature baselines they make on pairwise data.

A reward that only follows one surface feature (the longer answer, a refusal phrase, hedge
words, digits) is not measuring its objective. `feature_baselines` says, per objective, how far
each feature alone decides a dataset's labels; the built-in data is built so that none decides
any objective beyond 0.65 (tests/test_builtin_data.py), and the same table is shown for real data
(`morm data summary --baselines`).

The phrase lists are also the rule-based behaviour checks of the model-written built-in data
(`morm_explorer.data.rlcd`): a refusal asked for must contain a refusal phrase, a hedge must
hedge, an answer must share content words with its prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

REFUSAL = re.compile(
    r"\b(I can(?:'|’)?t|I cannot|I won(?:'|’)t|I will not|I(?:'|’)m not able to|I am not able to"
    r"|I(?:'|’)m unable to|I am unable to|I(?:'|’)m sorry, but|I must decline|I refuse"
    r"|I(?:'|’)d rather not|I would rather not|not something I can help"
    r"|can(?:'|’)?t (?:help|assist) with)\b", re.I)
HEDGE = re.compile(
    r"\b(maybe|perhaps|might|I think|I believe|not sure|not certain|possibly|probably"
    r"|I don(?:'|’)t know|no one knows|nobody knows|it(?:'|’)s hard to say|uncertain"
    r"|it depends|I(?:'|’)m not confident|as far as I know)\b", re.I)
DIGITS = re.compile(r"\d")
_WORD = re.compile(r"[a-z][a-z'’-]+")
STOPWORDS = frozenset(
    "a an the and or but if then so of to in on at for with by from as is are was were be been "
    "being do does did doing have has had having i me my you your we our they them their he she "
    "it its this that these those what which who whom how why when where can could should would "
    "will shall may might must not no yes any some all about into over under up down out just "
    "than too very there here also get got make made want need like know tell give help way best "
    "good really please thanks thank okay ok well much many more most one two".split())


def content_words(text: str) -> set[str]:
    """Lower-case words of ``text`` that carry content (no stop words, at least 3 letters)."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in STOPWORDS}


def addresses(prompt: str, response: str) -> bool:
    """True when the response shares a content word (or its first 5 letters) with the prompt."""
    stems = {w[:5] for w in content_words(prompt)}
    return any(w[:5] in stems for w in content_words(response))


FEATURES: dict[str, Callable[[str], float]] = {
    "length": lambda t: float(len(t)),
    "refusal phrase": lambda t: float(bool(REFUSAL.search(t))),
    "hedge words": lambda t: float(bool(HEDGE.search(t))),
    "numbers": lambda t: float(bool(DIGITS.search(t))),
}


def feature_accuracy(fa: np.ndarray, fb: np.ndarray, a_wins: np.ndarray) -> float:
    """How often "the response with more of the feature wins" agrees with decided labels,
    a tie in the feature counting one half. fa, fb, a_wins: (N,)."""
    d = np.sign(fa - fb)
    right = np.where(d == 0, 0.5, (d > 0) == a_wins)
    return float(right.mean()) if len(right) else float("nan")


def feature_baselines(records: list[dict], objectives: list[str] | None = None,
                      ) -> dict[str, dict[str, float]]:
    """Per objective and feature, the accuracy of the feature's better direction (more wins or
    less wins) on the pairs decided for that objective; also ``n`` decided pairs and ``best``.

    >>> recs = [{"response_a": "long answer here", "response_b": "no", "labels": {"h": "a"}}]
    >>> feature_baselines(recs)["h"]["length"]
    1.0
    """
    if objectives is None:
        objectives = sorted({o for r in records for o in (r.get("labels") or {})})
    values = {name: (np.array([f(r["response_a"]) for r in records]),
                     np.array([f(r["response_b"]) for r in records]))
              for name, f in FEATURES.items()}
    out: dict[str, dict[str, float]] = {}
    for obj in objectives:
        labels = [(r.get("labels") or {}).get(obj) for r in records]
        mask = np.array([lab in ("a", "b") for lab in labels])
        a_wins = np.array([lab == "a" for lab in labels])[mask]
        row: dict[str, float] = {"n": float(mask.sum())}
        for name, (fa, fb) in values.items():
            acc = feature_accuracy(fa[mask], fb[mask], a_wins)
            row[name] = max(acc, 1.0 - acc) if np.isfinite(acc) else acc
        row["best"] = max(row[name] for name in FEATURES)
        out[obj] = row
    return out
