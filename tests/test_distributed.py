"""Several processes (FSDP2 on gloo, launched by torchrun or accelerate) train as one process does at the same global
batch: same losses, gradient norms and conflict decisions, weights equal to float tolerance; each process holds half
the weights, gradients and AdamW states; checkpoints resume on another number of processes; the exported Hugging
Face folder loads with transformers."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
COMPARED = ("loss/rl", "loss/sft", "grad_norm", "reward/total", "kl", "conflict/cosine", "conflict/sft_dropped",
            "eval/accuracy", "eval/f1")
MEMORY = ("memory/params_mb", "memory/grads_mb", "memory/optimizer_mb", "memory/reference_mb")
STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(out, tiny_path, mech_data, method, procs, launcher="torchrun", extra=()):
    args = ["-m", "gta", "train", "--method", method, "--model", tiny_path, "--dataset", "emotion",
            "--data-dir", str(mech_data), "--train-limit", "16", "--max-steps", str(STEPS), "--batch-size", "4",
            "--micro-batch-size", "1", "--num-generations", "3", "--num-iterations", "2", "--ref-sync-steps", "2",
            "--max-completion-length", "10", "--max-prompt-length", "128", "--learning-rate", "1e-4",
            "--no-bf16", "--device", "cpu", "--save-every", "1", "--keep-checkpoints", "3", "--output", str(out),
            "--eval-every", str(STEPS), "--eval-limit", "5",  # each process decodes its share (here 2 and 3)
            "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if procs == 1:
        cmd = [sys.executable, *args]
    elif launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
    else:  # accelerate launch starts torchrun underneath
        cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(procs), "--num_machines", "1",
               "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("FSDP2 training on 2 processes" in r.stdout) == (procs == 2)
    (out / "stdout.txt").write_text(r.stdout)
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out, step=STEPS):
    folder = out / "checkpoints" / f"step-{step:06d}"
    return load_file(folder / ("adapter_model.safetensors" if (folder / "adapter_config.json").is_file()
                               else "model.safetensors"))


def assert_same_training(m1, m2, w1, w2):
    assert len(m1) == len(m2) == STEPS and "eval/accuracy" in m1[-1] and "eval/accuracy" in m2[-1]
    for a, b in zip(m1, m2):
        for key in COMPARED:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a[key], b[key])
    assert w1.keys() == w2.keys()
    for name in w1:  # Adam's first steps move each weight by about lr: differences must be far below that
        assert torch.allclose(w1[name], w2[name], atol=1e-6), name


def back_to(out, step):
    """Make a finished run look killed after the checkpoint of `step`."""
    for later in range(step + 1, STEPS + 1):
        shutil.rmtree(out / "checkpoints" / f"step-{later:06d}")
    (out / "checkpoints" / "latest.json").write_text(json.dumps({"step": step, "path": f"step-{step:06d}"}))


@pytest.mark.parametrize("method,launcher,extra", [("sft", "torchrun", ()), ("grpo", "accelerate", ()),
                                                   ("gta", "torchrun", ("--lora-r", "4")),
                                                   ("gta", "torchrun", ("--gradient-checkpointing",)),
                                                   ("gta", "torchrun", ("--no-sync-each-micro-batch",))])
def test_two_processes_match_one(tmp_path, tiny_path, mech_data, method, launcher, extra):
    m1 = run(tmp_path / "one", tiny_path, mech_data, method, 1, extra=extra)
    m2 = run(tmp_path / "two", tiny_path, mech_data, method, 2, launcher, extra=extra)
    assert_same_training(m1, m2, weights(tmp_path / "one"), weights(tmp_path / "two"))
    counts = [re.search(r"[\d,]+ of [\d,]+ parameters trained", (tmp_path / d / "stdout.txt").read_text()).group()
              for d in ("one", "two")]
    assert counts[0] == counts[1]  # the start-up line counts the whole model on any number of processes
    if "--lora-r" in extra:  # LoRA: FSDP2 shards the frozen base and the adapter alike
        assert m2[-1]["memory/frozen_mb"] == pytest.approx(m1[-1]["memory/frozen_mb"] / 2, rel=0.02)


def test_gta_on_two_processes_matches_one_holds_half_and_resumes_across_process_counts(tmp_path, tiny_path, mech_data):
    one, two = tmp_path / "one", tmp_path / "two"
    m1, m2 = run(one, tiny_path, mech_data, "gta", 1), run(two, tiny_path, mech_data, "gta", 2)
    w1 = weights(one)
    assert_same_training(m1, m2, w1, weights(two))
    assert [r["conflict/sft_dropped"] for r in m1] == [r["conflict/sft_dropped"] for r in m2]
    for key in MEMORY:  # each process's local shards, measured from the tensors: half of one process's
        assert m2[-1][key] == pytest.approx(m1[-1][key] / 2, rel=0.02), key
    assert m2[-1]["memory/sampler_mb"] == pytest.approx(m1[-1]["memory/params_mb"])  # a whole fp32 copy to sample from
    # a 2-process checkpoint resumed on 1 process, and a 1-process checkpoint on 2: the same end as uninterrupted
    for source, procs in ((two, 1), (one, 2)):
        resumed = tmp_path / f"{source.name}-on-{procs}"
        shutil.copytree(source, resumed)
        back_to(resumed, 1)
        m = run(resumed, tiny_path, mech_data, "gta", procs, extra=("--resume",))
        assert_same_training(m1, m, w1, weights(resumed))
    # the exported folder is a normal Hugging Face model: transformers loads it as is
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(two / "checkpoints" / f"step-{STEPS:06d}")
    state = model.state_dict()
    assert all(torch.equal(state[n], t) for n, t in weights(two).items())
    from gta import Classifier  # and so does gta eval/predict, on one process

    clf = Classifier.from_pretrained(two, device="cpu")
    assert all(torch.equal(p, state[n]) for n, p in clf.model.named_parameters())
    assert set(clf.predict(["i feel fine"], explain=True)[0]) == {"label", "guess", "think", "output"}


def test_rank_and_world_from_each_launcher():
    from gta.config import ConfigError
    from gta.engine import _world

    assert _world({}) == (0, 1, 0)
    assert _world({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)  # torchrun
    assert _world({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
                   "OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == (3, 4, 1)  # Open MPI
    assert _world({"PMI_RANK": "1", "PMI_SIZE": "2"}) == (1, 2, 1)  # Intel MPI
    assert _world({"ACCELERATE_USE_CPU": "True"}) == (0, 1, 0)  # accelerate launch --cpu, one process
    with pytest.raises(ConfigError, match="single process"):
        _world({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"})


def test_one_process_with_only_one_token_rollouts_does_not_hang_the_others(tmp_path, tiny_path, mech_data):
    """Process 0's completions all stop at their first token, process 1's do not: every process must still issue the
    same FSDP2 collectives (before the fix process 0 skipped its suffix forward and the step hung)."""
    worker = os.path.join(os.path.dirname(__file__), "scripted_rollouts_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker, tiny_path,
           str(mech_data), str(tmp_path / "run")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["step"] == 1 and row["completion_length"] > 1  # the mean over both processes' rows
