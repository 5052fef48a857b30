"""The training loop for sft, grpo, gta and gta-rl. One step (see README, "The algorithm"):

  1. take the step's B prompts (seeded order, one epoch after another)
  2. rollout: G completions per prompt, sampled from one prefill of that prompt
  3. rewards: format + accuracy for each completion (guess accuracy logged, not rewarded)
  4. advantages: rewards normalised within each group of G
  5. masks: RL loss on completion tokens (gta: guess span excluded); gta: guess target = gold label
  6. reference log-probs (no grad) when beta > 0
  7. mu optimizer updates on this batch; each accumulates, over micro-batches, g_RL (one shared-prefix forward
     of the prompts and their G completions) and then, for gta, g_SFT (one forward of each prompt and its gold
     guess), summed across processes, applies the conflict rule, clips, steps (engine.py: the gradient handling)
  8. refresh the reference every `ref_sync_steps`; log; evaluate; checkpoint

sft skips 2-6: its step is cross-entropy on the label tokens of B examples, one optimizer update.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import checkpoint, data, losses, prompts, rollout, runfolder, tracking
from .config import ConfigError, TrainConfig, write_json_atomic
from .engine import Engine, memory_mb
from .models import (bf16_supported, checkpoint_layers, fp32_head, load_model, load_tokenizer, pick_device,
                     sampling_head, stop_token_ids)
from .rewards import TRLReward, as_reward, load_reward, reward

def fused_adamw(params: list[torch.Tensor]) -> bool:
    """torch's fused AdamW kernel where it exists (CPU and CUDA, floating-point parameters): one pass over
    each tensor instead of a dozen elementwise ops, about 3x faster here (`benchmarks/investigations/guess_pass.py`, docs/speed-log.md)."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


@dataclasses.dataclass
class Rollouts:
    """A step's rollouts on this process: B prompts (rows prompt-major), G completions o_i each."""
    prompt_ids: list[int]  # the B training examples
    ids: torch.Tensor  # o_i: completion tokens [B*G, T], T = the longest completion
    cmask: torch.Tensor  # 1 on o_i's tokens [B*G, T]
    rows: list[list[int]]  # o_i's valid tokens, B*G lists
    texts: list[str]  # o_i decoded, after the primed opening tag, B*G strings
    lengths: torch.Tensor  # |o_i| [B*G]
    truncated: list[bool]  # o_i was cut at --max-completion-length before a stop token, B*G
    sampler_logp: torch.Tensor  # log pi_sampler of o_i's tokens, as the rollout drew them [B*G, T]


@dataclasses.dataclass
class MicroBatch:
    """One micro-batch of a step's rollouts: b prompts and their G completions o_i each (rows prompt-major)."""
    prompt_ids: list[int]  # the b training examples
    prompts: rollout.Prompts  # the b prompts, left-padded: input_ids, attention_mask [b, P]
    ids: torch.Tensor  # o_i: completion tokens [b*G, T], T = this micro-batch's longest completion
    cmask: torch.Tensor  # 1 on o_i's tokens [b*G, T]
    rl_mask: torch.Tensor  # the tokens of L_RL: o_i minus, for gta, the guess span [b*G, T]
    adv: torch.Tensor  # A_i, group-normalised advantages [b*G]
    lengths: torch.Tensor  # |o_i| [b*G]
    sampler_logp: torch.Tensor  # log pi_sampler of o_i's tokens [b*G, T]
    ref: torch.Tensor | None = None  # log pi_ref of o_i's tokens [b*G, T] (beta > 0)
    old: torch.Tensor | None = None  # log pi_old, the behaviour policy: the first update's log-probs [b*G, T]
    is_weight: torch.Tensor | None = None  # min(pi_old / pi_sampler, C) per token (--vllm-importance-sampling-cap)


class UpdateMeans:
    """A step's figures as means over its mu updates: each update's value divided by mu, summed in order."""

    def __init__(self, updates: int):
        self.updates, self.sums = updates, {}

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v / self.updates


@contextlib.contextmanager
def timed(into: dict[str, float], key: str):
    """Add the seconds spent inside the `with` block to into[key]."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - t0


def adamw_with_schedule(params: list[torch.Tensor], cfg: TrainConfig, total_steps: int):
    """AdamW and its learning rate from `transformers.get_scheduler`: linear warm-up over --warmup-ratio of the
    optimizer updates, then --lr-scheduler-type (linear decay to 0 by default), as TRL's trainers schedule it."""
    from transformers import get_scheduler

    total = total_steps * (cfg.num_iterations if cfg.uses_rl else 1)  # optimizer updates
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused_adamw(params))
    return optimizer, get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total),
                                    num_training_steps=total)


