"""`gta export RUN OUT`: a trained run as a clean Hugging Face folder a user can ship: the weights (full, a LoRA
adapter, or the adapter merged into its base), the tokenizer, a greedy generation_config.json, gta.json (labels,
template, prompt settings: what gta.Classifier needs) and a model card (README.md). No optimizer, reference or
scheduler state goes with it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import __version__, prompts
from .config import ConfigError, TrainConfig, write_json_atomic

GTA_JSON = "gta.json"


def export(run_dir: str | Path, out: str | Path, checkpoint: str | None = None, merge_lora: bool = False) -> Path:
    from transformers import GenerationConfig

    from .classifier import load_run_model, run_checkpoint

    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; export into a new folder")
    cfg, labels, path = run_checkpoint(run_dir, checkpoint)
    if merge_lora and not cfg.lora_r:
        raise ConfigError(f"--merge-lora: {run_dir} trained all weights (no LoRA adapter to merge)")
    lora = cfg.lora_r > 0
    model, tokenizer = load_run_model(cfg, path, "cpu")
    if merge_lora:
        model = model.merge_and_unload()
    template = prompts.METHOD_TEMPLATE[cfg.method]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    base = model.get_base_model() if lora and not merge_lora else model
    eos = base.generation_config.eos_token_id if base.generation_config is not None else None
    GenerationConfig(do_sample=False, max_new_tokens=cfg.max_completion_length, eos_token_id=eos,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(tmp)
    metrics_file = run_dir / "eval" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    info = {"labels": labels, "method": cfg.method, "template": template, "instructions": cfg.instructions,
            "system_prompt": cfg.system_prompt, "system": prompts.SYSTEM if cfg.system_prompt is None else
            cfg.system_prompt, "user_message": prompts.user_message("{text}", labels, template, cfg.instructions),
            "prime": prompts.prime(template), "max_prompt_length": cfg.max_prompt_length,
            "max_new_tokens": cfg.max_completion_length, "bf16": cfg.bf16,
            "adapter": lora and not merge_lora, "base_model": cfg.model if lora and not merge_lora else None,
            "trust_remote_code": cfg.trust_remote_code, "source_run": str(run_dir.resolve()),
            "checkpoint": path.name, "gta_version": __version__}
    write_json_atomic(tmp / GTA_JSON, info)
    (tmp / "README.md").write_text(model_card(cfg, info, metrics, out.name), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)  # an empty folder (checked above)
    tmp.replace(out)
    return out


METHODS = {"gta": "GTA (Guess-Think-Answer): the guess trained with cross-entropy toward the gold label, the "
                  "reasoning and answer with GRPO (format + accuracy reward), the SFT gradient dropped where it "
                  "conflicts with the RL gradient",
           "gta-rl": "GTA(RL): guess, reasoning and answer all trained with GRPO",
           "grpo": "GRPO on reasoning and answer (format + accuracy reward)",
           "sft": "supervised fine-tuning on the label"}


def model_card(cfg: TrainConfig, info: dict, metrics: dict | None, name: str) -> str:
    fmt = prompts.TEMPLATES[info["template"]][1]
    if metrics:
        results = (f"On {metrics.get('test_limit') or 'all'} examples of the {metrics.get('split', 'test')} split of "
                   f"`{metrics.get('dataset')}` (seeded stratified subset, seed {metrics.get('seed')}; `gta eval`): "
                   f"accuracy {metrics['accuracy']:.4f}, weighted F1 {metrics['f1_weighted']:.4f}.")
    else:
        results = "No evaluation of this run was found (`gta eval RUN` writes one; export again after it)."
    weights = (f"a LoRA adapter (rank {cfg.lora_r}) for `{cfg.model}`, which must be loadable where this folder is "
               "used" if info["adapter"] else "the full weights" + (" (LoRA merged into the base)" if cfg.lora_r
                                                                      else ""))
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [gta, text-classification, grpo]
---

# {name}

A text classifier trained with gta (Guess-Think-Answer training for text classification) from `{cfg.model}` on `{cfg.dataset}`
({cfg.train_limit or 'all'} training examples, method `{cfg.method}`: {METHODS[cfg.method]}). It holds
{weights}.

**Labels** ({len(info['labels'])}): {', '.join(f'`{lab}`' for lab in info['labels'])}

**Output format**: the model continues its prompt, which ends with `{info['prime']}`, in the form `{fmt}`; the
label is the text of the last `<answer>...</answer>`.

## Results

{results}

## Use with gta

```python
from gta import Classifier
clf = Classifier.from_pretrained("{name}")
clf.predict(["first text", "second text"])          # labels (None where the output names no label)
clf.predict("a text", explain=True)                  # label, guess, think, the output
```

## Use with transformers alone

```python
import json, re
from transformers import AutoModelForCausalLM, AutoTokenizer
g = json.load(open("{name}/gta.json"))
tok = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
text = "the text to classify"   # gta cuts a text to fit {info['max_prompt_length']} prompt tokens
messages = [{{"role": "system", "content": g["system"]}},
            {{"role": "user", "content": g["user_message"].replace("{{text}}", text)}}]
prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + g["prime"]
ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
out = tok.decode(model.generate(**ids)[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
answers = re.findall(r"<answer>(.*?)</answer>", g["prime"] + out, re.S)
label = answers[-1].strip() if answers else None          # one of g["labels"] when the model followed the format
```

`generation_config.json` is greedy with at most {info['max_new_tokens']} new tokens, as gta evaluates.
"""
