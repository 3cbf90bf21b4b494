"""What a training step keeps for its backward pass, per real token and layer: the tensors autograd saves,
grouped by dtype and last dimension (docs/performance.md, memory). This is where peak training memory goes
beyond the frozen weights.

    python -m benchmarks.saved_activations [--contenders ptv2_eager ft_eager] [--length 512]
    python -m benchmarks.saved_activations --quick          # CPU smoke run, tiny shape

Each storage counts once (views share it); parameters are left out (they are in memory anyway). Two steps
run before the counted one, so a compiled contender has compiled and recorded its graphs; the peak memory
printed is the counted step's.
"""

from __future__ import annotations

import argparse
import collections

import torch

from benchmarks import contenders
from benchmarks.workload import QUICK_SIZES, SHAPES, make_batches


def saved_per_token(name: str, shape: dict, length: int, batch_size: int, device: torch.device) -> dict:
    """KB saved per real token and layer by one training step of contender ``name``, by (dtype, last dim)."""
    torch.manual_seed(0)
    contender = contenders.build(name, shape, 16, device)
    spec = make_batches(11, batch_size, 1, {"fixed": (length, "fixed")}, shape["vocab"])["fixed"]
    batch = contender.prepare(spec["batches"][0], spec["max_length"])
    for _ in range(2):
        contender.step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    storages: dict[int, tuple[str, int]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter):
            group = f"{str(tensor.dtype).removeprefix('torch.')} [..., {tensor.shape[-1] if tensor.dim() else 1}]"
            storages.setdefault(tensor.untyped_storage().data_ptr(), (group, tensor.untyped_storage().nbytes()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        contender.step(batch)
    groups: collections.Counter = collections.Counter()
    for group, size in storages.values():
        groups[group] += size
    scale = 1024 * batch_size * length * shape["layers"]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {group: size / scale for group, size in groups.most_common()}, peak


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contenders", nargs="+", default=["ptv2_eager", "ft_eager"])
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="tiny shape (CPU smoke run)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = SHAPES["roberta-large"] | (QUICK_SIZES if args.quick else {})
    length, batch_size = (16, 2) if args.quick else (args.length, args.batch_size)
    for name in args.contenders:
        groups, peak = saved_per_token(name, shape, length, batch_size, device)
        print(f"{name}, len{length}, batch {batch_size}: {sum(groups.values()):.2f} KB saved per token and layer"
              + (f", peak {peak:,.0f} MB" if peak else ""), flush=True)
        for group, kb in groups.items():
            print(f"  {kb:7.2f} KB  {group}")


if __name__ == "__main__":
    main()
