"""benchmarks/paper.py counts the wall time of interrupted training attempts up to their last checkpoint."""
import json
import os
from pathlib import Path

import pytest


def test_attempts_of_a_new_run_leave_its_folder_to_gta_train(paper, tmp_path):
    """The run folder does not exist before `gta train` creates it (it refuses a non-empty folder that holds
    no run): the attempts file goes beside it."""
    out = tmp_path / "sft"
    paper.write_attempts(out, [{"start": 1000.0}])
    assert not out.exists()
    assert paper.train_attempts(out) == [{"start": 1000.0, "end": 1000.0}]


def _checkpoint(out: Path, mtime: float) -> None:
    (out / "checkpoints" / "step-000016").mkdir(parents=True)
    pointer = out / "checkpoints" / "latest.json"
    pointer.write_text(json.dumps({"path": "step-000016"}))
    os.utime(pointer, (mtime, mtime))


def test_killed_attempt_counts_until_its_last_checkpoint(paper, tmp_path):
    paper.write_attempts(tmp_path, [{"start": 1000.0, "end": 1100.0}, {"start": 2000.0}])  # 2nd was killed
    _checkpoint(tmp_path, 2500.0)
    attempts = paper.train_attempts(tmp_path)
    assert [a["end"] - a["start"] for a in attempts] == [100.0, 500.0]


def test_attempt_killed_before_any_new_checkpoint_counts_nothing(paper, tmp_path):
    _checkpoint(tmp_path, 1500.0)
    paper.write_attempts(tmp_path, [{"start": 1000.0, "end": 1500.0}, {"start": 2000.0}])
    assert [a["end"] - a["start"] for a in paper.train_attempts(tmp_path)] == [500.0, 0.0]


