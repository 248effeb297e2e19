"""PPO run figures from a wide metrics frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from morm_explorer.ui import ppo_figures as pf


def metrics(steps: int = 6) -> pd.DataFrame:
    x = np.arange(steps, dtype=float)
    return pd.DataFrame({
        "objective/scores/helpful": x, "objective/scores/harmless": -x,
        "objective/rlhf_reward": x / 2, "objective/kl": x / 10, "objective/entropy": 3 - x / 10,
        "loss/policy_avg": np.zeros(steps), "scalarization/weight/helpful": 0.5 + x / 20,
        "scalarization/weight/harmless": 0.5 - x / 20, "lagrange/harmless": x / 5,
    }, index=pd.Index(np.arange(1, steps + 1), name="step"))


def test_figures_draw_one_line_per_series():
    m = metrics()
    assert pf.objectives_in(m) == ["helpful", "harmless"]
    fig = pf.scores_figure(m, smooth=2)
    assert [t.name for t in fig.data] == ["helpful", "harmless", "RLHF reward (scalarized - KL)"]
    assert np.allclose(fig.data[0].y, [0, 0.5, 1.5, 2.5, 3.5, 4.5])  # rolling mean of 2
    train = pf.training_figure(m)
    assert len(train.data) == 3  # kl, entropy, policy loss present; the others absent
    w = pf.weights_figure(m)
    assert [t.name for t in w.data] == ["w helpful", "w harmless", "λ harmless"]
    assert pf.training_figure(pd.DataFrame()).layout.title.text == "No training metrics yet"
    bars = pf.runs_scores_figure({"a": {"helpful": 1.0}, "b": {"harmless": 2.0}},
                                 ["helpful", "harmless"])
    assert len(bars.data) == 2 and np.isnan(bars.data[0].y[1])
