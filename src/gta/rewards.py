"""Rule-based rewards (paper eqs. 2-4). Pure functions: each returns the total and its parts."""
from __future__ import annotations

from .prompts import label_matches, parse


def reward(completion: str, gold: str, template: str) -> dict[str, float]:
    """format (0/1) + accuracy (0/1) = total, two independent rewards (eqs. 2-4): format is the strict check of
    the whole tag structure; accuracy is 1 when the text inside the completion's last `<answer>...</answer>`
    is the gold label (after case/whitespace normalisation), whatever the rest of the output. `guess` (the last
    `<guess>...</guess>`, same rule) is a metric for GTA templates, never part of the reward."""
    p = parse(completion, template)
    fmt = float(p.exact)
    acc = float(label_matches(p.answer, gold))
    out = {"total": fmt + acc, "format": fmt, "accuracy": acc}
    if template == "gta":
        out["guess"] = float(label_matches(p.guess, gold))
    return out
