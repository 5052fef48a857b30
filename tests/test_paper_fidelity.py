"""GTA as the paper defines it: one test (or more) per defect of the audit (issue "GTA as the paper defines it"),
each failing on the code before its fix. Tiny random models and the project's own toy data."""
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import gta.engine as engine_module
import gta.trainer as trainer_module
from gta import evaluate, losses, rollout
from gta.conflict import combine
from gta.config import ConfigError, TrainConfig
from gta.data import Example
from gta.models import stop_token_ids
from gta.trainer import Trainer


def cfg(tmp_path, model, data, **kw):
    base = dict(model=model, dataset="toy", data_dir=str(data), train_limit=8, max_steps=1, batch_size=2,
                micro_batch_size=1, num_generations=3, num_iterations=1, max_completion_length=10,
                max_prompt_length=160, learning_rate=1e-3, bf16=False, output=str(tmp_path / "run"),
                save_every=100, eval_every=0)
    base.update(kw)
    return TrainConfig(**base)


def constant_reward(text, gold, template, **kw):
    return {"total": 1.0, "format": 1.0, "accuracy": 0.0, "guess": 0.0}


def varied_reward(text, gold, template, **kw):
    r = float(len(text) % 3)
    return {"total": r, "format": 0.0, "accuracy": 0.0, "guess": 0.0}


def capture_combine(monkeypatch):
    """Record the gradients combine() is given and returns."""
    calls = []

    def spy(g_sft, g_rl, *args, **kw):
        before = ([g.clone() for g in g_sft], [g.clone() for g in g_rl])
        out, info = combine(g_sft, g_rl, *args, **kw)
        calls.append((*before, [g.clone() for g in out], info))
        return out, info

    monkeypatch.setattr(engine_module, "combine", spy)
    return calls


# 1. ---------------------------------------------------------------- no RL signal: SFT applies, decided by rewards
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_without_rl_signal_applies_lambda1_g_sft(tmp_path, tiny_path, toy_data, monkeypatch, seed):
    """Constant reward (every advantage 0) and a reference equal to the policy (refreshed every step): the only
    RL gradient is beta * grad KL at KL = 0, exactly 0 when reference and policy log-probs agree bit for bit. The
    step applies lambda1 g_SFT and logs the SFT gradient as not dropped (before the fix the sign of float noise
    between two attention kernels decided, dropping SFT in some seeds)."""
    calls = capture_combine(monkeypatch)
    c = cfg(tmp_path, tiny_path, toy_data, method="gta", seed=seed, ref_sync_steps=1, lambda1=0.5)
    t = Trainer(c, progress=False, reward_fn=constant_reward)
    applied = []
    t.update = lambda grads: applied.append([g.clone() for g in grads]) or 1.0
    m = t.rl_step(t.plan.batch_indices(0), 0)
    assert m["conflict/sft_dropped"] == 0.0 and m["groups/informative"] == 0.0 and m["rl_share"] == 0.0
    (g_sft, g_rl, out, info), = calls
    assert all(bool((g == 0).all()) for g in g_rl), "identical weights must give identical log-probs"
    assert any(bool((g != 0).any()) for g in g_sft)
    for a, s in zip(applied[0], g_sft):
        assert torch.equal(a, 0.5 * s)


