"""Data-parallel training over several processes with torch.distributed (gloo on CPU, NCCL on CUDA).

Launch with a launcher that sets WORLD_SIZE/RANK/MASTER_ADDR, e.g.
    torchrun --nproc_per_node 2 -m gta train ...
    accelerate launch --multi_gpu --num_processes 2 -m gta train ...   (torchrun underneath; works on CPU too)
or through mpirun (Open MPI, Intel MPI, MVAPICH set their own rank variables), as accelerate's CPU launcher
does: accelerate launch --cpu --num_processes 2 --mpirun_hostfile HOSTFILE -m gta train ...
Every process holds the whole model and takes an equal, contiguous share of each step's prompts; the two
gradients g_RL and g_SFT are summed across processes *before* the conflict rule, so every process computes
the same dot product, makes the same decision and applies the same update.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import ConfigError


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


# (rank, world size, local rank) variables of the MPI launchers accelerate's CPU launcher uses
_MPI_VARS = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
             ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
             ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"))


def _world(env) -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment."""
    if "WORLD_SIZE" in env:
        return int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    for rank, size, local in _MPI_VARS:
        if size in env:
            return int(env[rank]), int(env[size]), int(env.get(local, env[rank]))
    if env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in env:
        # accelerate sets MASTER_ADDR only when asked for several processes, but without mpirun its CPU
        # launcher starts just this one; training alone would silently use 1/N of the asked-for hardware.
        raise ConfigError("`accelerate launch --cpu --num_processes N` started a single process: accelerate starts "
                          "several CPU processes only through mpirun (--mpirun_hostfile FILE). Use `accelerate launch "
                          "--multi_gpu --num_processes N` (torchrun underneath, works on CPU) or `torchrun "
                          "--nproc_per_node N`, or drop --num_processes for one process")
    return 0, 1, 0


def setup(device: torch.device) -> Dist:
    rank, world, local = _world(os.environ)
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    if device.type == "cuda":
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size())
