import pytest

from gta.prompts import build_prompt, label_matches, make_prompts, parse
from gta.rewards import reward

LABELS = ["sport", "tech", "business", "joy"]
GOOD = "<guess>sport</guess><think>It is about a match.</think><answer>sport</answer>"


def test_parser_accepts_exact_format_with_whitespace():
    p = parse(GOOD, "gta")
    assert (p.guess, p.think, p.answer, p.exact) == ("sport", "It is about a match.", "sport", True)
    p = parse("<guess> tech </guess>\n<think>\nchips\n</think>\n<answer>Business</answer>\n", "gta")
    assert p.exact and p.guess == "tech" and p.answer == "Business"
    assert parse("<think>x</think><answer>joy</answer>", "think").exact
    assert parse("<answer>joy</answer>", "direct").exact


@pytest.mark.parametrize("bad", [
    "<guess>sport</guess><think>x</think>",  # no answer
    "<think>x</think><guess>sport</guess><answer>sport</answer>",  # wrong order
    "<guess>sport</guess><think>x <answer>tech</answer></think><answer>sport</answer>",  # nested tag
    GOOD + " trailing words",  # text after
    "Sure! " + GOOD,  # text before
    "<guess></guess><think>x</think><answer>sport</answer>",  # empty guess
    "<guess>sport</guess><think>x</think><answer> </answer>",  # empty answer
    GOOD + "<answer>tech</answer>",  # repeated tag
    "<guess>sport</guess><think>x</think><answer>sport",  # unclosed
    "",
])
def test_parser_rejects_malformed(bad):
    assert not parse(bad, "gta").exact


def test_malformed_output_exposes_its_last_spans_and_earns_accuracy_but_not_format():
    out = "<guess>tech</guess> blah <guess>sport</guess> <answer>tech</answer> then <answer>sport</answer>"
    p = parse(out, "gta")
    assert not p.exact and p.guess == "sport" and p.answer == "sport"  # the last span of each
    assert reward(out, "sport", "gta", LABELS) == {"total": 1.0, "format": 0.0, "accuracy": 1.0, "guess": 1.0}
    assert parse("<answer>sport", "direct").answer is None  # unclosed: no span


def test_label_match_ignores_case_and_whitespace_only():
    assert label_matches("  Very   Negative ", "very negative")
    assert not label_matches("very-negative", "very negative")
    assert not label_matches("sports", "sport")
    assert not label_matches(None, "sport")


def test_rewards_parts_and_total():
    assert reward(GOOD, "sport", "gta", LABELS) == {"total": 2.0, "format": 1.0, "accuracy": 1.0, "guess": 1.0}
    wrong = GOOD.replace("<answer>sport", "<answer>tech")
    assert reward(wrong, "sport", "gta", LABELS) == {"total": 1.0, "format": 1.0, "accuracy": 0.0, "guess": 1.0}
    assert reward("<think>x</think><answer>SPORT</answer>", "sport", "think", LABELS) == {
        "total": 2.0, "format": 1.0, "accuracy": 1.0}
    assert reward("<answer>sport</answer> extra", "sport", "direct", LABELS) == {"total": 1.0, "format": 0.0, "accuracy": 1.0}
    # eqs. 2-4: format and accuracy are independent; the worked example of the audit
    assert reward("<think>x</think><answer>joy</answer> extra", "joy", "think", LABELS) == {
        "total": 1.0, "format": 0.0, "accuracy": 1.0}
    assert reward("<think>x</think>joy", "joy", "think", LABELS)["accuracy"] == 0.0  # no answer span


def test_prompt_lists_labels_ends_with_primed_tag_and_truncates(tokenizer):
    labels = ["business", "sport"]
    p = build_prompt(tokenizer, "Some text", labels, "gta")
    assert p.endswith("<|im_start|>assistant\n<guess>") and "business, sport" in p
    assert build_prompt(tokenizer, "x", labels, "think").endswith("<think>")
    assert build_prompt(tokenizer, "x", labels, "direct").endswith("<answer>")
    long_text = "word " * 2000
    prompts, truncated = make_prompts(tokenizer, ["short text", long_text], labels, "gta", max_prompt_length=200)
    assert truncated == 1
    assert len(tokenizer(prompts[1], add_special_tokens=False)["input_ids"]) <= 202  # re-tokenising may merge


# ---------------------------------------------------------------- the format rule: a copied placeholder earns nothing
@pytest.mark.parametrize("template", ["gta", "think", "direct"])
def test_a_copy_of_the_format_line_is_not_in_format(template):
    """The verbatim copy of the prompt's format line (`<answer>label</answer>`) earned R_format = 1 before the label
    spans had to hold a label: GRPO then answered `label` on 944-1000 of 1000 test examples."""
    from gta.prompts import TEMPLATES, placeholders

    copy = TEMPLATES[template][1]
    assert parse(copy, template).exact  # the structure alone is right
    assert not parse(copy, template, LABELS).exact
    assert reward(copy, "sport", template, LABELS) == {"total": 0.0, "format": 0.0, "accuracy": 0.0,
                                                       **({"guess": 0.0} if template == "gta" else {})}
    assert placeholders(template)["answer"] == "label"


def test_each_label_span_must_hold_a_label_the_think_span_need_not():
    assert reward("<guess>sport</guess><think>label</think><answer>Sport </answer>", "sport", "gta", LABELS)["format"] == 1
    bad_guess = "<guess>football</guess><think>x</think><answer>sport</answer>"
    assert reward(bad_guess, "sport", "gta", LABELS) == {"total": 1.0, "format": 0.0, "accuracy": 1.0, "guess": 0.0}
    assert reward("<think>x</think><answer>label</answer>", "sport", "think", LABELS + ["label"])["format"] == 1.0


def test_a_completion_cut_at_the_length_limit_is_not_in_format():
    assert reward(GOOD, "sport", "gta", LABELS, truncated=True) == {"total": 1.0, "format": 0.0, "accuracy": 1.0,
                                                                     "guess": 1.0}


def test_placeholder_detection_uses_the_format_lines_words():
    from gta.prompts import placeholders

    words = placeholders("gta")
    assert words == {"guess": "label", "think": "reasoning", "answer": "label"}
    assert label_matches(" Label ", words["answer"]) and not label_matches("labels", words["answer"])
    assert not label_matches(None, "label")
