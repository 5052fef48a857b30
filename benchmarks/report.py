"""Write docs/results.md, docs/figures/DATASET.png and README.md's results table and "What to expect" paragraph
from benchmarks/results. No number is typed by hand.

    python benchmarks/report.py

Only runs whose code descends from FORMAT_RULE_FIX are reported (the runs before it measured a prompt artefact);
the others are named as pending. docs/results-history.md summarises the earlier runs, which git keeps.
"""
from __future__ import annotations

import functools
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from paper import CODES  # noqa: E402  (benchmarks/paper.py: the one-character label codes its results files keep)

RESULTS, DOC, FIGS = ROOT / "benchmarks" / "results", ROOT / "docs" / "results.md", ROOT / "docs" / "figures"
README = ROOT / "README.md"
# README.md's blocks written by this script, each between its two marker lines
TABLE = ("<!-- results table: written by benchmarks/report.py -->", "<!-- end of results table -->")
EXPECT = ("<!-- what to expect: written by benchmarks/report.py -->", "<!-- end of what to expect -->")
DATASETS = ["sst5", "massive_scenario", "emotion", "bbc_news"]
TITLES = {"sst5": "SST-5", "massive_scenario": "MASSIVE scenario", "emotion": "Emotion", "bbc_news": "BBC News"}
METHODS = {"base-direct": "base, direct prompt", "base-think": "base, think prompt", "sft": "SFT", "grpo": "GRPO",
           "gta": "GTA", "gta-rl": "GTA(RL)"}
RL_RUNS = ("grpo", "gta", "gta-rl", "gta-project", "gta-none")
COLORS = {"sft": "C0", "grpo": "C1", "gta": "C2", "gta-rl": "C3", "gta-project": "C4", "gta-none": "C5"}
# The paper's Table 2 (Qwen2.5-3B row; its "Amazon" is MASSIVE scenario) and Table 3 (SST-5): accuracy, weighted F1
PAPER = {
    "sst5": {"base-direct": (11.76, 13.34), "sft": (60.72, 59.59), "grpo": (58.60, 57.05), "gta": (61.58, 61.52),
             "gta-rl": (57.42, 56.52)},
    "massive_scenario": {"base-direct": (54.84, 55.48), "sft": (91.96, 91.92), "grpo": (90.82, 91.03),
                         "gta": (92.47, 92.46)},
    "emotion": {"base-direct": (58.75, 58.63), "sft": (91.35, 91.41), "grpo": (82.50, 81.54), "gta": (92.45, 92.47)},
    "bbc_news": {"base-direct": (81.50, 82.88), "sft": (97.70, 97.70), "grpo": (95.40, 95.47), "gta": (98.50, 98.50)},
}
# From this commit the format reward needs a label in each label span and a stop token: before it, a copy of the
# prompt's format line (`<answer>label</answer>`) earned the reward, and the RL runs measured that artefact.
FORMAT_RULE_FIX = "8e4a67f"
# The conflict-rule ablation (paper.py --ablation): run, rule, the metric counting the updates the rule changed
ABLATION = (("gta", "drop (eq. 11)", "conflict/sft_dropped"),
            ("gta-project", "project (PCGrad)", "conflict/sft_projected"),
            ("gta-none", "none", None))
EDGE = 16  # steps averaged at the start and at the end of training


# ---------------------------------------------------------------------------------------------------- loading

@functools.cache
def after_fix(commit: str) -> bool:
    """Whether a run's recorded commit ("2daa8c6", "2daa8c6+changes") descends from FORMAT_RULE_FIX."""
    sha = commit.split("+")[0].split()[0]
    return subprocess.run(["git", "merge-base", "--is-ancestor", FORMAT_RULE_FIX, sha], cwd=ROOT,
                          capture_output=True).returncode == 0


def load(folder: Path) -> tuple[dict, list[str]]:
    """{dataset: results} of folder/DATASET.json keeping the runs on code at or after FORMAT_RULE_FIX, and the
    "dataset run" names of the runs left out."""
    results, stale = {}, []
    for ds in DATASETS:
        path = folder / f"{ds}.json"
        if path.is_file():
            res = json.loads(path.read_text())
            old = [n for n, r in res["runs"].items() if not all(after_fix(c) for c in r.get("code") or ["?"])]
            stale += [f"{ds} {n}" for n in old]
            res["runs"] = {n: r for n, r in res["runs"].items() if n not in old}
            results[ds] = res
    return results, stale


