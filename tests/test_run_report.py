"""`gta report RUN`: PNG plots and a text summary of a tiny-model run."""
from gta.cli import main
from gta.config import TrainConfig
from gta.trainer import Trainer

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_writes_plots_and_summary(tmp_path, tiny_path, toy_data, capsys):
    cfg = TrainConfig(method="gta", model=tiny_path, dataset="toy", data_dir=str(toy_data), train_limit=8, max_steps=3,
                      batch_size=2, micro_batch_size=1, num_generations=2, num_iterations=1, max_completion_length=8,
                      max_prompt_length=160, bf16=False, output=str(tmp_path / "run"), eval_every=2, eval_limit=3)
    Trainer(cfg, progress=False).train()
    assert main(["report", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "method gta" in out and "3 steps logged" in out and "SFT gradient dropped on" in out
    # the last step's logged completions (default 4 per step; 3 shown), each with its gold label and advantage
    import json

    last = [json.loads(x) for x in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()][-4:]
    assert "completions at step 3" in out
    for r in last[:3]:
        assert f"gold {r['gold']!r}: guess {r['guess']!r}, answer {r['answer']!r}" in out
        assert f"advantage {r['advantage']:+.2f}" in out
    report = tmp_path / "run" / "report"
    expected = {"rewards", "guess", "eval", "loss", "conflict", "grad_norms", "rl_share", "completion_length"}
    assert {p.stem for p in report.glob("*.png")} == expected
    for p in report.glob("*.png"):
        data = p.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG), p
    assert (report / "summary.txt").read_text().strip() in out


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a gta run folder" in capsys.readouterr().err
