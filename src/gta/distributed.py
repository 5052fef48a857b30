"""Data-parallel training over several processes with torch.distributed (gloo on CPU, NCCL on CUDA).

Launch with a launcher that sets WORLD_SIZE/RANK/MASTER_ADDR, e.g.
    torchrun --nproc_per_node 2 -m gta train ...
    accelerate launch --multi_gpu --num_processes 2 -m gta train ...   (torchrun underneath; works on CPU too)
Every process holds the whole model and takes an equal, contiguous share of each step's prompts; the two
gradients g_RL and g_SFT are summed across processes *before* the conflict rule, so every process computes
the same dot product, makes the same decision and applies the same update.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sum each tensor across processes, in place, in flat buckets (few large messages)."""
        if self.world == 1:
            return tensors
        bucket: list[torch.Tensor] = []
        size = 0
        for t in tensors + [None]:
            if t is not None:
                bucket.append(t)
                size += t.numel()
            if bucket and (t is None or size >= 2 ** 24):
                flat = torch.cat([b.reshape(-1) for b in bucket])
                dist.all_reduce(flat)
                offset = 0
                for b in bucket:
                    b.copy_(flat[offset:offset + b.numel()].view_as(b))
                    offset += b.numel()
                bucket, size = [], 0
        return tensors

    def reduce_metrics(self, metrics: dict[str, float], summed: tuple[str, ...] = ()) -> dict[str, float]:
        """Combine scalar metrics over processes: `summed` keys are each process's share of a total (the
        losses), the others are averaged (each process holds an equal share of the step's prompts; kl and
        clip_fraction are then the mean of per-process token averages)."""
        if self.world == 1:
            return metrics
        keys = sorted(metrics)
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) if k in summed else float(v) / self.world for k, v in zip(keys, t)}

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(dist.get_rank(), dist.get_world_size())
