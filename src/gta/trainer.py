"""The training loop for sft, grpo, gta and gta-rl. One step (see README, "The algorithm"):

  1. take the step's B prompts (seeded order, one epoch after another)
  2. rollout: G completions per prompt, sampled from one prefill of that prompt
  3. rewards: format + accuracy for each completion (guess accuracy logged, not rewarded)
  4. advantages: rewards normalised within each group of G
  5. masks: RL loss on completion tokens (gta: guess span excluded); gta: guess target = gold label
  6. reference log-probs (no grad) when beta > 0
  7. mu optimizer updates on this batch; each sums, over micro-batches, g_RL (one shared-prefix forward of
     the prompts and their G completions) and, for gta, g_SFT (one forward of each prompt and its gold guess),
     reduces them across processes, applies the conflict rule, clips, steps
  8. refresh the reference every `ref_sync_steps`; log; evaluate; checkpoint

sft skips 2-6: its step is cross-entropy on the label tokens of B examples, one optimizer update.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import checkpoint, data, distributed, losses, prompts, rollout, runfolder
from .config import ConfigError, TrainConfig, write_json_atomic
from .conflict import combine
from .models import bf16_supported, load_model, load_tokenizer, pick_device, stop_token_ids
from .rewards import reward

def fused_adamw(params: list[torch.Tensor]) -> bool:
    """torch's fused AdamW kernel where it exists (CPU and CUDA, floating-point parameters): one pass over
    each tensor instead of a dozen elementwise ops, about 3x faster here (`benchmarks/guess_pass.py`, docs/speed-log.md)."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


@dataclasses.dataclass
class MicroBatch:
    """One micro-batch of a step's rollouts: b prompts and their G completions o_i each (rows prompt-major)."""
    prompts: rollout.Prompts  # the b prompts, left-padded: input_ids, attention_mask [b, P]
    ids: torch.Tensor  # o_i: completion tokens [b*G, T], T = this micro-batch's longest completion
    cmask: torch.Tensor  # 1 on o_i's tokens [b*G, T]
    rl_mask: torch.Tensor  # the tokens of L_RL: o_i minus, for gta, the guess span [b*G, T]
    adv: torch.Tensor  # A_i, group-normalised advantages [b*G]
    lengths: torch.Tensor  # |o_i| [b*G]
    guess: tuple[torch.Tensor, torch.Tensor] | None = None  # gta: the gold guess target and its mask [b, L]
    ref: torch.Tensor | None = None  # log pi_ref of o_i's tokens [b*G, T] (beta > 0)
    old: torch.Tensor | None = None  # log pi_old, the behaviour policy: the first update's log-probs [b*G, T]


class UpdateMeans:
    """A step's figures as means over its mu updates: each update's value divided by mu, summed in order."""

    def __init__(self, updates: int):
        self.updates, self.sums = updates, {}

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v / self.updates


