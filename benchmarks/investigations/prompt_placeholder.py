"""Which format line should the prompt show? Zero-shot exact-format rate of the base model, under the format rule.

    python benchmarks/investigations/prompt_placeholder.py [--datasets emotion sst5] [--limit 32] [--samples 8]
        [--templates think gta] [--json PATH]

The prompt says "Reply exactly in this format: <think>reasoning</think><answer>label</answer>", and SmolLM2-135M
copies it: before the format reward required a label in each label span, the verbatim copy earned it, and GRPO
learned to answer the literal word `label`. This evaluates the base model zero-shot with other format lines (no
copyable words: dots, the label list in place of `label`, the format described in words) on a seeded stratified
subset of each validation split (96 new tokens, bf16 where the CPU has it), scored as `gta eval` scores (in format =
the tag structure, a label in each label span, a stop token), greedy and as rollouts sample (--samples completions
per prompt at temperature 1, seeded): what GRPO's first groups see. Prints per variant: the exact-format rates,
accuracy, the share of copied placeholders and the most common answers. The prompt of src/gta/prompts.py is changed
only if a variant has a higher exact-format rate (sampled, the rate RL starts from; greedy beside it) on every
dataset and template measured.
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: paper.py, speed.py
from paper import DATA, code_version, machine  # noqa: E402

import torch

from gta import data, evaluate, models, prompts, rollout

# variant -> template -> the line after the instructions; {labels} is the label list, "a | b | c"
VARIANTS = {
    "label (today)": {t: f"Reply exactly in this format: {prompts.TEMPLATES[t][1]}" for t in ("think", "gta")},
    "dots": {"think": "Reply exactly in this format: <think>...</think><answer>...</answer>",
             "gta": "Reply exactly in this format: <guess>...</guess><think>...</think><answer>...</answer>"},
    "label list": {
        "think": "Reply exactly in this format: <think>reasoning</think><answer>{labels}</answer>",
        "gta": "Reply exactly in this format: <guess>{labels}</guess><think>reasoning</think><answer>{labels}</answer>"},
    "in words": {
        "think": "Write your reasoning between <think> and </think>, then exactly one of the labels between <answer> "
                 "and </answer>.",
        "gta": "Write exactly one of the labels between <guess> and </guess>, then your reasoning between <think> and "
               "</think>, then exactly one of the labels between <answer> and </answer>."},
}


def message(line: str):
    def user_message(text: str, labels: list[str], template: str) -> str:
        instructions = prompts.TEMPLATES[template][0]
        return (f"Classify the text into one of these labels: {', '.join(labels)}.\n{instructions}\n"
                f"{line.replace('{labels}', ' | '.join(labels))}\n\nText: {text}")
    return user_message


def sampled_format_rate(model, tok, examples, labels, template, samples: int, bf16: bool, seed: int) -> dict:
    """Exact-format rate and copied answer placeholders over `samples` completions per prompt at temperature 1."""
    texts, _ = prompts.make_prompts(tok, [ex.text for ex in examples], labels, template, 256)
    stop, word = models.stop_token_ids(tok, model), prompts.placeholders(template)["answer"]
    exact = copied = total = 0
    for s in range(0, len(texts), 4):
        batch = rollout.encode_prompts(tok, texts[s:s + 4], model.device)
        gens = [torch.Generator().manual_seed(seed * 1009 + s + k) for k in range(batch.input_ids.shape[0])]
        ids, mask = rollout.generate(model, batch, samples, 96, stop, tok.pad_token_id, 1.0, gens, bf16=bf16)
        for row, m in zip(ids.tolist(), mask):
            valid = row[: int(m.sum())]
            p = prompts.parse(prompts.prime(template) + tok.decode(valid, skip_special_tokens=True), template, labels)
            exact += p.exact and not rollout.cut_at_limit(valid, 96, stop)
            copied += prompts.label_matches(p.answer, word)
            total += 1
    return {"sampled_exact_format_rate": exact / total, "sampled_placeholder_answer_rate": copied / total,
            "samples": total}


def save(path: str, bf16: bool, args, results: list[dict]) -> None:
    Path(path).write_text(json.dumps({"machine": machine(), "code": code_version(), "seed": args.seed,
                                      "limit": args.limit, "samples": args.samples, "bf16": bf16,
                                      "results": results}, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["emotion", "sst5"])
    ap.add_argument("--templates", nargs="+", default=["think", "gta"], choices=["think", "gta"])
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--samples", type=int, default=8, help="completions per prompt at temperature 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    name = models.resolve("smollm2-135m")
    tok, model = models.load_tokenizer(name), models.load_model(name)
    bf16 = models.bf16_supported(model.device)
    results, original = [], prompts.user_message
    try:
        for ds in args.datasets:
            splits = data.load_splits(ds, args.data_dir)
            labels = data.label_set(splits["train"])
            examples = data.stratified_subset(splits["validation"], args.limit, args.seed)
            for template in args.templates:
                for variant, lines in VARIANTS.items():
                    prompts.user_message = message(lines[template])
                    m, records = evaluate.evaluate_examples(model, tok, examples, labels, template, 96, 256, bf16, 16,
                                                            False)
                    answers = collections.Counter((r["answer"] or "<none>")[:16] for r in records).most_common(3)
                    sampled = sampled_format_rate(model, tok, examples, labels, template, args.samples, bf16, args.seed)
                    row = {"dataset": ds, "template": template, "variant": variant, "n": len(examples),
                           "exact_format_rate": m["exact_format_rate"], "accuracy": m["accuracy"],
                           "placeholder_rate": m["placeholder_rate"], "truncated_rate": m["truncated_rate"],
                           "top_answers": answers, **sampled}
                    results.append(row)
                    if args.json:  # after every variant: a run stopped early keeps what it measured
                        save(args.json, bf16, args, results)
                    copied = " ".join(f"{k} {v:.2f}" for k, v in m["placeholder_rate"].items())
                    print(f"{ds:8s} {template:5s} {variant:14s} in format: sampled {sampled['sampled_exact_format_rate']:.3f} "
                          f"greedy {m['exact_format_rate']:.3f}  greedy accuracy {m['accuracy']:.3f}  greedy copies "
                          f"{copied}, sampled 'label' answers {sampled['sampled_placeholder_answer_rate']:.2f}  "
                          f"greedy answers {answers}", flush=True)
    finally:
        prompts.user_message = original
    where = machine()
    print(f"{args.limit} validation examples per dataset (stratified, seed {args.seed}), SmolLM2-135M, greedy and "
          f"{args.samples} samples per prompt at T=1, {'bf16' if bf16 else 'float32'}; {where['cpu_id']}; "
          f"code {code_version()}")


if __name__ == "__main__":
    main()
