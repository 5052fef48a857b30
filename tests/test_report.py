"""benchmarks/report.py decides its verdicts from the numbers it prints."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(train, held):
    metrics = [{"step": i + 1, "reward/accuracy": r} for i, r in enumerate(train)]
    for i, a in enumerate(held):
        metrics[i]["eval/accuracy"] = a
    return {"metrics": metrics}


def test_convergence_verdict_needs_both_curves(report):
    both = {"gta": _run([0.2, 0.4], [0.3, 0.5]), "grpo": _run([0.1, 0.2], [0.1, 0.2])}
    assert "**held**" in report.convergence_verdict("d", both)
    one = {"gta": _run([0.2, 0.4], [0.1, 0.1]), "grpo": _run([0.1, 0.2], [0.1, 0.2])}
    assert "**mixed**" in report.convergence_verdict("d", one)
    none = {"gta": _run([0.0, 0.0], [0.0, 0.0]), "grpo": _run([0.0, 0.1], [0.1, 0.2])}
    line = report.convergence_verdict("d", none)
    assert "**not held**" in line and "held-out accuracy GTA 0.000, GRPO 0.150" in line


def test_report_of_all_four_datasets_has_every_section(report, tmp_path, monkeypatch):
    """The whole document from four complete results files (sst5 with GTA(RL)), built from the committed emotion
    results, so the sections not yet filled by real runs (Table 3, bbc_news) are exercised before they are."""
    import copy
    import importlib.util as iu
    import json

    emotion = json.loads((ROOT / "benchmarks" / "results" / "before-fidelity" / "emotion.json").read_text())
    # the figures below are of emotion's GTA run as first reported (a rerun replaces it in the results file)
    emotion["runs"]["gta"]["eval"].update(accuracy=0.013, f1_weighted=0.02328143321134095)
    emotion["runs"]["gta"].update(train_wall_s=4809.17, eval_wall_s=410.34, answers={
        "n": 1000, "invalid_format": 0, "not_a_label": 948, "top_not_a_label": [["label", 947], ["emo", 1]],
        "think_n": 1000, "think_words_median": 1.0, "think_placeholder": 1000})
    for run in emotion["runs"].values():
        run.pop("machine", None)
    results = tmp_path / "results"
    results.mkdir()
    for ds in report.DATASETS:
        res = copy.deepcopy(emotion)
        res["dataset"] = ds
        if ds == "sst5":
            rl = copy.deepcopy(res["runs"]["gta"])
            rl["eval"]["accuracy"] = 0.0  # below GTA's, so the ablation verdict must say held
            for row in rl["metrics"]:  # gta-rl has no SFT loss, so no conflict statistics
                for key in ("loss/sft", "conflict/cosine", "conflict/sft_dropped"):
                    row.pop(key, None)
            res["runs"]["gta-rl"] = rl
        (results / f"{ds}.json").write_text(json.dumps(res))
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "DOC", tmp_path / "docs" / "results.md")
    monkeypatch.setattr(report, "FIGS", tmp_path / "docs" / "figures")
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{report.TABLE_START}\nold\n{report.TABLE_END}\nafter\n")
    monkeypatch.setattr(report, "README", readme)
    if iu.find_spec("matplotlib") is None:  # plots are the `plots` extra, not the test one
        monkeypatch.setattr(report, "plot", lambda results: [])
    report.main()
    doc = (tmp_path / "docs" / "results.md").read_text()
    text = readme.read_text()  # the table is replaced, the rest kept
    assert text.startswith(f"before\n{report.TABLE_START}\n| dataset") and text.endswith(f"{report.TABLE_END}\nafter\n")
    assert "| SST-5 | 2.0 | 58.9 | 1.8 | 1.3 | 0.0 |" in text and "old" not in text
    assert "Not run yet" not in doc and "incomplete" not in doc
    assert "## Table 3 analogue (SST-5)" in doc
    assert "GTA > GTA(RL) on SST-5): **held** (acc 1.30 vs 0.00; GTA - GTA(RL) +1.30 ± 0.70)" in doc
    assert "Neither covers run-to-run spread. No replication (same seed, another machine) has been run, so the " \
           "spread is not measured." in doc
    for ds in report.DATASETS:
        assert f"- GTA beats SFT and GRPO on {ds}: **not held**" in doc
        assert f"- The answer corrects wrong guesses on {ds}" in doc
        assert f"| {ds} | 3 | 10 | 13 + 2 | 44 + 3 | 80 + 7 |" in doc
    assert "| sst5 | 3 | 10 | 13 + 2 | 44 + 3 | 80 + 7 | 80 + 7 | 249 | no |" in doc
    # emotion's GTA think spans are all the placeholder; its SFT outputs have none
    assert "| bbc_news | gta | 0.00 | 94.80 | `label` 947, `emo` 1 | 1 | 100.00 |" in doc
    assert "| bbc_news | sft | 0.00 | 0.00 | — | — | — | 6 of 6 |" in doc
    if iu.find_spec("matplotlib") is not None:
        assert sorted(p.name for p in (tmp_path / "docs" / "figures").iterdir()) == sorted(
            f"{ds}{kind}.png" for ds in report.DATASETS for kind in ("", "-diagnostics"))


def test_convergence_verdict_without_held_out_curve_uses_training_reward(report):
    runs = {"gta": _run([0.3], []), "grpo": _run([0.1], [])}
    line = report.convergence_verdict("d", runs)
    assert "**held**" in line and "held-out" not in line


def test_replication_table_sets_a_rerun_beside_the_reported_runs(report, tmp_path, monkeypatch):
    import copy
    import json

    emotion = json.loads((ROOT / "benchmarks" / "results" / "before-fidelity" / "emotion.json").read_text())
    (tmp_path / "replication").mkdir()
    rerun = copy.deepcopy(emotion)
    rerun["machine"].update(cpu="Other CPU", cpu_id="family 25 model 1", bf16_native=False)
    rerun["runs"]["sft"]["eval"]["accuracy"] = 0.5
    rerun["runs"]["sft"]["train_wall_s"], rerun["runs"]["sft"]["eval_wall_s"] = 600.0, 60.0
    rerun["runs"]["sft"]["code"] = ["abc1234"]
    del rerun["runs"]["gta"]
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (tmp_path / "replication" / "emotion.json").write_text(json.dumps(rerun))
    lines = report.replications({"emotion": emotion})
    assert lines[0] == "## Replications: the same protocol run again"
    assert any(line.startswith("emotion: reported on ") and "rerun on Other CPU (family 25 model 1, no native bf16: float32), 2 threads." in line
               for line in lines)
    sft = emotion["runs"]["sft"]
    assert (f"| sft | 58.90 / {100 * sft['eval']['f1_weighted']:.2f} | 50.00 / {100 * sft['eval']['f1_weighted']:.2f} "
            f"| 15 | 11 | `abc1234` |") in lines
    assert not any(line.startswith("| gta |") for line in lines)
    assert lines[-2].endswith("| 4/5 runs so far |")
    rerun["runs"]["gta"] = emotion["runs"]["gta"]  # complete: the budget verdict appears
    (tmp_path / "replication" / "emotion.json").write_text(json.dumps(rerun))
    assert report.replications({"emotion": emotion})[-2].endswith("| within 150 min: no |")
    assert report.replications({}) == []  # a rerun of a dataset with no reported runs is not shown
    # the verdicts' note gives the largest move of an accuracy between a reported run and its rerun
    assert report.verdict_note({"emotion": emotion}).endswith(
        f"moved emotion sft's accuracy by {100 * (0.589 - 0.5):.2f} points.")


def _ev(acc, n, correct=None):
    return {"eval": {"accuracy": acc, "n": n}, **({"answers": {"correct": correct}} if correct else {})}


def test_accuracy_difference_interval_and_sign_test(report):
    """Hand-computed. Unpaired: 1.96 * sqrt(.5 * .5 / 1000 + .4 * .6 / 1000) = 4.338 points. Paired, 10 examples,
    right only in a: 2, only in b: 1: d = 0.1, 1.96 * sqrt((3 / 10 - 0.01) / 10) = 33.38 points. The sign test of
    0 : 5 is 2 / 32, of 1 : 4 is 2 * 6 / 32, of 3 : 3 is 1 (capped)."""
    assert report.acc_diff(_ev(0.5, 1000), _ev(0.4, 1000)) == "+10.00 ± 4.34"
    assert report.acc_diff(_ev(0.40, 100), _ev(0.45, 100)) == "-5.00 ± 13.68 (within test noise)"
    a, b = _ev(0.5, 10, "1111100000"), _ev(0.4, 10, "1110000001")
    assert report.acc_diff(a, b) == "+10.00 ± 33.38 paired (within test noise)"
    assert report.acc_diff(a, _ev(0.4, 1000)) == report.acc_diff(_ev(0.5, 10), _ev(0.4, 1000))  # one unrecorded
    same = "1" * 60 + "0" * 40  # two runs right on the same examples: no difference, no noise
    assert report.acc_diff(_ev(0.6, 100, same), _ev(0.6, 100, same)) == "+0.00 ± 0.00 paired (within test noise)"
    assert report.sign_test(0, 5) == 2 / 32 and report.sign_test(4, 1) == 12 / 32
    assert report.sign_test(3, 3) == 1.0 and report.sign_test(0, 0) == 1.0


def test_runs_are_placed_before_or_after_a_fix(report):
    """fidelity_caveat names the trained runs whose code predates FIDELITY_FIX (git decides)."""
    before = "e39a33c"  # an early commit of the project
    assert report.commit_predates(before, "64969cd") is True
    assert report.commit_predates("64969cd", "64969cd") is False
    assert report.commit_predates("notacommit", "64969cd") is None
    runs = {"sft": {"code": [before]}, "gta": {"code": [report.FIDELITY_FIX + "+changes"]}, "base-direct": {"code": [before]}}
    text = "\n".join(report.fidelity_caveat({"emotion": {"runs": runs}}))
    assert "These trained runs: emotion sft, predates" in text and "emotion gta" not in text
    assert report.fidelity_caveat({"emotion": {"runs": {"gta": {"code": [report.FIDELITY_FIX]}}}}) == []


def test_rl_runs_before_the_format_rule_are_named_at_the_top(report):
    runs = {"sft": {"code": [report.FIDELITY_FIX]}, "grpo": {"code": [report.FIDELITY_FIX]},
            "gta": {"code": [report.FORMAT_RULE_FIX]}}
    text = "\n".join(report.format_rule_caveat({"emotion": {"runs": runs}}))
    assert "(emotion grpo) predate" in text  # sft has no reward to hack; gta ran on the new rule
    assert report.format_rule_caveat({"emotion": {"runs": {"gta": {"code": [report.FORMAT_RULE_FIX]}}}}) == []


def test_protocol_text_follows_the_settings(report):
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper", ROOT / "benchmarks" / "paper.py")
    paper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper)
    p = dict(paper.PROTOCOL, learning_rate=3e-5, num_generations=4, train_limit=256)
    text = report.protocol_text(p, 16)
    assert "lr\n  3e-05" in text or "lr 3e-05" in text.replace("\n  ", " ")
    assert "G=4 instead of 16" in text and f"({256 * p['epochs'] // p['batch_size']} steps" in text


def test_runs_on_different_machines_are_named_and_not_summed(report):
    """A method rerun on another machine (paper.py --rerun) keeps its own machine record: the report names
    both machines, gives no 150-minute verdict for the sum, and notes it in the verdict that compares them."""
    import copy
    import json

    res = json.loads((ROOT / "benchmarks" / "results" / "before-fidelity" / "emotion.json").read_text())
    for run in res["runs"].values():  # as written before runs recorded their machine: the file's for all
        run.pop("machine", None)
    assert report.machines_text(res) == report.cpu(res["machine"]) + f", {res['machine']['threads']} threads"
    assert report.other_machine(res, "gta", ("sft", "grpo")) == ""
    zen3 = dict(copy.deepcopy(res["machine"]), cpu="AMD EPYC", cpu_id="family 25 model 1", bf16_native=False)
    res["runs"]["gta"]["machine"] = zen3
    text = report.machines_text(res)
    assert text.endswith("AMD EPYC (family 25 model 1, no native bf16: float32), 2 threads (gta)")
    assert "(base-direct, base-think, sft, grpo)" in text
    assert report.other_machine(res, "gta", ("sft", "grpo")) == (
        "; gta ran on AMD EPYC (family 25 model 1, no native bf16: float32), unlike sft, grpo")
    row = next(line for line in report.wall_times({"emotion": res}) if line.startswith("| emotion |"))
    assert row.endswith("| — (runs on 2 machines, see Machine above) |")


def test_a_replaced_run_is_set_beside_its_rerun(report, tmp_path, monkeypatch):
    import copy
    import json

    emotion = json.loads((ROOT / "benchmarks" / "results" / "before-fidelity" / "emotion.json").read_text())
    old = copy.deepcopy(emotion["runs"]["gta"])
    old.update(machine={"cpu": "Old CPU", "threads": 2}, code=None)
    old["eval"].update(accuracy=0.125, f1_weighted=0.25)
    (tmp_path / "superseded").mkdir()
    (tmp_path / "superseded" / "emotion-gta-20260101-000000.json").write_text(json.dumps(
        {"dataset": "emotion", "method": "gta", "results_file_commit": "abc1234", "run": old}))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    lines = report.superseded({"emotion": emotion})
    assert lines[0] == "## Reruns: each replaced run beside its rerun"
    assert any(line.startswith("| emotion gta, replaced | `abc1234 (results file)` | Old CPU | 12.50 / 25.00 |")
               for line in lines)
    new = emotion["runs"]["gta"]
    assert any(line.startswith(f"| emotion gta, rerun | ") and
               f"| {100 * new['eval']['accuracy']:.2f} / {100 * new['eval']['f1_weighted']:.2f} |" in line for line in lines)
    emotion["runs"]["gta"] = copy.deepcopy(old)  # the file still holds the replaced run: no rerun yet
    assert "| emotion gta, rerun | not finished | | | | | | | |" in report.superseded({"emotion": emotion})
    del emotion["runs"]["gta"]
    assert "| emotion gta, rerun | not finished | | | | | | | |" in report.superseded({"emotion": emotion})
    # a replication's replaced run (paper.py --results benchmarks/results/replication --rerun gta)
    (tmp_path / "superseded" / "emotion-gta-20260101-000000.json").rename(tmp_path / "moved.json")
    (tmp_path / "replication" / "superseded").mkdir(parents=True)
    (tmp_path / "moved.json").rename(tmp_path / "replication" / "superseded" / "emotion-gta-20260101-000000.json")
    (tmp_path / "replication" / "emotion.json").write_text(json.dumps(dict(emotion, runs={"gta": new})))
    lines = report.superseded({"emotion": emotion})
    assert any(line.startswith("| emotion gta (replication), replaced | `abc1234 (results file)` |") for line in lines)
    assert any(line.startswith("| emotion gta (replication), rerun | ") and "not finished" not in line for line in lines)
    assert report.GUESS_TARGET_HISTORY in lines  # the history of the defect the replaced GTA runs had


def test_answers_table_counts_the_labels_the_answers_use(report):
    """A run whose answers collapse onto two of five labels says so (sst5's RL runs answer only positive or
    negative, which is why their weighted F1 lies far below their accuracy)."""
    cm = {"labels": ["a", "b", "c", "d", "e", "<invalid>"],
          "matrix": [[5, 0, 0, 1, 0, 0], [3, 0, 0, 0, 0, 0], [2, 0, 0, 2, 0, 1], [0] * 6, [0, 0, 0, 4, 0, 0], [0] * 6]}
    answers = {"n": 18, "invalid_format": 1, "not_a_label": 0, "top_not_a_label": [], "think_n": 17,
               "think_words_median": 1.0, "think_placeholder": 0}
    run = {"eval": {"confusion_matrix": cm}, "answers": answers}
    rows = report.answers_table({"d": {"runs": {"gta": run}}})
    assert "| d | gta | 5.56 | 0.00 | — | 1 | 0.00 | 2 of 5 |" in rows


def test_tfidf_baseline_columns_and_verdict(report, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert report.tfidf_results() == {}  # tfidf.py not run: the columns show a dash
    lr = {"subset": {"accuracy": 0.55, "f1_weighted": 0.5, "n_train": 512, "n_test": 100},
          "full": {"accuracy": 0.7, "f1_weighted": 0.7, "n_train": 8000}}
    (tmp_path / "tfidf.json").write_text(json.dumps({"datasets": {"d": lr}}))
    assert report.tfidf_results() == {"d": lr}
    res = {"runs": {n: {"eval": {"accuracy": a, "f1_weighted": a, "n": 100}}
                    for n, a in (("sft", 0.5), ("grpo", 0.2), ("gta", 0.6))}}
    line = report.tfidf_verdict("d", res, lr)
    assert line.startswith("- Every LLM method (SFT, GRPO, GTA) beats TF-IDF + LR on d at equal data: **not held** (TF-IDF + LR 55.00 on the same 512")
    assert "below it at equal data: sft, grpo;" in line and "below it trained on the whole split: sft, grpo, gta;" in line
    # no per-example outcomes of TF-IDF here: two independent proportions of 100 examples each
    assert ("minus TF-IDF at equal data: sft -5.00 ± 13.82 (within test noise), grpo -35.00 ± 12.51, "
            "gta +5.00 ± 13.68 (within test noise))") in line
    # with per-example outcomes on both sides the interval is paired: here SFT is right on 4 of TF-IDF's 45 misses
    # and wrong on 5 of its 55 hits, so 9 of 100 examples differ: -1 ± 1.96 * sqrt((0.09 - 0.01**2) / 100)
    lr_p = {**lr["subset"], "correct": "1" * 55 + "0" * 45}
    sft = {"eval": {"accuracy": 0.54, "n": 100}, "answers": {"correct": "1" * 50 + "0" * 5 + "1" * 4 + "0" * 41}}
    assert report.tfidf_intervals({"runs": {"sft": sft}}, lr_p) == "minus TF-IDF at equal data: sft -1.00 ± 5.88 paired (within test noise)"
    res["runs"]["sft"]["eval"]["accuracy"] = res["runs"]["grpo"]["eval"]["accuracy"] = 0.56
    assert "**held**" in report.tfidf_verdict("d", res, lr)
    other = {"runs": {"sft": {"eval": {"accuracy": 0.50}}}}  # seed 1: SFT moves 6 points, its gap is 1
    assert report.tfidf_verdict("d", res, lr, [(1, other)]).endswith(
        "; gap to it against the seed spread: sft +1.00 (within its seed move 6.00))")


def test_reward_summary_gives_the_share_of_uninformative_groups(report):
    rows = [{"step": i + 1, "reward/accuracy": 0.0, "reward/format": 0.0, "groups/informative": 0.25 if i < 16 else 1.0}
            for i in range(32)]
    assert report.reward_summary(rows).endswith("; uninformative groups 75.0% -> 0.0% (all steps 37.5%)")
    assert "uninformative" not in report.reward_summary([{k: v for k, v in r.items() if k != "groups/informative"}
                                                         for r in rows])


def test_runs_before_the_fix_are_set_beside_the_corrected_ones(report):
    import json

    emotion = json.loads((ROOT / "benchmarks" / "results" / "before-fidelity" / "emotion.json").read_text())
    fixed = {"machine": emotion["machine"], "runs": {"sft": dict(emotion["runs"]["sft"], code=["new1234"])}}
    lines = report.fix_comparison({"emotion": fixed}, {"emotion": emotion, "sst5": dict(emotion, dataset="sst5")})
    assert lines[0] == f"## The code before the fix beside the corrected code (`{report.FIDELITY_FIX}`)"
    assert any(line.startswith("| sft |") and "`new1234`" in line for line in lines)
    # every run of the code before the fix has a row, rerun or not
    assert any(line.startswith("| gta | 58.00 / 51.70 | — |") for line in lines)
    assert any(line.startswith("sst5: before the fix on ") and line.endswith("corrected code not run yet.") for line in lines)
    assert [line for line in lines if line.startswith("| total |")][-1].endswith("| 1/5 runs so far |")
    assert report.fix_comparison({"emotion": fixed}, {}) == []
    assert report.verdict_note({"emotion": emotion}, ROOT / "nowhere").endswith(
        "No replication (same seed, another machine) has been run, so the spread is not measured.")


def _seeded(acc: dict) -> dict:
    machine = {"cpu": "A", "threads": 2}
    return {"machine": machine, "runs": {n: {"eval": {"accuracy": a, "f1_weighted": a, "n": 1000}, "machine": machine}
                                         for n, a in acc.items()}}


def test_seed_spread_decides_whether_a_gap_is_beyond_it(report, tmp_path, monkeypatch):
    import json

    seed0 = _seeded({"sft": 0.50, "gta": 0.60})
    (tmp_path / "seed1").mkdir()
    (tmp_path / "seed1" / "emotion.json").write_text(json.dumps(_seeded({"sft": 0.52, "gta": 0.57})))
    (tmp_path / "seed1" / "sst5.json").write_text(json.dumps(_seeded({"sft": 0.1})))  # no seed-0 results: ignored
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    seeds = report.seed_results({"emotion": seed0})
    assert list(seeds) == ["emotion"] and seeds["emotion"][0][0] == 1
    lines = report.seed_spread({"emotion": seed0}, seeds)
    assert lines[0] == "## Seed spread: the same protocol with another training seed"
    assert any(line.startswith("| emotion | gta | 60.00 / 60.00 | seed 1: 57.00 / 57.00 | -3.00 ± ") for line in lines)
    assert "- emotion: largest seed-to-seed move of one method's accuracy 3.00 points (sft +2.00, gta -3.00)." in lines
    # gaps +10 and +5 on the two seeds, moves up to 3: beyond the spread
    assert report.seed_verdict(seed0, seeds["emotion"]).endswith(
        "+10.00, +5.00 points, seed-to-seed moves of SFT/GTA up to 3.00: **beyond the seed spread**")
    close = _seeded({"sft": 0.50, "gta": 0.52})  # a 2-point gap with 3-point moves is within it
    assert report.seed_verdict(close, seeds["emotion"]).endswith("**within the seed spread**")
    assert report.seed_verdict(seed0, []) == "" and report.seed_spread({}, {}) == []
    seeds["emotion"][0][1]["timing_note"] = "shared the CPU"
    assert "- Timing of emotion seed 1: shared the CPU" in report.seed_spread({"emotion": seed0}, seeds)


def test_diagnostics_give_think_lengths_changed_answers_and_no_signal_groups(report):
    metrics = [{"step": i + 1, "groups/informative": 0.5 if i < 16 else 1.0, "conflict/sft_dropped": float(i % 2),
                "grad_norm/sft": 2.0, "grad_norm/rl": 1.0, "rl_share": 0.5 if i % 2 == 0 else 1.0} for i in range(32)]
    gta = {"answers": {"n": 4, "think_tokens": [1, 2, 3, 10]}, "metrics": metrics,
           "transitions": {"changed": {"n": 4, "answer != guess": 2, "of which right": 1}}}
    old = {"answers": {"n": 4}, "metrics": metrics[:2]}  # predictions not kept, no groups logged: said so
    rows = report.diagnostics({"d": {"runs": {"gta": gta, "grpo": old}}}, {"d": [(1, {"runs": {"gta": gta}})]},
                              {"d": {"runs": {"grpo": gta}}})
    line = next(r for r in rows if r.startswith("| d | gta | 0 |"))
    assert line.startswith("| d | gta | 0 | 100.00% | 2.5 [1.3-7.9], max 10 | 50.00 | 50.00 | 50.0 / 0.0 / 25.0 | kept SFT (16")
    assert any(r.startswith("| d | gta | 1 | 100.00% |") for r in rows)  # the other seed's run too
    assert any(r.startswith("| d | grpo | 0 | not recorded (the run's predictions were not kept; its rerun has them)")
               for r in rows)
    assert any(r.startswith("| d | grpo | 0, rerun | 100.00% | 2.5 [1.3-7.9]") for r in rows)  # a replication's run
    assert report.changed_text(gta["transitions"]).endswith("differs from the guess on 2 of 4 (50.00%), 1 of them right (50.00%)")


def test_diagnostics_give_placeholders_entropy_and_sampler_gap(report):
    rl = [{"step": i + 1, "loss/rl": 0.0, "entropy": 3.0 if i < 16 else 1.0, "rollout/logprob_gap": 0.002}
          for i in range(40)]
    grpo = {"answers": {"n": 4}, "eval": {"placeholder_rate": {"think": 1.0, "answer": 0.25}}, "metrics": rl}
    old = {"answers": {"n": 4}, "eval": {}, "metrics": [{"step": 1, "loss/rl": 0.0}]}  # before these were logged
    sft = {"answers": {"n": 4}, "eval": {"placeholder_rate": {"answer": 0.0}}, "metrics": [{"step": 1, "loss/sft": 1.0}]}
    rows = report.diagnostics({"d": {"runs": {"grpo": grpo, "gta-rl": old, "sft": sft}}}, {})
    line = next(r for r in rows if r.startswith("| d | grpo | 0 |"))
    assert line.endswith("| think 100.00, answer 25.00 | 3.00 -> 1.00 | 0.0020 |")
    assert next(r for r in rows if r.startswith("| d | gta-rl | 0 |")).endswith(
        "| not recorded | not recorded | not recorded |")
    assert next(r for r in rows if r.startswith("| d | sft | 0 |")).endswith("| answer 0.00 | — | — |")


def test_readme_table_marks_the_datasets_not_rerun(report):
    import json

    emotion = json.loads((ROOT / "benchmarks" / "results" / "before-fidelity" / "emotion.json").read_text())
    fixed = {"machine": emotion["machine"], "runs": {"sft": emotion["runs"]["sft"]}}
    lr = {"subset": {"accuracy": 0.431}, "full": {"accuracy": 0.798}}
    rows = report.readme_table({"emotion": fixed}, {"emotion": emotion, "bbc_news": emotion}, {"emotion": lr})
    assert any(r.startswith("| Emotion | not run yet | 58.9 | not run yet | not run yet | — | 43.1 / 79.8 |") for r in rows)
    assert any(r.startswith("| BBC News | 2.0 | 58.9 | 1.8 | 58.0 | — | — / — | code before the fix;") for r in rows)
    assert any(r.startswith("| SST-5 | not run |") for r in rows)


def test_readme_results_table_is_the_reports(report):
    """README.md's table is what report.py writes from the committed results (it is not typed by hand)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split(report.TABLE_START)[1].split(report.TABLE_END)[0].strip().splitlines()
    results, before = report.load_results(report.RESULTS), report.load_results(report.RESULTS / report.BEFORE_FIX)
    assert table == report.readme_table(results, before, report.tfidf_results())


