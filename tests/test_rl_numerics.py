"""Numerics of the RL loss: fp32 logits for every log-prob pass, the clamped k3 KL, the sampler-vs-trainer gap, and
the cosine between the applied AdamW update and g_RL."""
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from gta import losses, rollout
from gta import trainer as trainer_module
from gta.config import TrainConfig
from gta.models import FP32Head, fp32_head
from gta.trainer import Trainer


def cfg(tmp_path, tiny_path, toy_data, **kw):
    base = dict(method="gta", model=tiny_path, dataset="toy", data_dir=str(toy_data), train_limit=8, max_steps=1,
                batch_size=2, micro_batch_size=1, num_generations=3, num_iterations=1, max_completion_length=10,
                max_prompt_length=160, learning_rate=1e-3, bf16=False, output=str(tmp_path / "run"), save_every=100)
    base.update(kw)
    return TrainConfig(**base)


def varied_reward(text, gold, template, **kw):
    r = float(len(text) % 3)
    return {"total": r, "format": 0.0, "accuracy": 0.0, "guess": 0.0}


def test_the_lm_head_computes_fp32_logits_under_bf16_autocast(tiny_path, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    batch = rollout.encode_prompts(tokenizer, ["Classify: the match ended 2-1."], "cpu")
    with torch.no_grad(), rollout.autocast(torch.device("cpu"), True):
        assert model(**vars(batch)).logits.dtype == torch.bfloat16  # autocast alone: a bf16 head
        fp32_head(model)
        out = model(**vars(batch), output_hidden_states=True)
    assert out.logits.dtype == torch.float32
    hidden = out.hidden_states[-1].float()  # after the final norm
    expected = torch.nn.functional.linear(hidden, model.lm_head.weight.float())
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert set(model.state_dict()) == set(AutoModelForCausalLM.from_pretrained(tiny_path).state_dict())


def test_the_policy_gets_the_fp32_head_and_the_bf16_sampler_keeps_its_own(tmp_path, tiny_path, toy_data, monkeypatch):
    monkeypatch.setattr(trainer_module, "bf16_supported", lambda device: True)  # the bf16 path on any CPU
    t = Trainer(cfg(tmp_path, tiny_path, toy_data, bf16=True), progress=False, reward_fn=varied_reward)
    assert type(t.model.get_output_embeddings()) is FP32Head
    assert t.sampler is not t.model and type(t.sampler.get_output_embeddings()) is torch.nn.Linear
    m = t.rl_step(t.plan.batch_indices(0), 0)
    assert m["rollout/logprob_gap"] > 0  # a bf16 sampler against fp32 log-probs: measured, not zero


def test_k3_kl_clamps_the_log_ratio():
    logp = torch.tensor([0.0, -60.0, -1.0], requires_grad=True)
    ref = torch.tensor([50.0, 0.0, -1.5])
    kl = losses.k3_kl(logp, ref)
    assert kl[0].item() == pytest.approx(math.exp(10) - 10 - 1, rel=1e-6)  # d = 50 clamped to 10
    assert kl[1].item() == pytest.approx(math.exp(10) - 10 - 1, rel=1e-6)  # d = 60 clamped to 10
    assert kl[2].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1, rel=1e-6)  # inside the range: unchanged
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0] == 0 and logp.grad[2] != 0
    _, st = losses.grpo_loss(logp.detach()[None], logp.detach()[None], ref[None], torch.ones(1),
                             torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([3.0]), 0.2, 0.1, 1)
    assert st["kl_max"].item() == pytest.approx(math.exp(10) - 11, rel=1e-6)  # the masked token is not counted


def test_sampler_logprobs_are_those_of_the_sampled_tokens(tiny_path, tokenizer, tmp_path, toy_data):
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    batch = rollout.encode_prompts(tokenizer, ["Classify: the match ended 2-1.", "Classify: shares fell."], "cpu")
    ids, mask, lps = rollout.generate(model, batch, 3, 8, [tokenizer.eos_token_id], tokenizer.pad_token_id, 0.7,
                                      torch.Generator().manual_seed(0), logprobs=True)
    expected, = rollout.shared_prefix_logprobs(model, batch, [(ids, mask, 3)], temperature=0.7)
    assert torch.allclose(lps, expected, atol=1e-4)
    # a float32 run samples from the policy itself: the gap is float noise
    t = Trainer(cfg(tmp_path, tiny_path, toy_data), progress=False, reward_fn=varied_reward)
    assert t.rl_step(t.plan.batch_indices(0), 0)["rollout/logprob_gap"] < 1e-4


@pytest.mark.parametrize("conflict,wd,clip", [("drop", 0.0, 0.0), ("project", 0.1, 1e-3), ("none", 0.0, 1e-3)])
def test_update_cosine_rl_is_the_cosine_of_the_applied_update_and_g_rl(tmp_path, tiny_path, toy_data, conflict, wd,
                                                                        clip):
    t = Trainer(cfg(tmp_path, tiny_path, toy_data, conflict=conflict, weight_decay=wd, max_grad_norm=clip,
                    lambda1=0.7), progress=False, reward_fn=varied_reward)
    g_rl, real = [], t.engine.combine

    def spy(g_sft, grads, *args):
        g_rl.append([g.clone() for g in grads])
        return real(g_sft, grads, *args)

    t.engine.combine = spy
    before = [p.detach().clone() for p in t.params]
    m = t.rl_step(t.plan.batch_indices(0), 0)
    step = torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, t.params)]).double()  # -(update)
    g = torch.cat([x.reshape(-1) for x in g_rl[0]]).double()
    expected = float(step @ g / (step.norm() * g.norm()))
    assert m["conflict/update_cosine_rl"] == pytest.approx(expected, abs=2e-4)
    assert abs(expected) > 1e-3  # a real figure, not 0
