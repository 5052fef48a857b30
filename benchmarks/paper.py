"""Reproduce the paper's experiments at CPU scale for one dataset (issue: paper reproduction).

    python benchmarks/paper.py --dataset emotion [--data-dir ../shared/data] [--runs runs/paper]
    python benchmarks/paper.py --dataset emotion --seed 1 --methods sft gta   # run-to-run spread (results/seed1/)

Runs, in order, each skipped when already finished (so the script resumes after an interruption, and a
killed training run continues from its latest checkpoint): Base zero-shot with the direct and the think
prompt, SFT, GRPO, GTA (and GTA(RL) for sst5), then evaluates every trained model on the test subset, and
writes benchmarks/results/DATASET.json with every figure, the exact configs, seeds, subset sizes, wall
times, the machine, and the training metrics behind the plots. The protocol is in docs/results.md.
"""
from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# This checkout's code runs, in this script and in the gta commands it starts (gta_env), also where `pip install -e`
# points at another checkout (a clone made for benchmarking): the code that runs is the code code_version() names.
sys.path.insert(0, str(ROOT / "src"))

# One protocol for every dataset and method (see docs/results.md for why each value).
PROTOCOL = {
    "model": "smollm2-135m",
    "seed": 0,
    "train_limit": 512,  # seeded stratified subset of train, the same for every method
    "test_limit": 1000,  # seeded stratified subset of test (bbc_news: its full test split of 1,000)
    "eval_limit": 100,  # held-out subset for the accuracy-over-steps curves
    "epochs": 1,  # passes over the 512 examples, every method
    "batch_size": 4,  # prompts per step (paper: per-device batch 4)
    "micro_batch_size": 2,
    "learning_rate": 1e-5,
    "max_prompt_length": 256,
    "bf16": True,
    # RL (grpo, gta, gta-rl); the paper: G=16, mu=4, beta=0.01, eps=0.2
    "num_generations": 8,
    "num_iterations": 1,
    "beta": 0.01,
    "epsilon": 0.2,
    "ref_sync_steps": 16,
    "max_completion_length": 96,
    "eval_every": 16,
}
# zero-shot with the direct prompt: the only exact output is `label</answer>` + end of turn, so 16 new tokens
# lose nothing
DIRECT_MAX_NEW_TOKENS = 16
TRAIN_KEYS = ["model", "seed", "train_limit", "epochs", "batch_size", "micro_batch_size", "learning_rate",
              "max_prompt_length", "num_generations", "num_iterations", "beta", "epsilon", "ref_sync_steps",
              "max_completion_length", "eval_every", "eval_limit"]


# The conflict-rule ablation (--ablation): GTA under PCGrad's projection and under no rule, beside the `gta` run,
# which is eq. 11's drop; everything else is the protocol's.
VARIANTS = {"gta-project": ("gta", ["--conflict", "project"]), "gta-none": ("gta", ["--conflict", "none"])}
RUN_NAMES = ["sft", "grpo", "gta", "gta-rl", *VARIANTS]


def method_flags(name: str) -> list[str]:
    """The `gta train` flags that choose the method of a run (a method, or an ablation variant)."""
    method, extra = VARIANTS.get(name, (name, []))
    return ["--method", method, *extra]


