"""Memory per process of a GTA run on 1 and 2 processes (FSDP2), measured, and what the same accounting gives for
Qwen2.5-3B on 4 and 8 GPUs.

    python benchmarks/memory.py [--data-dir ../shared/data] [--json PATH]

Runs `gta train --method gta` with SmolLM2-135M-Instruct for 2 steps (4 emotion prompts a step, G=2, 8 new
tokens, full fine-tuning, bf16 where the CPU has it) on one process and on two (torchrun, gloo), and prints what
each process holds, read from the run's metrics (memory/*_mb: the local tensors of the weights, the step's two
gradients g_RL and g_SFT, AdamW's states, the reference snapshot and the sampler copy; the largest process's
figure) and its peak resident memory (the OS's figure: that includes activations, the tokenizer, Python and
torch themselves).

The estimate for Qwen2.5-3B counts its parameters from its architecture (built on the meta device: no weights),
takes each group's bytes per parameter from the 2-process measurement (sharded groups scale as 1/N, the sampler
copy does not) and adds nothing for activations, which depend on batch and sequence length.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("params", "grads", "optimizer", "reference", "sampler")
SHARDED = {"params", "grads", "optimizer", "reference"}
PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def run(procs: int, data_dir: str, out: Path) -> dict:
    args = ["-m", "gta", "train", "--method", "gta", "--dataset", "emotion", "--data-dir", data_dir,
            "--train-limit", "8", "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "1",
            "--num-generations", "2", "--num-iterations", "1", "--max-completion-length", "8",
            "--max-prompt-length", "128", "--save-every", "100", "--output", str(out), "--no-progress"]
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node", str(procs)]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", **({"OMP_NUM_THREADS": "1"} if procs > 1 else {})}
    # through a fresh Python whose RUSAGE_CHILDREN then covers this run only: the largest process's peak, in KB
    r = subprocess.run([sys.executable, "-c", PEAK, *launcher, *args], env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    peak = int(r.stdout.strip().splitlines()[-1])
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    figures = {g: last[f"memory/{g}_mb"] for g in GROUPS}
    return {"processes": procs, "mb": figures, "total_mb": sum(figures.values()),
            "peak_rss_mb": peak / 1024}


def qwen_3b_parameters() -> int:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                         num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True)  # Qwen2.5-3B's
    with torch.device("meta"):
        return sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from gta.models import resolve
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        small = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(
            resolve("smollm2-135m"))).parameters())
    with tempfile.TemporaryDirectory() as tmp:
        measured = [run(n, args.data_dir, Path(tmp) / f"p{n}") for n in (1, 2)]
    print(f"GTA, SmolLM2-135M ({small / 1e6:.1f}M parameters), full fine-tuning, per process (MB):")
    print(f"{'processes':>10} " + " ".join(f"{g:>10}" for g in GROUPS) + f" {'total':>10} {'peak RSS':>10}")
    for m in measured:
        print(f"{m['processes']:>10} " + " ".join(f"{m['mb'][g]:10.1f}" for g in GROUPS)
              + f" {m['total_mb']:10.1f} {m['peak_rss_mb']:10.0f}")
    big = qwen_3b_parameters()
    two = measured[1]
    per_param = {g: two["mb"][g] * 2 ** 20 / small for g in GROUPS}  # bytes per parameter on 2 processes
    estimates = []
    for n in (4, 8):
        gb = {g: per_param[g] * big * (2 / n if g in SHARDED else 1) / 2 ** 30 for g in GROUPS}
        estimates.append({"gpus": n, "gb": gb, "total_gb": sum(gb.values())})
    print(f"\nEstimate, Qwen2.5-3B ({big / 1e9:.2f}B parameters), same accounting, per GPU (GB, activations not counted):")
    print(f"{'GPUs':>10} " + " ".join(f"{g:>10}" for g in GROUPS) + f" {'total':>10}")
    for e in estimates:
        print(f"{e['gpus']:>10} " + " ".join(f"{e['gb'][g]:10.2f}" for g in GROUPS) + f" {e['total_gb']:10.2f}")
    if args.json:
        from paper import machine  # benchmarks/paper.py, beside this script: the CPU, bf16 and versions

        Path(args.json).write_text(json.dumps({
            "machine": machine(),
            "small_parameters": small, "measured": measured, "qwen2.5-3b_parameters": big,
            "bytes_per_parameter_2_processes": per_param, "estimates": estimates}, indent=1) + "\n")


if __name__ == "__main__":
    main()
