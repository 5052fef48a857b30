"""Collect benchmarks/results/*.json into docs/results.md and docs/figures/*.png. No number is typed by hand.

    python benchmarks/report.py
"""
from __future__ import annotations

import functools
import json
import math
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS, DOC, FIGS = ROOT / "benchmarks" / "results", ROOT / "docs" / "results.md", ROOT / "docs" / "figures"
README = ROOT / "README.md"
# README.md's results table is written by this script between these lines
TABLE_START, TABLE_END = "<!-- results table: written by benchmarks/report.py -->", "<!-- end of results table -->"
RUN_NAMES = ["base-direct", "base-think", "sft", "grpo", "gta", "gta-rl"]
# The runs of the code before FIDELITY_FIX (the commit that made GTA follow the paper), kept beside the reruns:
# results/before-fidelity/DATASET.json, with their own reruns (superseded/) and replications (replication/).
BEFORE_FIX = "before-fidelity"
# Reruns of a dataset's whole protocol (paper.py --results .../replication): same seed, subsets and configs, another
# machine or code version.
REPLICATION = "replication"
# The protocol's training with another seed on the same subsets (paper.py --seed N writes results/seedN/): the
# run-to-run spread the verdicts are read against.
SEED_FOLDERS = "seed*"
DATASETS = ["sst5", "massive_scenario", "emotion", "bbc_news"]
# The paper's Table 2, Qwen2.5 (3B) row (accuracy, weighted F1, %); "Amazon" there is MASSIVE scenario.
PAPER = {
    "sst5": {"base": (11.76, 13.34), "sft": (60.72, 59.59), "grpo": (58.60, 57.05), "gta": (61.58, 61.52)},
    "massive_scenario": {"base": (54.84, 55.48), "sft": (91.96, 91.92), "grpo": (90.82, 91.03), "gta": (92.47, 92.46)},
    "emotion": {"base": (58.75, 58.63), "sft": (91.35, 91.41), "grpo": (82.50, 81.54), "gta": (92.45, 92.47)},
    "bbc_news": {"base": (81.50, 82.88), "sft": (97.70, 97.70), "grpo": (95.40, 95.47), "gta": (98.50, 98.50)},
}
# A defect fixed before the runs of the code before the fix; its replaced runs are in results/before-fidelity/superseded/.
GUESS_TARGET_HISTORY = (
    "History: until commit `64969cd` the SFT target of GTA's guess was `label</guess>` tokenized on its own. In "
    "a whole output SmolLM2's tokenizer merges the `>` of `</guess>` with the `<` of `<think>` into one token, "
    "so that target ended in a lone `>` that a formatted output never has, and it taught the model to end its "
    "turn after the guess. Every GTA run reported above postdates the fix; the replaced GTA runs in this table "
    "predate it. SFT, GRPO, GTA(RL) and the base model were unaffected.")
# The commit that made GTA follow the paper where an audit found it did not (issue "GTA as the paper defines it"):
# accuracy reward independent of the format, the guess loss averaged over its tokens, no-RL-signal steps keep SFT,
# temperature in the RL log-probs, end-of-turn stop ids, canonical gold labels, an exact sampler, no dropout.
FIDELITY_FIX = "9517de0"
# The commit from which the format reward needs a label in each label span and a stop token (a copy of the prompt's
# format line earned it before).
FORMAT_RULE_FIX = "8e4a67f"
PAPER_TABLE3 = {"grpo": (58.60, 57.05), "gta-rl": (57.42, 56.52), "gta": (61.58, 61.52)}
# The conflict-rule ablation (paper.py --ablation): run name, rule, the metric counting the updates the rule changed
ABLATION = (("gta", "drop (eq. 11)", "conflict/sft_dropped"), ("gta-project", "project (PCGrad)", "conflict/sft_projected"),
            ("gta-none", "none", None))


def protocol_text(p: dict, direct_max_new: int) -> str:
    """The protocol in words, from benchmarks/paper.py's PROTOCOL (the table below it lists every setting)."""
    steps = p["train_limit"] * p["epochs"] // p["batch_size"]
    precision = ("bf16 autocast where the CPU has native bf16, float32 where it has not (the machines below say "
                 "which)") if p["bf16"] else "float32"
    return f"""\
- Model: {p["model"]}, full fine-tuning, {precision}, 2 CPU threads.
- Training data: a seeded (seed {p["seed"]}) stratified subset of {p["train_limit"]} training examples, the same for
  SFT, GRPO, GTA and GTA(RL); {p["epochs"]} pass(es) over it ({steps} steps of {p["batch_size"]} prompts); AdamW, lr
  {p["learning_rate"]:g}, linear decay, the same for all.
- Test data: a seeded stratified subset of {p["test_limit"]:,} test examples (or the whole test split where it is smaller).
- Curves: every {p["eval_every"]} steps, accuracy on a seeded subset of {p["eval_limit"]} held-out examples (validation
  split; bbc_news has none, so its test split, as the paper's Fig. 6 does).
- Deviations from the paper's RL settings, for time on a 2-core CPU: G={p["num_generations"]} instead of 16;
  mu={p["num_iterations"]} instead of 4; {p["epochs"]} pass(es) instead of 3-4; prompts cut to {p["max_prompt_length"]}
  tokens instead of 4,096; at most {p["max_completion_length"]} new tokens; the reference is refreshed every
  {p["ref_sync_steps"]} steps (the paper does not give its period). beta={p["beta"]:g}, epsilon={p["epsilon"]:g},
  lambda1=lambda2=1 as in the paper. Every method gets the same primed first tag (see README).
- Zero-shot: the base model with the direct prompt (at most {direct_max_new} new tokens: the only exact output is
  `label</answer>`) and with the think prompt (at most {p["max_completion_length"]})."""


FULL_SCALE = """\
Mirrors the paper (Qwen2.5-3B-Instruct, G=16, mu=4, beta=0.01, 3 epochs, bf16, batch 4 per device),
one command per method and dataset, e.g. on 4 GPUs:

```bash
torchrun --nproc_per_node 4 -m gta train --method gta --model Qwen/Qwen2.5-3B-Instruct --dataset sst5 \\
  --batch-size 16 --micro-batch-size 4 --num-generations 16 --num-iterations 4 --beta 0.01 --epsilon 0.2 \\
  --epochs 3 --bf16 --max-prompt-length 4096 --max-completion-length 512 --learning-rate 1e-6 \\
  --eval-every 100 --save-every 200 --output runs/full/sst5-gta
gta eval runs/full/sst5-gta --dataset sst5
```

(`--method sft|grpo|gta-rl` for the other rows; the paper's learning rate is not given, 1e-6 is TRL's GRPO
default. Full fine-tuning of a 3B model keeps fp32 weights, gradients, two AdamW moments and, for GTA, a
second gradient buffer (g_SFT beside g_RL): about 72 GB per process before activations; `--lora-r 64`
fits smaller GPUs.)"""


