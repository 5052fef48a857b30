"""Shared-prefix rollouts and log-probs.

The G samples of a prompt share its tokens, so the prompt is computed once and its KV cache is
expanded to G rows, both when sampling (one prefill per prompt, not G) and in the update pass (one
prompt forward per group, gradients flowing back through the shared cache). Logits are computed only
where they predict completion tokens. Shapes: B prompts, G samples, P prompt tokens, L completion tokens,
V vocabulary, N = B*G rows.

The B prompts of a batch share their first tokens too (the chat template, the instructions and the label list come
before the text): `encode_prompts` finds that common prefix, and every prompt pass computes it once, as one row,
and expands its keys and values to the B rows (gradients summed back into the one row), so a batch pays for the
instructions once instead of B times.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import Cache, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from .models import selecting, token_entropy, token_logprobs  # noqa: F401 (token_*: re-exported)
from .prompts import span_end_token

# The KV cache's name in a model's forward and output: recent transformers 5.x releases (5.24 among them) renamed
# it from `past_key_values` to `cache` (the old name warns there and goes in 5.40); 5.0 knows only the old one.
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class Prompts:
    input_ids: torch.Tensor  # (B, P): the shared prefix, then each prompt's other tokens left-padded
    attention_mask: torch.Tensor  # (B, P) 1 on real tokens
    shared: int = 0  # the first `shared` columns are the same tokens in every row (no padding): computed once

    @property
    def lengths(self) -> torch.Tensor:  # (B,) real prompt tokens = position id of the first completion token
        return self.attention_mask.sum(dim=1)

    def token_lists(self) -> list[list[int]]:
        """Each prompt's tokens without padding (what another engine is given)."""
        return [row[m.bool()].tolist() for row, m in zip(self.input_ids, self.attention_mask)]


def common_prefix_length(rows: list[list[int]]) -> int:
    """The number of leading tokens every row has in common."""
    n = min(len(r) for r in rows)
    for j in range(n):
        if any(r[j] != rows[0][j] for r in rows):
            return j
    return n


def encode_prompts(tokenizer, prompts: list[str], device, share_prefix: bool = True) -> Prompts:
    """The prompts' tokens, (B, P). share_prefix: the tokens all B > 1 prompts begin with (at least one token of
    each prompt left after them) become `shared` columns, computed once per pass (`prefix_cache`); each prompt's
    other tokens are left-padded after them. Off where the number of forwards must not depend on the data (the
    policy's passes under FSDP2, where each forward all-gathers every layer on every process)."""
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = max(0, min(common_prefix_length(rows), min(len(r) for r in rows) - 1)) if share_prefix and len(rows) > 1 else 0
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    ids[:, :shared], mask[:, :shared] = torch.tensor(rows[0][:shared]), 1
    for i, r in enumerate(rows):
        ids[i, width - len(r) + shared:] = torch.tensor(r[shared:])
        mask[i, width - len(r) + shared:] = 1
    return Prompts(ids.to(device), mask.to(device), shared)


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


def attention_backend(device: torch.device):
    """On CPU, every log-prob pass (policy, behaviour, reference, SFT targets) runs SDPA's math kernel (batched
    matmuls): its backward is far cheaper than the flash kernel's on CPU (`benchmarks/investigations/attention_kernel.py`,
    docs/speed-log.md), and the no-grad reference pass must use the same kernel as the policy pass, or identical
    weights give log-probs that differ by float rounding (a noise-level KL gradient). CUDA keeps its fused kernels."""
    if device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


