"""Where the time of our rollout and update pass goes: the evidence behind the two speed targets still missed.

    python benchmarks/investigations/where_time_goes.py [--repeats 3] [--json PATH]

Same model, prompts and shapes as the fixed-length part of benchmarks/speed.py (SmolLM2-135M, B=4 prompts of
about 120 tokens, G=8, 48 new tokens, in the precision gta trains in on this CPU: bf16 where it is native,
float32 elsewhere). With torch.profiler (with_flops) over one rollout and one update
pass it prints the share of the time spent in matrix products (aten::mm/addmm/bmm) and the rate they run
at, beside two ceilings measured in the same run:

- the matmul ceiling of speed.py (2048 x 2048 products, same precision): the useful FLOP/s of the update pass can reach
  this fraction only if the matrix products themselves run at it; the matmul rate measured here bounds
  `flops_fraction` from above even if every other operator took no time;
- memory read bandwidth (sum over a 256 MB tensor): a decode step reads every weight once for 32 rows, so its
  matrix products are bound by how fast the weights stream from memory, not by FLOPs.

The profiler adds overhead of its own; shares are what it saw, and the un-profiled medians are printed too.
Prints measured figures only.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM

from gta import rollout
from gta.losses import grpo_loss
from gta.models import load_tokenizer, resolve

from gta.models import bf16_supported
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: paper.py, speed.py
from paper import machine  # noqa: E402
from speed import DATA, make_prompts, matmul_ceiling, timed  # noqa: E402

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm")


def ceilings(repeats: int, bf16: bool) -> dict:
    gflops = matmul_ceiling(repeats, torch.bfloat16 if bf16 else torch.float32)
    big = torch.ones(64 * 1024 * 1024)  # 256 MB, larger than any cache
    big.sum()
    read = statistics.median(big.numel() * 4 * 5 / timed(lambda: [big.sum() for _ in range(5)])[0]
                             for _ in range(repeats)) / 1e9
    return {"bf16_matmul_gflops" if bf16 else "fp32_matmul_gflops": gflops, "memory_read_gb_s": read}


def breakdown(fn, top: int) -> dict:
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    mm = [e for e in events if e.key in MATMUL]
    mm_s = sum(e.self_cpu_time_total for e in mm) / 1e6
    mm_flops = sum(e.flops for e in mm)
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {"profiled_s": total, "matmul_s": mm_s, "matmul_share": mm_s / total,
            "matmul_gflops": mm_flops / mm_s / 1e9 if mm_s else 0.0,
            "top_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--top", type=int, default=10, help="operators listed per profile")
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    bf16 = bf16_supported(torch.device("cpu"))  # the precision gta trains in on this CPU
    prec = "bf16" if bf16 else "fp32"
    torch.manual_seed(0)
    path = resolve("smollm2-135m")
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    sampler = copy.deepcopy(model).to(torch.bfloat16).eval() if bf16 else model
    B, G, L = 4, 8, 48
    batch = rollout.encode_prompts(tok, make_prompts(tok, B, 120, Path(args.data_dir)), "cpu")
    params = list(model.parameters())

    def roll():
        return rollout.generate(sampler, batch, G, L, stop_ids=[-1], pad_id=tok.pad_token_id, temperature=1.0,
                                generator=torch.Generator().manual_seed(0))

    ids, cmask = roll()
    adv = torch.randn(B * G, generator=torch.Generator().manual_seed(0))

    def update():
        logp, = rollout.shared_prefix_logprobs(model, batch, [(ids, cmask, G)], bf16=bf16)
        loss = grpo_loss(logp, logp.detach(), None, adv, cmask.float(), cmask.sum(1).float(), 0.2, 0.0, B * G)[0]
        torch.autograd.grad(loss, params)

    update()  # warm-up
    times = {"rollout": [], "update": []}
    for _ in range(args.repeats):
        times["rollout"].append(timed(roll)[0])
        times["update"].append(timed(update)[0])
    res = {"machine": machine(), "shape": {"B": B, "G": G, "prompt_tokens": batch.input_ids.shape[1], "new_tokens": L},
           "threads": torch.get_num_threads(), "precision": prec, **ceilings(args.repeats, bf16),
           "median_s": {k: statistics.median(v) for k, v in times.items()},
           "rollout": breakdown(roll, args.top), "update": breakdown(update, args.top)}
    # bytes of weights a decode step reads (the tied embedding is read once, as the LM head)
    weight_bytes = sum(p.numel() * p.element_size() for p in sampler.parameters())
    res["rollout"]["matmul_weight_gb_s"] = weight_bytes * L / res["rollout"]["matmul_s"] / 1e9
    ceiling = res[f"{prec}_matmul_gflops"]
    print(f"B={B} prompts of {res['shape']['prompt_tokens']} tokens, G={G}, {L} new tokens, {prec}, "
          f"{res['threads']} threads; medians of {args.repeats} without the profiler: rollout "
          f"{res['median_s']['rollout']:.2f} s, update pass {res['median_s']['update']:.2f} s")
    print(f"ceilings: {prec} matmul {ceiling:.0f} GFLOP/s, memory read {res['memory_read_gb_s']:.1f} GB/s")
    for part in ("rollout", "update"):
        r = res[part]
        print(f"\n{part}: profiled {r['profiled_s']:.2f} s, matrix products {r['matmul_s']:.2f} s "
              f"({r['matmul_share']:.0%}) at {r['matmul_gflops']:.0f} GFLOP/s = {r['matmul_gflops'] / ceiling:.0%} "
              f"of the ceiling")
        if part == "rollout":
            print(f"  its matrix products stream the {weight_bytes / 1e6:.0f} MB of {prec} weights once per decode "
                  f"step: {r['matmul_weight_gb_s']:.1f} GB/s, against {res['memory_read_gb_s']:.1f} GB/s measured")
        for op in r["top_ops"]:
            print(f"  {op['op'][:48]:<48} {op['self_s']:7.2f} s {op['calls']:7d} calls")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