def test_conflict_ablation_table_and_verdict(report):
    """The ablation section reads each rule's run: its scores, the share of updates the rule changed (from the
    run's own metric), rl_share and the update cosine; the verdict compares drop with no rule on the test sample."""
    def run(acc, key=None, share=0.5):
        m = [{"rl_share": share, "conflict/update_cosine_rl": 0.25, **({key: float(i % 2)} if key else {})}
             for i in range(4)]
        return {"eval": {"accuracy": acc, "f1_weighted": acc - 0.01, "n": 1000}, "metrics": m}

    res = {"emotion": {"runs": {"gta": run(0.60, "conflict/sft_dropped"),
                                "gta-project": run(0.55, "conflict/sft_projected", 0.7), "gta-none": run(0.50)}},
           "sst5": {"runs": {"gta": run(0.3, "conflict/sft_dropped")}},  # no ablation runs: no row
           "massive_scenario": {"runs": {"gta": run(0.8, "conflict/sft_dropped"), "gta-none": run(0.795)}}}
    section, verdicts = report.ablation(res)
    table = "\n".join(section)
    assert "| emotion | drop (eq. 11) | 60.00 | 59.00 | 50.00 | 0.500 | 0.250 |" in table
    assert "| emotion | project (PCGrad) | 55.00 | 54.00 | 50.00 | 0.700 | 0.250 |" in table
    assert "| emotion | none | 50.00 | 49.00 | — (none by construction) | 0.500 | 0.250 |" in table
    assert "| massive_scenario | project (PCGrad) | not run yet |" in table and "| sst5 |" not in table
    # 10 points on 1000 examples (unpaired): beyond the test noise; massive_scenario lacks a run: no verdict
    assert len(verdicts) == 1 and "emotion" in verdicts[0] and "**held**" in verdicts[0]
    res["emotion"]["runs"]["gta"]["eval"]["accuracy"] = 0.51
    assert "**not shown**" in report.ablation(res)[1][0]
    assert report.ablation({"sst5": res["sst5"]}) == ([], [])
