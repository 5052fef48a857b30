"""The method driven end to end: scripted rollouts (fixed completions in place of sampling) through a real `rl_step`
on a tiny model, so the rewards, advantages and the guess mask of gta and gta-rl are checked as the trainer builds
them, from token ids decoded and primed exactly as in training. A random tiny model never writes `</guess>` by
itself, so without scripting the guess-span masking would never run."""
import pytest
import torch

from gta import losses, prompts, rollout
from gta import trainer as trainer_module
from gta.config import TrainConfig
from gta.trainer import Trainer


def make_trainer(tmp_path, tiny_path, toy_data, method, **kw):
    base = dict(method=method, model=tiny_path, dataset="toy", data_dir=str(toy_data), train_limit=8, max_steps=1,
                batch_size=1, micro_batch_size=1, num_generations=5, num_iterations=1, beta=0.0,
                learning_rate=1e-4, max_prompt_length=160, bf16=False, output=str(tmp_path / "run"), save_every=100)
    base.update(kw)
    return Trainer(TrainConfig(**base), progress=False)


def script(monkeypatch, tokenizer, completions: list[tuple[str, bool]]):
    """Make rollout.generate return these completions (the text after the primed `<guess>`; True: ends with the
    end-of-turn token) for every prompt. Returns (ids, mask) as the fake hands them out."""
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
            for text, eos in completions]
    ids, mask = rollout.pad_right(rows, tokenizer.pad_token_id, "cpu")

    def fake_generate(model, batch, num_samples, *args, **kw):
        assert num_samples == len(rows)
        B = batch.input_ids.shape[0]
        return ids.repeat(B, 1), mask.repeat(B, 1), torch.zeros(ids.shape).repeat(B, 1)

    monkeypatch.setattr(rollout, "generate", fake_generate)
    return ids, mask, rows


def spy_loss(monkeypatch):
    calls, real = [], losses.grpo_loss

    def spy(*args, **kw):
        calls.append((args, kw))
        return real(*args, **kw)

    monkeypatch.setattr(trainer_module.losses, "grpo_loss", spy)
    return calls


def completions_for(gold: str, wrong: str):
    return [
        (f"{gold}</guess><think>the words</think><answer>{gold}</answer>", True),  # right guess, right answer: 2
        (f"{wrong}</guess><think>no</think><answer>{wrong}</answer>", True),  # wrong guess and answer, in format: 1
        ("label</guess><think>reasoning</think><answer>label</answer>", True),  # the format line copied: 0
        (f"{gold}<think>x</think><answer>{gold}</answer>", True),  # no </guess>: not in format, right answer: 1
        (f"{gold}</guess><think>a b c d e f g h</think><answer>{gold}</answer>", False),  # cut at the limit: 1
    ]


@pytest.mark.parametrize("method", ["gta", "gta-rl"])
def test_scripted_rollouts_rewards_advantages_and_guess_mask(tmp_path, tiny_path, toy_data, tokenizer, monkeypatch,
                                                              method):
    t0 = make_trainer(tmp_path / "probe", tiny_path, toy_data, method)
    gold = t0.train_examples[0].label
    wrong = next(lab for lab in t0.labels if lab != gold)
    comps = completions_for(gold, wrong)
    limit = len(tokenizer(comps[-1][0], add_special_tokens=False)["input_ids"])  # the last row ends at the limit
    t = make_trainer(tmp_path, tiny_path, toy_data, method, max_completion_length=limit)
    ids, mask, rows = script(monkeypatch, tokenizer, comps)
    assert max(len(r) for r in rows[:-1]) < limit == len(rows[-1])
    calls = spy_loss(monkeypatch)
    m = t.rl_step([0], 0)

    # rewards: format needs the tag structure, labels in the label spans and a stop token; accuracy reads the answer
    rewards = torch.tensor([[2.0, 1.0, 0.0, 1.0, 1.0]])
    assert m["reward/total"] == pytest.approx(1.0) and m["reward/format"] == pytest.approx(0.4)
    assert m["reward/accuracy"] == pytest.approx(0.6) and m["guess/accuracy"] == pytest.approx(0.4)
    assert m["completions/placeholder_answer"] == pytest.approx(0.2)
    assert m["completions/placeholder_think"] == pytest.approx(0.2)
    assert m["completions/truncated"] == pytest.approx(0.2)
    (logp, old, ref, adv, rl_mask, lengths, eps, beta), kw = calls[0]
    assert torch.allclose(adv, losses.group_advantages(rewards).view(-1))
    assert lengths.tolist() == [float(len(r)) for r in rows]

    # the RL mask: gta leaves the guess span (up to the token completing </guess>) out; gta-rl keeps every token
    guess_len = [len(prompts.label_tokens(tokenizer, g, "</guess>")) for g in (gold, wrong, "label")]
    expected = mask.float().clone()
    if method == "gta":
        for row, n in enumerate(guess_len):
            expected[row, :n] = 0
        expected[4, :guess_len[0]] = 0  # the cut row has its guess too; row 3 (no </guess>) has none
    assert torch.equal(rl_mask, expected[:, :rl_mask.shape[1]])

    # a guess token's log-prob moves loss/rl for gta-rl only; a think token's for both
    def loss_with(row, col, delta):
        moved = logp.detach().clone()
        moved[row, col] += delta
        return float(losses.grpo_loss(moved, old, ref, adv, rl_mask, lengths, eps, beta, **kw)[0])

    base = float(losses.grpo_loss(logp.detach(), old, ref, adv, rl_mask, lengths, eps, beta, **kw)[0])
    assert (loss_with(0, 0, -0.1) == base) == (method == "gta")
    assert loss_with(0, guess_len[0] + 1, -0.1) != base


def sequence_logp(t, ids, mask, G):
    with torch.no_grad():
        logp, = rollout.shared_prefix_logprobs(t.model, t.encode([0]), [(ids, mask, G)])
    return logp.sum(dim=1)


def test_one_rl_update_raises_the_rewarded_completions_log_probability(tmp_path, tiny_path, toy_data, tokenizer,
                                                                      monkeypatch):
    t = make_trainer(tmp_path, tiny_path, toy_data, "gta-rl", num_generations=2, max_completion_length=64)
    gold = t.train_examples[0].label
    ids, mask, _ = script(monkeypatch, tokenizer, [
        (f"{gold}</guess><think>yes</think><answer>{gold}</answer>", True),  # reward 2
        ("label</guess><think>reasoning</think><answer>label</answer>", True)])  # reward 0
    before = sequence_logp(t, ids, mask, 2)
    m = t.rl_step([0], 0)
    assert m["reward/total"] == 1.0
    after = sequence_logp(t, ids, mask, 2)
    assert after[0] > before[0] and after[1] < before[1]


def test_one_sft_update_lowers_the_gold_guess_nll(tmp_path, tiny_path, toy_data, tokenizer, monkeypatch):
    """gta with lambda2 = 0 and no conflict rule applies g_SFT alone: the gold guess's NLL falls."""
    t = make_trainer(tmp_path, tiny_path, toy_data, "gta", num_generations=2, max_completion_length=64,
                     lambda2=0.0, conflict="none")
    gold = t.train_examples[0].label
    script(monkeypatch, tokenizer, [(f"{gold}</guess><think>yes</think><answer>{gold}</answer>", True),
                                    ("label</guess><think>reasoning</think><answer>label</answer>", True)])
    nll = lambda: float(t.target_loss([0], "</guess>", 1).detach())  # noqa: E731
    before = nll()
    t.rl_step([0], 0)
    assert nll() < before