def run(cmd: list[str], log: Path) -> float:
    """Run a gta command, appending its output to log; return its wall time in seconds."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=gta_env())
    return time.time() - t0


def gta_env() -> dict[str, str]:
    """The environment of the gta commands: this checkout's src/ first on the import path (see ROOT)."""
    path = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def gta(*args: str) -> list[str]:
    return [sys.executable, "-m", "gta", *args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=["sst5", "emotion", "massive_scenario", "bbc_news"])
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "paper"))
    ap.add_argument("--results", default=None,
                    help="folder of DATASET.json (default: benchmarks/results, or benchmarks/results/seedN with --seed N)")
    ap.add_argument("--seed", type=int, default=PROTOCOL["seed"],
                    help="training seed (prompt order, sampling); the train, held-out and test subsets stay those of "
                         f"seed {PROTOCOL['seed']}, so a second seed measures run-to-run spread on the same examples. "
                         "The zero-shot runs do not depend on it (greedy decoding) and are skipped")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny protocol to check the script end to end (its results are not the experiment)")
    ap.add_argument("--eval-batch-size", type=int, default=16)
    ap.add_argument("--rerun", action="append", default=[], choices=RUN_NAMES,
                    help="run this method again (repeatable): its results are dropped and its run folder is moved "
                         "aside, then the script goes on as usual (e.g. after a fix that changes its training)")
    ap.add_argument("--ablation", action="store_true",
                    help="also the conflict-rule ablation: GTA with --conflict project and none (the gta run is drop)")
    ap.add_argument("--methods", nargs="+", default=None, choices=RUN_NAMES,
                    help="train only these methods in this invocation (default: every one the dataset's protocol "
                         "has), e.g. the most telling first when time is short; the others run on a later call")
    ap.add_argument("--timing-note", default=None, metavar="TEXT",
                    help="record what shared the CPU with this dataset's runs (report.py prints it beside their wall "
                         "times, which it makes unfit for the time budget), then stop; '' removes the note")
    ap.add_argument("--backfill-only", action="store_true",
                    help="only recompute the answer summaries of finished runs from their predictions, then stop "
                         "(while a paper.py of the same dataset is running, its next save would undo it)")
    args = ap.parse_args()
    p, ds = dict(PROTOCOL), args.dataset
    if args.smoke:
        p.update(train_limit=8, test_limit=8, eval_limit=4, num_generations=2, max_completion_length=8, eval_every=1)
    other_seed = args.seed != PROTOCOL["seed"]
    if other_seed:
        p.update(seed=args.seed, data_seed=PROTOCOL["seed"])
    sub = f"seed{args.seed}" if other_seed else ""  # another seed's results and run folders live apart
    if args.results is None:
        args.results = str(ROOT / "benchmarks" / "results" / sub)
    out_file = Path(args.results) / f"{ds}.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out_file.read_text()) if out_file.is_file() else {}

    def save():
        from gta.config import write_json_atomic

        write_json_atomic(out_file, results)

    if args.timing_note is not None:  # the note alone changes: no run starts, no other field is stamped
        if args.timing_note:
            results["timing_note"] = args.timing_note
        else:
            results.pop("timing_note", None)
        save()
        print(f"timing note {'written to' if args.timing_note else 'removed from'} {out_file}")
        return
    runs = Path(args.runs) / sub / ds
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / "log.txt"
    results.update({"dataset": ds, "protocol": p})
    # the machine of the runs that do not name their own (results written before runs recorded it); each run
    # records the machine it ran on, since a rerun (--rerun, or a resume) may happen on another one
    results.setdefault("machine", machine())
    results.setdefault("runs", {})
    common = ["--dataset", ds, "--data-dir", args.data_dir, "--test-limit", str(p["test_limit"]),
              "--seed", str(p.get("data_seed", p["seed"])),
              "--batch-size", str(args.eval_batch_size)]

    for method in args.rerun:
        drop_run(results, runs, method, out_file.parent / "superseded")
    if args.rerun:
        save()
    if backfill_answers(results, runs):
        save()
    if args.backfill_only:
        print(f"answer summaries up to date in {out_file}")
        return

    # Base model, zero-shot
    for prompt in ("direct", "think"):
        name = f"base-{prompt}"
        if name in results["runs"] or other_seed:
            continue
        out = runs / name
        max_new = DIRECT_MAX_NEW_TOKENS if prompt == "direct" else p["max_completion_length"]
        wall = run(gta("eval", "--model", p["model"], "--prompt", prompt, "--max-new-tokens",
                       str(max_new), "--max-prompt-length", str(p["max_prompt_length"]),
                       "--output", str(out), *common), log)
        ev = json.loads((out / "eval" / "metrics.json").read_text())
        results["runs"][name] = {"eval": ev, "eval_wall_s": wall, "code": [code_version()], "machine": machine(),
                                 "answers": answer_summary(out / "eval" / "predictions.jsonl",
                                                           ev["confusion_matrix"]["labels"][:-1])}
        save()

    methods = ["sft", "grpo", "gta"] + (["gta-rl"] if ds == "sst5" else []) + (list(VARIANTS) if args.ablation else [])
    for method in [m for m in methods if args.methods is None or m in args.methods]:
        if method in results["runs"]:
            continue
        out = runs / method
        flags = [*method_flags(method), "--dataset", ds, "--data-dir", args.data_dir, "--output", str(out),
                 "--no-progress"]
        for k in TRAIN_KEYS + (["data_seed"] if other_seed else []):
            flags += [f"--{k.replace('_', '-')}", str(p[k])]
        flags += ["--bf16" if p["bf16"] else "--no-bf16", "--save-every", "16"]
        if (out / "config.json").is_file():
            flags.append("--resume")
        attempts = train_attempts(out)
        attempts.append({"start": time.time(), "code": code_version(), "machine": machine()})
        write_attempts(out, attempts)
        run(gta("train", *flags), log)
        attempts[-1]["end"] = time.time()
        write_attempts(out, attempts)
        train_wall = sum(a["end"] - a["start"] for a in attempts)
        eval_wall = run(gta("eval", str(out), *common), log)
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        ev = json.loads((out / "eval" / "metrics.json").read_text())
        results["runs"][method] = {
            "config": json.loads((out / "config.json").read_text()),
            "eval": ev,
            "answers": answer_summary(out / "eval" / "predictions.jsonl", ev["confusion_matrix"]["labels"][:-1]),
            "train_wall_s": train_wall, "train_attempts": len(attempts), "eval_wall_s": eval_wall,
            "metrics": metrics,
            # the git commit(s) the training attempts and the evaluation ran (float rounding may differ between them)
            "code": sorted({a["code"] for a in attempts if a.get("code")} | {code_version()}),
            "machine": machine(),
        }
        if method.startswith("gta"):
            results["runs"][method]["transitions"] = transitions(out / "eval" / "predictions.jsonl")
        save()
    print(f"wrote {out_file}")


