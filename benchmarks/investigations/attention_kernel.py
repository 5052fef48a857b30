"""Update-pass micro-batch: SDPA's flash kernel vs its math kernel on CPU (why rollout.attention_backend exists).

    python benchmarks/investigations/attention_kernel.py [--threads 2] [--repeats 3] [--profile]

One micro-batch of the update pass as the trainer runs it (rollout.shared_prefix_logprobs, bf16 autocast,
full fine-tuning of SmolLM2-135M): 2 emotion training prompts, G=8 completions each of seeded random tokens
with seeded lengths 8-39. Prints forward+backward seconds for each kernel, interleaved, medians of --repeats,
and their ratio; --profile adds the top operators of one pass with each kernel.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from gta import data, prompts, rollout
    from gta.models import load_model, load_tokenizer

    model, tok = load_model("smollm2-135m", torch.device("cpu")), load_tokenizer("smollm2-135m")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    train = data.load_splits("emotion", args.data_dir)["train"]
    labels = data.label_set(train)
    texts = [prompts.build_prompt(tok, e.text, labels, "gta") for e in train[:2]]
    batch = rollout.encode_prompts(tok, texts, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    L = 40
    lengths = torch.randint(8, L, (16,), generator=g)
    ids = torch.randint(100, 40000, (16, L), generator=g)
    mask = (torch.arange(L)[None] < lengths[:, None]).long()

    ours = rollout.attention_backend

    def once(kernel) -> float:
        # flash: what SDPA picks by itself; math: what rollout.attention_backend selects for training on CPU
        rollout.attention_backend = ours if kernel == "math" else (
            lambda device: sdpa_kernel(SDPBackend.FLASH_ATTENTION))
        t = time.perf_counter()
        lp, = rollout.shared_prefix_logprobs(model, batch, [(ids, mask, 8)], True)
        loss = (lp * mask).sum() / mask.sum()
        torch.autograd.grad(loss, params, allow_unused=True)
        return time.perf_counter() - t

    print(f"prompts {tuple(batch.input_ids.shape)}, completions 16 x up to {int(lengths.max())} tokens, "
          f"{args.threads} threads, torch {torch.__version__}")
    once("math")  # warm-up
    times = {"flash": [], "math": []}
    for _ in range(args.repeats):
        for kernel in times:
            times[kernel].append(once(kernel))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:6s} forward+backward median {med[k]:.2f} s  ({', '.join(f'{x:.2f}' for x in v)})")
    print(f"math / flash: {med['math'] / med['flash']:.2f}x the time")
    if args.profile:
        from torch.profiler import profile

        for kernel in times:
            with profile() as prof:
                once(kernel)
            print(f"--- {kernel}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
