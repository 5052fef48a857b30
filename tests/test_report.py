"""benchmarks/report.py: its statistics, and a page whose verdicts follow the numbers beside them."""
import json
import random
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["anger", "joy", "sadness"]
N = 300  # test examples of the synthetic runs


def _answers(paper, gold: list[int], pred: list[int], think: int | None = 2) -> dict:
    names = lambda xs: [LABELS[i] if i >= 0 else "nope" for i in xs]  # noqa: E731
    return {"n": len(gold), "correct": "".join("1" if g == p else "0" for g, p in zip(gold, pred)),
            "gold": paper.label_codes(names(gold), LABELS), "predicted": paper.label_codes(names(pred), LABELS),
            "think_tokens": [think] * len(gold) if think else [], "think_n": len(gold) if think else 0,
            "think_placeholder": len(gold) if think else 0, "think_label": 0}


def _run(paper, gold, acc: float, seed: int, rl: bool = True, **metrics) -> dict:
    """A finished run whose answers are right on a seeded share `acc` of the test examples."""
    rng = random.Random(seed)
    pred = [g if rng.random() < acc else (g + 1) % len(LABELS) for g in gold]
    from sklearn.metrics import f1_score

    ev = {"n": len(gold), "accuracy": sum(p == g for p, g in zip(pred, gold)) / len(gold),
          "f1_weighted": f1_score(gold, pred, labels=[0, 1, 2], average="weighted", zero_division=0),
          "placeholder_rate": {"think": 1.0, "answer": 0.0} if rl else {},
          "confusion_matrix": {"labels": LABELS + ["<invalid>"]}}
    base = {"reward/accuracy": acc, "entropy": 1.0, "groups/informative": 0.5, "rollout/logprob_gap": 0.01} if rl else {}
    rows = [{"step": i + 1, **base, **metrics} for i in range(32)]
    for row in rows[15::16]:
        row["eval/accuracy"] = acc
    return {"eval": ev, "answers": _answers(paper, gold, pred, 2 if rl else None), "metrics": rows, "code": ["2daa8c6"],
            "train_wall_s": 60.0, "eval_wall_s": 60.0}


def _dataset(paper, ds: str, seed: int = 0, accs: dict | None = None, changed: int = 0) -> dict:
    gold = [i % len(LABELS) for i in range(N)]
    accs = accs or {"base-direct": 0.1, "base-think": 0.05, "sft": 0.6, "grpo": 0.2, "gta": 0.8}
    if ds == "sst5":
        accs.setdefault("gta-rl", 0.5)
    runs = {}
    for i, (name, acc) in enumerate(accs.items()):
        runs[name] = _run(paper, gold, acc, 100 * seed + i, rl=name not in ("base-direct", "base-think", "sft"),
                          **({"guess/accuracy": acc, "conflict/sft_dropped": 0.25, "rl_share": 0.5} if name == "gta" else {}))
        if name.startswith("base"):  # zero-shot: no training
            for key in ("metrics", "train_wall_s"):
                del runs[name][key]
    if "gta" in runs:
        runs["gta"]["transitions"] = {"counts": {"wrong->right": 30, "right->wrong": 10, "both right": 200, "both wrong": 60},
                                      "changed": {"n": N, "answer != guess": changed, "of which right": changed // 2}}
    machine = {"cpu": "AMD EPYC", "cpu_id": "family 25 model 17", "bf16_native": True, "threads": 2}
    protocol = {"model": "smollm2-135m", "seed": seed, "train_limit": 512, "test_limit": 1000, "eval_limit": 100, "epochs": 1,
                "batch_size": 4, "learning_rate": 1e-5, "num_generations": 8, "num_iterations": 1, "beta": 0.01,
                "epsilon": 0.2, "ref_sync_steps": 16, "max_completion_length": 96, "max_prompt_length": 256, "eval_every": 16}
    return {"dataset": ds, "protocol": protocol, "machine": machine, "runs": runs}


@pytest.fixture
def page(report, paper, tmp_path, monkeypatch):
    """Point the report at a results folder in tmp_path; returns a writer of results files and the page's paths."""
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "DOC", tmp_path / "docs" / "results.md")
    monkeypatch.setattr(report, "FIGS", tmp_path / "docs" / "figures")
    monkeypatch.setattr(report, "after_fix", lambda commit: not commit.startswith("old"))
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{report.TABLE[0]}\nOLD-TABLE\n{report.TABLE[1]}\nmiddle\n{report.EXPECT[0]}\nOLD-EXPECT\n"
                      f"{report.EXPECT[1]}\nend\n")
    monkeypatch.setattr(report, "README", readme)
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:  # plots are the `plots` extra, not the test one
        monkeypatch.setattr(report, "plot", lambda results: [])

    def write(res: dict, folder: str = ""):
        (results / folder).mkdir(exist_ok=True)
        (results / folder / f"{res['dataset']}.json").write_text(json.dumps(res))

    return write, tmp_path


