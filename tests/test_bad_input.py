"""Bad input catalogue: each case exits with status 2 and a clear message naming the file, line or field
and what to change (no traceback), and nothing a user had is written over."""
import json
import shutil

import pytest

from gta.cli import main


def write_jsonl(folder, split, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


GOOD_TRAIN = [{"text": f"text {i}", "label": "a" if i % 2 else "b"} for i in range(8)]


def train_args(tiny_path, data, out, *extra):
    return ["train", "--model", tiny_path, "--dataset", "custom", "--data-dir", str(data), "--output", str(out),
            "--max-steps", "1", "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "4",
            "--no-bf16", "--no-progress", *extra]


def fails(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


DATA_CASES = {
    "malformed_jsonl_line": ('{"text": "x", "label": "a"}\n{"text": oops}\n', ["train.jsonl, line 2", "not valid JSON"]),
    "missing_label_column": ('{"text": "x"}\n', ["line 1", "missing field 'label'", "--label-column"]),
    "missing_text_column": ('{"body": "x", "label": "a"}\n', ["line 1", "missing field 'text'", "--text-column"]),
    "empty_text": ('{"text": "  ", "label": "a"}\n', ["line 1", "field 'text' is empty"]),
    "not_an_object": ('["x", "a"]\n', ["line 1", "expected a JSON object"]),
    "one_class": ('{"text": "x", "label": "a"}\n{"text": "y", "label": "a"}\n', ["1 class(es)", "at least 2"]),
    "labels_differ_by_case": ('{"text": "x", "label": "Sport"}\n{"text": "y", "label": "sport"}\n',
                              ["differ only by case or spaces"]),
    "label_with_angle_bracket": ('{"text": "x", "label": "<b>"}\n{"text": "y", "label": "c"}\n', ["'<' or '>'"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_train_file(case, tmp_path, tiny_path, capsys):
    content, needles = DATA_CASES[case]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text(content)
    fails(capsys, train_args(tiny_path, tmp_path / "d", tmp_path / "out"), *needles)


def test_test_label_unknown_to_train(tmp_path, tiny_path, capsys):
    write_jsonl(tmp_path / "d", "train", GOOD_TRAIN)
    write_jsonl(tmp_path / "d", "test", [{"text": "t", "label": "a"}, {"text": "u", "label": "zzz"}])
    fails(capsys, train_args(tiny_path, tmp_path / "d", tmp_path / "out"), "test example 2", "'zzz'", "not in the train label set")


def test_no_train_split(tmp_path, tiny_path, capsys):
    write_jsonl(tmp_path / "d", "test", GOOD_TRAIN)
    fails(capsys, train_args(tiny_path, tmp_path / "d", tmp_path / "out"), "no train.jsonl")


def test_text_longer_than_context_is_truncated_and_reported(tmp_path, tiny_path, capsys):
    rows = GOOD_TRAIN[:-1] + [{"text": "word " * 3000, "label": "a"}]
    write_jsonl(tmp_path / "d", "train", rows)
    assert main(train_args(tiny_path, tmp_path / "d", tmp_path / "out", "--max-prompt-length", "200")) == 0
    assert "1 of 8 training texts were cut to fit --max-prompt-length 200" in capsys.readouterr().out


def test_unknown_method(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--method", "ppo"])
    assert e.value.code == 2 and "invalid choice: 'ppo'" in capsys.readouterr().err


def test_unknown_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--num-generation", "4"])  # a typo, not an accepted abbreviation
    assert e.value.code == 2 and "unrecognized arguments: --num-generation" in capsys.readouterr().err


def test_unknown_config_key(tmp_path):
    from gta.config import ConfigError, TrainConfig

    (tmp_path / "config.json").write_text(json.dumps({"method": "gta", "num_generatoins": 4}))
    with pytest.raises(ConfigError, match="unknown config key.*num_generatoins"):
        TrainConfig.load(tmp_path / "config.json")


def test_bad_value(tmp_path, tiny_path, capsys):
    write_jsonl(tmp_path / "d", "train", GOOD_TRAIN)
    fails(capsys, train_args(tiny_path, tmp_path / "d", tmp_path / "out", "--batch-size", "3", "--micro-batch-size", "2"),
          "--batch-size 3 must be a multiple of --micro-batch-size 2")


def test_model_that_does_not_exist(tmp_path, capsys):
    write_jsonl(tmp_path / "d", "train", GOOD_TRAIN)
    fails(capsys, train_args("no/such/model", tmp_path / "d", tmp_path / "out"), "unknown model")
    fails(capsys, train_args(str(tmp_path), tmp_path / "d", tmp_path / "out2"), "not a Hugging Face model folder")


@pytest.fixture
def finished_run(tmp_path, tiny_path):
    write_jsonl(tmp_path / "d", "train", GOOD_TRAIN)
    assert main(train_args(tiny_path, tmp_path / "d", tmp_path / "run")) == 0
    return tmp_path / "run"


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_folder_holding_another_run_is_not_overwritten(finished_run, tiny_path, capsys):
    before = snapshot(finished_run)
    fails(capsys, train_args(tiny_path, finished_run.parent / "d", finished_run), "already holds a run", "--resume")
    assert snapshot(finished_run) == before


def test_output_folder_with_other_files(tmp_path, tiny_path, capsys):
    write_jsonl(tmp_path / "d", "train", GOOD_TRAIN)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    fails(capsys, train_args(tiny_path, tmp_path / "d", tmp_path / "mine"), "not empty")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_resume_with_changed_config(finished_run, tiny_path, capsys):
    before = snapshot(finished_run)
    fails(capsys, train_args(tiny_path, finished_run.parent / "d", finished_run, "--resume", "--learning-rate", "0.1"),
          "changed config", "learning_rate")
    assert snapshot(finished_run) == before


def test_corrupt_checkpoint(finished_run, tiny_path, capsys):
    ckpt = next((finished_run / "checkpoints").glob("step-*"))
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    fails(capsys, ["predict", str(finished_run), "hello"], "model.safetensors", "corrupt")


def test_corrupt_checkpoint_pointer(finished_run, tiny_path, capsys):
    (finished_run / "checkpoints" / "latest.json").write_text("{garbage")
    fails(capsys, ["predict", str(finished_run), "hello"], "latest.json is corrupt")


def test_missing_optimizer_state_on_resume(finished_run, tiny_path, capsys):
    ckpt = next((finished_run / "checkpoints").glob("step-*"))
    for shard in (ckpt / "train_state").glob("*.distcp"):  # the optimizer's and the reference's saved tensors
        shard.write_bytes(b"\x00garbage")
    fails(capsys, train_args(tiny_path, finished_run.parent / "d", finished_run, "--resume", "--max-steps", "1"),
          "unreadable or corrupt")


# Data and numbers as users have them
def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    from gta.data import read_split

    (tmp_path / "train.csv").write_bytes("\ufefftext,label\nhello,a\nbye,b\n".encode("utf-8"))  # Excel's UTF-8 CSV
    assert [(e.text, e.label) for e in read_split(tmp_path / "train.csv")] == [("hello", "a"), ("bye", "b")]
    (tmp_path / "train.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "x", "label": "a"}\n')
    assert read_split(tmp_path / "train.jsonl")[0].text == "x"


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_file_that_is_not_utf8_names_file_and_line(tmp_path, tiny_path, capsys, ext):
    (tmp_path / "d").mkdir()
    rows = ("text,label\nhello,a\ncaf\xe9,b\n" if ext == "csv" else
            '{"text": "hello", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    (tmp_path / "d" / f"train.{ext}").write_bytes(rows.encode("latin-1"))
    fails(capsys, train_args(tiny_path, tmp_path / "d", tmp_path / "out"),
          f"train.{ext}, line {3 if ext == 'csv' else 2}: not UTF-8 text (byte 0xe9)")


@pytest.mark.parametrize("flag,value,needle", [
    ("--learning-rate", "0", "--learning-rate must be > 0, got 0.0"),
    ("--learning-rate", "-1e-5", "--learning-rate must be > 0"),
    ("--learning-rate", "nan", "--learning-rate must be > 0, got nan"),
    ("--temperature", "0", "--temperature must be > 0"),
    ("--warmup-ratio", "1.5", "--warmup-ratio must be in [0, 1)"),
    ("--beta", "-0.1", "--beta must be >= 0"),
    ("--max-steps", "0", "--max-steps must be >= 1"),
    ("--epochs", "0", "--epochs must be > 0"),
    ("--save-every", "0", "--save-every must be >= 1"),
])
def test_invalid_numbers_get_a_one_line_error(tmp_path, tiny_path, capsys, flag, value, needle):
    write_jsonl(tmp_path / "d", "train", GOOD_TRAIN)
    err = fails(capsys, train_args(tiny_path, tmp_path / "d", tmp_path / "out", f"{flag}={value}"), needle)
    assert len(err.strip().splitlines()) == 1


def test_predict_with_an_empty_text_errors(finished_run, capsys):
    fails(capsys, ["predict", str(finished_run), "  "], "text 1 of the command line is empty")
    from gta.classifier import Classifier

    with pytest.raises(ValueError, match="text 1 is empty"):
        Classifier.from_pretrained(finished_run, device="cpu").predict(["fine", ""])


def test_resume_may_train_longer_but_not_shorter(finished_run, tiny_path, capsys):
    d = finished_run.parent / "d"
    assert main(train_args(tiny_path, d, finished_run, "--resume", "--max-steps", "3")) == 0
    steps = [json.loads(line)["step"] for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert json.loads((finished_run / "config.json").read_text())["max_steps"] == 3
    before = snapshot(finished_run)
    fails(capsys, train_args(tiny_path, d, finished_run, "--resume", "--max-steps", "2"),
          "is at step 3, past the 2 steps", "train longer, not shorter")
    assert snapshot(finished_run) == before


def test_corrupt_parquet_tiny_prompt_budget_and_resume_with_nothing_to_resume(tmp_path, tiny_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "train.parquet").write_bytes(b"this is not parquet at all")
    fails(capsys, train_args(tiny_path, tmp_path / "p", tmp_path / "out"), "train.parquet: not a readable parquet file")
    write_jsonl(tmp_path / "d", "train", GOOD_TRAIN)
    err = fails(capsys, train_args(tiny_path, tmp_path / "d", tmp_path / "out2", "--max-prompt-length", "10"),
                "--max-prompt-length 10 leaves", "raise it")
    assert len(err.strip().splitlines()) == 1
    assert main(train_args(tiny_path, tmp_path / "d", tmp_path / "fresh", "--resume")) == 0
    assert "--resume: nothing to resume in" in capsys.readouterr().out
    assert (tmp_path / "fresh" / "checkpoints" / "latest.json").is_file()
