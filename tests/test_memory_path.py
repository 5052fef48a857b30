"""What a run holds in memory: LoRA's base in bf16 without a sampler copy, only the gradients a step needs,
gradient checkpointing (same numbers as without), and log-probs that never hold (rows, V) logits for the backward."""
import json
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM

from gta import models, rollout
from gta import trainer as trainer_module
from gta.config import ConfigError, TrainConfig
from gta.engine import Engine
from gta.models import checkpoint_layers, fp32_head
from gta.trainer import Trainer


def cfg(tmp_path, tiny_path, toy_data, **kw):
    base = dict(method="gta", model=tiny_path, dataset="toy", data_dir=str(toy_data), train_limit=8, max_steps=2,
                batch_size=2, micro_batch_size=1, num_generations=3, num_iterations=2, max_completion_length=10,
                max_prompt_length=160, learning_rate=1e-3, bf16=False, output=str(tmp_path / "run"), save_every=100)
    base.update(kw)
    return TrainConfig(**base)


def varied_reward(text, gold, template, **kw):
    r = float(len(text) % 3)
    return {"total": r, "format": 0.0, "accuracy": 0.0, "guess": 0.0}


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def test_lora_with_a_bf16_base_holds_it_in_bf16_and_samples_from_the_policy(tmp_path, tiny_path, toy_data):
    t = Trainer(cfg(tmp_path, tiny_path, toy_data, lora_r=4, dtype="bfloat16"), progress=False,
                reward_fn=varied_reward)
    frozen = [p for p in t.model.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert t.params and all(p.dtype == torch.float32 for p in t.params)  # adapters: float32
    assert t.sampler is t.model  # no sampler copy
    t.train()
    m = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(m) == 2 and all(torch.isfinite(torch.tensor(r["loss/rl"])) for r in m)
    assert m[-1]["memory/frozen_mb"] == pytest.approx(nbytes(frozen) / 2 ** 20)
    assert m[-1]["memory/sampler_mb"] == 0


def test_dtype_auto_follows_bf16_and_full_fine_tuning_refuses_a_bf16_base(tmp_path, tiny_path, toy_data, monkeypatch):
    with pytest.raises(ConfigError, match="--dtype bfloat16 sets the frozen base of a LoRA run"):
        cfg(tmp_path, tiny_path, toy_data, dtype="bfloat16")
    t = Trainer(cfg(tmp_path, tiny_path, toy_data, lora_r=4), progress=False)  # auto without bf16: float32
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    monkeypatch.setattr(trainer_module, "bf16_supported", lambda device: True)
    t = Trainer(cfg(tmp_path / "b", tiny_path, toy_data, lora_r=4, bf16=True), progress=False)  # auto with bf16
    assert {p.dtype for p in t.model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert t.sampler is t.model


def test_lora_dropout_and_target_modules_reach_peft(tmp_path, tiny_path, toy_data):
    t = Trainer(cfg(tmp_path, tiny_path, toy_data, method="sft", lora_r=4, lora_dropout=0.1,
                    lora_target_modules="q_proj,v_proj"), progress=False)
    names = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert names and all(("q_proj" in n or "v_proj" in n) and "lora_" in n for n in names)
    assert t.model.peft_config["default"].lora_dropout == 0.1
    with pytest.raises(models.ModelError, match="--lora-target-modules"):
        Trainer(cfg(tmp_path / "x", tiny_path, toy_data, lora_r=4, lora_target_modules="no_such_proj"), progress=False)


@pytest.mark.parametrize("method,held", [("gta", 2), ("grpo", 1)])
def test_only_the_gradients_of_the_update_are_alive(tmp_path, tiny_path, toy_data, monkeypatch, method, held):
    """mu = 2: at every backward no gradient of an earlier update is still referenced, and the step's figure counts
    g_RL + g_SFT (gta) or g_RL (grpo)."""
    taken, updates, stale = [], [0], []
    take, step, backward = Engine.take_grads, Engine.step, Engine.backward

    def take_grads(self, params):
        grads = take(self, params)
        taken.append((updates[0], [weakref.ref(g) for g in grads]))
        return grads

    def counting_step(self, *a, **kw):
        out = step(self, *a, **kw)
        updates[0] += 1
        return out

    def checking_backward(self, loss, last=True):
        stale.extend(u for u, refs in taken if u < updates[0] and any(r() is not None for r in refs))
        return backward(self, loss, last)

    monkeypatch.setattr(Engine, "take_grads", take_grads)
    monkeypatch.setattr(Engine, "step", counting_step)
    monkeypatch.setattr(Engine, "backward", checking_backward)
    t = Trainer(cfg(tmp_path, tiny_path, toy_data, method=method), progress=False, reward_fn=varied_reward)
    t.train()
    assert updates[0] == 4 and not stale
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["memory/grads_mb"] == pytest.approx(held * nbytes(t.params) / 2 ** 20)


def run_metrics(tmp_path, tiny_path, toy_data, **kw):
    t = Trainer(cfg(tmp_path, tiny_path, toy_data, **kw), progress=False, reward_fn=varied_reward)
    t.train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return rows, {n: p.detach().clone() for n, p in zip(t.names, t.params)}


@pytest.mark.parametrize("method", ["sft", "grpo", "gta"])
def test_gradient_checkpointing_gives_the_same_run(tmp_path, tiny_path, toy_data, method):
    plain, w_plain = run_metrics(tmp_path / "a", tiny_path, toy_data, method=method)
    ckpt, w_ckpt = run_metrics(tmp_path / "b", tiny_path, toy_data, method=method, gradient_checkpointing=True)
    keys = ["loss/sft", "loss/rl", "grad_norm", "grad_norm/sft", "grad_norm/rl", "kl", "reward/total"]
    for a, b in zip(plain, ckpt):
        for k in keys:
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-9), k
    for n in w_plain:
        assert torch.allclose(w_plain[n], w_ckpt[n], rtol=1e-6, atol=1e-7), n


def shared_prefix_grads(model, tokenizer, entropy=False):
    torch.manual_seed(0)
    prompts = rollout.encode_prompts(tokenizer, ["Classify: the match ended 2-1.", "Label this: shares fell"], "cpu")
    ids = torch.randint(0, 1000, (6, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[4, 2:] = 0
    model.zero_grad(set_to_none=True)
    out, = rollout.shared_prefix_logprobs(model, prompts, [(ids, mask, 3)], temperature=0.7, entropy=entropy,
                                          rows_per_chunk=4)
    logp, ent = out if entropy else (out, None)
    (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
    return logp.detach(), ent, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_checkpointed_layers_keep_the_shared_prefix_gradients_and_eval_mode(tiny_path, tokenizer):
    model = fp32_head(AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval())
    ref_logp, _, ref_grads = shared_prefix_grads(model, tokenizer)
    assert checkpoint_layers(model) == 2
    logp, _, grads = shared_prefix_grads(model, tokenizer)
    assert not model.training
    assert torch.equal(logp, ref_logp)
    for n in ref_grads:  # gradients through the prompt's cache included (the embeddings get them via the prompt)
        assert torch.allclose(grads[n], ref_grads[n], rtol=1e-6, atol=1e-8), n


def test_the_blockwise_log_probs_equal_the_plain_ones(tiny_path, tokenizer, monkeypatch):
    model = fp32_head(AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval())
    ref_logp, ref_ent, ref_grads = shared_prefix_grads(model, tokenizer, entropy=True)
    vocab = model.lm_head.weight.shape[0]
    monkeypatch.setattr(models, "LOGITS_CHUNK_BYTES", 4 * vocab * 3)  # 3 positions a block: many blocks
    calls = []
    apply = models.SelectedLogprobs.apply
    monkeypatch.setattr(models.SelectedLogprobs, "apply", lambda *a: calls.append(a[0].shape) or apply(*a))
    logp, ent, grads = shared_prefix_grads(model, tokenizer, entropy=True)
    assert calls  # the blockwise path ran
    assert torch.allclose(logp, ref_logp, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-4)
    for n in ref_grads:  # float rounding only: the same terms summed in another order (max error ~1e-5 of the max)
        assert (grads[n] - ref_grads[n]).abs().max() <= 1e-4 * ref_grads[n].abs().max(), n


def test_blockwise_log_probs_keep_one_block_of_logits(tiny_path, monkeypatch):
    """The backward keeps the hidden states and one float per row, not (rows, V) logits."""
    vocab, hidden = 5000, 16
    head = models.FP32Head(hidden, vocab, bias=False)
    h = torch.randn(2, 300, hidden, requires_grad=True)
    ids = torch.randint(0, vocab, (2, 300))
    monkeypatch.setattr(models, "LOGITS_CHUNK_BYTES", 4 * vocab * 64)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        head.select = (ids, 1.0, False)
        out = head(h)
        head.select = None
    assert out.shape == (2, 300) and max(saved) < 600 * vocab / 10  # nothing near 600 x V
    out.sum().backward()
    with torch.no_grad():
        z = torch.log_softmax(h @ head.weight.t(), dim=-1)
    assert torch.allclose(out, z.gather(-1, ids[..., None]).squeeze(-1), atol=1e-5)


def test_attn_implementation_reaches_the_model_and_a_missing_kernel_fails_in_one_line(tmp_path, tiny_path, toy_data):
    t = Trainer(cfg(tmp_path, tiny_path, toy_data, attn_implementation="eager", max_steps=1), progress=False,
                reward_fn=varied_reward)
    assert t.model.config._attn_implementation == "eager"
    t.train()
    with pytest.raises(models.ModelError, match="--attn-implementation flash_attention_2 cannot be used here"):
        Trainer(cfg(tmp_path / "x", tiny_path, toy_data, attn_implementation="flash_attention_2"), progress=False)
