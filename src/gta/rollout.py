"""Shared-prefix rollouts and log-probs.

The G samples of a prompt share its tokens, so the prompt is computed once and its KV cache is
expanded to G rows, both when sampling (one prefill per prompt, not G) and in the update pass (one
prompt forward per group, gradients flowing back through the shared cache). Logits are computed only
where they predict completion tokens. Shapes: B prompts, G samples, P prompt tokens, L completion tokens,
V vocabulary, N = B*G rows.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import Cache, DynamicCache
from transformers.cache_utils import DynamicLayer


@dataclass
class Prompts:
    input_ids: torch.Tensor  # (B, P) left-padded
    attention_mask: torch.Tensor  # (B, P) 1 on real tokens

    @property
    def lengths(self) -> torch.Tensor:  # (B,) real prompt tokens = position id of the first completion token
        return self.attention_mask.sum(dim=1)


def encode_prompts(tokenizer, prompts: list[str], device) -> Prompts:
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return Prompts(ids.to(device), mask.to(device))


def pad_right(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (N, L), from token lists of different lengths."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def prompt_forward(model, prompts: Prompts):
    """One forward over the B prompts. Returns the per-layer (key, value) tensors and the logits of the
    last prompt position, (B, V), which predict the first completion token."""
    pos = (prompts.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask, position_ids=pos,
                past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
    kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    return kv, out.logits[:, -1]


def expand_cache(kv, repeat: int) -> DynamicCache:
    """A fresh cache holding each prompt's keys/values `repeat` times, (B*repeat, heads, P, d).
    A new object each time, because a forward appends to the cache it is given."""
    if repeat == 1:
        return DynamicCache(ddp_cache_data=list(kv))
    return DynamicCache(ddp_cache_data=[(k.repeat_interleave(repeat, 0), v.repeat_interleave(repeat, 0))
                                        for k, v in kv])


class _ReservedLayer(DynamicLayer):
    """A KV-cache layer with room reserved for `extra` more tokens: decoding writes each new token in place
    instead of re-concatenating the whole cache every step (a profile of a rollout showed torch.cat as one of
    its largest costs).
    For no-grad decoding only."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, extra: int):
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        n = keys.shape[-2]
        self._k = keys.new_empty(*keys.shape[:-2], n + extra, keys.shape[-1])
        self._v = values.new_empty(*values.shape[:-2], n + extra, values.shape[-1])
        self._k[..., :n, :], self._v[..., :n, :] = keys, values
        self.keys, self.values = self._k[..., :n, :], self._v[..., :n, :]

    def update(self, key_states, value_states, *args, **kwargs):
        n, k = self.keys.shape[-2], key_states.shape[-2]
        self._k[..., n:n + k, :] = key_states
        self._v[..., n:n + k, :] = value_states
        self.keys, self.values = self._k[..., :n + k, :], self._v[..., :n + k, :]
        return self.keys, self.values