def test_reference_pass_and_policy_pass_give_identical_logprobs(tiny_path, tokenizer):
    """The no-grad reference forward and the grad policy forward run the same kernels."""
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    prompts = rollout.encode_prompts(tokenizer, ["Classify: the match ended 2-1.", "Stocks fell."], "cpu")
    ids, mask = rollout.generate(model, prompts, 3, 10, [tokenizer.eos_token_id], tokenizer.pad_token_id, 1.0,
                                 torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, = rollout.shared_prefix_logprobs(model, prompts, [(ids, mask, 3)])
    pol, = rollout.shared_prefix_logprobs(model, prompts, [(ids, mask, 3)])
    assert pol.requires_grad and torch.equal(ref, pol.detach())


def test_conflict_rule_without_rl_signal_keeps_sft_even_when_the_dot_is_negative():
    g_sft, g_rl = [torch.tensor([1.0, 0.0], dtype=torch.float64)], [torch.tensor([-1e-7, 1e-7], dtype=torch.float64)]
    out, info = combine(g_sft, g_rl, 0.5, 2.0, "drop", rl_signal=False)
    assert info["sft_dropped"] == 0.0 and info["cosine"] < 0
    assert torch.allclose(out[0], torch.tensor([0.5 - 2e-7, 2e-7], dtype=torch.float64), rtol=0, atol=1e-15)
    out, info = combine([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], 0.5, 2.0, "drop", rl_signal=True)
    assert info["sft_dropped"] == 1.0 and torch.equal(out[0], torch.tensor([-2.0, 2.0]))


# 2. ---------------------------------------------------------------- temperature in every log-prob of the RL loss
def test_rl_logprobs_are_those_of_the_tempered_distribution(tmp_path, tiny_path, toy_data, monkeypatch):
    """At T = 0.5 every log-prob the RL loss uses (policy, behaviour, reference) is log_softmax(z / 0.5) of the
    sampled token, z the model's logits."""
    calls = []
    real = rollout.shared_prefix_logprobs

    def spy(model, prompts, suffixes, *args, **kw):
        out = real(model, prompts, suffixes, *args, **kw)
        first = [o[0] if isinstance(o, tuple) else o for o in out]  # the behaviour pass also returns entropies
        calls.append((prompts, suffixes[0][0], suffixes[0][1], suffixes[0][2], [o.detach() for o in first]))
        return out

    monkeypatch.setattr(trainer_module.rollout, "shared_prefix_logprobs", spy)
    c = cfg(tmp_path, tiny_path, toy_data, method="grpo", temperature=0.5, beta=0.1)
    t = Trainer(c, progress=False, reward_fn=varied_reward)
    t.update = lambda grads: 1.0  # keep the weights, so every call can be recomputed with them
    t.rl_step(t.plan.batch_indices(0), 0)
    assert len(calls) == 4  # reference and policy pass, for each of the 2 micro-batches
    for prompts, ids, mask, k, (logp,) in calls:
        full = torch.cat([prompts.input_ids.repeat_interleave(k, 0), ids], dim=1)
        attn = torch.cat([prompts.attention_mask.repeat_interleave(k, 0), mask], dim=1)
        with torch.no_grad():
            z = t.model(input_ids=full, attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0)).logits
        P = prompts.input_ids.shape[1]
        expected = torch.log_softmax(z[:, P - 1:-1].float() / 0.5, dim=-1).gather(-1, ids[..., None])[..., 0] * mask
        assert torch.allclose(logp, expected, atol=2e-5), float((logp - expected).abs().max())


def test_temperature_must_be_positive():
    with pytest.raises(ConfigError, match="--temperature must be > 0"):
        TrainConfig(temperature=0)


