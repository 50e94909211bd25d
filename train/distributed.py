"""torchrun / DistributedDataParallel support: one process per device, NCCL on GPUs, gloo
on CPUs. ``fer-train`` runs unchanged under ``torchrun --nproc_per_node N``.

Every rank computes the same epoch order (a function of seed and epoch), cuts it into global
batches and keeps its own contiguous slice of each: the union of the ranks' samples is the
single-process batch, and resume works for any world size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from fer_edge.edge.errors import FerEdgeError


@dataclass(frozen=True)
class DistContext:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes in the environment (no-op without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(world, rank, local), device


def shard(batch: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's contiguous slice of a global batch."""
    if not ctx.enabled:
        return batch
    bounds = np.linspace(0, len(batch), ctx.world + 1).round().astype(int)
    return batch[bounds[ctx.rank]:bounds[ctx.rank + 1]]


def check_batch(batch_size: int, ctx: DistContext) -> None:
    if ctx.enabled and batch_size % ctx.world:
        raise FerEdgeError(f"--batch-size {batch_size} (the global batch) must be divisible by "
                           f"the {ctx.world} processes")


def sum_across(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(index: np.ndarray, rows: np.ndarray, n: int, ctx: DistContext) -> np.ndarray:
    """Reassemble per-rank predictions ``rows`` (for ``index``) into one [n, ...] array."""
    if not ctx.enabled:
        return rows
    parts: list = [None] * ctx.world
    dist.all_gather_object(parts, (index, rows))
    out = np.zeros((n, *rows.shape[1:]), rows.dtype)
    for idx, r in parts:
        out[idx] = r
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
