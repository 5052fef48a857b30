"""GPU acceptance check: does gta's training path run on a CUDA GPU, agree with the CPU, and fit a 3B model?

    PYTHONPATH=src python scripts/gpu_check.py [--json OUT]      # one CUDA GPU: sized for <= 8 min on an H100 80 GB
    PYTHONPATH=src python scripts/gpu_check.py --device cpu --tiny   # the same checks on tiny models, on a CPU

Needs only torch, transformers, peft and accelerate (what a CUDA machine has: no download, no gguf, no data files,
no install of gta). Everything is built here: a word-level tokenizer of the model's vocabulary size, random-weight
models from configs (a tiny Llama, and Qwen2.5-1.5B- and -3B-shaped Qwen2 models), and a 4-label dataset of
random words. Rewards are scripted (they vary within each group, so the RL half trains: random weights never
write the format). It prints one table:

  A. the pinned tiny-model run of each method (3 steps, float32, TF32 off) on the device against the CPU: the
     largest relative difference of the per-step losses, rewards, KL and gradient norms (tolerance 1e-3, as
     tests/test_pinned_runs.py allows between kinds of CPU); sampling draws its random numbers on the CPU, so both
     runs sample the same completions up to float rounding;
  B. a GTA step of the big models in bf16 (G=16, 4 prompts of ~512 tokens, 128 new tokens), full fine-tuning of
     the 1.5B-shaped model and LoRA (r=16) on the 3B-shaped one, each with and without --gradient-checkpointing:
     step time, rollout tokens/s (ours, and `model.generate` on the same prompts once), update tokens/s, peak
     `torch.cuda.max_memory_allocated`; a configuration that does not fit says OOM;
  C. the largest G x completion length that fits one LoRA + checkpointing step of the 3B-shaped model;
  D. where vLLM is importable: B's LoRA + checkpointing step with --rollout-engine vllm (rollout tokens/s beside
     ours in B, and the sampler/trainer log-prob gap).

Parts are skipped, and say so, once --budget-s is spent.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gta.config import TrainConfig  # noqa: E402
from gta.trainer import Trainer  # noqa: E402

LABELS = ["sport", "business", "politics", "science"]
TAGS = ["<guess>", "</guess>", "<think>", "</think>", "<answer>", "</answer>"]
SPECIAL = ["<unk>", "<|im_start|>", "<|im_end|>"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
# (class, config) of the models; the big ones have Qwen2.5's shapes, the --tiny ones stand in for them on a CPU
MODELS = {
    "pinned": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=4096)),
    "1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                           num_key_value_heads=2, vocab_size=151936)),
    "3b": ("qwen2", dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, vocab_size=151936)),
    "tiny-1.5b": ("qwen2", dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=4096)),
    "tiny-3b": ("qwen2", dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                              num_key_value_heads=2, vocab_size=4096)),  # heads of 32: vLLM's CPU attention needs it
}
PINNED_KEYS = ["loss/sft", "loss/rl", "reward/total", "kl", "clip_fraction", "grad_norm", "grad_norm/sft",
               "grad_norm/rl", "completion_length"]


def varied_reward(text, gold, template, **kw):
    """Rewards that differ within a group (a random model never writes the format): an RL signal."""
    r = float(len(text) % 3)
    return {"total": r, "format": 0.0, "accuracy": r / 2, "guess": 0.0}


def make_tokenizer(vocab_size: int, folder: Path):
    """A word-level tokenizer with exactly vocab_size entries: the special tokens, the format's tags, the labels,
    the words of the prompts and data, then fillers (`w123`), so any sampled id decodes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIAL + TAGS + LABELS + [f"w{i}" for i in range(vocab_size)]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words)) if i < vocab_size}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("<[^<>]*>", "isolated"),
                                                 pre_tokenizers.WhitespaceSplit()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHAT
    fast.add_tokens(TAGS)
    fast.save_pretrained(folder)
    return fast


def make_model(name: str, folder: Path, device: torch.device) -> Path:
    """Random weights of MODELS[name] with its tokenizer, saved in bf16 (the big ones: float32 in the tiny one)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    kind, shape = MODELS[name]
    tokenizer = make_tokenizer(shape["vocab_size"], folder)
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if kind == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    config = config_cls(**shape, tie_word_embeddings=True, max_position_embeddings=4096,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    dtype = torch.float32 if name == "pinned" else torch.bfloat16
    with torch.device(device):
        model = model_cls(config).to(dtype)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    return folder


def make_data(folder: Path, words_per_text: int, vocab_words: int, n: int = 64) -> Path:
    """A 4-label dataset of random filler words: {train,validation,test}.jsonl."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        with (folder / f"{split}.jsonl").open("w") as f:
            for i in range(n):
                text = " ".join(f"w{rng.randrange(vocab_words)}" for _ in range(words_per_text))
                f.write(json.dumps({"text": text, "label": LABELS[i % 4]}) + "\n")
    return folder


