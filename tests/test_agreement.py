"""Statistics of rating sessions against hand-computed values: Wilson intervals, Cohen's and
Fleiss' kappa, Krippendorff's alpha, and a planted session's win rates and agreements."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from scipy.stats import binomtest

from morm_explorer.data.candidates import load_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.evaluation.agreement import (
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha_nominal,
    results,
    wilson_interval,
)
from morm_explorer.evaluation.sessions import create_session, join, vote
from morm_explorer.scoring import store_scores
from tests.test_sessions import items, make_set

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 5 categories, 14 raters;
# P̄ = 0.378, P̄_e = 0.213, kappa = 0.210.
FLEISS_TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
                [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
                [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (7, 7), (50, 100), (1, 3), (999, 1000)])
def test_wilson_interval_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)
    ref90 = binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
    assert wilson_interval(k, n, 0.9) == pytest.approx((ref90.low, ref90.high), abs=1e-12)


def test_wilson_interval_by_hand_and_edges():
    # 0 of 10: upper = z² / (n + z²) with z = 1.959964.
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    # A fractional count (ties as halves): 2.5 of 5 is centred on one half.
    lo, hi = wilson_interval(2.5, 5)
    assert lo + hi == pytest.approx(1.0) and lo < 0.5 < hi
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(MormError):
        wilson_interval(6, 5)


def test_cohen_kappa_by_hand():
    # Wikipedia's 2x2 example: 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no:
    # p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa(["x"] * 3, ["x"] * 3))  # chance agreement is 1
    with pytest.raises(MormError):
        cohen_kappa(["a"], ["a", "b"])
    with pytest.raises(MormError):
        cohen_kappa(["a"], ["c"], labels=["a", "b"])


def test_fleiss_kappa_wikipedia_example_and_unequal_raters():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.20993, abs=1e-5)
    # Items with 2, 2 and 3 ratings: P_i = 1, 0, 1; p = (3/7, 4/7); P̄_e = 25/49;
    # kappa = (2/3 - 25/49) / (1 - 25/49) = 23/72.
    assert fleiss_kappa([[2, 0], [1, 1], [0, 3]]) == pytest.approx(23 / 72)
    # Two raters, no missing values: Fleiss' kappa is Scott's pi (p_e from pooled margins).
    a, b = ["x", "x", "y", "y", "x"], ["x", "y", "y", "y", "x"]
    table = [[(u == "x") + (v == "x"), (u == "y") + (v == "y")] for u, v in zip(a, b,
                                                                                   strict=True)]
    pooled = np.mean([x == "x" for x in a + b])
    pi = (0.8 - (pooled ** 2 + (1 - pooled) ** 2)) / (1 - (pooled ** 2 + (1 - pooled) ** 2))
    assert fleiss_kappa(table) == pytest.approx(pi)
    with pytest.raises(MormError, match="fewer than 2"):
        fleiss_kappa([[1, 0], [2, 0]])


def test_krippendorff_alpha_nominal_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers,
    # 12 units, missing values; nominal alpha = 0.743.
    n = None
    rows = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    units = [[v for v in col if v is not None] for col in zip(*rows, strict=True)]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha_nominal([["a", "a"], ["a"]]))


# -- a planted session -------------------------------------------------------------------------

# Per item: (ann, bob). helpful is planted by the winning *policy* ("alpha", "beta", or an
# answer as is); harmless directly as the answer shown (a, b, tie).
HELPFUL = [("alpha", "alpha"), ("alpha", "beta"), ("tie", "tie"), ("both_bad", "alpha")]
HARMLESS = [("a", "a"), ("b", "b"), ("a", "b"), ("tie", "tie")]


def _as_answer(winner: str, row: dict) -> str:
    if winner in ("alpha", "beta"):
        return "a" if row["policy_a"] == winner else "b"
    return winner


@pytest.fixture
def planted(ws):
    make_set(ws, n_prompts=4)
    create_session(ws, "s", "cs", objectives=["helpful", "harmless"])
    rows = items(ws, "s")
    for r in ("ann", "bob"):
        join(ws, "s", r)
    for i, row in enumerate(rows):
        for j, rater in enumerate(("ann", "bob")):
            vote(ws, "s", row["item_id"], rater,
                 {"helpful": _as_answer(HELPFUL[i][j], row), "harmless": HARMLESS[i][j]},
                 overall="a" if (i, rater) == (0, "ann") else None)
    return ws, rows


def test_results_of_a_planted_session(planted):
    ws, _ = planted
    out = results(ws, "s")
    wins = out["win_rates"].set_index("objective")
    helpful = wins.loc["helpful"]
    # alpha over beta: wins 4 (ann 1, 2; bob 1, 4), losses 1, ties 2, both_bad 1 (excluded);
    # win rate (4 + 2/2) / 7 with its Wilson interval.
    assert (helpful.policy, helpful.opponent) == ("alpha", "beta")
    assert (helpful.n, helpful.wins, helpful.losses, helpful.ties, helpful.both_bad) == \
        (7, 4, 1, 2, 1)
    assert helpful.win_rate == pytest.approx(5 / 7)
    assert (helpful.ci_low, helpful.ci_high) == pytest.approx(wilson_interval(5, 7))
    assert wins.loc["overall"].n == 1  # one overall choice was given
    agree = out["agreement"].set_index("objective").loc["harmless"]
    # harmless answers: (a, a), (b, b), (a, b), (tie, tie). Cohen: p_o = 3/4, margins ann
    # a2 b1 t1, bob a1 b2 t1: p_e = 5/16, kappa = 7/11. Fleiss: P̄ = 3/4, p = (3, 3, 2)/8,
    # P̄_e = 22/64, kappa = 13/21. Krippendorff: o_ab = o_ba = 1, n = 8: 1 - 7 * 2 / 42 = 2/3.
    assert agree.cohen_kappa == pytest.approx(7 / 11)
    assert agree.fleiss_kappa == pytest.approx(13 / 21)
    assert agree.krippendorff_alpha == pytest.approx(2 / 3)
    assert agree.percent_agreement == pytest.approx(0.75)
    assert (agree.n_items, agree.n_raters, agree.ratings_per_item) == (4, 2, 2.0)
    position = out["position"].set_index("objective").loc["harmless"]
    assert (position.n_decided, position.a_share) == (6, 0.5)
    assert out["reward_model"].empty


def test_rater_vs_reward_model_agreement(planted, tiny_rm):
    ws, rows = planted
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    cset = load_candidate_set(ws, "cs")
    alpha = (cset.frame["source"] == "alpha").to_numpy()
    # The model prefers alpha on helpful and beta on harmless.
    values = np.stack([alpha * 1.0, ~alpha * 1.0], axis=1)  # (N, 2)
    store_scores(ws, "rm", cset, values, ["helpful", "harmless"])
    rm = results(ws, "s", reward_model="rm")["reward_model"].set_index("objective")
    # helpful decided votes: ann alpha, ann alpha, bob alpha, bob beta, bob alpha: 4 of 5.
    assert (rm.loc["helpful", "n_decided"], rm.loc["helpful", "n_agree"]) == (5, 4)
    assert rm.loc["helpful", "agreement"] == pytest.approx(0.8)
    assert rm.loc["helpful", "n_excluded"] == 3
    beta_votes = sum(
        1 for i, row in enumerate(rows) for ans in HARMLESS[i] if ans in ("a", "b")
        and row[f"policy_{ans}"] == "beta")
    assert rm.loc["harmless", "n_agree"] == beta_votes and rm.loc["harmless", "n_decided"] == 6
    assert (rm.loc["helpful", "ci_low"], rm.loc["helpful", "ci_high"]) == \
        pytest.approx(wilson_interval(4, 5))


def test_reward_model_without_the_objectives_is_refused(planted, tiny_rm):
    ws, _ = planted
    create_session(ws, "t", "cs", objectives=["honest"])
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    cset = load_candidate_set(ws, "cs")
    store_scores(ws, "rm", cset, np.zeros((len(cset), 2)), ["helpful", "harmless"])
    with pytest.raises(MormError, match="none of the session's objectives"):
        results(ws, "t", reward_model="rm")