def test_weighted_f1_matches_scikit_learn_and_its_bootstrap_interval_holds_it(report, paper):
    import numpy as np
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 500)
    pred = np.where(rng.random(500) < 0.6, gold, rng.integers(-1, 3, 500))  # -1: an answer that is not a label
    assert report.f1_weighted(gold, pred, 3) == pytest.approx(f1_score(gold, pred, labels=[0, 1, 2], average="weighted"))
    codes = {"gold": "".join(report.CODES[i] for i in gold), "predicted": "".join(report.CODES[i] if i >= 0 else "-" for i in pred)}
    assert codes["predicted"] == paper.label_codes([LABELS[i] if i >= 0 else "x" for i in pred], LABELS)
    lo, hi = report.f1_interval(codes)
    point = f1_score(gold, pred, labels=[0, 1, 2], average="weighted")
    assert lo < point < hi and 0.03 < hi - lo < 0.2
    assert report.f1_interval({"correct": "01"}) is None  # a run recorded before predictions were kept


def test_committed_results_recompute_their_f1_from_the_recorded_labels(report):
    """The per-example labels in the results files are those the evaluation scored."""
    checked = 0
    for path in sorted(p for ds in report.DATASETS for p in report.RESULTS.glob(f"**/{ds}.json")):
        for name, run in json.loads(path.read_text())["runs"].items():
            a = run.get("answers") or {}
            if "predicted" in a:
                k = len(run["eval"]["confusion_matrix"]["labels"]) - 1
                f1 = report.f1_weighted(report.decode(a["gold"]), report.decode(a["predicted"]), k)
                assert f1 == pytest.approx(run["eval"]["f1_weighted"]), (path.name, name)
                checked += 1
    assert checked >= 8  # emotion's five runs and sst5's first three at least


def test_intervals_differences_and_verdict_rule(report):
    lo, hi = report.wilson(0.0, 1000)
    assert lo == 0 and 0.003 < hi < 0.004  # not the normal interval's 0 width
    lo, hi = report.wilson(0.5, 1000)
    assert hi - lo == pytest.approx(2 * 1.96 * (0.25 / 1000) ** 0.5, rel=0.01)
    a, b = {"correct": "1100"}, {"correct": "1010"}  # one example each gets right alone
    assert report.paired(a, b) == (0.0, pytest.approx(1.96 * (0.5 / 4) ** 0.5))
    diff, half = report.paired({"correct": "1" * 90 + "0" * 10}, {"correct": "0" * 30 + "1" * 70})
    assert diff == pytest.approx(0.2) and half == pytest.approx(1.96 * ((0.4 - 0.04) / 100) ** 0.5)
    assert report.sign_test(5, 5) == 1.0 and report.sign_test(0, 0) == 1.0
    assert report.sign_test(0, 6) == pytest.approx(2 / 64)
    assert report.decide([(0.05, 0.02), (0.03, 0.02)]) == "held"
    assert report.decide([(0.05, 0.02), (0.01, 0.02)]) == "not shown"  # the second seed's is within its interval
    assert report.decide([(-0.05, 0.02)]) == "reversed" and report.decide([]) == "not shown"


