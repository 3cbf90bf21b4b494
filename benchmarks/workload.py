"""What the training benchmark runs and how its work is counted: shapes, length settings, batches, FLOPs.

Batches are random draws (what ptv2-train does by default), made once from a seed and saved, so every
contender - also PEFT in its own process - trains on exactly the same examples.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

# Real shapes (random weights: speed and memory do not depend on the weights); quick mode shrinks them.
SHAPES: dict[str, dict] = {
    "roberta-large": {"arch": "roberta", "layers": 24, "hidden": 1024, "heads": 16, "ffn": 4096, "vocab": 50265},
    "bert-base": {"arch": "bert", "layers": 12, "hidden": 768, "heads": 12, "ffn": 3072, "vocab": 30522},
}
QUICK_SIZES = {"layers": 2, "hidden": 64, "heads": 4, "ffn": 128, "vocab": 1000}
# name -> (max length, kind): "fixed" = every sequence exactly that long; "dist" = realistic lengths.
SETTINGS = {"len128": (128, "fixed"), "len256": (256, "fixed"), "len512": (512, "fixed"), "dist": (512, "dist")}
QUICK_SETTINGS = {"len16": (16, "fixed"), "len32": (32, "fixed"), "dist": (32, "dist")}
FIRST_ID = 5  # token ids >= 5 avoid every pad/special id of both vocabularies


def sequence_lengths(n: int, max_len: int, kind: str, gen: torch.Generator) -> list[int]:
    if kind == "fixed":
        return [max_len] * n
    # log-normal, median about a fifth of the max length (~100 at 512), long tail, clipped as a tokenizer would
    low = 16 if max_len >= 128 else 4
    draws = torch.randn(n, generator=gen) * 0.7 + math.log(max_len / 5)
    return [min(max_len, max(low, round(math.exp(x)))) for x in draws.tolist()]


def make_batches(seed: int, batch_size: int, num_batches: int, settings: dict, vocab: int) -> dict:
    """Per setting: its max length, kind and ``num_batches`` random batches of classification features."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, (max_len, kind) in settings.items():
        lengths = sequence_lengths(batch_size * num_batches, max_len, kind, gen)
        features = [
            {"input_ids": torch.randint(FIRST_ID, vocab, (n,), generator=gen).tolist(), "attention_mask": [1] * n,
             "labels": int(torch.randint(0, 2, (1,), generator=gen))}
            for n in lengths
        ]
        batches = [features[i : i + batch_size] for i in range(0, len(features), batch_size)]
        out[name] = {"max_length": max_len, "kind": kind, "batches": batches}
    return out


def real_lengths(features: list[dict]) -> list[int]:
    return [len(f["input_ids"]) for f in features]


def layer_params(shape: dict) -> int:
    """N of the FLOP count: the transformer layers' matmul weights (embeddings are lookups)."""
    return shape["layers"] * (4 * shape["hidden"] ** 2 + 2 * shape["hidden"] * shape["ffn"])


def useful_flops(shape: dict, lengths: list[int], prefix: int, full_ft: bool) -> float:
    """FLOPs of one step over the real tokens only (padding is waste, not work).

    Linear layers: forward 2N per token, activation gradients 2N, weight gradients 2N (FT only).
    Attention scores and mixing: forward 4 * hidden * t * (t + P) per layer and sequence, backward twice that.
    """
    tokens = sum(lengths)
    linear = (6 if full_ft else 4) * layer_params(shape) * tokens
    attention = 3 * 4 * shape["hidden"] * shape["layers"] * sum(t * (t + prefix) for t in lengths)
    return float(linear + attention)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, quick: bool) -> dict:
    """Achieved bf16 matmul TFLOP/s on this device (the MFU denominator), median of ten."""
    n = 512 if quick or device.type != "cuda" else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "tflops": 2 * n**3 / statistics.median(times) / 1e12}
