"""The CLI contract on a tiny model: train, eval, predict; user errors exit 2 with a clear message."""
import json

from gta.cli import main


def test_train_eval_predict(tmp_path, tiny_path, mech_data, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "gta", "--model", tiny_path, "--dataset", "bbc_news", "--data-dir",
                 str(mech_data), "--train-limit", "8", "--max-steps", "2", "--num-generations", "4",
                 "--max-completion-length", "16", "--max-prompt-length", "256", "--no-bf16", "--output", str(run),
                 "--no-progress"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["eval", str(run), "--dataset", "bbc_news", "--data-dir", str(mech_data), "--test-limit", "8",
                 "--constrain-answer"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 8 and {"accuracy", "f1_weighted", "guess_accuracy", "invalid_format_rate",
                                  "per_class", "confusion_matrix", "fast", "constrained"} <= set(metrics)
    out = capsys.readouterr().out
    assert "constrained answer" in out and "(full output: guess, think, answer)" in out
    # a readable table: the headline figures, then one row per class with precision/recall/F1/support
    assert "weighted F1" in out and "no label answered" in out and "exact format" in out
    header = next(line for line in out.splitlines() if line.startswith("label"))
    assert header.split() == ["label", "precision", "recall", "f1", "support"]
    assert any(line.startswith("business") and len(line.split()) == 5 for line in out.splitlines())
    preds = [json.loads(x) for x in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and {"text", "gold", "guess", "think", "answer", "correct"} <= set(preds[0])
    assert main(["eval", str(run), "--test-limit", "8", "--no-fast", "--output", str(tmp_path / "no-fast")]) == 0
    no_fast = json.loads((tmp_path / "no-fast" / "metrics.json").read_text())
    assert "fast" not in no_fast and no_fast["accuracy"] == metrics["accuracy"]
    assert "fast     " not in capsys.readouterr().out
    assert main(["predict", str(run), "Shares in the bank rose 5% after profits beat forecasts"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    assert main(["predict", str(run), "--fast", "Shares rose 5%", "The striker scored twice"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line in {"business", "entertainment", "politics", "sport", "tech"} for line in out)
    assert main(["predict", str(run), "--constrain-answer", "Shares rose 5%"]) == 0
    assert capsys.readouterr().out.strip() in {"business", "entertainment", "politics", "sport", "tech", "<invalid>"}
    assert main(["predict", str(run), "--fast", "--constrain-answer", "Shares rose 5%"]) == 2
    assert "choose --fast" in capsys.readouterr().err


def test_zero_shot_eval_of_a_base_model(tmp_path, tiny_path, mech_data, capsys):
    out = tmp_path / "zs"
    assert main(["eval", "--model", tiny_path, "--prompt", "think", "--dataset", "emotion", "--data-dir",
                 str(mech_data), "--test-limit", "6", "--max-new-tokens", "8", "--output", str(out)]) == 0
    assert json.loads((out / "eval" / "metrics.json").read_text())["template"] == "think"
    assert "examples/s (full output: think, answer)" in capsys.readouterr().out  # the spans this prompt asks for
    # the direct prompt has no reasoning to constrain an answer after: a user error, before any generation
    assert main(["eval", "--model", tiny_path, "--prompt", "direct", "--constrain-answer", "--dataset", "emotion",
                 "--data-dir", str(mech_data), "--test-limit", "6", "--output", str(tmp_path / "direct")]) == 2
    assert "reasons before answering" in capsys.readouterr().err


def test_user_errors_exit_2_with_message(tmp_path, mech_data, capsys):
    assert main(["train", "--model", "no-such-model", "--dataset", "emotion", "--data-dir", str(mech_data),
                 "--output", str(tmp_path / "r")]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing"), "hi"]) == 2
    assert "not a gta run folder" in capsys.readouterr().err


def test_config_file_then_flags_and_a_runs_config_json(tmp_path, tiny_path, mech_data, capsys):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(f"method: sft\nmodel_name_or_path: {tiny_path}\ndataset: emotion\ndata-dir: {mech_data}\n"
                         f"train_limit: 8\nmax_steps: 3\nlearning_rate: 1e-5\nbf16: false\nmax_prompt_length: 160\n"
                         f"output_dir: {tmp_path / 'a'}\n")  # TRL's key names, kebab-case, YAML's string 1e-5
    assert main(["train", "--config", str(yaml_file), "--max_steps", "1", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (saved["max_steps"], saved["learning_rate"], saved["method"], saved["model"]) == (1, 1e-5, "sft", tiny_path)
    assert len((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) == 1  # the flag overrode the file
    # a run's own config.json, into another folder
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--output", str(tmp_path / "b"),
                 "--no-progress"]) == 0
    again = json.loads((tmp_path / "b" / "config.json").read_text())
    assert {k: v for k, v in again.items() if k != "output"} == {k: v for k, v in saved.items() if k != "output"}
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_stpes": 3}')
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown config key 'max_stpes'" in err and "known keys" in err
    bad.write_text('{"learning_rate": "fast"}')
    assert main(["train", "--config", str(bad)]) == 2
    assert "learning_rate: 'fast' is not a valid float" in capsys.readouterr().err
    bad.write_text("{")
    assert main(["train", "--config", str(bad)]) == 2
    assert "line 1: not valid JSON" in capsys.readouterr().err


def test_flags_in_both_spellings_and_under_trl_names():
    from gta.cli import build_parser
    from gta.config import TRL_ALIASES

    def train(*argv):
        return vars(build_parser().parse_args(["train", *argv]))

    assert train("--num_generations", "2") == train("--num-generations", "2")
    assert train("--num_generations", "2")["num_generations"] == 2
    assert train("--no-gradient_checkpointing") == train("--no-gradient-checkpointing")
    values = {"output": "x", "epochs": "2", "save_every": "3", "log_every": "3", "eval_every": "3",
              "keep_checkpoints": "3", "model": "m", "dataset": "d"}
    for trl, ours in TRL_ALIASES.items():
        for flag in ("--" + trl, "--" + trl.replace("_", "-")):
            assert train(flag, values[ours]) == train("--" + ours.replace("_", "-"), values[ours]), flag


def test_train_help_groups_flags_by_topic(capsys):
    import pytest

    from gta.config import TOPICS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(f"\n{topic}:\n" in out for topic in TOPICS.values())


def test_readme_config_example_and_trl_table_match_the_code(tmp_path):
    """The README's YAML example is read as written, and every gta flag its TRL table names exists."""
    import re
    from pathlib import Path

    from gta.cli import build_parser
    from gta.config import read_config_file

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Coming from TRL", 1)[1].split("\n## ", 1)[0]
    example = tmp_path / "run.yaml"
    example.write_text(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    cfg = read_config_file(example)
    assert (cfg["model"], cfg["output"], cfg["num_generations"], cfg["gradient_checkpointing"]) == (
        "Qwen/Qwen2.5-3B-Instruct", "runs/sst5-qwen3b", 16, True)
    flags = set(re.findall(r"`(--[a-z-]+)", section))
    known = {o for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions for o in a.option_strings}
    assert flags and flags <= known, flags - known


def test_eval_of_a_run_defaults_to_its_data_and_takes_an_earlier_checkpoint(tmp_path, tiny_path, toy_data, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "sft", "--model", tiny_path, "--dataset", "toy", "--data-dir", str(toy_data),
                 "--train-limit", "8", "--max-steps", "2", "--batch-size", "2", "--save-every", "1", "--no-bf16",
                 "--max-prompt-length", "160", "--output", str(run), "--no-progress"]) == 0
    def read(d):  # the metrics, less the timing
        return {k: v for k, v in json.loads((d / "metrics.json").read_text()).items() if "_per_s" not in k
                and "seconds" not in k and "wall" not in k}

    assert main(["eval", str(run), "--test-limit", "6", "--output", str(tmp_path / "implicit")]) == 0
    assert main(["eval", str(run), "--dataset", "toy", "--data-dir", str(toy_data), "--text-column", "text",
                 "--label-column", "label", "--max-prompt-length", "160", "--test-limit", "6",
                 "--output", str(tmp_path / "explicit")]) == 0
    implicit, explicit = read(tmp_path / "implicit"), read(tmp_path / "explicit")
    assert implicit == explicit and implicit["dataset"] == "toy" and implicit["max_prompt_length"] == 160
    assert main(["eval", str(run), "--max-prompt-length", "96", "--test-limit", "6",
                 "--output", str(tmp_path / "shorter")]) == 0  # a flag overrides the run's setting
    assert read(tmp_path / "shorter")["max_prompt_length"] == 96
    assert main(["eval", str(run), "--checkpoint", "step-1", "--test-limit", "6", "--output",
                 str(tmp_path / "first")]) == 0
    assert read(tmp_path / "first")["checkpoint"] == "step-1"
    capsys.readouterr()
    assert main(["eval", str(run), "--checkpoint", "step-7"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint 'step-7'" in err and "step-000001, step-000002" in err
    assert main(["eval", "--model", tiny_path]) == 2
    assert "give --dataset" in capsys.readouterr().err


def test_predict_reads_txt_csv_jsonl_and_writes_jsonl_or_csv(tmp_path, tiny_path, toy_data, capsys):
    import csv

    run = tmp_path / "run"
    assert main(["train", "--method", "gta", "--model", tiny_path, "--dataset", "toy", "--data-dir", str(toy_data),
                 "--train-limit", "8", "--max-steps", "1", "--batch-size", "2", "--num-generations", "2",
                 "--num-iterations", "1", "--max-completion-length", "8", "--no-bf16", "--max-prompt-length", "160",
                 "--output", str(run), "--no-progress"]) == 0
    texts = ["i feel happy today", "this makes me so angry", "what a surprise"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n\n")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    with (tmp_path / "in.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "body"])
        w.writerows([[i, t] for i, t in enumerate(texts)])
    outs = {}
    for src, extra in (("in.txt", []), ("in.jsonl", ["--text-column", "body"]), ("in.csv", ["--text-column", "body"])):
        out = tmp_path / f"{src}.out.jsonl"
        assert main(["predict", str(run), "--input", str(tmp_path / src), *extra, "--output", str(out),
                     "--batch-size", "2"]) == 0
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["text"] for r in rows] == texts and all(set(r) == {"text", "label"} for r in rows)
        outs[src] = [r["label"] for r in rows]
    assert outs["in.txt"] == outs["in.jsonl"] == outs["in.csv"]  # greedy: the same texts, the same labels
    out = tmp_path / "explained.csv"
    assert main(["predict", str(run), "--input", str(tmp_path / "in.txt"), "--explain", "--output", str(out)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and set(rows[0]) == {"text", "label", "guess", "think", "output"}
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(tmp_path / "in.jsonl")]) == 2  # no 'text' field
    assert "in.jsonl, line 1: field 'text' is missing (--text-column names it)" in capsys.readouterr().err
    assert main(["predict", str(run), "hi", "--output", str(tmp_path / "x.parquet")]) == 2
    assert "use a .jsonl or .csv file" in capsys.readouterr().err


def test_the_your_data_walkthrough_commands_parse():
    """Every `gta` command of docs/your-data.md is accepted by the parser as written (optional [flags] included)."""
    import re
    import shlex
    from pathlib import Path

    from gta.cli import build_parser

    doc = (Path(__file__).resolve().parents[1] / "docs" / "your-data.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", doc, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("gta "):
                commands.append(shlex.split(line.replace("[", "").replace("]", ""))[1:])
    assert len(commands) == 5
    for argv in commands:
        args, extra = build_parser().parse_known_args(argv)
        assert not extra, (argv, extra)


def test_the_readme_main_job_is_what_its_timing_script_runs():
    """benchmarks/main_job.py reads the main job's commands from README.md: a train, then evaluations, each
    accepted by the CLI's parser."""
    from conftest import _benchmark_script
    from gta.cli import build_parser

    commands = _benchmark_script("main_job").readme_commands()
    assert [c[0] for c in commands] == ["train", "eval", "eval"]
    for command in commands:
        build_parser().parse_args(command)
    assert commands[1][1] == "runs/quickstart" and "--output" in commands[2]
