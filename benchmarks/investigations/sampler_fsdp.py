"""What to sample rollouts from with several FSDP2 processes: the sharded policy itself, or a whole copy refreshed
from its shards before each rollout (what `gta train` does). Run under torchrun:

    torchrun --standalone --nproc_per_node 2 benchmarks/investigations/sampler_fsdp.py [--new-tokens 32] [--repeats 3]

Each process samples G=4 completions for 2 emotion prompts of its own from SmolLM2-135M-Instruct, with gta's
rollout (one prefill per prompt, fixed length: no stop token), three ways, interleaved, medians of --repeats:
the sharded policy (float32 weights; each forward all-gathers every layer, i.e. once per decoded token), and a
whole copy (bf16 where the CPU has it, else float32) including the time to refresh it from the shards. Prints the
seconds and the copy's memory.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from gta import prompts, rollout
from gta.data import label_set, load_splits
from gta.engine import Engine
from gta.models import bf16_supported, load_model, load_tokenizer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", default=str(DATA))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    engine = Engine(torch.device("cpu"))
    tok = load_tokenizer("smollm2-135m")
    splits = load_splits("emotion", args.data_dir)
    labels = label_set(splits["train"])
    texts = [ex.text for ex in splits["test"][2 * engine.rank: 2 * engine.rank + 2]]
    batch = rollout.encode_prompts(tok, prompts.make_prompts(tok, texts, labels, "gta", 256)[0], "cpu")
    bf16 = bf16_supported(torch.device("cpu"))
    model = load_model("smollm2-135m").eval()
    copy = engine.sampler(model, bf16)
    policy = engine.wrap(model, bf16)

    def sample(m):
        gens = [torch.Generator().manual_seed(k) for k in range(2)]
        with torch.no_grad(), rollout.autocast(torch.device("cpu"), bf16 and m is policy):
            rollout.generate(m, batch, 4, args.new_tokens, [], tok.pad_token_id, 1.0, gens)

    times = {"sharded policy": [], "whole copy (refresh + rollout)": [], "of which refresh": []}
    for _ in range(args.repeats):
        engine.barrier()
        t0 = time.perf_counter()
        sample(policy)
        times["sharded policy"].append(time.perf_counter() - t0)
        engine.barrier()
        t0 = time.perf_counter()
        engine.refresh(copy, policy)
        t1 = time.perf_counter()
        sample(copy)
        times["whole copy (refresh + rollout)"].append(time.perf_counter() - t0)
        times["of which refresh"].append(t1 - t0)
    if engine.is_main:
        mb = sum(p.numel() * p.element_size() for p in copy.parameters()) / 2 ** 20
        print(f"{engine.world} processes, 2 prompts x G=4 x {args.new_tokens} tokens each, copy in "
              f"{'bf16' if bf16 else 'float32'} ({mb:.0f} MB per process); medians of {args.repeats}:")
        for k, v in times.items():
            print(f"  {k:32s} {statistics.median(v):7.2f} s")


if __name__ == "__main__":
    main()
