import math

import torch

from gta.conflict import combine


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_no_conflict_applies_weighted_sum():
    out, info = combine([t(1, 0)], [t(1, 1)], lambda1=0.5, lambda2=2.0, mode="drop")
    assert torch.equal(out[0], t(2.5, 2.0))
    assert info["sft_dropped"] == 0.0 and math.isclose(info["cosine"], 1 / math.sqrt(2))


def test_conflict_drops_sft_and_keeps_weighted_rl():
    out, info = combine([t(-1, 0), t(0.5)], [t(1, 1), t(1.0)], lambda1=0.5, lambda2=2.0, mode="drop")
    # dot over all tensors: -1 + 0.5 = -0.5 <= 0
    assert torch.equal(out[0], t(2, 2)) and torch.equal(out[1], t(2.0))
    assert info["sft_dropped"] == 1.0 and info["cosine"] < 0


def test_orthogonal_gradients_count_as_conflict():
    out, info = combine([t(1, 0)], [t(0, 1)], 1.0, 1.0, "drop")
    assert info["sft_dropped"] == 1.0 and torch.equal(out[0], t(0, 1))


def test_zero_rl_gradient_keeps_sft():
    out, info = combine([t(1, 2)], [t(0, 0)], 0.5, 1.0, "drop")
    assert info["sft_dropped"] == 0.0 and torch.equal(out[0], t(0.5, 1.0))


def test_project_removes_sft_component_along_rl():
    out, info = combine([t(-1, 0)], [t(1, 1)], lambda1=0.5, lambda2=2.0, mode="project")
    # g_sft' = g_sft - (dot / |g_rl|^2) g_rl = (-1, 0) + 0.5 (1, 1) = (-0.5, 0.5), orthogonal to g_rl
    assert torch.allclose(out[0], 0.5 * t(-0.5, 0.5) + 2.0 * t(1, 1))
    assert info["projected"] == 1.0 and info["sft_dropped"] == 0.0
    # no conflict: project leaves the sum unchanged
    out, info = combine([t(1, 0)], [t(1, 1)], 1.0, 1.0, "project")
    assert torch.equal(out[0], t(2, 1)) and info["projected"] == 0.0


def test_none_always_sums():
    out, _ = combine([t(-1, 0)], [t(1, 1)], 1.0, 1.0, "none")
    assert torch.equal(out[0], t(0, 1))