def config(model: Path, data: Path, out: Path, device: str, **kw) -> TrainConfig:
    base = dict(model=str(model), dataset="check", data_dir=str(data), output=str(out), device=device,
                save_every=10_000, log_completions=0, eval_every=0)
    return TrainConfig(**{**base, **kw})


def part_a(device: str, work: Path) -> list[dict]:
    """The pinned tiny-model runs on the device against the CPU."""
    model = make_model("pinned", work / "pinned", torch.device("cpu"))
    data = make_data(work / "pinned-data", 12, 200)
    rows = []
    for method in ("sft", "grpo", "gta", "gta-rl"):
        runs = {}
        for run, dev in (("cpu", "cpu"), ("device", device)):
            kw = dict(method=method, train_limit=8, max_steps=3, batch_size=2, micro_batch_size=1, num_generations=3,
                      num_iterations=2, max_completion_length=10, max_prompt_length=160, learning_rate=1e-3,
                      bf16=False, ref_sync_steps=2)
            out = work / f"pinned-{method}-{run}"
            Trainer(config(model, data, out, dev, **kw), progress=False, reward_fn=varied_reward).train()
            runs[run] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        diff = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-3) for a, b in zip(runs["cpu"], runs["device"])
                   for k in PINNED_KEYS if k in a)
        rows.append({"method": method, "max_rel_diff": diff, "ok": diff <= 1e-3})
    return rows


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        if device.type == "cuda":
            into["peak_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def step_figures(trainer: Trainer, steps: int) -> dict:
    """Run `steps` steps (the first warms up) and return the medians of the later ones."""
    rows = []
    for _ in range(steps):
        trainer.train(until=trainer.step + 1)
        rows.append(json.loads((Path(trainer.cfg.output) / "metrics.jsonl").read_text().splitlines()[-1]))
    later = rows[1:] or rows
    med = lambda key: sorted(r[key] for r in later)[len(later) // 2]  # noqa: E731
    tokens = med("completion_length") * trainer.cfg.batch_size * trainer.cfg.num_generations
    return {"step_s": med("step_time_s"), "rollout_tok_s": tokens / med("rollout_s"),
            "update_tok_s": tokens / (med("step_time_s") - med("rollout_s"))}


def generate_tok_s(trainer: Trainer) -> float:
    """`model.generate` on the same prompts, G samples each, the same lengths: tokens/s."""
    cfg = trainer.cfg
    batch = trainer.encode(list(range(cfg.batch_size)))
    model = trainer.sync_sampler()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    with torch.no_grad(), torch.autocast(trainer.device.type, torch.bfloat16, enabled=trainer.shares_sampler_bf16):
        sync()
        t0 = time.perf_counter()
        out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=True,
                             num_return_sequences=cfg.num_generations, max_new_tokens=cfg.max_completion_length,
                             min_new_tokens=cfg.max_completion_length, pad_token_id=trainer.tokenizer.pad_token_id)
        sync()
    return (out.shape[0] * (out.shape[1] - batch.input_ids.shape[1])) / (time.perf_counter() - t0)


def part_b(device: str, work: Path, tiny: bool, deadline: float) -> tuple[list[dict], Trainer | None]:
    dev = torch.device(device)
    G, L, words = (4, 16, 40) if tiny else (16, 128, 480)
    rows, keep = [], None
    for label, name, lora in (("full", "1.5b", 0), ("lora", "3b", 16)):
        name = f"tiny-{name}" if tiny else name
        model = make_model(name, work / name, dev)
        data = make_data(work / f"{name}-data", words, 2000)
        for ckpt in (False, True):
            row = {"model": name, "training": label, "checkpointing": ckpt}
            rows.append(row)
            if time.time() > deadline:
                row["result"] = "skipped (budget)"
                continue
            out = work / f"{name}-{label}-{ckpt}"
            try:
                with peak_memory(dev, row):
                    t = Trainer(config(model, data, out, device, method="gta", lora_r=lora, bf16=True,
                                       gradient_checkpointing=ckpt, batch_size=4, micro_batch_size=2,
                                       num_generations=G, num_iterations=1, max_completion_length=L,
                                       max_prompt_length=4 * words, max_steps=1000, learning_rate=1e-6),
                                progress=False, reward_fn=varied_reward)
                    row.update(step_figures(t, 3), result="ok")
                if lora and ckpt:
                    row["generate_tok_s"] = generate_tok_s(t)
                    keep = t
                else:
                    del t
            except torch.OutOfMemoryError:
                row["result"] = "OOM"
            free(dev)
    return rows, keep


def part_c(trainer: Trainer | None, tiny: bool, deadline: float) -> list[dict]:
    """The largest G x completion length of one LoRA + checkpointing step that fits (in increasing size)."""
    if trainer is None:
        return [{"result": "skipped (part B's LoRA run did not finish)"}]
    sizes = [(8, 16), (8, 32), (16, 32)] if tiny else [(16, 256), (16, 512), (16, 1024), (32, 1024), (64, 1024)]
    rows = []
    for G, L in sizes:
        row = {"G": G, "max_completion_length": L}
        rows.append(row)
        if time.time() > deadline:
            row["result"] = "skipped (budget)"
            continue
        trainer.cfg.num_generations, trainer.cfg.max_completion_length = G, L
        try:
            with peak_memory(trainer.device, row):
                t0 = time.perf_counter()
                trainer.train(until=trainer.step + 1)
                row.update(result="fits", step_s=time.perf_counter() - t0)
        except torch.OutOfMemoryError:
            row["result"] = "OOM"
            free(trainer.device)
            break
    return rows


def part_d(device: str, work: Path, tiny: bool, deadline: float) -> list[dict]:
    """Part B's LoRA + checkpointing step with its rollouts on a colocated vLLM engine."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return [{"result": "skipped (vLLM is not installed: pip install 'gta-rl[vllm]')"}]
    dev = torch.device(device)
    name = "tiny-3b" if tiny else "3b"
    G, L, words = (4, 16, 40) if tiny else (16, 128, 480)
    row = {"model": name, "training": "lora", "checkpointing": True, "engine": "vllm"}
    if time.time() > deadline:
        return [{**row, "result": "skipped (budget)"}]
    data = work / f"{name}-data"
    try:
        with peak_memory(dev, row):
            t = Trainer(config(work / name, data, work / f"{name}-vllm", device, method="gta", lora_r=16, bf16=True,
                               gradient_checkpointing=True, batch_size=4, micro_batch_size=2, num_generations=G,
                               num_iterations=1, max_completion_length=L, max_prompt_length=4 * words, max_steps=1000,
                               learning_rate=1e-6, rollout_engine="vllm"), progress=False, reward_fn=varied_reward)
            row.update(step_figures(t, 3), result="ok")
            last = json.loads((Path(t.cfg.output) / "metrics.jsonl").read_text().splitlines()[-1])
            row["logprob_gap"] = last["rollout/logprob_gap"]
        del t
    except torch.OutOfMemoryError:
        row["result"] = "OOM"
    free(dev)
    return [row]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny stand-ins for the big models (a CPU check of the script)")
    ap.add_argument("--budget-s", type=float, default=420, help="skip what is left after this many seconds")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; use --device cpu --tiny to check the script on a CPU")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # part A compares float32
    start = time.time()
    deadline = start + args.budget_s
    res = {"device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "tiny": args.tiny}
    with tempfile.TemporaryDirectory(prefix="gta-gpu-check-") as tmp:
        work = Path(tmp)
        res["pinned"] = part_a(args.device, work)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        res["steps"], keep = part_b(args.device, work, args.tiny, deadline)
        res["fit"] = part_c(keep, args.tiny, deadline)
        del keep
        free(torch.device(args.device))
        res["vllm"] = part_d(args.device, work, args.tiny, deadline)
    res["wall_s"] = time.time() - start
    print(table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


def table(res: dict) -> str:
    f = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else "-"  # noqa: E731
    lines = [f"gta GPU check on {res['device']} (torch {res['torch']}{', tiny models' if res['tiny'] else ''}), "
             f"{res['wall_s']:.0f} s", "", "A. pinned tiny-model runs, device vs CPU (float32, TF32 off)",
             "| method | max relative difference | within 1e-3 |", "|---|---:|---|"]
    lines += [f"| {r['method']} | {r['max_rel_diff']:.2e} | {'yes' if r['ok'] else 'NO'} |" for r in res["pinned"]]
    lines += ["", "B. one GTA step, bf16, 4 prompts x G, median of steps 2-3",
              "| model | training | checkpointing | result | step s | rollout tok/s | generate tok/s | update tok/s "
              "| peak GB |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['training']} | {'on' if r['checkpointing'] else 'off'} | {r['result']} | "
              f"{f(r.get('step_s'), '.2f')} | {f(r.get('rollout_tok_s'), '.0f')} | {f(r.get('generate_tok_s'), '.0f')} "
              f"| {f(r.get('update_tok_s'), '.0f')} | {f(r.get('peak_gb'), '.1f')} |" for r in res["steps"]]
    lines += ["", "C. largest G x completion length, LoRA + checkpointing, 4 prompts",
              "| G | max completion length | result | step s | peak GB |", "|---:|---:|---|---:|---:|"]
    lines += [f"| {r.get('G', '-')} | {r.get('max_completion_length', '-')} | {r['result']} | {f(r.get('step_s'), '.1f')} "
              f"| {f(r.get('peak_gb'), '.1f')} |" for r in res["fit"]]
    lines += ["", "D. B's LoRA + checkpointing step with rollouts on vLLM",
              "| model | result | step s | rollout tok/s | update tok/s | logprob gap | peak GB |",
              "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.get('model', '-')} | {r['result']} | {f(r.get('step_s'), '.2f')} | {f(r.get('rollout_tok_s'), '.0f')} "
              f"| {f(r.get('update_tok_s'), '.0f')} | {f(r.get('logprob_gap'), '.4f')} | {f(r.get('peak_gb'), '.1f')} |"
              for r in res["vllm"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
