"""Fast inference's label scoring: the K labels packed into one row after each prompt vs the prompt's cache
copied to K rows (what the update pass does for G completions).

    python benchmarks/investigations/label_scoring.py [--dataset massive_scenario] [--prompts 32] [--repeats 3]

SmolLM2-135M-Instruct with bf16 weights (as `gta eval` loads a bf16 run), the GTA prompts of a seeded
stratified subset of --prompts test examples, batches of --batch-size prompts, every label + `</guess>`
scored. Prints examples/s of each variant (interleaved, medians of --repeats), their ratio, and whether they
pick the same labels (bf16 rounding may flip near-ties).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from gta import data, evaluate, models, prompts, rollout


def expanded(model, tokenizer, texts, label_ids, batch_size):
    """The previous implementation: shared_prefix_logprobs with the prompt cache expanded to one row per label."""
    out, K = [], len(label_ids)
    for s in range(0, len(texts), batch_size):
        chunk = texts[s:s + batch_size]
        ids, mask = rollout.pad_right(label_ids * len(chunk), tokenizer.pad_token_id, "cpu")
        logp, = rollout.shared_prefix_logprobs(model, rollout.encode_prompts(tokenizer, chunk, "cpu"),
                                               [(ids, mask, K)], False)
        out += logp.sum(dim=1).view(len(chunk), K).argmax(dim=1).tolist()
    return out


def packed(model, tokenizer, texts, label_ids, batch_size):
    out = []
    for s in range(0, len(texts), batch_size):
        chunk = texts[s:s + batch_size]
        logp = rollout.packed_suffix_logprobs(model, rollout.encode_prompts(tokenizer, chunk, "cpu"), label_ids, False)
        out += logp.argmax(dim=1).tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="massive_scenario")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name = models.resolve("smollm2-135m")
    tok = models.load_tokenizer(name)
    model = models.load_model(name, torch.device("cpu")).to(torch.bfloat16).eval()
    splits = data.load_splits(args.dataset, args.data_dir)
    labels = data.label_set(splits["train"])
    examples = data.stratified_subset(splits["test"], args.prompts, 0)
    texts, _ = prompts.make_prompts(tok, [e.text for e in examples], labels, "gta", 256)
    label_ids = [tok(label + evaluate.FAST_CLOSING["gta"], add_special_tokens=False)["input_ids"] for label in labels]
    variants = {"expanded cache": expanded, "packed": packed}
    times = {k: [] for k in variants}
    picks = {}
    with torch.no_grad():
        packed(model, tok, texts[:args.batch_size], label_ids, args.batch_size)  # warm-up
        for _ in range(args.repeats):
            for k, f in variants.items():
                t = time.perf_counter()
                picks[k] = f(model, tok, texts, label_ids, args.batch_size)
                times[k].append(time.perf_counter() - t)
    print(f"{args.dataset}: {len(texts)} GTA prompts, {len(labels)} labels, batches of {args.batch_size}, "
          f"{args.threads} threads, torch {torch.__version__}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:15s} {len(texts) / med[k]:6.2f} examples/s  (seconds: {', '.join(f'{x:.2f}' for x in v)})")
    print(f"packed / expanded: {med['expanded cache'] / med['packed']:.2f}x the examples/s")
    same = sum(a == b for a, b in zip(picks["expanded cache"], picks["packed"]))
    print(f"same label picked: {same}/{len(texts)}")


if __name__ == "__main__":
    main()
