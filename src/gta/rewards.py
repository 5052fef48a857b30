"""Rule-based rewards (paper eqs. 2-4). Pure functions: each returns the total and its parts."""
from __future__ import annotations

from .prompts import label_matches, parse


def reward(completion: str, gold: str, template: str) -> dict[str, float]:
    """format (0/1) + accuracy (0/1) = total. Accuracy needs the exact format, so anything not exactly
    in format gets 0 in total. `guess` is a metric for GTA templates, never part of the reward."""
    p = parse(completion, template)
    fmt = float(p.exact)
    acc = float(p.exact and label_matches(p.answer, gold))
    out = {"total": fmt + acc, "format": fmt, "accuracy": acc}
    if template == "gta":
        out["guess"] = float(p.exact and label_matches(p.guess, gold))
    return out
