"""Two processes (gloo, launched by accelerate) give the same training as one process with the same global
batch: same losses, gradient norms and conflict decisions, same weights to float tolerance."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
COMPARED = ("loss/rl", "loss/sft", "grad_norm", "reward/total", "conflict/cosine", "conflict/sft_dropped")


def run(tmp_path, tiny_path, data_dir, method, procs):
    out = tmp_path / f"{method}-{procs}"
    args = ["-m", "gta", "train", "--method", method, "--model", tiny_path, "--dataset", "emotion",
            "--data-dir", str(data_dir), "--train-limit", "16", "--max-steps", "2", "--batch-size", "4",
            "--micro-batch-size", "1", "--num-generations", "3", "--num-iterations", "2",
            "--max-completion-length", "10", "--max-prompt-length", "128", "--learning-rate", "1e-4",
            "--no-bf16", "--device", "cpu", "--output", str(out), "--no-progress"]
    cmd = ([sys.executable, *args] if procs == 1 else
           ["accelerate", "launch", "--multi_gpu", "--num_processes", str(procs), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", *args])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("data-parallel training on 2 processes" in r.stdout) == (procs == 2)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    weights = load_file(out / "checkpoints" / "step-000002" / "model.safetensors")
    return metrics, weights


@pytest.mark.parametrize("method", ["gta", "sft", "grpo"])
def test_two_processes_match_one(tmp_path, tiny_path, data_dir, method):
    m1, w1 = run(tmp_path, tiny_path, data_dir, method, 1)
    m2, w2 = run(tmp_path, tiny_path, data_dir, method, 2)
    assert len(m1) == len(m2) == 2
    for a, b in zip(m1, m2):
        for key in COMPARED:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a[key], b[key])
    for name in w1:  # Adam's first steps move each weight by about lr: differences must be far below that
        assert torch.allclose(w1[name], w2[name], atol=1e-6), name
