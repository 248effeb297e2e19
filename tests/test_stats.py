"""Comparison statistics against scipy and hand-computed values: t intervals, paired bootstrap
win rates, per-policy summaries, slices, largest differences and the policies' front."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from morm_explorer.errors import MormError
from morm_explorer.evaluation.stats import (
    front_of_policies,
    largest_differences,
    mean_ci,
    paired_win_rate,
    policy_summary,
    slices,
    soup_curve,
    win_rates,
)

T975_1 = 12.706204736174698  # t_{0.975} with 1 degree of freedom


def tidy_frame(scores: dict[str, list[list[float]]], categories: list[str] | None = None,
               objective: str = "helpful") -> pd.DataFrame:
    """A comparison frame: scores[policy][prompt] = that prompt's samples' scores."""
    rows = []
    for policy, per_prompt in scores.items():
        for i, samples in enumerate(per_prompt):
            for j, v in enumerate(samples):
                rows.append({"prompt_id": f"p{i}", "sample": j, "policy": policy,
                             "prompt": f"prompt {i}",
                             "category": categories[i] if categories else None,
                             "response": "x" * (j + 1), "n_tokens": j + 1, "n_chars": j + 1,
                             f"rm:{objective}": v, "kl": float(j)})
    return pd.DataFrame(rows)


def test_mean_ci_matches_scipy_t_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    m, lo, hi = mean_ci(x)
    ref = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    assert m == pytest.approx(4.0) and (lo, hi) == pytest.approx(ref)
    m, lo, hi = mean_ci([0.0, 2.0], confidence=0.95)  # s = sqrt(2), s / sqrt(n) = 1
    assert (m, lo, hi) == pytest.approx((1.0, 1.0 - T975_1, 1.0 + T975_1))
    m, lo, hi = mean_ci([3.0])
    assert m == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in mean_ci([]))
    with pytest.raises(MormError):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_paired_win_rate_hand_cases():
    w = paired_win_rate([2, 3, 4], [1, 1, 1])
    assert (w.rate, w.win, w.tie, w.loss, w.ci_low, w.ci_high, w.n) == (1, 1, 0, 0, 1, 1, 3)
    w = paired_win_rate([1, 2, 3], [1, 2, 3])
    assert (w.rate, w.tie, w.ci_low, w.ci_high) == (0.5, 1.0, 0.5, 0.5)
    w = paired_win_rate([1, 2, 3, 4], [0, 2, 4, 3])  # win, tie, loss, win
    assert (w.rate, w.win, w.tie, w.loss) == (0.625, 0.5, 0.25, 0.25)
    assert w.ci_low <= w.rate <= w.ci_high
    one = paired_win_rate([1.0], [0.0])
    assert one.rate == 1.0 and math.isnan(one.ci_low)
    with pytest.raises(MormError):
        paired_win_rate([1, 2], [1])


def test_paired_bootstrap_interval_close_to_wald_on_many_prompts():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1, 400), rng.normal(0, 1, 400)
    w = paired_win_rate(a, b, n_boot=4000)
    half = 1.959964 * math.sqrt(w.rate * (1 - w.rate) / len(a))  # normal approximation
    assert w.ci_low == pytest.approx(w.rate - half, abs=0.01)
    assert w.ci_high == pytest.approx(w.rate + half, abs=0.01)


def test_pairing_narrows_the_interval_on_correlated_scores():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 3, 60)  # shared by both policies on a prompt
    a, b = difficulty + 0.5 + rng.normal(0, 0.2, 60), difficulty
    paired = paired_win_rate(a, b, n_boot=2000, seed=0)
    # Unpaired bootstrap by hand: resample a and b independently, so pairs are broken.
    idx_a, idx_b = rng.integers(0, 60, (2000, 60)), rng.integers(0, 60, (2000, 60))
    s = a[idx_a] - b[idx_b]
    rates = (s > 0).mean(1) + 0.5 * (s == 0).mean(1)
    lo, hi = np.percentile(rates, [2.5, 97.5])
    assert paired.rate > 0.95
    assert paired.ci_high - paired.ci_low < (hi - lo) / 3


def test_policy_summary_by_hand():
    # Two prompts, two samples each: per-prompt means first, then a t interval over prompts.
    frame = tidy_frame({"base": [[0.0, 2.0], [2.0, 4.0]], "tuned": [[1.0, 1.0], [5.0, 5.0]]})
    s = policy_summary(frame, ["helpful"])
    assert list(s.index) == ["base", "tuned"]
    # base: prompt means 1, 3 -> mean 2, half width t * (sqrt(2) / sqrt(2)) = t
    assert s.loc["base", "helpful"] == pytest.approx(2.0)
    assert s.loc["base", "helpful_low"] == pytest.approx(2.0 - T975_1)
    # tuned: prompt means 1, 5 -> mean 3, s = 2 sqrt(2), half width 2 t
    assert s.loc["tuned", "helpful_high"] == pytest.approx(3.0 + 2 * T975_1)
    assert s.loc["base", "kl"] == pytest.approx(0.5) and s.loc["base", "n_tokens"] == 1.5
    assert s.loc["base", "n_prompts"] == 2 and s.loc["base", "n_samples"] == 4
    with pytest.raises(MormError) as e:
        policy_summary(frame, ["honest"])
    assert e.value.field == "objectives"


def test_win_rates_average_samples_per_prompt_first():
    frame = tidy_frame({"base": [[0.0, 2.0], [1.0, 1.0], [3.0, 3.0]],
                        "tuned": [[5.0, -1.0], [1.0, 1.0], [4.0, 2.5]]},
                       categories=["a", "a", "b"])
    # prompt means: base 1, 1, 3; tuned 2, 1, 3.25 -> win, tie, win
    w = win_rates(frame, "base", ["helpful"], n_boot=500)
    assert len(w) == 1 and w.loc[0, "policy"] == "tuned"
    assert w.loc[0, "rate"] == pytest.approx(5 / 6) and w.loc[0, "n"] == 3
    by = win_rates(frame, "base", ["helpful"], n_boot=500, by="category").set_index("category")
    assert by.loc["a", "rate"] == pytest.approx(0.75) and by.loc["b", "rate"] == 1.0
    with pytest.raises(MormError) as e:
        win_rates(frame, "nobody", ["helpful"])
    assert e.value.field == "baseline"


def test_slices_are_the_summary_of_each_category():
    frame = tidy_frame({"base": [[0.0], [1.0], [4.0]], "tuned": [[1.0], [3.0], [2.0]]},
                       categories=["a", "a", None])
    out = slices(frame, ["helpful"])
    assert list(out.index) == [("(none)", "base"), ("(none)", "tuned"), ("a", "base"),
                               ("a", "tuned")]
    sub = policy_summary(frame[frame["category"] == "a"], ["helpful"])
    assert out.loc[("a", "tuned"), "helpful"] == pytest.approx(sub.loc["tuned", "helpful"])
    assert out.loc[("(none)", "base"), "helpful"] == 4.0


def test_largest_differences_sorted_by_absolute_difference():
    frame = tidy_frame({"base": [[0.0], [1.0], [4.0]], "tuned": [[1.0], [3.0], [2.5]]})
    d = largest_differences(frame, "tuned", "base", "helpful")
    assert d["prompt_id"].tolist() == ["p1", "p2", "p0"]
    assert d["diff"].tolist() == pytest.approx([2.0, -1.5, 1.0])
    assert list(d.columns) == ["prompt_id", "prompt", "category", "tuned", "base", "diff"]


def test_front_and_hypervolume_of_three_points():
    summary = pd.DataFrame({"helpful": [1.0, 2.0, 1.5], "harmless": [3.0, 2.0, 1.5]},
                           index=["a", "b", "c"])
    f = front_of_policies(summary, ["helpful", "harmless"])
    assert f.on_front.tolist() == [True, True, False]
    # reference: min - 0.1 * spread = (1 - 0.1, 1.5 - 0.15)
    assert f.reference == pytest.approx([0.9, 1.35])
    # sweep over x: [0.9, 1] up to 3 -> 0.1 * 1.65; [1, 2] up to 2 -> 1 * 0.65
    assert f.hypervolume == pytest.approx(0.1 * 1.65 + 1.0 * 0.65)


def test_soup_curve_without_a_soup_set_is_none(ws):
    assert soup_curve(ws, "no-such-set", "rm") is None


def test_paired_mean_diff_matches_the_hand_computed_mean_and_brackets_it():
    from morm_explorer.evaluation.stats import paired_mean_diff

    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    b = a - np.array([0.5, 1.5, 1.0, 0.8, 1.2, 1.0])
    d = paired_mean_diff(a, b)
    assert d.diff == pytest.approx(1.0)
    assert 0.5 <= d.low < 1.0 < d.high <= 1.5
    assert d.clear and d.n == 6


def test_paired_mean_diff_pairing_removes_shared_prompt_difficulty():
    from morm_explorer.evaluation.stats import paired_mean_diff

    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 5, 40)
    a = difficulty + 0.3 + rng.normal(0, 0.2, 40)
    b = difficulty + rng.normal(0, 0.2, 40)
    assert paired_mean_diff(a, b).clear  # unpaired, the 5.0 spread would swamp 0.3
    same = paired_mean_diff(b + rng.normal(0, 0.2, 40), b)
    assert not same.clear and same.low < 0 < same.high


def test_paired_mean_diff_edge_cases():
    import math

    from morm_explorer.evaluation.stats import paired_mean_diff

    assert math.isnan(paired_mean_diff([], []).diff)
    one = paired_mean_diff([2.0], [1.0])
    assert one.diff == 1.0 and math.isnan(one.low) and not one.clear
    const = paired_mean_diff([2.0, 3.0], [1.0, 2.0])
    assert (const.low, const.high) == (1.0, 1.0) and const.clear
    nan = paired_mean_diff([1.0, float("nan"), 3.0], [0.0, 1.0, 2.0])
    assert nan.n == 2
    with pytest.raises(MormError):
        paired_mean_diff([1.0, 2.0], [1.0])


def test_mean_differences_state_a_difference_only_when_the_interval_excludes_zero():
    from morm_explorer.evaluation.stats import difference_sentence, mean_differences

    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 3, 30)
    rows = []
    for i, d in enumerate(difficulty):
        for policy, shift in (("a", 0.5), ("b", 0.0)):
            for s in range(2):  # two samples a prompt: averaged before pairing
                rows.append({"policy": policy, "prompt_id": f"p{i}", "sample": s,
                             "rm:harmless": d + shift + rng.normal(0, 0.1),
                             "rm:helpful": d + rng.normal(0, 0.5)})
    frame = pd.DataFrame(rows + [{"policy": "a", "prompt_id": "only-a", "sample": 0,
                                  "rm:harmless": 99.0, "rm:helpful": 99.0}])
    table = mean_differences(frame, "a", "b", ["harmless", "helpful"])
    by = table.set_index("objective")
    assert by.loc["harmless", "n"] == 30  # the prompt only a answered is not paired
    assert by.loc["harmless", "clear"] and by.loc["harmless", "verdict"] == "a higher"
    assert 0 < by.loc["harmless", "low"] < 0.5 < by.loc["harmless", "high"]
    means = frame[frame.prompt_id != "only-a"].groupby(["policy", "prompt_id"])[
        "rm:helpful"].mean()
    assert by.loc["helpful", "diff"] == pytest.approx((means["a"] - means["b"]).mean())
    assert not by.loc["helpful", "clear"] and by.loc["helpful", "verdict"] == \
        "no clear difference"
    rows = table.to_dict("records")
    assert difference_sentence("a", "b", rows[0]).startswith("harmless: a scores higher than b")
    assert difference_sentence("a", "b", rows[1]).startswith(
        "helpful: no clear difference between a and b")
    flipped = mean_differences(frame, "b", "a", ["harmless"]).iloc[0]
    assert flipped["verdict"] == "a higher" and flipped["diff"] < 0
    with pytest.raises(MormError, match="'c' is not one of the policies"):
        mean_differences(frame, "a", "c", ["harmless"])