def load_all(root: Path) -> tuple[dict, dict, list[str]]:
    """Seed 0's results, {dataset: {seed: results}} of every seed (root/seedN/ holds seed N's, same subsets), and
    the runs left out."""
    results, stale = load(root)
    seeds = {ds: {res["protocol"]["seed"]: res} for ds, res in results.items()}
    for folder in sorted(root.glob("seed*")):
        if folder.is_dir() and folder.name[4:].isdigit():
            other, old = load(folder)
            stale += [f"{s} (seed {folder.name[4:]})" for s in old]
            for ds, res in other.items():
                seeds.setdefault(ds, {})[int(folder.name[4:])] = res
    return results, seeds, stale


def pending(seeds: dict, stale: list[str]) -> list[str]:
    """The protocol's runs not yet on the current code: seed 0's every method, and SFT and GTA with seed 1."""
    want = {0: ["base-direct", "base-think", "sft", "grpo", "gta"], 1: ["sft", "gta"]}
    missing = [f"{ds} {n}" + (f" (seed {s})" if s else "") for ds in DATASETS for s, names in want.items()
               for n in names + (["gta-rl"] if ds == "sst5" and s == 0 else [])
               if n not in seeds.get(ds, {}).get(s, {}).get("runs", {})]
    return missing + [s for s in stale if s not in missing]  # a left-out run of another name (an ablation's)


def span(xs: list[float], fmt=lambda x: f"{x:g}") -> str:
    lo, hi = fmt(min(xs)), fmt(max(xs))
    return lo if lo == hi else f"{lo}-{hi}"


def tfidf_results() -> dict:
    path = RESULTS / "tfidf.json"
    return json.loads(path.read_text())["datasets"] if path.is_file() else {}


# ------------------------------------------------------------------------------------------------- statistics

def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def wilson(p: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion (sound at 0 and 1, where the normal one collapses)."""
    z = 1.96
    scale = 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / scale, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return max(0.0, mid - half), min(1.0, mid + half)


def f1_weighted(gold, pred, k: int):
    """Weighted F1 over the k gold labels, as scikit-learn's f1_score(average="weighted") with the labels given:
    per label 2 tp / (support + predicted), weighted by support. gold, pred: integer arrays (..., n); pred -1
    (not a label) is wrong for every label. Vectorised over leading axes, for the bootstrap."""
    import numpy as np

    out = np.zeros(gold.shape[:-1])
    for c in range(k):
        g, p = gold == c, pred == c
        support = g.sum(-1)
        denom = support + p.sum(-1)
        out += np.where(denom > 0, 2 * (g & p).sum(-1) / np.maximum(denom, 1), 0.0) * support
    return out / gold.shape[-1]


def f1_interval(answers: dict, resamples: int = 1000) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the weighted F1 over the test examples (seeded), from the per-example
    gold and predicted labels a results file records; None where it does not."""
    import numpy as np

    if not answers or "predicted" not in answers:
        return None
    gold, pred = decode(answers["gold"]), decode(answers["predicted"])
    idx = np.random.default_rng(0).integers(0, len(gold), (resamples, len(gold)))
    lo, hi = np.quantile(f1_weighted(gold[idx], pred[idx], int(gold.max()) + 1), [0.025, 0.975])
    return float(lo), float(hi)


def decode(codes: str):
    """paper.label_codes' string as an integer array (-1: not a label)."""
    import numpy as np

    return np.array([CODES.find(c) for c in codes])


def paired(a: dict, b: dict) -> tuple[float, float]:
    """Accuracy of a minus b and the half-width of its 95% interval over the same test examples (normal
    approximation of the paired difference, from the examples exactly one of them gets right). a, b: an eval
    result with "correct" (a string of 0/1 in test order), as runs' answers and tfidf.json's entries have."""
    ca, cb = a["correct"], b["correct"]
    n = len(ca)
    only_a, only_b = sum(x > y for x, y in zip(ca, cb)), sum(x < y for x, y in zip(ca, cb))
    diff = (only_a - only_b) / n
    return diff, 1.96 * math.sqrt(max(0.0, (only_a + only_b) / n - diff ** 2) / n)


def sign_test(k: int, m: int) -> float:
    """Exact two-sided sign test (McNemar's exact test) of a k : m split."""
    n = k + m
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(k, m) + 1)) / 2 ** n) if n else 1.0


