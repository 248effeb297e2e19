"""The Explore computations: selection under a choice of weights, the weight map, the tables,
and weight presets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from morm_explorer.data.candidates import from_records
from morm_explorer.errors import MormError
from morm_explorer.explore import Choice, Explorer
from morm_explorer.objectives import Constraint
from morm_explorer.scoring import Scores
from morm_explorer.weight_presets import (
    WeightPreset,
    builtin_presets,
    delete_preset,
    list_presets,
    save_preset,
)

OBJ = ["helpful", "harmless", "honest"]
# per prompt: a helpful-but-risky answer, a safe refusal, a balanced answer, a dominated one
KINDS = {"risky": [2.0, -1.0, 0.0], "refusal": [-1.0, 2.0, 0.5], "balanced": [0.8, 0.8, 0.4],
         "dominated": [0.5, 0.5, 0.3]}


def known_explorer(n_prompts: int = 4, stats: bool = False) -> Explorer:
    recs, values = [], []
    for p in range(n_prompts):
        for kind, s in KINDS.items():
            recs.append({"prompt_id": f"p{p}", "prompt": f"Prompt {p}?",
                         "response": f"{kind} answer {p}", "source": kind})
            values.append(s)
    st = {"mean": [0.0, 0.0, 0.0], "std": [2.0, 1.0, 1.0]} if stats else None
    return Explorer(Scores(from_records(recs), np.array(values, np.float32), OBJ, st))


def winners_of(ex: Explorer, **kw) -> list[str]:
    sel = ex.select(Choice.of(**kw))
    return ex.frame["source"].to_numpy()[sel.winners].tolist()


def test_weights_pick_the_expected_winners():
    ex = known_explorer()
    raw = {"standardized": False}
    assert set(winners_of(ex, weights={"helpful": 1}, **raw)) == {"risky"}
    assert set(winners_of(ex, weights={"harmless": 1}, **raw)) == {"refusal"}
    assert set(winners_of(ex, weights={"helpful": 1, "harmless": 1}, **raw)) == {"balanced"}
    # Chebyshev and worst-objective also land on the balanced answer; never the dominated one
    assert set(winners_of(ex, weights={"helpful": 1, "harmless": 1}, method="chebyshev",
                          **raw)) == {"balanced"}
    assert set(winners_of(ex, weights={"helpful": 1, "harmless": 1}, method="min",
                          **raw)) == {"balanced"}


def test_constraints_and_fallback():
    ex = known_explorer()
    sel = ex.select(Choice.of({"helpful": 1}, standardized=False,
                              constraints=[Constraint("harmless", 0.7)]))
    assert set(ex.frame["source"].to_numpy()[sel.winners]) == {"balanced"}
    assert sel.feasible.all()
    sel = ex.select(Choice.of({"helpful": 1}, standardized=False,
                              constraints=[Constraint("harmless", 5.0)]))
    assert set(ex.frame["source"].to_numpy()[sel.winners]) == {"refusal"}  # least violating
    assert not sel.feasible.any()


def test_standardized_scores_use_the_model_stats():
    ex = known_explorer(stats=True)
    # helpful's std is 2: as z-scores refusal gets (-0.5 + 2) / 2 = 0.75 > balanced's
    # (0.4 + 0.8) / 2 = 0.6; on raw scores balanced (0.8) beats refusal (0.5)
    both = {"helpful": 1, "harmless": 1}
    assert set(winners_of(ex, weights=both)) == {"refusal"}
    assert set(winners_of(ex, weights=both, standardized=False)) == {"balanced"}
    with pytest.raises(MormError, match="no score statistics"):
        known_explorer().select(Choice.of({"helpful": 1}, standardized=True))


def test_fronts_tables_and_detail():
    ex = known_explorer()
    src = ex.frame["source"].to_numpy()
    assert set(src[ex.front_in_prompt]) == {"risky", "refusal", "balanced"}
    assert set(src[ex.front_of(("helpful", "harmless"))]) == {"risky", "refusal", "balanced"}
    first = ex.select(Choice.of({"helpful": 1}, standardized=False))
    second = ex.select(Choice.of({"harmless": 1}, standardized=False))
    table = ex.winners_table(second, first)
    assert list(table["source"]) == ["refusal"] * 4 and table["changed"].all()
    assert list(table["n"]) == [4] * 4
    assert not ex.winners_table(second, second)["changed"].any()
    detail = ex.prompt_detail("p0", second)
    row = detail.set_index("source").loc["dominated"]
    assert not row["on_front"] and row["dominated_by"] == "2"  # the balanced answer, row 2
    assert detail.iloc[0]["winner"] and detail.iloc[0]["source"] == "refusal"
    with pytest.raises(MormError, match="no prompt"):
        ex.prompt_detail("nope", second)


def test_simplex_map_matches_selecting_at_each_grid_point():
    rng = np.random.default_rng(0)  # no exact ties: the map computes in float32
    recs = [{"prompt_id": f"p{i // 5}", "prompt": f"P{i // 5}", "response": str(i)}
            for i in range(60)]
    ex = Explorer(Scores(from_records(recs), rng.normal(size=(60, 3)).astype(np.float32), OBJ))
    choice = Choice.of({"helpful": 1, "harmless": 1, "honest": 1}, standardized=False)
    grid, means = ex.simplex_map(choice, OBJ, steps=4)
    assert grid.shape == (15, 3) and means.shape == (15, 3)
    for g, w in enumerate(grid):
        sel = ex.select(Choice.of(dict(zip(OBJ, w, strict=True)), standardized=False))
        assert np.allclose(means[g], ex.raw[sel.winners].mean(0), atol=1e-6)
    with pytest.raises(MormError, match="three objectives"):
        ex.simplex_map(choice, OBJ[:2])


def test_the_weight_map_is_cached_and_only_the_star_moves():
    """With three objectives the map does not depend on the current weights: a slider move
    finds it ready. The scalarizer, the standardization, the constraints and the grid make a
    new one; with four objectives, so does the fourth objective's share of the weights."""
    rng = np.random.default_rng(1)
    recs = [{"prompt_id": f"p{i // 5}", "prompt": f"P{i // 5}", "response": str(i)}
            for i in range(60)]
    ex = Explorer(Scores(from_records(recs), rng.normal(size=(60, 3)).astype(np.float32), OBJ,
                         {"mean": [0.0] * 3, "std": [1.0] * 3}))
    first = ex.simplex_map(Choice.of({"helpful": 1, "harmless": 0.2, "honest": 0.5}), OBJ)
    moved = ex.simplex_map(Choice.of({"helpful": 0.1, "harmless": 0.9, "honest": 0.5}), OBJ)
    assert moved is first and not first[1].flags.writeable
    for other in (Choice.of({"helpful": 1}, method="chebyshev"),
                  Choice.of({"helpful": 1}, standardized=False),
                  Choice.of({"helpful": 1}, constraints=[Constraint("harmless", 0.0)])):
        again = ex.simplex_map(other, OBJ)
        assert again is not first and again is ex.simplex_map(other, OBJ)
    assert ex.simplex_map(Choice.of({"helpful": 1}), OBJ, steps=4)[0].shape == (15, 3)
    fresh = Explorer(ex.scores)._simplex_map(Choice.of({"helpful": 1}), [0, 1, 2],
                                             np.array([1.0, 0, 0]), 10)
    assert all(np.array_equal(a, b) for a, b in zip(first, fresh, strict=True))

    four = ["helpful", "harmless", "honest", "concise"]
    ex4 = Explorer(Scores(from_records(recs), rng.normal(size=(60, 4)).astype(np.float32),
                          four))
    w = {"helpful": 0.5, "harmless": 0.5, "honest": 0.5, "concise": 0.5}
    a = ex4.simplex_map(Choice.of(w, standardized=False), OBJ)
    b = ex4.simplex_map(Choice.of({**w, "helpful": 1.0}, standardized=False), OBJ)
    assert b is not a  # concise's share went from 1/4 to 1/5: another map
    assert ex4.simplex_map(Choice.of({**w, "helpful": 1.0}, standardized=False), OBJ) is b


