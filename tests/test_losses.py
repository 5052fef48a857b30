import math

import torch

from gta.losses import group_advantages, grpo_loss, k3_kl, sft_loss


def _ratios_to_logp(ratios):
    return torch.log(torch.tensor(ratios, dtype=torch.float64)).requires_grad_(True)


def test_grpo_loss_clips_on_both_sides_and_averages_per_sequence():
    # old_logp = 0 so ratio = exp(logp). eps = 0.2 -> clip range [0.8, 1.2].
    logp = _ratios_to_logp([[1.5, 0.7, 1.0], [1.5, 0.7, 9.0]])
    old = torch.zeros(2, 3, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64)  # last token of row 1 masked (e.g. guess)
    lengths = torch.tensor([3.0, 3.0], dtype=torch.float64)  # |o_i| counts every completion token
    loss, st = grpo_loss(logp, old, None, adv, mask, lengths, epsilon=0.2, beta=0.0, num_sequences=2)
    # row 0 (A=+1): min(1.5, 1.2)=1.2 (clipped high), min(0.7, 0.8)=0.7, 1.0 -> 2.9; per-seq -2.9/3
    # row 1 (A=-1): min(-1.5, -1.2)=-1.5, min(-0.7, -0.8)=-0.8 (clipped low), masked -> -2.3; per-seq +2.3/3
    # loss = (-2.9/3 + 2.3/3) / 2 = -0.1
    assert math.isclose(loss.item(), -0.1, abs_tol=1e-12)
    assert float(st["clipped_sum"]) == 2 and float(st["tokens"]) == 5
    loss.backward()
    g = logp.grad
    # clipped tokens and the masked token get no gradient; d(-r A / 3 / 2)/dlogp = -r A / 6 elsewhere
    assert g[0, 0] == 0 and g[1, 1] == 0 and g[1, 2] == 0
    assert math.isclose(float(g[0, 1]), -0.7 / 6, rel_tol=1e-12)
    assert math.isclose(float(g[0, 2]), -1.0 / 6, rel_tol=1e-12)
    assert math.isclose(float(g[1, 0]), 1.5 / 6, rel_tol=1e-12)


def test_grpo_loss_k3_kl_term():
    # ratio 1, advantage 0: only beta * KL remains. ref_logp - logp = ln 2 -> k3 = 2 - ln 2 - 1.
    logp = torch.full((1, 3), -1.0, dtype=torch.float64, requires_grad=True)
    ref = logp.detach() + math.log(2)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    loss, st = grpo_loss(logp, logp.detach(), ref, torch.zeros(1, dtype=torch.float64), mask,
                         torch.tensor([3.0], dtype=torch.float64), epsilon=0.2, beta=0.1, num_sequences=4)
    k3 = 1 - math.log(2)
    assert math.isclose(loss.item(), 0.1 * 2 * k3 / 3 / 4, rel_tol=1e-12)
    assert math.isclose(float(st["kl_sum"]), 2 * k3, rel_tol=1e-12)
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp) = -1
    assert torch.allclose(logp.grad, torch.tensor([[-0.1 / 12, -0.1 / 12, 0.0]], dtype=torch.float64))


def test_k3_is_zero_at_equal_policies_and_positive_elsewhere():
    x = torch.tensor([-1.0, -2.0])
    assert torch.equal(k3_kl(x, x), torch.zeros(2))
    assert (k3_kl(x, x + torch.tensor([0.3, -0.3])) > 0).all()


def test_group_advantages_normalise_within_groups_and_equal_group_is_zero():
    rewards = torch.tensor([[2.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    adv = group_advantages(rewards, eps=1e-4)
    std = math.sqrt(2 / 3)  # sample std of (2, 0, 1, 1)
    expected = torch.tensor([[1 / (std + 1e-4), -1 / (std + 1e-4), 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-7)
    assert torch.equal(adv[1], torch.zeros(4))


def test_sft_loss_sum_reduction_sums_span_tokens_and_averages_over_examples():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert math.isclose(float(sft_loss(logp, mask, normaliser=2)), (3 + 0.5) / 2, rel_tol=1e-6)  # sum: / examples
    assert math.isclose(float(sft_loss(logp, mask, normaliser=3)), (3 + 0.5) / 3, rel_tol=1e-6)  # mean: / target tokens


def test_grpo_loss_importance_weight_scales_the_policy_term_not_the_kl():
    # ratio 1 (logp = old), A = +1, two tokens weighted 0.5 and 2 (min(pi_old / pi_vllm, C) per token);
    # pi_ref = 2 pi_theta on both tokens: k3 = 2 - ln 2 - 1 each, beta 0.1, unweighted.
    logp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 2, dtype=torch.float64)
    ref = torch.full((1, 2), math.log(2), dtype=torch.float64)
    w = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
    args = (torch.ones(1, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64), torch.tensor([2.0]))
    loss, _ = grpo_loss(logp, old, ref, *args, epsilon=0.2, beta=0.1, num_sequences=1, is_weight=w)
    k3 = 2 - math.log(2) - 1
    assert math.isclose(loss.item(), (-(0.5 + 2.0) + 2 * 0.1 * k3) / 2, rel_tol=1e-12)
    loss.backward()
    # d/dlogp of -w r A / 2 is -w / 2 at r = 1; the KL's own gradient, beta (1 - pi_ref/pi) / 2 = 0.1 (1 - 2) / 2
    assert torch.allclose(logp.grad, torch.tensor([[-0.25 - 0.05, -1.0 - 0.05]], dtype=torch.float64))
    unweighted, _ = grpo_loss(logp.detach(), old, ref, *args, epsilon=0.2, beta=0.1, num_sequences=1)
    assert math.isclose(unweighted.item(), (-2.0 + 2 * 0.1 * k3) / 2, rel_tol=1e-12)
