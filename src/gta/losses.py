"""Losses as pure functions of tensors (paper eqs. 1, 5-8).

Shapes: N = B*G sequences in a micro-batch (B prompts, G samples each), T completion tokens.
Every loss is divided by the number of sequences (or prompts) in the whole *optimizer step*, not the
micro-batch, so summing micro-batch gradients gives exactly the gradient of the step's loss.
"""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (R_i - mean(R_group)) / (std(R_group) + eps), rewards (B, G) -> (B, G).

    std is the sample (unbiased) standard deviation, as in TRL; a group of equal rewards gives 0.
    """
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + eps)


KL_LOG_RATIO_CLAMP = 10.0


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref) (paper eqs. 6-7; Schulman, "Approximating KL
    divergence", 2020): pi_ref/pi_theta - log(pi_ref/pi_theta) - 1 >= 0. The log-ratio is clamped to [-10, 10]
    before exp (as verl does): one token the policy has made far less likely than the reference would otherwise
    give exp(|d|), a term (and gradient) that swamps the step."""
    d = (ref_logp - logp).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
    return torch.exp(d) - d - 1


def grpo_loss(
    logp: torch.Tensor,  # (N, T) log pi_theta of the sampled tokens
    old_logp: torch.Tensor,  # (N, T) log pi_theta_old (behaviour policy), no grad
    ref_logp: torch.Tensor | None,  # (N, T) log pi_ref, no grad; None when beta = 0
    advantages: torch.Tensor,  # (N,) one advantage per sequence
    loss_mask: torch.Tensor,  # (N, T) 1 on tokens trained by RL (GTA: guess span excluded), 0 elsewhere
    lengths: torch.Tensor,  # (N,) |o_i|: completion length in tokens, the per-sequence normaliser of eq. 5
    epsilon: float,
    beta: float,
    num_sequences: int,  # sequences in the whole optimizer step (B*G over all micro-batches)
    is_weight: torch.Tensor | None = None,  # (N, T) min(pi_old / pi_sampler, C), no grad; None: no correction
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_RL = -J(theta), eq. 5: per token min(r A, clip(r, 1-eps, 1+eps) A) - beta KL, summed over the
    trained tokens of each sequence and divided by |o_i|, then averaged over the sequences of the step.
    `is_weight` multiplies each token's policy-gradient term (not the KL), as TRL's truncated importance sampling
    does when another engine sampled the rollouts.

    Returns the loss (this micro-batch's share) and sums for logging (kl, clipped tokens, tokens).
    """
    ratio = torch.exp(logp - old_logp)  # (N, T)
    adv = advantages[:, None]  # (N, 1)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    per_token = -surrogate if is_weight is None else -surrogate * is_weight
    kl = torch.zeros_like(logp)
    if ref_logp is not None and beta != 0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    per_sequence = (per_token * loss_mask).sum(dim=1) / lengths.clamp(min=1)  # (N,)
    loss = per_sequence.sum() / num_sequences
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
    stats = {
        "kl_sum": (kl.detach() * loss_mask).sum(),
        "kl_max": (kl.detach() * loss_mask).max() if kl.numel() else kl.new_zeros(()),
        "clipped_sum": (clipped.float() * loss_mask).sum(),
        "tokens": loss_mask.sum(),
    }
    return loss, stats


def sft_loss(logp: torch.Tensor, target_mask: torch.Tensor, normaliser: int) -> torch.Tensor:
    """Cross-entropy of eq. 1 on the target span, -sum_{t in span} log P(y_t | y_<t, x), divided by `normaliser`:
    the optimizer step's number of target tokens (reduction "mean": Hugging Face cross-entropy with -100 masking,
    which the paper uses) or of examples (reduction "sum": each example's summed NLL, averaged over examples).
    logp, target_mask: (B, T); tokens outside the span are masked."""
    return -(logp * target_mask).sum() / normaliser
