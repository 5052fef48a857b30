"""The parser never raises on arbitrary output; format and accuracy are independent rewards (eqs. 2-4)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from gta.prompts import last_span, label_matches, parse
from gta.rewards import reward

TAGS = ["<guess>", "</guess>", "<think>", "</think>", "<answer>", "</answer>", "<", ">", "/"]
pieces = st.one_of(st.sampled_from(TAGS), st.sampled_from(["sport", "tech", " ", "\n", ""]), st.text(max_size=8))
outputs = st.lists(pieces, max_size=14).map("".join)


@settings(max_examples=400, deadline=None)
@given(outputs, st.sampled_from(["gta", "think", "direct"]))
def test_parser_never_raises_and_rewards_are_independent(text, template):
    p = parse(text, template, ["sport", "tech"])
    r = reward(text, "sport", template, ["sport", "tech"])
    assert r["total"] == r["format"] + r["accuracy"]
    assert r["format"] == float(p.exact)
    # accuracy reads the last <answer>...</answer> span, whether or not the rest is in format
    assert r["accuracy"] == float(label_matches(last_span(text, "answer"), "sport"))
    if p.exact:
        # exact: its label spans hold labels, and each tag of the template occurs exactly once
        assert all(s in ("sport", "tech") for s in (p.guess, p.answer) if s is not None)
        for tag in {"gta": ("guess", "think", "answer"), "think": ("think", "answer"), "direct": ("answer",)}[template]:
            assert text.count(f"<{tag}>") == 1 and text.count(f"</{tag}>") == 1


@given(st.text())
def test_parser_on_any_unicode(text):
    for template in ("gta", "think", "direct"):
        parse(text, template)