def decide(diffs: list[tuple[float, float]]) -> str:
    """A claim "x > y" from its paired differences (one per seed): held when every seed's is above 0 beyond its test
    interval, reversed when every seed's is below, otherwise not shown."""
    if diffs and all(d - h > 0 for d, h in diffs):
        return "held"
    if diffs and all(d + h < 0 for d, h in diffs):
        return "reversed"
    return "not shown"


def diff_text(diffs: list[tuple[int, float, float]]) -> str:
    return "; ".join(f"seed {s}: {100 * d:+.1f} ± {100 * h:.1f}" for s, d, h in diffs)


def mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return sum(vals) / len(vals) if vals else None


# ----------------------------------------------------------------------------------------------------- sections

def protocol(p: dict) -> list[str]:
    """The protocol in five lines, from the results file's settings."""
    steps = p["train_limit"] * p["epochs"] // p["batch_size"]
    return [
        f"- **Model and data**: {p['model']}, full fine-tuning; every method trains on the same seeded stratified "
        f"{p['train_limit']} training examples ({p['epochs']} pass, {steps} steps of {p['batch_size']} prompts, "
        f"AdamW lr {p['learning_rate']:g}, linear decay) and is scored on the same seeded stratified "
        f"{p['test_limit']:,} test examples.",
        f"- **RL**: G={p['num_generations']} samples per prompt, mu={p['num_iterations']}, beta={p['beta']:g}, "
        f"epsilon={p['epsilon']:g}, reference refreshed every {p['ref_sync_steps']} steps, at most "
        f"{p['max_completion_length']} new tokens, prompts cut to {p['max_prompt_length']} tokens (the paper: G=16, "
        "mu=4, 3-4 epochs, 3-4B models; its full-scale commands are in [gpu.md](gpu.md)).",
        "- **Rewards**: format (0/1: each label span holds a label, then a stop token) + accuracy of the answer (0/1), "
        "the same rule for every method; the guess is SFT-trained in GTA, RL-trained in GTA(RL).",
        "- **Precision**: bf16 autocast where the CPU has native bf16, else float32; 2 CPU threads. Curves: accuracy "
        f"on {p['eval_limit']} held-out examples every {p['eval_every']} steps.",
        "- **Baselines**: the base model zero-shot (direct and think prompts); TF-IDF + logistic regression on the "
        "same training examples and on the whole train split (`benchmarks/tfidf.py`).",
    ]


def cell(run: dict) -> tuple[str, str]:
    """'acc (lo-hi)' and 'F1 (lo-hi)' of a run or a TF-IDF entry, in %."""
    ev = run.get("eval", run)
    lo, hi = wilson(ev["accuracy"], ev.get("n") or ev["n_test"])
    f1 = f1_interval(run.get("answers") or run)
    return (f"{pct(ev['accuracy'])} ({pct(lo)}-{pct(hi)})",
            pct(ev["f1_weighted"]) + (f" ({pct(f1[0])}-{pct(f1[1])})" if f1 else ""))


def main_table(seeds: dict, tfidf: dict) -> list[str]:
    rows = ["| dataset | method | accuracy (95% CI) | weighted F1 (95% CI) | other seeds: acc / F1 | "
            "paper, Qwen2.5-3B: acc / F1 |", "|---|---|---|---|---|---|"]
    for ds in DATASETS:
        by_seed = seeds.get(ds, {})
        base = by_seed.get(0, {"runs": {}})["runs"]
        for name, title in METHODS.items():
            if name == "gta-rl" and ds != "sst5":
                continue
            others = ", ".join(f"{s}: {pct(r['runs'][name]['eval']['accuracy'])} / "
                               f"{pct(r['runs'][name]['eval']['f1_weighted'])}"
                               for s, r in sorted(by_seed.items()) if s != 0 and name in r["runs"])
            paper = " / ".join(f"{x:.1f}" for x in PAPER[ds].get(name, ())) or "—"
            acc, f1 = cell(base[name]) if name in base else ("pending", "")
            rows.append(f"| {TITLES[ds]} | {title} | {acc} | {f1} | {others or '—'} | {paper} |")
        for key, title in (("subset", "TF-IDF + LR, same examples"), ("full", "TF-IDF + LR, whole train split")):
            if key in tfidf.get(ds, {}):
                lr = tfidf[ds][key]
                acc, f1 = cell(lr)
                rows.append(f"| {TITLES[ds]} | {title} ({lr['n_train']:,}) | {acc} | {f1} | — | — |")
    return rows


