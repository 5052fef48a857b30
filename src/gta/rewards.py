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


class TRLReward:
    """A TRL-style reward, `f(prompts, completions, **columns) -> list[float]`, as gta's reward: total = gta's format
    reward (0/1) + f's value, called once per step on all its completions. Accuracy and the guess are still
    measured (logged as reward/accuracy and guess/accuracy), f's mean is logged as reward/custom. The columns
    passed are `label` (the gold labels) and `text` (the input texts), one per completion."""

    def __init__(self, f):
        self.f, self.__name__ = f, getattr(f, "__name__", "reward")

    def batch(self, completions: list[str], golds: list[str], template: str, labels: list[str],
              truncated: list[bool], prompts: list[str], texts: list[str]) -> list[dict[str, float]]:
        values = self.f(prompts=prompts, completions=completions, label=golds, text=texts)
        if values is None or len(values) != len(completions):
            raise ValueError(f"reward function {self.__name__} returned {'None' if values is None else len(values)} "
                             f"values for {len(completions)} completions")
        out = []
        for c, g, cut, v in zip(completions, golds, truncated, values):
            r = reward(c, g, template, labels, cut)
            r["custom"] = float(v)
            r["total"] = r["format"] + r["custom"]
            out.append(r)
        return out


def as_reward(f):
    """A reward function as the trainer calls it: a TRL-style one (it takes `completions`) wrapped in TRLReward."""
    import inspect

    if isinstance(f, TRLReward) or "completions" not in inspect.signature(f).parameters:
        return f
    return TRLReward(f)


def load_reward(spec: str):
    """`module:function` or `path/to/file.py:function` -> the function; a TRL-style one (it takes `completions`) is
    wrapped in TRLReward. The current folder is importable, as it is for `python -m`."""
    import importlib
    import importlib.util
    import os
    import sys
    from pathlib import Path

    from .config import ConfigError

    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ConfigError(f"--reward-fn {spec!r}: write module:function or path/to/file.py:function")
    try:
        if where.endswith(".py"):
            if not Path(where).is_file():
                raise ConfigError(f"--reward-fn {spec}: no such file {where}")
            loaded = importlib.util.spec_from_file_location(Path(where).stem, where)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as e:  # the user's module failed to import: its own error, in one line
        raise ConfigError(f"--reward-fn {spec}: importing {where} failed: {type(e).__name__}: {e}") from None
    f = getattr(module, name, None)
    if not callable(f):
        raise ConfigError(f"--reward-fn {spec}: {where} has no function {name!r}")
    return as_reward(f)