def drop_run(results: dict, runs: Path, method: str, superseded: Path | None = None) -> None:
    """Forget a finished or partial run so the script runs it again: its entry in the results, which is kept
    in `superseded/DATASET-METHOD-TIMESTAMP.json` (the report sets it beside its rerun), and its run folder and
    attempts file, which are renamed with a `.before-TIMESTAMP` suffix rather than deleted."""
    old = results["runs"].pop(method, None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if old is not None and superseded is not None:
        keep_superseded(superseded, results, method, old, stamp)
    for path in (runs / method, attempts_file(runs / method)):
        if path.exists():
            path.rename(path.with_name(f"{path.name}.before-{stamp}"))


def keep_superseded(folder: Path, results: dict, method: str, run: dict, stamp: str) -> Path:
    """Write a dropped run's results entry, with the machine it ran on, to folder/DATASET-METHOD-STAMP.json, and
    the last commit of the results file it came from (folder's parent), which places a run that recorded no
    code version of its own."""
    from gta.config import write_json_atomic

    run = dict(run, machine=run.get("machine") or results.get("machine"))
    source = folder.parent / f"{results['dataset']}.json"
    try:
        commit = subprocess.run(["git", "-C", str(folder.parent), "log", "-1", "--format=%h", "--", source.name],
                                capture_output=True, text=True).stdout.strip() or None
    except OSError:
        commit = None
    path = folder / f"{results['dataset']}-{method}-{stamp}.json"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"dataset": results["dataset"], "method": method, "dropped": stamp,
                             "results_file_commit": commit, "protocol": results.get("protocol"), "run": run})
    return path


def train_attempts(out: Path) -> list[dict]:
    """Earlier attempts at a training run, each {"start", "end"} in seconds since the epoch. An attempt
    that was killed counts until its last checkpoint (the steps after it are redone on resume), so the
    sum of the attempts is the wall time of the training that was kept."""
    from gta.checkpoint import latest

    f = attempts_file(out)
    attempts = json.loads(f.read_text()) if f.is_file() else []
    if not attempts and (out / "config.json").is_file():
        # started by a version of this script that kept no attempts file: it began when config.json was written
        attempts = [{"start": (out / "config.json").stat().st_mtime, "reconstructed": True}]
    ckpt = latest(out)
    kept_until = (out / "checkpoints" / "latest.json").stat().st_mtime if ckpt is not None else 0.0
    for a in attempts:
        if "end" not in a:
            a["end"] = max(a["start"], kept_until)
    return attempts


def attempts_file(out: Path) -> Path:
    """Beside the run folder, not in it: `gta train` starts a new run only in a missing or empty folder."""
    return out.with_name(out.name + ".attempts.json")


def write_attempts(out: Path, attempts: list[dict]) -> None:
    from gta.config import write_json_atomic

    write_json_atomic(attempts_file(out), attempts)


def transitions(pred_file: Path) -> dict:
    """Guess -> answer outcomes on the test subset (Fig. 7) and the first three corrected guesses."""
    from gta.prompts import label_matches

    counts = {"wrong->right": 0, "right->wrong": 0, "both right": 0, "both wrong": 0}
    changed = {"n": 0, "answer != guess": 0, "of which right": 0}  # "both wrong" may hide a changed label
    examples = []
    for line in pred_file.read_text().splitlines():
        r = json.loads(line)
        guess_ok = label_matches(r["guess"], r["gold"])  # read as the answer is: the last guess span
        key = {(False, True): "wrong->right", (True, False): "right->wrong", (True, True): "both right",
               (False, False): "both wrong"}[(guess_ok, r["correct"])]
        counts[key] += 1
        changed["n"] += 1
        if not (r["guess"] is not None and r["answer"] is not None and label_matches(r["answer"], r["guess"])):
            changed["answer != guess"] += 1  # a missing span counts as a change: the answer is not the guess
            changed["of which right"] += r["correct"]
        if key == "wrong->right" and len(examples) < 3:
            examples.append({k: r[k] for k in ("text", "gold", "guess", "think", "answer")})
    return {"counts": counts, "changed": changed, "examples": examples}