def test_run_started_without_attempts_file_starts_at_its_config(paper, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    os.utime(tmp_path / "config.json", (3000.0, 3000.0))
    _checkpoint(tmp_path, 3600.0)
    attempts = paper.train_attempts(tmp_path)
    assert len(attempts) == 1 and attempts[0]["end"] - attempts[0]["start"] == 600.0
    assert paper.train_attempts(tmp_path / "fresh") == []


def test_code_version_names_the_commit_and_local_changes(paper, tmp_path, monkeypatch):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    (repo / "a.txt").write_text("1")
    subprocess.run(git + ["add", "a.txt"], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(paper, "ROOT", repo)
    assert paper.code_version() == head
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "benchmarks" / "results" / "d.json").write_text("{}")
    subprocess.run(git + ["add", "benchmarks"], check=True)
    subprocess.run(git + ["commit", "-qm", "r"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    (repo / "benchmarks" / "results" / "d.json").write_text('{"runs": {}}')  # what a run writes: not a code change
    assert paper.code_version() == head
    (repo / "a.txt").write_text("2")
    assert paper.code_version() == head + "+changes"
    monkeypatch.setattr(paper, "ROOT", tmp_path / "not-a-repo")
    assert paper.code_version() is None


def words(text, add_special_tokens=False):
    """A tokenizer stand-in (one token per word), so these tests do not need the protocol model."""
    return {"input_ids": text.split()}


@pytest.fixture
def paper(paper, monkeypatch):
    monkeypatch.setattr(paper, "_tokenizer", lambda: words)
    return paper


def test_answer_summary_counts_formatted_answers_that_are_not_labels(paper, tmp_path):
    rows = [{"answer": "label", "exact_format": True}, {"answer": "Joy ", "exact_format": True, "correct": True},
            {"answer": "label", "exact_format": True}, {"answer": "joy", "exact_format": False},
            {"answer": "feeling", "exact_format": True}]
    rows = [{"correct": False, "gold": "sadness", **r} for r in rows]
    pred = tmp_path / "predictions.jsonl"
    pred.write_text("\n".join(json.dumps(r) for r in rows))
    summary = paper.answer_summary(pred, ["joy", "sadness"])
    assert summary == {"n": 5, "invalid_format": 1, "not_a_label": 3,
                       "top_not_a_label": [("label", 2), ("feeling", 1)],
                       "think_n": 0, "think_words_median": None, "think_placeholder": 0, "think_label": 0,
                       "think_tokens": [],
                       "correct": "01000",  # per example, in order: for paired comparisons of two runs
                       # the labels' indices, "-" for an answer that is not one (scored whatever the format)
                       "gold": "11111", "predicted": "-0-0-"}


def test_label_codes_encode_each_label_in_one_character(paper):
    labels = [f"l{i}" for i in range(20)]
    assert paper.label_codes(["l0", "l9", "l10", "l19", "nope"], labels) == "09aj-"
    with pytest.raises(ValueError, match="at most 62"):
        paper.label_codes([], [f"l{i}" for i in range(63)])


def test_answer_summary_measures_the_think_spans_of_formatted_outputs(paper, tmp_path):
    rows = [{"answer": "joy", "think": "reasoning", "exact_format": True}, {"answer": "joy", "think": "Joy", "exact_format": True},
            {"answer": "joy", "think": "the text is upbeat", "exact_format": True},
            {"answer": "joy", "think": "happy words", "exact_format": True},
            {"answer": "joy", "think": "not counted: the output is not in the format", "exact_format": False}]
    rows = [{"correct": False, "gold": "joy", **r} for r in rows]
    pred = tmp_path / "predictions.jsonl"
    pred.write_text("\n".join(json.dumps(r) for r in rows))
    summary = paper.answer_summary(pred, ["joy"])
    assert (summary["think_n"], summary["think_words_median"], summary["think_placeholder"]) == (4, 1.5, 1)
    assert summary["think_label"] == 1  # "Joy": the think span is a label, not reasoning
    assert summary["think_tokens"] == [1, 1, 4, 2, 9]  # every think span, in order, formatted or not


def test_transitions_count_the_answers_that_differ_from_the_guess(paper, tmp_path):
    rows = [("joy", "joy", "joy"), ("joy", "sadness", "joy"), ("joy", "joy", "sadness"),
            ("joy", "anger", "sadness"), ("joy", "anger", "anger"), ("joy", None, "joy")]  # gold, guess, answer
    pred = tmp_path / "predictions.jsonl"
    pred.write_text("\n".join(json.dumps({"text": "t", "gold": g, "guess": q, "think": "x", "answer": a,
                                          "correct": a == g}) for g, q, a in rows))
    tr = paper.transitions(pred)
    assert tr["counts"] == {"wrong->right": 2, "right->wrong": 1, "both right": 1, "both wrong": 2}
    # changed: sadness->joy, joy->sadness, anger->sadness (hidden in "both wrong"), none->joy; right: two of them
    assert tr["changed"] == {"n": 6, "answer != guess": 4, "of which right": 2}


def test_finished_runs_get_their_answer_summary_backfilled(paper, tmp_path):
    pred = tmp_path / "gta" / "eval" / "predictions.jsonl"
    pred.parent.mkdir(parents=True)
    pred.write_text(json.dumps({"text": "t", "gold": "joy", "guess": "joy", "think": None, "answer": "label",
                                "exact_format": True, "correct": False}))
    results = {"runs": {"gta": {"eval": {"confusion_matrix": {"labels": ["joy", "sadness", "invalid"]}}},
                        "sft": {"eval": {}}}}  # sft: no predictions file, left alone
    assert paper.backfill_answers(results, tmp_path)
    assert results["runs"]["gta"]["answers"]["not_a_label"] == 1 and "answers" not in results["runs"]["sft"]
    assert results["runs"]["gta"]["transitions"]["changed"]["answer != guess"] == 1  # GTA's guess -> answer too
    assert not paper.backfill_answers(results, tmp_path)  # nothing new: the caller need not save
    del results["runs"]["gta"]["answers"]["think_n"]  # a summary written before a figure was added
    assert paper.backfill_answers(results, tmp_path) and results["runs"]["gta"]["answers"]["think_n"] == 0


def test_machine_records_whether_bf16_is_native(paper, monkeypatch):
    """Two CPUs named "AMD EPYC" differ in native bf16, which decides the precision of training and of the speed
    benchmarks: the record says which."""
    import gta.models

    m = paper.machine()
    assert m["cpu_id"].startswith("family ") and isinstance(m["bf16_native"], bool)
    monkeypatch.setattr(gta.models, "bf16_supported", lambda device: False)
    assert paper.machine()["bf16_native"] is False
    monkeypatch.setattr(gta.models, "bf16_supported", lambda device: True)
    assert paper.machine()["bf16_native"] is True


def test_rerun_drops_the_result_and_moves_the_run_aside(paper, tmp_path):
    import json

    results = {"dataset": "emotion", "machine": {"cpu": "A"}, "runs": {"gta": {"eval": {"accuracy": 0.25}}, "sft": {"eval": {}}}}
    (tmp_path / "gta" / "checkpoints").mkdir(parents=True)
    paper.attempts_file(tmp_path / "gta").write_text("[]")
    paper.drop_run(results, tmp_path, "gta", tmp_path / "results" / "superseded")
    assert list(results["runs"]) == ["sft"]
    [kept] = (tmp_path / "results" / "superseded").iterdir()  # the dropped figures are kept, with their machine
    assert kept.name.startswith("emotion-gta-") and json.loads(kept.read_text())["run"] == {
        "eval": {"accuracy": 0.25}, "machine": {"cpu": "A"}}
    (tmp_path / "results").rename(tmp_path.parent / f"{tmp_path.name}-results")
    assert not (tmp_path / "gta").exists() and not paper.attempts_file(tmp_path / "gta").exists()
    moved = sorted(p.name for p in tmp_path.iterdir())
    assert len(moved) == 2 and all(".before-" in name for name in moved)  # nothing deleted
    paper.drop_run(results, tmp_path, "grpo")  # nothing to drop: no error


def test_timing_note_is_recorded_and_removed_without_touching_the_runs(tmp_path):
    """`paper.py --timing-note TEXT` records what shared the CPU beside a dataset's figures (report.py prints it
    with their wall times), runs nothing and keeps every run; '' removes it."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paper.py"
    out = tmp_path / "results" / "sst5.json"
    out.parent.mkdir()
    runs = {"sft": {"eval": {"accuracy": 0.5}}}
    out.write_text(json.dumps({"dataset": "sst5", "runs": runs}))
    cmd = [sys.executable, str(script), "--dataset", "sst5", "--results", str(out.parent), "--runs", str(tmp_path / "runs")]
    subprocess.run(cmd + ["--timing-note", "a test suite shared the CPU"], check=True, capture_output=True)
    res = json.loads(out.read_text())
    assert res == {"dataset": "sst5", "runs": runs, "timing_note": "a test suite shared the CPU"}
    assert not (tmp_path / "runs").exists()  # nothing ran, no run folder was made
    subprocess.run(cmd + ["--timing-note", ""], check=True, capture_output=True)
    res = json.loads(out.read_text())
    assert res == {"dataset": "sst5", "runs": runs}


def test_gta_commands_run_this_checkouts_code(paper, tmp_path, monkeypatch):
    """A clone made for benchmarking runs its own src/, not the checkout `pip install -e` points at, so the commit
    code_version() records is the code that ran."""
    fake = tmp_path / "clone" / "src" / "gta"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("print('ran', __file__)")
    monkeypatch.setattr(paper, "ROOT", tmp_path / "clone")
    log = tmp_path / "log.txt"
    paper.run(paper.gta("eval"), log)
    assert f"ran {fake / '__main__.py'}" in log.read_text()


def test_the_ablation_variants_are_gta_under_the_other_conflict_rules(paper):
    from gta.cli import build_parser

    assert paper.method_flags("gta") == ["--method", "gta"]
    for name, rule in (("gta-project", "project"), ("gta-none", "none")):
        args = build_parser().parse_args(["train", *paper.method_flags(name)])
        assert (args.method, args.conflict) == ("gta", rule)
