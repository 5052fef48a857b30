"""Per-process peak RSS of 1 and 2 FSDP2 processes under glibc's malloc and under jemalloc: is the 2-process peak
above the 1-process one (benchmarks/memory.py, README "Several processes") a matter of the allocator or of what gta
holds?

    python benchmarks/investigations/allocator.py [--jemalloc /usr/lib/x86_64-linux-gnu/libjemalloc.so.2] [--json PATH]

The full fine-tuning GTA run of benchmarks/memory.py (SmolLM2-135M, 3 steps, 4 emotion prompts x G=8, 32 new tokens,
micro-batch 1, bf16 where native) on 1 process and on 2 (torchrun, gloo), each under glibc's malloc and with jemalloc
preloaded (LD_PRELOAD; Debian: apt install libjemalloc2). Per run: the largest process's peak RSS, the tensors it
holds (memory/*_mb) and the mean time of steps 2-3.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from memory import run  # noqa: E402  (benchmarks/memory.py)
from paper import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--jemalloc", default="/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not Path(args.jemalloc).is_file():
        raise SystemExit(f"{args.jemalloc}: no such file (Debian/Ubuntu: apt install libjemalloc2)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for allocator in ("glibc", "jemalloc"):
            os.environ.pop("LD_PRELOAD", None)
            if allocator == "jemalloc":
                os.environ["LD_PRELOAD"] = args.jemalloc  # inherited by run()'s processes
            for procs in (1, 2):
                r = run(procs, args.data_dir, Path(tmp) / f"{allocator}-{procs}", ROOT / "src")
                rows.append({"allocator": allocator, **r})
                print(f"{allocator:<9} {procs} process{'es' if procs > 1 else '  '}  peak RSS {r['peak_rss_mb']:6.0f} MB  "
                      f"tensors held {r['total_mb']:6.0f} MB  step {r['step_s']:5.1f} s", flush=True)
    os.environ.pop("LD_PRELOAD", None)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
