"""Where one P-Tuning v2 training step's time goes: host (Python + kernel launches) vs GPU, and which
calls make the host wait for the GPU. The model and step of ptv2-train (benchmarks.contenders builds them).

    python -m benchmarks.profile_step --batch-sizes 32 64 --length 256      # GPU, roberta-large shape
    python -m benchmarks.profile_step --quick                              # CPU smoke run, tiny shape
    python -m benchmarks.profile_step --batch-sizes 32 --trace 25          # + the 25 costliest operators

Prints per batch size: ms/step with a sync after every step, ms/step when steps are queued back to back
(the host may run ahead), the host's own time per step, and every synchronizing call site seen.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

from benchmarks.contenders import build_ptv2
from benchmarks.workload import QUICK_SIZES, SHAPES, make_batches, synchronize


def profile(batch_size: int, length: int, args, device: torch.device) -> None:
    shape = SHAPES[args.shape] | (QUICK_SIZES if args.quick else {})
    runner = build_ptv2(shape, args.prompt_length, device, extra=tuple(args.override))
    settings = {args.lengths: (length, args.lengths)}
    data = make_batches(0, batch_size, args.steps + 5, settings, shape["vocab"])[args.lengths]
    batches = [runner.prepare(b, length) for b in data["batches"]]
    for batch in batches[:5]:  # warm-up: allocator, kernels, compilation
        runner.step(batch)
    synchronize(device)

    synced = []
    for batch in batches[5:]:
        start = time.perf_counter()
        runner.step(batch)
        synchronize(device)
        synced.append(time.perf_counter() - start)
    start, host = time.perf_counter(), []
    for batch in batches[5:]:
        step_start = time.perf_counter()
        runner.step(batch)
        host.append(time.perf_counter() - step_start)
    synchronize(device)
    queued = (time.perf_counter() - start) / len(batches[5:])

    sites: Counter[str] = Counter()
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner.step(batches[5])
        torch.cuda.set_sync_debug_mode(0)
        sites.update(f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0][:80]}" for w in caught)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[5:]) / len(batches[5:])
    print(
        f"batch {batch_size}, {args.lengths} lengths <= {length}: synced {1000 * sum(synced) / len(synced):.1f} ms/step, "
        f"queued {1000 * queued:.1f} ms/step ({tokens / queued:,.0f} tokens/s), host {1000 * sum(host) / len(host):.1f} ms/step"
    )
    if args.trace:
        kernel_table(runner, batches[5:10], device, args.trace)
    for site, count in sites.most_common():
        print(f"  sync x{count}: {site}")
    if not sites and device.type == "cuda":
        print("  no synchronizing call in a training step")


def kernel_table(runner, batches: list[dict], device: torch.device, rows: int) -> None:
    """The operators that take the device's time over a few steps (torch.profiler), most expensive first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for batch in batches:
            runner.step(batch)
        synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"  per {len(batches)} steps:")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=70))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="roberta-large", choices=sorted(SHAPES))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument(
        "--lengths", default="dist", choices=["fixed", "dist"], help="all = --length (no padding) or a realistic mix"
    )
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--override", nargs="*", default=[], help="ptv2-train overrides, e.g. train.compile=false")
    parser.add_argument("--trace", type=int, default=0, metavar="N", help="also print the N most expensive operators")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke run)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)  # as ptv2-train does (ptv2/train.py)
    if args.quick:
        args.batch_sizes, args.length, args.steps = [4], 16, 3
    for batch_size in args.batch_sizes:
        profile(batch_size, args.length, args, device)


if __name__ == "__main__":
    main()
