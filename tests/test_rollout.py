"""The shared-prefix paths give the same numbers as the plain ones (tiny model, fp32)."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from gta import rollout
from gta.losses import grpo_loss


def _setup(tiny_path, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    prompts = rollout.encode_prompts(tokenizer, ["Classify: the match ended 2-1.", "Stocks fell."], "cpu")
    return model, prompts


def test_greedy_shared_prefix_rollout_equals_generate(tiny_path, tokenizer):
    model, prompts = _setup(tiny_path, tokenizer)
    ids, mask = rollout.generate(model, prompts, 3, 12, [tokenizer.eos_token_id], tokenizer.pad_token_id,
                                 temperature=0.0)
    ref = model.generate(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask, max_new_tokens=12,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)[:, prompts.input_ids.shape[1]:]
    for g in range(3):  # every one of the G greedy samples equals generate's output
        assert torch.equal(ids[g::3][:, : ref.shape[1]], ref)


def test_rows_that_stop_leave_the_batch_without_changing_the_others(tiny_path, tokenizer):
    """Rows that stop early leave the batch; every row still samples exactly what it samples when no row
    stops (same random numbers, logits independent of the other rows), up to its own stop token."""
    model, prompts = _setup(tiny_path, tokenizer)
    args = (model, prompts, 4, 12)

    def gens():
        return [torch.Generator().manual_seed(10 + i) for i in range(2)]

    free, _ = rollout.generate(*args, [-1], tokenizer.pad_token_id, 1.0, gens())
    stops = [int(free[0, 2]), int(free[5, 6])]  # row 0 stops after 3 tokens, row 5 after 7
    ids, mask = rollout.generate(*args, stops, tokenizer.pad_token_id, 1.0, gens())
    lengths = mask.sum(dim=1).tolist()
    assert lengths[0] == 3 and lengths[5] == 7 and max(lengths) == 12
    for row, n in enumerate(lengths):
        assert torch.equal(ids[row, :n], free[row, :n])
        assert (ids[row, n:] == tokenizer.pad_token_id).all()
        assert n == 12 or int(ids[row, n - 1]) in stops


def test_sampling_is_reproducible_and_matches_distribution_support(tiny_path, tokenizer):
    model, prompts = _setup(tiny_path, tokenizer)
    args = (model, prompts, 4, 8, [tokenizer.eos_token_id], tokenizer.pad_token_id, 1.0)
    a = rollout.generate(*args, generator=torch.Generator().manual_seed(1))[0]
    b = rollout.generate(*args, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b)


def test_inverse_cdf_sampler_matches_probabilities():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]])).repeat(20000, 1)
    draws = rollout.sample_tokens(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.015)


@pytest.mark.parametrize("rows_per_chunk", [1, 4, 100])
def test_shared_prefix_update_equals_plain_pass(tiny_path, tokenizer, rows_per_chunk):
    """Same log-probs, loss and gradients as one forward over the G repeated full sequences, with
    completions of different lengths computed in chunks of similar length."""
    model, prompts = _setup(tiny_path, tokenizer)
    G = 3
    ids, cmask = rollout.generate(model, prompts, G, 10, [tokenizer.eos_token_id], tokenizer.pad_token_id,
                                  1.0, torch.Generator().manual_seed(0))
    lengths = torch.tensor([10, 3, 7, 1, 10, 5])  # as if rows had stopped early
    cmask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    ids = torch.where(cmask.bool(), ids, torch.full_like(ids, tokenizer.pad_token_id))
    adv = torch.linspace(-1, 1, ids.shape[0])

    def loss_of(logp):
        return grpo_loss(logp, logp.detach(), None, adv, cmask.float(), cmask.sum(1).float(), 0.2, 0.0,
                         ids.shape[0])[0]

    shared, = rollout.shared_prefix_logprobs(model, prompts, [(ids, cmask, G)], rows_per_chunk=rows_per_chunk)
    loss_a = loss_of(shared)
    grads_a = torch.autograd.grad(loss_a, list(model.parameters()))

    full = torch.cat([prompts.input_ids.repeat_interleave(G, 0), ids], dim=1)
    attn = torch.cat([prompts.attention_mask.repeat_interleave(G, 0), cmask], dim=1)
    logits = model(input_ids=full, attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0)).logits
    P = prompts.input_ids.shape[1]
    plain = rollout.token_logprobs(logits[:, P - 1:-1], ids) * cmask
    loss_b = loss_of(plain)
    grads_b = torch.autograd.grad(loss_b, list(model.parameters()))

    assert torch.allclose(shared, plain, atol=1e-5)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, atol=1e-6, rtol=1e-4)


def test_one_forward_over_prompt_and_label_equals_the_shared_prefix_pass(tiny_path, tokenizer):
    """The SFT targets (sft's label, gta's guess) take one forward over prompt + target: the same log-probs and
    gradients as the prompt forward plus a forward of the target on its cache, with prompts of different
    lengths (left padding) and targets of different lengths (right padding)."""
    model, prompts = _setup(tiny_path, tokenizer)
    ids, mask = rollout.pad_right([[5, 17, 9, 2], [33, 8]], tokenizer.pad_token_id, "cpu")
    assert (prompts.attention_mask == 0).any() and (mask == 0).any()
    params = list(model.parameters())
    one = rollout.sequence_logprobs(model, prompts, ids, mask)
    shared, = rollout.shared_prefix_logprobs(model, prompts, [(ids, mask, 1)])
    assert torch.allclose(one, shared, atol=1e-5) and bool((one[mask.bool()] < 0).all())
    assert bool((one[~mask.bool()] == 0).all())
    weights = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # a loss that weighs every token differently
    for ga, gb in zip(torch.autograd.grad((one * weights).sum(), params),
                      torch.autograd.grad((shared * weights).sum(), params)):
        assert torch.allclose(ga, gb, atol=1e-5 * float(gb.abs().max()), rtol=1e-4)  # summation order differs


def test_fast_label_scoring_picks_the_most_likely_label(tiny_path, tokenizer):
    from gta.evaluate import score_labels

    model, _ = _setup(tiny_path, tokenizer)
    prompts = ["Classify: the match ended 2-1. <guess>", "Stocks fell. <guess>"]
    labels = ["sport", "very negative", "business"]
    fast = score_labels(model, tokenizer, prompts, labels, "</guess>", bf16=False)
    # brute force: full forward of prompt + label for every pair
    for prompt, got in zip(prompts, fast):
        scores = []
        for label in labels:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            t = tokenizer(label + "</guess>", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([p + t])).logits[0, len(p) - 1:-1]
            scores.append(float(rollout.token_logprobs(logits, torch.tensor(t)).sum()))
        assert got == labels[max(range(len(labels)), key=scores.__getitem__)]


def test_packed_label_scores_equal_one_forward_per_label(tiny_path, tokenizer):
    model, _ = _setup(tiny_path, tokenizer)
    texts = ["Classify: the match ended 2-1. <guess>", "Stocks fell sharply on Monday. <guess>"]  # lengths differ
    labels = ["sport", "very negative", "business", "x"]
    suffixes = [tokenizer(label + "</guess>", add_special_tokens=False)["input_ids"] for label in labels]
    with torch.no_grad():
        got = rollout.packed_suffix_logprobs(model, rollout.encode_prompts(tokenizer, texts, "cpu"), suffixes)
        for b, text in enumerate(texts):
            p = tokenizer(text, add_special_tokens=False)["input_ids"]
            for k, t in enumerate(suffixes):
                logits = model(input_ids=torch.tensor([p + t])).logits[0, len(p) - 1:-1]
                want = float(rollout.token_logprobs(logits, torch.tensor(t)).sum())
                assert abs(float(got[b, k]) - want) < 1e-4, (b, k)


def test_constrained_answer_picks_the_most_likely_label_after_the_reasoning(tiny_path, tokenizer):
    from gta.evaluate import constrained_answers

    model, _ = _setup(tiny_path, tokenizer)
    labels = ["sport", "very negative", "business"]
    prompts = ["Classify: the match ended 2-1. <guess>", "Stocks fell. <guess>", "x <guess>", "y <guess>"]
    outputs = ["sport</guess><think>a goal</think><answer>label</answer>",  # placeholder answer: constrained
               "business</guess><think>markets</think><answer>",
               "sport</guess><think>no answer tag",  # never reaches <answer>
               "sport<think>x</think><answer>sport</answer>"]  # guess span not closed: out of format
    got = constrained_answers(model, tokenizer, prompts, outputs, labels, "gta", bf16=False)
    assert got[2] is None and got[3] is None
    for prompt, out, pick in zip(prompts[:2], outputs[:2], got[:2]):
        head = tokenizer(prompt + out[:out.index("<answer>") + len("<answer>")], add_special_tokens=False)["input_ids"]
        scores = []
        for label in labels:
            t = tokenizer(label + "</answer>", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([head + t])).logits[0, len(head) - 1:-1]
            scores.append(float(rollout.token_logprobs(logits, torch.tensor(t)).sum()))
        assert pick == labels[max(range(len(labels)), key=scores.__getitem__)]
    with pytest.raises(ValueError, match="reasons before answering"):
        constrained_answers(model, tokenizer, prompts, outputs, labels, "direct", bf16=False)


def test_shared_prefix_gradients_are_bitwise_repeatable(tiny_path, tokenizer):
    """The update pass gives the same gradients bit for bit every time (crash-safe resume compares weights
    exactly): repeated prompt rows must not be summed in a thread-dependent order in the backward pass."""
    model, prompts = _setup(tiny_path, tokenizer)
    G = 4
    ids, cmask = rollout.generate(model, prompts, G, 6, [-1], tokenizer.pad_token_id, 1.0,
                                  torch.Generator().manual_seed(0))

    def grads():
        logp, = rollout.shared_prefix_logprobs(model, prompts, [(ids, cmask, G)], rows_per_chunk=G)
        return torch.autograd.grad(logp.sum(), list(model.parameters()))

    first = grads()
    for _ in range(10):
        assert all(torch.equal(a, b) for a, b in zip(first, grads()))


def test_cache_paths_use_the_installed_transformers_names(tiny_path, tokenizer):
    """Rollout, update pass and label scoring pass the KV cache under the name this transformers release
    expects, so no deprecation warning (which would turn into an error when the old name is removed)."""
    import warnings

    model, prompts = _setup(tiny_path, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        ids, mask = rollout.generate(model, prompts, 2, 4, [-1], tokenizer.pad_token_id, temperature=0.0)
        rollout.shared_prefix_logprobs(model, prompts, [(ids, mask, 2)], bf16=False)
        rollout.packed_suffix_logprobs(model, prompts, [[5, 6], [7]])


SHARED = ["You are a classifier. Labels: sport, business, tech. Text: the match ended 2-1.",
          "You are a classifier. Labels: sport, business, tech. Text: stocks fell sharply on Monday after the report.",
          "You are a classifier. Labels: sport, business, tech. Text: a new phone."]


def _both(tokenizer):
    """The same prompts encoded with their common prefix as shared columns, and without."""
    shared = rollout.encode_prompts(tokenizer, SHARED, "cpu")
    plain = rollout.encode_prompts(tokenizer, SHARED, "cpu", share_prefix=False)
    return shared, plain


def test_batch_prefix_is_found_and_each_row_keeps_its_tokens(tokenizer):
    shared, plain = _both(tokenizer)
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in SHARED]
    assert plain.shared == 0 and shared.shared == rollout.common_prefix_length(rows) > 10
    assert shared.token_lists() == plain.token_lists() == rows
    assert torch.equal(shared.lengths, plain.lengths)
    assert bool((shared.attention_mask[:, :shared.shared] == 1).all())
    # one prompt, or prompts with nothing in common: nothing shared; a prompt that is all prefix keeps a token
    assert rollout.encode_prompts(tokenizer, SHARED[:1], "cpu").shared == 0
    assert rollout.encode_prompts(tokenizer, ["Stocks fell.", "Classify this."], "cpu").shared == 0
    short = rollout.encode_prompts(tokenizer, ["Text: a", "Text: a b c"], "cpu")
    assert short.token_lists() == [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ["Text: a", "Text: a b c"]]
    assert short.shared == len(tokenizer("Text: a", add_special_tokens=False)["input_ids"]) - 1


def test_batch_prefix_computed_once_gives_the_same_rollouts_log_probs_and_gradients(tiny_path, tokenizer):
    """The shared prefix computed once and expanded to the rows: the same prefill, greedy and sampled completions,
    update-pass and label-target log-probs and gradients, and label scores as every row computing it."""
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    shared, plain = _both(tokenizer)
    params = list(model.parameters())
    with torch.no_grad():
        (kv_a, last_a), (kv_b, last_b) = rollout.prompt_forward(model, shared), rollout.prompt_forward(model, plain)
        assert torch.allclose(last_a, last_b, atol=1e-4)
        for (ka, va), (kb, vb) in zip(kv_a, kv_b):  # the same keys and values on every real token
            m = shared.attention_mask.bool()
            assert torch.allclose(ka.transpose(1, 2)[m], kb.transpose(1, 2)[plain.attention_mask.bool()], atol=1e-4)
            assert torch.allclose(va.transpose(1, 2)[m], vb.transpose(1, 2)[plain.attention_mask.bool()], atol=1e-4)
    greedy = [rollout.generate(model, p, 2, 10, [-1], tokenizer.pad_token_id, temperature=0.0)[0] for p in (shared, plain)]
    assert torch.equal(*greedy)
    G = 3
    ids, cmask = rollout.generate(model, shared, G, 8, [tokenizer.eos_token_id], tokenizer.pad_token_id, 1.0,
                                  torch.Generator().manual_seed(0))
    target, tmask = rollout.pad_right([[5, 17, 9, 2], [33, 8], [7]], tokenizer.pad_token_id, "cpu")
    out = []
    for p in (shared, plain):
        logp, = rollout.shared_prefix_logprobs(model, p, [(ids, cmask, G)], rows_per_chunk=4)
        guess = rollout.sequence_logprobs(model, p, target, tmask)
        loss = (logp * torch.linspace(-1, 1, logp.shape[0])[:, None]).sum() + (guess * torch.arange(1.0, 5.0)).sum()
        out.append((logp, guess, torch.autograd.grad(loss, params)))
    (la, ga, grads_a), (lb, gb, grads_b) = out
    assert torch.allclose(la, lb, atol=1e-5) and torch.allclose(ga, gb, atol=1e-5)
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-4)
    with torch.no_grad():
        scores = [rollout.packed_suffix_logprobs(model, p, [[5, 6], [7], [9, 10, 11]]) for p in (shared, plain)]
    assert torch.allclose(*scores, atol=1e-4)
