"""Whole training steps, measured: our GRPO step vs TRL's GRPOTrainer step on the same problem, our GTA step
vs our GRPO step, and the peak memory of a GTA step with G=16.

    python benchmarks/steps.py [--steps 4] [--json PATH]

Same model (SmolLM2-135M-Instruct, full fine-tuning), same prompts (emotion train tweets, our GRPO prompt
template, 4 prompts per optimizer step), G=8, 48 new tokens, beta=0.01, mu=1, lr=1e-6, same reward, same
precision: bf16 where the CPU has native bf16, else float32 for both (as `gta train` falls back to it there).
TRL 1.16 GRPOTrainer with its recommended CPU settings (`use_cpu=True`, `bf16` as above, 16 completions per
micro-batch x 2 accumulation steps = 32 completions = 4 prompts per optimizer step, its default
gradient checkpointing off because it only slows a CPU run that fits in memory). Each figure is the median
step time over steps 2..N (step 1 pays one-time warm-up), the variants run one after the other in one run
(the three fixed-length ones interleaved step by step).

GTA vs GRPO is measured three ways. `gta_vs_grpo_step`: completions of exactly 48 tokens (no stop token;
`_fixed` variants) and GRPO given GTA's prompts, so both sample, score and train on the same tokens and the
ratio is the cost of what GTA adds to a step: the guess loss (a forward and backward of each prompt
followed by its gold guess) and the conflict check. `gta_vs_grpo_step_own_prompts`: the same, but each method
with its own prompt template (GTA's asks for the guess too, so its prompts are longer).
`gta_vs_grpo_step_stop_token`: as training runs, each sampling its own lengths (GTA's completions carry the
guess span, so they run longer). `gta_guess_share`: the seconds of each fixed-length GTA step spent on the guess
loss (its gradient buffer, forward and backward) and the conflict check, measured inside the step by the trainer
(`guess_s`), as a share of that step (median over steps 2..N).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHAPE = dict(B=4, G=8, L=48, beta=0.01, mu=1, lr=1e-6)


def trainer(spec: str, steps: int, data_dir: str, tmp: str):
    """One of our trainers from `method[:G[:micro-batch[:fixed[:template]]]]`."""
    from gta.config import TrainConfig
    from gta.prompts import make_prompts
    from gta.trainer import Trainer

    method, *rest = spec.split(":")
    G, micro, fixed = (int(x) for x in (rest[:3] + [SHAPE["G"], SHAPE["B"], 0][len(rest[:3]):]))
    template = rest[3] if len(rest) > 3 else None
    cfg = TrainConfig(method=method, model="smollm2-135m", dataset="emotion", data_dir=data_dir, train_limit=256,
                      max_steps=steps, batch_size=SHAPE["B"], micro_batch_size=micro, num_generations=G,
                      num_iterations=SHAPE["mu"], beta=SHAPE["beta"], learning_rate=SHAPE["lr"],
                      max_completion_length=SHAPE["L"], output=f"{tmp}/{spec.replace(':', '_')}", save_every=10 ** 9)
    t = Trainer(cfg, progress=False)
    if fixed:  # no stop token: every completion runs to max_completion_length
        t.stop_ids = [-1]
    if template:  # another method's prompts (and reward parsing); the method's losses are unchanged
        t.template = template
        t.prompts, _ = make_prompts(t.tokenizer, [e.text for e in t.train_examples], t.labels, template,
                                    cfg.max_prompt_length)
    return t


def ours(specs: list[str], steps: int, data_dir: str) -> tuple[list[list[float]], list[list[float]]]:
    """Step times of one or more of our trainers in this process, interleaved step by step when several (so
    the ratio between them is not skewed by the machine slowing down or speeding up during the run), and the
    seconds of each GTA step spent on the guess loss and conflict check (the trainer's `guess_s` metric)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = [trainer(spec, steps, data_dir, tmp) for spec in specs]
        times: list[list[float]] = [[] for _ in specs]
        guess: list[list[float]] = [[] for _ in specs]
        for s in range(steps):
            for t, out, g in zip(trainers, times, guess):
                t0 = time.perf_counter()
                m = t.rl_step(t.plan.batch_indices(s), s)
                out.append(time.perf_counter() - t0)
                if "guess_s" in m:
                    g.append(m["guess_s"])
        return times, guess


def trl(steps: int, data_dir: str) -> list[float]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from gta.data import label_set, load_splits, stratified_subset
    from gta.models import load_tokenizer, resolve
    from gta.prompts import build_prompt, prime
    from gta.rewards import reward
    from gta.models import bf16_supported

    path = resolve("smollm2-135m")
    tok = load_tokenizer(path)
    splits = load_splits("emotion", data_dir)
    labels = label_set(splits["train"])
    train = stratified_subset(splits["train"], 256, 0)
    ds = Dataset.from_list([{"prompt": build_prompt(tok, e.text, labels, "think"), "gold": e.label} for e in train])

    def reward_fn(prompts, completions, gold, **kw):
        return [reward(prime("think") + c, g, "think", labels)["total"] for c, g in zip(completions, gold)]

    class Timer(TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(output_dir=tmp, use_cpu=True, bf16=bf16_supported(torch.device("cpu")),
                         per_device_train_batch_size=16, gradient_accumulation_steps=2, num_generations=SHAPE["G"],
                         max_completion_length=SHAPE["L"], beta=SHAPE["beta"], num_iterations=SHAPE["mu"],
                         learning_rate=SHAPE["lr"], max_steps=steps, logging_steps=1, report_to="none",
                         save_strategy="no", gradient_checkpointing=False, temperature=1.0, seed=0)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        timer = Timer()
        GRPOTrainer(model=model, reward_funcs=reward_fn, args=cfg, train_dataset=ds, processing_class=tok,
                    callbacks=[timer]).train()
        return timer.times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)  # child process: one variant, prints JSON
    args = ap.parse_args()
    if args.only:  # "trl", or our trainers' specs joined by "+" (interleaved in one process)
        times, guess = (([trl(args.steps, args.data_dir)], [[]]) if args.only == "trl"
                        else ours(args.only.split("+"), args.steps, args.data_dir))
        rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        print(json.dumps({"times": times, "guess_s": guess, "peak_rss_gib": rss_gib}))
        return
    from paper import machine  # benchmarks/paper.py, beside this script

    cpu = machine()
    res = {"shape": SHAPE, "steps": args.steps, "machine": cpu, "precision": "bf16" if cpu["bf16_native"] else "fp32"}
    print(f"precision {res['precision']} (ours and TRL alike); {res['machine']['cpu']} {res['machine']['cpu_id']}")
    # Each entry in its own process, so peak memory is its own; the three fixed-length variants that the GTA/GRPO
    # ratios compare run interleaved in one process (their peak RSS is then that of the three together).
    fixed = f"{SHAPE['G']}:{SHAPE['B']}:1"
    for names, only in [(["ours_grpo"], "grpo"), (["ours_gta"], "gta"), (["trl_grpo"], "trl"),
                        (["ours_gta_G16"], "gta:16"), (["ours_gta_G16_micro2"], "gta:16:2"),
                        (["ours_grpo_fixed", "ours_grpo_fixed_gta_prompts", "ours_gta_fixed"],
                         f"grpo:{fixed}+grpo:{fixed}:gta+gta:{fixed}")]:
        out = subprocess.run([sys.executable, __file__, "--only", only, "--steps", str(args.steps), "--data-dir",
                              args.data_dir], check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        for name, times, guess in zip(names, r["times"], r["guess_s"]):
            res[name] = {"times": times, "peak_rss_gib": r["peak_rss_gib"],
                         "median_step_s": statistics.median(times[1:] or times)}
            if guess:
                res[name]["guess_s"] = guess
            print(f"{name:<27} median step {res[name]['median_step_s']:7.2f} s  (steps: "
                  f"{', '.join(f'{t:.1f}' for t in times)})  peak RSS {r['peak_rss_gib']:.1f} GiB", flush=True)
    res["step_vs_trl"] = res["ours_grpo"]["median_step_s"] / res["trl_grpo"]["median_step_s"]
    gta = res["ours_gta_fixed"]["median_step_s"]
    res["gta_vs_grpo_step"] = gta / res["ours_grpo_fixed_gta_prompts"]["median_step_s"]
    res["gta_vs_grpo_step_own_prompts"] = gta / res["ours_grpo_fixed"]["median_step_s"]
    res["gta_vs_grpo_step_stop_token"] = res["ours_gta"]["median_step_s"] / res["ours_grpo"]["median_step_s"]
    # measured inside each GTA step, so free of the step-to-step noise that the ratios above carry
    fixed_gta = res["ours_gta_fixed"]
    res["gta_guess_share"] = statistics.median(g / t for g, t in list(zip(fixed_gta["guess_s"], fixed_gta["times"]))[1:])
    print(f"guess loss + conflict check inside the fixed-length GTA step: "
          f"{statistics.median(fixed_gta['guess_s'][1:]):.2f} s, {res['gta_guess_share']:.0%} of the step (median)")
    print(f"our GRPO step / TRL GRPO step = {res['step_vs_trl']:.2f}x;  our GTA step / our GRPO step = "
          f"{res['gta_vs_grpo_step']:.2f}x at 48 tokens each on the same prompts ({res['gta_vs_grpo_step_own_prompts']:.2f}x "
          f"each with its own prompts; {res['gta_vs_grpo_step_stop_token']:.2f}x with the stop token, each sampling its "
          f"own lengths);  GTA step with G=16: peak RSS "
          f"{res['ours_gta_G16']['peak_rss_gib']:.1f} GiB (micro-batch 2: {res['ours_gta_G16_micro2']['peak_rss_gib']:.1f} GiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
