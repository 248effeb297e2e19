"""Rewarded soups: parameter interpolation, and the soup job end to end on tiny policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morm_explorer.data.candidates import load_candidate_set
from morm_explorer.errors import MormError
from morm_explorer.jobs.worker import run_inline
from morm_explorer.policy.soup import SoupJob, interpolate, soup_label
from tests.test_policy import _save_tiny


def test_interpolate_is_a_lerp_of_float_tensors_only():
    a = {"w": torch.tensor([0.0, 2.0]), "step": torch.tensor([3])}
    b = {"w": torch.tensor([4.0, 6.0]), "step": torch.tensor([9])}
    mid = interpolate(a, b, 0.25)
    assert torch.allclose(mid["w"], torch.tensor([1.0, 3.0])) and mid["step"].item() == 3
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    with pytest.raises(MormError, match="different parameters"):
        interpolate(a, {"w": b["w"]}, 0.5)
    with pytest.raises(MormError, match="shape"):
        interpolate(a, {"w": torch.zeros(3), "step": b["step"]}, 0.5)


def test_spec_validation():
    with pytest.raises(MormError, match="lambdas"):
        SoupJob(name="s", policy_a="a", policy_b="b", reward_model="r", lambdas=[0, 1.5])
    with pytest.raises(MormError, match="policy_b"):
        SoupJob(name="s", policy_a="a", reward_model="r")


@pytest.mark.slow
def test_soup_job_samples_and_scores_every_mix(ws, tiny_rm, tmp_path):
    import shutil

    shutil.copytree(tiny_rm, ws.root / "reward_models" / "rm")
    from transformers import AutoModelForCausalLM

    a = _save_tiny(tmp_path / "a")
    b = _save_tiny(tmp_path / "b")
    model = AutoModelForCausalLM.from_pretrained(b)  # b: the same architecture, other weights
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(b)
    spec = SoupJob(name="soup", policy_a=a, policy_b=b, lambdas=[0, 0.5, 1], reward_model="rm",
                   limit=3, sampling={"n": 2, "max_new_tokens": 4}, device="cpu")
    info = run_inline(ws, spec)
    assert info.status == "succeeded", info.error
    assert info.result["lambdas"] == [0.0, 0.5, 1.0]
    assert set(info.result["mean_scores"]) == {"0", "0.5", "1"}
    assert 1 <= len(info.result["front"]) <= 3
    frame = load_candidate_set(ws, "soup").frame
    assert len(frame) == 3 * 3 * 2
    assert set(frame["source"]) == {soup_label(x) for x in (0.0, 0.5, 1.0)}
    by_mix = frame.groupby("source")["response"].apply(list)
    assert by_mix[soup_label(0.0)] != by_mix[soup_label(1.0)]  # different weights, same seed
    means = info.result["mean_scores"]["0"]
    assert set(means) == {"helpful", "harmless"} and all(np.isfinite(list(means.values())))