def verdicts(results: dict, seeds: dict, tfidf: dict) -> list[str]:
    """One row per claim and dataset: the figures that decide it and the verdict (see decide())."""
    rows = []

    def seed_diffs(ds, a, b):
        return [(s, *paired(r["runs"][a]["answers"], r["runs"][b]["answers"]))
                for s, r in sorted(seeds.get(ds, {}).items()) if a in r["runs"] and b in r["runs"]]

    for ds in DATASETS:
        d = seed_diffs(ds, "gta", "sft")
        if d:
            rows.append(f"| GTA > SFT (accuracy) | {TITLES[ds]} | GTA - SFT {diff_text(d)} | "
                        f"**{decide([x[1:] for x in d])}** |")
    for ds in DATASETS:
        runs = results.get(ds, {}).get("runs", {})
        if "gta" in runs and "grpo" in runs:
            train, held = ({n: mean(runs[n]["metrics"], k) for n in ("gta", "grpo")}
                           for k in ("reward/accuracy", "eval/accuracy"))
            if None in (*train.values(), *held.values()):  # a run without held-out evaluations: nothing to compare
                continue
            diff = held["gta"] - held["grpo"]
            # the interval of one held-out evaluation's difference (eval_limit examples each): the curve's points
            # score the same examples, so their mean is no surer than one point, at worst
            n = results[ds]["protocol"]["eval_limit"]
            half = 1.96 * math.sqrt(sum(held[k] * (1 - held[k]) / n for k in held))
            rows.append(f"| GTA converges faster than GRPO (held-out curve means, seed 0) | {TITLES[ds]} | held-out "
                        f"accuracy GTA - GRPO {100 * diff:+.1f} ± {100 * half:.1f} (training accuracy reward "
                        f"{train['gta']:.2f} vs {train['grpo']:.2f}) | **{decide([(diff, half)])}** |")
    d = seed_diffs("sst5", "gta", "gta-rl")
    if d:
        rows.append(f"| GTA(SFT+RL) > GTA(RL) | {TITLES['sst5']} | GTA - GTA(RL) {diff_text(d)} | "
                    f"**{decide([x[1:] for x in d])}** |")
    for ds in DATASETS:
        tr = results.get(ds, {}).get("runs", {}).get("gta", {}).get("transitions")
        if tr:
            k, m = tr["counts"]["wrong->right"], tr["counts"]["right->wrong"]
            p = sign_test(k, m)
            verdict = "not shown" if p >= 0.05 else ("held" if k > m else "reversed")
            rows.append(f"| The answer corrects the guess | {TITLES[ds]} | wrong->right {k}, right->wrong {m} "
                        f"(answer != guess on {tr['changed']['answer != guess']} of {tr['changed']['n']}); sign test "
                        f"p = {p:.2g} | **{verdict}** |")
    for ds in DATASETS:
        runs, lr = results.get(ds, {}).get("runs", {}), tfidf.get(ds, {}).get("subset")
        if lr and "gta" in runs:
            diff, half = paired(runs["gta"]["answers"], lr)
            rows.append(f"| GTA > TF-IDF + LR on the same examples | {TITLES[ds]} | GTA - TF-IDF {100 * diff:+.1f} ± "
                        f"{100 * half:.1f} | **{decide([(diff, half)])}** |")
    if not rows:
        return ["No claim can be decided yet: no run of the current code has finished.", ""]
    return ["Held: the difference exceeds its 95% test interval on every seed run; reversed: it is below on every "
            "seed; not shown: otherwise. Accuracy differences are paired over the same test examples, in points; "
            "convergence compares the mean of the held-out curves, with the interval of a single held-out evaluation; "
            "the guess -> answer counts use an exact sign test.", "",
            "| claim | dataset | figures | verdict |", "|---|---|---|---|", *rows, ""]


