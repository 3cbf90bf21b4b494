"""How fast batches reach the loop: collation alone, and the DataLoader with collation processes
(docs/performance.md, "Batches as one buffer"). CPU only; no model.

    python -m benchmarks.loader_speed                        # this checkout, 0 and 2 workers
    python -m benchmarks.loader_speed --code .carry/baseline # the same for another code tree
    python -m benchmarks.loader_speed --tensor-counts 1 5 10 15  # what each tensor of a batch costs a worker
    python -m benchmarks.loader_speed --epochs 3 --workers 2     # later epochs: processes kept or started again

Features are CoNLL-like token sequences (log-normal lengths, median ~20, at most 170 tokens), batch 32,
packed into rows of 176 tokens with a 16-slot prompt, as a GPU run packs them. Prints ms per batch.
"""

from __future__ import annotations

import argparse
import inspect
import random
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset


def features(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        n = max(3, min(170, int(rng.lognormvariate(3.0, 0.5))))
        rows.append({"input_ids": [5] * n, "attention_mask": [1] * n, "token_type_ids": [0] * n, "labels": [1] * n})
    return rows


class _Tensors(Dataset):
    """Batches of ``count`` tensors holding the same numbers in all (what a worker hands over)."""

    def __init__(self, count: int, batches: int = 300) -> None:
        self.count, self.batches = count, batches

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int) -> dict:
        return {f"t{k}": torch.zeros(21_120 // self.count, dtype=torch.long) for k in range(self.count)}


def tensor_cost(counts: list[int]) -> None:
    """ms per batch through one collation process, by the number of tensors the batch is split into."""
    for count in counts:
        batches = iter(DataLoader(_Tensors(count), batch_size=None, num_workers=1, prefetch_factor=4))
        next(batches)  # the worker's start
        started = time.perf_counter()
        seen = sum(1 for _ in batches)
        print(f"{count} tensors per batch: {1000 * (time.perf_counter() - started) / seen:.2f} ms/batch (1 worker)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1], help="code tree with ptv2/")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--examples", type=int, default=14_000)
    p.add_argument("--epochs", type=int, default=1, help="epochs through the loader (from the 2nd: a warm start)")
    p.add_argument("--tensor-counts", type=int, nargs="*", help="instead: the per-tensor cost of a worker's batch")
    args = p.parse_args(argv)
    if args.tensor_counts:
        return tensor_cost(args.tensor_counts)
    sys.path.insert(0, str(args.code.resolve()))  # before ptv2 is imported: measure that tree's code
    from ptv2.data import Batching, collate, train_loader

    data = features(args.examples)
    packing = {"pack_length": 176, "rows_multiple": 4}
    if "prefix_length" in inspect.signature(Batching).parameters:  # older trees built no attention units
        packing["prefix_length"] = 16
    started = time.perf_counter()
    batches = [data[i:i + 32] for i in range(0, len(data), 32)]
    for batch in batches:
        collate(batch, 0, 8, **packing)
    print(f"{args.code}: collation {1000 * (time.perf_counter() - started) / len(batches):.2f} ms/batch")
    for workers in args.workers:
        loader = train_loader(data, 32, 1, Batching(0, 8, num_workers=workers, **packing))
        for epoch in range(args.epochs):
            loader.batch_sampler.set_epoch(epoch)
            started, count, first = time.perf_counter(), 0, 0.0
            for _ in loader:
                first = first or time.perf_counter() - started
                count += 1
            print(f"{args.code}: loader, {workers} workers, epoch {epoch + 1}: "
                  f"{1000 * (time.perf_counter() - started) / count:.2f} ms/batch, first batch after {1000 * first:.0f} ms")


if __name__ == "__main__":
    main()