class RecomputeSafeLayer(DynamicLayer):
    """The KV-cache layer of a differentiable pass, which a forward writes once (the prompt's keys and values, or a
    suffix's after the prompt's). Under activation checkpointing (`models.checkpoint_layers`) the backward runs
    each decoder layer's forward again, and its second `update` must return what the first did, not append the
    same keys a second time: Hugging Face's checkpointing drops the cache for that reason, which would cut the
    gradient path from the completions back through the shared prompt."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        super().__init__()
        self._out = None
        if keys is not None:
            self.lazy_initialization(keys, values)
            self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        if self._out is None:
            self._out = super().update(key_states, value_states, *args, **kwargs)
        return self._out


def prefix_cache(model, prompts: Prompts) -> tuple[Cache, int]:
    """The cache the prompts' forward starts from, and the column it starts at: the shared prefix's keys and values,
    computed from one row and expanded to the B rows (a view: its backward sums the rows' gradients into that
    row), or an empty cache at column 0."""
    S = prompts.shared
    if not S:
        return Cache(layer_class_to_replicate=RecomputeSafeLayer), 0
    head = model(input_ids=prompts.input_ids[:1, :S], position_ids=torch.arange(S, device=prompts.input_ids.device)[None],
                 use_cache=True, logits_to_keep=1, **{CACHE: Cache(layer_class_to_replicate=RecomputeSafeLayer)})
    B = prompts.input_ids.shape[0]
    return Cache(layers=[RecomputeSafeLayer(layer.keys.expand(B, -1, -1, -1), layer.values.expand(B, -1, -1, -1))
                         for layer in getattr(head, CACHE).layers]), S


def prompt_forward(model, prompts: Prompts):
    """One forward over the B prompts (after their shared prefix's, if any). Returns the per-layer (key, value)
    tensors and the logits of the last prompt position, (B, V), which predict the first completion token."""
    pos = (prompts.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    cache, S = prefix_cache(model, prompts)
    out = model(input_ids=prompts.input_ids[:, S:], attention_mask=prompts.attention_mask, position_ids=pos[:, S:],
                use_cache=True, logits_to_keep=1, **{CACHE: cache})
    kv = [(layer.keys, layer.values) for layer in getattr(out, CACHE).layers]
    return kv, out.logits[:, -1]


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

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = self.keys.shape[-2]
        self._k, self._v = self._k[indices], self._v[indices]
        self.keys, self.values = self._k[..., :n, :], self._v[..., :n, :]


def uniforms(n: int, generator: torch.Generator | list[torch.Generator] | None, device) -> torch.Tensor:
    """n uniform float64 numbers, (n, 1), drawn on the generators' device (the trainer's are CPU generators, so a run
    samples the same numbers on a CPU and a GPU) and moved to `device`; with a list of generators (one per prompt,
    its rows consecutive) each prompt's numbers come from its own generator, so they do not depend on which
    prompts share the batch."""
    gens = generator if isinstance(generator, list) else [generator]
    kw = dict(dtype=torch.float64, device=gens[0].device if gens[0] is not None else device)
    if isinstance(generator, list):
        u = torch.cat([torch.rand((n // len(generator), 1), generator=g, **kw) for g in generator])
    else:
        u = torch.rand((n, 1), generator=generator, **kw)
    return u.to(device, non_blocking=True)


def sample_tokens(logits: torch.Tensor, temperature: float,
                  generator: torch.Generator | list[torch.Generator] | None = None,
                  u: torch.Tensor | None = None) -> torch.Tensor:
    """Sample one token per row from softmax(logits / T), (N, V) -> (N,); T = 0 means greedy.
    `u`: the rows' uniform numbers, (N, 1), if already drawn; otherwise drawn from `generator` (`uniforms`).

    Inverse-CDF sampling (cumsum + searchsorted): the same distribution as torch.multinomial and much faster at
    a 49k vocabulary on CPU (docs/speed-design.md). In float64, probabilities, cumsum and uniforms alike: a float32 cdf
    rounds near 1 and makes every token with a probability below about half its ulp (3e-8) impossible to draw.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    cdf = torch.softmax(logits.double() / temperature, dim=-1).cumsum(dim=-1)  # (N, V)
    if u is None:
        u = uniforms(logits.shape[0], generator, logits.device)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def generate(model, prompts: Prompts, num_samples: int, max_new_tokens: int, stop_ids: list[int], pad_id: int,
             temperature: float = 1.0, generator: torch.Generator | list[torch.Generator] | None = None,
             bf16: bool = False, compact: bool = True, logprobs: bool = False):
    """Sample `num_samples` completions per prompt from one prefill per prompt.

    Rows that have stopped leave the batch (their cache rows are dropped once an eighth of the batch has
    stopped), so a step costs what its unfinished rows cost. Every row still draws its random number at
    every step, so the samples do not depend on when rows leave (`compact=False` keeps every row to the end,
    with the same samples: for benchmarks/speed.py).

    Returns (completions (B*G, L) right-padded, completion_mask (B*G, L): 1 up to and including the stop
    token). Rows i*G .. i*G+G-1 belong to prompt i. logprobs=True (sampling only): also the sampler's log-prob of
    each sampled token under softmax(z / T), (B*G, L) float32, 0 after the stop: to measure how far the sampler's
    distribution is from the trainer's.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = prompts.input_ids.device
    G = num_samples
    with autocast(device, bf16):
        kv, logits = prompt_forward(model, prompts)
        cache = Cache(layers=[_ReservedLayer(k.repeat_interleave(G, 0), v.repeat_interleave(G, 0), max_new_tokens)
                              for k, v in kv])
        logits = logits.repeat_interleave(G, 0)  # (n, V), n: rows still in the batch
        P = prompts.attention_mask.shape[1]
        mask = prompts.attention_mask.new_ones(len(logits), P + max_new_tokens)  # (n, P + max): room reserved,
        mask[:, :P] = prompts.attention_mask.repeat_interleave(G, 0)  # as for the cache; step t reads P + t + 1
        pos = prompts.lengths.repeat_interleave(G, 0)  # (n,)
        N = mask.shape[0]
        rows = torch.arange(N, device=device)  # the batch rows' indices among the N rows
        stop = torch.tensor(stop_ids, device=device)
        done = torch.zeros(N, dtype=torch.bool, device=device)  # (n,)
        tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
        alive = torch.zeros((N, max_new_tokens), dtype=torch.long, device=device)
        lps = torch.zeros((N, max_new_tokens), dtype=torch.float32, device=device) if logprobs else None
        for t in range(max_new_tokens):
            u = uniforms(N, generator, device)[rows] if temperature else None
            nxt = sample_tokens(logits, temperature, u=u)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            tokens[rows, t] = nxt
            alive[rows, t] = (~done).long()
            if logprobs:
                lps[rows, t] = token_logprobs(logits[:, None], nxt[:, None], temperature or 1.0)[:, 0] * (~done)
            done = done | torch.isin(nxt, stop)
            if bool(done.all()) or t == max_new_tokens - 1:
                out = tokens[:, : t + 1], alive[:, : t + 1]
                return (*out, lps[:, : t + 1]) if logprobs else out
            if compact and int(done.sum()) >= max(1, len(rows) // 8):  # drop stopped rows from the batch
                keep = (~done).nonzero().squeeze(1)
                for layer in cache.layers:
                    layer.batch_select_indices(keep)
                rows, nxt, mask, pos, done = rows[keep], nxt[keep], mask[keep], pos[keep], done[keep]
            out = model(input_ids=nxt[:, None], attention_mask=mask[:, :P + t + 1], position_ids=pos[:, None],
                        use_cache=True, **{CACHE: cache})
            logits = out.logits[:, -1]
            pos = pos + 1


def cut_at_limit(row: list[int], max_new_tokens: int, stop_ids) -> bool:
    """A completion's valid tokens ran to `max_new_tokens` without ending on a stop token: cut, not finished (not in
    format, whatever it holds)."""
    return len(row) >= max_new_tokens and row[-1] not in stop_ids


def length_chunks(lengths: torch.Tensor, rows_per_chunk: int) -> list[torch.Tensor]:
    """Row indices grouped by length (longest first), `rows_per_chunk` rows a group: each group is then
    trimmed to its own longest row, so short completions are not padded to the longest of the batch."""
    order = torch.sort(lengths, descending=True, stable=True).indices
    return list(order.split(rows_per_chunk))


def shared_prefix_logprobs(model, prompts: Prompts, suffixes: list[tuple[torch.Tensor, torch.Tensor, int]],
                           bf16: bool = False, rows_per_chunk: int = 8, temperature: float = 1.0,
                           entropy: bool = False) -> list:
    """Log-probs of suffix tokens given their prompt, with the prompt computed once, under log_softmax(z / T):
    the distribution the rollouts sampled from (`temperature`, as TRL does), for the ratio and the KL alike.

    suffixes: [(ids (B*k, L), mask (B*k, L), k)], k rows per prompt (G completions, or 1 guess target), each
    row's valid tokens first (right padding). Returns [(B*k, L) float32 log-probs] (0 where mask is 0).
    Differentiable when grad is enabled: gradients reach the prompt computation through the shared cache.

    entropy=True: each item is (log-probs, entropies), the second the entropy of softmax(z / T) at each suffix
    position (B*k, L), 0 where mask is 0, without gradient (a metric).

    Rows are computed in chunks of similar length (`length_chunks`), each trimmed to its longest row:
    rollouts stop at very different lengths (a few rows run to the length limit, most stop early), and
    padding every row to the longest one computes mostly padding. Every chunk runs its suffix forward, even a chunk
    of one-token rows (padded to two tokens): under FSDP2 each forward all-gathers every layer, so the number of
    forwards must not depend on the data, or a process whose rows all stopped at their first token (what a
    collapsing policy samples) would issue fewer collectives than the others and hang them.
    """
    device = prompts.input_ids.device
    out_logps = []
    with autocast(device, bf16), attention_backend(device):
        kv, last = prompt_forward(model, prompts)  # last: (B, V)
        for ids, smask, k in suffixes:
            N, L = ids.shape
            lengths = smask.sum(dim=1)
            pieces, ents, order = [], [], []
            for rows in length_chunks(lengths, rows_per_chunk):
                width = max(2, int(lengths[rows].max()))  # >= 2: a suffix forward in every chunk (docstring)
                p_idx = torch.div(rows, k, rounding_mode="floor")  # the prompt of each row
                c_ids, c_mask = ids[rows, :width], smask[rows, :width]
                if c_ids.shape[1] < width:  # the suffixes are one token wide: a padding column, masked
                    c_ids = torch.nn.functional.pad(c_ids, (0, width - c_ids.shape[1]))
                    c_mask = torch.nn.functional.pad(c_mask, (0, width - c_mask.shape[1]))
                # index_select, not last[p_idx]: p_idx repeats each prompt k times, and the backward of
                # advanced indexing adds the repeats with parallel atomic adds on CPU (run-to-run different
                # float rounding, which broke bitwise resume); index_select's backward adds them in order.
                first = last.index_select(0, p_idx)[:, None]  # (n, 1, V) predicts suffix token 0
                attn = torch.cat([prompts.attention_mask[p_idx], c_mask[:, :-1]], dim=1)
                pos = prompts.lengths[p_idx][:, None] + torch.arange(width - 1, device=device)
                cache = Cache(layers=[RecomputeSafeLayer(key.index_select(0, p_idx), value.index_select(0, p_idx))
                                      for key, value in kv])
                with selecting(model, c_ids[:, 1:], temperature, entropy) as head:
                    # tokens 0..w-2 predict 1..w-1: their log-probs straight from the head (no (n, w, V) logits
                    # kept), or, where the head cannot select, the logits
                    rest = model(input_ids=c_ids[:, :-1], attention_mask=attn, position_ids=pos,
                                 use_cache=True, **{CACHE: cache}).logits
                    rest_ent = head.entropy if head is not None and entropy else None
                fit = lambda x: torch.nn.functional.pad(x, (0, L - width)) if L >= width else x[:, :L]  # noqa: E731
                if head is not None:
                    logp = torch.cat([token_logprobs(first, c_ids[:, :1], temperature), rest], dim=1)
                    ent = torch.cat([token_entropy(first, temperature), rest_ent], dim=1) if entropy else None
                else:
                    logits = torch.cat([first, rest], dim=1)  # (n, w, V)
                    logp = token_logprobs(logits, c_ids, temperature)
                    ent = token_entropy(logits, temperature) if entropy else None
                pieces.append(fit(logp * c_mask))
                if entropy:
                    ents.append(fit(ent * c_mask))
                order.append(rows)
            inverse = torch.empty(N, dtype=torch.long, device=device)
            inverse[torch.cat(order)] = torch.arange(N, device=device)
            logps = torch.cat(pieces).index_select(0, inverse)
            out_logps.append((logps, torch.cat(ents).index_select(0, inverse)) if entropy else logps)
    return out_logps


def sequence_logprobs(model, prompts: Prompts, ids: torch.Tensor, mask: torch.Tensor,
                      bf16: bool = False) -> torch.Tensor:
    """Log-probs of one suffix per prompt (a label target), (B, L), 0 where mask is 0, from one forward over
    prompt + suffix (after the batch's shared prefix, computed once: `prefix_cache`). Differentiable when grad is
    enabled.

    With one suffix per prompt there is nothing else to share, and one forward is a little cheaper than the prompt
    forward plus a suffix forward on its cache (`shared_prefix_logprobs` with k = 1), whose graph has two pieces,
    each writing a full set of weight gradients that are then added (`benchmarks/investigations/guess_pass.py`, docs/speed-log.md)."""
    device = prompts.input_ids.device
    attn = torch.cat([prompts.attention_mask, mask], dim=1)  # prompts left-padded, suffixes right-padded
    pos = (attn.cumsum(dim=1) - 1).clamp(min=0)
    with autocast(device, bf16), attention_backend(device):
        S = prompts.shared  # the shared prefix: computed once, the rows' forward on its cache
        cache = {"use_cache": True, CACHE: prefix_cache(model, prompts)[0]} if S else {"use_cache": False}
        logits = model(input_ids=torch.cat([prompts.input_ids[:, S:], ids], dim=1), attention_mask=attn,
                       position_ids=pos[:, S:], logits_to_keep=ids.shape[1] + 1,
                       **cache).logits[:, :-1]  # the last prompt token predicts suffix token 0
        return token_logprobs(logits, ids) * mask


def packed_suffix_logprobs(model, prompts: Prompts, suffixes: list[list[int]], bf16: bool = False) -> torch.Tensor:
    """Summed log-probs of K short token sequences after each of B prompts, (B, K), for scoring a label set.

    The prompt is computed once and its cache is not copied K times (what shared_prefix_logprobs does for
    G completions): the K suffixes of a prompt are packed into one row after it, each attending to the
    prompt and to its own earlier tokens only (a block-diagonal 4D mask), positions restarting after the
    prompt for each. With 18 labels the copies cost more than the whole prefill."""
    device = prompts.input_ids.device
    flat = torch.tensor([t for s in suffixes for t in s], device=device)  # (T,)
    owner = torch.tensor([k for k, s in enumerate(suffixes) for _ in s], device=device)  # suffix of each token
    offset = torch.tensor([i for s in suffixes for i in range(len(s))], device=device)  # position within it
    B, T = prompts.input_ids.shape[0], flat.numel()
    with autocast(device, bf16):
        kv, last = prompt_forward(model, prompts)
        first = torch.log_softmax(last.float(), dim=-1)  # (B, V), once per prompt, not once per packed token
        logp = first.index_select(1, flat)  # (B, T), right for the first token of each suffix only
        if bool((offset > 0).any()):
            causal = (owner[:, None] == owner[None]) & (offset[:, None] >= offset[None])  # (T, T), same suffix
            mask = torch.cat([prompts.attention_mask.bool()[:, None, None, :].expand(B, 1, T, -1),
                              causal.expand(B, 1, T, T)], dim=-1)  # (B, 1, T, P + T), True = attend
            out = model(input_ids=flat.expand(B, T), attention_mask=mask,
                        position_ids=prompts.lengths[:, None] + offset, use_cache=True,
                        **{CACHE: DynamicCache(ddp_cache_data=kv)}).logits  # token j predicts token j + 1 of its suffix
            later = torch.nonzero(offset > 0).squeeze(1)
            logp[:, later] = token_logprobs(out[:, later - 1], flat[later].expand(B, -1))
    return torch.zeros(B, len(suffixes), device=device).index_add_(1, owner, logp)


def guess_span_mask(tokenizer, ids: list[int], n_valid: int) -> list[int]:
    """1 on the tokens of the guess span (the completion starts inside `<guess>`, which is primed in the
    prompt; the span ends with `</guess>`), 0 elsewhere. No closing tag -> no span (all 0)."""
    end = span_end_token(tokenizer, ids[:n_valid], "</guess>")
    mask = [0] * len(ids)
    if end is not None:
        mask[:end] = [1] * end
    return mask