# 3. ---------------------------------------------------------------- --sft-reduction mean (default) | sum
def test_sft_loss_mean_is_hugging_face_cross_entropy_with_masking():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 4, 7), torch.randint(0, 7, (3, 4))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0] * mask
    labels = torch.where(mask.bool(), targets, torch.full_like(targets, -100))
    hf = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=-100)
    assert math.isclose(float(losses.sft_loss(logp, mask, normaliser=int(mask.sum()))), float(hf), rel_tol=1e-6)
    # micro-batches divide by the whole step's token count, so their losses add up to the step's mean
    parts = sum(losses.sft_loss(logp[i:i + 1], mask[i:i + 1], int(mask.sum())) for i in range(3))
    assert math.isclose(float(parts), float(hf), rel_tol=1e-6)
    # sum: each example's summed NLL, averaged over examples (3 + 1 + 4 tokens -> per-example sums / 3)
    assert math.isclose(float(losses.sft_loss(logp, mask, normaliser=3)), float(-logp.sum() / 3), rel_tol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sft_baseline_loss_is_the_steps_cross_entropy(tmp_path, tiny_path, toy_data, reduction):
    """The logged sft loss of the first step equals Hugging Face's own loss (labels -100 outside the target) over
    the step's examples: with mean, its per-token average; with sum, per-token sum / examples."""
    c = cfg(tmp_path, tiny_path, toy_data, method="sft", batch_size=4, micro_batch_size=2, sft_reduction=reduction)
    t = Trainer(c, progress=False)
    idx = t.plan.batch_indices(0)
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for i in idx:
            p = t.tokenizer(t.prompts[i], add_special_tokens=False)["input_ids"]
            y = t.target(i, "</answer>")
            ids = torch.tensor([p + y])
            labels = torch.tensor([[-100] * len(p) + y])
            nll += float(t.model(input_ids=ids, labels=labels).loss) * len(y)
            tokens += len(y)
    m = t.sft_step(idx)
    expected = nll / tokens if reduction == "mean" else nll / len(idx)
    assert m["loss/sft"] == pytest.approx(expected, rel=1e-5)


def test_sft_reduction_is_a_train_flag(capsys):
    from gta.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--sft-reduction {mean,sum}" in out and "(default: mean)" in out
    assert TrainConfig().sft_reduction == "mean"


# 4. ---------------------------------------------------------------- accuracy independent of format, evaluation too
def test_evaluation_scores_the_last_answer_span_and_reports_the_exact_format_rate(tiny_path, tokenizer, monkeypatch):
    outs = iter(["x</think><answer>joy</answer> extra", "x</think><answer>anger</answer>", "no tags at all"])
    monkeypatch.setattr(evaluate, "generate_outputs",
                        lambda model, tok, texts, *a, **k: ([next(outs) for _ in texts], [False] * len(texts)))
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    examples = [Example("a", "joy"), Example("b", "anger"), Example("c", "joy")]
    m, records = evaluate.evaluate_examples(model, tokenizer, examples, ["joy", "anger"], "think", 8, 160, False,
                                            progress=False)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["exact_format_rate"] == pytest.approx(1 / 3)
    assert m["invalid_rate"] == pytest.approx(1 / 3)
    assert [r["correct"] for r in records] == [True, True, False]
    assert "exact format 33.3%" in evaluate.format_report(m)


def test_evaluation_format_rule_placeholders_and_truncation(tiny_path, tokenizer, monkeypatch):
    """gta eval's exact-format rate follows the format reward: a copied placeholder or an output cut at the length
    limit is not in format; the summary gives the share of copied placeholders per span."""
    outs = ["reasoning</think><answer>label</answer>", "reasoning</think><answer>joy</answer>",
            "a b</think><answer>anger</answer>", "a b</think><answer>joy</answer>"]
    monkeypatch.setattr(evaluate, "generate_outputs",
                        lambda model, tok, texts, *a, **k: (outs[:len(texts)], [False, False, False, True]))
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    examples = [Example("a", "joy"), Example("b", "joy"), Example("c", "anger"), Example("d", "joy")]
    m, records = evaluate.evaluate_examples(model, tokenizer, examples, ["joy", "anger"], "think", 8, 160, False,
                                            progress=False)
    assert [r["exact_format"] for r in records] == [False, True, True, False]
    assert m["exact_format_rate"] == 0.5 and m["truncated_rate"] == 0.25 and m["accuracy"] == 0.75
    assert m["placeholder_rate"] == {"think": 0.5, "answer": 0.25}
    assert records[0]["placeholder"] == ["answer", "think"]
    assert "placeholder copied from the format line: think 50.0%   answer 25.0%" in evaluate.format_report(m)


# 5. ---------------------------------------------------------------- stop on every end-of-turn id
def test_generation_stops_on_every_eos_id_of_the_generation_config(tiny_path, tokenizer, monkeypatch):
    """A model whose generation_config.eos_token_id lists two ids stops on either (the trainer's rollouts and
    evaluation both take their stop tokens from stop_token_ids)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    prompt = rollout.encode_prompts(tokenizer, ["Classify: the match ended 2-1."], "cpu")
    sample = lambda stops: rollout.generate(model, prompt, 1, 12, stops, tokenizer.pad_token_id, 1.0,  # noqa: E731
                                            torch.Generator().manual_seed(3))
    free = sample([-1])[0][0].tolist()
    new = [k for k in range(1, 12) if free[k] not in free[:k]]  # positions where a token appears for the first time
    a, b = new[0], new[1]
    for eos, n in (([free[b], tokenizer.eos_token_id], b + 1), ([tokenizer.eos_token_id, free[a]], a + 1)):
        model.generation_config.eos_token_id = eos
        stops = stop_token_ids(tokenizer, model)
        assert set(eos) | {tokenizer.eos_token_id, tokenizer.pad_token_id} == set(stops)
        ids, mask = sample(stops)
        assert int(mask.sum()) == n and ids[0, :n].tolist() == free[:n]
    seen = []  # evaluation asks stop_token_ids too
    monkeypatch.setattr(evaluate.rollout, "generate", lambda *a, **k: seen.append(a[4]) or (torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1)))
    evaluate.generate_texts(model, tokenizer, ["x"], 4, False, progress=False)
    assert seen == [stop_token_ids(tokenizer, model)]
    model.generation_config.eos_token_id = 7
    assert 7 in stop_token_ids(tokenizer, model)


# 6. ---------------------------------------------------------------- gold labels compared in canonical form
def test_evaluation_canonicalises_the_gold_label(tiny_path, tokenizer, monkeypatch):
    monkeypatch.setattr(evaluate, "generate_outputs",
                        lambda model, tok, texts, *a, **k: (["joy</answer>"] * len(texts), [False] * len(texts)))
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    m, records = evaluate.evaluate_examples(model, tokenizer, [Example("a", "Joy"), Example("b", " JOY ")],
                                            ["joy", "anger"], "direct", 8, 160, False, progress=False)
    assert m["accuracy"] == 1.0 and m["f1_weighted"] == 1.0 and m["per_class"]["joy"]["support"] == 2
    assert all(r["gold"] == "joy" and r["correct"] for r in records)


# 7. ---------------------------------------------------------------- the sampler reaches the tail
def test_sampler_can_draw_tokens_far_below_float32_resolution():
    """p = (1 - 2e-9, 1e-9, 1e-9): in float32 the cdf is 1, 1, 1 and tokens 1 and 2 can never be drawn. Uniforms at
    the middle of each token's interval draw each token."""
    p = torch.tensor([1 - 2e-9, 1e-9, 1e-9], dtype=torch.float64)
    logits = torch.log(p).float()[None].repeat(3, 1)
    cdf = torch.softmax(logits.double(), -1).cumsum(-1)[0]
    lo = torch.cat([torch.zeros(1, dtype=torch.float64), cdf[:-1]])
    u = ((lo + cdf) / 2 / cdf[-1])[:, None]  # (3, 1): the middle of each interval
    assert rollout.sample_tokens(logits, 1.0, u=u).tolist() == [0, 1, 2]
    assert rollout.uniforms(4, torch.Generator().manual_seed(0), "cpu").dtype == torch.float64


# 8. ---------------------------------------------------------------- no dropout in any RL forward
def test_rl_forwards_run_without_dropout(tmp_path, tiny_path, toy_data):
    config = LlamaConfig.from_pretrained(tiny_path)
    config.attention_dropout = 0.5
    model = LlamaForCausalLM.from_pretrained(tiny_path, config=config)
    path = tmp_path / "dropout-model"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_path).save_pretrained(path)
    c = cfg(tmp_path, str(path), toy_data, method="gta", num_iterations=2, ref_sync_steps=1)
    t = Trainer(c, progress=False, reward_fn=constant_reward)
    modes = []
    t.model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    t.update = lambda grads: 1.0  # weights unchanged: the second update's ratio must be exactly 1
    m = t.rl_step(t.plan.batch_indices(0), 0)
    assert modes and not any(modes)
    assert m["kl"] == 0.0 and m["clip_fraction"] == 0.0


def test_evaluation_during_training_skips_the_fast_guess_pass(tiny_path, tokenizer, monkeypatch):
    """training_metrics logs accuracy, F1 and the guess accuracy read from the outputs: it never pays for the
    second pass over every prompt that `gta eval`'s fast block makes."""
    out = "joy</guess><think>x</think><answer>joy</answer>"
    monkeypatch.setattr(evaluate, "generate_outputs",
                        lambda model, tok, texts, *a, **k: ([out for _ in texts], [False] * len(texts)))
    calls = []
    monkeypatch.setattr(evaluate, "score_labels", lambda *a, **k: calls.append(1) or ["joy"] * len(a[2]))
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    examples = [Example("a", "joy"), Example("b", "anger")]
    got = evaluate.training_metrics(model, tokenizer, examples, ["joy", "anger"], "gta", 8, 160)
    assert got["eval/accuracy"] == 0.5 and got["eval/guess_accuracy"] == 0.5 and not calls
    m, _ = evaluate.evaluate_examples(model, tokenizer, examples, ["joy", "anger"], "gta", 8, 160, False,
                                      progress=False)  # gta eval: the fast block by default
    assert calls and m["fast"]["accuracy"] == 0.5