def verdict_note(before: dict, root: Path | None = None, seeds: dict | None = None) -> str:
    """How far the verdicts' figures can be trusted: the test-sample intervals, the seed spread where a second
    training seed was run, and the largest move a replication (same seed, another machine) of the code before
    the fix measured."""
    note = ("Each verdict is decided by the numbers beside it, from one run per method (seed 0). An accuracy "
            "difference is given in points with the half-width of its 95% interval from the test subset alone "
            "(normal approximation; \"paired\" where both runs recorded their per-example outcomes, else "
            "unpaired), marked \"within test noise\" where the interval includes 0; the guess -> answer counts "
            "come with an exact two-sided sign test. Neither covers run-to-run spread")
    if seeds:
        note += (f"; that is measured by a second training seed on {', '.join(sorted(seeds))} (section \"Seed "
                 "spread\"), and the GTA-vs-SFT verdicts there say whether the gap exceeds it")
    moves = [(abs(b["eval"]["accuracy"] - a["eval"]["accuracy"]), ds, n)
             for ds, rep in replicated(before, REPLICATION, root) for n, b in rep["runs"].items()
             if (a := before[ds]["runs"].get(n)) is not None]
    if not moves:
        return note + ". No replication (same seed, another machine) has been run" + (
            "." if seeds else ", so the spread is not measured.")
    move, ds, n = max(moves)
    return note + (f". A replication of the code before the fix (same seed, another machine) moved {ds} {n}'s "
                   f"accuracy by {100 * move:.2f} points.")


def pct(x):
    return "—" if x is None else f"{100 * x:.2f}"


def acc_diff(a: dict, b: dict) -> str:
    """Accuracy of run `a` minus run `b`, in points, with the half-width of its 95% interval from the test
    sample alone (normal approximation). Paired when both runs recorded their per-example outcomes (the same
    test examples in the same order): from the examples where exactly one of them is right. Otherwise unpaired,
    two independent binomial proportions, which is wider. Blind to run-to-run spread either way."""
    pa, pb = a["eval"]["accuracy"], b["eval"]["accuracy"]
    ca, cb = a.get("answers", {}).get("correct"), b.get("answers", {}).get("correct")
    if ca and cb and len(ca) == len(cb):
        n = len(ca)
        only_a, only_b = sum(x > y for x, y in zip(ca, cb)), sum(x < y for x, y in zip(ca, cb))
        diff, paired = (only_a - only_b) / n, " paired"
        half = 1.96 * math.sqrt(max(0.0, (only_a + only_b) / n - diff ** 2) / n)
    else:
        diff, paired = pa - pb, ""
        half = 1.96 * math.sqrt(pa * (1 - pa) / a["eval"]["n"] + pb * (1 - pb) / b["eval"]["n"])
    return f"{100 * diff:+.2f} ± {100 * half:.2f}{paired}" + (" (within test noise)" if abs(diff) <= half else "")


