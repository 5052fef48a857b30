"""Does the base model's zero-shot think output depend on the placeholder in the format line?

    python benchmarks/prompt_placeholder.py [--dataset emotion] [--limit 64]

SmolLM2-135M answers the literal word `label` in most exactly-formatted think outputs (it copies
`<answer>label</answer>` from the prompt). This evaluates the think prompt with other placeholders on a
seeded stratified subset of the validation split (greedy, 96 new tokens, bf16) and prints accuracy,
invalid-format rate and the most common answers of each, to see whether another placeholder would give
GRPO a better start. The prompt used by every method stays the one in src/gta/prompts.py.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

from gta import data, evaluate, models, prompts

VARIANTS = {
    "label": "<think>reasoning</think><answer>label</answer>",  # the one in src/gta/prompts.py
    "dots": "<think>...</think><answer>...</answer>",
    "one-of": "<think>your reasoning</think><answer>one label from the list</answer>",
    "caps": "<think>REASONING</think><answer>LABEL</answer>",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="emotion")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    name = models.resolve("smollm2-135m")
    tok, model = models.load_tokenizer(name), models.load_model(name)
    splits = data.load_splits(args.dataset, args.data_dir)
    labels = data.label_set(splits["train"])
    examples = data.stratified_subset(splits["validation"], args.limit, args.seed)
    instructions, _, primed = prompts.TEMPLATES["think"]
    try:
        for key, fmt in VARIANTS.items():
            prompts.TEMPLATES["think"] = (instructions, fmt, primed)
            m, records = evaluate.evaluate_examples(model, tok, examples, labels, "think", 96, 256, True, 16, False)
            answers = collections.Counter((r["answer"] or "<none>")[:20] for r in records).most_common(4)
            print(f"{key:7s} accuracy {m['accuracy']:.3f} invalid {m['invalid_format_rate']:.3f} "
                  f"answers {answers}", flush=True)
    finally:
        prompts.TEMPLATES["think"] = (instructions, VARIANTS["label"], primed)
    print(f"{args.dataset}, {len(examples)} validation examples (seed {args.seed}), SmolLM2-135M, greedy, bf16")


if __name__ == "__main__":
    main()
