"""Features -> padded batches. Dynamic padding per batch and optional length grouping."""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

# Keys the model and the loss read; everything else in a feature (offsets, word ids, ...) is metadata
# for the task's metric and stays out of batches.
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")
_PAD = {"attention_mask": 0, "token_type_ids": 0, "labels": -100}


def _pad(rows: list, pad: int, length: int) -> list:
    return [row + [pad] * (length - len(row)) for row in rows]


def collate(features: list[dict], pad_token_id: int, pad_to_multiple_of: int = 1) -> dict:
    """Pad each sequence key to the batch's longest row (rounded up to a multiple: fewer distinct shapes
    for the GPU kernels to tune for). Multiple-choice features hold one row per choice."""
    batch: dict = {}
    multiple = max(1, pad_to_multiple_of)

    def padded_length(n: int) -> int:
        return -(-n // multiple) * multiple

    for key in MODEL_KEYS:
        if key not in features[0]:
            continue
        values = [f[key] for f in features]
        pad = pad_token_id if key == "input_ids" else _PAD.get(key, 0)
        if isinstance(values[0], list) and values[0] and isinstance(values[0][0], list):  # [B, C, T]
            length = padded_length(max(len(row) for v in values for row in v))
            batch[key] = torch.tensor([_pad(v, pad, length) for v in values])
        elif isinstance(values[0], list):
            batch[key] = torch.tensor(_pad(values, pad, padded_length(max(map(len, values)))))
        else:
            batch[key] = torch.tensor(values)
    if "task_id" in features[0]:  # MPT-2 stage 1: a batch is one dataset's; its head is chosen by this
        task_ids = {f["task_id"] for f in features}
        if len(task_ids) != 1:
            raise ValueError(f"a multi-task batch mixes datasets {sorted(task_ids)}")
        batch["task_id"] = task_ids.pop()
    # Known on the CPU for free: a batch without padding needs no attention mask at all.
    batch["padded"] = bool((batch["attention_mask"] == 0).any())
    return batch


def feature_length(feature: dict) -> int:
    ids = feature["input_ids"]
    return max(len(row) for row in ids) if ids and isinstance(ids[0], list) else len(ids)


class LengthGroupedSampler(Sampler[list[int]]):
    """Shuffled batches of similar lengths: sort within random pools of 50 batches, then shuffle batches.

    Less padding per batch (faster), while each epoch still sees the data in a new random order.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, pool_batches: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.pool = lengths, batch_size, seed, pool_batches * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start : start + self.pool], key=self.lengths.__getitem__)
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class RandomBatches(Sampler[list[int]]):
    """Plain shuffled batches whose order is a function of seed + epoch (so a resumed run can replay it)."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        return iter([order[i : i + self.batch_size] for i in range(0, self.size, self.batch_size)])

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)
