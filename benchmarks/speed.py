"""Speed of gta's shared-prefix rollouts and updates against the plain approach, on this machine.

    python benchmarks/speed.py [--repeats 3] [--steps 3] [--json PATH]

With --steps N (default 3) it first runs benchmarks/steps.py (whole GRPO/GTA steps of ours vs TRL's
GRPOTrainer, peak memory of a G=16 GTA step) and adds `step_vs_trl`, `gta_vs_grpo_step` and `gta_guess_share`
to the JSON, beside `rollout_vs_plain`, `update_vs_plain` and `flops_fraction`.

Same model (SmolLM2-135M-Instruct), same prompts (emotion test tweets padded with their neighbours to
about --prompt-tokens tokens), same lengths and sampling settings; the variants are interleaved and
each figure is the median of --repeats runs. Prints measured figures only.

The figures above use completions of one fixed length (no stop token), as the issue's comparison asks. A
second part (`variable_length` in the JSON; --variable-new-tokens 0 skips it) measures what real training
sees: the GTA prompts of the first B emotion training tweets, sampling until the end-of-turn token or
--variable-new-tokens (the paper protocol's 96), where a few rows run long and most stop early. There it
times our rollout with stopped rows leaving the batch against the same rollout keeping every row (identical
samples), and plain `generate` (same precision, same stop token); and our update pass in length-sorted chunks
against one chunk of all rows (identical results) and the plain pass.

Precision: what `gta train` uses on this CPU. With native bf16 (avx512_bf16 or amx_bf16): bf16 rollouts on a
bf16 copy of the weights, update passes under bf16 autocast, the bf16 matmul ceiling, and plain `generate` both
in fp32 and under bf16 autocast. Without it (bf16 is emulated and slow there, so gta trains in float32):
everything in float32 and the float32 matmul ceiling. The JSON's `precision` says which; the keys that name a
precision (`rollout_plain_bf16`, `bf16_matmul_gflops`, ...) name the one measured.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from gta import rollout
from gta.data import label_set, load_splits
from gta.losses import grpo_loss
from gta.models import fp32_head, load_tokenizer, resolve
from gta.prompts import build_prompt
from paper import machine  # benchmarks/paper.py, beside this script

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_prompts(tokenizer, n: int, target_tokens: int, data_dir: Path) -> list[str]:
    splits = load_splits("emotion", str(data_dir))
    labels, test = label_set(splits["train"]), splits["test"]
    out, i = [], 0
    for _ in range(n):
        text = ""
        while True:  # grow the text until the prompt reaches the target length
            candidate = (text + " " + test[i % len(test)].text).strip()
            i += 1
            if len(tokenizer(build_prompt(tokenizer, candidate, labels, "gta"))["input_ids"]) > target_tokens:
                break
            text = candidate
        out.append(build_prompt(tokenizer, text, labels, "gta"))
    return out


@contextlib.contextmanager
def autocast_head(model):
    """The model's LM head as plain autocast runs it (bf16 under bf16 autocast) for the duration: plain `generate`,
    like gta's rollouts, never has the trainer's fp32 head (models.fp32_head)."""
    head = model.get_output_embeddings()
    kind = type(head)
    head.__class__ = torch.nn.Linear
    try:
        yield
    finally:
        head.__class__ = kind


def variable_length(model, sampler, tok, B: int, G: int, max_new: int, repeats: int, data_dir: Path,
                    bf16: bool) -> dict:
    """Rollouts and update passes whose completions stop at the end-of-turn token (lengths vary)."""
    splits = load_splits("emotion", str(data_dir))
    labels = label_set(splits["train"])
    batch = rollout.encode_prompts(tok, [build_prompt(tok, e.text, labels, "gta") for e in splits["train"][:B]], "cpu")
    P = batch.input_ids.shape[1]
    stop = sorted({tok.eos_token_id, tok.pad_token_id})

    def ours(compact):  # as the trainer samples: with the sampled tokens' log-probs
        return lambda: rollout.generate(sampler, batch, G, max_new, stop, tok.pad_token_id, 1.0,
                                        torch.Generator().manual_seed(0), compact=compact, logprobs=True)[:2]

    def plain():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), autocast_head(model):
            out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new,
                                 num_return_sequences=G, pad_token_id=tok.pad_token_id, eos_token_id=stop)
        new = out[:, P:]
        ended = torch.isin(new, torch.tensor(stop)).long().cumsum(1)  # valid: up to and including the stop
        return new, ((ended == 0) | ((ended == 1) & torch.isin(new, torch.tensor(stop)))).long()

    ids, cmask = ours(True)()
    same, _ = ours(False)()
    assert torch.equal(ids, same), "compaction changed the samples"
    params = list(model.parameters())
    adv = torch.randn(B * G, generator=torch.Generator().manual_seed(0))

    def loss_of(logp):
        return grpo_loss(logp, logp.detach(), None, adv, cmask.float(), cmask.sum(1).float(), 0.2, 0.0, B * G)[0]

    def update(rows_per_chunk):
        def run():
            logp, = rollout.shared_prefix_logprobs(model, batch, [(ids, cmask, G)], bf16, rows_per_chunk)
            torch.autograd.grad(loss_of(logp), params)
        return run

    def plain_update():
        plain_update_pass(model, batch, ids, cmask, G, loss_of, params, bf16)

    prec = "bf16" if bf16 else "fp32"
    plain_key, vs_key = f"rollout_plain_{prec}", f"rollout_vs_plain_{prec}"
    variants = {"rollout_compact": ours(True), "rollout_all_rows": ours(False), plain_key: plain,
                "update_chunks_of_8": update(8), "update_one_chunk": update(B * G), "update_plain": plain_update}
    times, plain_tokens = {k: [] for k in variants}, []
    for _ in range(repeats):
        for k, fn in variants.items():
            t, out = timed(fn)
            times[k].append(t)
            if k == plain_key:
                plain_tokens.append(int(out[1].sum()))
    med = {k: statistics.median(v) for k, v in times.items()}
    lengths = cmask.sum(1)
    tokens = int(lengths.sum())
    res = {"shape": {"B": B, "G": G, "prompt_tokens": P, "max_new_tokens": max_new},
           "completion_lengths": {"mean": float(lengths.float().mean()), "max": int(lengths.max()),
                                  "min": int(lengths.min())},
           "seconds": med,
           "rollout_tokens_per_s": {"rollout_compact": tokens / med["rollout_compact"],
                                    "rollout_all_rows": tokens / med["rollout_all_rows"],
                                    plain_key: statistics.median(plain_tokens) / med[plain_key]},
           "compaction_speedup": med["rollout_all_rows"] / med["rollout_compact"],
           "chunking_speedup": med["update_one_chunk"] / med["update_chunks_of_8"],
           "update_vs_plain": med["update_plain"] / med["update_chunks_of_8"]}
    res[vs_key] = res["rollout_tokens_per_s"]["rollout_compact"] / res["rollout_tokens_per_s"][plain_key]
    print(f"variable length (stop at end of turn, <= {max_new} new tokens): our completions mean "
          f"{res['completion_lengths']['mean']:.1f}, max {res['completion_lengths']['max']} tokens")
    for k in variants:
        print(f"{k:<28} {med[k]:8.2f} s")
    print(f"rollout: stopped rows leave / keep all rows = {res['compaction_speedup']:.2f}x faster; valid tokens/s "
          f"ours / plain generate {prec} = {res[vs_key]:.2f}x")
    print(f"update:  chunks of 8 / one chunk = {res['chunking_speedup']:.2f}x faster; / plain pass = "
          f"{res['update_vs_plain']:.2f}x")
    return res


def plain_update_pass(model, batch, ids, cmask, G: int, loss_of, params, bf16: bool = True) -> None:
    """The plain update: forward+backward over the G repeated prompt+completion sequences (bf16: autocast)."""
    P = batch.input_ids.shape[1]
    full = torch.cat([batch.input_ids.repeat_interleave(G, 0), ids], 1)
    attn = torch.cat([batch.attention_mask.repeat_interleave(G, 0), cmask], 1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=full, attention_mask=attn,
                       position_ids=(attn.cumsum(1) - 1).clamp(min=0)).logits[:, P - 1:-1]
        logp = rollout.token_logprobs(logits, ids) * cmask
    torch.autograd.grad(loss_of(logp), params)


def vllm_rollout(model, path: str, batch, G: int, L: int, bf16: bool, wanted: bool | None):
    """vLLM's rollout of the same prompts as the trainer asks for it (G seeded samples per prompt with their log-probs,
    the model's weights pushed into a colocated engine), held to exactly L tokens like the other variants; None
    where vLLM is not importable and not asked for."""
    import importlib.util

    if wanted is False or (wanted is None and importlib.util.find_spec("vllm") is None):
        return None
    from gta.vllm_engine import VLLMEngine

    engine = VLLMEngine(path, bf16=bf16, seed=0, max_model_len=batch.input_ids.shape[1] + L + 8,
                        max_rows=batch.input_ids.shape[0] * G)
    engine.push(model)
    params = engine._SamplingParams(n=G, temperature=1.0, max_tokens=L, min_tokens=L, ignore_eos=True, seed=0,
                                    logprobs=0, detokenize=False)
    prompts = [{"prompt_token_ids": p} for p in batch.token_lists()]

    def run():
        engine.llm.reset_prefix_cache()  # as after each weight push in training: the prompts are prefilled again
        return engine.llm.generate(prompts, params, use_tqdm=False)

    run.version = __import__("vllm").__version__
    run()  # a first call warms the engine up (its first batch builds what later batches reuse)
    return run


def matmul_ceiling(repeats: int = 3, dtype: torch.dtype = torch.bfloat16) -> float:
    """This machine's matmul ceiling in GFLOP/s for `dtype`: 2048 x 2048 products, median of `repeats` runs of 10."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    return statistics.median(2 * 2048 ** 3 * 10 / timed(lambda: [a @ b for _ in range(10)])[0]
                             for _ in range(repeats)) / 1e9


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(variants: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each variant run once to warm up, then `repeats` rounds of every variant in turn (a drift in the machine's
    speed touches them alike), each round printed. Returns every variant's seconds and their medians."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn)[0])
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    return times, {k: statistics.median(v) for k, v in times.items()}


def whole_steps(n: int, data_dir: str) -> dict:
    """benchmarks/steps.py in a process of its own, run before this one loads a model: its three-model process
    needs most of the machine's memory (13.7 GiB in float32, steps-epyc-zen3-fp32-*.json), and memory this
    process has used stays with it."""
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, str(Path(__file__).with_name("steps.py")), "--steps", str(n),
                        "--data-dir", data_dir, "--json", f.name], check=True)
        return json.loads(Path(f.name).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4, help="B")
    ap.add_argument("--generations", type=int, default=8, help="G")
    ap.add_argument("--prompt-tokens", type=int, default=120)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--json", default=None, help="also write every figure here")
    ap.add_argument("--variable-new-tokens", type=int, default=96,
                    help="max new tokens of the variable-length part (stop at end of turn); 0 skips it")
    ap.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=None,
                    help="also time vLLM's rollouts (`rollout_vllm`; default: when vLLM is importable): run it in the "
                         "vLLM environment (scripts/vllm_cpu_tests.sh builds .venv-vllm/)")
    ap.add_argument("--steps", type=int, default=3,
                    help="also time whole steps (benchmarks/steps.py: ours vs TRL, GTA vs GRPO, G=16 memory) over "
                         "this many steps each; 0 skips them")
    args = ap.parse_args()
    cpu = machine()  # CPU model, threads, versions: the ratios differ between CPU models
    bf16 = cpu["bf16_native"]  # the precision gta trains in on this CPU
    prec = "bf16" if bf16 else "fp32"
    steps = whole_steps(args.steps, args.data_dir) if args.steps else None
    torch.manual_seed(0)
    path = resolve("smollm2-135m")
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    B, G, L = args.prompts, args.generations, args.new_tokens
    batch = rollout.encode_prompts(tok, make_prompts(tok, B, args.prompt_tokens, Path(args.data_dir)), "cpu")
    P = batch.input_ids.shape[1]
    print(f"model SmolLM2-135M, {torch.get_num_threads()} threads, B={B} prompts of {P} tokens, G={G}, "
          f"{L} new tokens, {args.repeats} repeats (medians), {prec}"
          + ("" if bf16 else " (this CPU has no native bf16: float32, as gta trains here)"))

    # -- rollouts: fixed length (no early stop) so both variants generate exactly B*G*L tokens
    # as the trainer does: with bf16 a bf16 copy of the weights, synced per rollout; in fp32 the model itself
    sampler = copy.deepcopy(model).to(torch.bfloat16) if bf16 else model

    def ours_rollout(logprobs=True):  # as the trainer samples: with the sampled tokens' log-probs (rollout/logprob_gap)
        if sampler is not model:
            with torch.no_grad():
                for s, p in zip(sampler.parameters(), model.parameters()):
                    s.copy_(p)
        return rollout.generate(sampler, batch, G, L, stop_ids=[-1], pad_id=tok.pad_token_id, temperature=1.0,
                                generator=torch.Generator().manual_seed(0), logprobs=logprobs)[:2]

    def plain_rollout(dtype):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"), autocast_head(model):
                return model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=True,
                                      temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=L, min_new_tokens=L,
                                      num_return_sequences=G, pad_token_id=tok.pad_token_id)
        return run

    # -- updates: GRPO loss forward+backward over the B*G sampled sequences (bf16: under autocast), with the LM head
    # in fp32 as the trainer's policy has it (models.fp32_head); `update_ours_bf16_head` is our pass with the bf16
    # head of autocast, as before it, to measure what the fp32 head costs
    ids, cmask = ours_rollout()
    vllm = vllm_rollout(model, path, batch, G, L, bf16, args.vllm)  # its weights pushed from the model, as in training
    fp32_head(model)
    adv = torch.randn(B * G)
    params = [p for p in model.parameters()]

    def loss_of(logp):
        return grpo_loss(logp, logp.detach(), None, adv, cmask.float(), cmask.sum(1).float(), 0.2, 0.0, B * G)[0]

    def ours_update():
        logp, = rollout.shared_prefix_logprobs(model, batch, [(ids, cmask, G)], bf16=bf16)
        torch.autograd.grad(loss_of(logp), params)

    def ours_update_bf16_head():
        with autocast_head(model):
            ours_update()

    def plain_update():
        plain_update_pass(model, batch, ids, cmask, G, loss_of, params, bf16)

    variants = {"rollout_ours": ours_rollout, "rollout_ours_no_logprobs": lambda: ours_rollout(False),
                **({"rollout_vllm": vllm} if vllm else {}),
                "rollout_plain_fp32": plain_rollout("fp32"),
                **({"rollout_plain_bf16": plain_rollout("bf16")} if bf16 else {}),
                "update_ours": ours_update, "update_plain": plain_update,
                **({"update_ours_bf16_head": ours_update_bf16_head} if bf16 else {})}
    rollouts = [k for k in variants if k.startswith("rollout_")]
    times, readings = {k: [] for k in variants}, []
    for _ in range(args.repeats):  # interleaved
        # the ceiling too, once per repeat: on these shared VMs it read 477, 639 and 765 GFLOP/s (bf16) within
        # 20 minutes (docs/speed-log.md), so one reading, apart from the passes it is compared with, moves the fraction
        readings.append(matmul_ceiling(1, torch.bfloat16 if bf16 else torch.float32))
        for k, fn in variants.items():
            times[k].append(timed(fn)[0])
    ceiling = statistics.median(readings)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = B * G * L
    n_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    # useful FLOPs of our update: forward 2*N per token on prompt + completion tokens (LM head only on the
    # completion tokens), backward 2x forward
    head_n = model.get_output_embeddings().weight.numel()
    body = n_params - head_n if not model.config.tie_word_embeddings else n_params
    useful = 3 * (2 * body * (B * P + B * G * L) + 2 * head_n * B * G * L)
    res = {
        "machine": cpu,
        "shape": {"B": B, "G": G, "prompt_tokens": P, "new_tokens": L},
        "precision": prec, "seconds": med, f"{prec}_matmul_gflops": ceiling, "matmul_gflops_readings": readings,
        "rollout_tokens_per_s": {k: tokens / med[k] for k in rollouts},
        "update_tokens_per_s": {k: tokens / med[k] for k in ("update_ours", "update_plain")},
        "rollout_vs_plain": med["rollout_plain_fp32"] / med["rollout_ours"],
        "update_vs_plain": med["update_plain"] / med["update_ours"],
        "useful_gflops": useful / med["update_ours"] / 1e9,
    }
    res["rollout_logprobs_cost"] = med["rollout_ours"] / med["rollout_ours_no_logprobs"]  # time with / without
    if vllm:
        res["vllm_vs_ours"] = med["rollout_ours"] / med["rollout_vllm"]  # > 1: vLLM's rollout is faster
        res["vllm_vs_plain"] = med["rollout_plain_fp32"] / med["rollout_vllm"]
        res["vllm"] = vllm.version
    if bf16:
        res["rollout_vs_plain_bf16"] = med["rollout_plain_bf16"] / med["rollout_ours"]
        res["fp32_head_cost"] = med["update_ours"] / med["update_ours_bf16_head"]  # time with / without it
    res["flops_fraction"] = res["useful_gflops"] / ceiling
    print(f"{prec} matmul ceiling          {ceiling:8.1f} GFLOP/s (median of {', '.join(f'{r:.0f}' for r in readings)})")
    for k in rollouts:
        print(f"{k:<28} {med[k]:8.2f} s  {tokens / med[k]:8.1f} tokens/s")
    for k in ("update_ours", "update_plain") + (("update_ours_bf16_head",) if bf16 else ()):
        print(f"{k:<28} {med[k]:8.2f} s  {tokens / med[k]:8.1f} completion tokens/s")
    print(f"rollout: ours / plain generate fp32 = {res['rollout_vs_plain']:.2f}x"
          + (f", bf16 = {res['rollout_vs_plain_bf16']:.2f}x" if bf16 else "")
          + f"; returning the sampled tokens' log-probs costs {res['rollout_logprobs_cost']:.2f}x the time")
    if vllm:
        print(f"rollout: vLLM {vllm.version} / ours = {res['vllm_vs_ours']:.2f}x, vLLM / plain generate fp32 = "
              f"{res['vllm_vs_plain']:.2f}x (> 1: vLLM faster)")
    print(f"update:  ours / plain pass = {res['update_vs_plain']:.2f}x; useful {res['useful_gflops']:.1f} GFLOP/s = "
          f"{res['flops_fraction']:.0%} of the {prec} ceiling (both with the fp32 LM head of training)")
    if bf16:
        print(f"the fp32 LM head costs {res['fp32_head_cost']:.2f}x the time of our update pass with autocast's "
              "bf16 head")
    if args.variable_new_tokens:
        res["variable_length"] = variable_length(model, sampler, tok, B, G, args.variable_new_tokens, args.repeats,
                                                 Path(args.data_dir), bf16)
    if steps:
        res["steps"] = steps
        for key in ("step_vs_trl", "gta_vs_grpo_step", "gta_vs_grpo_step_own_prompts", "gta_vs_grpo_step_stop_token",
                    "gta_guess_share"):
            res[key] = steps[key]
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
