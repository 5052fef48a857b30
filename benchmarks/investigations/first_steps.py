"""The first steps of one of the protocol's training runs (benchmarks/paper.py), beside the reported run's.

    python benchmarks/investigations/first_steps.py --dataset massive_scenario --method gta [--steps 16] [--json PATH]
        [--compare EARLIER.json]

A quick look at what a code change does to training without the whole run: the run's exact config (seed, data
subset, learning-rate schedule of the whole pass), stopped after --steps steps. Prints, step by step, the
format reward, accuracy reward and guess accuracy (gta, gta-rl) of this run and of the reported one in
benchmarks/results/DATASET.json, or of an earlier first_steps run (--compare, the JSON this script wrote, e.g.
at a commit before a fix). For gta it also prints the medians of the balance of the two signals: grad_norm/sft,
grad_norm/rl (before the conflict rule and clipping) and rl_share. The runs differ by float rounding where the
machines or code versions differ, which changes the sampled completions; the figures are measured, not compared
for equality.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: paper.py, speed.py
from paper import DATA, PROTOCOL, ROOT, TRAIN_KEYS, code_version, machine  # noqa: E402

from gta.config import TrainConfig
from gta.trainer import Trainer

KEYS = ("reward/format", "reward/accuracy", "guess/accuracy", "groups/informative", "entropy",
        "completions/placeholder_answer", "completions/placeholder_think", "completions/truncated", "completion_length")
BALANCE = ("grad_norm/sft", "grad_norm/rl", "rl_share", "conflict/sft_dropped", "grad_norm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=["sst5", "emotion", "massive_scenario", "bbc_news"])
    ap.add_argument("--method", default="gta", choices=["grpo", "gta", "gta-rl"])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--json", default=None, help="also write both runs' figures here")
    ap.add_argument("--compare", default=None, help="an earlier first_steps JSON to show beside this run "
                                                    "(default: the reported run of benchmarks/results/DATASET.json)")
    args = ap.parse_args()
    p, code = PROTOCOL, code_version()  # before training: the source the run imports
    if args.compare:
        earlier = json.loads(Path(args.compare).read_text())
        if (earlier["dataset"], earlier["method"]) != (args.dataset, args.method):
            raise SystemExit(f"{args.compare} is a {earlier['method']} run on {earlier['dataset']}")
        reported = {"metrics": earlier["this_run"], "code": [earlier["code"]], "machine": earlier["machine"]}
        label = f"earlier run ({args.compare})"
    else:
        reported = json.loads((ROOT / "benchmarks" / "results" / f"{args.dataset}.json").read_text())["runs"].get(args.method)
        label = "reported run"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(method=args.method, dataset=args.dataset, data_dir=args.data_dir, output=str(Path(tmp) / "run"),
                          **{k: p[k] for k in TRAIN_KEYS if not k.startswith("eval")},  # no held-out curve
                          bf16=p["bf16"], save_every=10 ** 9)
        Trainer(cfg).train(until=args.steps)
        ours = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    theirs = reported["metrics"][: args.steps] if reported else []
    keys = [k for k in KEYS if k in ours[0]]
    print(f"\n{args.dataset} {args.method}, first {args.steps} steps of the protocol run; this run (code "
          f"{code}, {machine()['cpu_id']}) / {label} (code "
          f"{', '.join(reported.get('code') or ['not recorded']) if reported else '—'})")
    print("step  " + "  ".join(f"{k:>22}" for k in keys))
    for i, row in enumerate(ours):
        cells = [f"{row[k]:10.3f} / " + (f"{theirs[i][k]:<9.3f}" if i < len(theirs) and k in theirs[i] else f"{'—':<9}")
                 for k in keys]
        print(f"{row['step']:4d}  " + "  ".join(f"{c:>22}" for c in cells))
    means = {k: (statistics.mean(r[k] for r in ours),  # the earlier run may not have logged every key
                 statistics.mean(r[k] for r in theirs if k in r) if any(k in r for r in theirs) else None)
             for k in keys}
    print("mean  " + "  ".join(f"{f'{a:.3f} / ' + ('—' if b is None else f'{b:.3f}'):>22}" for a, b in means.values()))
    balance = [k for k in BALANCE if k in ours[0]]
    if balance:  # gta: how much of each update the RL gradient is
        print(f"\nmedians over the {len(ours)} steps, this run / {label}:")
        for k in balance:
            theirs_k = [r[k] for r in theirs if k in r]
            b = f"{statistics.median(theirs_k):.4g}" if theirs_k else "— (not logged)"
            print(f"  {k:<22} {statistics.median(r[k] for r in ours):>10.4g} / {b}")
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": args.dataset, "method": args.method, "steps": args.steps,
                                               "machine": machine(), "code": code, "this_run": ours,
                                               "reported_run": theirs, "reported_code": (reported or {}).get("code")},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
