"""Where the training step's tensors live: one process runs the plain model; several run torch's FSDP2.

Launch several processes with torch's launcher (or one that starts it):
    torchrun --nproc_per_node N -m gta train ...                                  one machine
    torchrun --nnodes M --nproc_per_node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m gta train ...
    accelerate launch --multi_gpu --num_processes N -m gta train ...              (torchrun underneath; CPU too)
    mpirun -n N python -m gta train ...       (Open MPI, Intel MPI and MVAPICH rank variables; MASTER_ADDR/PORT set)

With N > 1 processes, each decoder layer and then the whole model are wrapped by `fully_shard`: a process holds
1/N of the weights, of each gradient and of AdamW's states, and all-gathers a layer's weights for its forward and
backward. Each process takes an equal, contiguous share of a step's prompts. The conflict rule needs only the dot
product and the norms of g_SFT and g_RL: each process computes them on its shards and they are summed across
processes, so every process makes the same decision and no process ever holds a whole gradient.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import os

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from .config import ConfigError
from .conflict import combine

# (rank, world size, local rank) variables of the MPI launchers (accelerate's CPU launcher uses mpirun)
_MPI_VARS = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
             ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
             ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"))


# How long a process waits in a collective for the others (torch's default: 10 min for NCCL, 30 for gloo). The other
# processes wait at a barrier while process 0 evaluates on the held-out subset and writes a checkpoint: at paper
# scale (a 3-4B model, 4,096-token prompts, a few hundred held-out examples decoded one by one) that takes longer.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


def _world(env) -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment."""
    if "WORLD_SIZE" in env:
        return int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    for rank, size, local in _MPI_VARS:
        if size in env:
            return int(env[rank]), int(env[size]), int(env.get(local, env[rank]))
    if env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in env:
        # accelerate sets MASTER_ADDR only when asked for several processes, but without mpirun its CPU launcher
        # starts just this one: training alone would silently use 1/N of the asked-for hardware.
        raise ConfigError("`accelerate launch --cpu --num_processes N` started a single process: accelerate starts "
                          "several CPU processes only through mpirun (--mpirun_hostfile FILE). Use `torchrun "
                          "--nproc_per_node N` or `accelerate launch --multi_gpu --num_processes N` (torchrun "
                          "underneath, works on CPU), or drop --num_processes for one process")
    return 0, 1, 0


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: the local shard of an FSDP2 DTensor (a view: writes go to the shard)."""
    return t.to_local() if isinstance(t, DTensor) else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (all-gathered from every process's shard when sharded)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def memory_mb(groups: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """MB held by this process in each group of tensors (local shards: what this process stores)."""
    return {f"memory/{name}_mb": sum(local(t).numel() * local(t).element_size() for t in tensors) / 2 ** 20
            for name, tensors in groups.items()}


@torch.no_grad()
def materialize(module, device: torch.device) -> None:
    """Allocate a module whose parameters are on the meta device (uninitialised), keeping its buffers' values (rotary
    frequencies: computed at construction, not in any state dict)."""
    buffers = dict(module.named_buffers())
    module.to_empty(device=device)
    for name, b in module.named_buffers():
        b.copy_(buffers[name])
    # to_empty gives each module's parameter its own storage, which unties tied embeddings (except FSDP2's DTensors,
    # swapped in place): tie them again
    (module.get_base_model() if hasattr(module, "get_base_model") else module).tie_weights()


class Engine:
    """The process group, the model's wrapping, and the gradient handling of a step (accumulate, reduce, combine,
    clip, step). With one process every method is the plain single-device operation."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rank, self.world, local_rank = _world(os.environ)
        if self.world > 1:
            if device.type == "cuda":
                torch.cuda.set_device(local_rank)
            if not dist.is_initialized():
                os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
                os.environ.setdefault("MASTER_PORT", "29500")
                dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=self.rank,
                                        world_size=self.world, timeout=COLLECTIVE_TIMEOUT)
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # bf16 on CUDA with several processes: FSDP2's mixed precision (bf16 compute, fp32 reductions and master
        # weights) instead of autocast. Written for GPUs, not run on one yet (README, "Several processes").
        self.mixed_precision = False
        self.model = None  # the FSDP2 root once wrapped
        # False (--no-sync-each-micro-batch): only the last micro-batch of a backward pass reduce-scatters, the
        # earlier ones accumulate whole (unsharded) gradients on each process
        self.sync_each_micro_batch = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1

    # ------------------------------------------------------------------ the model
    def wrap(self, model, bf16: bool):
        """fully_shard each decoder layer (the classes the model lists in `_no_split_modules`), then the root.
        The root also reshards after its forward, so between forwards every parameter is its sharded DTensor (the
        trainer writes the reference snapshot into those shards). One process: the model as it is."""
        if not self.sharded:
            return model
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kwargs = {}
        if bf16 and self.device.type == "cuda":
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            self.mixed_precision = True
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        blocks = set(getattr(base, "_no_split_modules", None) or [])
        layers = [m for m in model.modules() if type(m).__name__ in blocks]
        if not layers:
            raise ConfigError(f"{type(base).__name__} names no decoder-layer class (_no_split_modules); "
                              "several processes need one to shard the model layer by layer")
        for layer in layers:
            fully_shard(layer, **kwargs)
        fully_shard(model, reshard_after_forward=True, **kwargs)
        self.model = model
        return model

    def sampler(self, model, bf16: bool, share: bool = False):
        """The model rollouts sample from. One process: the policy itself in float32, or a bf16 copy (decoding with
        bf16 weights is faster than fp32 weights under autocast, which re-casts every weight at every token), or
        the policy itself when `share` (its bulk is already bf16: a LoRA run's frozen base). Several: a whole copy
        (bf16 or float32), refreshed from the shards before each rollout: decoding from the sharded policy would
        all-gather every layer at every decoded token (docs/design.md, "Several processes"). Call before `wrap`."""
        if not self.sharded and (share or not bf16):
            return model
        return copy.deepcopy(model).to(torch.bfloat16 if bf16 else torch.float32).eval()

    @torch.no_grad()
    def refresh(self, sampler, model, frozen_too: bool = False) -> None:
        """Bring the sampler copy up to date with the policy's trainable tensors (gathered from the shards, one at
        a time), and its frozen ones too if asked."""
        ours, theirs = list(sampler.named_parameters()), list(model.named_parameters())
        if [n for n, _ in ours] != [n for n, _ in theirs]:
            raise RuntimeError("the sampler copy's parameters do not match the policy's")
        for (_, s), (_, p) in zip(ours, theirs):
            if p.requires_grad or frozen_too:
                s.copy_(full(p))

    def fill(self, model, whole, sampler) -> None:
        """Give the sharded policy, built on the meta device (`load_model(empty=True)`) and wrapped, its weights:
        process 0 holds the whole model (`whole`, on the CPU) and broadcasts it tensor by tensor, each process keeping
        its shards (torch.distributed.checkpoint's broadcast_from_rank0). Then the sampler copy, also built on the
        meta device, is filled from the shards. No process other than 0 ever holds the whole model in its training
        precision (the sampler is a whole copy on each, in its sampling precision, by design)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        materialize(model, self.device)
        set_model_state_dict(model, whole.state_dict() if self.is_main else {},
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        if sampler is not model:
            materialize(sampler, self.device)
            self.refresh(sampler, model, frozen_too=True)

    @contextlib.contextmanager
    def swapped(self, params: list[torch.Tensor], values: list[torch.Tensor]):
        """Run with `values` (the reference snapshot) in place of the parameters. One process: a pointer swap (no
        copy); several: the local shards are copied in and back (FSDP2 gathers from its own shard storage)."""
        if not self.sharded:
            for i, p in enumerate(params):
                p.data, values[i] = values[i], p.data
            try:
                yield
            finally:
                for i, p in enumerate(params):
                    p.data, values[i] = values[i], p.data
            return
        shards, others = [local(p.detach()) for p in params], [local(v) for v in values]
        self._exchange(shards, others)
        try:
            yield
        finally:
            self._exchange(shards, others)

    @staticmethod
    @torch.no_grad()
    def _exchange(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
        """Swap the contents of a[i] and b[i] in place, one tensor's copy at a time (not a copy of all of them)."""
        for x, y in zip(a, b):
            tmp = x.clone()
            x.copy_(y)
            y.copy_(tmp)

    # ------------------------------------------------------------------ gradients
    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        """Accumulate d loss / d theta into the parameters' .grad. Each process's loss is its share of the step's
        total (the normalisers count the whole step); FSDP2 averages gradients over processes, so the loss is
        scaled by N to make the reduced gradient the total's. `last`: the last micro-batch of this gradient's
        accumulation; without `sync_each_micro_batch` the earlier ones skip FSDP2's reduce-scatter (each process
        then holds a whole gradient until the last one reduces it: less communication, more memory)."""
        if self.sharded and not self.sync_each_micro_batch:
            self.model.set_requires_gradient_sync(last)
        (loss * self.world if self.sharded else loss).backward()

    def take_grads(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """The accumulated gradient (summed over micro-batches and processes; sharded with FSDP2), moved out of
        .grad so the next backward accumulates a separate one (g_RL, then g_SFT). Unused parameters get zeros."""
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        for p in params:
            p.grad = None
        return grads

    def sum_scalars(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a small float64 tensor across processes (partial dot products and norms of sharded gradients)."""
        if self.sharded:
            dist.all_reduce(values)
        return values

    def combine(self, g_sft, g_rl, lambda1: float, lambda2: float, mode: str, rl_signal: bool):
        """The conflict rule (conflict.combine) on this process's shards, the dot product and norms summed across
        processes; the result is written into g_rl's tensors."""
        _, info = combine([local(g) for g in g_sft], [local(g) for g in g_rl], lambda1, lambda2, mode,
                          sum_across=self.sum_scalars if self.sharded else None, rl_signal=rl_signal)
        return g_rl, info

    def step(self, params, grads, optimizer, scheduler, max_grad_norm: float) -> float:
        """Clip the gradient to max_grad_norm (0: no clipping) and take an optimizer step; returns the norm before
        clipping (computed from the shards, over every process)."""
        for p, g in zip(params, grads):
            p.grad = g
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(full(norm))

    @torch.no_grad()
    def adamw_direction_dots(self, params, optimizer, lr: float, vectors: list[list[torch.Tensor]]):
        """The direction of the AdamW step just taken, d = -(p_new - p_old) / lr = m_hat / (sqrt(v_hat) + eps)
        + weight_decay p_old (torch's AdamW), read back from the optimizer's state one tensor at a time (no
        parameter-sized copy of the weights or of the update). Returns ([d . v for v in vectors], |d|), summed over
        processes' shards. `vectors`: lists of per-parameter tensors (this process's shards)."""
        group = optimizer.param_groups[0]
        (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
        sums = torch.zeros(len(vectors) + 1, dtype=torch.float64, device=self.comm_device)
        for k, p in enumerate(params):
            state = optimizer.state[p]
            if "step" not in state:  # no step taken with this parameter
                continue
            t = float(state["step"])
            m, v = local(state["exp_avg"]), local(state["exp_avg_sq"])
            d = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
            if wd:  # p_new = p_old (1 - lr wd) - lr d_adam
                d = d + wd * (local(p.detach()) + lr * d) / (1 - lr * wd)
            d = d.reshape(-1)
            for j, vec in enumerate(vectors):
                sums[j] += torch.dot(d, local(vec[k]).reshape(-1).to(d.dtype)).double().to(sums.device)
            sums[-1] += torch.dot(d, d).double().to(sums.device)
        sums = self.sum_scalars(sums)
        return [float(x) for x in sums[:-1]], float(sums[-1].sqrt())

    # ------------------------------------------------------------------ metrics, synchronisation
    def reduce_metrics(self, metrics: dict[str, float], summed: tuple[str, ...] = (),
                       maxed: tuple[str, ...] = ()) -> dict[str, float]:
        """Combine scalar metrics over processes: `summed` keys are each process's share of a total (the losses),
        memory/* and `maxed` keys take the largest process's figure, the others are averaged (each process holds an
        equal share of the step's prompts; kl and clip_fraction are then the mean of per-process token averages)."""
        if not self.sharded:
            return metrics
        out = {}
        for peak, op in ((False, dist.ReduceOp.SUM), (True, dist.ReduceOp.MAX)):
            keys = sorted(k for k in metrics if (k.startswith("memory/") or k in maxed) == peak)
            if keys:
                t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=self.comm_device)
                dist.all_reduce(t, op=op)
                out.update({k: float(v) if peak or k in summed else float(v) / self.world for k, v in zip(keys, t)})
        return out

    @property
    def comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def gather(self, items: list) -> list:
        """Every process's list, joined in process order (on every process)."""
        if not self.sharded:
            return items
        parts = [None] * self.world
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in part]

    def barrier(self) -> None:
        if self.sharded:
            dist.barrier()