def held_memory(model, sampler, params, grads, optimizer, reference) -> dict[str, float]:
    """memory/*_mb: what this process holds of the weights (trainable; frozen), the step's gradients, AdamW's states,
    the reference snapshot and the sampler copy. Activations are not counted."""
    states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    return memory_mb({"params": params, "grads": grads, "optimizer": states, "reference": reference or [],
                      "sampler": [] if sampler is model else list(sampler.parameters()),
                      **({"frozen": frozen} if frozen else {})})


class StepPlan:
    """Which prompts each step takes and how they are sampled: epoch after epoch a seeded permutation of the n
    training prompts, B a step, each process a contiguous share, one generator per prompt."""

    def __init__(self, seed: int, batch_size: int, n: int, rank: int = 0, world: int = 1):
        self.seed, self.B, self.n, self.rank, self.world = seed, batch_size, n, rank, world
        self._order: tuple[int, list[int]] = (-1, [])

    def batch_indices(self, step: int) -> list[int]:
        """Indices of the step's B prompts (all processes)."""
        out = []
        for k in range(step * self.B, (step + 1) * self.B):
            epoch, i = divmod(k, self.n)
            if self._order[0] != epoch:
                self._order = (epoch, random.Random(self.seed * 100_003 + epoch).sample(range(self.n), self.n))
            out.append(self._order[1][i])
        return out

    def local(self, idx: list[int]) -> tuple[list[int], range]:
        """This process's contiguous share of the step's prompts, and their positions in the step."""
        n = len(idx) // self.world
        positions = range(self.rank * n, (self.rank + 1) * n)
        return [idx[k] for k in positions], positions

    def seeds(self, step: int, positions: range) -> list[int]:
        """One seed per prompt, from (seed, step, position of the prompt in the step): a resumed run samples what it
        would have, and so does a run split over any number of processes."""
        return [(self.seed * 1_000_003 + step) * 1_009 + k for k in positions]

    def generators(self, step: int, positions: range) -> list[torch.Generator]:
        """One generator per prompt, seeded by `seeds` (CPU generators: the same numbers on any device)."""
        return [torch.Generator().manual_seed(s) for s in self.seeds(step, positions)]


def completion_stats(texts: list[str], truncated: list[bool], template: str) -> dict[str, float]:
    """completions/truncated: the share cut at --max-completion-length before a stop token; completions/placeholder_*:
    the share whose guess, think or answer span is the format line's placeholder word (a copy of the prompt)."""
    parsed = [prompts.parse(t, template) for t in texts]
    out = {"completions/truncated": sum(truncated) / len(texts)}
    for span, word in prompts.placeholders(template).items():
        out[f"completions/placeholder_{span}"] = sum(prompts.label_matches(getattr(p, span), word)
                                                     for p in parsed) / len(texts)
    return out


LOG_LINE_KEYS = ("reward/total", "reward/format", "reward/accuracy", "guess/accuracy", "loss/sft", "loss/rl", "kl",
                 "entropy", "groups/informative", "rl_share", "grad_norm", "eval/accuracy", "eval/f1")


