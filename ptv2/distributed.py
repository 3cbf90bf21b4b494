"""Several processes, one run: data parallel over `torchrun --nproc_per_node N -m ptv2.cli ...`.

Every rank holds the whole model and sees one shard of each global batch (`train.batch_size` is the
global batch: each rank gets batch_size / world_size examples), so the optimisation and every metric
mean the same as in one process. After backward the trainable gradients are averaged by hand in one
flat all-reduce instead of wrapping the model in DistributedDataParallel: the trainable set is small
(prompts + head), nothing needs DDP's bucketing/overlap, no parameter can trip DDP's unused-parameter
check (heads that skip a parameter), and the loop keeps calling `model.loss`, `model.prompt` as is.
Only rank 0 evaluates and writes results; the other ranks wait at the next collective.

Also here: `one_gpu_per_job`, one GPU per job for local parallel sweeps (`train.gpu_per_job=true`).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    # Time of each gradient all-reduce: CUDA event pairs (read at epoch end, not to wait for the GPU) or,
    # on the CPU where gloo returns when done, seconds.
    _allreduce_times: list = field(default_factory=list, compare=False, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Mean of every rank's gradients (one flat all-reduce); a no-op in one process."""
        if self.world == 1:
            return
        cuda = params[0].is_cuda
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            started = time.perf_counter()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(p).to(p.dtype)
            offset += g.numel()
        if cuda:
            end.record()
            self._allreduce_times.append((start, end))
        else:
            self._allreduce_times.append(time.perf_counter() - started)

    def allreduce_seconds(self) -> float:
        """Time spent in gradient all-reduces since the last call, waiting for slower ranks included."""
        times, self._allreduce_times[:] = list(self._allreduce_times), []
        seconds = 0.0
        for entry in times:
            if isinstance(entry, float):
                seconds += entry
            else:
                start, end = entry
                end.synchronize()
                seconds += start.elapsed_time(end) / 1000
        return seconds


class StepTotals:
    """Each step's loss, real-token count and stop request, summed over ranks, read one step late.

    Reading a GPU value waits for the GPU. ``add`` only queues the sums (an all-reduce across ranks) and a
    copy to pinned host memory; the loop ``settle``s the previous step once the next batch is loaded and on
    its way, so data loading overlaps the GPU's work instead of following it.
    """

    def __init__(self, ranks: Ranks, device: torch.device) -> None:
        self.ranks, self.device = ranks, device
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None] | None = None
        # One pinned buffer: a step's values are settled before the next step's are copied in.
        self._host = torch.empty(3, dtype=torch.float64, pin_memory=True) if device.type == "cuda" else None

    def add(self, loss: torch.Tensor, tokens: int, stop: bool) -> None:
        # torch.full passes the Python numbers as kernel arguments: no host-to-device copy, no wait.
        values = torch.stack([
            loss.detach().double(),
            torch.full((), float(tokens), dtype=torch.float64, device=self.device),
            torch.full((), float(stop), dtype=torch.float64, device=self.device),
        ])
        if self.ranks.world > 1:
            dist.all_reduce(values)
        event = None
        if self._host is not None:
            values = self._host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        self._pending = (values, event)

    def settle(self) -> tuple[float, int, bool] | None:
        """The last added step's (loss, tokens, stop) summed over ranks; None when nothing is pending."""
        if self._pending is None:
            return None
        (values, event), self._pending = self._pending, None
        if event is not None:
            event.synchronize()
        loss, tokens, stop = values.tolist()
        return loss, int(tokens), stop > 0


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), known before the process group starts."""
    return int(os.environ.get("RANK", "0"))


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


@contextmanager
def claim_slot(names: list[str], lock_dir: Path) -> Iterator[int | None]:
    """Hold the first of ``names`` that no other process holds (an exclusive lock on ``lock_dir/<name>.lock``,
    released on exit); None when every one is held."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        handle = open(lock_dir / f"{name}.lock", "w")  # noqa: SIM115 - held open while the job runs
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield index
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    yield None


@contextmanager
def one_gpu_per_job(job_num: int) -> Iterator[int | None]:
    """A local sweep job's own GPU (`train.gpu_per_job=true`): the first visible GPU that no other ptv2 job on
    this machine is using, for as long as the job runs. Choosing by job number instead (job % GPUs) put two
    jobs on one GPU whenever an odd job finished first. With more jobs than GPUs, GPU job % count."""
    if not torch.cuda.is_available():
        yield None
        return
    count = torch.cuda.device_count()
    names = [f"ptv2-gpu-{torch.cuda.get_device_properties(i).uuid}" for i in range(count)]
    # per user: another user's lock files in a shared /tmp would not be writable
    with claim_slot(names, Path(tempfile.gettempdir()) / f"ptv2-gpus-{os.getuid()}") as free:
        gpu = job_num % count if free is None else free
        torch.cuda.set_device(gpu)
        yield gpu


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
