"""Several processes: FSDP2's gradient reduce-scatter after every micro-batch (the default) against once per backward
pass (`--no-sync-each-micro-batch`, FSDP2's set_requires_gradient_sync): what the skipped communication saves in step
time and what the whole gradient each process then holds costs in memory.

    python benchmarks/investigations/micro_batch_sync.py [--data-dir ../shared/data] [--repeats 2] [--json PATH]

`gta train --method gta` on SmolLM2-135M over 2 processes (torchrun, gloo, one thread each) as benchmarks/memory.py
runs it: 3 steps, 4 emotion prompts a step (2 per process, micro-batch 1: 2 micro-batches per backward), G=8, 32 new
tokens, bf16 where the CPU has it. Per run: the largest process's peak RSS (glibc's default allocator, and with its
mmap threshold at 1 MiB, which returns freed tensors to the OS), the mean time of steps 2-3, and memory/grads_mb (the
gradients held at the update: sharded either way). The two settings alternate, --repeats times.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from memory import run  # noqa: E402  (benchmarks/memory.py)
from paper import machine  # noqa: E402

SETTINGS = {"sync every micro-batch": (), "sync the last micro-batch": ("--no-sync-each-micro-batch",)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for mmap in (False, True):
                for name, extra in SETTINGS.items():
                    out = Path(tmp) / f"{rep}-{mmap}-{len(extra)}"
                    r = run(2, args.data_dir, out, ROOT / "src", extra, mmap_threshold=mmap)
                    rows.append({"setting": name, "repeat": rep, **r})
                    print(f"{name:<27} mmap threshold 1 MiB: {str(mmap):<5}  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                          f"step {r['step_s']:6.1f} s  grads held {r['mb']['grads']:.0f} MB", flush=True)
    summary = {}
    for name in SETTINGS:
        for mmap in (False, True):
            sel = [r for r in rows if r["setting"] == name and r["mmap_threshold_1mib"] == mmap]
            summary[f"{name}, mmap threshold {'1 MiB' if mmap else 'default'}"] = {
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in sel),
                "step_s": statistics.median(r["step_s"] for r in sel)}
    for k, v in summary.items():
        print(f"median  {k:<55} peak RSS {v['peak_rss_mb']:7.0f} MB  step {v['step_s']:6.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "runs": rows, "medians": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
