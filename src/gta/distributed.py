"""Data-parallel training over several processes with torch.distributed (gloo on CPU, NCCL on CUDA).

Launch with a launcher that sets WORLD_SIZE/RANK/MASTER_ADDR, e.g.
    torchrun --nproc_per_node 2 -m gta train ...
    accelerate launch --multi_gpu --num_processes 2 -m gta train ...   (torchrun underneath; works on CPU too)
    accelerate launch --cpu --num_processes 2 -m gta train ...   (see `cpu_processes_asked`)
or through mpirun (Open MPI, Intel MPI, MVAPICH set their own rank variables), as accelerate's CPU launcher
does with a hostfile: accelerate launch --cpu --num_processes 2 --mpirun_hostfile HOSTFILE -m gta train ...
Every process holds the whole model and takes an equal, contiguous share of each step's prompts; the two
gradients g_RL and g_SFT are summed across processes *before* the conflict rule, so every process computes
the same dot product, makes the same decision and applies the same update.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
        for bucket in _buckets(tensors, range(len(tensors))):
            flat = torch.cat([tensors[b].reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            for b, piece in zip(bucket, flat.split([tensors[b].numel() for b in bucket])):
                tensors[b].copy_(piece.view_as(tensors[b]))
        return tensors

    def reduce_to_owners(self, tensors: list[torch.Tensor], owners: list[int]) -> list[torch.Tensor | None]:
        """ZeRO stage 2: sum each tensor across processes onto its owner process only, in flat buckets;
        returns the sums of this process's own tensors and None for the others (whose memory is freed)."""
        out: list[torch.Tensor | None] = [None] * len(tensors)
        for owner in range(self.world):
            for bucket in _buckets(tensors, [i for i, o in enumerate(owners) if o == owner]):
                flat = torch.cat([tensors[b].reshape(-1) for b in bucket])
                dist.reduce(flat, dst=owner)
                if owner == self.rank:
                    for b, piece in zip(bucket, flat.split([tensors[b].numel() for b in bucket])):
                        out[b] = piece.view_as(tensors[b])
        return out

    def sum_scalars(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a small float64 tensor across processes (dot products and norms of sharded gradients)."""
        if self.world > 1:
            dist.all_reduce(values)
        return values

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


def _buckets(tensors: list[torch.Tensor], indices, limit: int = 2 ** 24):
    """Consecutive groups of `indices` whose tensors hold about `limit` elements together."""
    bucket, size = [], 0
    for i in indices:
        bucket.append(i)
        size += tensors[i].numel()
        if size >= limit:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


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


def cpu_processes_asked(env=os.environ, parent_cmdline: Path | None = None) -> int:
    """N when this process was started by `accelerate launch --cpu --num_processes N` (N > 1) without mpirun, else 0.

    accelerate (1.15) starts several CPU processes only through mpirun; without a hostfile its simple launcher
    starts this one process, with MASTER_ADDR set but no rank variables and no process count in the
    environment. The count is on the launcher's command line, our parent process: read it (Linux /proc) with
    accelerate's own argument parser, so every spelling accelerate accepts is understood."""
    if not (env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in env) or \
            "WORLD_SIZE" in env or any(size in env for _, size, _ in _MPI_VARS):
        return 0
    try:
        argv = (parent_cmdline or Path(f"/proc/{os.getppid()}/cmdline")).read_bytes().decode().split("\0")
        from accelerate.commands.launch import launch_command_parser

        launch_args = argv[argv.index("launch") + 1:]
        n = launch_command_parser().parse_known_args(launch_args)[0].num_processes
    except (Exception, SystemExit):  # not Linux, not launched by `accelerate launch`, or a parser we do not know
        return 0
    return n if n and n > 1 else 0


def start_processes(n: int, gta_argv: list[str], env=os.environ) -> int:
    """Start the n data-parallel processes accelerate's CPU launcher did not, with torchrun (torch's own
    launcher) on accelerate's MASTER_ADDR/MASTER_PORT, and wait for them; returns their exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--nnodes", "1",
           "--master_addr", env.get("MASTER_ADDR", "127.0.0.1"), "--master_port", env.get("MASTER_PORT", "29500"),
           "-m", "gta", *gta_argv]
    print(f"[gta] accelerate's CPU launcher started one process without mpirun: starting {n} with torchrun",
          flush=True)
    return subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}).returncode


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
