"""Prediction with a trained run: `Classifier.from_pretrained(RUN_DIR).predict(texts)`."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import checkpoint as checkpoints
from . import prompts
from .config import TrainConfig
from .evaluate import (FAST_CLOSING, INVALID, canonical_label, check_reasons_first, constrained_answers,
                       generate_texts, score_labels)
from .models import bf16_supported, load_model, load_tokenizer, pick_device


class Classifier:
    def __init__(self, model, tokenizer, labels: list[str], template: str, max_prompt_length: int = 512,
                 max_new_tokens: int = 128, bf16: bool = False, instructions: str | None = None,
                 system: str | None = None, vllm=None):
        self.model, self.tokenizer, self.labels, self.template = model, tokenizer, labels, template
        self.max_prompt_length, self.max_new_tokens, self.bf16 = max_prompt_length, max_new_tokens, bf16
        self.instructions, self.system = instructions, system  # the run's prompt (--instructions, --system-prompt)
        self.vllm = vllm  # a vllm_engine.VLLMEngine with the model's weights: it decodes the outputs (engine="vllm")

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str = "auto", max_new_tokens: int | None = None,
                        checkpoint: str | None = None, engine: str = "native", vllm_gpu_memory_utilization: float = 0.3):
        """Load the latest checkpoint of a `gta train` run folder, or the one named (`step-N`); or a folder that
        `gta export` wrote (a local path, or a hub id when online). engine="vllm": a vLLM engine, loaded with the
        run's weights, decodes the outputs (the label scoring of fast and constrain_answer stays on the model)."""
        if engine not in ("native", "vllm"):
            raise ValueError(f"unknown engine {engine!r}; choose native or vllm")
        run_dir = Path(run_dir)
        if not run_dir.exists() and str(run_dir).count("/") == 1 and not str(run_dir).startswith("."):
            run_dir = _download(str(run_dir))
        if (run_dir / "gta.json").is_file():
            clf, base, trust = cls._from_export(run_dir, device, max_new_tokens)
        else:
            clf, base, trust = cls._from_run(run_dir, device, max_new_tokens, checkpoint)
        if engine == "vllm":
            from .models import resolve
            from .vllm_engine import VLLMEngine

            clf.vllm = VLLMEngine.for_model(clf.model, resolve(base), clf.max_prompt_length + clf.max_new_tokens,
                                            vllm_gpu_memory_utilization, trust)
            clf.vllm.push(clf.model)
        return clf

    @classmethod
    def _from_run(cls, run_dir: Path, device: str, max_new_tokens: int | None, checkpoint: str | None):
        """(classifier, its base model, trust_remote_code) of a run folder's checkpoint."""
        cfg, labels, path = run_checkpoint(run_dir, checkpoint)
        dev = pick_device(device)
        model, tokenizer = load_run_model(cfg, path, dev)
        if cfg.bf16 and bf16_supported(dev):  # inference only: bf16 weights decode faster than autocast
            model = model.to(torch.bfloat16)
        return cls(model, tokenizer, labels, prompts.METHOD_TEMPLATE[cfg.method], cfg.max_prompt_length,
                   max_new_tokens or cfg.max_completion_length, bf16=False, instructions=cfg.instructions,
                   system=cfg.system_prompt), cfg.model, cfg.trust_remote_code

    @classmethod
    def _from_export(cls, folder: Path, device: str, max_new_tokens: int | None):
        """(classifier, its base model, trust_remote_code) of a `gta export` folder."""
        info = json.loads((folder / "gta.json").read_text())
        dev = pick_device(device)
        if info["adapter"]:
            model = load_model(info["base_model"], dev, adapter=str(folder), trust_remote_code=info["trust_remote_code"])
        else:
            model = load_model(str(folder), dev, trust_remote_code=info["trust_remote_code"])
        if info["bf16"] and bf16_supported(dev):
            model = model.to(torch.bfloat16)
        clf = cls(model, load_tokenizer(str(folder)), info["labels"], info["template"], info["max_prompt_length"],
                  max_new_tokens or info["max_new_tokens"], bf16=False, instructions=info["instructions"],
                  system=info["system_prompt"])
        return clf, info["base_model"] if info["adapter"] else str(folder), info["trust_remote_code"]

    def predict(self, texts: list[str] | str, explain: bool = False, fast: bool = False, progress: bool = False,
                constrain_answer: bool = False, batch_size: int = 8):
        """Labels (None where the output has no `<answer>` span naming a known label: the last one is read,
        as the accuracy reward reads it, in format or not); with
        explain=True, dicts with label, guess, think and the raw output. fast=True stops after the guess
        (gta) or answer (sft) span, the label constrained to the label set: no reasoning, and no decoding of it
        (the prompt's prefill remains, so the gain grows with the length of the reasoning).
        constrain_answer=True (gta, grpo runs) keeps the reasoning and constrains the answer to the label set
        (None only where the output never reaches its `<answer>` tag in format). `batch_size` texts are decoded
        together."""
        if fast and constrain_answer:
            raise ValueError("choose fast (no reasoning) or constrain_answer (reasoning, then a constrained answer)")
        if constrain_answer:
            check_reasons_first(self.template)  # before generating, not after
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text {i} is {'empty' if isinstance(t, str) else type(t).__name__}; "
                                 "give a non-empty string to classify")
        prompt_texts, _ = prompts.make_prompts(self.tokenizer, texts, self.labels, self.template, self.max_prompt_length,
                                               self.instructions, self.system)
        if fast:
            if self.template not in FAST_CLOSING:
                raise ValueError(f"fast inference needs a run whose output starts with a label span (gta, gta-rl, "
                                 f"sft); this run uses the {self.template!r} template")
            fast_labels = score_labels(self.model, self.tokenizer, prompt_texts, self.labels,
                                       FAST_CLOSING[self.template], self.bf16, batch_size=batch_size,
                                       progress=progress)
            results = [{"label": lab, "guess": lab, "think": None, "output": None} if explain else lab
                       for lab in fast_labels]
            return results[0] if single else results
        outputs = generate_texts(self.model, self.tokenizer, prompt_texts, self.max_new_tokens, self.bf16,
                                 batch_size=batch_size, progress=progress, desc="predicting", vllm=self.vllm)
        if constrain_answer:
            picked = constrained_answers(self.model, self.tokenizer, prompt_texts, outputs, self.labels,
                                         self.template, self.bf16, batch_size=batch_size, progress=progress)
        results = []
        for i, out in enumerate(outputs):
            p = prompts.parse(prompts.prime(self.template) + out, self.template)
            label = canonical_label(p.answer, self.labels)
            label = picked[i] if constrain_answer else (None if label == INVALID else label)
            results.append({"label": label, "guess": p.guess, "think": p.think, "output": out} if explain else label)
        return results[0] if single else results


