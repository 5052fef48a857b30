"""Prompt templates (one per method) and the strict output parser.

Every template asks for a tagged output and the assistant turn is *primed* with its first tag
(`<guess>`, `<think>` or `<answer>`), for every method alike: SmolLM2-135M follows the tag format
0/32 times zero-shot without priming and 5/32 with it (README, "Choices"), so without priming most
GRPO groups would start with equal rewards. The primed tag is part of the prompt tokens and counts as
the start of the completion when parsing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .config import ConfigError
from .data import normalize_label

SYSTEM = "You are a careful text classifier."
TEMPLATES = {  # template -> (instructions, output format, primed first tag)
    "gta": (
        "First guess the label, then think step by step about the text, then give the final label.",
        "<guess>label</guess><think>reasoning</think><answer>label</answer>",
        "<guess>",
    ),
    "think": (
        "Think step by step about the text, then give the final label.",
        "<think>reasoning</think><answer>label</answer>",
        "<think>",
    ),
    "direct": ("Give the label only.", "<answer>label</answer>", "<answer>"),
}
METHOD_TEMPLATE = {"sft": "direct", "grpo": "think", "gta": "gta", "gta-rl": "gta"}

_TAG = re.compile(r"</?(guess|think|answer)>")
_PATTERNS = {
    "gta": re.compile(r"\s*<guess>(.*?)</guess>\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S),
    "think": re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S),
    "direct": re.compile(r"\s*<answer>(.*?)</answer>\s*", re.S),
}


def user_message(text: str, labels: list[str], template: str, instructions: str | None = None) -> str:
    """The user turn: the task sentence (default: classify into the labels; `instructions`, e.g. "Classify the
    sentiment of the movie review.", replaces it and the labels follow it), the method's steps, the format line, the
    text."""
    steps, fmt, _ = TEMPLATES[template]
    task = (f"Classify the text into one of these labels: {', '.join(labels)}." if instructions is None else
            f"{instructions.strip()}\nThe labels: {', '.join(labels)}.")
    return f"{task}\n{steps}\nReply exactly in this format: {fmt}\n\nText: {text}"


def build_prompt(tokenizer, text: str, labels: list[str], template: str, instructions: str | None = None,
                 system: str | None = None) -> str:
    """The full prompt string: chat template with the system message (default: our short one), ending with the
    primed tag."""
    system = SYSTEM if system is None else system
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": user_message(text, labels, template, instructions)}]
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # base models without a chat template
        prompt = f"{system}\n\n{messages[1]['content']}\n\n"
    return prompt + TEMPLATES[template][2]


def prime(template: str) -> str:
    return TEMPLATES[template][2]


def span_end_token(tokenizer, ids: list[int], marker: str) -> int | None:
    """Number of leading tokens needed to cover the first `marker` in the decoded text, or None.

    Token character offsets come from decoding prefixes (robust for byte-level BPE where a single token may not
    decode to whole characters). Whether a prefix covers the marker only turns from no to yes as the prefix grows
    (a longer prefix only adds text, or completes characters cut at its end, which an ASCII marker is not part of),
    so one decode of the whole row answers "no marker" and a binary search finds the shortest covering prefix in
    O(log n) decodes: early in training most rows have no `</guess>`, and decoding every prefix of each was
    quadratic in the completion length.
    """
    covers = lambda n: marker in tokenizer.decode(ids[:n], skip_special_tokens=False)  # noqa: E731
    if not ids or not covers(len(ids)):
        return None
    lo, hi = 1, len(ids)  # covers(hi) holds; find the smallest such n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if covers(mid) else (mid + 1, hi)
    return lo


def label_tokens(tokenizer, label: str, closing: str) -> list[int]:
    """The tokens of `label` + `closing` as they stand in a whole output in the format. A tokenizer may merge a
    tag's last character with the next tag's first (SmolLM2: `</guess><think>` is `</`, `guess`, `><`, `think`,
    `>`), so the guess is tokenized with the `<think>` that follows it and cut at the token that completes
    `</guess>`: the guess span the RL loss leaves out (`rollout.guess_span_mask`). Tokenized alone it would
    end in a lone `>`, which the format never continues from: the SFT loss would teach the model to end its
    turn after the guess. `</answer>` ends the output, so the answer is tokenized alone."""
    if closing == "</guess>":
        ids = tokenizer(label + closing + "<think>", add_special_tokens=False)["input_ids"]
        end = span_end_token(tokenizer, ids, label + closing)
        if end is not None:  # None only if decoding does not give the text back; then tokenize it alone
            return ids[:end]
    return tokenizer(label + closing, add_special_tokens=False)["input_ids"]


def target_ids(tokenizer, label: str, closing: str) -> list[int]:
    """The token ids of a supervised target: gta's guess (`label_tokens` with `</guess>`), or sft's answer,
    `label</answer>` and the end of the turn."""
    return label_tokens(tokenizer, label, closing) + ([tokenizer.eos_token_id] if closing == "</answer>" else [])


def last_span(output: str, tag: str) -> str | None:
    """The text inside the last `<tag>...</tag>` of `output` (stripped), or None if it has none: the last
    closing tag and the last opening tag before it."""
    end = output.rfind(f"</{tag}>")
    start = output.rfind(f"<{tag}>", 0, end) if end >= 0 else -1
    return output[start + len(tag) + 2:end].strip() if start >= 0 else None


@dataclass
class Parsed:
    guess: str | None  # the label of the guess span: the last <guess>...</guess> (gta templates)
    think: str | None
    answer: str | None  # the label of the answer: the last <answer>...</answer>, whatever the rest of the output
    exact: bool  # in format: the template's tag structure and, given the labels, a label in each label span


LABEL_SPANS = ("guess", "answer")  # the spans that must hold a label for the output to be in format


def parse(output: str, template: str, labels: list[str] | None = None) -> Parsed:
    """Parse a completion *including* its primed first tag. Never raises.

    In format (the format reward, eq. 2): the tags appear once each, in order, nothing but whitespace outside them,
    no tag inside a span, and each label span (guess, answer) holds one of `labels` (after the case/whitespace
    normalisation of the accuracy reward). A copy of the prompt's format line (`<answer>label</answer>`) is then
    not in format. Without `labels` only the structure is checked, with non-empty label spans (for reading a
    format line itself; every score passes the labels). The spans are read whatever the format (the accuracy
    reward, eq. 3, is independent of it): each is the text inside the last pair of its tags.
    """
    if not isinstance(output, str):
        return Parsed(None, None, None, False)
    m = _PATTERNS[template].fullmatch(output)
    exact = False
    if m is not None:
        names = {"gta": ("guess", "think", "answer"), "think": ("think", "answer"), "direct": ("answer",)}[template]
        got = dict(zip(names, (g.strip() for g in m.groups())))
        known = {normalize_label(label) for label in labels} if labels is not None else None
        exact = all(_TAG.search(g) is None for g in m.groups()) and all(
            got[k] and (known is None or normalize_label(got[k]) in known) for k in names if k in LABEL_SPANS)
    return Parsed(last_span(output, "guess"), last_span(output, "think"), last_span(output, "answer"), exact)


def placeholders(template: str) -> dict[str, str]:
    """The words a copy of the template's format line would put in each span, e.g. {"think": "reasoning",
    "answer": "label"}: what the metrics count as a copied placeholder (`completions/placeholder_*`), a span that
    `label_matches` the word."""
    p = parse(TEMPLATES[template][1], template)
    spans = {"guess": p.guess, "think": p.think, "answer": p.answer}
    return {k: v for k, v in spans.items() if v}


def label_matches(predicted: str | None, gold: str) -> bool:
    return predicted is not None and normalize_label(predicted) == normalize_label(gold)


def make_prompts(tokenizer, texts: list[str], labels: list[str], template: str, max_prompt_length: int,
                 instructions: str | None = None, system: str | None = None) -> tuple[list[str], int]:
    """Prompts for many texts; a text too long for `max_prompt_length` prompt tokens is cut (its end
    dropped) so the prompt fits. Returns (prompts, number of texts truncated)."""
    build = lambda text: build_prompt(tokenizer, text, labels, template, instructions, system)  # noqa: E731
    overhead = len(tokenizer(build(""), add_special_tokens=False)["input_ids"])
    budget = max_prompt_length - overhead
    if budget < 8:
        raise ConfigError(f"--max-prompt-length {max_prompt_length} leaves {budget} tokens for the text after the "
                         f"{overhead}-token instructions; raise it")
    out, truncated = [], 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > budget:
            text = tokenizer.decode(ids[:budget])
            truncated += 1
        out.append(build(text))
    return out, truncated
