"""The kernels a packed training step spends its time in, alone: which attention kernel and which FFN
compilation would make the step faster (docs/performance.md, "Where a compiled step's time goes").

    python -m benchmarks.kernel_speed [--lengths 128 256 512] [--ffn-modes default max-autotune-no-cudagraphs]

Attention: one layer of the roberta-large shape (16 heads of 64) over ``--batch`` sequences with P prefix
keys each, packed as ptv2 packs them (variable-length: each sequence its own unit), through torch's flash
kernel and its cuDNN kernel, and padded through SDPA's flash and cuDNN backends. FFN: one frozen
1024 -> 4096 -> GELU -> 1024 block on the same tokens, eager and compiled. Times are fwd and fwd+bwd
(gradients to the inputs only, as with a frozen backbone), median of CUDA-event timings.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, DIM, HIDDEN, FFN = 16, 64, 1024, 4096


def timed(fn, reps: int) -> float:
    """Median ms of ``fn`` over ``reps`` calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _fwd_and_bwd(forward, inputs: tuple[torch.Tensor, ...], reps: int) -> tuple[float, float]:
    """Median ms of ``forward()`` and of it with the gradients to ``inputs``."""
    grad = torch.randn_like(forward())
    return timed(forward, reps), timed(lambda: torch.autograd.grad(forward(), inputs, grad), reps)


def _packed(length: int, batch: int, prefix: int, device) -> dict:
    tokens, keys = batch * length, batch * (length + prefix)
    q, k, v = (torch.randn(n, HEADS, DIM, device=device, dtype=torch.bfloat16, requires_grad=True)
               for n in (tokens, keys, keys))
    cu_q = torch.arange(0, tokens + 1, length, device=device, dtype=torch.int32)
    cu_k = torch.arange(0, keys + 1, length + prefix, device=device, dtype=torch.int32)
    return {"q": q, "k": k, "v": v, "cu_q": cu_q, "cu_k": cu_k, "max_q": length, "max_k": length + prefix}


def _flash_varlen(a: dict, dropout: float) -> torch.Tensor:
    return torch.ops.aten._flash_attention_forward(a["q"], a["k"], a["v"], a["cu_q"], a["cu_k"], a["max_q"],
                                                   a["max_k"], dropout, False, False)[0]


def _cudnn_varlen(a: dict, dropout: float) -> torch.Tensor:
    return torch.ops.aten._cudnn_attention_forward(a["q"], a["k"], a["v"], None, a["cu_q"], a["cu_k"], a["max_q"],
                                                   a["max_k"], True, dropout, False, False)[0]


def _padded(backend: SDPBackend):
    def attend(a: dict, dropout: float) -> torch.Tensor:
        rows = a["cu_q"].numel() - 1
        q, k, v = (a[n].view(rows, -1, HEADS, DIM).transpose(1, 2) for n in ("q", "k", "v"))
        with sdpa_kernel([backend]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    return attend


ATTENTION = {"flash_varlen": _flash_varlen, "cudnn_varlen": _cudnn_varlen,
             "sdpa_flash_padded": _padded(SDPBackend.FLASH_ATTENTION),
             "sdpa_cudnn_padded": _padded(SDPBackend.CUDNN_ATTENTION)}


def attention_rows(length: int, batch: int, prefix: int, reps: int, device) -> list[dict]:
    a = _packed(length, batch, prefix, device)
    flops = 4 * batch * length * (length + prefix) * HEADS * DIM  # QK^T and PV, forward
    reference = _flash_varlen(a, 0.0).reshape(batch, length, HEADS, DIM).float()
    rows = []
    for name, attend in ATTENTION.items():
        row = {"kernel": name, "length": length}
        try:
            out = attend(a, 0.0).float()
            out = out.transpose(1, 2) if out.dim() == 4 else out.reshape(batch, length, HEADS, DIM)
            row["max_abs_diff_vs_flash"] = (out.reshape(reference.shape) - reference).abs().max().item()
            fwd, both = _fwd_and_bwd(functools.partial(attend, a, 0.1), (a["q"], a["k"], a["v"]), reps)
            row |= {"fwd_ms": fwd, "fwd_bwd_ms": both, "fwd_tflops": flops / fwd / 1e9,
                    "fwd_bwd_tflops": 3.5 * flops / both / 1e9}  # backward: 2.5x the forward's matmuls
        except Exception as error:  # a kernel this torch/GPU lacks: say so, measure the others
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def ffn_rows(tokens: int, modes: list[str], reps: int, device) -> list[dict]:
    block = torch.nn.Sequential(torch.nn.Linear(HIDDEN, FFN), torch.nn.GELU(), torch.nn.Linear(FFN, HIDDEN))
    block = block.to(device, torch.bfloat16).requires_grad_(False)
    x = torch.randn(tokens, HIDDEN, device=device, dtype=torch.bfloat16, requires_grad=True)
    rows = []
    for mode in ["eager", *modes]:
        torch._dynamo.reset()  # each length compiles for its own static shape, as ptv2's graphs do
        fn = block if mode == "eager" else torch.compile(block, mode=None if mode == "default" else mode)
        started = time.perf_counter()
        torch.autograd.grad(fn(x).sum(), x)
        compile_s = time.perf_counter() - started
        fwd, both = _fwd_and_bwd(functools.partial(fn, x), (x,), reps)
        row = {"ffn": mode, "tokens": tokens, "compile_s": compile_s, "fwd_ms": fwd, "fwd_bwd_ms": both}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--ffn-modes", nargs="*", default=["default", "max-autotune-no-cudagraphs"])
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("kernel_speed measures CUDA kernels: run it on a GPU")
    device = torch.device("cuda")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "attention": [], "ffn": []}
    for length in args.lengths:
        result["attention"] += attention_rows(length, args.batch, args.prompt_length, args.reps, device)
    for length in args.lengths:
        result["ffn"] += ffn_rows(args.batch * length, args.ffn_modes, args.reps, device)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