def test_page_of_complete_results_decides_each_claim_from_its_figures(report, paper, page):
    write, tmp = page
    for ds in report.DATASETS:
        write(_dataset(paper, ds))
        write(_dataset(paper, ds, seed=1, accs={"sft": 0.6, "gta": 0.62}), "seed1")
    tfidf = {ds: {"subset": {"n_train": 512, "n_test": N, "accuracy": 0.5, "f1_weighted": 0.5, "correct": "10" * (N // 2)}}
             for ds in report.DATASETS}
    (tmp / "results" / "tfidf.json").write_text(json.dumps({"datasets": tfidf}))
    report.main()
    doc = (tmp / "docs" / "results.md").read_text()
    assert len(doc.splitlines()) < 250 and "Not yet run" not in doc
    for section in ("## Protocol", "## Accuracy and weighted F1", "## The paper's claims", "## Which conflict rule?",
                    "## Diagnostics of the RL runs", "## What the diagnostics say", "## Runs"):
        assert section in doc
    sft, gta = (json.loads((tmp / "results" / "emotion.json").read_text())["runs"][n]["answers"] for n in ("sft", "gta"))
    d0, h0 = report.paired(gta, sft)
    sft1, gta1 = (json.loads((tmp / "results" / "seed1" / "emotion.json").read_text())["runs"][n]["answers"]
                  for n in ("sft", "gta"))
    d1, h1 = report.paired(gta1, sft1)
    assert d0 - h0 > 0 and abs(d1) < h1  # seed 0 beyond its interval, seed 1 within: the claim is not shown
    assert (f"| GTA > SFT (accuracy) | Emotion | GTA - SFT seed 0: {100 * d0:+.1f} ± {100 * h0:.1f}; seed 1: "
            f"{100 * d1:+.1f} ± {100 * h1:.1f} | **not shown** |") in doc
    half = 1.96 * ((0.8 * 0.2 + 0.2 * 0.8) / 100) ** 0.5  # the held-out curves: 0.8 and 0.2 on 100 examples
    assert (f"| GTA converges faster than GRPO (held-out curve means, seed 0) | Emotion | held-out accuracy GTA - GRPO "
            f"+60.0 ± {100 * half:.1f} (training accuracy reward 0.80 vs 0.20) | **held** |") in doc
    assert "| GTA(SFT+RL) > GTA(RL) | SST-5 |" in doc
    assert "| The answer corrects the guess | Emotion | wrong->right 30, right->wrong 10 " in doc
    assert f"p = {report.sign_test(30, 10):.2g} | **held** |" in doc
    gta_row = next(line for line in doc.splitlines() if line.startswith("| Emotion | GTA |"))
    ev = json.loads((tmp / "results" / "emotion.json").read_text())["runs"]["gta"]["eval"]
    assert gta_row.startswith(f"| Emotion | GTA | {100 * ev['accuracy']:.1f} (") and "| 92.5 / 92.5 |" in gta_row
    assert "| 1: " in gta_row  # the second seed beside the first
    # diagnostics: placeholder shares, think tokens, labels used, entropy, uninformative groups and the sampler gap
    assert "| Emotion | gta | 0 | 100.0 / 0.0 | 2 | 0.0 | 3 of 3 | 0.0 / — | 1.00 -> 1.00 | 50 -> 50 | 0.0100 |" in doc
    assert "the think span holds no reasoning" in (tmp / "README.md").read_text()
    text = (tmp / "README.md").read_text()
    assert text.startswith(f"top\n{report.TABLE[0]}\n| dataset") and "OLD-" not in text and text.endswith(f"{report.EXPECT[1]}\nend\n")
    runs = json.loads((tmp / "results" / "emotion.json").read_text())["runs"]
    accs = " | ".join(f"{100 * runs[n]['eval']['accuracy']:.1f}" for n in ("base-direct", "sft", "grpo", "gta"))
    assert f"| Emotion | {accs} | — | 50.0 / — |" in text
    assert "GTA is, in effect, SFT with a guess" in text  # its answer never differs from its guess here
    assert f"Emotion {100 * d0:+.1f} ± {100 * h0:.1f}" in text


def test_runs_before_the_format_rule_and_missing_runs_are_named_not_shown(report, paper, page):
    write, tmp = page
    res = _dataset(paper, "emotion", changed=150)
    res["runs"]["grpo"]["code"] = ["old1234"]
    res["runs"]["grpo"]["eval"]["accuracy"] = 0.123456
    del res["runs"]["base-think"]
    write(res)
    report.main()
    doc = (tmp / "docs" / "results.md").read_text()
    pending = next(line for line in doc.splitlines() if line.startswith("**Not yet run on the current code**"))
    assert "emotion grpo," in pending and "emotion base-think," in pending and "emotion gta (seed 1)" in pending
    assert "sst5 gta-rl" in pending and "12.3" not in doc
    assert "| Emotion | GRPO | pending |" in doc
    readme = (tmp / "README.md").read_text()
    accs = " | ".join(f"{100 * res['runs'][n]['eval']['accuracy']:.1f}" for n in ("base-direct", "sft"))
    assert f"| Emotion | {accs} | pending |" in readme and "| SST-5 | pending |" in readme
    assert "in effect, SFT with a guess" not in readme  # half its answers differ from the guess: no such claim
    assert "differs from its guess on 50.0% (Emotion)" in readme


def test_conflict_ablation_table_and_verdict(report, paper, page):
    write, tmp = page
    res = _dataset(paper, "emotion")
    gold = [i % len(LABELS) for i in range(N)]
    res["runs"]["gta-none"] = _run(paper, gold, 0.5, 7)
    res["runs"]["gta-project"] = _run(paper, gold, 0.8, 8, **{"conflict/sft_projected": 0.5, "rl_share": 0.25})
    write(res)
    report.main()
    doc = (tmp / "docs" / "results.md").read_text()
    assert "| Emotion | drop (eq. 11) |" in doc and "| 25.0 | 0.50 | — | `2daa8c6` |" in doc
    assert "| Emotion | project (PCGrad) |" in doc and "| 50.0 | 0.25 |" in doc
    assert "| Emotion | none |" in doc and "— (none by design)" in doc
    d, h = report.paired(res["runs"]["gta"]["answers"], res["runs"]["gta-none"]["answers"])
    assert d - h > 0 and f"- Emotion: drop - none {100 * d:+.1f} ± {100 * h:.1f} (**held**)" in doc


def test_a_collapsed_run_is_named(report, paper):
    res = _dataset(paper, "emotion")
    res["runs"]["grpo"]["answers"]["predicted"] = "1" * N  # one label on every example
    lines = report.observations({"emotion": res})
    assert ("- **Answers collapse onto a few labels**: grpo on Emotion answers 1 of 3 labels (entropy 1.00 -> 1.00 "
            "nats) on the whole test subset.") in lines  # and only it: gta answers all three
    assert any("think span's median length is 2 tokens, and 100% of their think spans are the format line's word"
               in line for line in lines)


def test_after_fix_follows_git_history(report):
    have = subprocess.run(["git", "cat-file", "-e", f"{report.FORMAT_RULE_FIX}^{{commit}}"], cwd=ROOT,
                          capture_output=True).returncode == 0
    if not have:
        pytest.skip("this checkout has no git history (a shallow clone or an archive)")
    assert report.after_fix("2daa8c6") and report.after_fix("2daa8c6+changes")  # the emotion rerun's commit
    assert not report.after_fix("1efa049")  # a replication before the format rule
    assert not report.after_fix("fb76205 (results file)")
