"""Evaluation: greedy decoding, accuracy and weighted F1 of the answer (and of the guess for GTA), read as the
accuracy reward reads it (the last `<answer>` span), the exact-format rate beside it, per-class table and
confusion matrix."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data, prompts, rollout
from .config import ConfigError, write_json_atomic

INVALID = "<invalid>"


def canonical_label(pred: str | None, labels: list[str]) -> str:
    by_norm = {data.normalize_label(label): label for label in labels}
    return by_norm.get(data.normalize_label(pred), INVALID) if pred is not None else INVALID


@torch.no_grad()
def generate_outputs(model, tokenizer, prompt_texts: list[str], max_new_tokens: int, bf16: bool,
                     batch_size: int = 8, progress: bool = True, desc: str = "generating",
                     vllm=None) -> tuple[list[str], list[bool]]:
    """Greedy completions (without the primed tag), batched by prompt length to limit padding, and whether each
    was cut at `max_new_tokens` before a stop token (such an output is not in format). `vllm`: a
    `vllm_engine.VLLMEngine` decodes them instead (all at once), read the same way."""
    from .models import stop_token_ids

    stop = stop_token_ids(tokenizer, model)
    if vllm is not None:
        rows = vllm.greedy([tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompt_texts],
                           max_new_tokens, stop)
        return ([tokenizer.decode(r, skip_special_tokens=True) for r in rows],
                [rollout.cut_at_limit(r, max_new_tokens, stop) for r in rows])
    device = next(model.parameters()).device
    model.eval()
    order = sorted(range(len(prompt_texts)), key=lambda i: len(prompt_texts[i]))
    out: list[str] = [""] * len(prompt_texts)
    cut = [False] * len(prompt_texts)
    for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, dynamic_ncols=True):
        chunk = order[s:s + batch_size]
        batch = rollout.encode_prompts(tokenizer, [prompt_texts[i] for i in chunk], device)
        ids, mask = rollout.generate(model, batch, 1, max_new_tokens, stop, tokenizer.pad_token_id,
                                     temperature=0.0, bf16=bf16)
        for i, row, m in zip(chunk, ids.tolist(), mask):
            valid = row[: int(m.sum())]
            out[i] = tokenizer.decode(valid, skip_special_tokens=True)
            cut[i] = rollout.cut_at_limit(valid, max_new_tokens, stop)
    return out, cut


def generate_texts(*args, **kwargs) -> list[str]:
    """The greedy completions of `generate_outputs`, without the truncation flags."""
    return generate_outputs(*args, **kwargs)[0]


FAST_CLOSING = {"gta": "</guess>", "direct": "</answer>"}  # templates whose first span is a label


@torch.no_grad()
def score_labels(model, tokenizer, prompt_texts: list[str], labels: list[str], closing: str, bf16: bool,
                 batch_size: int = 8, progress: bool = False) -> list[str]:
    """Fast inference: the label maximising log P(label + closing tag | prompt), i.e. decoding constrained
    to the label set and stopped after the first span. All labels of a prompt are scored on one prefill of
    that prompt, packed into one row after it (rollout.packed_suffix_logprobs)."""
    device = next(model.parameters()).device
    model.eval()
    label_ids = [prompts.label_tokens(tokenizer, label, closing) for label in labels]
    out: list[str] = []
    for s in tqdm(range(0, len(prompt_texts), batch_size), desc="fast", disable=not progress, dynamic_ncols=True):
        chunk = prompt_texts[s:s + batch_size]
        logp = rollout.packed_suffix_logprobs(model, rollout.encode_prompts(tokenizer, chunk, device), label_ids, bf16)
        out += [labels[int(i)] for i in logp.argmax(dim=1)]
    return out


ANSWER_TAG = "<answer>"


def check_reasons_first(template: str) -> None:
    """Constrained answers need a template whose answer follows reasoning: think (grpo runs) or gta (gta, gta-rl)."""
    if template not in ("think", "gta"):
        raise ConfigError(f"constraining the answer needs a run or prompt that reasons before answering (gta, "
                          f"gta-rl, grpo: the think or gta template); this one uses the {template!r} template")


def constrained_answers(model, tokenizer, prompt_texts: list[str], outputs: list[str], labels: list[str],
                        template: str, bf16: bool, batch_size: int = 8, progress: bool = False) -> list[str | None]:
    """Answer decoding constrained to the label set, for templates that reason first (think, gta): each
    output is kept as the model wrote it up to its `<answer>` tag, and the answer is the label maximising
    log P(label + `</answer>` | prompt, output up to the tag). None where the output does not reach the tag
    in format (guess and think spans closed, in order, the guess a label). The kept text is tokenized again, which
    can split it differently from the decoded tokens."""
    check_reasons_first(template)
    keep, texts = [], []
    for i, (prompt, out) in enumerate(zip(prompt_texts, outputs)):
        cut = out.find(ANSWER_TAG)
        head = out[:cut + len(ANSWER_TAG)]
        # in format up to the tag: the rest completed by a label (the guess, if any, must be a label too)
        if cut >= 0 and prompts.parse(prompts.prime(template) + head + labels[0] + "</answer>", template, labels).exact:
            keep.append(i)
            texts.append(prompt + head)
    picked = score_labels(model, tokenizer, texts, labels, "</answer>", bf16, batch_size, progress) if texts else []
    result: list[str | None] = [None] * len(outputs)
    for i, label in zip(keep, picked):
        result[i] = label
    return result


def evaluate_examples(model, tokenizer, examples: list[data.Example], labels: list[str], template: str,
                      max_new_tokens: int, max_prompt_length: int, bf16: bool, batch_size: int = 8,
                      progress: bool = True, constrain_answer: bool = False, instructions: str | None = None,
                      system: str | None = None, vllm=None, fast: bool = True) -> tuple[dict, list[dict]]:
    """Greedy outputs scored as written; for gta also `fast` (the guess constrained to the labels, no
    reasoning: a second prefill of every prompt, which fast=False skips); with
    constrain_answer (think, gta) also `constrained`: the answer constrained to the labels after the reasoning as
    written (its examples/s count the generation too). `vllm`: the greedy outputs come from that engine (the label
    scoring of `fast` and `constrained` stays on `model`)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    if constrain_answer:
        check_reasons_first(template)  # before generating, not after
    texts, truncated = prompts.make_prompts(tokenizer, [ex.text for ex in examples], labels, template,
                                            max_prompt_length, instructions, system)
    t0 = time.perf_counter()
    outputs, cut = generate_outputs(model, tokenizer, texts, max_new_tokens, bf16, batch_size, progress, "evaluating",
                                    vllm)
    seconds = time.perf_counter() - t0
    records, gold, answer, guess = [], [], [], []
    marks = prompts.placeholders(template)
    for ex, out, truncated in zip(examples, outputs, cut):
        # Scored as the accuracy reward scores it: by the last <answer> span (INVALID without one, or if it names
        # no label), whatever the rest of the output; the exact-format rate (the format reward's rule) beside it.
        p = prompts.parse(prompts.prime(template) + out, template, labels)
        ans, g = canonical_label(p.answer, labels), canonical_label(ex.label, labels)  # the train set's spelling
        records.append({"text": ex.text, "gold": g, "guess": p.guess, "think": p.think, "answer": p.answer,
                        "exact_format": p.exact and not truncated, "truncated": truncated, "correct": ans == g,
                        "placeholder": sorted(k for k, w in marks.items() if prompts.label_matches(getattr(p, k), w)),
                        "output": out})
        gold.append(g)
        answer.append(ans)
        guess.append(canonical_label(p.guess, labels))
    exact = sum(r["exact_format"] for r in records) / max(1, len(records))
    metrics = {
        "n": len(examples),
        "accuracy": accuracy_score(gold, answer),
        "f1_weighted": f1_score(gold, answer, labels=labels, average="weighted", zero_division=0),
        "exact_format_rate": exact,
        "invalid_format_rate": 1 - exact if records else 0.0,
        "invalid_rate": answer.count(INVALID) / max(1, len(answer)),  # no <answer> span naming a label
        "truncated_rate": sum(cut) / max(1, len(cut)),  # cut at max_new_tokens before a stop token
        # outputs whose span is the format line's placeholder word (a copy of the prompt), per span
        "placeholder_rate": {k: sum(k in r["placeholder"] for r in records) / max(1, len(records)) for k in marks},
        "truncated_texts": truncated,
        "examples_per_s": len(examples) / seconds if seconds > 0 else None,
        "per_class": classification_report(gold, answer, labels=labels, output_dict=True, zero_division=0),
        "confusion_matrix": {"labels": labels + [INVALID],
                             "matrix": confusion_matrix(gold, answer, labels=labels + [INVALID]).tolist()},
    }
    if fast and template == "gta":  # fast inference: the guess constrained to the label set (direct outputs are short)
        t0 = time.perf_counter()
        guessed = score_labels(model, tokenizer, texts, labels, FAST_CLOSING[template], bf16, batch_size, progress)
        seconds = time.perf_counter() - t0
        for r, f in zip(records, guessed):
            r["fast"] = f
        metrics["fast"] = {"accuracy": accuracy_score(gold, guessed),
                           "f1_weighted": f1_score(gold, guessed, labels=labels, average="weighted", zero_division=0),
                           "examples_per_s": len(examples) / seconds if seconds > 0 else None}
    if constrain_answer:
        t0 = time.perf_counter()
        picked = constrained_answers(model, tokenizer, texts, outputs, labels, template, bf16, batch_size, progress)
        seconds += time.perf_counter() - t0
        for r, c in zip(records, picked):
            r["constrained"] = c
        pred = [INVALID if c is None else c for c in picked]
        metrics["constrained"] = {
            "accuracy": accuracy_score(gold, pred),
            "f1_weighted": f1_score(gold, pred, labels=labels, average="weighted", zero_division=0),
            "no_answer_tag_rate": sum(c is None for c in picked) / max(1, len(picked)),
            "examples_per_s": len(examples) / seconds if seconds > 0 else None}
    if template == "gta":
        metrics["guess_accuracy"] = accuracy_score(gold, guess)
        metrics["guess_f1_weighted"] = f1_score(gold, guess, labels=labels, average="weighted", zero_division=0)
    return metrics, records