class Stopwatch:
    """Seconds spent inside its `with` blocks, summed."""

    def __init__(self):
        self.total = 0.0

    @contextlib.contextmanager
    def __call__(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.total += time.perf_counter() - t0


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True,
                 reward_fn: Callable[[str, str, str], dict[str, float]] = reward):
        self.cfg, self.progress = cfg, progress
        # reward_fn(completion, gold, template) -> {"total", "format", "accuracy"[, "guess"]}: the paper's
        # rule-based reward by default; tests and extensions may plug in another.
        self.reward_fn = reward_fn
        self.run_dir = Path(cfg.output)
        self.device = pick_device(cfg.device)
        # Several processes (torchrun / accelerate launch): each takes an equal share of a step's prompts;
        # gradients are summed across processes before the conflict rule. One process: all no-ops.
        self.dist = distributed.setup(self.device)
        if cfg.batch_size % (self.dist.world * cfg.micro_batch_size):
            raise ConfigError(f"--batch-size {cfg.batch_size} must be a multiple of processes ({self.dist.world}) "
                              f"x --micro-batch-size {cfg.micro_batch_size}")
        runfolder.check(self.run_dir, cfg, resume)  # on every process, so a refusal stops them all
        self.dist.barrier()  # every process has checked the folder before the first process writes to it
        if self.dist.world > 1 and self.dist.is_main:
            print(f"[gta] data-parallel training on {self.dist.world} processes")
        self.bf16 = cfg.bf16 and bf16_supported(self.device)
        if cfg.bf16 and not self.bf16:
            print("[gta] bf16 autocast is not fast on this device; training in float32")
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        # Data and prompts
        splits = data.load_splits(cfg.dataset, cfg.data_dir, cfg.text_column, cfg.label_column)
        self.labels = data.label_set(splits["train"])
        for name in ("validation", "test"):
            if name in splits:
                data.check_labels(splits[name], self.labels, name)
        self.train_examples = data.stratified_subset(splits["train"], cfg.train_limit, cfg.seed)
        self.eval_split = "validation" if "validation" in splits else "test"
        self.eval_examples = data.stratified_subset(splits.get(self.eval_split, []), cfg.eval_limit, cfg.seed)
        self.template = prompts.METHOD_TEMPLATE[cfg.method]
        self.tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
        self.prompts, truncated = prompts.make_prompts(
            self.tokenizer, [ex.text for ex in self.train_examples], self.labels, self.template, cfg.max_prompt_length)
        if truncated:
            print(f"[gta] {truncated} of {len(self.prompts)} training texts were cut to fit "
                  f"--max-prompt-length {cfg.max_prompt_length}")

        # Model, optimizer, schedule
        self.model = load_model(cfg.model, self.device, cfg.lora_r, cfg.lora_alpha,
                                trust_remote_code=cfg.trust_remote_code)
        self.stop_ids = stop_token_ids(self.tokenizer, self.model)
        # RL methods run every forward (rollout, policy, behaviour, reference, guess) without dropout, as TRL does:
        # dropout would make the ratio pi_theta / pi_old noisy. The sft baseline trains as usual SFT does.
        self.model.train(not cfg.uses_rl)
        # With bf16, rollouts run on a bf16 copy of the policy, refreshed before each rollout (one copy of the
        # weights): decoding with bf16 weights is faster than fp32 weights under autocast, which re-casts every
        # weight at every decoded token. The update pass keeps fp32 master weights under autocast.
        self.sampler = copy.deepcopy(self.model).to(torch.bfloat16).eval() if self.bf16 else self.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        steps_per_epoch = math.ceil(len(self.train_examples) / cfg.batch_size)
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
        self.updates_per_step = cfg.num_iterations if cfg.uses_rl else 1
        total_updates = self.total_steps * self.updates_per_step
        warmup = int(cfg.warmup_ratio * total_updates)
        self.owners = None  # ZeRO stage 2: the process that owns each parameter's gradient and update
        if (cfg.shard_optimizer or cfg.shard_gradients) and self.dist.world > 1:
            # ZeRO stage 1: each process keeps AdamW's moments for its share of the parameters and broadcasts
            # them after its step. Stage 2: each micro-batch's gradients are summed onto their owner process
            # at once, so a process accumulates g_RL and g_SFT for its own parameters only.
            from torch.distributed.optim import ZeroRedundancyOptimizer

            self.optimizer = ZeroRedundancyOptimizer(self.params, optimizer_class=torch.optim.AdamW,
                                                     lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                                     fused=fused_adamw(self.params))
            stage = 1
            if cfg.shard_gradients:
                stage = 2
                owner_of = self.optimizer._param_to_rank  # torch's own partition, so each update is local
                self.owners = [owner_of[p] for p in self.params]
            if self.dist.is_main:
                what = "AdamW states" + (" and gradients" if stage == 2 else "")
                print(f"[gta] {what} sharded over {self.dist.world} processes (ZeRO stage {stage})")
        else:
            self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                               fused=fused_adamw(self.params))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda u: min((u + 1) / max(1, warmup), max(0.0, (total_updates - u) / max(1, total_updates - warmup))))
        # Reference policy: a snapshot of the trainable tensors, swapped in for its forwards. Works the same
        # for full fine-tuning and LoRA (there the reference is base + the adapter at the last refresh).
        self.reference = [p.detach().clone() for p in self.params] if cfg.uses_rl and cfg.beta != 0 else None

        self._targets: dict[tuple[int, str], list[int]] = {}
        self.step = 0
        self._order: tuple[int, list[int]] = (-1, [])
        if resume and checkpoint.latest(self.run_dir) is not None:
            self._resume()
            if self.dist.is_main:  # the settings that may change on resume (e.g. a longer run) are the run's now
                cfg.save(self.run_dir / "config.json")
        elif self.dist.is_main:
            cfg.save(self.run_dir / "config.json")
            write_json_atomic(self.run_dir / "labels.json", self.labels)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)  # from a run killed before its first checkpoint
        self.dist.barrier()
        self.metrics_log = runfolder.MetricsLog(self.run_dir) if self.dist.is_main else None

    # ---------------------------------------------------------------- setup helpers
    def _resume(self) -> None:
        path = checkpoint.latest(self.run_dir)
        checkpoint.load_weights(self.model, path)
        self.step, ref = checkpoint.load_training_state(path, self.optimizer, self.scheduler)
        if self.step > self.total_steps:
            raise ConfigError(f"{self.run_dir} is at step {self.step}, past the {self.total_steps} steps of --max-steps/"
                              "--epochs; --resume can train longer, not shorter")
        if self.reference is not None and ref is not None:
            self.reference = [ref[n].to(self.device) for n in self.names]
        if self.dist.is_main:  # the metrics of steps after the checkpoint: those steps run again
            runfolder.truncate_metrics(self.run_dir, self.step)
        print(f"[gta] resumed {self.run_dir} from {path.name} (step {self.step})")

    # ---------------------------------------------------------------- small utilities
    def batch_indices(self, step: int) -> list[int]:
        """Indices of the step's B prompts: epoch after epoch, each a seeded permutation."""
        n, B = len(self.prompts), self.cfg.batch_size
        out = []
        for k in range(step * B, (step + 1) * B):
            epoch, i = divmod(k, n)
            if self._order[0] != epoch:
                self._order = (epoch, random.Random(self.cfg.seed * 100_003 + epoch).sample(range(n), n))
            out.append(self._order[1][i])
        return out

    def generators(self, step: int, positions: range) -> list[torch.Generator]:
        """One generator per prompt, seeded by (seed, step, position of the prompt in the step): a resumed run
        samples what it would have, and so does a run split over any number of processes."""
        return [torch.Generator(device=self.device).manual_seed((self.cfg.seed * 1_000_003 + step) * 1_009 + k)
                for k in positions]

    def local(self, idx: list[int]) -> tuple[list[int], range]:
        """This process's contiguous share of the step's prompts, and their positions in the step."""
        n = len(idx) // self.dist.world
        positions = range(self.dist.rank * n, (self.dist.rank + 1) * n)
        return [idx[k] for k in positions], positions

    @contextlib.contextmanager
    def reference_weights(self):
        """Temporarily swap the reference snapshot into the trainable tensors (no copy, pointer swap)."""
        for i, p in enumerate(self.params):
            p.data, self.reference[i] = self.reference[i], p.data
        try:
            yield
        finally:
            for i, p in enumerate(self.params):
                p.data, self.reference[i] = self.reference[i], p.data

    @torch.no_grad()
    def sync_sampler(self):
        """The model to sample from: the policy itself, or its bf16 copy brought up to date."""
        if self.sampler is self.model:
            self.model.eval()  # RL methods never leave eval mode (no dropout); evaluate() restores the sft mode
        else:
            for s, p in zip(self.sampler.parameters(), self.model.parameters()):
                s.copy_(p)
        return self.sampler

    def target(self, i: int, closing: str) -> list[int]:
        """The supervised target of training example i: sft's `label</answer>` + end of turn, gta's guess."""
        key = (i, closing)
        if key not in self._targets:
            self._targets[key] = prompts.target_ids(self.tokenizer, self.train_examples[i].label, closing)
        return self._targets[key]

    def sft_normaliser(self, idx: list[int], closing: str) -> int:
        """What the step's summed target NLL is divided by (--sft-reduction): mean, the number of target tokens
        of the whole step (all micro-batches and processes: `idx` is the whole step's prompts), as Hugging Face
        cross-entropy with -100 masking averages them; sum, the number of examples."""
        return sum(len(self.target(i, closing)) for i in idx) if self.cfg.sft_reduction == "mean" else len(idx)

    def encode(self, ids: list[int]) -> rollout.Prompts:
        return rollout.encode_prompts(self.tokenizer, [self.prompts[i] for i in ids], self.device)

    # Gradients of a step: whole on every process, or (ZeRO stage 2) only the owned ones, None elsewhere.
    def new_grads(self) -> list[torch.Tensor | None]:
        return [torch.zeros_like(p) if self.owners is None or self.owners[i] == self.dist.rank else None
                for i, p in enumerate(self.params)]

    def add_grads(self, total: list[torch.Tensor | None], local) -> None:
        """Accumulate one micro-batch's gradients (stage 2: summed onto their owners right away)."""
        if self.owners is not None:
            local = self.dist.reduce_to_owners([torch.zeros_like(p) if g is None else g
                                                for p, g in zip(self.params, local)], self.owners)
        for t, g in zip(total, local):
            if t is not None and g is not None:
                t += g

    def sum_grads(self, total: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """The step's gradients summed over processes (stage 2: already summed on their owners)."""
        return total if self.owners is not None else self.dist.all_reduce_sum(total)

    def apply_update(self, grads: list[torch.Tensor | None]) -> float:
        for p, g in zip(self.params, grads):
            p.grad = g
        if self.owners is None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm or float("inf"))
        else:  # the global norm from each process's share, then torch's clipping rule
            own = [g for g in grads if g is not None]
            norm = self.dist.sum_scalars(torch.stack([g.double().pow(2).sum() for g in own]).sum()).sqrt()
            if self.cfg.max_grad_norm:
                torch._foreach_mul_(own, float(torch.clamp(self.cfg.max_grad_norm / (norm + 1e-6), max=1.0)))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    # ---------------------------------------------------------------- the steps
    def sft_step(self, idx: list[int]) -> dict:
        cfg = self.cfg
        normaliser = self.sft_normaliser(idx, "</answer>")  # idx: the whole step's prompts (all processes)
        idx, _ = self.local(idx)
        grads = self.new_grads()
        loss_sum, tokens = 0.0, 0
        for start in range(0, len(idx), cfg.micro_batch_size):
            mb = idx[start:start + cfg.micro_batch_size]
            targets, tmask = rollout.pad_right(
                [self.target(i, "</answer>") for i in mb],
                self.tokenizer.pad_token_id, self.device)
            logp = rollout.sequence_logprobs(self.model, self.encode(mb), targets, tmask, self.bf16)
            loss = losses.sft_loss(logp, tmask, normaliser)
            self.add_grads(grads, torch.autograd.grad(loss, self.params, allow_unused=True))
            loss_sum += float(loss.detach())
            tokens += int(tmask.sum())
        grad_norm = self.apply_update(self.sum_grads(grads))
        return {"loss/sft": loss_sum, "grad_norm": grad_norm, "_tokens": tokens}

    def rl_step(self, idx: list[int], step: int) -> dict:
        cfg, tok, G, B = self.cfg, self.tokenizer, self.cfg.num_generations, len(idx)  # B: the whole step's prompts
        gta = cfg.method == "gta"
        sft_normaliser = self.sft_normaliser(idx, "</guess>") if gta else 1
        idx, positions = self.local(idx)
        Bl = len(idx)  # prompts of this process
        metrics: dict[str, float] = {}

        # 2. rollout: G completions per prompt from one prefill each
        t0 = time.perf_counter()
        batch = self.encode(idx)
        completions, cmask = rollout.generate(self.sync_sampler(), batch, G, cfg.max_completion_length, self.stop_ids,
                                              tok.pad_token_id, cfg.temperature, self.generators(step, positions))
        metrics["rollout_s"] = time.perf_counter() - t0
        rows = [c[: int(m.sum())] for c, m in zip(completions.tolist(), cmask)]  # valid tokens of each row
        texts = [prompts.prime(self.template) + tok.decode(r, skip_special_tokens=True) for r in rows]

        # 3. rewards
        golds = [self.train_examples[i].label for i in idx for _ in range(G)]
        parts = [self.reward_fn(t, g, self.template) for t, g in zip(texts, golds)]
        for key in ("total", "format", "accuracy"):
            metrics[f"reward/{key}"] = sum(p[key] for p in parts) / len(parts)
        if self.template == "gta":
            metrics["guess/accuracy"] = sum(p["guess"] for p in parts) / len(parts)
        rewards = torch.tensor([p["total"] for p in parts], dtype=torch.float32).view(Bl, G)
        # groups whose rewards differ: only they carry an advantage (the others' RL gradient is the KL term alone).
        # With none in the whole step (all processes), g_RL has no direction for the conflict rule to test.
        informative = (rewards.std(dim=1) > 0).double().sum()
        metrics["groups/informative"] = float(informative) / Bl
        rl_signal = bool(self.dist.sum_scalars(informative.reshape(1)) > 0)

        # 4. advantages, (B, G) -> (B*G,)
        advantages = losses.group_advantages(rewards).view(-1).to(self.device)

        # 5. masks: RL on all completion tokens, minus the guess span for gta; |o_i| = completion length
        rl_mask = cmask.float()
        if gta:
            span = torch.tensor([rollout.guess_span_mask(tok, r, len(r)) + [0] * (cmask.shape[1] - len(r))
                                 for r in rows], device=self.device)
            rl_mask = rl_mask * (1 - span)
        lengths = cmask.sum(dim=1).float()
        metrics["completion_length"] = float(lengths.mean())

        # Micro-batches of prompts; each carries its G completions, trimmed to its longest completion.
        micro = []
        for s in range(0, Bl, cfg.micro_batch_size):
            rs = slice(s * G, (s + cfg.micro_batch_size) * G)
            width = max(1, int(cmask[rs].sum(dim=1).max()))
            guess = rollout.pad_right([self.target(i, "</guess>") for i in idx[s:s + cfg.micro_batch_size]],
                                      tok.pad_token_id, self.device) if gta else None
            micro.append(MicroBatch(self.encode(idx[s:s + cfg.micro_batch_size]), completions[rs, :width],
                                    cmask[rs, :width], rl_mask[rs, :width], advantages[rs], lengths[rs], guess))

        # 6. reference log-probs (no grad)
        if self.reference is not None:
            with torch.no_grad(), self.reference_weights():
                for mb in micro:
                    mb.ref, = rollout.shared_prefix_logprobs(
                        self.model, mb.prompts, [(mb.ids, mb.cmask, G)], self.bf16,
                        temperature=cfg.temperature)

        # 7. mu optimizer updates on this batch of rollouts
        means = UpdateMeans(cfg.num_iterations)  # the step's figures: means over its mu updates
        guess_time = Stopwatch()  # the time GTA adds: the guess loss's gradient (buffer, forward, backward), the rule
        for it in range(cfg.num_iterations):
            g_rl = self.new_grads()
            with guess_time():
                g_sft = self.new_grads() if gta else None
            kl_sum = clipped = tokens = 0.0
            for mb in micro:
                logp, = rollout.shared_prefix_logprobs(self.model, mb.prompts, [(mb.ids, mb.cmask, G)],
                                                       self.bf16, temperature=cfg.temperature)
                if it == 0:  # the behaviour policy: parameters before this batch's first update
                    mb.old = logp.detach()
                l_rl, st = losses.grpo_loss(logp, mb.old, mb.ref, mb.adv, mb.rl_mask, mb.lengths, cfg.epsilon,
                                            cfg.beta, num_sequences=B * G)
                self.add_grads(g_rl, torch.autograd.grad(l_rl, self.params, allow_unused=True))
                if gta:  # the guess target in a forward of its own, so the RL graph is freed by its backward
                    with guess_time():  # rather than kept for a second one (a lower peak: docs/speed-log.md)
                        guess_logp = rollout.sequence_logprobs(self.model, mb.prompts, *mb.guess, self.bf16)
                        l_sft = losses.sft_loss(guess_logp, mb.guess[1], sft_normaliser)
                        self.add_grads(g_sft, torch.autograd.grad(l_sft, self.params, allow_unused=True))
                        means.add({"loss/sft": float(l_sft.detach())})
                means.add({"loss/rl": float(l_rl.detach())})
                kl_sum += float(st["kl_sum"])
                clipped += float(st["clipped_sum"])
                tokens += float(st["tokens"])
            means.add({"kl": kl_sum / max(tokens, 1), "clip_fraction": clipped / max(tokens, 1)})
            g_rl = self.sum_grads(g_rl)  # the conflict rule sees the whole step's gradients
            if gta:
                with guess_time():
                    g_sft = self.sum_grads(g_sft)
                    own = [i for i, g in enumerate(g_rl) if g is not None]  # all, unless gradients are sharded
                    _, info = combine([g_sft[i] for i in own], [g_rl[i] for i in own], cfg.lambda1, cfg.lambda2,
                                      cfg.conflict, sum_across=self.dist.sum_scalars if self.owners else None,
                                      rl_signal=rl_signal)
                    grads = g_rl  # combine wrote the result into g_rl's tensors
                    means.add({"conflict/cosine": info["cosine"], "conflict/sft_dropped": info["sft_dropped"],
                               "grad_norm/sft": info["norm_sft"], "grad_norm/rl": info["norm_rl"]})
            else:
                grads = [None if g is None else cfg.lambda2 * g for g in g_rl] if cfg.lambda2 != 1 else g_rl
            norm = self.apply_update(grads)  # the combined gradient's norm, before clipping
            means.add({"grad_norm": norm})
            if gta:  # the RL gradient's share of the update (0 where SFT alone is applied: no RL signal)
                means.add({"rl_share": abs(cfg.lambda2) * info["norm_rl"] / norm if norm > 0 and info["rl_signal"] else 0.0})
        metrics.update(means.sums)
        if gta:
            metrics["guess_s"] = guess_time.total
        metrics["_tokens"] = float(lengths.sum())
        return metrics

    # ---------------------------------------------------------------- the loop
    def train(self, until: int | None = None) -> Path:
        """Run to the last step (or stop after step `until`, as an interruption would)."""
        cfg = self.cfg
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"gta train ({cfg.method})",
                   disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        while self.step < min(self.total_steps, until or self.total_steps):
            t0 = time.perf_counter()
            idx = self.batch_indices(self.step)  # 1.
            m = self.sft_step(idx) if not cfg.uses_rl else self.rl_step(idx, self.step)  # 2.-7.
            self.step += 1
            if self.reference is not None and cfg.ref_sync_steps and self.step % cfg.ref_sync_steps == 0:  # 8.
                for r, p in zip(self.reference, self.params):
                    r.copy_(p.detach())
            m["step_time_s"] = time.perf_counter() - t0
            m["tokens_per_s"] = m.pop("_tokens") / m["step_time_s"]
            m = self.dist.reduce_metrics(m, summed=("loss/rl", "loss/sft", "tokens_per_s"))
            m["lr"] = self.scheduler.get_last_lr()[0]
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.eval_examples and self.dist.is_main:
                m.update(self.evaluate())
            if self.dist.is_main and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                self.metrics_log.write(self.step, m)
            bar.update(1)
            bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in m.items()
                             if k in ("reward/accuracy", "guess/accuracy", "loss/sft", "eval/accuracy")})
            if self.step % cfg.save_every == 0 or self.step == self.total_steps:
                if hasattr(self.optimizer, "consolidate_state_dict"):  # sharded: gather the states on process 0
                    self.optimizer.consolidate_state_dict(to=0)
                if self.dist.is_main:
                    self.save()
                self.dist.barrier()
        bar.close()
        if self.metrics_log is not None:
            self.metrics_log.close()
        return self.run_dir

    def evaluate(self) -> dict:
        from .evaluate import evaluate_examples

        result, _ = evaluate_examples(self.sync_sampler(), self.tokenizer, self.eval_examples, self.labels,
                                      self.template, self.cfg.max_completion_length, self.cfg.max_prompt_length,
                                      bf16=False, progress=False)
        self.model.train(not self.cfg.uses_rl)
        out = {"eval/accuracy": result["accuracy"], "eval/f1": result["f1_weighted"]}
        if "guess_accuracy" in result:
            out["eval/guess_accuracy"] = result["guess_accuracy"]
        return out

    def save(self) -> Path:
        ref = dict(zip(self.names, self.reference)) if self.reference is not None else None
        return checkpoint.save(self.run_dir, self.step, self.model, self.tokenizer, self.optimizer, self.scheduler,
                               ref, self.cfg.to_dict(), self.cfg.keep_checkpoints)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    return Trainer(cfg, resume=resume, progress=progress).train()
