"""Rule-based rewards (paper eqs. 2-4). Pure functions: each returns the total and its parts."""
from __future__ import annotations

from .prompts import label_matches, parse


def reward(completion: str, gold: str, template: str, labels: list[str], truncated: bool = False) -> dict[str, float]:
    """format (0/1) + accuracy (0/1) = total, two independent rewards (eqs. 2-4).

    format is 1 when the whole completion is the template's tag structure, each label span (guess, answer) holds
    one of the dataset's `labels`, and the completion ended on a stop token (`truncated`: cut at
    --max-completion-length, it is not a finished output): a copy of the prompt's `<answer>label</answer>` earns
    nothing. accuracy is 1 when the text inside the completion's last `<answer>...</answer>` is the gold label
    (after case/whitespace normalisation), whatever the rest of the output. `guess` (the last
    `<guess>...</guess>`, same rule) is a metric for GTA templates, never part of the reward."""
    p = parse(completion, template, labels)
    fmt = float(p.exact and not truncated)
    acc = float(label_matches(p.answer, gold))
    out = {"total": fmt + acc, "format": fmt, "accuracy": acc}
    if template == "gta":
        out["guess"] = float(label_matches(p.guess, gold))
    return out