def format_report(metrics: dict) -> str:
    template = prompts.TEMPLATES.get(metrics.get("template"))  # the spans of the full output, e.g. think, answer
    spans = ", ".join(re.findall(r"<(\w+)>", template[1])) if template else "as generated"
    exact = metrics.get("exact_format_rate", 1 - metrics["invalid_format_rate"])
    invalid = f"   no label answered {metrics['invalid_rate']:.1%}" if "invalid_rate" in metrics else ""
    lines = [f"accuracy {metrics['accuracy']:.4f}   weighted F1 {metrics['f1_weighted']:.4f}   "
             f"exact format {exact:.1%}{invalid}   n={metrics['n']}   "
             f"{metrics['examples_per_s']:.2f} examples/s (full output: {spans})"]
    if metrics.get("placeholder_rate") is not None:  # runs evaluated before these figures existed have none
        copied = "   ".join(f"{k} {v:.1%}" for k, v in metrics["placeholder_rate"].items())
        lines.append(f"placeholder copied from the format line: {copied}   cut at max new tokens "
                     f"{metrics.get('truncated_rate', 0):.1%}")
    if "fast" in metrics:
        f = metrics["fast"]
        lines.append(f"fast     {f['accuracy']:.4f}   weighted F1 {f['f1_weighted']:.4f}   "
                     f"{f['examples_per_s']:.2f} examples/s (first label span only, constrained to the label set)")
    if "constrained" in metrics:
        c = metrics["constrained"]
        lines.append(f"constrained answer {c['accuracy']:.4f}   weighted F1 {c['f1_weighted']:.4f}   "
                     f"no <answer> tag in format {c['no_answer_tag_rate']:.1%}   {c['examples_per_s']:.2f} examples/s "
                     f"(reasoning as generated, answer constrained to the label set)")
    if "guess_accuracy" in metrics:
        lines.append(f"guess accuracy {metrics['guess_accuracy']:.4f}   guess weighted F1 {metrics['guess_f1_weighted']:.4f}")
    lines.append(f"{'label':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for label, row in metrics["per_class"].items():
        if isinstance(row, dict) and label not in ("macro avg", "weighted avg", "micro avg"):
            lines.append(f"{label:<24}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1-score']:>10.3f}"
                         f"{int(row['support']):>10}")
    cm = metrics["confusion_matrix"]
    lines.append("confusion matrix (rows gold, columns predicted; last column = invalid):")
    for label, row in zip(cm["labels"], cm["matrix"]):
        if label != INVALID:
            lines.append(f"  {label:<22}" + " ".join(f"{v:>5}" for v in row))
    return "\n".join(lines)


def write_results(out_dir: Path, metrics: dict, records: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "metrics.json", metrics)
    tmp = out_dir / "predictions.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out_dir / "predictions.jsonl")


def training_metrics(model, tokenizer, examples: list[data.Example], labels: list[str], template: str,
                     max_new_tokens: int, max_prompt_length: int, bf16: bool = False,
                     gather=None, instructions: str | None = None, system: str | None = None,
                     vllm=None) -> dict[str, float]:
    """eval/accuracy, eval/f1 (weighted) and, for gta, eval/guess_accuracy: the figures logged during training.
    `gather`: with several processes, each evaluates its share of the examples and `gather` joins every process's
    records (Engine.gather), so the figures are those of the whole held-out subset."""
    from sklearn.metrics import accuracy_score, f1_score

    _, records = evaluate_examples(model, tokenizer, examples, labels, template, max_new_tokens, max_prompt_length,
                                   bf16=bf16, progress=False, instructions=instructions,
                                   system=system, vllm=vllm, fast=False) if examples else (None, [])
    if gather is not None:
        records = gather(records)
    gold = [r["gold"] for r in records]
    answer = [canonical_label(r["answer"], labels) for r in records]
    out = {"eval/accuracy": accuracy_score(gold, answer),
           "eval/f1": f1_score(gold, answer, labels=labels, average="weighted", zero_division=0)}
    if template == "gta":
        out["eval/guess_accuracy"] = accuracy_score(gold, [canonical_label(r["guess"], labels) for r in records])
    return out
