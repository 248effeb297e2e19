"""GRPO and RLOO (morm_explorer.policy.rl_grpo, rl_rloo, and the shared trainer): advantages and
losses by hand and against TRL's code on the same tensors, GDPO's aggregation against a plain
loop, the config's checks, and training a tiny random Llama with the rule rewards of
tests/test_ppo.py (A: share of "yes" words, B: share of "no")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from trl.trainer.utils import nanstd

from morm_explorer.errors import MormError
from morm_explorer.policy.ppo_config import PPOConfig
from morm_explorer.policy.rl_grpo import (
    EPS,
    aggregate,
    group_advantages,
    grpo_loss,
    kl_k3,
    normalize_then_sum,
)
from morm_explorer.policy.rl_rloo import rloo_advantages, rloo_loss
from tests.test_ppo import OBJECTIVES, _comparable, _curve, word_reward
from tests.test_ppo import _cfg as _ppo_cfg

# -- TRL's code paths (trl 1.16), reproduced on plain tensors ---------------------------------
# GRPOTrainer and RLOOTrainer compute advantages inside `_generate_and_score_completions` and
# losses inside `_compute_loss`, methods of a trainer with a model and data loaders; what follows
# copies their arithmetic, line for line, with the trainer's attributes as arguments. `nanstd`
# is TRL's own function.


def trl_grpo_advantages(rewards_per_func, weights, G, scale_rewards, aggregation):
    """trl/trainer/grpo_trainer.py lines 2761-2800 (without the unscorable-row NaN handling)."""
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        mean_grouped_rewards = torch.nanmean(rewards.view(-1, G), dim=1)
        mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(G, dim=0)
        if scale_rewards in ["group", "none"]:
            std_rewards = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
        else:  # "batch"
            std_rewards = nanstd(rewards).expand_as(rewards)
        advantages = rewards - mean_grouped_rewards
        if scale_rewards != "none":
            advantages = advantages / (std_rewards + 1e-4)
        return advantages
    grouped = rewards_per_func.view(-1, G, rewards_per_func.shape[1])
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = nanstd(grouped, dim=1, keepdim=True)
    reward_k = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, rewards_per_func.shape[1])
    rewards = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
    std_rewards = nanstd(rewards).expand_as(rewards)
    return (rewards - torch.nanmean(rewards)) / (std_rewards + 1e-4)


def trl_grpo_loss(per_token_logps, old_per_token_logps, ref_per_token_logps, advantages, mask,
                  epsilon, beta, loss_type, max_completion_length, num_items_in_batch,
                  steps_per_generation):
    """trl/trainer/grpo_trainer.py lines 3087-3172: token-level importance sampling, no
    two-sided clipping, one process, no gradient accumulation."""
    advantages = advantages.unsqueeze(1)
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    per_token_kl = (torch.exp(ref_per_token_logps - per_token_logps)
                    - (ref_per_token_logps - per_token_logps) - 1)
    coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    normalizer = num_items_in_batch.clamp(min=1.0) / 1  # num_processes
    normalizer = normalizer * 1 / steps_per_generation  # gradient accumulation steps = 1
    return (per_token_loss * mask).sum() / normalizer


def trl_rloo(rewards_per_func, weights, G, beta, per_token_kl, completion_mask,
             normalize_advantages):
    """trl/trainer/rloo_trainer.py lines 1655-1699: the KL (k1, summed) in the reward, the
    leave-one-out baseline, optional normalization."""
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    if beta != 0.0:
        rewards = rewards - beta * (per_token_kl * completion_mask).sum(-1)
    grouped_rewards = rewards.view(-1, G)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = ((grouped_sum - grouped_rewards) / (scorable_counts - 1)).view(-1)
    advantages = rewards - baselines
    if normalize_advantages:
        advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
    return advantages


def trl_rloo_loss(per_token_logps, old_per_token_logps, completion_mask, advantages, epsilon):
    """trl/trainer/rloo_trainer.py lines 1822-1833: the sequence-level clipped ratio."""
    logps = (per_token_logps * completion_mask).sum(1)
    old_logps = (old_per_token_logps * completion_mask).sum(1)
    coef_1 = torch.exp(logps - old_logps)
    coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon)
    return -torch.min(coef_1 * advantages, coef_2 * advantages).mean()


def _rollout(n=8, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(n, T, generator=g) * 3
    old = logps + 0.3 * torch.randn(n, T, generator=g)  # ratios both inside and outside the clip
    ref = logps + 0.5 * torch.randn(n, T, generator=g)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return logps, old, ref, mask


# -- advantages ------------------------------------------------------------------------------


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])  # two groups of 4
    std = math.sqrt(5 / 3)  # Bessel-corrected std of 1..4
    expected = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (std + EPS)
    adv = group_advantages(r, 4, "group")
    assert torch.allclose(adv[:4], expected) and torch.equal(adv[4:], torch.zeros(4))
    assert torch.allclose(group_advantages(r, 4, "none")[:4], torch.tensor([-1.5, -.5, .5, 1.5]))
    assert torch.allclose(group_advantages(r, 4, "batch")[:4],
                          torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (r.std() + EPS))
    # RLOO: r_i minus the mean of the other three; 1 - (2 + 3 + 4) / 3 = -2
    assert torch.allclose(rloo_advantages(r, 4)[:4], torch.tensor([-2.0, -2 / 3, 2 / 3, 2.0]))
    assert torch.equal(rloo_advantages(r, 4)[4:], torch.zeros(4))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
def test_grpo_advantages_match_trl(scale, aggregation):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(12, 3, generator=g)  # 3 prompts x G = 4, K = 3
    w = torch.tensor([0.5, 0.3, 0.2])
    expected = trl_grpo_advantages(scores, w, 4, scale, aggregation)
    if aggregation == "sum_then_normalize":
        ours = group_advantages(scores @ w, 4, scale)
    else:
        ours = normalize_then_sum(scores, w.expand(12, 3), 4)
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_rloo_advantages_match_trl(normalize):
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(9, 2, generator=g)  # 3 prompts x G = 3
    w = torch.tensor([0.7, 0.3])
    logps, _, ref, mask = _rollout(9, seed=2)
    k1 = logps - ref
    beta = 0.1
    expected = trl_rloo(scores, w, 3, beta, k1, mask, normalize)
    ours = rloo_advantages(scores @ w - beta * (k1 * mask).sum(1), 3, normalize=normalize)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_normalize_then_sum_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    G, K = 3, 2
    scores = rng.normal(size=(6, K))
    coef = rng.dirichlet(np.ones(K), size=6)  # per-row coefficients (chebyshev, Lagrange)
    combined = []
    for i in range(6):
        group = scores[(i // G) * G:(i // G) * G + G]
        total = 0.0
        for k in range(K):
            col = group[:, k]
            total += coef[i, k] * (scores[i, k] - col.mean()) / (col.std(ddof=1) + EPS)
        combined.append(total)
    combined = np.array(combined)
    expected = (combined - combined.mean()) / (combined.std(ddof=1) + EPS)
    ours = normalize_then_sum(torch.tensor(scores), torch.tensor(coef), G)
    assert np.allclose(ours.numpy(), expected)


# -- losses ----------------------------------------------------------------------------------


def test_grpo_loss_by_hand():
    # one response of two tokens, A = 1: ratios e^0.1 (inside the clip) and e^0.5 (clipped)
    old = torch.zeros(1, 2)
    new = torch.tensor([[0.1, 0.5]])
    mask = torch.ones(1, 2)
    loss, clipfrac, approxkl = grpo_loss(new, old, torch.tensor([1.0]), mask, 0.2,
                                         loss_type="bnpo")
    assert loss.item() == pytest.approx(-(math.exp(0.1) + 1.2) / 2)
    assert clipfrac.item() == 0.5 and approxkl.item() == pytest.approx(0.5 * (0.01 + 0.25) / 2)
    # k3 is zero where the policy is the reference, positive elsewhere
    assert kl_k3(new, new).abs().max() == 0 and (kl_k3(new, old) > 0).all()
    with_kl, _, _ = grpo_loss(new, old, torch.tensor([1.0]), mask, 0.2, ref_logprobs=old,
                              beta=0.5, loss_type="bnpo")
    assert with_kl.item() == pytest.approx(loss.item() + 0.5 * kl_k3(new, old).mean().item())


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_matches_trl(loss_type):
    logps, old, ref, mask = _rollout(8, 5)
    adv = torch.randn(8, generator=torch.Generator().manual_seed(4))
    rows = torch.arange(4)  # one of two minibatches of the rollout
    tokens = mask.sum()
    ours, _, _ = grpo_loss(logps[rows], old[rows], adv[rows], mask[rows], 0.2,
                           ref_logprobs=ref[rows], beta=0.04, loss_type=loss_type,
                           max_new_tokens=5, tokens_per_minibatch=float(tokens) / 2)
    expected = trl_grpo_loss(logps[rows], old[rows], ref[rows], adv[rows], mask[rows], 0.2,
                             0.04, loss_type, 5, tokens, steps_per_generation=2)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_aggregate_weighs_tokens_per_loss_type():
    per_token = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    kw = {"max_new_tokens": 3, "tokens_per_minibatch": 8.0}
    assert aggregate(per_token, mask, "grpo", **kw).item() == pytest.approx((1 + 4) / 2)
    assert aggregate(per_token, mask, "bnpo", **kw).item() == pytest.approx(7 / 4)
    assert aggregate(per_token, mask, "dr_grpo", **kw).item() == pytest.approx(7 / 6)
    assert aggregate(per_token, mask, "dapo", **kw).item() == pytest.approx(7 / 8)


def test_rloo_loss_by_hand_and_against_trl():
    old = torch.zeros(2, 2)
    new = torch.tensor([[0.05, 0.05], [0.2, 0.3]])  # sequence log-ratios 0.1 and 0.5
    mask = torch.ones(2, 2)
    adv = torch.tensor([1.0, 1.0])
    loss, clipfrac, _ = rloo_loss(new, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx(-(math.exp(0.1) + 1.2) / 2)
    assert clipfrac.item() == 0.5
    logps, old, ref, mask = _rollout(6, 4, seed=5)
    adv = torch.randn(6, generator=torch.Generator().manual_seed(5))
    ours, _, _ = rloo_loss(logps, old, adv, mask, 0.2)
    assert torch.allclose(ours, trl_rloo_loss(logps, old, mask, adv, 0.2), atol=1e-6)
    with_kl, _, _ = rloo_loss(logps, old, adv, mask, 0.2, ref_logprobs=ref, beta=0.1)
    k3 = (kl_k3(logps, ref) * mask).sum(1).mean()
    assert with_kl.item() == pytest.approx((ours + 0.1 * k3).item())


def test_losses_have_the_policy_gradient_at_the_start():
    """At pi = pi_old, d loss / d log pi = -A / (tokens) for GRPO (bnpo), -A / responses for
    RLOO: the policy-gradient estimator."""
    logps = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    grpo_loss(logps, logps.detach(), adv, mask, 0.2, loss_type="bnpo")[0].backward()
    assert torch.allclose(logps.grad, -adv[:, None] * mask / 5)
    logps.grad = None
    rloo_loss(logps, logps.detach(), adv, mask, 0.2)[0].backward()
    assert torch.allclose(logps.grad, -adv[:, None] * mask / 2)


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, fld", [
    ({"algorithm": "dpo"}, "algorithm"), ({"algorithm": "grpo", "group_size": 1}, "group_size"),
    ({"scale_rewards": "max"}, "scale_rewards"), ({"loss_type": "sum"}, "loss_type"),
    ({"multi_objective_aggregation": "gdpo"}, "multi_objective_aggregation"),
    ({"kl_in": "both"}, "kl_in"), ({"algorithm": "ppo", "kl_in": "loss"}, "kl_in"),
    ({"algorithm": "grpo", "batch_size": 2, "group_size": 2, "mini_batch_size": 5},
     "mini_batch_size"),
])
def test_config_rejects_bad_group_settings(bad, fld):
    with pytest.raises(MormError) as e:
        PPOConfig(**bad)
    assert e.value.field == fld


def test_config_defaults_per_algorithm():
    assert PPOConfig().kl_in == "reward" and PPOConfig(algorithm="rloo").kl_in == "reward"
    grpo = PPOConfig(algorithm="grpo", batch_size=2, mini_batch_size=8)  # 2 prompts x 4
    assert grpo.kl_in == "loss" and grpo.responses_per_step == 8
    assert PPOConfig.from_dict(grpo.to_dict()) == grpo
    assert PPOConfig(algorithm="rloo", kl_in="loss").kl_in == "loss"


# -- training --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    from tests.test_policy import _save_tiny

    return _save_tiny(tmp_path_factory.mktemp("tiny-rl-policy"))


def _cfg(policy: str, algorithm: str, **kw) -> PPOConfig:
    base = dict(algorithm=algorithm, batch_size=4, group_size=4, mini_batch_size=8)
    return _ppo_cfg(policy, **{**base, **kw})


def _train(cfg: PPOConfig, run_dir, **kw) -> dict:
    from morm_explorer.policy.ppo import train_ppo

    return train_ppo(cfg, run_dir, reward_fn=word_reward, objectives=OBJECTIVES, **kw)


@pytest.mark.parametrize("algorithm, extra", [
    ("grpo", {}), ("rloo", {}),
    ("grpo", {"multi_objective_aggregation": "normalize_then_sum", "kl_in": "reward"}),
])
def test_group_methods_raise_the_rule_reward(tiny_dir, tmp_path, algorithm, extra):
    res = _train(_cfg(tiny_dir, algorithm, **extra), tmp_path / "run")
    a = _curve(res["history"], "objective/scores/A")
    assert len(a) == 30
    assert a[-5:].mean() > a[:5].mean() + 0.5, a  # from ~0.03 ("yes" is 1 word in 28)
    final = res["final"]
    assert {"rewards/A/mean", "rewards/A/std", "rewards/B/mean", "rewards/B/std",
            "advantages/mean", "advantages/std", "frac_reward_zero_std", "objective/kl",
            "loss/policy_avg", "policy/clipfrac_avg"} <= set(final)
    assert "loss/value_avg" not in final  # no value head
    assert final["rewards/A/mean"] == final["objective/scores/A"]
    assert final["val/response_length"] > 0


def test_group_methods_with_schedule_constraints_and_chebyshev(tiny_dir, tmp_path):
    schedule = [{"step": 0, "weights": {"A": 1.0}}, {"step": 3, "weights": {"B": 1.0}}]
    for algorithm, aggregation in (("rloo", "normalize_then_sum"),
                                   ("grpo", "sum_then_normalize")):
        cfg = _cfg(tiny_dir, algorithm, steps=4, batch_size=2, group_size=3, mini_batch_size=6,
                   weights={}, weight_schedule=schedule, standardize=False,
                   scalarizer="chebyshev", constraints=[{"objective": "A", "threshold": 0.9}],
                   lagrange_lr=0.5, missing_eos_penalty=1.0,
                   multi_objective_aggregation=aggregation)
        h = _train(cfg, tmp_path / algorithm)["history"]
        assert _curve(h, "scalarization/weight/A") == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
        lam = _curve(h, "lagrange/A")
        assert lam[0] > 0 and (np.diff(lam) > 0).all()
        assert all(abs(m["advantages/mean"]) < 1e-5 for m in h)  # z-scored over the rollout


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_resume_after_a_crash_repeats_the_uninterrupted_run(tiny_dir, tmp_path, algorithm):
    from safetensors.torch import load_file

    from morm_explorer.policy.ppo import Hooks

    cfg = _cfg(tiny_dir, algorithm, steps=4, batch_size=2, group_size=3, mini_batch_size=4,
               lora=True, lr=1e-2, checkpoint_every=2, ppo_epochs=2)
    whole = _train(cfg, tmp_path / "whole")

    def crash(step, values):
        if step == 2:
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError, match="worker killed"):
        _train(cfg, tmp_path / "crashed", hooks=Hooks(metrics=crash))
    assert not (tmp_path / "crashed" / "checkpoint" / "value_head.safetensors").exists()
    resumed = _train(cfg, tmp_path / "crashed")
    assert resumed["resumed_from"] == 2
    assert _comparable(resumed["history"]) == _comparable(whole["history"])  # exactly
    a = load_file(str(tmp_path / "whole" / "policy" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "policy" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(MormError, match="other settings") as e:  # another algorithm: refused
        _train(PPOConfig(**{**cfg.to_dict(), "algorithm": "grpo" if algorithm == "rloo"
                            else "rloo", "kl_in": "reward"}), tmp_path / "crashed")
    assert e.value.field == "algorithm"
