"""Timing one contender: warm-up (compilation included, reported apart), then the median step."""

from __future__ import annotations

import math
import statistics
import time

import torch

from benchmarks.contenders import Contender
from benchmarks.workload import real_lengths, synchronize, useful_flops


def _timed(fn, batch, device: torch.device) -> tuple[float, torch.Tensor]:
    synchronize(device)
    start = time.perf_counter()
    out = fn(batch)
    synchronize(device)
    return time.perf_counter() - start, out


def measure(contender: Contender, batches: list[list[dict]], max_length: int, warmup: int, shape: dict,
            device: torch.device, peak: dict | None) -> dict:
    """Median ms/step after the warm-up steps, real tokens/s, peak memory (reset here), MFU; warm_up_s is
    what the warm-up steps took (compiling and CUDA-graph capture happen there)."""
    prepared = [contender.prepare(b, max_length) for b in batches]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for batch in prepared:
        seconds, loss = _timed(contender.step, batch, device)
        times.append(seconds)
        losses.append(float(loss))
    measured, seconds = batches[warmup:], sum(times[warmup:])
    tokens = sum(n for b in measured for n in real_lengths(b))
    flops = sum(useful_flops(shape, real_lengths(b), contender.prefix, contender.full_ft) for b in measured)
    encoded = sum((p["pack_input_ids"] if "pack_input_ids" in p else p["input_ids"]).numel() for p in prepared[warmup:])
    return {
        "ms_per_step": 1000 * statistics.median(times[warmup:]),
        "warm_up_s": sum(times[:warmup]),
        "tokens_per_s": tokens / seconds,
        "padding_fraction": 1 - tokens / encoded,
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / 1e12 / peak["tflops"] if peak else None,
        "steps": len(times) - warmup,
        "losses": losses,
        "losses_finite": all(math.isfinite(x) for x in losses),
    }


def measure_eval(contender: Contender, batches: list[list[dict]], max_length: int, warmup: int,
                 device: torch.device) -> dict:
    """Evaluation speed through the same model call ptv2-train evaluates with: batches of 4 training batches."""
    groups = [sum(batches[i : i + 4], []) for i in range(0, len(batches) - 3, 4)] or [sum(batches, [])]
    prepared = [contender.prepare(g, max_length) for g in groups]
    runs = (prepared * (1 + (warmup + 2) // len(prepared)))[: max(len(prepared), warmup + 2)]
    times = []
    for i, batch in enumerate(runs):
        seconds, _ = _timed(contender.evaluate, batch, device)
        times.append((seconds, sum(real_lengths(groups[i % len(groups)]))))
    kept = times[min(warmup, len(times) - 1):]
    return {
        "ms_per_step": 1000 * statistics.median(t for t, _ in kept),
        "warm_up_s": sum(t for t, _ in times[: min(warmup, len(times) - 1)]),
        "tokens_per_s": sum(n for _, n in kept) / sum(t for t, _ in kept),
        "batch_size": len(groups[0]),
        "steps": len(kept),
    }


def compare_outputs(contender: Contender, batches: list[list[dict]], max_length: int) -> dict:
    """Largest relative L2 difference of the evaluation logits over a few batches: the CUDA-graph forward
    against the same model run eagerly (``graph_vs_eager``), and packed rows against the padded batch, both
    eager (``packed_vs_padded``: on a GPU the packed attention is the variable-length flash kernel)."""
    checks: dict[str, list[float]] = {}

    def note(name: str, fast: torch.Tensor, plain: torch.Tensor) -> None:
        fast, plain = fast.float(), plain.float()
        checks.setdefault(name, []).append(float((fast - plain).norm() / plain.norm().clamp_min(1e-12)))

    for features in batches[:4]:
        batch = contender.prepare(features, max_length)
        if contender.compiled:
            note("graph_vs_eager", contender.evaluate(batch), contender.reference(batch))
        if contender.packing and contender.prepare_padded is not None:
            note("packed_vs_padded", contender.reference(batch), contender.reference(contender.prepare_padded(features, max_length)))
    return {name: max(values) for name, values in checks.items()}