def ablation(results: dict) -> list[str]:
    """GTA under eq. 11's drop (the `gta` run), PCGrad's projection and no rule, same seed, subsets and settings."""
    rows, verdict = [], []
    for ds in DATASETS:
        runs = results.get(ds, {}).get("runs", {})
        if not any(n in runs for n, _, _ in ABLATION[1:]):
            continue
        for name, rule, key in ABLATION:
            r = runs.get(name)
            if not r:
                rows.append(f"| {TITLES[ds]} | {rule} | not run yet | | | | | |")
                continue
            m = r["metrics"]
            changed = ("— (none by design)" if key is None else
                       pct(mean(m, key)) if all(key in x for x in m) else "not recorded")
            acc, f1 = cell(r)
            share, cos = (f"{v:.2f}" if (v := mean(m, k)) is not None else "—"
                          for k in ("rl_share", "conflict/update_cosine_rl"))
            code = ", ".join(f"`{c}`" for c in r.get("code") or [])
            rows.append(f"| {TITLES[ds]} | {rule} | {acc} | {f1} | {changed} | {share} | {cos} | {code} |")
        if all(n in runs for n, _, _ in ABLATION):
            parts = []
            for name, rule in (("gta", "drop"), ("gta-project", "project")):
                diff, half = paired(runs[name]["answers"], runs["gta-none"]["answers"])
                parts.append(f"{rule} - none {100 * diff:+.1f} ± {100 * half:.1f} (**{decide([(diff, half)])}**)")
            verdict.append(f"- {TITLES[ds]}: " + "; ".join(parts))
    if not rows:
        return ["Not run yet: `python benchmarks/paper.py --dataset emotion --ablation` (and massive_scenario) adds "
                "GTA with `--conflict project` and `--conflict none` beside the `gta` run (eq. 11's drop).", ""]
    return ["Updates changed: the share of updates whose g_SFT the rule dropped or projected. rl_share: mean "
            "||g_RL|| / ||applied gradient||. Update vs g_RL: mean cosine of the AdamW update with g_RL.", "",
            "| dataset | rule | accuracy (95% CI) | weighted F1 (95% CI) | updates changed (%) | rl_share | "
            "update vs g_RL | code |",
            "|---|---|---|---|---|---|---|---|", *rows, "",
            "Does eq. 11 matter at this scale? Accuracy against no rule, paired, in points:", "",
            *(verdict or ["- not decided until a dataset has all three rules"]), ""]


