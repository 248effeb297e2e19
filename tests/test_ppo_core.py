"""The math of PPO (morm_explorer.policy.ppo_core): hand-computed cases, vectorised code
against plain loops, KL bookkeeping against sequence log-probabilities of two tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morm_explorer.policy import ppo_core as core


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def test_gae_by_hand():
    # gamma 0.9, lam 0.8: delta_2 = 2 - 1.5 = 0.5; delta_1 = 0.9 * 1.5 - 1 = 0.35;
    # delta_0 = 1 + 0.9 * 1 - 0.5 = 1.4. A_2 = 0.5, A_1 = 0.35 + 0.72 * 0.5 = 0.71,
    # A_0 = 1.4 + 0.72 * 0.71 = 1.9112.
    rewards, values = t([[1.0, 0.0, 2.0]]), t([[0.5, 1.0, 1.5]])
    adv, ret = core.gae(rewards, values, t([[1, 1, 1]]), gamma=0.9, lam=0.8)
    assert torch.allclose(adv, t([[1.9112, 0.71, 0.5]]))
    assert torch.allclose(ret, t([[2.4112, 1.71, 2.0]]))
    # The last token masked: its reward and value are gone, V after token 1 is 0.
    # delta_1 = -1, A_1 = -1; A_0 = 1.4 + 0.72 * -1 = 0.68.
    adv, ret = core.gae(rewards, values, t([[1, 1, 0]]), gamma=0.9, lam=0.8)
    assert torch.allclose(adv, t([[0.68, -1.0, 0.0]]))
    assert torch.allclose(ret, t([[1.18, 0.0, 0.0]]))


def _gae_loop(rewards, values, lengths, gamma, lam):
    """Plain Python: per row, per objective, A_t = sum_l (gamma lam)^l delta_{t+l}."""
    B, T, K = len(rewards), len(rewards[0]), len(rewards[0][0])
    adv = [[[0.0] * K for _ in range(T)] for _ in range(B)]
    for b in range(B):
        L = lengths[b]
        for k in range(K):
            deltas = [rewards[b][i][k] + gamma * (values[b][i + 1][k] if i + 1 < L else 0.0)
                      - values[b][i][k] for i in range(L)]
            for i in range(L):
                adv[b][i][k] = sum((gamma * lam) ** j * deltas[i + j] for j in range(L - i))
    return adv


@pytest.mark.parametrize("K", [None, 3])
def test_gae_matches_a_plain_loop(K):
    gen = torch.Generator().manual_seed(0)
    B, T = 5, 7
    shape = (B, T) if K is None else (B, T, K)
    rewards = torch.randn(shape, generator=gen, dtype=torch.float64)
    values = torch.randn(shape, generator=gen, dtype=torch.float64)
    lengths = [7, 1, 4, 6, 3]
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).double()
    adv, ret = core.gae(rewards, values, mask, gamma=0.97, lam=0.9)
    r3 = rewards if K else rewards[..., None]
    v3 = values if K else values[..., None]
    expected = t(_gae_loop(r3.tolist(), v3.tolist(), lengths, 0.97, 0.9))
    expected = expected if K else expected[..., 0]
    assert torch.allclose(adv, expected)
    m = mask if K is None else mask[..., None]
    assert torch.allclose(ret, (expected + values) * m)


def test_masked_stats_and_whiten():
    x, mask = t([[2.0, 4.0, 6.0, 100.0]]), t([[1, 1, 1, 0]])
    assert core.masked_mean(x, mask).item() == pytest.approx(4.0)
    assert core.masked_var(x, mask).item() == pytest.approx(4.0)  # unbiased: (4+0+4)/2
    assert core.masked_var(x, mask, unbiased=False).item() == pytest.approx(8 / 3)
    white = core.masked_whiten(x, mask)
    assert torch.allclose(white[0, :3], t([-1.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(core.masked_whiten(x, mask, shift_mean=False)[0, :3],
                          t([3.0, 4.0, 5.0]), atol=1e-6)
    x3 = t([[[1.0, 10.0], [3.0, 30.0], [99.0, 99.0]]])  # (1, 3, 2), mask (1, 3, 1)
    assert core.masked_mean(x3, t([[1, 1, 0]])[..., None]).item() == pytest.approx(11.0)
    assert torch.allclose(core.masked_mean(x3, t([[1, 1, 0]])[..., None], dim=1),
                          t([[2.0, 20.0]]))


def test_policy_loss_by_hand():
    # tokens (ratio, advantage): (1.5, 1) clipped to 1.2 -> -1.2, clip counts; (0.5, 1) ->
    # max(-0.5, -0.8) = -0.5; (1.5, -1) -> max(1.5, 1.2) = 1.5; the 4th is masked.
    ratio, adv = t([[1.5, 0.5, 1.5, 3.0]]), t([[1.0, 1.0, -1.0, 5.0]])
    mask = t([[1, 1, 1, 0]])
    loss, clipfrac, approxkl = core.policy_loss(ratio.log(), torch.zeros_like(ratio), adv,
                                                mask, cliprange=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.5) / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)
    logs = [math.log(1.5), math.log(0.5), math.log(1.5)]
    assert approxkl.item() == pytest.approx(0.5 * sum(v * v for v in logs) / 3)


def test_value_loss_by_hand():
    # token 1: V - V_old = 1 is clipped to 0.2: max((1-2)^2, (0.2-2)^2) = 3.24, clip counts;
    # token 2: within the range, 9 either way; the 3rd is masked.
    values, old, returns = t([[1.0, 3.0, 50.0]]), t([[0.0, 2.9, 0.0]]), t([[2.0, 0.0, 0.0]])
    loss, clipfrac = core.value_loss(values, old, returns, t([[1, 1, 0]]), 0.2)
    assert loss.item() == pytest.approx(0.5 * (3.24 + 9.0) / 2)
    assert clipfrac.item() == pytest.approx(0.5)
    loss_k, _ = core.value_loss(values[..., None].repeat(1, 1, 2), old[..., None].repeat(1, 1, 2),
                                returns[..., None].repeat(1, 1, 2), t([[1, 1, 0]]), 0.2)
    assert loss_k.item() == pytest.approx(loss.item())


def test_logprobs_and_entropy_against_torch():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 11, generator=gen)
    labels = torch.randint(0, 11, (3, 5), generator=gen)
    direct = torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]
    assert torch.allclose(core.logprobs_from_logits(logits, labels), direct)
    # the same gradient as the full log-softmax, and float32 results from bfloat16 logits
    x = logits.clone().requires_grad_(True)
    core.logprobs_from_logits(x, labels).sum().backward()
    y = logits.clone().requires_grad_(True)
    torch.log_softmax(y, -1).gather(-1, labels[..., None]).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-6)
    half = logits.bfloat16()
    lp = core.logprobs_from_logits(half, labels)
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, torch.log_softmax(half.float(), -1).gather(
        -1, labels[..., None])[..., 0], atol=1e-6)
    ent = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(core.entropy_from_logits(logits), ent, atol=1e-6)


def _tiny_lm(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=13, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def test_kl_sums_to_the_sequence_log_ratio():
    policy, ref = _tiny_lm(0), _tiny_lm(1)
    ids = torch.tensor([[3, 5, 7, 2, 9, 4, 1, 8]])
    P = 3  # prompt tokens; the response is ids[:, 3:]

    def seq_logprob(model):  # log p(response | prompt), one token at a time, no shared code
        total = 0.0
        for i in range(P, ids.shape[1]):
            logits = model(ids[:, :i]).logits[0, -1]
            total += torch.log_softmax(logits, -1)[ids[0, i]].item()
        return total

    with torch.no_grad():
        lp = core.logprobs_from_logits(policy(ids).logits[:, P - 1:-1], ids[:, P:])
        ref_lp = core.logprobs_from_logits(ref(ids).logits[:, P - 1:-1], ids[:, P:])
    k1, k3 = core.kl_per_token(lp, ref_lp)
    assert k1.sum().item() == pytest.approx(seq_logprob(policy) - seq_logprob(ref), abs=1e-4)
    assert (k3 >= 0).all()
    r = (ref_lp - lp).exp()
    assert torch.allclose(k3, r - 1 - r.log(), atol=1e-6)


def test_per_token_rewards():
    kl, mask = t([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), t([[1, 1, 0], [1, 1, 1]])
    rewards = core.per_token_rewards(t([1.0, 2.0]), kl, 0.5, mask)
    assert torch.allclose(rewards, t([[-0.05, -0.1 + 1.0, 0.0], [-0.2, -0.25, -0.3 + 2.0]]))
    rk = core.per_token_rewards(t([[1.0, 10.0], [2.0, 20.0]]), kl, 0.5, mask)  # (B, T, K)
    assert rk.shape == (2, 3, 2)
    assert torch.allclose(rk[..., 0], rewards)
    assert torch.allclose(rk[0, :, 1], t([-0.05, -0.1 + 10.0, 0.0]))


def test_kl_controllers():
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(12.0, n_steps=100)  # error clipped to +0.2: * (1 + 0.2 * 100 / 10000)
    assert ctl.value == pytest.approx(0.1 * 1.002)
    ctl.update(6.6, n_steps=1000)  # error 0.1: * 1.01
    assert ctl.value == pytest.approx(0.1 * 1.002 * 1.01)
    ctl.update(0.0, n_steps=10000)  # error clipped to -0.2: * 0.8
    assert ctl.value == pytest.approx(0.1 * 1.002 * 1.01 * 0.8)
    restored = core.AdaptiveKLController(1.0, 6.0, 10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value
    fixed = core.FixedKLController(0.05)
    fixed.update(100.0, 8)
    assert fixed.value == 0.05


def test_lagrange_dual_ascent():
    lag = core.LagrangeMultipliers(index=[1], thresholds=[0.5], lr=0.1)
    lag.update([0.0])  # violated by 0.5: lambda rises by 0.05
    assert lag.values == pytest.approx([0.05])
    lag.update([0.0])
    assert lag.values == pytest.approx([0.1])
    lag.update([2.0])  # satisfied by far: 0.1 - 0.15 clips at 0
    assert lag.values == [0.0]
    lag.values = [0.5]
    scores = t([[1.0, 3.0]])
    # R' = (R_w + 0.5 * r_1) / 1.5 with R_w = 1
    assert lag.penalized(t([1.0]), scores).item() == pytest.approx((1.0 + 1.5) / 1.5)
    assert torch.allclose(lag.coefficients(t([[0.5, 0.5]])), t([[1 / 3, 2 / 3]]))
    assert lag.coefficients(t([[0.2, 0.8]])).sum().item() == pytest.approx(1.0)


def test_scalarization_coefficients():
    scores, w = t([[1.0, -2.0, 0.0], [3.0, 0.0, -5.0]]), t([2.0, 1.0, 1.0])
    assert torch.allclose(core.scalarization_coefficients(scores, w, "weighted_sum"),
                          t([[0.5, 0.25, 0.25]] * 2))
    assert core.scalarization_coefficients(scores, w, "min").argmax(1).tolist() == [1, 2]
    # objective 2 weighs 0: it never binds, even though it is the worst on row 1
    zero = t([1.0, 1.0, 0.0])
    assert core.scalarization_coefficients(scores, zero, "min").argmax(1).tolist() == [1, 1]
    # chebyshev: ideal (3, 0, 0); weighted gaps row 0: (4, 2, 0), row 1: (0, 0, 5)
    cheb = core.scalarization_coefficients(scores, w, "chebyshev")
    assert cheb.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_running_moments_match_numpy():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 2)) for n in (5, 1, 8)]
    rm = core.RunningMoments(2)
    for b in batches:
        rm.update(torch.tensor(b))
    allx = np.concatenate(batches)
    assert rm.mean == pytest.approx(allx.mean(0).tolist())
    assert rm.std == pytest.approx(allx.std(0).tolist())
    assert rm.count == 14


def test_whiten_is_invariant_to_padding_values():
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(6)[None] < torch.tensor([6, 2, 3, 5])[:, None]).double()
    other = x.clone()
    other[mask == 0] = 1e6
    assert torch.allclose(core.masked_whiten(x, mask) * mask,
                          core.masked_whiten(other, mask) * mask)
