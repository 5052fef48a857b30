"""`gta report RUN`: PNG plots of a run's metrics.jsonl and a short text summary, written to RUN/report/."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .config import ConfigError, TrainConfig

# file name -> (title, [(metric key, legend label)]); a plot is written when any of its keys was logged
PLOTS = {
    "rewards": ("Rewards (mean over the step's completions)",
                [("reward/total", "total"), ("reward/format", "format"), ("reward/accuracy", "accuracy")]),
    "guess": ("Guess accuracy", [("guess/accuracy", "train (rollouts)"), ("eval/guess_accuracy", "held-out")]),
    "eval": ("Held-out evaluation", [("eval/accuracy", "accuracy"), ("eval/f1", "weighted F1")]),
    "loss": ("Losses", [("loss/rl", "RL"), ("loss/sft", "SFT")]),
    "conflict": ("Gradient conflict (gta)",
                 [("conflict/cosine", "cos(g_SFT, g_RL)"), ("conflict/sft_dropped", "SFT dropped (rolling mean)")]),
    "grad_norms": ("Gradient norms before clipping",
                   [("grad_norm", "applied"), ("grad_norm/sft", "g_SFT"), ("grad_norm/rl", "g_RL")]),
    "rl_share": ("RL share of the update, ||lambda2 g_RL|| / ||applied||", [("rl_share", "rl_share")]),
    "completion_length": ("Completion length (tokens)", [("completion_length", "mean")]),
}
ROLLING = {"conflict/sft_dropped"}  # 0/1 per step: shown as a rolling mean
LOG_SCALE = {"grad_norms"}


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not (Path(run_dir) / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a gta run folder (no config.json)")
    if not path.is_file():
        raise ConfigError(f"{path} does not exist yet: the run has logged no step")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return rows


def rolling_mean(values: list[float], window: int = 16) -> list[float]:
    return [statistics.mean(values[max(0, i + 1 - window):i + 1]) for i in range(len(values))]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if key in r]
    steps, values = [p[0] for p in pts], [p[1] for p in pts]
    return steps, rolling_mean(values) if key in ROLLING else values


def plot(rows: list[dict], out: Path) -> list[Path]:
    """One PNG per plot of PLOTS whose metrics the run logged; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (title, keys) in PLOTS.items():
        present = [(k, label) for k, label in keys if any(k in r for r in rows)]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plotted = []
        for key, label in present:
            steps, values = series(rows, key)
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, label=label)
            plotted += values
        if name in LOG_SCALE and all(v > 0 for v in plotted):
            ax.set_yscale("log")
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def summary(run_dir: Path, rows: list[dict]) -> str:
    cfg = TrainConfig.load(Path(run_dir) / "config.json")
    lines = [f"run {run_dir}: method {cfg.method}, model {cfg.model}, dataset {cfg.dataset}, "
             f"{rows[-1]['step'] if rows else 0} steps logged"]

    def mean(key, part=slice(None)):
        values = [r[key] for r in rows[part] if key in r]
        return statistics.mean(values) if values else None

    quarter = max(1, len(rows) // 4)
    for key in ("reward/total", "reward/format", "reward/accuracy", "guess/accuracy", "loss/sft",
                "completion_length"):
        first, last = mean(key, slice(0, quarter)), mean(key, slice(-quarter, None))
        if first is not None:
            lines.append(f"  {key:<20} first quarter {first:8.3f}   last quarter {last:8.3f}")
    evals = [r for r in rows if "eval/accuracy" in r]
    if evals:
        best = max(evals, key=lambda r: r["eval/accuracy"])
        lines.append(f"  held-out accuracy    last {evals[-1]['eval/accuracy']:.3f} (step {evals[-1]['step']}), "
                     f"best {best['eval/accuracy']:.3f} (step {best['step']})")
    if any("conflict/sft_dropped" in r for r in rows):
        lines.append(f"  SFT gradient dropped on {mean('conflict/sft_dropped'):.1%} of updates; mean cosine "
                     f"{mean('conflict/cosine'):+.3f}")
    if any("rl_share" in r for r in rows):
        med = {k: statistics.median(r[k] for r in rows if k in r) for k in ("grad_norm/sft", "grad_norm/rl", "rl_share")}
        lines.append(f"  medians: ||g_SFT|| {med['grad_norm/sft']:.3g}, ||g_RL|| {med['grad_norm/rl']:.3g}, "
                     f"rl_share {med['rl_share']:.3f}")
    if any("step_time_s" in r for r in rows):
        lines.append(f"  mean step time {mean('step_time_s'):.2f} s")
    return "\n".join(lines + completions_sample(run_dir))


def completions_sample(run_dir: Path, n: int = 3, width: int = 100) -> list[str]:
    """A few of the last logged step's sampled completions (completions.jsonl): gold, the spans, reward, advantage."""
    path = Path(run_dir) / "completions.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    if not records:
        return []
    last = [r for r in records if r["step"] == records[-1]["step"]][:n]
    lines = [f"  completions at step {last[0]['step']} (of completions.jsonl):"]
    for r in last:
        spans = ", ".join(f"{k} {r[k]!r}" for k in ("guess", "answer") if k in r)
        think = r.get("think")
        think = f", think {think[:width] + '...' if len(think) > width else think!r}" if think else ""
        lines.append(f"    gold {r['gold']!r}: {spans}{think}; reward {r['reward/total']:g}, advantage "
                     f"{r['advantage']:+.2f}")
    return lines


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[list[Path], str]:
    """Write RUN/report/*.png and RUN/report/summary.txt; returns the PNG paths and the summary text."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    out = Path(out) if out else run_dir / "report"
    pngs = plot(rows, out)
    text = summary(run_dir, rows)
    (out / "summary.txt").write_text(text + "\n")
    return pngs, text