def log_line(step: int, total: int, m: dict[str, float]) -> str:
    """The plain progress line: the step, the main metrics present, the step's seconds."""
    figures = "  ".join(f"{k} {m[k]:.4g}" for k in LOG_LINE_KEYS if k in m)
    return f"[gta] step {step}/{total}  {figures}  {m['step_time_s']:.1f} s/step"


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True,
                 reward_fn: Callable[..., dict[str, float]] | None = None):
        self.cfg, self.progress = cfg, progress
        # (completion, gold, template, labels=, truncated=) -> {"total", "format", "accuracy"[, "guess"]}, or a
        # TRL-style f(prompts, completions, **columns) -> list[float] (rewards.TRLReward); --reward-fn names one
        if reward_fn is None:
            reward_fn = load_reward(cfg.reward_fn) if cfg.reward_fn else reward
        self.reward_fn = as_reward(reward_fn)
        self.backends = tracking.resolve(cfg.report_to)  # --report-to: checked before anything is loaded
        self.run_dir = Path(cfg.output)
        self.device = pick_device(cfg.device)
        # Several processes (torchrun, accelerate launch, mpirun): FSDP2, each process an equal share of a step's
        # prompts. One process: the plain model (engine.py).
        self.engine = Engine(self.device)
        self.engine.sync_each_micro_batch = cfg.sync_each_micro_batch
        if cfg.batch_size % (self.engine.world * cfg.micro_batch_size):
            raise ConfigError(f"--batch-size {cfg.batch_size} must be a multiple of processes ({self.engine.world}) "
                              f"x --micro-batch-size {cfg.micro_batch_size}")
        runfolder.check(self.run_dir, cfg, resume)  # on every process, so a refusal stops them all
        self.engine.barrier()  # every process has checked the folder before the first process writes to it
        if self.engine.sharded and self.engine.is_main:
            print(f"[gta] FSDP2 training on {self.engine.world} processes (weights, gradients and AdamW states sharded)")
        self.bf16 = cfg.bf16 and bf16_supported(self.device)
        if cfg.bf16 and not self.bf16:
            print("[gta] bf16 autocast is not fast on this device; training in float32")
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        # Data and prompts
        self.labels, self.train_examples, self.eval_examples, held_out_note = data.training_sets(
            cfg.dataset, cfg.data_dir, cfg.text_column, cfg.label_column, cfg.train_limit, cfg.eval_limit,
            cfg.seed if cfg.data_seed is None else cfg.data_seed, evaluate=cfg.eval_every > 0,
            eval_split_ratio=cfg.eval_split_ratio, eval_on_test=cfg.eval_on_test, label_names=cfg.label_names,
            files=cfg.files, hub=cfg.hub)
        if held_out_note and self.engine.is_main:
            print(f"[gta] {held_out_note}")
        self.template = prompts.METHOD_TEMPLATE[cfg.method]
        self.tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
        self.prompts, truncated = prompts.make_prompts(
            self.tokenizer, [ex.text for ex in self.train_examples], self.labels, self.template, cfg.max_prompt_length,
            cfg.instructions, cfg.system_prompt)
        if truncated:
            print(f"[gta] {truncated} of {len(self.prompts)} training texts were cut to fit "
                  f"--max-prompt-length {cfg.max_prompt_length}")

        # Model (a resumed run's weights go in before sharding), sampler, optimizer, schedule, reference
        # LoRA's frozen base in bf16 where bf16 is the compute precision (or asked for); trained weights stay float32
        self.base_dtype = torch.bfloat16 if cfg.lora_r and (cfg.dtype == "bfloat16" or cfg.dtype == "auto" and
                                                             self.bf16) else torch.float32
        load = functools.partial(load_model, cfg.model, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                 trust_remote_code=cfg.trust_remote_code, dtype=self.base_dtype,
                                 lora_dropout=cfg.lora_dropout, lora_target_modules=cfg.lora_target_modules,
                                 attn_implementation=cfg.attn_implementation)
        resume_from = checkpoint.latest(self.run_dir) if resume else None
        if resume and resume_from is None and self.engine.is_main:
            print(f"[gta] --resume: nothing to resume in {self.run_dir} (no checkpoint yet); starting a new run")
        # Several processes: process 0 alone reads the model (on the CPU), every process builds it on the meta device,
        # shards it, and receives its shards from process 0 (Engine.fill): no other process holds the whole model
        whole = load(device="cpu") if self.engine.is_main or not self.engine.sharded else None
        if whole is not None and resume_from is not None:
            checkpoint.load_weights(whole, resume_from)
        model = load(empty=True) if self.engine.sharded else whole.to(self.device)
        self.stop_ids = stop_token_ids(self.tokenizer, model)
        # RL methods run every forward (rollout, policy, behaviour, reference, guess) without dropout (TRL leaves
        # this to its `disable_dropout` option): dropout would make the ratio pi_theta / pi_old noisy. The sft
        # baseline trains as usual SFT does.
        model.train(not cfg.uses_rl)
        # rollouts sample from a bf16 copy, or from the policy itself where its weights already are what sampling reads
        # (float32 without bf16; a LoRA run's bf16 base, its small float32 adapters under autocast)
        # (--rollout-engine vllm: vLLM holds its own copy, and the policy is only ever read to push its weights there)
        self.sampler = model if cfg.rollout_engine == "vllm" else self.engine.sampler(
            model, self.bf16, share=self.base_dtype == torch.bfloat16)
        fp32_head(model)  # after the sampler's copy: every log-prob pass reads fp32 logits, rollouts keep theirs
        if cfg.gradient_checkpointing:
            checkpoint_layers(model)
        self.model = self.engine.wrap(model, self.bf16)
        if self.engine.sharded:
            self.engine.fill(self.model, whole, self.sampler)
        del whole
        self.autocast = self.bf16 and not self.engine.mixed_precision  # CUDA + FSDP2: its own bf16 policy instead
        self.vllm = self._vllm_engine() if cfg.rollout_engine == "vllm" else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * math.ceil(len(self.prompts) / cfg.batch_size)))
        self.optimizer, self.scheduler = adamw_with_schedule(self.params, cfg, self.total_steps)
        # Reference policy: a snapshot of the trainable tensors (their local shards with FSDP2), swapped in for its
        # forwards. The same for full fine-tuning and LoRA (there: base + the adapter at the last refresh).
        self.reference = [p.detach().clone() for p in self.params] if cfg.uses_rl and cfg.beta != 0 else None

        self._targets: dict[tuple[int, str], list[int]] = {}
        self.step = 0
        record = checkpoint.read_best(self.run_dir) if resume else None
        self.best = record["value"] if record and record.get("metric") == cfg.save_best else float("-inf")
        self.plan = StepPlan(cfg.seed, cfg.batch_size, len(self.prompts), self.engine.rank, self.engine.world)
        if resume_from is not None:
            self._resume(resume_from)
        elif self.engine.is_main:
            write_json_atomic(self.run_dir / "labels.json", self.labels)
            for name in runfolder.LOGS:  # from a run killed before its first checkpoint
                (self.run_dir / name).unlink(missing_ok=True)
        if self.engine.is_main:  # on resume, the settings that may change (e.g. a longer run) are the run's now
            cfg.save(self.run_dir / "config.json")
            print(self.summary())
        self.engine.barrier()
        self.metrics_log = runfolder.MetricsLog(self.run_dir, tracking.Tracker(
            self.backends, self.run_dir, cfg.run_name, cfg.to_dict())) if self.engine.is_main else None

    def _vllm_engine(self):
        from .models import resolve
        from .vllm_engine import VLLMEngine

        cfg = self.cfg
        return VLLMEngine(resolve(cfg.model), bf16=self.bf16, seed=cfg.seed, device=self.device,
                          max_model_len=cfg.vllm_max_model_len or cfg.max_prompt_length + cfg.max_completion_length,
                          gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                          sleep_mode=cfg.vllm_enable_sleep_mode, trust_remote_code=cfg.trust_remote_code,
                          max_rows=cfg.batch_size // self.engine.world * cfg.num_generations)

    def push_weights(self):
        """vLLM's weights brought up to the policy's (once per optimizer update: the schedule's count of them names
        the weights); returns the engine."""
        self.vllm.push(self.model, version=self.scheduler.last_epoch)
        return self.vllm

    def summary(self) -> str:
        """What the run is: model, device and precision, parameters, data, and the batch in prompts and completions
        (TRL counts a per-device batch in completions; gta's --batch-size counts prompts over all processes)."""
        cfg, world = self.cfg, self.engine.world
        total = sum(p.numel() for p in self.model.parameters())  # an FSDP2 DTensor's numel is the whole tensor's
        trainable = sum(p.numel() for p in self.params)
        per_step = (f"{cfg.batch_size} prompts x G={cfg.num_generations} = {cfg.batch_size * cfg.num_generations} "
                    f"completions per step" if cfg.uses_rl else f"{cfg.batch_size} examples per step")
        return (f"[gta] {cfg.method} on {cfg.model}: {self.device.type}, "
                f"{'bf16 autocast' if self.bf16 else 'float32'}, {trainable:,} of {total:,} parameters trained; "
                f"{len(self.train_examples)} training examples, {per_step} over {world} process"
                f"{'es' if world > 1 else ''} ({cfg.batch_size // world} prompts each), {self.total_steps} steps from "
                f"step {self.step}; run folder {self.run_dir}")

    def _resume(self, path: Path) -> None:
        ref = dict(zip(self.names, self.reference)) if self.reference is not None else None
        self.step = checkpoint.load_training_state(path, self.model, self.optimizer, self.scheduler, ref)
        if self.step > self.total_steps:
            raise ConfigError(f"{self.run_dir} is at step {self.step}, past the {self.total_steps} steps of --max-steps/"
                              "--epochs; --resume can train longer, not shorter")
        if self.engine.is_main:  # the metrics of steps after the checkpoint: those steps run again
            runfolder.truncate_metrics(self.run_dir, self.step)
            print(f"[gta] resumed {self.run_dir} from {path.name} (step {self.step})")

    # ---------------------------------------------------------------- small utilities
    @property
    def shares_sampler_bf16(self) -> bool:
        """Rollouts sample from the policy itself under bf16 autocast (a LoRA run's bf16 base)."""
        return self.bf16 and self.sampler is self.model

    def sync_sampler(self):
        """The model to sample from: the policy itself, or its copy brought up to date (collective with FSDP2)."""
        if self.sampler is self.model:
            self.model.eval()  # RL methods never leave eval mode (no dropout); evaluate() restores the sft mode
        else:
            self.engine.refresh(self.sampler, self.model)
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
        # the batch's common prefix (template, instructions, labels) computed once per pass; not under FSDP2, where
        # every process must run the same number of forwards whatever its prompts (rollout.encode_prompts)
        return rollout.encode_prompts(self.tokenizer, [self.prompts[i] for i in ids], self.device,
                                      share_prefix=not self.engine.sharded)

    def target_loss(self, ids: list[int], closing: str, normaliser: int, encoded=None) -> torch.Tensor:
        """The SFT loss of the examples' targets (sft: the label; gta: the guess), this process's share."""
        targets, tmask = rollout.pad_right([self.target(i, closing) for i in ids], self.tokenizer.pad_token_id,
                                           self.device)
        logp = rollout.sequence_logprobs(self.model, encoded or self.encode(ids), targets, tmask, self.autocast)
        return losses.sft_loss(logp, tmask, normaliser)

    def policy_logprobs(self, mb: MicroBatch, entropy: bool = False):
        """log pi_theta of o_i's tokens [b*G, T] under the current weights (entropy=True: and the policy's entropy at
        each of those tokens, no gradient)."""
        out, = rollout.shared_prefix_logprobs(self.model, mb.prompts, [(mb.ids, mb.cmask, self.cfg.num_generations)],
                                              self.autocast, temperature=self.cfg.temperature, entropy=entropy)
        return out

    def memory(self, grads: list[torch.Tensor]) -> dict[str, float]:
        return held_memory(self.model, self.sampler, self.params, grads, self.optimizer, self.reference)

    def update(self, grads: list[torch.Tensor]) -> float:
        return self.engine.step(self.params, grads, self.optimizer, self.scheduler, self.cfg.max_grad_norm)

    # ---------------------------------------------------------------- the steps
    def sft_step(self, idx: list[int]) -> dict:
        normaliser = self.sft_normaliser(idx, "</answer>")  # idx: the whole step's prompts (all processes)
        idx, _ = self.plan.local(idx)
        loss_sum, mbs = 0.0, self.cfg.micro_batch_size
        for start in range(0, len(idx), mbs):
            loss = self.target_loss(idx[start:start + mbs], "</answer>", normaliser)
            self.engine.backward(loss, last=start + mbs >= len(idx))
            loss_sum += float(loss.detach())
        grads = self.engine.take_grads(self.params)
        grad_norm = self.update(grads)
        tokens = sum(len(self.target(i, "</answer>")) for i in idx)
        return {"loss/sft": loss_sum, "grad_norm": grad_norm, "_tokens": tokens, **self.memory(grads)}

    def rl_step(self, idx: list[int], step: int) -> dict:
        cfg, G, gta = self.cfg, self.cfg.num_generations, self.cfg.method == "gta"
        num_sequences, sft_normaliser = len(idx) * G, self.sft_normaliser(idx, "</guess>") if gta else 1
        idx, positions = self.plan.local(idx)  # this process's prompts
        m: dict[str, float] = {}
        with timed(m, "rollout_s"):  # 2. rollout: G completions per prompt from one prefill each
            ro = self.rollout(idx, step, positions)
        rewards, parts = self.rewards(ro, m)  # 3. rewards [B, G]
        informative = (rewards.std(dim=1) > 0).double().sum()  # groups whose rewards differ: they carry an advantage
        m["groups/informative"] = float(informative) / len(idx)
        # With none in the whole step (all processes), g_RL has no direction for the conflict rule to test.
        rl_signal = bool(self.engine.sum_scalars(informative.reshape(1).to(self.device)) > 0)
        advantages = losses.group_advantages(rewards).view(-1).to(self.device)  # 4. advantages [B*G]
        self.log_completions(step + 1, ro, parts, advantages)
        micro = self.micro_batches(ro, advantages, gta)  # 5. masks, per micro-batch
        m["completion_length"] = float(ro.lengths.mean())
        if self.reference is not None:  # 6. reference log-probs (no grad)
            with torch.no_grad(), self.engine.swapped(self.params, self.reference):
                for mb in micro:
                    mb.ref = self.policy_logprobs(mb)
        means, guess_time = UpdateMeans(cfg.num_iterations), {"guess_s": 0.0}
        entropy_sum = gap_sum = kl_max = is_sum = 0.0
        for it in range(cfg.num_iterations):  # 7. mu optimizer updates on this batch of rollouts
            kl = clipped = tokens = 0.0
            for mb in micro:  # g_RL, accumulated over micro-batches (and summed over processes)
                if it == 0:  # the behaviour policy: parameters before this batch's first update
                    logp, ent = self.policy_logprobs(mb, entropy=True)
                    mb.old = logp.detach()
                    entropy_sum += float((ent * mb.cmask).sum())
                    gap_sum += float(((mb.sampler_logp - mb.old).abs() * mb.cmask).sum())
                    if cfg.vllm_importance_sampling_cap is not None:  # TRL's truncated importance sampling
                        mb.is_weight = torch.exp(mb.old - mb.sampler_logp).clamp(
                            max=cfg.vllm_importance_sampling_cap) * mb.cmask
                        is_sum += float(mb.is_weight.sum())
                else:
                    logp = self.policy_logprobs(mb)
                l_rl, st = losses.grpo_loss(logp, mb.old, mb.ref, mb.adv, mb.rl_mask, mb.lengths, cfg.epsilon,
                                            cfg.beta, num_sequences=num_sequences, is_weight=mb.is_weight)
                self.engine.backward(l_rl, last=mb is micro[-1])
                means.add({"loss/rl": float(l_rl.detach())})
                kl, clipped, tokens = kl + float(st["kl_sum"]), clipped + float(st["clipped_sum"]), tokens + float(st["tokens"])
                kl_max = max(kl_max, float(st["kl_max"]))
            means.add({"kl": kl / max(tokens, 1), "clip_fraction": clipped / max(tokens, 1)})
            g_rl = self.engine.take_grads(self.params)
            if gta:  # g_SFT of the guess targets, then the conflict rule (eqs. 10-11)
                with timed(guess_time, "guess_s"):  # the time GTA adds: the guess forward/backward and the rule
                    for mb in micro:
                        l_sft = self.target_loss(mb.prompt_ids, "</guess>", sft_normaliser, mb.prompts)
                        self.engine.backward(l_sft, last=mb is micro[-1])
                        means.add({"loss/sft": float(l_sft.detach())})
                    g_sft = self.engine.take_grads(self.params)
                    grads, info = self.engine.combine(g_sft, g_rl, cfg.lambda1, cfg.lambda2, cfg.conflict, rl_signal)
                means.add({"conflict/cosine": info["cosine"], "conflict/sft_dropped": info["sft_dropped"],
                           "conflict/sft_projected": info["projected"],
                           "grad_norm/sft": info["norm_sft"], "grad_norm/rl": info["norm_rl"]})
            else:
                grads = g_rl
                if cfg.lambda2 != 1:
                    torch._foreach_mul_(grads, cfg.lambda2)
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this update is taken with
            norm = self.update(grads)  # the combined gradient's norm, before clipping
            means.add({"grad_norm": norm})
            if gta:  # the RL gradient's share of the update (0 where SFT alone is applied: no RL signal)
                means.add({"rl_share": abs(cfg.lambda2) * info["norm_rl"] / norm if norm > 0 and info["rl_signal"] else 0.0,
                           "conflict/update_cosine_rl": self.update_cosine_rl(grads, g_sft, info, norm, lr)})
            # the gradients held at the update (g_RL, and g_SFT for gta; the rule writes into g_RL's tensors), then
            # freed: the next update's backward starts with none held
            grads_mb = memory_mb({"grads": g_rl + (g_sft if gta else [])})["memory/grads_mb"]
            grads = g_rl = g_sft = None
        # the mean entropy of pi_old over the sampled tokens: a collapse onto one output shows as it falling to ~0
        m["entropy"] = entropy_sum / max(1.0, float(ro.lengths.sum()))
        # the mean |log pi_sampler - log pi_old| over sampled tokens: the sampler (a bf16 copy, or another engine)
        # against the trainer's log-probs; the largest per-token KL to the reference over the step's updates
        m["rollout/logprob_gap"] = gap_sum / max(1.0, float(ro.lengths.sum()))
        m["kl_max"] = kl_max
        if cfg.vllm_importance_sampling_cap is not None:  # the mean truncated weight over sampled tokens
            m["rollout/is_weight"] = is_sum / max(1.0, float(ro.lengths.sum()))
        m.update(means.sums, **(guess_time if gta else {}), _tokens=float(ro.lengths.sum()))
        return {**m, **self.memory([]), "memory/grads_mb": grads_mb}

    def update_cosine_rl(self, applied: list[torch.Tensor], g_sft: list[torch.Tensor], info: dict, norm: float,
                         lr: float) -> float:
        """cos(-(the AdamW update just applied), g_RL): 1 when the step descends along the RL gradient alone. Where
        eq. 11 dropped g_SFT, AdamW's moments still carry the SFT direction of earlier steps into the update; this
        shows how much. `applied` is the gradient after the rule and clipping, sft_scale g_SFT + rl_scale g_RL times
        the clipping factor, so g_RL's dot with the update follows without a copy of g_RL."""
        clip = min(1.0, self.cfg.max_grad_norm / (norm + 1e-6)) if self.cfg.max_grad_norm else 1.0
        if info["rl_scale"] == 0 or info["norm_rl"] == 0:
            return 0.0
        (dot_applied, dot_sft), norm_d = self.engine.adamw_direction_dots(self.params, self.optimizer, lr,
                                                                           [applied, g_sft])
        dot_rl = (dot_applied / clip - info["sft_scale"] * dot_sft) / info["rl_scale"]
        return dot_rl / (norm_d * info["norm_rl"]) if norm_d > 0 else 0.0

    def rollout(self, idx: list[int], step: int, positions: range) -> Rollouts:
        batch = self.encode(idx)
        if self.vllm is not None:  # the same tensors from vLLM, each prompt's samples from the seed of its generator
            ids, cmask, sampler_logp = self.push_weights().sample(
                batch.token_lists(), self.cfg.num_generations, self.cfg.max_completion_length, self.stop_ids,
                self.tokenizer.pad_token_id, self.cfg.temperature, self.plan.seeds(step, positions))
            self.vllm.sleep()
        else:
            sampler = self.sync_sampler()
            with sampling_head(sampler):
                ids, cmask, sampler_logp = rollout.generate(
                    sampler, batch, self.cfg.num_generations, self.cfg.max_completion_length, self.stop_ids,
                    self.tokenizer.pad_token_id, self.cfg.temperature, self.plan.generators(step, positions),
                    bf16=self.shares_sampler_bf16, logprobs=True)
        rows = [c[: int(n.sum())] for c, n in zip(ids.tolist(), cmask)]  # valid tokens of each row
        texts = [prompts.prime(self.template) + self.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
        truncated = [rollout.cut_at_limit(r, self.cfg.max_completion_length, self.stop_ids) for r in rows]
        return Rollouts(idx, ids, cmask, rows, texts, cmask.sum(dim=1).float(), truncated, sampler_logp)

    def rewards(self, ro: Rollouts, m: dict) -> tuple[torch.Tensor, list[dict]]:
        """Format + accuracy of each completion, [B, G], and each completion's reward parts; the means (and the
        guess's accuracy) go into `m`."""
        G = self.cfg.num_generations
        rows = [i for i in ro.prompt_ids for _ in range(G)]  # each completion's prompt
        golds = [self.train_examples[i].label for i in rows]
        if isinstance(self.reward_fn, TRLReward):
            parts = self.reward_fn.batch(ro.texts, golds, self.template, self.labels, ro.truncated,
                                         [self.prompts[i] for i in rows], [self.train_examples[i].text for i in rows])
        else:
            parts = [self.reward_fn(t, g, self.template, labels=self.labels, truncated=cut)
                     for t, g, cut in zip(ro.texts, golds, ro.truncated)]
        for key in ("total", "format", "accuracy", "custom"):
            if key in parts[0]:
                m[f"reward/{key}"] = sum(p[key] for p in parts) / len(parts)
        if self.template == "gta":
            m["guess/accuracy"] = sum(p["guess"] for p in parts) / len(parts)
        m.update(completion_stats(ro.texts, ro.truncated, self.template))
        return torch.tensor([p["total"] for p in parts], dtype=torch.float32).view(len(ro.prompt_ids), G), parts

    def log_completions(self, step: int, ro: Rollouts, parts: list[dict], advantages: torch.Tensor) -> None:
        """completions.jsonl: --log-completions of this step's completions (process 0's), the first sample of each
        prompt, then the second, ...: step, training example, gold label, spans, rewards, advantage, the text."""
        n, G = self.cfg.log_completions, self.cfg.num_generations
        if not (n and self.engine.is_main):
            return
        rows = sorted(range(len(ro.texts)), key=lambda r: (r % G, r // G))[:n]
        records = []
        for r in rows:
            i, p = ro.prompt_ids[r // G], prompts.parse(ro.texts[r], self.template, self.labels)
            records.append({"step": step, "example": i, "sample": r % G, "gold": self.train_examples[i].label,
                            "guess": p.guess, "think": p.think, "answer": p.answer,
                            **{"guess_correct" if k == "guess" else f"reward/{k}": v for k, v in parts[r].items()},
                            "advantage": float(advantages[r]),
                            "truncated": ro.truncated[r], "completion": ro.texts[r]})
        runfolder.append_jsonl(self.run_dir / "completions.jsonl", records)
        if self.metrics_log is not None and self.metrics_log.tracker is not None:
            self.metrics_log.tracker.log_completions(step, records)

    def micro_batches(self, ro: Rollouts, advantages: torch.Tensor, gta: bool) -> list[MicroBatch]:
        """The rollouts in micro-batches of prompts, each with its G completions, trimmed to its longest one. The
        RL loss covers every completion token, minus the guess span for gta."""
        G, b, width = self.cfg.num_generations, self.cfg.micro_batch_size, ro.ids.shape[1]
        rl_mask = ro.cmask.float()
        if gta:
            span = torch.tensor([rollout.guess_span_mask(self.tokenizer, r, len(r)) + [0] * (width - len(r))
                                 for r in ro.rows], device=self.device)
            rl_mask = rl_mask * (1 - span)
        micro = []
        for s in range(0, len(ro.prompt_ids), b):
            rs, ids = slice(s * G, (s + b) * G), ro.prompt_ids[s:s + b]
            w = max(1, int(ro.cmask[rs].sum(dim=1).max()))
            micro.append(MicroBatch(ids, self.encode(ids), ro.ids[rs, :w], ro.cmask[rs, :w], rl_mask[rs, :w],
                                    advantages[rs], ro.lengths[rs], ro.sampler_logp[rs, :w]))
        return micro

    # ---------------------------------------------------------------- the loop
    def train(self, until: int | None = None) -> Path:
        """Run to the last step (or stop after step `until`, as an interruption would)."""
        cfg, engine = self.cfg, self.engine
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"gta train ({cfg.method})",
                   disable=not (self.progress and engine.is_main), dynamic_ncols=True)
        # without a bar on a terminal (--no-progress, or a batch job's log file): one plain line per --log-every steps
        plain = engine.is_main and not (self.progress and sys.stderr.isatty())
        while self.step < min(self.total_steps, until or self.total_steps):
            t0 = time.perf_counter()
            idx = self.plan.batch_indices(self.step)  # 1.
            m = self.sft_step(idx) if not cfg.uses_rl else self.rl_step(idx, self.step)  # 2.-7.
            self.step += 1
            if self.reference is not None and cfg.ref_sync_steps and self.step % cfg.ref_sync_steps == 0:  # 8.
                for r, p in zip(self.reference, self.params):
                    r.copy_(p.detach())
            m["step_time_s"] = time.perf_counter() - t0
            m["tokens_per_s"] = m.pop("_tokens") / m["step_time_s"]
            m = engine.reduce_metrics(m, summed=("loss/rl", "loss/sft", "tokens_per_s"), maxed=("kl_max",))
            m["lr"] = self.scheduler.get_last_lr()[0]
            best = False
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.eval_examples:
                m.update(self.evaluate())
                best = bool(cfg.save_best) and m[cfg.save_best] > self.best  # every process holds the same value
            if engine.is_main and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                self.metrics_log.write(self.step, m)
            bar.update(1)
            if plain and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                print(log_line(self.step, self.total_steps, m), flush=True)
            bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in m.items()
                             if k in ("reward/accuracy", "guess/accuracy", "loss/sft", "eval/accuracy")})
            if best or self.step % cfg.save_every == 0 or self.step == self.total_steps:
                saved = self.save()
                if best:
                    self.best = m[cfg.save_best]
                    if engine.is_main:
                        checkpoint.mark_best(self.run_dir, saved, self.step, cfg.save_best, self.best,
                                             cfg.keep_checkpoints)
        bar.close()
        if self.metrics_log is not None:
            self.metrics_log.close()
        return self.run_dir

    def evaluate(self) -> dict:
        """eval/* on the held-out subset, each process decoding an equal share of it with its sampler copy."""
        from .evaluate import training_metrics

        sampler, cfg, engine = self.sync_sampler(), self.cfg, self.engine
        n = len(self.eval_examples)
        share = self.eval_examples[engine.rank * n // engine.world:(engine.rank + 1) * n // engine.world]
        with sampling_head(sampler):
            out = training_metrics(sampler, self.tokenizer, share, self.labels, self.template,
                                   cfg.max_completion_length, cfg.max_prompt_length, self.shares_sampler_bf16,
                                   gather=engine.gather if engine.sharded else None,
                                   instructions=cfg.instructions, system=cfg.system_prompt,
                                   vllm=self.push_weights() if self.vllm is not None else None)
        if self.vllm is not None:
            self.vllm.sleep()
        self.model.train(not cfg.uses_rl)
        return out

    def save(self) -> Path:
        ref = dict(zip(self.names, self.reference)) if self.reference is not None else None
        return checkpoint.save(self.run_dir, self.step, self.engine, self.model, self.tokenizer, self.optimizer,
                               self.scheduler, ref, self.cfg.to_dict(), self.cfg.keep_checkpoints)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          reward_fn: Callable[..., dict[str, float]] | None = None) -> Path:
    """Train as `gta train` does; returns the run folder. `reward_fn`: see Trainer."""
    return Trainer(cfg, resume=resume, progress=progress, reward_fn=reward_fn).train()
