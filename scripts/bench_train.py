#!/usr/bin/env python
"""Training speed and memory: ptv2's deep prompts against PEFT prefix tuning, the official code's
mechanism (prefix through the key/value cache) and full fine-tuning, on the same saved batches.

    python scripts/bench_train.py --out results/bench             # GPU, real shapes (see docs/performance.md)
    python scripts/bench_train.py --quick --out /tmp/bench        # CPU, tiny shapes, < 2 min

Batches are drawn once from a seed and saved (``batches.pt``); every contender, in this process or in the
separate PEFT environment (``--contender peft --batches FILE --json-out FILE``), trains on exactly those.
Backbones are random (built from a config): speed and memory do not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: ptv2 comes from this checkout

# Real shapes (random weights); quick mode keeps the architecture and shrinks the sizes.
SHAPES: dict[str, dict] = {
    "roberta-large": {
        "arch": "roberta",
        "layers": 24,
        "hidden": 1024,
        "heads": 16,
        "ffn": 4096,
        "vocab": 50265,
    },
    "bert-base": {"arch": "bert", "layers": 12, "hidden": 768, "heads": 12, "ffn": 3072, "vocab": 30522},
}
QUICK_SIZES = {"layers": 2, "hidden": 64, "heads": 4, "ffn": 128, "vocab": 1000}
# name -> (max length, kind): "fixed" = every sequence exactly that long; "dist" = realistic lengths.
SETTINGS = {
    "len128": (128, "fixed"),
    "len256": (256, "fixed"),
    "len512": (512, "fixed"),
    "dist": (512, "dist"),
}
QUICK_SETTINGS = {"len16": (16, "fixed"), "len32": (32, "fixed"), "dist": (32, "dist")}
CONTENDERS = ("ptv2", "ptv2_padmax", "official", "official_bf16", "ft")
LABELS = {
    "ptv2": "ptv2 pt2 (bf16 frozen, dynamic padding)",
    "ptv2_padmax": "ptv2 pt2, padded to max length",
    "ptv2_compile": "ptv2 pt2 + torch.compile",
    "ptv2_eval": "ptv2 evaluation (no_grad, bf16)",
    "official": "official mechanism (cache prefix, fp32, padded to max)",
    "official_bf16": "official mechanism + bf16 autocast",
    "ft": "full fine-tuning (bf16 autocast, fp32 master)",
    "peft": "HF PEFT PrefixTuning (bf16 frozen, dynamic padding)",
}
FIRST_ID = 5  # token ids >= 5 avoid every pad/special id of both vocabularies
MAX_GRAD_NORM = 1.0
LR = 1e-2


# ---------------------------------------------------------------------------------------------- batches
def make_batches(seed: int, batch_size: int, num_batches: int, settings: dict, vocab: int) -> dict:
    """Features per setting, grouped into batches the way ptv2 groups them (LengthGroupedSampler)."""
    from ptv2.data import LengthGroupedSampler

    gen = torch.Generator().manual_seed(seed)
    out = {}
    n = batch_size * num_batches
    for name, (max_len, kind) in settings.items():
        if kind == "fixed":
            lengths = [max_len] * n
        else:  # log-normal around a quarter of the max length, long tail, clipped like a tokenizer would
            low = 16 if max_len >= 128 else 4
            draws = torch.randn(n, generator=gen) * 0.7 + math.log(max_len / 5)
            lengths = [min(max_len, max(low, round(math.exp(x)))) for x in draws.tolist()]
        features = []
        for length in lengths:
            ids = torch.randint(FIRST_ID, vocab, (length,), generator=gen).tolist()
            label = int(torch.randint(0, 2, (1,), generator=gen))
            features.append({"input_ids": ids, "attention_mask": [1] * length, "labels": label})
        order = list(LengthGroupedSampler(lengths, batch_size, seed))
        out[name] = {
            "max_length": max_len,
            "kind": kind,
            "batches": [[features[i] for i in b] for b in order],
        }
    return out


def pad_to(batch: dict, length: int, pad_id: int) -> dict:
    """A dynamically padded batch padded further to ``length`` (the official scripts' max_length padding)."""
    extra = length - batch["input_ids"].shape[-1]
    batch = dict(batch)
    batch["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_id)
    batch["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
    batch["padded"] = bool((batch["attention_mask"] == 0).any())
    return batch


def real_lengths(features: list[dict]) -> list[int]:
    return [len(f["input_ids"]) for f in features]


# ---------------------------------------------------------------------------------------------- models
def backbone_config(shape: dict, dropout: float = 0.1):
    from transformers import AutoConfig

    roberta = shape["arch"] == "roberta"
    return AutoConfig.for_model(
        shape["arch"],
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"],
        max_position_embeddings=514 if roberta else 512,
        type_vocab_size=1 if roberta else 2,
        pad_token_id=1 if roberta else 0,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


def _random_encoder(config, attn: str, device: torch.device) -> nn.Module:
    from transformers import AutoModel

    with torch.device(device):  # initialise on the GPU: a CPU init of roberta-large takes tens of seconds
        return AutoModel.from_config(config, attn_implementation=attn)


def _ptv2_cfg(method: str, prompt_length: int, dropout: float):
    """The run config ptv2's build_model reads, from the repo's own conf/ files."""
    from omegaconf import OmegaConf

    conf = ROOT / "conf"
    return OmegaConf.merge(
        OmegaConf.load(conf / "method" / f"{method}.yaml"),
        {"reparam": OmegaConf.load(conf / "reparam" / "embedding.yaml")},
        {"depth_range": OmegaConf.load(conf / "depth_range" / "all.yaml")},
        {"prompt_length": prompt_length, "train": {"dropout": dropout}},
    )


@dataclass
class Runner:
    """One contender on one backbone: turn features into a device batch, and train (or eval) one step."""

    name: str
    prepare: Callable[[list[dict], int], dict]  # (features, setting max length) -> batch on the device
    step: Callable[[dict], torch.Tensor]
    prefix: int  # P extra keys per layer (0 for FT)
    full_ft: bool
    dtype: str


def _optimizer(
    params: list[nn.Parameter], device: torch.device, fused: bool | None = None
) -> torch.optim.Optimizer:
    fused = device.type == "cuda" if fused is None else fused
    return torch.optim.AdamW(params, lr=LR, fused=fused, foreach=None if fused else False)


def make_train_step(
    loss_fn: Callable[[dict], torch.Tensor],
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    amp_dtype: torch.dtype | None,
    device: torch.device,
) -> Callable[[dict], torch.Tensor]:
    """The step of ptv2's training loop (autocast, backward, clip, AdamW), for any contender's loss."""

    def step(batch: dict) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def build_ptv2(
    shape: dict,
    prompt_length: int,
    device: torch.device,
    method: str = "pt2",
    padmax: bool = False,
    dropout: float = 0.1,
    bf16: bool | None = None,
    fused: bool | None = None,
    compile_model: bool = False,
    name: str = "ptv2",
) -> tuple[Runner, nn.Module]:
    """ptv2's own path: random backbone -> build_model (DeepPrompt hooks + cls head) -> the loop's step."""
    from ptv2.backbone import Backbone
    from ptv2.data import collate
    from ptv2.model import build_model
    from ptv2.prompts.attention import ATTENTION_IMPLEMENTATIONS

    config = backbone_config(shape, dropout)
    encoder = _random_encoder(config, ATTENTION_IMPLEMENTATIONS["sdpa"], device)
    pooler, encoder.pooler = encoder.pooler, None  # as load_backbone does: the cls head runs the pooler
    model = build_model(
        _ptv2_cfg(method, prompt_length, dropout), Backbone(encoder, None, None, pooler=pooler), 2, "cls"
    ).to(device)
    bf16 = device.type == "cuda" if bf16 is None else bf16
    amp_dtype = torch.bfloat16 if bf16 else None
    if method == "pt2" and bf16:
        model.encoder.to(torch.bfloat16)  # train.py: frozen weights need no fp32 master copy
    params = [p for p in model.parameters() if p.requires_grad]
    forward = torch.compile(model) if compile_model else model
    pad_id = config.pad_token_id

    def prepare(features: list[dict], max_length: int) -> dict:
        batch = collate(features, pad_id, pad_to_multiple_of=1 if padmax else 8)  # as train.pad_to_multiple_of
        if padmax:
            batch = pad_to(batch, max_length, pad_id)
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    step = make_train_step(
        lambda b: model.loss(forward(b), b), params, _optimizer(params, device, fused), amp_dtype, device
    )
    runner = Runner(
        name,
        prepare,
        step,
        prompt_length if method == "pt2" else 0,
        method == "ft",
        "bf16" if bf16 else "fp32",
    )
    return runner, model


class CachePrefixModel(nn.Module):
    """The official P-Tuning v2 code, re-expressed on today's transformers.

    Its PrefixEncoder is an embedding of P x (layers * 2 * hidden); each forward reshapes it into per-layer
    prefix keys/values, drops them out, and hands them to the backbone as its key/value cache (then
    ``past_key_values``, now a ``DynamicCache``), with the attention mask extended by P ones. Heads: the
    pooler + dropout + linear of ``BertForSequenceClassification``, as the official classifier used.
    Position ids are passed explicitly (0..T-1): with a cache the model would shift them by P, which
    overflows the 512 positions at length 512 and does not change the cost.
    """

    def __init__(self, encoder: nn.Module, prompt_length: int) -> None:
        super().__init__()
        import inspect

        config = encoder.config
        self.encoder = encoder.requires_grad_(False)
        self.layers, self.heads = config.num_hidden_layers, config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        self.prompt_length, self.pad_id, self.roberta = (
            prompt_length,
            config.pad_token_id,
            config.model_type == "roberta",
        )
        self.prefix = nn.Embedding(prompt_length, self.layers * 2 * config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 2)
        # transformers renamed past_key_values to cache (5.2x); take whichever this version's forward has
        self.cache_kw = (
            "cache" if "cache" in inspect.signature(encoder.forward).parameters else "past_key_values"
        )

    def forward(self, batch: dict) -> torch.Tensor:
        from transformers import DynamicCache

        ids, mask = batch["input_ids"], batch["attention_mask"]
        size, length = ids.shape
        kv = self.prefix.weight.unsqueeze(0).expand(size, -1, -1)
        kv = self.dropout(kv.view(size, self.prompt_length, self.layers * 2, self.heads, self.head_dim))
        kv = kv.permute(2, 0, 3, 1, 4)  # [layers*2, B, heads, P, head_dim]
        cache = DynamicCache()
        for layer in range(self.layers):
            cache.update(kv[2 * layer], kv[2 * layer + 1], layer)
        full_mask = torch.cat([mask.new_ones(size, self.prompt_length), mask], dim=1)[:, None, None, :].bool()
        if self.roberta:
            real = ids.ne(self.pad_id).long()
            positions = torch.cumsum(real, dim=1) * real + self.pad_id
        else:
            positions = torch.arange(length, device=ids.device).expand(size, -1)
        out = self.encoder(
            input_ids=ids, attention_mask=full_mask, position_ids=positions, **{self.cache_kw: cache}
        )
        return self.classifier(self.dropout(out.pooler_output))


def build_official(
    shape: dict, prompt_length: int, device: torch.device, bf16: bool, dropout: float = 0.1
) -> Runner:
    from ptv2.data import collate

    config = backbone_config(shape, dropout)
    model = CachePrefixModel(_random_encoder(config, "sdpa", device), prompt_length).to(device)
    params = [p for p in model.parameters() if p.requires_grad]

    def prepare(features: list[dict], max_length: int) -> dict:
        batch = pad_to(collate(features, config.pad_token_id), max_length, config.pad_token_id)
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def loss_fn(batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(batch).float(), batch["labels"])

    amp = torch.bfloat16 if bf16 else None
    step = make_train_step(loss_fn, params, _optimizer(params, device), amp, device)
    return Runner(
        "official_bf16" if bf16 else "official",
        prepare,
        step,
        prompt_length,
        False,
        "bf16 autocast, fp32 weights" if bf16 else "fp32",
    )


def build_peft(shape: dict, prompt_length: int, device: torch.device, dropout: float = 0.1) -> Runner:
    """HF PEFT PrefixTuning (runs only where peft + a transformers it supports are importable)."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from ptv2.data import collate

    config = backbone_config(shape, dropout)
    config.num_labels = 2
    bf16 = device.type == "cuda"
    with torch.device(device):
        base = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    if bf16:
        base.to(torch.bfloat16)  # frozen backbone in bf16, as ptv2 keeps it
    model = get_peft_model(
        base, PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=prompt_length)
    )
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # trainable prefix + classifier in fp32 (master weights), like ptv2's

    def prepare(features: list[dict], max_length: int) -> dict:
        batch = collate(features, config.pad_token_id, pad_to_multiple_of=8)
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def loss_fn(batch: dict) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return F.cross_entropy(out.logits.float(), batch["labels"])

    step = make_train_step(
        loss_fn, params, _optimizer(params, device), torch.bfloat16 if bf16 else None, device
    )
    return Runner("peft", prepare, step, prompt_length, False, "bf16" if bf16 else "fp32")


# ---------------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def matmul_peak(device: torch.device, quick: bool) -> dict:
    """Achieved bf16 matmul TFLOP/s on this device (the MFU denominator), median of several runs."""
    n = 512 if quick or device.type != "cuda" else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "tflops": 2 * n**3 / statistics.median(times) / 1e12,
    }


def measure(
    runner: Runner, batches: list[list[dict]], max_length: int, warmup: int, shape: dict, device, peak
) -> dict:
    """Median ms/step after warm-up, real tokens/s, peak memory (reset here), MFU."""
    prepared = [runner.prepare(b, max_length) for b in batches]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for i, batch in enumerate(prepared):
        _sync(device)
        start = time.perf_counter()
        loss = runner.step(batch)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(float(loss))
    measured = batches[warmup:]
    lengths = [n for b in measured for n in real_lengths(b)]
    seconds = sum(times)
    flops = sum(useful_flops(shape, real_lengths(b), runner.prefix, runner.full_ft) for b in measured)
    padded = sum(p["input_ids"].numel() for p in prepared[warmup:])
    return {
        "ms_per_step": 1000 * statistics.median(times),
        "tokens_per_s": sum(lengths) / seconds,
        "padded_tokens_per_s": padded / seconds,
        "padding_fraction": 1 - sum(lengths) / padded,
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / 1e12 / peak["tflops"] if peak else None,
        "steps": len(times),
        "final_loss": losses[-1],
        "losses_finite": all(math.isfinite(x) for x in losses),
    }


def measure_eval(model: nn.Module, prepare, batches, max_length, warmup, device) -> dict:
    """ptv2 evaluation speed: no_grad, bf16 (GPU), eval batches of 4 training batches each."""
    model.eval()
    groups = [sum(batches[i : i + 4], []) for i in range(0, len(batches) - 3, 4)] or [sum(batches, [])]
    prepared = [prepare(g, max_length) for g in groups]
    amp = device.type == "cuda"
    times = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for i, batch in enumerate(prepared * (1 + (warmup + 2) // len(prepared))):
            _sync(device)
            start = time.perf_counter()
            model(batch)
            _sync(device)
            if i >= min(warmup, len(prepared)):
                times.append((time.perf_counter() - start, sum(real_lengths(groups[i % len(groups)]))))
    model.train()
    seconds = sum(t for t, _ in times)
    return {
        "ms_per_step": 1000 * statistics.median(t for t, _ in times),
        "tokens_per_s": sum(n for _, n in times) / seconds,
        "batch_size": len(groups[0]),
        "steps": len(times),
    }


def sdpa_kernel_check(shape: dict, prompt_length: int, device: torch.device, length: int) -> dict:
    """Does FLASH_ATTENTION alone accept ptv2's attention call (prefix concatenated), without and with a mask?"""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ptv2.prompts.attention import prefix_sdpa_attention

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    b, h, d = 2, shape["heads"], shape["hidden"] // shape["heads"]
    q, k, v = (torch.randn(b, h, length, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    prefix = tuple(torch.randn(b, h, prompt_length, d, device=device, dtype=dtype) for _ in range(2))
    mask = torch.ones(b, 1, 1, length, dtype=torch.bool, device=device)
    mask[0, ..., length // 2 :] = False
    result = {}
    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
        for label, m in (("no_mask", None), ("bool_mask", mask)):
            try:
                with sdpa_kernel(getattr(SDPBackend, backend)):
                    out, _ = prefix_sdpa_attention(None, q, k, v, m, scaling=d**-0.5, prefix_kv=prefix)
                    out.float().sum().backward()
                result[f"{backend.lower()}/{label}"] = "ok"
            except (RuntimeError, AttributeError) as err:
                result[f"{backend.lower()}/{label}"] = "refused: " + str(err).strip().splitlines()[0][:90]
    return result


# ---------------------------------------------------------------------------------------------- driver
def _build(name: str, shape: dict, args, device: torch.device) -> tuple[Runner, nn.Module | None]:
    if name in ("ptv2", "ptv2_padmax", "ptv2_compile"):
        return build_ptv2(
            shape,
            args.prompt_length,
            device,
            padmax=name == "ptv2_padmax",
            compile_model=name == "ptv2_compile",
            name=name,
        )
    if name == "ft":
        return build_ptv2(shape, args.prompt_length, device, method="ft", name="ft")
    if name in ("official", "official_bf16"):
        return build_official(shape, args.prompt_length, device, bf16=name == "official_bf16"), None
    if name == "peft":
        return build_peft(shape, args.prompt_length, device), None
    raise SystemExit(
        f"unknown contender {name!r}: choose from {', '.join(CONTENDERS + ('ptv2_compile', 'peft'))}"
    )


def run_contenders(names: list[str], data: dict, args, device: torch.device, peak: dict | None) -> list[dict]:
    rows = []
    for shape_name in data["meta"]["shapes"]:
        shape = data["meta"]["shape_sizes"][shape_name]
        for name in names:
            torch.manual_seed(data["meta"]["seed"])
            try:
                runner, model = _build(name, shape, args, device)
            except torch.OutOfMemoryError:
                rows.append({"contender": name, "shape": shape_name, "setting": "*", "status": "oom (build)"})
                continue
            for setting, spec in data["settings"].items():
                if name == "ptv2_padmax" and spec["kind"] == "fixed":
                    continue  # identical to ptv2 when nothing needs padding
                row = {"contender": name, "shape": shape_name, "setting": setting, "dtype": runner.dtype}
                if name == "peft" and spec["max_length"] + args.prompt_length > 512:
                    # PEFT shifts real-token positions by P: past the 512-position table it hits a CUDA
                    # device-side assert, which would poison the process for every later setting.
                    row["status"] = f"fails: positions {spec['max_length']}+{args.prompt_length} > 512"
                    print(_row_line(row), flush=True)
                    rows.append(row)
                    continue
                try:
                    row |= measure(
                        runner, spec["batches"], spec["max_length"], args.warmup, shape, device, peak
                    )
                    row["status"] = "ok"
                except torch.OutOfMemoryError:
                    row["status"] = "oom"
                print(_row_line(row), flush=True)
                rows.append(row)
                if name == "ptv2" and not args.no_eval:
                    ev = {
                        "contender": "ptv2_eval",
                        "shape": shape_name,
                        "setting": setting,
                        "dtype": runner.dtype,
                    }
                    ev |= measure_eval(
                        model, runner.prepare, spec["batches"], spec["max_length"], args.warmup, device
                    )
                    ev["status"] = "ok"
                    print(_row_line(ev), flush=True)
                    rows.append(ev)
            del runner, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _row_line(row: dict) -> str:
    if row.get("status") != "ok":
        return f"{row['shape']:>14} {row['setting']:>7} {row['contender']:>14}: {row.get('status')}"
    mem = f"{row['peak_memory_mb']:9.0f} MB" if row.get("peak_memory_mb") is not None else "      - MB"
    return f"{row['shape']:>14} {row['setting']:>7} {row['contender']:>14}: {row['ms_per_step']:8.1f} ms/step {row['tokens_per_s']:10.0f} tok/s {mem}"


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def ratios(rows: list[dict]) -> list[dict]:
    """ptv2 / other (tokens/s; peak memory vs FT) per shape x setting."""
    index = {(r["shape"], r["setting"], r["contender"]): r for r in rows if r.get("status") == "ok"}
    out = []
    for (shape, setting, name), ptv2 in index.items():
        if name != "ptv2":
            continue
        row = {"shape": shape, "setting": setting}
        for other in ("peft", "official", "official_bf16", "ft", "ptv2_padmax"):
            if (shape, setting, other) in index:
                row[f"speed_vs_{other}"] = (
                    ptv2["tokens_per_s"] / index[(shape, setting, other)]["tokens_per_s"]
                )
        ft = index.get((shape, setting, "ft"))
        if ft and ft.get("peak_memory_mb") and ptv2.get("peak_memory_mb"):
            row["memory_vs_ft"] = ptv2["peak_memory_mb"] / ft["peak_memory_mb"]
        out.append(row)
    return out


def render_markdown(result: dict) -> str:
    meta = result["meta"]
    peak = result.get("matmul_peak") or {}
    lines = [
        "# Training speed and memory",
        "",
        f"device: {meta.get('device')}; torch {meta.get('torch')}; transformers {meta.get('transformers')}"
        + (
            f" (PEFT process: transformers {meta['peft_transformers']}, peft {meta['peft']})"
            if meta.get("peft")
            else ""
        ),
        f"batch size {meta['batch_size']}, prompt length {meta['prompt_length']}, {meta['steps']} measured steps after "
        f"{meta['warmup']} warm-up, seed {meta['seed']}; matmul peak {_fmt(peak.get('tflops'), '.3g')} TFLOP/s "
        f"({peak.get('dtype')} {peak.get('n')}^3)",
        "",
        "| shape | setting | contender | precision | ms/step | real tok/s | padding | peak MB | TFLOP/s | MFU |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        if r.get("status") != "ok":
            lines.append(
                f"| {r['shape']} | {r['setting']} | {r['contender']} | | {r.get('status')} | | | | | |"
            )
            continue
        lines.append(
            f"| {r['shape']} | {r['setting']} | {r['contender']} | {r.get('dtype', '')} | {r['ms_per_step']:.1f} | "
            f"{r['tokens_per_s']:.0f} | {_fmt(r.get('padding_fraction'), '.0%')} | {_fmt(r.get('peak_memory_mb'), '.0f')} | "
            f"{_fmt(r.get('tflops'), '.1f')} | {_fmt(r.get('mfu'), '.1%')} |"
        )
    lines += [
        "",
        "Ratios (ptv2 tokens/s over the other's; memory: ptv2 peak over FT peak):",
        "",
        "| shape | setting | vs PEFT | vs official | vs official+bf16 | vs FT | vs ptv2 pad-to-max | memory vs FT |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["ratios"]:
        cells = [
            _fmt(r.get(k), ".2f")
            for k in (
                "speed_vs_peft",
                "speed_vs_official",
                "speed_vs_official_bf16",
                "speed_vs_ft",
                "speed_vs_ptv2_padmax",
                "memory_vs_ft",
            )
        ]
        lines.append(f"| {r['shape']} | {r['setting']} | " + " | ".join(cells) + " |")
    lines += ["", "SDPA kernels accepting ptv2's attention call (prefix concatenated), per shape:", ""]
    for shape, checks in result.get("sdpa_kernels", {}).items():
        lines.append(f"- {shape}: " + "; ".join(f"{k}: {v}" for k, v in checks.items()))
    lines += ["", "Contenders:", ""] + [f"- `{k}`: {v}" for k, v in LABELS.items()]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, result: dict) -> None:
    result["ratios"] = ratios(result["rows"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "bench.md").write_text(render_markdown(result))
    print(f"wrote {out / 'bench.md'} and {out / 'bench.json'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    p.add_argument("--quick", action="store_true", help="tiny shapes and lengths, few steps (CPU smoke run)")
    p.add_argument(
        "--contenders",
        default="ptv2,ptv2_padmax,official,official_bf16,ft",
        help="comma list; peft only in its own env",
    )
    p.add_argument("--shapes", default="roberta-large,bert-base")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default 10, quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3, quick 1)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32, quick 4")
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--compile", action="store_true", help="add ptv2 + torch.compile as a contender")
    p.add_argument("--no-eval", action="store_true", help="skip the ptv2 evaluation-speed rows")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--contender", help="run this one contender on --batches and write --json-out (the PEFT process)"
    )
    p.add_argument("--batches", type=Path, help="batches.pt written by the main run")
    p.add_argument("--json-out", type=Path)
    p.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="rows JSON files (e.g. the PEFT run) to merge into --out",
    )
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.batch_size = args.batch_size or (4 if args.quick else 32)
    return args


def _versions(device: torch.device) -> dict:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the official code's precision)
        # as ptv2's loop does, for every contender: cuDNN's SDPA builds a graph per new sequence length
        torch.backends.cuda.enable_cudnn_sdp(False)
    elif args.quick:
        torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared CPU

    if args.contender:  # a single contender in its own process (the PEFT environment)
        data = torch.load(args.batches, weights_only=False)
        args.prompt_length, args.warmup = data["meta"]["prompt_length"], data["meta"]["warmup"]
        peak = matmul_peak(device, data["meta"]["quick"])
        rows = run_contenders([args.contender], data, args, device, peak)
        meta = _versions(device)
        if args.contender == "peft":
            import peft

            meta |= {"peft": peft.__version__}
        args.json_out.write_text(json.dumps({"rows": rows, "meta": meta, "matmul_peak": peak}, indent=1))
        print(f"wrote {args.json_out}")
        return

    out = args.out
    if args.merge:  # add rows from other processes to an existing result, re-render
        result = json.loads((out / "bench.json").read_text())
        for path in args.merge:
            extra = json.loads(path.read_text())
            result["rows"] += extra["rows"]
            result["meta"]["peft"] = extra["meta"].get("peft")
            result["meta"]["peft_transformers"] = extra["meta"].get("transformers")
        write_outputs(out, result)
        return

    shape_names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shape_names if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown shape(s) {unknown}: choose from {', '.join(SHAPES)}")
    shapes = {s: SHAPES[s] | (QUICK_SIZES if args.quick else {}) for s in shape_names}
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    data = {
        "meta": {
            "seed": args.seed,
            "batch_size": args.batch_size,
            "prompt_length": args.prompt_length,
            "steps": args.steps,
            "warmup": args.warmup,
            "quick": args.quick,
            "shapes": shape_names,
            "shape_sizes": shapes,
        },
        "settings": make_batches(
            args.seed,
            args.batch_size,
            args.warmup + args.steps,
            settings,
            min(s["vocab"] for s in shapes.values()),
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(data, out / "batches.pt")  # the PEFT process trains on exactly these

    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if "peft" in names:
        raise SystemExit(
            "peft runs in its own environment: --contender peft --batches FILE --json-out FILE, then --merge FILE"
        )
    if args.compile:
        names.append("ptv2_compile")
    peak = matmul_peak(device, args.quick)
    print(
        f"matmul peak: {peak['tflops']:.1f} TFLOP/s ({peak['dtype']} {peak['n']}^3) on {device}", flush=True
    )
    kernels = {
        s: sdpa_kernel_check(shapes[s], args.prompt_length, device, max(v[0] for v in settings.values()))
        for s in shape_names
    }
    result = {"meta": data["meta"] | _versions(device), "matmul_peak": peak, "sdpa_kernels": kernels}
    result["rows"] = run_contenders(names, data, args, device, peak)
    write_outputs(out, result)


if __name__ == "__main__":
    main()