def test_unknown_or_zero_weights_are_errors():
    ex = known_explorer()
    with pytest.raises(MormError, match="unknown objectives"):
        ex.select(Choice.of({"funny": 1.0}, standardized=False))
    with pytest.raises(MormError, match="all weights are zero"):
        ex.select(Choice.of({"helpful": 0.0}, standardized=False))


def test_presets_roundtrip(ws):
    assert [p.name for p in builtin_presets(OBJ)] == ["equal", "helpful-first",
                                                      "harmless-first", "honest-first"]
    p = save_preset(ws, WeightPreset("safety/first", {"harmless": 0.8, "helpful": 0.2},
                                     "chebyshev", False,
                                     [{"objective": "honest", "threshold": 0.1}]))
    assert p.name == "safety-first"
    (back,) = list_presets(ws)
    assert back == p and back.constraint_objects() == [Constraint("honest", 0.1)]
    with pytest.raises(MormError, match="exists"):
        save_preset(ws, p, overwrite=False)
    with pytest.raises(MormError, match="weights.helpful"):
        WeightPreset("bad", {"helpful": -1.0})
    delete_preset(ws, p.name)
    assert list_presets(ws) == []


def test_distribution_stats():
    stats = known_explorer().distribution_stats()
    assert list(stats.index) == OBJ
    assert isinstance(stats, pd.DataFrame) and stats.loc["helpful", "mean"] == pytest.approx(
        np.mean([2.0, -1.0, 0.8, 0.5]))
