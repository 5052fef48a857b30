"""Crash safety: kill a small seeded training run with SIGKILL at random moments, resume it each time, and
check that its final weights and metrics equal those of an uninterrupted run with the same seed.

    python scripts/crash_test.py [--method gta] [--min-trials 10] [--seed 0] [--processes 2]

Uses a tiny randomly initialised model (SmolLM2's tokenizer) and the emotion data in ../shared/data,
float32. With --processes 2 each run is 2 FSDP2 processes under torchrun, and each kill is a SIGKILL of the whole
process group (torchrun and both workers). Prints `N/N trials identical` (N = kills survived) and exits 1 on any
difference.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"step_time_s", "tokens_per_s", "rollout_s", "guess_s"}  # wall-clock fields differ between runs by nature


def train_cmd(model: str, out: Path, args) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(args.processes)] if args.processes > 1 else [sys.executable]
    return [*launcher, "-m", "gta", "train", "--method", args.method, "--model", model, "--dataset", "emotion",
            "--data-dir", args.data_dir, "--train-limit", "64", "--max-steps", str(args.steps), "--batch-size", "2",
            "--micro-batch-size", "1", "--num-generations", "3", "--num-iterations", "2",
            "--max-completion-length", "12", "--max-prompt-length", "128", "--learning-rate", "1e-3", "--no-bf16",
            "--save-every", "1", "--keep-checkpoints", "2", "--seed", str(args.seed), "--output", str(out),
            "--no-progress", "--resume"]


def final_state(run: Path):
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())["path"]
    weights = load_file(run / "checkpoints" / latest / "model.safetensors")
    metrics = [{k: v for k, v in json.loads(x).items() if k not in TIMING}
               for x in (run / "metrics.jsonl").read_text().splitlines()]
    return weights, metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="gta", choices=["sft", "grpo", "gta", "gta-rl"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--min-trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1, help="FSDP2 processes per run (torchrun)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error",
           **({"OMP_NUM_THREADS": "1"} if args.processes > 1 else {})}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from gta.models import tiny_model

        model = str(tiny_model(tmp / "tiny"))
        startup, duration = _reference_run(train_cmd(model, tmp / "reference", args), tmp / "reference", env)
        print(f"uninterrupted run: {args.steps} steps in {duration:.0f} s, first checkpoint after {startup:.0f} s")
        ref_w, ref_m = final_state(tmp / "reference")

        run, kills, all_same, stuck, runs = tmp / "killed", 0, True, 0, 1
        scale, kills_in_run = 1.0, 0  # delays shrink when a whole run passes without a kill (the reference
        # run's times were slower than this machine is now, e.g. measured while something else ran)
        while True:
            err = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block the process
            proc = subprocess.Popen(train_cmd(model, run, args), env=env, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)  # its own process group
            # kill somewhere in the run's life: every attempt pays the start-up time again, and beyond it the
            # kills advance the run by 1/min_trials of its training time on average, so about min_trials
            # kills land over one run's life, some of them during start-up or while a checkpoint is written
            delay = scale * rng.uniform(0.5 * startup, startup + 2 * (duration - startup) / args.min_trials)
            before = _latest_step(run)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid)
                proc.wait()
                kills, kills_in_run = kills + 1, kills_in_run + 1
                step = _latest_step(run)
                print(f"trial {kills}: SIGKILL after {delay:.1f} s (latest checkpoint: step {step})")
                stuck = stuck + 1 if step == before else 0
                if step == before:  # killed before the next checkpoint: this machine is slower now than in the
                    scale *= 1.25  # uninterrupted run (e.g. something else started), so wait longer
                if stuck >= 3 * args.min_trials:
                    print(f"no progress in {stuck} attempts in a row: the kills come before the first checkpoint")
                    return 1
                continue
            if proc.returncode != 0:
                err.seek(0)
                print(err.read().decode()[-2000:])
                print("the resumed run failed")
                return 1
            if kills >= args.min_trials:
                break
            # finished before enough kills: start over in a fresh folder, keeping the count (a folder of its own
            # even when no kill landed in this one: resuming a finished run would end at once, again and again)
            print("run finished before enough kills; starting another interrupted run")
            all_same &= _compare(run, ref_w, ref_m)
            run, runs = tmp / f"killed{runs}", runs + 1
            scale, kills_in_run = (scale if kills_in_run else scale / 2), 0
        same = all_same and _compare(run, ref_w, ref_m)
        print(f"{kills if same else 0}/{kills} trials identical")
        return 0 if same else 1


def kill_tree(pid: int) -> None:
    """SIGKILL a run's process group and every process under it at once: torchrun starts each worker in a session
    of its own, so killing the launcher's group alone would leave the workers running."""
    pids, frontier = [pid], [pid]
    while frontier:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", ",".join(map(str, frontier))], capture_output=True,
                             text=True).stdout
        frontier = [int(x) for x in out.split()]
        pids += frontier
    os.killpg(pid, signal.SIGKILL)
    for p in pids[1:]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reference_run(cmd: list[str], run: Path, env) -> tuple[float, float]:
    """Run uninterrupted; return (seconds until its first checkpoint, total seconds)."""
    t0, startup = time.time(), None
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a full pipe would block the polled process
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        while proc.poll() is None:
            if startup is None and _latest_step(run) is not None:
                startup = time.time() - t0
            time.sleep(0.1)
        duration = time.time() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(err.read().decode()[-2000:] + "\nthe uninterrupted run failed")
    return (startup or duration), duration


def _latest_step(run: Path):
    try:
        return json.loads((run / "checkpoints" / "latest.json").read_text())["step"]
    except (OSError, json.JSONDecodeError):
        return None


def _compare(run: Path, ref_w, ref_m) -> bool:
    w, m = final_state(run)
    same_w = w.keys() == ref_w.keys() and all(torch.equal(w[k], ref_w[k]) for k in w)
    same_m = m == ref_m
    if not (same_w and same_m):
        diff = sorted({k for a, b in zip(m, ref_m) for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
        rows = "" if len(m) == len(ref_m) else f" ({len(m)} metric rows, {len(ref_m)} uninterrupted)"
        print(f"DIFFERENT: weights identical={same_w}, metrics identical={same_m}{rows}; differing: {diff[:8]}")
    return same_w and same_m


if __name__ == "__main__":
    sys.exit(main())
