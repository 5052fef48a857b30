"""The guess span in token positions, found through the tokenizer on SmolLM2's real tokenizer."""
import pytest

from gta.rollout import guess_span_mask


@pytest.mark.parametrize("label", ["very negative", "entertainment", "play", "general_quirky", "very positive"])
def test_guess_span_covers_label_and_closing_tag(tokenizer, label):
    completion = f"{label}</guess><think>Because of the words used.</think><answer>{label}</answer>"
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    mask = guess_span_mask(tokenizer, ids, len(ids))
    n = sum(mask)
    assert mask == [1] * n + [0] * (len(ids) - n)  # a prefix
    covered = tokenizer.decode(ids[:n])
    before = tokenizer.decode(ids[: n - 1])
    assert covered.startswith(label + "</guess>")  # the span includes the whole label and tag ...
    assert "</guess>" not in before  # ... and is the shortest prefix that does
    assert n > len(tokenizer(label, add_special_tokens=False)["input_ids"])  # more than the label: the tag too


def test_multi_token_label_span_length(tokenizer):
    label = "very negative"
    ids = tokenizer(label + "</guess><think>t</think>", add_special_tokens=False)["input_ids"]
    n_label = len(tokenizer(label, add_special_tokens=False)["input_ids"])
    assert n_label >= 2
    assert sum(guess_span_mask(tokenizer, ids, len(ids))) > n_label


def test_no_closing_tag_means_no_span(tokenizer):
    ids = tokenizer("sport but no closing tag", add_special_tokens=False)["input_ids"]
    assert sum(guess_span_mask(tokenizer, ids, len(ids))) == 0


def test_span_ignores_padding_after_valid_tokens(tokenizer):
    ids = tokenizer("tech oops", add_special_tokens=False)["input_ids"]
    pad = tokenizer("</guess>", add_special_tokens=False)["input_ids"]
    assert sum(guess_span_mask(tokenizer, ids + pad, len(ids))) == 0


@pytest.mark.parametrize("label", ["very negative", "entertainment", "sport", "general_quirky", "sadness"])
def test_guess_target_is_the_guess_span_of_a_formatted_output(tokenizer, label):
    """The SFT target of gta's guess and the span the RL loss leaves out are the same tokens, as the model
    produces them in the format: SmolLM2 merges `>` of `</guess>` with `<` of `<think>` into one token, which
    the target must end with (tokenized alone, `label</guess>` ends in a lone `>` that the format never
    continues from, and training on it taught the model to end its turn after the guess)."""
    from gta.prompts import target_ids

    ids = tokenizer(f"{label}</guess><think>why</think><answer>{label}</answer>", add_special_tokens=False)["input_ids"]
    n = sum(guess_span_mask(tokenizer, ids, len(ids)))
    assert target_ids(tokenizer, label, "</guess>") == ids[:n]
    assert tokenizer.decode(ids[n - 1]) == "><"  # this tokenizer does merge the two tags


def test_span_search_equals_the_linear_scan_of_prefixes(tokenizer):
    """The binary search over prefixes finds what decoding every prefix finds, on completions with the marker at
    every position, multi-byte characters around it, and none at all."""
    import random

    from gta.prompts import span_end_token

    def linear(ids, marker):
        return next((n for n in range(1, len(ids) + 1) if marker in tokenizer.decode(ids[:n])), None)

    rng = random.Random(0)
    pieces = ["sport", "</guess>", "<think>", "é", "日本", " ", "🙂", "x", "</", "guess>", ">"]
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert span_end_token(tokenizer, ids, "</guess>") == linear(ids, "</guess>"), text
