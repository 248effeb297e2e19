"""How far a reward can be trusted: distances to the training texts and length following, by
hand, then through a real tiny model's training and scoring."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from morm_explorer.reward import trust
from morm_explorer.reward.trust import (
    TrainingReference,
    assess_set,
    far_share,
    knn_distance,
    length_following,
)

# -- distances ------------------------------------------------------------------------------


def test_knn_distance_by_hand():
    points = np.array([[0.0, 0.0], [3.0, 4.0]])
    # to (0, 0): 0 and 5; to (3, 0): 3 and 4; divided by sqrt(H) = sqrt(2)
    x = np.array([[0.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(knn_distance(x, points, 1), [0.0, 3 / math.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(knn_distance(x, points, 2),
                               [2.5 / math.sqrt(2), 3.5 / math.sqrt(2)], atol=1e-6)
    # k above the number of points uses them all
    np.testing.assert_allclose(knn_distance(x, points, 9), knn_distance(x, points, 2))


def test_knn_distance_blocks_match_a_plain_loop(monkeypatch):
    monkeypatch.setattr(trust, "_CHUNK", 7)  # several blocks
    rng = np.random.default_rng(0)
    x, points = rng.normal(size=(30, 5)), rng.normal(size=(40, 5))
    want = [np.sort(np.linalg.norm(points - row, axis=1))[:3].mean() / math.sqrt(5) for row in x]
    np.testing.assert_allclose(knn_distance(x, points, 3), want, rtol=1e-4)


def test_reference_by_hand_and_saved_round_trip():
    # training values 0 and 2: mean 1, std 1, so the points are -1 and +1
    ref = TrainingReference.fit(np.array([[0.0], [2.0]]), np.array([[1.0], [4.0]]), k=5)
    np.testing.assert_allclose(ref.points[:, 0], [-1.0, 1.0])
    assert ref.k == 2  # no more neighbours than points
    # held-out 1 -> z 0, distances 1 and 1 -> 1; held-out 4 -> z 3, distances 4 and 2 -> 3
    assert ref.p95 == pytest.approx(1 + 0.95 * 2) and ref.p99 == pytest.approx(1 + 0.99 * 2)
    np.testing.assert_allclose(ref.distance(np.array([[1.0], [4.0]])), [1.0, 3.0])
    again = TrainingReference.from_saved(ref.tensors(), ref.summary())
    np.testing.assert_allclose(again.distance(np.array([[4.0]])), [3.0])
    assert again.summary() == ref.summary() and ref.summary()["n_heldout"] == 2
    with pytest.raises(ValueError, match="width"):
        ref.distance(np.zeros((1, 3)))


def test_reference_keeps_at_most_max_points():
    rng = np.random.default_rng(1)
    ref = TrainingReference.fit(rng.normal(size=(50, 4)), rng.normal(size=(10, 4)),
                                max_points=20)
    assert ref.points.shape == (20, 4) and ref.n_train == 50
    assert ref.tensors()["points"].dtype == np.float16


def test_far_share():
    assert far_share(np.array([0.5, 1.0, 2.0, 3.0]), 1.5) == 0.5
    assert far_share(np.array([1.5]), 1.5) == 0.0  # at the threshold is not beyond it
    assert math.isnan(far_share(np.array([]), 1.0))


# -- length following ------------------------------------------------------------------------


def test_length_following_by_hand():
    lengths = np.array([1, 2, 3, 4, 5])
    # c's ranks 1 5 2 4 3 against 1..5: sum d^2 = 0 + 9 + 1 + 0 + 4 = 14,
    # Spearman = 1 - 6 * 14 / (5 * 24) = 0.3
    scores = np.column_stack([lengths * 2.0, -lengths ** 2, [1, 5, 2, 4, 3], np.ones(5)])
    names = ["a", "b", "c", "flat"]
    found = length_following(scores, lengths, names)
    assert [(f.objective, round(f.rho, 6)) for f in found] == [("a", 1.0), ("b", -1.0)]
    assert found[0].message() == ("a follows response length on this set (Spearman 1.00: "
                                  "longer responses score higher)")
    assert "shorter responses score higher" in found[1].message()
    loose = length_following(scores, lengths, names, limit=0.2)
    assert {f.objective: round(f.rho, 6) for f in loose}["c"] == 0.3
    assert length_following(scores, np.full(5, 3), names) == []  # constant length
    with pytest.raises(ValueError, match="names"):
        length_following(scores, lengths, ["a"])


# -- the assessment the pages show -----------------------------------------------------------

REF = {"p95": 1.0, "p99": 2.0}


def test_assess_set_warns_far_and_length_following_sets():
    lengths = np.arange(8)
    scores = np.column_stack([lengths, [5, 1, 4, 8, 2, 7, 3, 6]]).astype(float)  # rho 0.24
    far = assess_set(scores, lengths, ["helpful", "harmless"], "demo-rm",
                     distance=np.array([3, 3, 3, 3, 3, 3, 0, 0.0]), reference=REF)
    assert far.far_share == 0.75 and far.notes == [] and far.summary == ""
    assert far.warnings == [
        "75% of this set's texts lie farther from demo-rm's training texts than 99% of its "
        "held-out training texts: its scores may not mean here what they meant in training.",
        "helpful follows response length on this set (Spearman 1.00: longer responses score "
        "higher)"]


def test_assess_set_near_set_says_so_and_missing_parts_are_notes():
    lengths, scores = np.arange(8), np.array([5, 1, 4, 8, 2, 7, 3, 6.0])[:, None]
    near = assess_set(scores, lengths, ["helpful"], "rm", distance=np.r_[np.zeros(6), 3, 3],
                      reference=REF)
    assert near.warnings == [] and near.far_share == 0.25  # 25% is not above the limit
    assert near.summary.startswith("25% of this set's texts lie farther from rm's")
    old = assess_set(scores, lengths, ["helpful"], "old-rm")
    assert old.warnings == [] and old.far_share is None
    assert old.notes and "old-rm keeps no reference of its training texts" in old.notes[0]
    unmeasured = assess_set(scores, lengths, ["helpful"], "rm", reference=REF)
    assert "saved without their distance" in unmeasured.notes[0]


# -- through a real tiny model: training stores the reference, scoring measures sets ---------


def test_training_stores_a_reference_and_scoring_measures_sets(ws, tiny_rm):
    from morm_explorer.data.candidates import from_records
    from morm_explorer.reward.artifact import load_reference
    from morm_explorer.reward.config import read_config
    from morm_explorer.scoring import read_cached_scores, score_candidate_set
    from tests.test_reward import GOOD, SAFE

    ref = load_reference(tiny_rm)
    summary = read_config(tiny_rm)["reference"]
    assert ref is not None and summary == ref.summary() and 0 < ref.p95 <= ref.p99
    assert summary["n_heldout"] > 0 and ref.points.shape[1] == 64  # mean_layers: 2 x 32
    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    near = from_records([{"prompt_id": f"n{i}", "prompt": f"Question number {i} about topic "
                          f"{i % 17}?", "response": (GOOD + SAFE)[i % 6]} for i in range(12)])
    far = from_records([{"prompt_id": f"f{i}", "prompt": "東京 7421 ξξ дом %% " * 3,
                         "response": "🙂 qq 9981 ζ " * (i + 2)} for i in range(12)])
    got = {}
    for name, cset in (("near", near), ("far", far)):
        scored = score_candidate_set(ws, "rm", cset, device="cpu")
        assert scored.distance.shape == (12,) and scored.reference == summary
        cached = read_cached_scores(ws, "rm", cset)
        np.testing.assert_allclose(cached.distance, scored.distance, rtol=1e-5)
        got[name] = far_share(cached.distance, ref.p99)
    assert got == {"near": 0.0, "far": 1.0}


def test_models_without_a_reference_load_none(tiny_rm, tmp_path):
    from morm_explorer.reward.artifact import load_reference

    old = tmp_path / "old"
    shutil.copytree(tiny_rm, old)
    (old / "reference.safetensors").unlink()
    assert load_reference(old) is None
