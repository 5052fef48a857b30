"""The run folder's files other than checkpoints: the config check on start and resume, metrics.jsonl and
completions.jsonl (cut back to the checkpoint on resume) and TensorBoard. Only process 0 calls the writing
functions."""
from __future__ import annotations

import json
from pathlib import Path

from .config import ConfigError, TrainConfig

# Config fields that may change on --resume without changing the steps already taken (output: the folder was moved).
# max_steps and epochs may grow (train longer: the learning-rate schedule then decays over the new total from the
# resumed step on).
RESUMABLE_CHANGES = {"output", "eval_every", "eval_limit", "save_every", "keep_checkpoints", "log_every", "max_steps", "epochs",
                     "log_completions", "save_best",
                     "report_to", "run_name"}
LOGS = ("metrics.jsonl", "completions.jsonl")  # one JSON object with a "step" per line


def check(run_dir: Path, cfg: TrainConfig, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one with settings that change the steps it took; create the folder."""
    cfg_file = run_dir / "config.json"
    if cfg_file.is_file():
        if not resume:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --output")
        old = TrainConfig.load(cfg_file).to_dict()
        changed = {k for k, v in cfg.to_dict().items() if old.get(k) != v} - RESUMABLE_CHANGES
        if changed:
            diff = ", ".join(f"{k}: {old[k]!r} -> {getattr(cfg, k)!r}" for k in sorted(changed))
            raise ConfigError(f"--resume with a changed config ({diff}); use the run's settings or a new --output")
        if (old.get("eval_every", 0) > 0) != (cfg.eval_every > 0):  # the period may change, not whether it evaluates
            raise ConfigError(f"--resume cannot turn --eval-every on or off ({old.get('eval_every', 0)} -> "
                              f"{cfg.eval_every}): without a validation split it decides which training examples "
                              "are held out")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} exists and is not empty, but holds no gta run; choose another --output")
    run_dir.mkdir(parents=True, exist_ok=True)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the metrics and completions logged after the checkpoint of `step` (those steps run again) and a line
    cut short by a kill; each file rewritten atomically."""
    for name in LOGS:
        path = run_dir / name
        if not path.is_file():
            continue
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
        tmp = path.with_name(name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)


def append_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


class MetricsLog:
    """metrics.jsonl, one line per logged step, and the --report-to backends (tracking.py)."""

    def __init__(self, run_dir: Path, tracker=None):
        self.path, self.tracker = run_dir / "metrics.jsonl", tracker

    def write(self, step: int, m: dict) -> None:
        row = {"step": step, **{k: round(v, 6) for k, v in sorted(m.items())}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log(step, m)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
