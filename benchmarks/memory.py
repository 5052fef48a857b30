"""Memory of a GTA run, measured on this CPU, and what the same accounting gives for 0.5-7B models on GPUs.

    python benchmarks/memory.py [--data-dir ../shared/data] [--before SRC] [--json PATH]

1. Runs `gta train --method gta` on SmolLM2-135M-Instruct (3 steps, 4 emotion prompts a step, G=8, 32 new tokens,
   prompts cut to 128 tokens, micro-batch 1, bf16 where the CPU has it) as separate processes: full fine-tuning on
   1 and on 2 processes (torchrun, gloo), each with and without --gradient-checkpointing, and LoRA (r=16, --dtype
   auto: a bf16 base where bf16 is native). Per run: what the largest process holds (memory/*_mb, the local tensors of
   the weights, the step's gradients, AdamW's states, the reference snapshot, the sampler copy and LoRA's frozen
   base), its peak resident memory (the OS's figure: activations, allocator slack, Python and torch included), the
   same peak with glibc's mmap threshold fixed at 1 MiB (MALLOC_MMAP_THRESHOLD_: freed tensors go back to the OS,
   so the peak is closer to what was alive), and the mean step time (steps 2-3; the runs share this machine with
   whatever else runs, so compare times within one invocation only). With --before SRC, the full fine-tuning runs
   of another checkout's src/ come first (the flags it lacks are left out).
2. Activation memory per token of the update pass (the shared-prefix policy log-probs, with gradient; prompts of
   64 tokens, 8 completions of 16 each): the bytes autograd saves for the backward, counted with saved-tensor
   hooks (each storage once, the parameters themselves left out), with and without checkpointing, under bf16
   autocast, for each model's shape (random weights, 1 and 2 decoder layers: the difference is one layer's, times
   the layer count, plus the rest; for SmolLM2-135M also the whole model, which checks that sum), split into bytes
   per token and a fixed part by passes of 2 and 4 prompts; the LM head takes its blockwise path (what runs at
   these sizes: no (rows, V) logits kept). Checkpointing's backward also holds one layer's
   recomputed activations at a time, which this count (between forward and backward) leaves out.
3. The accounting per GPU for Qwen2.5 0.5B, 1.5B, 3B and 7B and SmolLM2-135M, GTA, one process or FSDP2 over N:
   bytes per parameter of each group as this code holds them (full fine-tuning: float32 weights, g_RL + g_SFT,
   AdamW's two states, the reference, a bf16 sampler copy; LoRA: the bf16 base and nothing else per base parameter),
   plus activations from part 2's bytes per token for one micro-batch of 1 prompt of 1,024 tokens + 16 completions
   of 256 (bytes per token depend a little on that mix: the prompt is computed once per group).
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
sys.path.insert(0, str(ROOT / "src"))
GROUPS = ("params", "grads", "optimizer", "reference", "sampler", "frozen")
PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
# Qwen2.5's shapes (hidden, intermediate, layers, heads, kv heads, vocab, tied) and SmolLM2-135M's
SHAPES = {"SmolLM2-135M": ("llama", 576, 1536, 30, 9, 3, 49152, True),
          "Qwen2.5-0.5B": ("qwen2", 896, 4864, 24, 14, 2, 151936, True),
          "Qwen2.5-1.5B": ("qwen2", 1536, 8960, 28, 12, 2, 151936, True),
          "Qwen2.5-3B": ("qwen2", 2048, 11008, 36, 16, 2, 151936, True),
          "Qwen2.5-7B": ("qwen2", 3584, 18944, 28, 28, 4, 152064, False)}


def run(procs: int, data_dir: str, out: Path, src: Path, extra=(), mmap_threshold=False) -> dict:
    args = ["-m", "gta", "train", "--method", "gta", "--dataset", "emotion", "--data-dir", data_dir,
            "--train-limit", "12", "--max-steps", "3", "--batch-size", "4", "--micro-batch-size", "1",
            "--num-generations", "8", "--num-iterations", "1", "--max-completion-length", "32",
            "--max-prompt-length", "128", "--save-every", "100", "--output", str(out), "--no-progress", *extra]
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node", str(procs)]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(src),
           **({"OMP_NUM_THREADS": "1"} if procs > 1 else {}),
           **({"MALLOC_MMAP_THRESHOLD_": str(2 ** 20)} if mmap_threshold else {})}
    # through a fresh Python whose RUSAGE_CHILDREN then covers this run only: the largest process's peak, in KB
    r = subprocess.run([sys.executable, "-c", PEAK, *launcher, *args], env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    mb = {g: last.get(f"memory/{g}_mb", 0.0) for g in GROUPS}
    return {"processes": procs, "extra": list(extra), "mmap_threshold_1mib": mmap_threshold, "mb": mb,
            "total_mb": sum(mb.values()), "peak_rss_mb": int(r.stdout.strip().splitlines()[-1]) / 1024,
            "step_s": sum(x["step_time_s"] for x in rows[1:]) / len(rows[1:])}


def has_flag(src: Path, flag: str) -> bool:
    r = subprocess.run([sys.executable, "-m", "gta", "train", "--help"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(src)})
    return flag in r.stdout


def model_for(shape: str, layers: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    kind, h, i, n, heads, kv, vocab, tied = SHAPES[shape]
    cfg_cls, cls = (LlamaConfig, LlamaForCausalLM) if kind == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    return cls(cfg_cls(hidden_size=h, intermediate_size=i, num_hidden_layers=layers or n, num_attention_heads=heads,
                       num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=tied))


def parameters(shape: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in model_for(shape).parameters())


def saved_bytes(model, B: int, P: int = 64, G: int = 8, L: int = 16) -> tuple[int, int]:
    """Bytes autograd keeps for the backward of one update pass (B prompts of P tokens, G completions of L each), each
    storage counted once and the parameters' own storage left out (they are the weights); and the number of tokens
    the pass computes (B*P + B*G*L)."""
    from gta import models, rollout

    # the LM head's blockwise path, which runs at scale (the plain one keeps (rows, V) logits below 256 MiB): 16 MiB
    # blocks, so every pass measured here takes it and bytes stay linear in tokens
    models.LOGITS_CHUNK_BYTES = 16 * 2 ** 20
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (B, P), generator=g)
    prompts = rollout.Prompts(ids, torch.ones_like(ids))
    comp = torch.randint(0, 1000, (B * G, L), generator=g)
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, = rollout.shared_prefix_logprobs(model, prompts, [(comp, torch.ones_like(comp), G)], bf16=True,
                                              rows_per_chunk=B * G)
    out.sum().backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values()), B * P + B * G * L


def per_token(model) -> dict:
    """Saved bytes as fixed + per_token x tokens, from passes of 2 and 4 prompts (the second twice the tokens)."""
    (s2, t2), (s4, t4) = saved_bytes(model, 2), saved_bytes(model, 4)
    slope = (s4 - s2) / (t4 - t2)
    return {"per_token": slope, "fixed": s2 - slope * t2}


def activations() -> dict:
    """Part 2, for every shape, from its 1- and 2-layer random models (built one at a time): one layer's bytes (the
    difference) times the layer count, plus the rest (embeddings, final norm, LM head); SmolLM2-135M also whole, to
    check that sum."""
    import gc

    from gta.models import checkpoint_layers, fp32_head

    out = {"plain": {}, "checkpointing": {}}
    for shape in SHAPES:
        got = {"plain": [], "checkpointing": []}
        for layers in (1, 2) + ((None,) if shape == "SmolLM2-135M" else ()):
            torch.manual_seed(0)
            model = fp32_head(model_for(shape, layers)).eval()
            got["plain"].append(per_token(model))
            checkpoint_layers(model)
            got["checkpointing"].append(per_token(model))
            del model
            gc.collect()
        n = SHAPES[shape][3]
        for key, (one, two, *whole) in got.items():
            out[key][shape] = {k: {"layer": two[k] - one[k], "rest": 2 * one[k] - two[k],
                                   "whole": (two[k] - one[k]) * n + 2 * one[k] - two[k],
                                   **({"measured_whole": whole[0][k]} if whole else {})}
                               for k in ("per_token", "fixed")}
    return out


def per_gpu(shape: str, gpus: int, lora: bool, act: dict, tokens: int) -> dict:
    """GB per GPU under this code's accounting (part 3)."""
    n = parameters(shape)
    if lora:  # the frozen bf16 base, sharded; adapters (~1% of the parameters) neglected; no sampler copy on 1 GPU
        groups = {"weights": 2 * n / gpus, "sampler": 0 if gpus == 1 else 2 * n}
    else:
        groups = {"weights": 4 * n / gpus, "grads": 8 * n / gpus, "optimizer": 8 * n / gpus,
                  "reference": 4 * n / gpus, "sampler": 2 * n}
    gb = {k: v / 2 ** 30 for k, v in groups.items()}
    # the fixed part measured in part 2 is autocast's bf16 copies of float32 weights (it equals 2 bytes per linear
    # weight); a bf16 base (LoRA under --dtype auto) is used as it is, without copies
    fixed = 0 if lora else act["fixed"]["whole"]
    gb["activations"] = (act["per_token"]["whole"] * tokens + fixed) / 2 ** 30
    return {"model": shape, "parameters": n, "gpus": gpus, "training": "lora" if lora else "full", "gb": gb,
            "total_gb": sum(gb.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--before", default=None, metavar="SRC", help="another checkout's src/ to measure first")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        plans = []
        if args.before:
            before = Path(args.before).resolve()
            plans += [("before", before, p, (), False) for p in (1, 2)]
        after = ROOT / "src"
        plans += [("after", after, p, extra, False) for p in (1, 2) for extra in ((), ("--gradient-checkpointing",))]
        plans += [("after", after, p, (), True) for p in (1, 2)]
        plans += [("after", after, 1, ("--lora-r", "16", "--dtype", "auto"), False)]
        for k, (code, src, procs, extra, mmap) in enumerate(plans):
            r = run(procs, args.data_dir, Path(tmp) / f"r{k}", src, extra, mmap)
            runs.append({"code": code, **r})
            print(f"{code:>6} {procs} proc {' '.join(extra) or 'full fine-tuning':<36} "
                  f"{'mmap 1 MiB ' if mmap else ''}tensors {r['total_mb']:7.0f} MB  peak RSS {r['peak_rss_mb']:6.0f} "
                  f"MB  step {r['step_s']:.1f} s", flush=True)
    acts = activations()
    tokens = 1024 + 16 * 256
    table = [per_gpu(s, g, lora, acts["checkpointing" if ck else "plain"][s], tokens) | {"checkpointing": ck}
             for s in SHAPES for lora in (False, True) for g in (1, 8) for ck in (False, True)]
    print(report(runs, acts, table))
    if args.json:
        from paper import machine  # benchmarks/paper.py, beside this script: the CPU, bf16 and versions

        Path(args.json).write_text(json.dumps({"machine": machine(), "runs": runs, "activations": acts,
                                               "accounting": table}, indent=1) + "\n")


def report(runs: list[dict], acts: dict, table: list[dict]) -> str:
    lines = ["1. GTA, SmolLM2-135M, largest process (MB; step time in s)",
             "| code | processes | run | " + " | ".join(GROUPS) + " | tensors | peak RSS | step s |",
             "|---|---:|---|" + "---:|" * (len(GROUPS) + 3)]
    for r in runs:
        what = " ".join(r["extra"]) or "full fine-tuning"
        what += ", mmap threshold 1 MiB" if r["mmap_threshold_1mib"] else ""
        lines.append(f"| {r['code']} | {r['processes']} | {what} | " + " | ".join(f"{r['mb'][g]:.0f}" for g in GROUPS)
                     + f" | {r['total_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['step_s']:.1f} |")
    lines += ["", "2. Activations saved for the backward of one update pass (bf16 autocast): KB per token, and MB fixed "
              "(autocast's bf16 weight copies, the prompt's last logits)", "| model | checkpointing | KB per token: "
              "one layer | rest | whole | MB fixed: whole |", "|---|---|---:|---:|---:|---:|"]
    for shape in SHAPES:
        for key, a in acts.items():
            t, f = a[shape]["per_token"], a[shape]["fixed"]
            lines.append(f"| {shape} | {'on' if key == 'checkpointing' else 'off'} | {t['layer'] / 1024:,.2f} | "
                         f"{t['rest'] / 1024:,.2f} | {t['whole'] / 1024:,.1f} | {f['whole'] / 2 ** 20:,.0f} |")
    small = [acts[k]["SmolLM2-135M"]["per_token"] for k in acts]
    lines.append("SmolLM2-135M measured whole, to check the layer sum: " + ", ".join(
        f"checkpointing {k}: {x['measured_whole'] / 1024:,.1f} KB per token" for k, x in zip(("off", "on"), small)))
    lines += ["", "3. GB per GPU, GTA (activations: 1 prompt of 1,024 tokens + 16 completions of 256 per micro-batch)",
              "| model | training | GPUs | checkpointing | weights | grads + AdamW + reference | sampler | "
              "activations | total |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for t in table:
        gb = t["gb"]
        states = gb.get("grads", 0) + gb.get("optimizer", 0) + gb.get("reference", 0)
        lines.append(f"| {t['model']} | {t['training']} | {t['gpus']} | {'on' if t['checkpointing'] else 'off'} | "
                     f"{gb['weights']:.1f} | {states:.1f} | {gb['sampler']:.1f} | {gb['activations']:.1f} | "
                     f"{t['total_gb']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
