"""Several processes, one run: data parallel over `torchrun --nproc_per_node N -m ptv2.cli ...`.

Every rank holds the whole model and sees one shard of each global batch (`train.batch_size` is the
global batch: each rank gets batch_size / world_size examples), so the optimisation and every metric
mean the same as in one process. After backward the trainable gradients are averaged by hand in one
flat all-reduce instead of wrapping the model in DistributedDataParallel: the trainable set is small
(prompts + head), nothing needs DDP's bucketing/overlap, no parameter can trip DDP's unused-parameter
check (heads that skip a parameter), and the loop keeps calling `model.loss`, `model.prompt` as is.
Only rank 0 evaluates and writes results; the other ranks wait at the next collective.

Also here: `pick_gpu`, one GPU per job for local parallel sweeps (`train.gpu_per_job=true`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Mean of every rank's gradients (one flat all-reduce); a no-op in one process."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(p).to(p.dtype)
            offset += g.numel()

    def sum(self, *values: float, device: torch.device) -> list[float]:
        """Sum scalars over ranks (loss, token counts, a stop request) so every rank agrees."""
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()


def setup() -> Ranks:
    """Join the process group torchrun describes in the environment; one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # Rank 0 evaluates while the others wait: allow long dev sets before a collective times out.
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
    return Ranks(dist.get_rank(), dist.get_world_size())


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Start every rank from rank 0's trainable values (same seed makes them equal anyway; be sure)."""
    if dist.is_initialized():
        for p in params:
            dist.broadcast(p.data, src=0)


def pick_gpu(job_num: int) -> int | None:
    """One GPU per local sweep job: job number modulo the visible GPUs (respects CUDA_VISIBLE_DEVICES)."""
    if not torch.cuda.is_available():
        return None
    gpu = job_num % torch.cuda.device_count()
    torch.cuda.set_device(gpu)
    return gpu


class ShardedBatches(Sampler[list[int]]):
    """Wraps a batch sampler: this rank's slice of each global batch, and skip-ahead for resuming.

    `weights[i]` scales step i's mean loss so that the average over ranks of the scaled per-shard means
    is the global batch's mean (shards of a short last batch can differ in size; a rank with nothing
    left gets one example with weight 0 so the collectives stay in step).
    """

    def __init__(self, batches: Sampler[list[int]], rank: int = 0, world: int = 1) -> None:
        self.batches, self.rank, self.world = batches, rank, world
        self.epoch, self.weights = 0, []
        self.resume_at = (0, 0)  # (epoch, steps already done in it): those batches are skipped

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.batches)
        shards = [b[self.rank :: self.world] for b in batches]
        self.weights = [len(s) * self.world / len(b) for s, b in zip(shards, batches, strict=True)]
        skip = self.resume_at[1] if self.resume_at[0] == self.epoch else 0
        return iter([s or b[:1] for s, b in zip(shards, batches, strict=True)][skip:])

    def __len__(self) -> int:
        return len(self.batches)
