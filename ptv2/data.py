"""Features -> batches: dynamic padding per batch, optional packing, random or length-grouped batches.

Packing (``train.packing``): the batch's sequences also go into ``pack_length``-token rows, several per
row (first-fit decreasing), so the encoder runs on [rows, pack_length] with almost no padding whatever
the batch's length mix; attention keeps the sequences apart (a token sees its own sequence and its own
copy of the prefix: ``ptv2.prompts.attention.PackedSequences``), positions restart per sequence, and the
hidden states are gathered back into the padded layout the heads and losses read (``pack_index``). The
padded layout is then padded to ``pack_length`` too, so every batch of a run has the same sequence length
(few shapes for CUDA graphs).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from ptv2.distributed import Ranks, ShardedBatches
from ptv2.errors import UserError
from ptv2.prompts.attention import attention_units

# Keys the model and the loss read; everything else in a feature (offsets, word ids, ...) is metadata
# for the task's metric and stays out of batches.
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")
_PAD = {"attention_mask": 0, "token_type_ids": 0, "labels": -100}


def _padded(rows: list[list], pad: int, length: int) -> torch.Tensor:
    """Token rows as one [rows, length] tensor padded with ``pad``: one flat conversion and a masked fill, as a
    nested list of padded rows costs several times more in the collation processes."""
    sizes = torch.tensor([len(row) for row in rows])
    flat = torch.tensor(list(itertools.chain.from_iterable(rows)))
    out = torch.full((len(rows), length), pad, dtype=flat.dtype if flat.numel() else torch.long)
    out[torch.arange(length) < sizes[:, None]] = flat
    return out


def collate(
    features: list[dict], pad_token_id: int, pad_to_multiple_of: int = 1, pack_length: int | None = None,
    rows_multiple: int = 1, prefix_length: int = 0,
) -> dict:
    """Pad each sequence key to the batch's longest row (rounded up to a multiple: fewer distinct shapes
    for the GPU kernels to tune for; to ``pack_length`` when packing). Multiple-choice features hold one
    row per choice. ``prefix_length``: the deep prompt's P, for the packed attention units."""
    batch: dict = {}
    multiple = max(1, pad_to_multiple_of)

    def padded_length(n: int) -> int:
        return pack_length if pack_length else -(-n // multiple) * multiple

    for key in MODEL_KEYS:
        if key not in features[0]:
            continue
        values = [f[key] for f in features]
        pad = pad_token_id if key == "input_ids" else _PAD.get(key, 0)
        if isinstance(values[0], list) and values[0] and isinstance(values[0][0], list):  # [B, C, T]
            if len({len(v) for v in values}) > 1:
                raise ValueError(f"{key}: a batch's multiple-choice features must have as many rows each")
            length = padded_length(max(len(row) for v in values for row in v))
            batch[key] = _padded([row for v in values for row in v], pad, length).view(len(values), -1, length)
        elif isinstance(values[0], list):
            batch[key] = _padded(values, pad, padded_length(max(map(len, values))))
        else:
            batch[key] = torch.tensor(values)
    if pack_length:
        batch |= packed_rows(batch, pad_token_id, pack_length, rows_multiple, prefix_length)
    if "task_id" in features[0]:  # MPT-2 stage 1: a batch is one dataset's; its head is chosen by this
        task_ids = {f["task_id"] for f in features}
        if len(task_ids) != 1:
            raise ValueError(f"a multi-task batch mixes datasets {sorted(task_ids)}")
        batch["task_id"] = task_ids.pop()
    # Known on the CPU for free: a batch without padding needs no attention mask at all.
    batch["padded"] = bool((batch["attention_mask"] == 0).any())
    return batch


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sequence indices per row, each row's lengths summing to at most ``capacity``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > capacity:
            raise ValueError(f"a {lengths[i]}-token sequence does not fit pack_length={capacity}")
        row = next((r for r, left in enumerate(room) if left >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


def packed_rows(batch: dict, pad_token_id: int, capacity: int, rows_multiple: int = 1, prefix_length: int = 0) -> dict:
    """The packed encoder inputs of a padded batch (see the module doc): pack_input_ids, pack_positions
    (index within its sequence, -1 = padding), pack_token_type_ids, pack_index (for each padded-layout slot,
    its place in the flattened rows; padding slots point one past the end, a zero row), pack_dense (one full
    sequence per row: nothing to keep apart) and the attention units (``_attention_units``).

    ``rows_multiple``: empty rows round the row count up to a multiple, so that compiled CUDA graphs see
    few distinct batch shapes (each new one is recorded anew)."""
    mask = batch["attention_mask"].reshape(-1, batch["attention_mask"].shape[-1]).bool()
    lengths = mask.sum(-1).tolist()
    rows = pack_rows(lengths, capacity)
    rows += [[] for _ in range(-len(rows) % max(1, rows_multiple))]
    first_slot = [0] * len(lengths)  # each sequence's first place in the flattened rows
    for r, members in enumerate(rows):
        slot = r * capacity
        for i in members:
            first_slot[i], slot = slot, slot + lengths[i]
    within = torch.arange(mask.shape[1]).expand_as(mask)
    slots = torch.tensor(first_slot)[:, None] + within
    real = slots[mask]  # sequences keep their tokens left-aligned in the padded layout
    out = {"pack_index": torch.where(mask, slots, len(rows) * capacity).reshape(-1)}
    columns = {"pack_input_ids": ("input_ids", pad_token_id), "pack_token_type_ids": ("token_type_ids", 0)}
    for name, (key, pad) in columns.items():
        if key in batch:
            out[name] = _scattered(batch[key].reshape(mask.shape)[mask], real, pad, len(rows), capacity)
    out["pack_positions"] = _scattered(within[mask], real, -1, len(rows), capacity)
    out["pack_dense"] = all(len(m) == 1 and lengths[m[0]] == capacity for m in rows)  # empty rows are padding
    if not out["pack_dense"]:  # dense rows attend plainly: no units to build or copy to the device
        out |= _attention_units(rows, lengths, capacity, prefix_length)
    return out


def _scattered(values: torch.Tensor, slots: torch.Tensor, pad: int, rows: int, capacity: int) -> torch.Tensor:
    out = torch.full((rows * capacity,), pad, dtype=values.dtype)
    out[slots] = values
    return out.view(rows, capacity)


def _attention_units(rows: list[list[int]], lengths: list[int], capacity: int, prefix_length: int) -> dict:
    """The packed rows as consecutive attention units over the flattened rows (each row: its sequences, then
    its padding as one unit, possibly empty, so that every batch of a shape has as many units), in the
    form ``ptv2.prompts.attention.PackedSequences`` reads."""
    sizes, owner = [], []
    for members in rows:
        sizes += [lengths[i] for i in members] + [capacity - sum(lengths[i] for i in members)]
        owner += [*members, -1]
    return attention_units(sizes, owner, len(lengths), prefix_length)


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


def sampling_probabilities(num_batches: list[int], sizes: list[int], sampling: str, temperature: float) -> list[float]:
    """Per-dataset probability of drawing the next batch: proportional to its training batches, or
    ``temperature``: to size^(1/T) (T > 1 flattens towards uniform, so small datasets are seen more)."""
    if sampling == "proportional":
        weights = [float(n) for n in num_batches]
    elif sampling == "temperature":
        if temperature <= 0:
            raise UserError(f"multitask.temperature={temperature} must be positive")
        weights = [float(n) ** (1.0 / temperature) for n in sizes]
    else:
        raise UserError(f"multitask.sampling={sampling!r}: use proportional or temperature")
    total = sum(weights)
    return [w / total for w in weights]


class TaskBatches(Sampler[list[int]]):
    """Training batches over concatenated datasets, each batch from ONE dataset (indices are global).

    An epoch has as many batches as the datasets have together; each step draws a dataset with
    ``sampling_probabilities`` and takes its next batch from that dataset's own shuffled order (the
    loop's usual RandomBatches / LengthGroupedSampler), reshuffled when used up. Everything is a
    function of seed + epoch, so a resumed epoch replays the same batches.
    """

    def __init__(
        self, task_ids: list[int], lengths: list[int], batch_size: int, seed: int, group_by_length: bool,
        sampling: str = "proportional", temperature: float = 2.0,
    ) -> None:
        self.groups: list[list[int]] = [[] for _ in range(max(task_ids) + 1)]
        for i, t in enumerate(task_ids):
            self.groups[t].append(i)
        self.seed, self.epoch = seed, 0
        self.samplers = [
            LengthGroupedSampler([lengths[i] for i in g], batch_size, seed + 7919 * t)
            if group_by_length else RandomBatches(len(g), batch_size, seed + 7919 * t)
            for t, g in enumerate(self.groups)
        ]
        self.probabilities = sampling_probabilities(
            [len(s) for s in self.samplers], [len(g) for g in self.groups], sampling, temperature
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _stream(self, t: int) -> Iterator[list[int]]:
        sampler, group, cycle = self.samplers[t], self.groups[t], 0
        while True:  # a dataset drawn more often than it has batches starts a new shuffle of itself
            sampler.set_epoch(self.epoch * 100_003 + cycle)
            for batch in sampler:
                yield [group[i] for i in batch]
            cycle += 1

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        streams = [self._stream(t) for t in range(len(self.groups))]
        datasets = rng.choices(range(len(self.groups)), weights=self.probabilities, k=len(self))
        return iter([next(streams[t]) for t in datasets])

    def __len__(self) -> int:
        return sum(len(s) for s in self.samplers)


def in_order_batches(task_ids: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches in feature order that never cross from one dataset into the next."""
    batches: list[list[int]] = []
    for i, t in enumerate(task_ids):
        if not batches or len(batches[-1]) == batch_size or task_ids[batches[-1][0]] != t:
            batches.append([])
        batches[-1].append(i)
    return batches


# -- loaders ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batching:
    """How features become batches: padding, packing and the collation processes."""

    pad_token_id: int
    pad_to_multiple_of: int = 1
    pack_length: int | None = None
    num_workers: int = 0
    pin_memory: bool = False  # CUDA: batches copy to the GPU without waiting for it
    rows_multiple: int = 1  # packed row counts rounded up (compiled: few CUDA-graph shapes)
    prefix_length: int = 0  # deep prompts' P: packed attention units give each sequence its prefix keys

    def options(self) -> dict:
        collate_fn = functools.partial(
            collate, pad_token_id=self.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of,
            pack_length=self.pack_length, rows_multiple=self.rows_multiple, prefix_length=self.prefix_length,
        )
        if self.num_workers:  # batches cross a process boundary: ship each as one buffer per dtype
            collate_fn = functools.partial(_buffered, collate_fn)
        # Persistent: a short epoch would otherwise start its processes again at every epoch and evaluation.
        return {"collate_fn": collate_fn, "num_workers": self.num_workers, "pin_memory": self.pin_memory,
                "persistent_workers": self.num_workers > 0}


def _buffered(collate_fn: Callable[[list[dict]], dict], features: list[dict]) -> BatchBuffer:
    return BatchBuffer(collate_fn(features))


class BatchBuffer:
    """A collated batch as one flat tensor per dtype. A loader process hands each tensor over through its own
    shared-memory file (and the main process pins and copies each apart), which costs about as much per
    tensor as collating it; one buffer per dtype makes that a fixed cost. ``batch[key]`` reads a tensor on
    the CPU; ``to(device)`` gives the batch dict on the device (views into one copied buffer per dtype)."""

    def __init__(self, batch: dict) -> None:
        tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        self.values = {k: v for k, v in batch.items() if k not in tensors}
        self.layout = [(k, v.dtype, v.shape) for k, v in tensors.items()]
        self.buffers = {d: torch.cat([v.reshape(-1) for v in tensors.values() if v.dtype == d])
                        for d in {v.dtype for v in tensors.values()}}

    def pin_memory(self) -> BatchBuffer:  # called by the loader's pinning thread
        self.buffers = {d: b.pin_memory() for d, b in self.buffers.items()}
        return self

    def __getitem__(self, key: str) -> torch.Tensor | object:
        return self._unpacked(self.buffers)[key]

    def to(self, device: torch.device) -> dict:
        return self._unpacked({d: b.to(device, non_blocking=True) for d, b in self.buffers.items()})

    def _unpacked(self, buffers: dict[torch.dtype, torch.Tensor]) -> dict:
        batch, used = dict(self.values), dict.fromkeys(buffers, 0)
        for key, dtype, shape in self.layout:
            size = shape.numel()
            batch[key] = buffers[dtype][used[dtype]:used[dtype] + size].view(shape)
            used[dtype] += size
        return batch


def eval_loader(features: list[dict], batch_size: int, batching: Batching) -> DataLoader:
    """Batches in feature order (MPT-2 features: never mixing two datasets in one batch)."""
    if "task_id" in features[0]:
        batches = in_order_batches([f["task_id"] for f in features], batch_size)
        return DataLoader(features, batch_sampler=batches, **batching.options())
    return DataLoader(features, batch_size, **batching.options())


def train_loader(
    features: list[dict], batch_size: int, seed: int, batching: Batching, group_by_length: bool = False,
    ranks: Ranks | None = None, sampling: str = "proportional", temperature: float = 2.0,
) -> DataLoader:
    """Batches shuffled by seed + epoch (random, or length-grouped), this rank's shard of each global batch.

    MPT-2 stage-1 features carry ``task_id``: every batch then holds one dataset, drawn as ``sampling`` says.
    """
    lengths = [feature_length(f) for f in features]
    if "task_id" in features[0]:
        batches = TaskBatches([f["task_id"] for f in features], lengths, batch_size, seed, group_by_length,
                              sampling=sampling, temperature=temperature)
    elif group_by_length:
        batches = LengthGroupedSampler(lengths, batch_size, seed)
    else:
        batches = RandomBatches(len(features), batch_size, seed)
    ranks = ranks or Ranks()
    # Own generator: starting an epoch draws worker seeds from it, not from the global RNG (exact resume).
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(features, batch_sampler=ShardedBatches(batches, ranks.rank, ranks.world), generator=generator,
                      **batching.options())
