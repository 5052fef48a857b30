"""--report-to: TensorBoard, MLflow, Trackio and Weights & Biases written offline by a real run and read back."""
import glob
import json

import pytest

from gta import tracking
from gta.config import ConfigError, TrainConfig
from gta.trainer import Trainer


def test_report_to_choices_and_errors(monkeypatch):
    assert tracking.resolve("none") == []
    assert tracking.resolve("wandb, mlflow,wandb") == ["wandb", "mlflow"]
    monkeypatch.setattr(tracking, "installed", lambda name: name != "tensorboard")
    assert tracking.resolve("auto") == []  # TensorBoard only when installed
    with pytest.raises(ConfigError, match=r"the tensorboard package is not installed \(pip install 'gta-rl\[tensorboard\]'\)"):
        tracking.resolve("tensorboard")
    with pytest.raises(ConfigError, match="unknown backend 'comet'"):
        tracking.resolve("wandb,comet")
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        tracking.resolve("none,wandb")


def test_every_backend_gets_the_metrics_and_completions_and_a_resume_continues_its_run(tmp_path, tiny_path,
                                                                                       mech_data, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    cfg = TrainConfig(method="grpo", model=tiny_path, dataset="emotion", data_dir=str(mech_data), train_limit=8,
                      max_steps=2, batch_size=2, micro_batch_size=1, num_generations=2, num_iterations=1,
                      max_completion_length=8, max_prompt_length=160, bf16=False, output=str(run), save_every=1,
                      log_completions=2, report_to="tensorboard,mlflow,trackio,wandb", run_name="my-run")
    Trainer(cfg, progress=False).train()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    want = [(r["step"], r["reward/total"]) for r in rows]
    assert [s for s, _ in want] == [1, 2]

    tb = EventAccumulator(str(run / "tensorboard"))
    tb.Reload()
    assert [(e.step, pytest.approx(e.value, abs=1e-6)) for e in tb.Scalars("reward/total")] == want

    ids = json.loads((run / "tracking.json").read_text())
    client = MlflowClient()
    history = client.get_metric_history(ids["mlflow"], "reward/total")
    assert [(m.step, pytest.approx(m.value, abs=1e-6)) for m in history] == want
    mlrun = client.get_run(ids["mlflow"])
    assert mlrun.data.params["method"] == "grpo" and mlrun.info.run_name == "my-run"
    table = json.loads(open(client.download_artifacts(ids["mlflow"], "completions.json", str(tmp_path))).read())
    assert len(table["data"]) == 4 and "advantage" in table["columns"]  # 2 completions x 2 steps

    import trackio

    logs = trackio.SQLiteStorage.get_logs("gta", "my-run")
    assert [(x["step"], pytest.approx(x["reward/total"], abs=1e-6)) for x in logs if "reward/total" in x] == want
    tables = [x["completions"]["_value"] for x in logs if "completions" in x]
    assert len(tables) == 2 and all(len(t) == 2 and "guess" in t[0] for t in tables)

    offline = glob.glob(str(run / "wandb" / f"offline-run-*-{ids['wandb']}"))
    assert offline and glob.glob(offline[0] + "/run-*.wandb")
    assert len(glob.glob(offline[0] + "/files/media/table/completions_*.table.json")) == 2

    # resumed and trained one step longer: the same MLflow run goes on
    Trainer(TrainConfig(**{**cfg.to_dict(), "max_steps": 3}), resume=True, progress=False).train()
    assert json.loads((run / "tracking.json").read_text()) == ids
    assert [m.step for m in client.get_metric_history(ids["mlflow"], "reward/total")] == [1, 2, 3]
