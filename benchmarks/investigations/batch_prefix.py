"""What computing a batch's shared prompt prefix once saves, pass by pass: prompts encoded with the prefix as shared
columns (`rollout.encode_prompts`, what gta does) against every row computing it (`share_prefix=False`).

    python benchmarks/investigations/batch_prefix.py [--repeats 5] [--float32] [--json PATH]

The default shapes are the README main job's (bbc_news in the GTA template, prompts cut to 192 tokens, 4 prompts a
step, G=4, completions of up to 32 tokens; `--micro-batch` prompts per update pass) and its evaluation (batches of
32 test prompts, greedy, 32 new tokens). On the real SmolLM2-135M-Instruct, in the precision `gta train` uses on
this CPU (bf16 autocast with native bf16, otherwise float32; `--float32` forces float32: with
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 set, as
`benchmarks/main_job.py --emulate-no-bf16` does, a proxy for a CPU without bf16). Passes timed:

- `rollout`: sampling G completions for each of the step's prompts (seeded; both variants sample the same tokens);
- `reference`: the no-grad log-probs of one micro-batch's completions;
- `update`: the GRPO loss's forward+backward over one micro-batch's completions;
- `guess`: the guess target's forward+backward (GTA's SFT half) for one micro-batch;
- `eval`: greedy decoding of one evaluation batch.

The variants are interleaved; each figure is the median of --repeats. Prints measured figures only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from gta import rollout
from gta.data import label_set, load_splits, stratified_subset
from gta.losses import grpo_loss, group_advantages, sft_loss
from gta.models import load_tokenizer, resolve, stop_token_ids
from gta.prompts import make_prompts, target_ids

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: paper.py
from paper import code_version, machine  # noqa: E402
from speed import interleaved  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PASSES = ("rollout", "reference", "update", "guess", "eval")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dataset", default="bbc_news")
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--max-prompt-length", type=int, default=192)
    ap.add_argument("--prompts", type=int, default=4, help="prompts a step (sampled in one rollout)")
    ap.add_argument("--micro-batch", type=int, default=2, help="prompts per update pass (gta's default 2)")
    ap.add_argument("--generations", type=int, default=4, help="G")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--float32", action="store_true", help="float32 even where this CPU has native bf16")
    ap.add_argument("--json", default=None, help="also write every figure here")
    args = ap.parse_args()
    cpu = machine()
    bf16 = cpu["bf16_native"] and not args.float32
    torch.manual_seed(0)
    path = resolve("smollm2-135m")
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    params = list(model.parameters())
    B, b, G, L = args.prompts, args.micro_batch, args.generations, args.max_new_tokens
    splits = load_splits(args.dataset, args.data_dir if Path(args.data_dir).is_dir() else None)
    labels = label_set(splits["train"])
    train = splits["train"][:B]
    step_texts, _ = make_prompts(tok, [e.text for e in train], labels, "gta", args.max_prompt_length)
    test = stratified_subset(splits["test"], args.eval_batch, seed=0)
    eval_texts, _ = make_prompts(tok, [e.text for e in test], labels, "gta", args.max_prompt_length)
    stop = stop_token_ids(tok, model)
    variants_of = {share: {"step": rollout.encode_prompts(tok, step_texts, "cpu", share),
                           "micro": rollout.encode_prompts(tok, step_texts[:b], "cpu", share),
                           "eval": rollout.encode_prompts(tok, eval_texts, "cpu", share)} for share in (True, False)}
    shared = {k: v.shared for k, v in variants_of[True].items()}
    model.eval()
    ids, cmask = rollout.generate(model, variants_of[False]["micro"], G, L, stop, tok.pad_token_id, 1.0,
                                  torch.Generator().manual_seed(0), bf16=bf16)
    lengths = cmask.sum(dim=1).float()
    adv = group_advantages(torch.randn(b, G)).view(-1)
    guess = rollout.pad_right([target_ids(tok, e.label, "</guess>") for e in train[:b]], tok.pad_token_id, "cpu")
    print(f"model SmolLM2-135M, {torch.get_num_threads()} threads, {'bf16' if bf16 else 'float32'}, {args.dataset} "
          f"GTA prompts of up to {args.max_prompt_length} tokens ({shared['step']}-{shared['eval']} of them shared "
          f"by a batch), {B} prompts a step, micro-batches of {b}, G={G}, completions of "
          f"{int(lengths.min())}-{int(lengths.max())} tokens, eval batches of {args.eval_batch}, {args.repeats} repeats")

    def passes(share: bool) -> dict:
        enc = variants_of[share]

        def sample():
            rollout.generate(model, enc["step"], G, L, stop, tok.pad_token_id, 1.0,
                             torch.Generator().manual_seed(1), bf16=bf16, logprobs=True)

        def reference():
            with torch.no_grad():
                rollout.shared_prefix_logprobs(model, enc["micro"], [(ids, cmask, G)], bf16)

        def update():
            logp, = rollout.shared_prefix_logprobs(model, enc["micro"], [(ids, cmask, G)], bf16, entropy=False)
            loss = grpo_loss(logp, logp.detach(), None, adv, cmask.float(), lengths, 0.2, 0.0, b * G)[0]
            torch.autograd.grad(loss, params, allow_unused=True)

        def guess_pass():
            logp = rollout.sequence_logprobs(model, enc["micro"], *guess, bf16)
            torch.autograd.grad(sft_loss(logp, guess[1], b), params, allow_unused=True)

        def evaluate():
            rollout.generate(model, enc["eval"], 1, L, stop, tok.pad_token_id, temperature=0.0, bf16=bf16)

        return {"rollout": sample, "reference": reference, "update": update, "guess": guess_pass, "eval": evaluate}

    both = {"shared": passes(True), "plain": passes(False)}
    variants = {f"{name}_{way}": both[way][name] for name in PASSES for way in both}  # each pass's two ways in turn
    times, med = interleaved(variants, args.repeats)
    ratios = {name: med[f"{name}_shared"] / med[f"{name}_plain"] for name in PASSES}
    print("\nmedian seconds, prefix computed once vs by every row (ratio = shared / plain):")
    for name, ratio in ratios.items():
        print(f"  {name:10s} {med[name + '_shared']:7.3f}  vs {med[name + '_plain']:7.3f}   {ratio:.2f}x")
    if args.json:
        out = {"code": code_version(), "machine": cpu, "precision": "bf16" if bf16 else "fp32", "args": vars(args),
               "shared_tokens": shared, "completion_lengths": lengths.int().tolist(), "seconds": times, "median_s": med, "ratios": ratios}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