def backfill_answers(results: dict, runs: Path) -> bool:
    """(Re)compute the answer summary of every run whose predictions are on disk, so runs finished before
    paper.py kept a figure gain it; True if any summary changed (the caller then saves)."""
    changed = False
    for name, r in results["runs"].items():
        pred = runs / name / "eval" / "predictions.jsonl"
        if pred.is_file():
            fresh = json.loads(json.dumps(answer_summary(pred, r["eval"]["confusion_matrix"]["labels"][:-1])))
            changed |= r.get("answers") != fresh
            r["answers"] = fresh
            if name.startswith("gta"):
                fresh = json.loads(json.dumps(transitions(pred)))
                changed |= r.get("transitions") != fresh
                r["transitions"] = fresh
    return changed


def answer_summary(pred_file: Path, labels: list[str]) -> dict:
    """What the outputs say beyond their score: the exactly-formatted answers that are not a label (e.g. a
    placeholder copied from the prompt), and how long the think spans are and how many are the prompt's
    placeholder for them (is there any reasoning for the think-related claims to be about?)."""
    import collections
    import statistics

    from gta.evaluate import INVALID, canonical_label
    from gta.prompts import TEMPLATES, parse

    placeholder = parse(TEMPLATES["think"][1], "think").think  # the format line's stand-in, "reasoning"
    records = [json.loads(line) for line in pred_file.read_text().splitlines()]
    formatted = [r for r in records if r["exact_format"]]
    others = collections.Counter(r["answer"] for r in formatted if canonical_label(r["answer"], labels) == INVALID)
    thinks = [r["think"] for r in formatted if r.get("think") is not None]
    tokenizer = _tokenizer()
    return {"n": len(records), "invalid_format": len(records) - len(formatted),
            "not_a_label": sum(others.values()), "top_not_a_label": others.most_common(3),
            "think_n": len(thinks),
            "think_words_median": statistics.median(len(t.split()) for t in thinks) if thinks else None,
            "think_placeholder": sum(t == placeholder for t in thinks),
            "think_label": sum(canonical_label(t, labels) != INVALID for t in thinks),  # a label, not reasoning
            # the model's tokens in each think span, of every output that has one (formatted or not), in test order
            "think_tokens": [len(tokenizer(r["think"], add_special_tokens=False)["input_ids"]) for r in records
                             if r.get("think") is not None],
            # per test example, in the test subset's order (the same for every run of a dataset): 1 if the answer
            # is right, so report.py can compare two runs on the same examples (a paired interval)
            "correct": "".join("1" if r["correct"] else "0" for r in records),
            # per test example, the gold label and the answer as one character each (label_codes), so report.py
            # can bootstrap an interval for the weighted F1
            "gold": label_codes([r["gold"] for r in records], labels),
            "predicted": label_codes([canonical_label(r["answer"], labels) for r in records], labels)}


# A label's index in its dataset's label list as one character, "-" for an answer that is not a label: a results
# file keeps every test example's gold and predicted label in a short string (report.py decodes them)
CODES = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def label_codes(names: list[str], labels: list[str]) -> str:
    if len(labels) > len(CODES):
        raise ValueError(f"{len(labels)} labels: label_codes encodes at most {len(CODES)}")
    return "".join(CODES[labels.index(n)] if n in labels else "-" for n in names)


@functools.cache
def _tokenizer():
    """The protocol model's tokenizer (every run of the protocol fine-tunes that model, so they share it)."""
    from gta.models import load_tokenizer

    return load_tokenizer(PROTOCOL["model"])


def code_version() -> str | None:
    """The git commit this script runs from, with `+changes` if tracked files differ from it; None outside git."""
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        # results files are written by the runs themselves, so they do not make the code "changed"
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no", "--", ".",
                                      ":(exclude)benchmarks/results"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("+changes" if dirty else "")


def machine() -> dict:
    """The CPU and versions a run measured. "AMD EPYC" names both the Zen 4 VMs (avx512_bf16) and Zen 3 ones
    (no AVX-512, no native bf16: gta trains in float32 there), so the CPU family/model ids and whether bf16 is
    native (what decides the precision training runs in) are recorded too."""
    import torch

    from gta.models import bf16_supported

    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    first = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info) if k.strip() in
             ("model name", "cpu family", "model")}
    return {"cpu": first.get("model name", platform.processor()),
            "cpu_id": f"family {first.get('cpu family', '?')} model {first.get('model', '?')}",
            "bf16_native": bf16_supported(torch.device("cpu")), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": importlib.metadata.version("transformers"), "platform": platform.platform()}


if __name__ == "__main__":
    main()