def diagnostics(seeds: dict) -> list[str]:
    rows = []
    for ds in DATASETS:
        for s, res in sorted(seeds.get(ds, {}).items()):
            for name in RL_RUNS:
                if r := res["runs"].get(name):
                    rows.append(f"| {TITLES[ds]} | {name} | {s} | " + " | ".join(diagnostic_cells(r)) + " |")
    if not rows:
        return ["No RL run of the current code has finished yet.", ""]
    return ["Test outputs: the share whose think / answer span is the prompt's format-line word (`reasoning`, "
            "`label`), the think span's median length in tokens and the share of think spans that are a label name, "
            "how many labels the answers use, and (GTA) how often the answer differs from the guess and how many of "
            "those changes are right. Training: mean entropy of the sampled tokens (nats) and the share of groups "
            f"whose G rewards were all equal (no RL signal) over the first and the last {EDGE} steps, and the mean "
            "|log pi_sampler - log pi_old| per sampled token.", "",
            "| dataset | run | seed | placeholder think / answer (%) | think tokens | think is a label (%) | labels "
            "used | answer != guess (% / right %) | entropy | uninformative groups (%) | sampler gap |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]


def diagnostic_cells(r: dict) -> list[str]:
    a, m, ph = r.get("answers") or {}, r["metrics"], r["eval"].get("placeholder_rate") or {}
    tokens = a.get("think_tokens") or []
    used = len(set(a["predicted"]) - {"-"}) if "predicted" in a else None
    c = (r.get("transitions") or {}).get("changed")
    changed = (f"{pct(c['answer != guess'] / c['n'])} / "
               f"{pct(c['of which right'] / c['answer != guess']) if c['answer != guess'] else '—'}") if c else "—"
    labels = r["eval"]["confusion_matrix"]["labels"][:-1]

    def edge(key, scale=1.0, fmt="{:.2f}"):
        head, tail = mean(m[:EDGE], key), mean(m[-EDGE:], key)
        return "—" if head is None else f"{fmt.format(scale(head))} -> {fmt.format(scale(tail))}"

    gap = mean(m, "rollout/logprob_gap")
    label = pct(a["think_label"] / a["think_n"]) if a.get("think_n") and "think_label" in a else "—"
    return [f"{pct(ph.get('think'))} / {pct(ph.get('answer'))}", f"{statistics.median(tokens):g}" if tokens else "—",
            label,
            f"{used} of {len(labels)}" if used is not None else "—", changed, edge("entropy", lambda x: x),
            edge("groups/informative", lambda x: 100 * (1 - x), "{:.0f}"), f"{gap:.4f}" if gap is not None else "—"]


def think_figures(results: dict) -> tuple[list[float], list[float]] | None:
    """The RL runs' median think-span lengths (tokens), and the share of their think spans (of outputs in the
    format) that are the format line's placeholder or a label name: no reasoning either way."""
    rl = [r.get("answers") or {} for res in results.values() for n, r in res["runs"].items() if n in RL_RUNS]
    tokens = [statistics.median(a["think_tokens"]) for a in rl if a.get("think_tokens")]
    empty = [(a["think_placeholder"] + a["think_label"]) / a["think_n"] for a in rl
             if a.get("think_n") and "think_label" in a]
    return (tokens, empty) if tokens and empty else None


def guess_changes(results: dict) -> list[tuple[str, float, float | None]]:
    """(dataset, share of GTA's test outputs whose answer differs from the guess, share of those that are right)."""
    out = []
    for ds, res in results.items():
        if c := (res["runs"].get("gta", {}).get("transitions") or {}).get("changed"):
            k = c["answer != guess"]
            out.append((ds, k / c["n"], c["of which right"] / k if k else None))
    return out


def observations(results: dict) -> list[str]:
    """What the diagnostics say, in sentences whose numbers are computed here."""
    out = []
    if fig := think_figures(results):
        tokens, empty = fig
        out.append(f"- **Think spans**: over the {len(tokens)} RL runs the think span's median length is "
                   f"{span(tokens)} tokens, and {span(empty, lambda x: pct(x, 0))}% of their think spans are the "
                   "format line's word `reasoning` or a label name.")
    if changes := guess_changes(results):
        out.append("- **Answer vs guess (GTA)**: the answer differs from the guess on " + ", ".join(
            f"{pct(k)}% ({TITLES[ds]}{f', {pct(r, 0)}% of those right' if r is not None else ''})"
            for ds, k, r in changes) + " of test outputs; where it rarely differs, GTA's score is its guess's, "
            "which SFT trains.")
    rl = [(ds, n, r) for ds, res in results.items() for n, r in res["runs"].items() if n in RL_RUNS]
    narrow = [(ds, n, r, len(set(a["predicted"]) - {"-"}), len(r["eval"]["confusion_matrix"]["labels"]) - 1)
              for ds, n, r in rl if "predicted" in (a := r.get("answers") or {})]
    narrow = [x for x in narrow if x[3] <= x[4] / 2]
    if narrow:
        out.append("- **Answers collapse onto a few labels**: " + ", ".join(
            f"{n} on {TITLES[ds]} answers {used} of {k} labels (entropy "
            f"{mean(r['metrics'][:EDGE], 'entropy') or 0:.2f} -> {mean(r['metrics'][-EDGE:], 'entropy') or 0:.2f} nats)"
            for ds, n, r, used, k in narrow) + " on the whole test subset.")
    silent = [(ds, n, 1 - v) for ds, n, r in rl if (v := mean(r["metrics"][-EDGE:], "groups/informative")) is not None]
    if silent:
        ds, n, worst = max(silent, key=lambda x: x[2])
        out.append(f"- **RL signal**: over the last {EDGE} steps, the share of groups whose G rewards were all equal "
                   f"(no advantage) is {span([x[2] for x in silent], lambda x: pct(x, 0))}% "
                   f"(highest: {n} on {TITLES[ds]}).")
    return out or ["- No RL run of the current code has finished yet."]


def runs_table(seeds: dict) -> list[str]:
    rows = []
    for ds in DATASETS:
        for s, res in sorted(seeds.get(ds, {}).items()):
            if not res["runs"]:
                continue
            kinds = sorted({cpu(r.get("machine") or res["machine"]) for r in res["runs"].values()})
            code = sorted({c for r in res["runs"].values() for c in r.get("code") or []})
            minutes = ", ".join(f"{n} {round((r.get('train_wall_s', 0) + r.get('eval_wall_s', 0)) / 60)}"
                                for n, r in res["runs"].items())
            alone = "no (shared the CPU; timing_note in the results file)" if res.get("timing_note") else "yes"
            rows.append(f"| {TITLES[ds]} | {s} | {'; '.join(kinds)} | {', '.join(f'`{c}`' for c in code)} | "
                        f"{minutes} | {alone} |")
    return ["| dataset | seed | machine | code | minutes (train + test) | ran alone |", "|---|---|---|---|---|---|",
            *rows, ""] if rows else []


def cpu(m: dict) -> str:
    model = f" ({m['cpu_id']})" if m.get("cpu_id") else ""
    return f"{m['cpu']}{model}, {'bf16' if m.get('bf16_native') else 'float32'}, {m.get('threads', '?')} threads"


def plot(results: dict) -> list[str]:
    """Per dataset with RL runs: training accuracy reward, held-out accuracy, entropy and uninformative groups."""
    have = [ds for ds in DATASETS if any(n in results.get(ds, {}).get("runs", {}) for n in RL_RUNS)]
    if not have:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGS.mkdir(parents=True, exist_ok=True)
    made = []
    for ds in have:
        runs = results[ds]["runs"]
        fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
        panels = (("reward/accuracy", "training accuracy reward"), ("eval/accuracy", "held-out accuracy"),
                  ("entropy", "sampled-token entropy (nats)"), ("groups/informative", "uninformative groups (%)"))
        for ax, (key, title) in zip(axes, panels):
            for name, r in runs.items():
                rows = [x for x in r.get("metrics") or [] if key in x]
                if not rows or (name not in RL_RUNS and key != "eval/accuracy"):
                    continue
                ys = [100 * (1 - x[key]) if key == "groups/informative" else x[key] for x in rows]
                held = key == "eval/accuracy"
                ax.plot([x["step"] for x in rows], ys if held else smooth(ys), label=name, color=COLORS.get(name),
                        marker="o" if held else None)
                if key == "reward/accuracy" and name == "gta":  # the guess's accuracy beside the answer's
                    ax.plot([x["step"] for x in rows], smooth([x["guess/accuracy"] for x in rows]), label="gta guess",
                            color=COLORS.get(name), ls="--")
            ax.set(title=f"{TITLES[ds]}: {title}", xlabel="step")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(FIGS / f"{ds}.png", dpi=80)
        plt.close(fig)
        made.append(f"{ds}.png")
    for old in FIGS.glob("*.png"):  # the folder is this script's: a figure of runs no longer reported goes
        if old.name not in made:
            old.unlink()
    return made


def smooth(xs: list[float], k: int = 8) -> list[float]:
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


# ------------------------------------------------------------------------------------------------------ README

def readme_table(results: dict, tfidf: dict) -> list[str]:
    out = ["| dataset (test accuracy %) | base zero-shot (direct) | SFT | GRPO | GTA | GTA(RL) | TF-IDF + LR, same "
           "examples / whole train split |", "|---|---:|---:|---:|---:|---:|---:|"]
    for ds in DATASETS:
        runs = results.get(ds, {}).get("runs", {})
        cells = [pct(runs[n]["eval"]["accuracy"]) if n in runs else "—" if n == "gta-rl" and ds != "sst5" else
                 "pending" for n in ("base-direct", "sft", "grpo", "gta", "gta-rl")]
        lr = " / ".join(pct(tfidf[ds][k]["accuracy"]) if k in tfidf.get(ds, {}) else "—" for k in ("subset", "full"))
        out.append(f"| {TITLES[ds]} | " + " | ".join(cells) + f" | {lr} |")
    return out


def what_to_expect(results: dict, tfidf: dict) -> list[str]:
    """README's paragraph: what these measurements and the literature say a user should expect."""
    text = "**What to expect.**"
    if fig := think_figures(results):
        tokens, empty = fig
        none = max(tokens) <= 4 and min(empty) >= 0.9  # a few tokens, nearly always a placeholder or a label
        text += (" At 135M parameters " + ("the think span holds no reasoning: its" if none else "the think span's") +
                 f" median length is {span(tokens)} tokens over the RL runs of docs/results.md, and "
                 f"{span(empty, lambda x: pct(x, 0))}% of their think spans are the format line's placeholder word or "
                 "a label name.")
    if changes := guess_changes(results):
        same = max(k for _, k, _ in changes) < 0.1  # the answer (nearly) always repeats the guess
        where = ", ".join(f"{pct(k)}% ({TITLES[ds]})" for ds, k, _ in changes)
        text += f" GTA's answer differs from its guess on {where} of test outputs" + (
            ": GTA is, in effect, SFT with a guess." if same else ".")
    gaps = [(ds, *paired(res["runs"]["gta"]["answers"], res["runs"]["sft"]["answers"])) for ds, res in results.items()
            if "gta" in res["runs"] and "sft" in res["runs"]]
    if gaps:
        text += (" GTA - SFT test accuracy: " + ", ".join(f"{TITLES[ds]} {100 * d:+.1f} ± {100 * h:.1f}"
                                                         for ds, d, h in gaps) + " points.")
    bars = [(ds, tfidf[ds]["subset"]["accuracy"], res["runs"]["gta"]["eval"]["accuracy"]) for ds, res in results.items()
            if "gta" in res["runs"] and "subset" in tfidf.get(ds, {})]
    if bars:
        text += (" At this scale TF-IDF + logistic regression on the same examples (" + ", ".join(
            f"{TITLES[ds]} {pct(lr)} vs GTA {pct(g)}" for ds, lr, g in bars) + ") or a fine-tuned encoder is the bar.")
    text += (" The paper's gains are with 3-4B models, G=16 and several epochs, where the model writes reasoning "
             "that RL can shape; the smaller the model, the less RL alone gives (DeepSeek-R1, Guo et al. 2025: on a "
             "32B model, distilling a larger model's reasoning beat large-scale RL). In a run of your own, watch "
             "`groups/informative` (no informative group, no RL signal), `rl_share` (how much of each update is RL's), "
             "`entropy` (a fall to ~0 is a collapse onto one output) and, in `gta eval`, how often the answer differs "
             "from the guess and whether those changes are right.")
    return [text]


def replace_block(text: str, markers: tuple[str, str], lines: list[str]) -> str:
    head, rest = text.split(markers[0], 1)
    return head + "\n".join([markers[0], *lines, markers[1]]) + rest.split(markers[1], 1)[1]


# -------------------------------------------------------------------------------------------------------- main

def main() -> None:
    results, seeds, stale = load_all(RESULTS)
    tfidf = tfidf_results()
    p = next((r["protocol"] for r in results.values()), None)
    out = ["# Results at CPU scale", "",
           "Written by `python benchmarks/report.py` from `benchmarks/results/` (`python benchmarks/paper.py --dataset "
           "NAME [--seed N] [--ablation]`, `python benchmarks/tfidf.py`; every run: `bash benchmarks/paper_all.sh`); "
           "do not edit by hand. Only runs on code at "
           f"or after `{FORMAT_RULE_FIX}` are reported (before it the format reward was won by copying the prompt's "
           "placeholder); earlier runs: [results-history.md](results-history.md).", ""]
    if todo := pending(seeds, stale):
        out += [f"**Not yet run on the current code** ({len(todo)} runs): {', '.join(todo)}.", ""]
    out += ["## Protocol", "", *(protocol(p) if p else ["No results yet."]), ""]
    out += ["## Accuracy and weighted F1 (%)", "", *main_table(seeds, tfidf), ""]
    out += ["## The paper's claims", "", *verdicts(results, seeds, tfidf)]
    out += ["## Which conflict rule? (an ablation the paper does not run)", "", *ablation(results)]
    out += ["## Diagnostics of the RL runs", "", *diagnostics(seeds)]
    out += ["## What the diagnostics say", "", *observations(results), ""]
    figs = plot(results)
    if figs:
        out += ["## Curves (moving average of 8 steps; held-out accuracy as measured)", "",
                *[f"![{f}](figures/{f})" for f in figs], ""]
    out += ["## Runs", "", *runs_table(seeds)]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(out))
    print(f"wrote {DOC} ({len(out)} lines)")
    if README.is_file():
        text = README.read_text()
        text = replace_block(text, TABLE, readme_table(results, tfidf))
        README.write_text(replace_block(text, EXPECT, what_to_expect(results, tfidf)))
        print(f"wrote the results table and what to expect in {README}")


if __name__ == "__main__":
    main()