def run_checkpoint(run_dir: str | Path, checkpoint: str | None = None) -> tuple[TrainConfig, list[str], Path]:
    """A `gta train` run's config, labels and checkpoint folder (the latest, or the one named `step-N`), verified."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a gta run folder (no config.json)")
    cfg = TrainConfig.load(run_dir / "config.json")
    labels = json.loads((run_dir / "labels.json").read_text())
    path = checkpoints.named(run_dir, checkpoint) if checkpoint else checkpoints.latest(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet")
    checkpoints.verify(path)
    return cfg, labels, path


def load_run_model(cfg: TrainConfig, path: Path, device):
    """The model (LoRA: the run's base with the checkpoint's adapter) and tokenizer of a checkpoint folder."""
    if cfg.lora_r > 0:
        model = load_model(cfg.model, device, adapter=str(path), trust_remote_code=cfg.trust_remote_code)
    else:
        model = load_model(str(path), device, trust_remote_code=cfg.trust_remote_code)
    return model, load_tokenizer(str(path))


def _download(repo_id: str) -> Path:
    """An exported classifier on the Hugging Face hub, fetched into its cache (online only)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # offline, no such repository, no access
        raise FileNotFoundError(f"{repo_id} is neither a local folder nor a hub repository that could be fetched "
                                f"({type(e).__name__})") from None
