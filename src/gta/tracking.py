"""Logging backends (--report-to): TensorBoard, Weights & Biases, MLflow and Trackio, each through its own library,
imported only when asked for. metrics.jsonl and completions.jsonl are always written (runfolder.py); these send the
same figures where a team already watches its runs. A resumed run continues the same backend run (ids kept in
the run folder's tracking.json)."""
from __future__ import annotations

import importlib.util
import json
import os
import uuid
from pathlib import Path

from .config import ConfigError, write_json_atomic

BACKENDS = ("tensorboard", "wandb", "mlflow", "trackio")  # each the name of its package, module and pip extra


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def resolve(report_to: str) -> list[str]:
    """'auto' (TensorBoard when it is installed), 'none', or a comma list of backends, each installed."""
    names = [x.strip().lower() for x in report_to.split(",") if x.strip()]
    if names in ([], ["auto"]):
        return ["tensorboard"] if installed("tensorboard") else []
    if "none" in names:
        if len(names) > 1:
            raise ConfigError(f"--report-to {report_to!r}: 'none' cannot be combined with backends")
        return []
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(f"--report-to: unknown backend {unknown[0]!r}; choose from none, auto, "
                          f"{', '.join(BACKENDS)} (a comma list)")
    for n in names:
        if not installed(n):
            raise ConfigError(f"--report-to {n}: the {n} package is not installed (pip install 'gta-rl[{n}]')")
    return list(dict.fromkeys(names))


class Tracker:
    """The chosen backends of one run, on process 0: `log` per logged step, `log_completions` per step's sample of
    completions (as tables where the backend shows them: wandb, trackio, mlflow), `close` at the end."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str | None, config: dict):
        self.run_dir = Path(run_dir)
        self.run_name = run_name or self.run_dir.resolve().name
        ids_file = self.run_dir / "tracking.json"
        self.ids = json.loads(ids_file.read_text()) if ids_file.is_file() else {}
        self.tb = self.wandb = self.mlflow = self.trackio = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if "wandb" in names:
            import wandb

            self.ids.setdefault("wandb", uuid.uuid4().hex[:8])
            wandb.init(project=os.environ.get("WANDB_PROJECT", "gta"), name=self.run_name, id=self.ids["wandb"],
                       resume="allow", dir=str(self.run_dir), config=config)
            self.wandb = wandb
        if "mlflow" in names:
            import mlflow

            resumed = "mlflow" in self.ids  # a resumed run continues its MLflow run
            if not resumed:
                mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "gta"))
            run = mlflow.start_run(run_id=self.ids.get("mlflow"), run_name=None if resumed else self.run_name)
            if not resumed:
                mlflow.log_params({k: ("" if v is None else v) for k, v in config.items()})
            self.ids["mlflow"] = run.info.run_id
            self.mlflow = mlflow
        if "trackio" in names:
            import trackio

            trackio.init(project=os.environ.get("TRACKIO_PROJECT", "gta"), name=self.run_name, config=config,
                         resume="allow")
            self.trackio = trackio
        if self.ids:
            write_json_atomic(ids_file, self.ids)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.mlflow is not None:
            self.mlflow.log_metrics(metrics, step=step)
        if self.trackio is not None:
            self.trackio.log(metrics, step=step)

    def log_completions(self, step: int, records: list[dict]) -> None:
        if not records:
            return
        columns = list(records[0])
        rows = [[r.get(c) for c in columns] for r in records]
        if self.wandb is not None:
            self.wandb.log({"completions": self.wandb.Table(columns=columns, data=rows)}, step=step)
        if self.trackio is not None:
            self.trackio.log({"completions": self.trackio.Table(columns=columns, data=rows)}, step=step)
        if self.mlflow is not None:  # one table artifact; mlflow appends each step's rows to it
            self.mlflow.log_table({c: [r.get(c) for r in records] for c in columns}, artifact_file="completions.json")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()
        if self.trackio is not None:
            self.trackio.finish()
