"""What a step's supervised targets and its optimizer step cost, the way gta computes them and the previous way.

    python benchmarks/investigations/guess_pass.py [--repeats 5] [--dataset sst5] [--json PATH]

On the real SmolLM2-135M-Instruct, with the paper protocol's shapes (docs/results.md): micro-batches of 2
training prompts (the first of --dataset's train split, cut to --max-prompt-length) in the GTA template, G=8 completions sampled from the model (stop at end of turn, at most 96
tokens), the gold labels as targets. The variants are interleaved; each figure is the median of --repeats.

1. `sft`: one SFT micro-batch, forward+backward of the label tokens' NLL. Ours: one forward over prompt + label
   (`rollout.sequence_logprobs`). Previous: a forward of the prompt, then of the label on the prompt's cache
   (`rollout.shared_prefix_logprobs` with one suffix per prompt).
2. `gta`: one GTA micro-batch of the update, g_RL (GRPO loss over the G completions) then g_SFT (the guess's
   NLL). Ours: the guess in a forward of its own after the RL backward. Previous: the guess as a second suffix
   on the shared prompt computation, the RL backward keeping the graph for the SFT backward.
3. `adamw`: one AdamW step over the model's parameters: torch's fused kernel (ours) against its default.

Precision: what `gta train` uses on this CPU (bf16 autocast with native bf16, otherwise float32).
Prints measured figures only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from gta import rollout
from gta.data import label_set, load_splits
from gta.losses import grpo_loss, group_advantages, sft_loss
from gta.models import load_tokenizer, resolve
from gta.prompts import make_prompts, target_ids
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: paper.py, speed.py
from paper import machine  # noqa: E402
from speed import interleaved  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=2, help="prompts per micro-batch (the protocol's 2)")
    ap.add_argument("--generations", type=int, default=8, help="G")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--dataset", default="sst5", help="bbc_news for long prompts")
    ap.add_argument("--max-prompt-length", type=int, default=256, help="the protocol's 256")
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--json", default=None, help="also write every figure here")
    args = ap.parse_args()
    cpu = machine()
    bf16 = cpu["bf16_native"]
    torch.manual_seed(0)
    path = resolve("smollm2-135m")
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    params = list(model.parameters())
    B, G = args.prompts, args.generations

    train = load_splits(args.dataset, args.data_dir)["train"]
    labels = label_set(train)
    examples = train[:B]
    texts, _ = make_prompts(tok, [e.text for e in examples], labels, "gta", args.max_prompt_length)
    batch = rollout.encode_prompts(tok, texts, "cpu")

    def targets(closing: str) -> tuple[torch.Tensor, torch.Tensor]:
        return rollout.pad_right([target_ids(tok, e.label, closing) for e in examples], tok.pad_token_id, "cpu")

    label, guess = targets("</answer>"), targets("</guess>")
    model.eval()
    ids, cmask = rollout.generate(model, batch, G, args.max_new_tokens, sorted({tok.eos_token_id, tok.pad_token_id}),
                                  tok.pad_token_id, 1.0, torch.Generator().manual_seed(0), bf16=bf16)
    model.train()
    lengths = cmask.sum(dim=1).float()
    adv = group_advantages(torch.randn(B, G)).view(-1)
    rl_mask = cmask.float()
    print(f"model SmolLM2-135M, {torch.get_num_threads()} threads, {'bf16 autocast' if bf16 else 'float32'}, "
          f"{B} {args.dataset} prompts of {batch.input_ids.shape[1]} tokens, G={G} completions of "
          f"{int(lengths.min())}-{int(lengths.max())} tokens (mean {lengths.mean():.1f}), {args.repeats} repeats")

    def rl_loss(logp):
        return grpo_loss(logp, logp.detach(), None, adv, rl_mask, lengths, 0.2, 0.0, B * G)[0]

    def sft_ours():
        logp = rollout.sequence_logprobs(model, batch, *label, bf16)
        torch.autograd.grad(sft_loss(logp, label[1], B), params, allow_unused=True)

    def sft_previous():
        logp, = rollout.shared_prefix_logprobs(model, batch, [(*label, 1)], bf16)
        torch.autograd.grad(sft_loss(logp, label[1], B), params, allow_unused=True)

    def gta_ours():
        logp, = rollout.shared_prefix_logprobs(model, batch, [(ids, cmask, G)], bf16)
        torch.autograd.grad(rl_loss(logp), params, allow_unused=True)
        guess_logp = rollout.sequence_logprobs(model, batch, *guess, bf16)
        torch.autograd.grad(sft_loss(guess_logp, guess[1], B), params, allow_unused=True)

    def gta_previous():
        logp, guess_logp = rollout.shared_prefix_logprobs(model, batch, [(ids, cmask, G), (*guess, 1)], bf16)
        torch.autograd.grad(rl_loss(logp), params, retain_graph=True, allow_unused=True)
        torch.autograd.grad(sft_loss(guess_logp, guess[1], B), params, allow_unused=True)

    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    fused = torch.optim.AdamW(params, lr=1e-5, fused=True)
    default = torch.optim.AdamW(params, lr=1e-5)
    variants = {"sft_ours": sft_ours, "sft_previous": sft_previous, "gta_ours": gta_ours,
                "gta_previous": gta_previous, "adamw_fused": fused.step, "adamw_default": default.step}
    times, med = interleaved(variants, args.repeats)
    pairs = {"sft_vs_previous": ("sft_ours", "sft_previous"), "gta_vs_previous": ("gta_ours", "gta_previous"),
             "adamw_fused_vs_default": ("adamw_fused", "adamw_default")}
    ratios = {key: med[ours] / med[other] for key, (ours, other) in pairs.items()}
    print("\nmedian seconds, ours vs the other (ratio = ours / other):")
    for key, (ours, other) in pairs.items():
        print(f"  {ours:12s} {med[ours]:7.3f}  vs {other:14s} {med[other]:7.3f}   {ratios[key]:.2f}x")
    if args.json:
        out = {"machine": cpu, "precision": "bf16" if bf16 else "fp32",
               "shape": {"dataset": args.dataset, "prompts": B, "prompt_tokens": int(batch.input_ids.shape[1]), "G": G,
                         "completion_lengths": lengths.int().tolist(), "label_tokens": label[1].sum(1).tolist(),
                         "guess_tokens": guess[1].sum(1).tolist()},
               "repeats": args.repeats, "seconds": times, "median_s": med, **ratios}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
