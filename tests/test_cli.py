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
    capsys.readouterr()
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