def sample_tokens(logits: torch.Tensor, temperature: float,
                  generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Sample one token per row from softmax(logits / T), (N, V) -> (N,); T = 0 means greedy.

    `generator` may be a list with one generator per prompt (its rows consecutive): then a prompt's samples
    do not depend on which other prompts share the batch, e.g. how a step is split across processes.

    Inverse-CDF sampling (cumsum + searchsorted): the same distribution as torch.multinomial, about 20x
    faster at V = 49,152 on this CPU (35 ms vs 1.5 ms a step at N = 32, ../shared/NOTES.md).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(dim=-1)  # (N, V)
    n = logits.shape[0]
    if isinstance(generator, list):
        u = torch.cat([torch.rand((n // len(generator), 1), generator=g, device=logits.device) for g in generator])
    else:
        u = torch.rand((n, 1), generator=generator, device=logits.device)
    u = u * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def generate(model, prompts: Prompts, num_samples: int, max_new_tokens: int, stop_ids: list[int], pad_id: int,
             temperature: float = 1.0, generator: torch.Generator | list[torch.Generator] | None = None,
             bf16: bool = False):
    """Sample `num_samples` completions per prompt from one prefill per prompt.

    Returns (completions (B*G, L) right-padded, completion_mask (B*G, L): 1 up to and including the stop
    token). Rows i*G .. i*G+G-1 belong to prompt i.
    """
    device = prompts.input_ids.device
    G = num_samples
    with autocast(device, bf16):
        kv, logits = prompt_forward(model, prompts)
        cache = Cache(layers=[_ReservedLayer(k.repeat_interleave(G, 0), v.repeat_interleave(G, 0), max_new_tokens)
                              for k, v in kv])
        logits = logits.repeat_interleave(G, 0)  # (N, V)
        mask = prompts.attention_mask.repeat_interleave(G, 0)  # (N, P)
        pos = prompts.lengths.repeat_interleave(G, 0)  # (N,)
        stop = torch.tensor(stop_ids, device=device)
        done = torch.zeros(mask.shape[0], dtype=torch.bool, device=device)
        tokens, alive = [], []
        for t in range(max_new_tokens):
            nxt = sample_tokens(logits, temperature, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            alive.append(~done)
            tokens.append(nxt)
            done = done | torch.isin(nxt, stop)
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos[:, None],
                        past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1]
            pos = pos + 1
    return torch.stack(tokens, dim=1), torch.stack(alive, dim=1).long()


def shared_prefix_logprobs(model, prompts: Prompts, suffixes: list[tuple[torch.Tensor, torch.Tensor, int]],
                           bf16: bool = False) -> list[torch.Tensor]:
    """Log-probs of suffix tokens given their prompt, with the prompt computed once.

    suffixes: [(ids (B*k, L), mask (B*k, L), k)], k rows per prompt (G completions, or 1 guess target).
    Returns [(B*k, L) float32 log-probs] (0 where mask is 0). Differentiable when grad is enabled:
    gradients reach the prompt computation through the shared cache.
    """
    device = prompts.input_ids.device
    out_logps = []
    with autocast(device, bf16):
        kv, last = prompt_forward(model, prompts)  # last: (B, V)
        for ids, smask, k in suffixes:
            first = last.repeat_interleave(k, 0)[:, None]  # (N, 1, V) predicts suffix token 0
            if ids.shape[1] > 1:
                inp = ids[:, :-1]  # tokens 0..L-2 predict tokens 1..L-1
                attn = torch.cat([prompts.attention_mask.repeat_interleave(k, 0), smask[:, :-1]], dim=1)
                pos = prompts.lengths.repeat_interleave(k, 0)[:, None] + torch.arange(inp.shape[1], device=device)
                logits = model(input_ids=inp, attention_mask=attn, position_ids=pos,
                               past_key_values=expand_cache(kv, k), use_cache=True).logits
                logits = torch.cat([first, logits], dim=1)  # (N, L, V)
            else:
                logits = first
            out_logps.append(token_logprobs(logits, ids) * smask)
    return out_logps


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[ids] in float32 without materialising the full log-softmax, (N, L)."""
    logits = logits.float()
    return logits.gather(-1, ids[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def span_end_token(tokenizer, ids: list[int], marker: str) -> int | None:
    """Number of leading tokens needed to cover the first `marker` in the decoded text, or None.

    Token character offsets come from decoding growing prefixes (robust for byte-level BPE where a single
    token may not decode to whole characters); decoding stops as soon as the marker is covered.
    """
    for n in range(1, len(ids) + 1):
        if marker in tokenizer.decode(ids[:n], skip_special_tokens=False):
            return n
    return None


def guess_span_mask(tokenizer, ids: list[int], n_valid: int) -> list[int]:
    """1 on the tokens of the guess span (the completion starts inside `<guess>`, which is primed in the
    prompt; the span ends with `</guess>`), 0 elsewhere. No closing tag -> no span (all 0)."""
    end = span_end_token(tokenizer, ids[:n_valid], "</guess>")
    mask = [0] * len(ids)
    if end is not None:
        mask[:end] = [1] * end
    return mask