def sign_test(k: int, m: int) -> float:
    """Exact two-sided sign test (McNemar's exact test): the probability, if k and m were draws of one fair
    coin over k + m tosses, of a split at least as uneven as k : m."""
    n = k + m
    tail = sum(math.comb(n, i) for i in range(min(k, m) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def acc_f1(res, name):
    r = res["runs"].get(name)
    return (r["eval"]["accuracy"], r["eval"]["f1_weighted"]) if r else (None, None)


def ablation(results: dict) -> tuple[list[str], list[str]]:
    """The conflict-rule ablation: GTA with eq. 11's drop (the `gta` run), PCGrad's projection and no rule, same seed,
    subsets and settings. Per run: accuracy and F1, the share of updates whose g_SFT the rule dropped or projected,
    the mean rl_share (||lambda2 g_RL|| / ||applied||) and the mean cosine of the AdamW update with g_RL. Returns
    the section and a verdict line per dataset that has all three (drop against none, with the test-sample
    interval): does eq. 11 matter at this scale?"""
    rows, verdicts = [], []
    for ds, res in results.items():
        runs = res["runs"]
        if not any(name in runs for name, _, _ in ABLATION[1:]):
            continue
        for name, rule, key in ABLATION:
            r = runs.get(name)
            if not r:
                rows.append(f"| {ds} | {rule} | not run yet | | | | |")
                continue
            m = r["metrics"]
            changed = "— (none by construction)" if key is None else (
                f"{pct(_mean(m, key))}" if all(key in x for x in m) else "not recorded")
            share, cos = (f"{_mean(m, k):.3f}" if m and all(k in x for x in m) else "not recorded"
                          for k in ("rl_share", "conflict/update_cosine_rl"))
            rows.append(f"| {ds} | {rule} | {pct(r['eval']['accuracy'])} | {pct(r['eval']['f1_weighted'])} | "
                        f"{changed} | {share} | {cos} |")
        if all(name in runs for name, _, _ in ABLATION):
            drop, none, proj = runs["gta"], runs["gta-none"], runs["gta-project"]
            gap = acc_diff(drop, none)
            verdict = ("not shown" if "within test noise" in gap else
                       "held" if drop["eval"]["accuracy"] > none["eval"]["accuracy"] else "reversed")
            verdicts.append(f"- Eq. 11's conflict rule helps on {ds} (drop vs no rule): **{verdict}** "
                            f"(acc drop - none {gap}; project - none {acc_diff(proj, none)})")
    if not rows:
        return [], []
    return ["## Which conflict rule? GTA with eq. 11's drop, PCGrad's projection and no rule", "",
            "The `gta` run is eq. 11 (drop g_SFT when g_SFT . g_RL <= 0); the others change only `--conflict` "
            "(`python benchmarks/paper.py --dataset NAME --ablation`). Updates changed: the share of updates whose "
            "g_SFT the rule dropped or projected. rl_share: mean ||lambda2 g_RL|| / ||applied gradient||. Update vs "
            "g_RL: mean cosine of the AdamW update with g_RL (AdamW's moments carry earlier steps' SFT direction "
            "even where g_SFT was dropped).", "",
            "| dataset | rule | acc | F1 | updates changed (%) | rl_share | update vs g_RL (cosine) |",
            "|---|---|---|---|---|---|---|", *rows, ""], verdicts


def plot(results: dict) -> list[str]:
    if not any("gta" in r["runs"] and "grpo" in r["runs"] for r in results.values()):
        return []
    plt = _pyplot()
    made = []
    for ds, res in results.items():
        runs = res["runs"]
        if "gta" not in runs or "grpo" not in runs:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for name, key, label in [("gta", "reward/accuracy", "GTA answer"), ("gta", "guess/accuracy", "GTA guess"),
                                 ("grpo", "reward/accuracy", "GRPO")]:
            m = runs[name]["metrics"]
            axes[0].plot([r["step"] for r in m], _smooth([r[key] for r in m]), label=label)
        axes[0].set(title=f"{ds}: training accuracy reward (moving avg 8)", xlabel="step")
        for name in ("grpo", "gta", "gta-rl"):
            if name in runs:
                m = [r for r in runs[name]["metrics"] if "eval/accuracy" in r]
                axes[1].plot([r["step"] for r in m], [r["eval/accuracy"] for r in m], marker="o", label=name)
        axes[1].set(title=f"{ds}: held-out accuracy", xlabel="step")
        m = runs["gta"]["metrics"]
        axes[2].plot([r["step"] for r in m], [r["conflict/cosine"] for r in m], label="cos(g_SFT, g_RL)")
        axes[2].axhline(0, color="gray", lw=0.5)
        axes[2].set(title=f"{ds}: gradient cosine (GTA)", xlabel="step")
        made.append(_save(plt, fig, axes, f"{ds}.png"))
    return made


def _pyplot():
    """matplotlib's pyplot without a display (the `plots` / `bench` extra), and the figures folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGS.mkdir(parents=True, exist_ok=True)
    return plt


def _save(plt, fig, axes, name: str) -> str:
    """Legends where an axis has labelled artists, then FIGS/name; returns name."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(FIGS / name, dpi=80)
    plt.close(fig)
    return name


def _smooth(xs, k=8):
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def main() -> None:
    results, before = load_results(RESULTS), load_results(RESULTS / BEFORE_FIX)
    seeds = seed_results(results)
    out = ["# Results at CPU scale", "",
           "Generated by `python benchmarks/report.py` from `benchmarks/results/*.json`, which "
           "`python benchmarks/paper.py --dataset NAME` writes. Do not edit by hand.", ""]
    out += format_rule_caveat(results) + fidelity_caveat(results)
    missing = [ds for ds in DATASETS if ds not in results]
    if missing:
        out += [f"**Not run yet on the corrected code:** {', '.join(missing)}"
                + (" (their runs on the code before the fix are in the next section but one)." if before else "."), ""]
    for ds, res in results.items():
        todo = [r for r in expected_runs(ds) if r not in res["runs"]]
        if todo:
            out += [f"**{ds} is incomplete:** not run yet: {', '.join(todo)}.", ""]
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper", ROOT / "benchmarks" / "paper.py")
    paper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper)
    out += ["## Protocol (the same for every dataset and method)", "",
            protocol_text(paper.PROTOCOL, paper.DIRECT_MAX_NEW_TOKENS), "",
            "| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in paper.PROTOCOL.items()] + [""]
    out += ["## Full-scale configuration (GPU users; not run here)", "", FULL_SCALE, ""]
    if results:
        out += ["Machine: " + "; ".join(f"{ds}: {machines_text(r)}" for ds, r in results.items()), ""]
    out += superseded(results) + wall_times(results) + replications(results)
    out += fix_comparison(results, before) + seed_spread(results, seeds)
    tfidf = tfidf_results()
    out += ["## Table 2 analogue: accuracy / weighted F1 (%)", "",
            "TF-IDF + LR: word 1-2-gram TF-IDF and logistic regression (scikit-learn defaults, seeded) on the same "
            "training subset as the LLM methods and on the whole train split, scored on the same test subset "
            "(`python benchmarks/tfidf.py`, `benchmarks/results/tfidf.json`).", "",
            "| dataset | Base (direct) | SFT | GRPO | GTA | GTA guess acc | GTA fast (guess constrained to the labels) | TF-IDF + LR, same subset | TF-IDF + LR, whole train split | paper Qwen2.5-3B: Base / SFT / GRPO / GTA acc |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for ds, res in results.items():
        cells = [f"{pct(a)} / {pct(f)}" for a, f in (acc_f1(res, n) for n in ("base-direct", "sft", "grpo", "gta"))]
        ev = res["runs"].get("gta", {}).get("eval", {})
        fast = ev.get("fast") or {}
        lr = tfidf.get(ds, {})
        lr_cells = " | ".join(f"{pct(lr[k]['accuracy'])} / {pct(lr[k]['f1_weighted'])}" if k in lr else "—"
                              for k in ("subset", "full"))
        paper = " / ".join(f"{PAPER[ds][k][0]:.2f}" for k in ("base", "sft", "grpo", "gta"))
        out.append(f"| {ds} | " + " | ".join(cells) + f" | {pct(ev.get('guess_accuracy'))} | "
                   f"{pct(fast.get('accuracy'))} / {pct(fast.get('f1_weighted'))} | {lr_cells} | {paper} |")
        if "subset" in lr:
            verdicts.append(tfidf_verdict(ds, res, lr, seeds.get(ds, [])))
        (ga, gf), (sa, sf), (ra, rf) = acc_f1(res, "gta"), acc_f1(res, "sft"), acc_f1(res, "grpo")
        if None not in (ga, sa, ra):
            beats = (ga > sa and ga > ra, gf > sf and gf > rf)
            verdict = "held" if all(beats) else ("not held" if not any(beats) else "mixed")
            ev = {n: res["runs"][n] for n in ("gta", "sft", "grpo")}
            verdicts.append(f"- GTA beats SFT and GRPO on {ds}: **{verdict}** (acc GTA {pct(ga)}, SFT {pct(sa)}, "
                            f"GRPO {pct(ra)}; F1 GTA {pct(gf)}, SFT {pct(sf)}, GRPO {pct(rf)}; acc GTA - SFT "
                            f"{acc_diff(ev['gta'], ev['sft'])}, GTA - GRPO {acc_diff(ev['gta'], ev['grpo'])}"
                            f"{other_machine(res, 'gta', ('sft', 'grpo'))}{seed_verdict(res, seeds.get(ds, []))})")
    out.append("")
    if "sst5" in results and "gta-rl" in results["sst5"]["runs"]:
        res = results["sst5"]
        out += ["## Table 3 analogue (SST-5): GRPO / GTA(RL) / GTA", "", "| | GRPO | GTA(RL) | GTA | paper GRPO / GTA(RL) / GTA |",
                "|---|---|---|---|---|"]
        for i, metric in enumerate(("acc", "F1")):
            vals = [pct(acc_f1(res, n)[i]) for n in ("grpo", "gta-rl", "gta")]
            out.append(f"| {metric} | " + " | ".join(vals) + " | " +
                       " / ".join(f"{PAPER_TABLE3[n][i]:.2f}" for n in ("grpo", "gta-rl", "gta")) + " |")
        (ga, _), (la, _) = acc_f1(res, "gta"), acc_f1(res, "gta-rl")
        verdicts.append(f"- The supervised guess matters (GTA > GTA(RL) on SST-5): **{'held' if ga > la else 'not held'}** "
                        f"(acc {pct(ga)} vs {pct(la)}; GTA - GTA(RL) "
                        f"{acc_diff(res['runs']['gta'], res['runs']['gta-rl'])}{other_machine(res, 'gta', ('gta-rl',))})")
        out.append("")
    section, ablation_verdicts = ablation(results)
    out += section
    verdicts += ablation_verdicts
    out += ["## Fig. 4 analogue: zero-shot direct vs think (accuracy %, invalid-format rate)", "",
            "| dataset | direct | think |", "|---|---|---|"]
    for ds, res in results.items():
        d, t = res["runs"].get("base-direct"), res["runs"].get("base-think")
        if d and t:
            out.append(f"| {ds} | {pct(d['eval']['accuracy'])} ({pct(d['eval']['invalid_format_rate'])} invalid) | "
                       f"{pct(t['eval']['accuracy'])} ({pct(t['eval']['invalid_format_rate'])} invalid) |")
            held = t["eval"]["accuracy"] > d["eval"]["accuracy"]
            verdicts.append(f"- Thinking helps zero-shot on {ds}: **{'held' if held else 'not held'}** "
                            f"({pct(d['eval']['accuracy'])} -> {pct(t['eval']['accuracy'])}; think - direct "
                            f"{acc_diff(t, d)})")
    out.append("")
    out += answers_table(results)
    reps = dict(replicated(results))
    figs = plot(results) + plot_diagnostics(results, seeds, reps)
    out += ["## Fig. 5/6 analogues and gradient conflicts", ""]
    for ds, res in results.items():
        runs = res["runs"]
        for name in ("grpo", "gta", "gta-rl"):
            if name in runs:
                out.append(f"- {ds}, {name}: " + reward_summary(runs[name]["metrics"]))
        if "gta" in runs:
            m = runs["gta"]["metrics"]
            dropped = sum(r["conflict/sft_dropped"] for r in m) / len(m)
            out.append(f"- {ds}: GTA dropped the SFT gradient on {pct(dropped)}% of updates; mean cosine "
                       f"{sum(r['conflict/cosine'] for r in m) / len(m):+.3f}; " + balance_summary(m))
        if "gta" in runs and "grpo" in runs:
            verdicts.append(convergence_verdict(ds, runs, other_machine(res, "gta", ("grpo",))))
    out += [""] + [f"![{f}](figures/{f})" for f in figs] + [""]
    out += ["## Fig. 7 analogue: guess -> answer transitions of GTA on the test subset", ""]
    for ds, res in results.items():
        tr = res["runs"].get("gta", {}).get("transitions")
        if tr:
            counts, examples = tr["counts"], tr["examples"]
            out.append(f"- {ds}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + changed_text(tr))
            verdicts.append(f"- The answer corrects wrong guesses on {ds}: **{'held' if counts['wrong->right'] > counts['right->wrong'] else 'not held'}** "
                            f"(wrong->right {counts['wrong->right']}, right->wrong {counts['right->wrong']}; "
                            f"sign test p = {sign_test(counts['wrong->right'], counts['right->wrong']):.2g})")
            if not examples:
                out.append("  - no wrong guess was corrected by the answer, so there is no example to show")
            for e in examples:
                out.append(f"  - gold `{e['gold']}`, guess `{e['guess']}` -> answer `{e['answer']}`; think: "
                           f"\"{(e['think'] or '')[:300]}\"")
    out += [""] + diagnostics(results, seeds, reps)
    out += history(before)
    out += ["", "## Verdicts", "", verdict_note(before, RESULTS / BEFORE_FIX, seeds), ""] + (verdicts or ["No results yet."]) + [""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(out))
    print(f"wrote {DOC}")
    if README.is_file() and TABLE_START in README.read_text():
        text = README.read_text()
        head, rest = text.split(TABLE_START, 1)
        README.write_text(head + "\n".join([TABLE_START, *readme_table(results, before, tfidf), TABLE_END])
                          + rest.split(TABLE_END, 1)[1])
        print(f"wrote the results table in {README}")


def tfidf_results() -> dict:
    """benchmarks/results/tfidf.json's per-dataset figures, {} if tfidf.py has not been run."""
    f = RESULTS / "tfidf.json"
    return json.loads(f.read_text())["datasets"] if f.is_file() else {}


def tfidf_verdict(ds: str, res: dict, lr: dict, others: list[tuple[int, dict]] = ()) -> str:
    """Which LLM methods lose to TF-IDF + LR trained on the same examples (and on the whole train split); with
    other seeds' runs, whether each method's gap to it at equal data exceeds that method's seed-to-seed move."""
    def below(key):
        return [n for n in ("sft", "grpo", "gta") if n in res["runs"] and acc_f1(res, n)[0] < lr[key]["accuracy"]]

    same, full = below("subset"), below("full") if "full" in lr else []
    accs = ", ".join(f"{n.upper()} {pct(acc_f1(res, n)[0])}" for n in ("sft", "grpo", "gta") if n in res["runs"])
    return (f"- Every LLM method (SFT, GRPO, GTA) beats TF-IDF + LR on {ds} at equal data: "
            f"**{'held' if not same else 'not held'}** (TF-IDF + LR {pct(lr['subset']['accuracy'])} on the same "
            f"{lr['subset']['n_train']} examples, {pct(lr['full']['accuracy']) if 'full' in lr else '—'} on all "
            f"{lr['full']['n_train'] if 'full' in lr else '—'}; {accs}; below it at equal data: "
            f"{', '.join(same) or 'none'}; below it trained on the whole split: {', '.join(full) or 'none'}; "
            f"{tfidf_intervals(res, lr['subset'])}{seed_gaps(res, lr, others)})")


def tfidf_intervals(res: dict, lr: dict) -> str:
    """Each LLM method's accuracy minus TF-IDF + LR's at equal data, with acc_diff's interval (paired where
    tfidf.py recorded its per-example outcomes)."""
    base = {"eval": {"accuracy": lr["accuracy"], "n": lr["n_test"]}, "answers": {"correct": lr.get("correct")}}
    return "minus TF-IDF at equal data: " + ", ".join(
        f"{n} {acc_diff(res['runs'][n], base)}" for n in ("sft", "grpo", "gta") if n in res["runs"])


def seed_gaps(res: dict, lr: dict, others: list[tuple[int, dict]]) -> str:
    """Each method's accuracy minus TF-IDF + LR's at equal data, against that method's seed-to-seed move."""
    moves = seed_moves(res, others)
    parts = []
    for n, v in moves.items():
        gap = acc_f1(res, n)[0] - lr["subset"]["accuracy"]
        parts.append(f"{n} {100 * gap:+.2f} ({'beyond' if abs(gap) > max(map(abs, v)) else 'within'} its seed "
                     f"move {100 * max(map(abs, v)):.2f})")
    return "; gap to it against the seed spread: " + ", ".join(parts) if parts else ""


def answers_table(results: dict) -> list[str]:
    """Why an accuracy is low: outputs not in the exact format, formatted answers that are not a label; and
    whether the think spans hold any reasoning (their length, and how many only copy the prompt's placeholder)."""
    from gta.prompts import TEMPLATES, parse

    placeholder = parse(TEMPLATES["think"][1], "think").think  # as paper.answer_summary counts it
    rows = []
    for ds, res in results.items():
        for name, r in res["runs"].items():
            a = r.get("answers")
            if a:
                top = ", ".join(f"`{text}` {count}" for text, count in a["top_not_a_label"]) or "—"
                think = "— | —"
                if a.get("think_n"):
                    think = f"{a['think_words_median']:g} | {pct(a['think_placeholder'] / a['think_n'])}"
                cm = r["eval"]["confusion_matrix"]  # columns: predicted label, then <invalid>
                used = sum(any(row[j] for row in cm["matrix"]) for j in range(len(cm["labels"]) - 1))
                rows.append(f"| {ds} | {name} | {pct(a['invalid_format'] / a['n'])} | "
                            f"{pct(a['not_a_label'] / a['n'])} | {top} | {think} | {used} of {len(cm['labels']) - 1} |")
    if not rows:
        return []
    return ["## What the answers are (test subset, % of examples)", "",
            "The last two columns are over the formatted outputs that have a think span: its median length in "
            f"words, and the share that is only the format line's placeholder `{placeholder}`. Where the think spans "
            "are a word or two, the claims about thinking (Fig. 4, Fig. 7) are tested on outputs that hold no "
            "reasoning. The last column counts the labels the answers use at least once: an answer that "
            "collapses onto a few labels explains a weighted F1 far below the accuracy.", "",
            "| dataset | run | not in the exact format | in format, answer not a label | most common such answers "
            f"| think: median words | think = `{placeholder}` (%) | labels answered |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]


def expected_runs(ds: str) -> list[str]:
    """The runs of a dataset's whole protocol: GTA(RL) only for sst5 (the paper's Table 3)."""
    return RUN_NAMES[:5] + (["gta-rl"] if ds == "sst5" else [])


def minutes(run: dict) -> float:
    """A run's wall time in minutes: training (if any) + evaluation on the test subset."""
    return (run.get("train_wall_s", 0.0) + run["eval_wall_s"]) / 60


@functools.cache  # fidelity_caveat asks about each run's commits
def commit_predates(commit: str, fix: str) -> bool | None:
    """True if `commit` comes before `fix`, False if it includes it, None if git cannot tell."""
    rc = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", fix, commit],
                        capture_output=True).returncode
    return {0: False, 1: True}.get(rc)


def runs_before(results: dict, fix: str) -> list[str]:
    """The trained runs ("dataset method") whose code predates `fix`, or that git cannot place."""
    before = []
    for ds, res in results.items():
        for name, run in res["runs"].items():
            if name.startswith("base-"):
                continue
            code = run.get("code") or []
            answers = [commit_predates(c.split("+")[0], fix) for c in code]
            if not answers or any(a is not False for a in answers):  # before it, or git cannot place it
                before.append(f"{ds} {name}")
    return before


def format_rule_caveat(results: dict) -> list[str]:
    """Which trained runs predate FORMAT_RULE_FIX: their RL rewards could be won by copying the prompt."""
    before = [r for r in runs_before(results, FORMAT_RULE_FIX) if r.split()[-1] != "sft"]  # sft has no reward
    if not before:
        return []
    return [f"**The RL runs here ({', '.join(before)}) predate `{FORMAT_RULE_FIX}`**, the commit from which the format "
            "reward needs a label in each label span (guess, answer) and a stop token. Under the old rule a copy "
            "of the prompt's `<answer>label</answer>` earned the format reward: the GRPO and GTA(RL) rows measure "
            "that prompt artefact (GRPO answers the word `label`, see \"What the answers are\"), and GTA's RL half "
            "was trained on the same hackable reward. A later issue reruns them.", ""]


def fidelity_caveat(results: dict) -> list[str]:
    """Which trained runs predate FIDELITY_FIX (every method's training changed with it)."""
    before = runs_before(results, FIDELITY_FIX)
    if not before:
        return []
    every = len(before) == sum(1 for r in results.values() for n in r["runs"] if not n.startswith("base-"))
    return [f"**{'Every trained run below' if every else 'These trained runs: ' + ', '.join(before) + ','} "
            f"predate{'s' if every or len(before) == 1 else ''} `{FIDELITY_FIX}`**, the commit that made GTA "
            "follow the paper where an audit found it did not: the accuracy reward no longer requires the exact "
            "format, the guess loss is averaged over its tokens (it was summed), a step with no RL signal keeps "
            "the SFT gradient, the RL log-probs use the sampling temperature, and rollouts stop on every "
            "end-of-turn id. These change what SFT, GRPO, GTA and GTA(RL) learn; the figures are those of the "
            "earlier code until the runs are repeated. The zero-shot rows are scored as the runs were then (the "
            "exact format was required for accuracy).", ""]


def superseded(results: dict, root: Path | None = None) -> list[str]:
    """Each run dropped by `paper.py --rerun` (kept in ROOT/superseded/, ROOT = results/ by default) beside the
    run that replaced it."""
    root = root or RESULTS
    files = [(f, results, "") for f in sorted((root / "superseded").glob("*.json"))]
    reps = dict(replicated(results, REPLICATION, root))
    files += [(f, reps, " (replication)") for f in sorted((root / REPLICATION / "superseded").glob("*.json"))]
    if not files:
        return []
    out = ["## Reruns: each replaced run beside its rerun", "",
           "Written by `python benchmarks/paper.py --dataset NAME --rerun METHOD`, which keeps the replaced run's "
           f"figures in `{root.relative_to(ROOT) if root.is_relative_to(ROOT) else root}/superseded/`. Same seed, subsets and config; the code (and possibly the "
           "machine) differ.", "",
           "| run | code | machine | acc / F1 | guess acc | fast acc | mean format reward (training) | answers not a label | minutes |",
           "|---|---|---|---|---|---|---|---|---|"]
    for f, current, tag in files:
        old = json.loads(f.read_text())
        ds, method = old["dataset"], old["method"]
        new = current.get(ds, {}).get("runs", {}).get(method)
        if new is not None and new["eval"] == old["run"]["eval"]:  # the replaced run itself: rerun not finished
            new = None
        rows = [("replaced", old["run"], old["run"].get("code") or [f"{old['results_file_commit']} (results file)"])]
        rows += [("rerun", dict(new, machine=run_machine(current[ds], method)), new.get("code") or [])] if new else []
        for which, r, code in rows:
            ev, a = r["eval"], r.get("answers") or {}
            fast = (ev.get("fast") or {}).get("accuracy")
            out.append(f"| {ds} {method}{tag}, {which} | {', '.join(f'`{c}`' for c in code) or '—'} | {cpu(r['machine'])} | "
                       f"{pct(ev['accuracy'])} / {pct(ev['f1_weighted'])} | {pct(ev.get('guess_accuracy'))} | "
                       f"{pct(fast)} | {_mean(r['metrics'], 'reward/format'):.3f} | "
                       f"{pct(a['not_a_label'] / a['n']) if a else '—'} | {minutes(r):.0f} |")
        if not new:
            out.append(f"| {ds} {method}{tag}, rerun | not finished | | | | | | | |")
    return out + ["", GUESS_TARGET_HISTORY, ""]


def replicated(results: dict, folder: str = REPLICATION, root: Path | None = None) -> list[tuple[str, dict]]:
    """(dataset, rerun results) for each rerun in ROOT/FOLDER of a dataset that has reported results."""
    where = (root or RESULTS) / folder
    files = sorted(where.glob("*.json")) if where.is_dir() else []
    reps = [(f.stem, json.loads(f.read_text())) for f in files]
    return [(ds, rep) for ds, rep in reps if ds in results and rep.get("runs")]


def replications(results: dict, folder: str = REPLICATION, root: Path | None = None) -> list[str]:
    """Each rerun of a dataset's protocol (same seed, subsets and configs) beside its reported runs: how far the
    figures and wall times move."""
    pairs = replicated(results, folder, root)
    if not pairs:
        return []
    out = ["## Replications: the same protocol run again", "",
           "Same seed, subsets and configs as above, on another machine or code version. Float rounding "
           "differs between CPUs, so sampled completions (and every trajectory after them) differ too: the "
           "spread between the two is a floor on run-to-run variation, which single-seed results do "
           f"not show. Written by `python benchmarks/paper.py --dataset NAME --results "
           f"benchmarks/results/{REPLICATION}`.", ""]
    for ds, rep in pairs:
        out += side_by_side(ds, results[ds], rep, ("reported", "rerun"))
    return out


def fix_comparison(results: dict, before: dict) -> list[str]:
    """The runs of the code before FIDELITY_FIX beside the reruns on the corrected code, dataset by dataset."""
    if not before:
        return []
    out = [f"## The code before the fix beside the corrected code (`{FIDELITY_FIX}`)", "",
           "The same protocol (seed, subsets, configs); the runs before the fix are kept in "
           f"`benchmarks/results/{BEFORE_FIX}/`. The differences are the fixes' as much as run-to-run spread's "
           "(see \"Seed spread\") and the machines'.", ""]
    for ds in DATASETS:
        if ds in before:
            out += side_by_side(ds, before[ds], results.get(ds, {"runs": {}, "machine": None}),
                                ("before the fix", "corrected code"), every_run=True)
    return out


def side_by_side(ds: str, orig: dict, rep: dict, names: tuple[str, str], every_run: bool = False) -> list[str]:
    """One dataset's runs of two versions of the protocol (names: what each is), with minutes and the budget
    verdict of the second; every_run: a row for each run of either (else only the second's)."""
    a_name, b_name = names
    where = f"on {machines_text(rep)}" if rep["runs"] else "not run yet"
    out = [f"{ds}: {a_name} on {machines_text(orig)}; {b_name} {where}.", "",
           f"| run | acc / F1 {a_name} | acc / F1 {b_name} | minutes {a_name} | minutes {b_name} | code {b_name} |",
           "|---|---|---|---|---|---|"]
    total = [0.0, 0.0]
    cell = lambda r: f"{pct(r['eval']['accuracy'])} / {pct(r['eval']['f1_weighted'])}" if r else "—"
    for n in RUN_NAMES:
        a, b = orig["runs"].get(n), rep["runs"].get(n)
        if b is None and not (every_run and a):
            continue
        total[0] += minutes(a) if a else 0.0
        total[1] += minutes(b) if b else 0.0
        out.append(f"| {n} | {cell(a)} | {cell(b)} | {f'{minutes(a):.0f}' if a else '—'} | "
                   f"{f'{minutes(b):.0f}' if b else '—'} | {', '.join(f'`{c}`' for c in (b or {}).get('code', [])) or '—'} |")
    expected = expected_runs(ds)
    done = [n for n in expected if n in rep["runs"]]
    status = (f"within 150 min: {'yes' if total[1] <= 150 else 'no'}" if len(done) == len(expected)
              else f"{len(done)}/{len(expected)} runs so far")
    out += [f"| total | | | {total[0]:.0f} | {total[1]:.0f} | {status} |", ""]
    if rep.get("timing_note"):  # conditions that make the wall times unfit for the budget (written with the run)
        out += [f"Timing: {rep['timing_note']}", ""]
    return out


def history(before: dict) -> list[str]:
    """The reruns and replications of the code before the fix, as they were reported then."""
    root = RESULTS / BEFORE_FIX
    lines = superseded(before, root) + replications(before, REPLICATION, root)
    if not lines:
        return []
    return ["## History: reruns and replications of the code before the fix", "",
            f"Figures of `benchmarks/results/{BEFORE_FIX}/`, kept for the record; every table above is of the "
            "corrected code.", ""] + [("#" + x if x.startswith("## ") else x) for x in lines]


def cpu(m: dict) -> str:
    """The CPU of a run; with its family/model ids and native bf16 where recorded (one name, e.g. "AMD EPYC",
    covers CPUs with and without native bf16, which decides whether training runs in bf16 or float32)."""
    if "cpu_id" not in m:
        return m["cpu"]
    return f"{m['cpu']} ({m['cpu_id']}, {'bf16' if m['bf16_native'] else 'no native bf16: float32'})"


def run_machine(res: dict, name: str) -> dict:
    """The machine a run ran on: its own record, or (results written before runs recorded one) the file's."""
    return res["runs"][name].get("machine") or res["machine"]


def machines(res: dict) -> dict[str, list[str]]:
    """A dataset's runs grouped by the machine (CPU, precision, threads) they ran on."""
    groups: dict[str, list[str]] = {}
    for n in RUN_NAMES:
        if n in res["runs"]:
            m = run_machine(res, n)
            groups.setdefault(f"{cpu(m)}, {m['threads']} threads", []).append(n)
    return groups


def other_machine(res: dict, name: str, others: tuple[str, ...]) -> str:
    """A note for a verdict that compares runs made on different machines (float rounding, and precision where
    one CPU has native bf16 and the other not, differ between them)."""
    m = run_machine(res, name)
    differ = [o for o in others if o in res["runs"] and cpu(run_machine(res, o)) != cpu(m)]
    return f"; {name} ran on {cpu(m)}, unlike {', '.join(differ)}" if differ else ""


def machines_text(res: dict) -> str:
    groups = machines(res)
    if len(groups) <= 1:
        return next(iter(groups), cpu(res["machine"]))
    return ", ".join(f"{m} ({', '.join(names)})" for m, names in groups.items())


def wall_times(results: dict) -> list[str]:
    """Minutes each run took (training + evaluation on the test subset), per dataset, against the budget."""
    out = ["## Wall time (minutes: training + test evaluation)", "",
           "| dataset | " + " | ".join(RUN_NAMES) + " | total | within 150 min |", "|---" * (len(RUN_NAMES) + 3) + "|"]
    for ds, res in results.items():
        cells, total = [], 0.0
        for n in RUN_NAMES:
            r = res["runs"].get(n)
            if r is None:
                cells.append("—")
                continue
            total += minutes(r)
            cells.append(f"{r['train_wall_s'] / 60:.0f} + {r['eval_wall_s'] / 60:.0f}" if "train_wall_s" in r
                         else f"{r['eval_wall_s'] / 60:.0f}")
        expected = expected_runs(ds)
        done = sum(n in res["runs"] for n in expected)
        verdict = ("yes" if total <= 150 else "no") if done == len(expected) else f"({done}/{len(expected)} runs so far)"
        if (n_machines := len(machines(res))) > 1:  # a sum over two machines says nothing about either
            verdict = f"— (runs on {n_machines} machines, see Machine above)"
        out.append(f"| {ds} | " + " | ".join(cells) + f" | {total:.0f} | {verdict} |")
    out += ["", "A training run interrupted and resumed counts until its last checkpoint in each attempt "
            "(`train_attempts` in the results file).", ""]
    versions = [f"{ds} {n}: {', '.join(f'`{c}`' for c in r['code'])}" for ds, res in results.items()
                for n in RUN_NAMES if (r := res["runs"].get(n)) and r.get("code")]
    if versions:  # recorded since paper.py kept it; earlier runs have none
        out += ["Code version (git commit) each run used: " + "; ".join(versions) + ".", ""]
    return out


def convergence_verdict(ds: str, runs: dict, note: str = "") -> str:
    """Fig. 5/6: GTA converges faster than GRPO if both its training accuracy reward and its held-out accuracy,
    each averaged over the run (the area under the curve), are higher; mixed if one of them is. `note` ends the figures
    (e.g. that the two ran on different machines)."""
    def auc(name, key):
        m = [r for r in runs[name]["metrics"] if key in r]
        return _mean(m, key) if m else None

    train = auc("gta", "reward/accuracy"), auc("grpo", "reward/accuracy")
    held = auc("gta", "eval/accuracy"), auc("grpo", "eval/accuracy")
    wins = [a > b for a, b in (train, held) if None not in (a, b)]
    verdict = "held" if all(wins) else ("not held" if not any(wins) else "mixed")
    text = f"training accuracy reward GTA {train[0]:.3f}, GRPO {train[1]:.3f}"
    if None not in held:
        text += f"; held-out accuracy GTA {held[0]:.3f}, GRPO {held[1]:.3f}"
    return (f"- GTA converges faster than GRPO on {ds} (each curve's mean over the run): **{verdict}** ({text}{note})")


def balance_summary(m: list[dict]) -> str:
    """Medians of ||g_SFT||, ||g_RL|| (before the conflict rule and clipping) and rl_share = ||lambda2 g_RL|| /
    ||applied gradient|| on the steps that kept SFT and on those that dropped it (mu = 1 in the protocol, so a
    step is one update)."""
    if not m or "rl_share" not in m[0]:
        return "gradient norms and rl_share not logged (the run predates them)"
    parts = []
    for name, rows in (("kept SFT", [r for r in m if r["conflict/sft_dropped"] < 0.5]),
                       ("dropped SFT", [r for r in m if r["conflict/sft_dropped"] >= 0.5])):
        if rows:
            med = {k: statistics.median(r[k] for r in rows) for k in ("grad_norm/sft", "grad_norm/rl", "rl_share")}
            parts.append(f"{name} ({len(rows)} steps): median ||g_SFT|| {med['grad_norm/sft']:.3g}, "
                         f"||g_RL|| {med['grad_norm/rl']:.3g}, rl_share {med['rl_share']:.3f}")
    return "; ".join(parts)


def reward_summary(metrics: list[dict]) -> str:
    """When the accuracy reward first appeared, and the rewards of the first and last 16 steps."""
    first = next((r["step"] for r in metrics if r["reward/accuracy"] > 0), None)
    head, tail = metrics[:16], metrics[-16:]
    text = (f"first step with any accuracy reward: {first if first is not None else 'never'}; "
            f"accuracy reward steps 1-{len(head)} {_mean(head, 'reward/accuracy'):.3f}, last {len(tail)} "
            f"{_mean(tail, 'reward/accuracy'):.3f}; format reward {_mean(head, 'reward/format'):.3f} -> "
            f"{_mean(tail, 'reward/format'):.3f}")
    if "guess/accuracy" in metrics[0]:
        text += f"; guess accuracy {_mean(head, 'guess/accuracy'):.3f} -> {_mean(tail, 'guess/accuracy'):.3f}"
    if "groups/informative" in metrics[0]:  # groups with equal rewards carry no advantage, so no RL signal
        text += (f"; uninformative groups {100 * (1 - _mean(head, 'groups/informative')):.1f}% -> "
                 f"{100 * (1 - _mean(tail, 'groups/informative')):.1f}% (all steps {100 * (1 - _mean(metrics, 'groups/informative')):.1f}%)")
    return text


def _mean(metrics, key):
    return sum(r[key] for r in metrics) / max(1, len(metrics))


def load_results(folder: Path) -> dict:
    """{dataset: results} of the DATASET.json files in folder."""
    return {ds: json.loads((folder / f"{ds}.json").read_text()) for ds in DATASETS if (folder / f"{ds}.json").is_file()}


def seed_results(results: dict) -> dict[str, list[tuple[int, dict]]]:
    """{dataset: [(seed, results)]} of the protocol's training with other seeds (results/seedN/DATASET.json, the
    same subsets), for the datasets that have seed-0 results."""
    out: dict[str, list[tuple[int, dict]]] = {}
    for folder in sorted(RESULTS.glob(SEED_FOLDERS)):
        if folder.is_dir() and folder.name[4:].isdigit():
            for ds, res in load_results(folder).items():
                if ds in results and res.get("runs"):
                    out.setdefault(ds, []).append((int(folder.name[4:]), res))
    return out


def seed_moves(res: dict, others: list[tuple[int, dict]]) -> dict[str, list[float]]:
    """{method: [accuracy of seed N - accuracy of seed 0, for each other seed]} for the methods both ran."""
    moves: dict[str, list[float]] = {}
    for _, other in others:
        for n, r in other["runs"].items():
            if n in res["runs"]:
                moves.setdefault(n, []).append(r["eval"]["accuracy"] - res["runs"][n]["eval"]["accuracy"])
    return moves


def seed_spread(results: dict, seeds: dict) -> list[str]:
    """Each method's accuracy under another training seed beside seed 0's (same subsets, configs and test
    examples): the run-to-run spread."""
    if not seeds:
        return []
    out = ["## Seed spread: the same protocol with another training seed", "",
           "Written by `python benchmarks/paper.py --dataset NAME --seed N` (results/seedN/): the training seed "
           "(prompt order, sampling) changes, the train, held-out and test subsets stay those of seed 0 "
           "(`--data-seed 0`). The difference is paired over the same test examples; its interval is the test "
           "sample's, so a difference outside it is the training's spread, not the test's.", "",
           "| dataset | run | seed 0 acc / F1 | other seed acc / F1 | other - seed 0 (acc points) | machines |",
           "|---|---|---|---|---|---|"]
    for ds, others in seeds.items():
        res = results[ds]
        for seed, other in others:
            for n in RUN_NAMES:
                a, b = res["runs"].get(n), other["runs"].get(n)
                if a and b:
                    ma, mb = cpu(run_machine(res, n)), cpu(run_machine(other, n))
                    out.append(f"| {ds} | {n} | {pct(a['eval']['accuracy'])} / {pct(a['eval']['f1_weighted'])} | "
                               f"seed {seed}: {pct(b['eval']['accuracy'])} / {pct(b['eval']['f1_weighted'])} | "
                               f"{acc_diff(b, a)} | {ma if ma == mb else f'{ma} vs {mb}'} |")
    out.append("")
    for ds, others in seeds.items():
        moves = seed_moves(results[ds], others)
        if moves:
            out.append(f"- {ds}: largest seed-to-seed move of one method's accuracy "
                       f"{100 * max(abs(x) for v in moves.values() for x in v):.2f} points "
                       f"({', '.join(f'{n} {100 * v[0]:+.2f}' for n, v in moves.items())}).")
        out += [f"- Timing of {ds} seed {seed}: {other['timing_note']}" for seed, other in others if other.get("timing_note")]
    return out + [""]


def seed_verdict(res: dict, others: list[tuple[int, dict]]) -> str:
    """For the GTA-vs-SFT verdict: the gap on every seed, and whether it is beyond the seed spread (the same sign
    on every seed and larger than the largest seed-to-seed move of either method)."""
    gaps = [res["runs"]["gta"]["eval"]["accuracy"] - res["runs"]["sft"]["eval"]["accuracy"]]
    for _, other in others:
        if "gta" in other["runs"] and "sft" in other["runs"]:
            gaps.append(other["runs"]["gta"]["eval"]["accuracy"] - other["runs"]["sft"]["eval"]["accuracy"])
    moves = seed_moves(res, others)
    spread = [abs(x) for n in ("sft", "gta") for x in moves.get(n, [])]
    if len(gaps) < 2 or not spread:
        return ""
    beyond = (all(g > 0 for g in gaps) or all(g < 0 for g in gaps)) and min(abs(g) for g in gaps) > max(spread)
    return (f"; GTA - SFT on seeds {', '.join(str(k) for k in [0] + [k for k, _ in others])}: "
            f"{', '.join(f'{100 * g:+.2f}' for g in gaps)} points, seed-to-seed moves of SFT/GTA up to "
            f"{100 * max(spread):.2f}: **{'beyond' if beyond else 'within'} the seed spread**")


def changed_text(tr: dict) -> str:
    """Fig. 7's second figure: how often the answer is not the guess, and how often such a change is right."""
    c = tr.get("changed")
    if not c:
        return "; answers that differ from the guess not counted (the run predates it)"
    right = f", {c['of which right']} of them right ({pct(c['of which right'] / c['answer != guess'])}%)" \
        if c["answer != guess"] else ""
    return f"; the answer differs from the guess on {c['answer != guess']} of {c['n']} ({pct(c['answer != guess'] / c['n'])}%){right}"


def _quantiles(xs: list[int]) -> str:
    if len(xs) == 1:
        return f"{xs[0]}"
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return f"{statistics.median(xs):g} [{q[0]:g}-{q[-1]:g}], max {max(xs)}"


def run_sets(ds: str, res: dict, seeds: dict, reps: dict | None = None) -> list[tuple[int | str, dict]]:
    """A dataset's sets of runs: (seed, results) of the reported seed-0 runs, of each other seed, and
    ("0, rerun", results) of a replication of seed 0 (results/replication/, another machine or code version)."""
    return [(0, res)] + seeds.get(ds, []) + ([("0, rerun", reps[ds])] if ds in (reps or {}) else [])


def diagnostics(results: dict, seeds: dict, reps: dict | None = None) -> list[str]:
    """What each trained run did, beside its score: think-span lengths in tokens, answers that differ from the
    guess, groups with no RL signal over training, and (GTA) the two gradients' sizes on updates that kept and
    that dropped the SFT gradient. reps: {dataset: results} of replications, whose runs get rows too."""
    rows = []
    for ds, res in results.items():
        for seed, r0 in run_sets(ds, res, seeds, reps):
            for name in ("sft", "grpo", "gta", "gta-rl"):
                r = r0["runs"].get(name)
                if not r:
                    continue
                a, m = r.get("answers") or {}, r["metrics"]
                tokens = a.get("think_tokens")
                if tokens is None:
                    rerun = seed == 0 and name in (reps or {}).get(ds, {}).get("runs", {})
                    think = (f"not recorded (the run's predictions were not kept{'; its rerun has them' if rerun else ''})"
                             if name != "sft" else "—") + " | —"
                else:
                    think = f"{pct(len(tokens) / a['n'])}% | {_quantiles(tokens) if tokens else '—'}"
                c = (r.get("transitions") or {}).get("changed")
                changed = (f"{pct(c['answer != guess'] / c['n'])} | "
                           f"{pct(c['of which right'] / c['answer != guess']) if c['answer != guess'] else '—'}"
                           if c else ("not recorded | —" if name in ("gta", "gta-rl") else "— | —"))
                groups = "—"
                if m and "groups/informative" in m[0]:
                    groups = " / ".join(f"{100 * (1 - _mean(rows_, 'groups/informative')):.1f}"
                                        for rows_ in (m[:16], m[-16:], m))
                grads = balance_summary(m) if name == "gta" else "—"
                rows.append(f"| {ds} | {name} | {seed} | {think} | {changed} | {groups} | {grads} | "
                            f"{placeholder_text(r)} | {entropy_text(m)} | {gap_text(m)} |")
    if not rows:
        return []
    return ["## Diagnostics of each trained run (test subset; training metrics)", "",
            "Think spans: the share of test outputs that have one, and their length in the model's tokens (median "
            "[10th-90th percentile], max; `docs/figures/DATASET-diagnostics.png` has the distributions). Answer != "
            "guess: the share of test outputs whose answer is not their guess (a missing span counts as a change), "
            "and how many of those changed answers are right. Uninformative groups: the share of prompts whose G "
            "rewards were all equal (no advantage, so no RL signal), over the first 16 steps / the last 16 / all. "
            "Gradients (GTA): medians of ||g_SFT||, ||g_RL|| (before the conflict rule and clipping) and rl_share "
            "= ||lambda2 g_RL|| / ||applied gradient||, on the updates that kept and that dropped g_SFT. Seed \"0, "
            "rerun\": a replication of the seed-0 runs (same seed, subsets and config; see Replications). "
            "Placeholders: the share of test outputs whose span is the prompt's format-line word (`label`, "
            "`reasoning`), per span. Entropy: the mean entropy of the sampled tokens (nats) over the first 16 and "
            "the last 16 steps (a fall to ~0 is a collapse onto one output). Sampler gap: the mean |log pi_sampler "
            "- log pi_old| per sampled token (the bf16 sampler against the trainer's fp32-head log-probs).", "",
            "| dataset | run | seed | think spans (% of outputs) | think tokens | answer != guess (%) | "
            "of those right (%) | uninformative groups (%) | gradients | placeholders (%) | entropy | sampler gap |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]


def placeholder_text(run: dict) -> str:
    """The share of test outputs whose span is the format line's placeholder word, per span (think 100.0, ...)."""
    rates = run.get("eval", {}).get("placeholder_rate")
    if rates is None:
        return "not recorded"
    return ", ".join(f"{span} {pct(rate)}" for span, rate in rates.items()) or "—"


def entropy_text(metrics: list[dict]) -> str:
    """Mean sampled-token entropy over the first 16 and the last 16 steps."""
    if not metrics or not all("entropy" in r for r in metrics):
        return "—" if metrics and "loss/rl" not in metrics[0] else "not recorded"
    return f"{_mean(metrics[:16], 'entropy'):.2f} -> {_mean(metrics[-16:], 'entropy'):.2f}"


def gap_text(metrics: list[dict]) -> str:
    """Mean |log pi_sampler - log pi_old| per sampled token over the run."""
    if not metrics or not all("rollout/logprob_gap" in r for r in metrics):
        return "—" if metrics and "loss/rl" not in metrics[0] else "not recorded"
    return f"{_mean(metrics, 'rollout/logprob_gap'):.4f}"


def plot_diagnostics(results: dict, seeds: dict, reps: dict | None = None) -> list[str]:
    """Per dataset: the think-span length distribution of each run (replications' too), and the share of
    uninformative groups over training."""
    have = {ds: [(seed, n, r) for seed, res in run_sets(ds, results[ds], seeds, reps)
                 for n, r in res["runs"].items() if n in ("grpo", "gta", "gta-rl")]
            for ds in results}
    if not any(have.values()):
        return []
    plt = _pyplot()
    made = []
    for ds, runs in have.items():
        if not runs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for seed, n, r in runs:
            label = f"{n} (seed {seed})"
            tokens = (r.get("answers") or {}).get("think_tokens")
            if tokens:
                axes[0].hist(tokens, bins=range(0, max(tokens) + 2), histtype="step", label=label)
            m = [x for x in r["metrics"] if "groups/informative" in x]
            if m:
                axes[1].plot([x["step"] for x in m], _smooth([100 * (1 - x["groups/informative"]) for x in m]),
                             label=label)
        if not axes[0].get_legend_handles_labels()[0]:
            axes[0].text(0.5, 0.5, "not recorded for these runs\n(their predictions were not kept)", ha="center",
                         transform=axes[0].transAxes)
        axes[0].set(title=f"{ds}: think-span length (test outputs)", xlabel="tokens", ylabel="outputs")
        axes[1].set(title=f"{ds}: uninformative groups (moving avg 8)", xlabel="step", ylabel="%")
        made.append(_save(plt, fig, axes, f"{ds}-diagnostics.png"))
    return made


def machine_short(res: dict) -> str:
    """The one machine of a dataset's runs, or how many kinds there were (docs/results.md names them)."""
    groups = machines(res)
    return next(iter(groups)) if len(groups) == 1 else f"{len(groups)} kinds, see docs/results.md"


def readme_table(results: dict, before: dict, tfidf: dict) -> list[str]:
    """README.md's results table: test accuracy of the corrected code, TF-IDF + LR beside it, and the figures of
    the code before the fix for the datasets not rerun yet."""
    names = {"sst5": "SST-5", "massive_scenario": "MASSIVE scenario", "emotion": "Emotion", "bbc_news": "BBC News"}
    out = ["| dataset (test accuracy %) | base zero-shot (direct) | SFT | GRPO | GTA | GTA(RL) | "
           "TF-IDF + LR, same 512 / whole train split | machine |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for ds in DATASETS:
        res = results.get(ds)
        lr = tfidf.get(ds, {})
        lr_cell = " / ".join(f"{100 * lr[k]['accuracy']:.1f}" if k in lr else "—" for k in ("subset", "full"))
        if res is None and ds in before:
            res, where = before[ds], "code before the fix; " + machine_short(before[ds])
        elif res is None:
            out.append(f"| {names[ds]} | not run | | | | | {lr_cell} | |")
            continue
        else:
            where = machine_short(res)
        cells = [f"{100 * r['eval']['accuracy']:.1f}" if (r := res["runs"].get(n)) else
                 ("—" if n == "gta-rl" and ds != "sst5" else "not run yet")
                 for n in ("base-direct", "sft", "grpo", "gta", "gta-rl")]
        out.append(f"| {names[ds]} | " + " | ".join(cells) + f" | {lr_cell} | {where} |")
    return out


if __name__ == "__main__":
    main()
