"""Two processes (gloo, launched by accelerate) give the same training as one process with the same global
batch: same losses, gradient norms and conflict decisions, same weights to float tolerance."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
ZERO2 = Path(__file__).resolve().parents[1] / "docs" / "zero2.yaml"
COMPARED = ("loss/rl", "loss/sft", "grad_norm", "reward/total", "conflict/cosine", "conflict/sft_dropped")


def run(tmp_path, tiny_path, mech_data, method, procs, launcher="accelerate", extra=(), name=None, expect=""):
    out = tmp_path / (name or f"{method}-{procs}")
    args = ["-m", "gta", "train", "--method", method, "--model", tiny_path, "--dataset", "emotion",
            "--data-dir", str(mech_data), "--train-limit", "16", "--max-steps", "2", "--batch-size", "4",
            "--micro-batch-size", "1", "--num-generations", "3", "--num-iterations", "2",
            "--max-completion-length", "10", "--max-prompt-length", "128", "--learning-rate", "1e-4",
            "--no-bf16", "--device", "cpu", "--output", str(out), "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if launcher == "mpi" and procs > 1:  # what mpirun (Intel MPI / MVAPICH naming) gives each process
        launched = [subprocess.Popen([sys.executable, *args], env={**env, "PMI_RANK": str(r), "PMI_SIZE": str(procs),
                                                                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(procs)]
        outs = [p.communicate(timeout=600) for p in launched]
        assert all(p.returncode == 0 for p in launched), [e[-3000:] for _, e in outs]
        stdout = outs[0][0]
    else:
        mode = {"accelerate-cpu": ["--cpu"], "zero2-config": ["--config_file", str(ZERO2)]}.get(launcher, ["--multi_gpu"])
        cmd = ([sys.executable, *args] if procs == 1 else
               ["accelerate", "launch", *mode, "--num_processes", str(procs), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", *args])
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        stdout = r.stdout
    assert ("data-parallel training on 2 processes" in stdout) == (procs == 2)
    assert expect in stdout
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    weights = load_file(out / "checkpoints" / "step-000002" / "model.safetensors")
    return metrics, weights


@pytest.mark.parametrize("method,launcher", [("gta", "accelerate"), ("sft", "accelerate"), ("grpo", "accelerate"),
                                             ("gta", "mpi"), ("gta", "accelerate-cpu")])
def test_two_processes_match_one(tmp_path, tiny_path, mech_data, method, launcher):
    m1, w1 = run(tmp_path, tiny_path, mech_data, method, 1)
    m2, w2 = run(tmp_path, tiny_path, mech_data, method, 2, launcher)
    assert len(m1) == len(m2) == 2
    for a, b in zip(m1, m2):
        for key in COMPARED:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a[key], b[key])
    for name in w1:  # Adam's first steps move each weight by about lr: differences must be far below that
        assert torch.allclose(w1[name], w2[name], atol=1e-6), name


def test_process_count_of_accelerate_cpu_launch(tmp_path):
    """`accelerate launch --cpu --num_processes N` without mpirun starts one process and tells it N only on its
    command line: gta reads N there (with accelerate's parser), and only in that situation."""
    from gta.distributed import cpu_processes_asked

    cmdline = tmp_path / "cmdline"
    env = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"}
    for args, n in ((["--cpu", "--num_processes", "2"], 2), (["--cpu", "--num_processes=3"], 3),
                    (["--cpu", "--num_processes", "1"], 0), (["--cpu"], 0)):
        cmdline.write_bytes("\0".join(["python", "/bin/accelerate", "launch", *args, "-m", "gta", "train",
                                        "--num-generations", "4"]).encode())
        assert cpu_processes_asked(env, cmdline) == n, args
    assert cpu_processes_asked({**env, "WORLD_SIZE": "2"}, cmdline) == 0  # already one of the N processes
    assert cpu_processes_asked({"MASTER_ADDR": "127.0.0.1"}, cmdline) == 0  # not accelerate's CPU launcher
    cmdline.write_bytes(b"python\0-m\0gta\0train")
    assert cpu_processes_asked(env, cmdline) == 0  # parent is not `accelerate launch`
    assert cpu_processes_asked(env, tmp_path / "missing") == 0


def test_sharded_gradients_match(tmp_path, tiny_path, mech_data):
    """ZeRO stage 2 (--shard-gradients), launched with docs/zero2.yaml: each process sums and keeps only its own
    parameters' gradients, and the conflict rule adds the processes' partial dot products; the training
    equals 1 process."""
    m1, w1 = run(tmp_path, tiny_path, mech_data, "gta", 1)
    m2, w2 = run(tmp_path, tiny_path, mech_data, "gta", 2, "zero2-config", extra=("--shard-gradients",), name="zero2",
                 expect="AdamW states and gradients sharded over 2 processes (ZeRO stage 2)")
    for a, b in zip(m1, m2):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a[key], b[key])
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-6), name


def test_rank_and_world_from_each_launcher():
    from gta.config import ConfigError
    from gta.distributed import _world

    assert _world({}) == (0, 1, 0)
    assert _world({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)  # torchrun
    assert _world({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
                   "OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == (3, 4, 1)  # Open MPI
    assert _world({"PMI_RANK": "1", "PMI_SIZE": "2"}) == (1, 2, 1)  # Intel MPI
    assert _world({"ACCELERATE_USE_CPU": "True"}) == (0, 1, 0)  # accelerate launch --cpu, one process
    with pytest.raises(ConfigError, match="single process"):
        _world({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"})


def test_sharded_optimizer_matches_and_resumes(tmp_path, tiny_path, mech_data):
    """ZeRO stage 1 (--shard-optimizer) over 2 processes: the same training as 1 process, and a run resumed
    from its step-1 checkpoint (AdamW states gathered on save, re-sharded on load) ends with the same weights."""
    m1, w1 = run(tmp_path, tiny_path, mech_data, "gta", 1)
    flags = ("--shard-optimizer", "--save-every", "1")
    m2, w2 = run(tmp_path, tiny_path, mech_data, "gta", 2, extra=flags, name="zero",
                 expect="AdamW states sharded over 2 processes")
    for a, b in zip(m1, m2):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-6), name
    out = tmp_path / "zero"
    shutil.rmtree(out / "checkpoints" / "step-000002")
    (out / "checkpoints" / "latest.json").write_text(json.dumps({"step": 1, "path": "step-000001"}))
    _, w3 = run(tmp_path, tiny_path, mech_data, "gta", 2, extra=(*flags, "--resume"), name="zero")
    for name in w2:
        assert torch.allclose(w2[name], w3[name], atol=1e-7), name
