"""Gradient-conflict rule (paper section 3.3, eqs. 10-11) on lists of per-parameter gradients.

The inputs are the step's gradients g_SFT and g_RL (summed over micro-batches and, with several processes,
already summed across them), so every process computes the same dot product and decision. With several processes
(FSDP2) each process holds only its shards of the gradients: `sum_across` then adds the partial dot products and
squared norms of all processes before the decision.
"""
from __future__ import annotations

import torch

MODES = ("drop", "project", "none")


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """sum_k a_k . b_k, each tensor's dot by BLAS (no parameter-sized temporaries, unlike
    (x.double() * y.double()).sum(), which dominated the conflict check in a profile), the per-tensor results
    summed in float64."""
    return sum(torch.dot(x.reshape(-1), y.reshape(-1)).double() for x, y in zip(a, b))


def combine(
    g_sft: list[torch.Tensor], g_rl: list[torch.Tensor], lambda1: float, lambda2: float, mode: str = "drop",
    sum_across=None, rl_signal: bool = True,
) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Return the gradient to apply (written into g_rl's tensors) and {cosine, sft_dropped, projected, norm_sft,
    norm_rl, sft_scale, rl_scale}, the norms being those of g_SFT and g_RL before the rule and the result being
    sft_scale g_SFT + rl_scale g_RL.

    drop (paper eq. 11): lambda1 g_SFT + lambda2 g_RL if g_SFT . g_RL > 0, else lambda2 g_RL alone.
    project (PCGrad, Yu et al. 2020): if the dot is negative, remove from g_SFT its component along g_RL,
        then apply lambda1 g_SFT' + lambda2 g_RL.
    none: always lambda1 g_SFT + lambda2 g_RL.

    rl_signal=False: no group of the step had rewards that differ, so every advantage is 0 and g_RL is only the
    KL term's gradient (or float noise). It has no RL direction to conflict with: the step applies
    lambda1 g_SFT + lambda2 g_RL, logged as not dropped. Read literally, eq. 11 would let the sign of that
    noise veto SFT, and GTA could not learn in exactly the early phase the guess is meant to speed up. The
    decision comes from the rewards, not from g_RL being exactly 0, which float rounding decides.
    """
    if mode not in MODES:
        raise ValueError(f"unknown conflict mode {mode!r}; choose one of {MODES}")
    device = g_rl[0].device if g_rl else None
    sums = torch.stack([torch.as_tensor(_dot(a, b), dtype=torch.float64, device=device)
                        for a, b in ((g_sft, g_rl), (g_sft, g_sft), (g_rl, g_rl))])
    if sum_across is not None:
        sums = sum_across(sums)
    dot, n_sft, n_rl = sums[0], sums[1].sqrt(), sums[2].sqrt()
    cosine = float(dot / (n_sft * n_rl)) if n_sft > 0 and n_rl > 0 else 0.0
    dropped = projected = False
    sft_scale, rl_scale = lambda1, lambda2
    # The result is built in place in g_rl's tensors (no 135M-parameter temporaries).
    if mode == "drop" and rl_signal and dot <= 0 and n_rl > 0:
        dropped, sft_scale = True, 0.0
        torch._foreach_mul_(g_rl, lambda2)
    elif mode == "project" and rl_signal and dot < 0 and n_rl > 0:
        projected = True
        coef = float(dot / (n_rl * n_rl))
        # lambda1 (g_sft - coef g_rl) + lambda2 g_rl = lambda1 g_sft + (lambda2 - lambda1 coef) g_rl
        rl_scale = lambda2 - lambda1 * coef
        torch._foreach_mul_(g_rl, rl_scale)
        torch._foreach_add_(g_rl, g_sft, alpha=lambda1)
    else:
        torch._foreach_mul_(g_rl, lambda2)
        torch._foreach_add_(g_rl, g_sft, alpha=lambda1)
    return g_rl, {"cosine": cosine, "sft_dropped": float(dropped), "projected": float(projected),
                  "norm_sft": float(n_sft), "norm_rl": float(n_rl), "rl_signal": rl_signal,
                  "sft_scale": sft_scale, "rl_scale": rl_scale}
