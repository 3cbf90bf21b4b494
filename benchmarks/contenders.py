"""The benchmark's contenders: ptv2 as ptv2-train runs it, and what it is measured against.

``ptv2`` is ptv2-train's own path with its default settings: the config composed from conf/ (so packing
and compilation are whatever ``train.packing`` / ``train.compile`` default to on this device), the
backbone from ``load_backbone`` (a random one of the chosen shape, as the tiny test models are built),
``build_model``, the loop's batching (``ptv2.data.collate``), ``ModelRunner`` and the loop's own
``Optimization`` step. Variants differ only by config overrides. The others: HF PEFT PrefixTuning (in its
own environment), the official code's mechanism (prefix through the key/value cache, fp32, padded to the
max length, as its scripts ran; and the same in bf16), and full fine-tuning through ptv2's path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ptv2.data import collate
from ptv2.inference import to_device

LR = 1e-2
# name -> (what it is, config overrides of the ptv2-train path); None: not ptv2's path
VARIANTS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "ptv2": ("ptv2-train's defaults (deep prompts, frozen bf16 backbone)", ()),
    "ptv2_eager": ("ptv2, no torch.compile", ("train.compile=false",)),
    "ptv2_nopack": ("ptv2, no packing, no compile (dynamic padding: the previous default path)",
                    ("train.packing=false", "train.compile=false")),
    "ptv2_eager_lean": ("ptv2, no torch.compile, lean layer norms", ("train.compile=false", "train.lean_norms=true")),
    "ptv2_lean_norms": ("ptv2, layer norms keep bf16 normalised inputs for backward", ("train.lean_norms=true",)),
    "ptv2_compile_default": ("ptv2, torch.compile without CUDA graphs", ("train.compile=true", "train.compile_mode=default")),
    "ft": ("full fine-tuning through ptv2's path (bf16 autocast, fp32 master weights)", ("method=ft",)),
    "ft_eager": ("full fine-tuning through ptv2's path, no torch.compile", ("method=ft", "train.compile=false")),
    "official": ("official mechanism: cache prefix, fp32, padded to max length", None),
    "official_bf16": ("official mechanism + bf16 autocast", None),
    "peft": ("HF PEFT PrefixTuning (bf16 frozen backbone, dynamic padding)", None),
}


@dataclass
class Contender:
    """One contender on one shape: features -> device batch, one training step, one evaluation forward."""

    name: str
    prepare: Callable[[list[dict], int], dict]  # (features, setting max length) -> batch on the device
    step: Callable[[dict], torch.Tensor]
    prefix: int  # P extra keys per layer (0 for FT)
    full_ft: bool
    dtype: str
    evaluate: Callable[[dict], torch.Tensor] | None = None
    reference: Callable[[dict], torch.Tensor] | None = None  # evaluate, the model called eagerly
    packing: bool = False
    compiled: bool = False
    prepare_padded: Callable[[list[dict], int], dict] | None = None  # the same batch without packing


def ptv2_config(shape: dict, prompt_length: int, overrides: tuple[str, ...]):
    from ptv2.config import compose_config

    arch = shape["arch"]
    sizes = {"hidden_size": shape["hidden"], "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
             "intermediate_size": shape["ffn"], "vocab_size": shape["vocab"]}
    return compose_config([
        "task=rte", f"model=tiny-{arch}", f"prompt_length={prompt_length}", "train.dropout=0.1",
        *(f"+model.tiny.config.{k}={v}" if k == "vocab_size" else f"model.tiny.config.{k}={v}" for k, v in sizes.items()),
        *overrides,
    ])


def build_ptv2(shape: dict, prompt_length: int, device: torch.device, name: str = "ptv2",
               extra: tuple[str, ...] = ()) -> Contender:
    from ptv2.backbone import load_backbone
    from ptv2.build import autocast_dtype, low_precision_backbone
    from ptv2.model import build_model
    from ptv2.speed import ROWS_MULTIPLE, ModelRunner, use_packing
    from ptv2.train import Optimization

    cfg = ptv2_config(shape, prompt_length, VARIANTS[name][1] + extra)
    with torch.device(device):  # initialise on the GPU: a CPU init of roberta-large takes tens of seconds
        backbone = load_backbone(cfg.model, cfg.train.attention, cfg.train.dropout)
    model = low_precision_backbone(cfg, build_model(cfg, backbone, 2, "cls").to(device), device)
    packing = use_packing(cfg, model, device)
    runner = ModelRunner(model, cfg, device, packing)
    step = Optimization(model, runner, cfg, device, steps_per_epoch=10_000)
    pad, multiple, amp = backbone.tokenizer.pad_token_id, cfg.train.pad_to_multiple_of, autocast_dtype(cfg, device)

    rows_multiple = ROWS_MULTIPLE if runner.enabled else 1

    def prepare(features: list[dict], max_length: int) -> dict:
        length = -(-max_length // multiple) * multiple if packing else None  # ptv2.speed.pack_length of the setting
        return to_device(collate(features, pad, multiple, pack_length=length, rows_multiple=rows_multiple,
                                 prefix_length=model.prompt.prompt_length), device)

    def prepare_padded(features: list[dict], max_length: int) -> dict:
        return to_device(collate(features, pad, multiple), device)

    @torch.no_grad()
    def forward(call: Callable[[dict], torch.Tensor], batch: dict) -> torch.Tensor:
        model.eval()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = call(batch).clone()
        model.train()
        return out

    precision = "bf16" if amp else "fp32"
    return Contender(name, prepare, step, prompt_length if cfg.method.prompt == "deep" else 0,
                     cfg.method.name == "ft", precision, lambda b: forward(runner, b), lambda b: forward(model, b),
                     packing, runner.enabled, prepare_padded)


# -- the others -------------------------------------------------------------------------------------
def backbone_config(shape: dict, dropout: float = 0.1):
    from transformers import AutoConfig

    roberta = shape["arch"] == "roberta"
    return AutoConfig.for_model(
        shape["arch"], vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], intermediate_size=shape["ffn"], max_position_embeddings=514 if roberta else 512,
        type_vocab_size=1 if roberta else 2, pad_token_id=1 if roberta else 0, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


def plain_step(loss_fn: Callable[[dict], torch.Tensor], params: list, device: torch.device,
               amp: torch.dtype | None) -> Callable[[dict], torch.Tensor]:
    """The usual step for the non-ptv2 contenders: autocast, backward, clip at 1.0, fused AdamW."""
    optimizer = torch.optim.AdamW(params, lr=LR, fused=device.type == "cuda")

    def step(batch: dict) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def pad_to(batch: dict, length: int, pad_id: int) -> dict:
    """A dynamically padded batch padded further to ``length`` (the official scripts' max_length padding)."""
    extra = length - batch["input_ids"].shape[-1]
    batch = dict(batch)
    batch["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_id)
    batch["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
    return batch


class CachePrefixModel(nn.Module):
    """The official P-Tuning v2 code re-expressed on today's transformers: an embedding of P x (layers * 2 *
    hidden) reshaped into per-layer prefix k/v, dropped out, handed to the backbone as its key/value cache
    with the mask extended by P ones; pooler + dropout + linear head. Positions are passed as 0..T-1 (the
    cache would shift them by P, past the 512-position table at length 512, at the same cost)."""

    def __init__(self, encoder: nn.Module, prompt_length: int) -> None:
        super().__init__()
        config = encoder.config
        self.encoder = encoder.requires_grad_(False)
        self.layers, self.heads = config.num_hidden_layers, config.num_attention_heads
        self.head_dim, self.prompt_length = config.hidden_size // self.heads, prompt_length
        self.pad_id, self.roberta = config.pad_token_id, config.model_type == "roberta"
        self.prefix = nn.Embedding(prompt_length, self.layers * 2 * config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 2)
        # transformers renamed past_key_values to cache (5.2x); take whichever this version's forward has
        self.cache_kw = "cache" if "cache" in inspect.signature(encoder.forward).parameters else "past_key_values"

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
        out = self.encoder(input_ids=ids, attention_mask=full_mask, position_ids=positions, **{self.cache_kw: cache})
        return self.classifier(self.dropout(out.pooler_output))


def build_official(shape: dict, prompt_length: int, device: torch.device, bf16: bool) -> Contender:
    from transformers import AutoModel

    config = backbone_config(shape)
    with torch.device(device):
        model = CachePrefixModel(AutoModel.from_config(config, attn_implementation="sdpa"), prompt_length)
    params = [p for p in model.parameters() if p.requires_grad]

    def prepare(features: list[dict], max_length: int) -> dict:
        return to_device(pad_to(collate(features, config.pad_token_id), max_length, config.pad_token_id), device)

    def loss_fn(batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(batch).float(), batch["labels"])

    step = plain_step(loss_fn, params, device, torch.bfloat16 if bf16 else None)
    return Contender("official_bf16" if bf16 else "official", prepare, step, prompt_length, False,
                     "bf16 autocast, fp32 weights" if bf16 else "fp32")


def build_peft(shape: dict, prompt_length: int, device: torch.device) -> Contender:
    """HF PEFT PrefixTuning (runs only where peft + a transformers it supports are importable)."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    config = backbone_config(shape)
    config.num_labels = 2
    bf16 = device.type == "cuda"
    with torch.device(device):
        base = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    if bf16:
        base.to(torch.bfloat16)  # frozen backbone in bf16, as ptv2 keeps it
    model = get_peft_model(base, PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=prompt_length))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # trainable prefix + classifier in fp32 (master weights), like ptv2's

    def prepare(features: list[dict], max_length: int) -> dict:
        return to_device(collate(features, config.pad_token_id, pad_to_multiple_of=8), device)

    def loss_fn(batch: dict) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return F.cross_entropy(out.logits.float(), batch["labels"])

    step = plain_step(loss_fn, params, device, torch.bfloat16 if bf16 else None)
    return Contender("peft", prepare, step, prompt_length, False, "bf16" if bf16 else "fp32")


def build(name: str, shape: dict, prompt_length: int, device: torch.device) -> Contender:
    if name not in VARIANTS:
        raise SystemExit(f"unknown contender {name!r}: choose from {', '.join(VARIANTS)}")
    if VARIANTS[name][1] is not None:
        return build_ptv2(shape, prompt_length, device, name)
    if name == "peft":
        return build_peft(shape, prompt_length, device)
    return build_official(shape, prompt_length, device, bf16=name == "official_bf16")
