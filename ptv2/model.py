"""The model one run trains: backbone (frozen or not) + optional prompts + head."""

from __future__ import annotations

import importlib

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ptv2.backbone import Backbone, absolute_position_ids, position_capacity
from ptv2.errors import UserError
from ptv2.heads import HEADS, POOLED_HEADS, VerbalizerHead, init_linear, make_head, verbalizer_token_ids
from ptv2.prompts.attention import PackedSequences, packed_sequences
from ptv2.prompts.base import NoPrompt, Prompt
from ptv2.prompts.deep import DeepPrompt, resolve_depth_range
from ptv2.prompts.shallow import SUPPORTED_ARCHS, ShallowPrompt


class PromptedModel(nn.Module):
    """Backbone + prompt (deep, shallow or none) + head. ``forward(batch)`` returns the head's logits; the
    encoder runs on the padded batch, or on its packed rows when the batch carries them
    (``ptv2.data.packed_rows``)."""

    def __init__(
        self, backbone: Backbone, head: nn.Module, prompt: Prompt | None = None, position_offset: int = 0
    ) -> None:
        super().__init__()
        self.encoder = backbone.encoder
        self.mask_format = backbone.mask_format
        self.prompt = prompt if prompt is not None else NoPrompt()
        self.head = head
        # prompt.shift_positions: real tokens at P..P+T-1, as the official code's key/value cache put them
        self.position_offset = position_offset
        # A randomly initialised frozen pooler (roberta-large ships none) is part of what a task must keep.
        self.keeps_frozen_pooler = backbone.pooler is not None and not backbone.pooler_pretrained
        self.prompt.attach(backbone)

    @property
    def can_pack(self) -> bool:
        """Packing needs transformers' attention path (4-D masks) and a prompt that allows it."""
        return self.mask_format == "4d" and self.prompt.packable

    def forward(self, batch: dict) -> torch.Tensor:
        hidden = self._packed_hidden(batch) if "pack_input_ids" in batch else self._padded_hidden(batch)
        return self.head(hidden, batch)

    def _encode(self, inputs: dict, mask: torch.Tensor | None, packed: PackedSequences | None = None) -> torch.Tensor:
        """The encoder's last hidden states, with the prompt's part in it."""
        rows, length = inputs["input_ids"].shape
        if packed is None:
            extra = self.prompt.encoder_inputs(rows, mask, length)
        else:  # the attention functions keep the packed sequences apart
            extra = self.prompt.packed_inputs(packed.sequences) | {"ptv2_packed": packed}
        with self.prompt.around_encoder(rows, recomputed=_checkpointing(self.encoder)):
            hidden = self.encoder(**inputs, attention_mask=mask, **extra).last_hidden_state
        return self.prompt.strip(hidden)

    def _padded_hidden(self, batch: dict) -> torch.Tensor:
        flat = batch["input_ids"].dim() == 3  # multiple choice: [B, C, T] -> [B*C, T]
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if flat:
            inputs = {k: v.flatten(0, 1) for k, v in inputs.items()}
        mask = inputs.pop("attention_mask")
        if self.position_offset:
            positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
            inputs["position_ids"] = absolute_position_ids(self.encoder, positions, mask, self.position_offset)
        mask = self.prompt.extend_mask(mask)  # shallow prompts add their P always-visible positions
        # 4-D boolean mask goes through transformers untouched; no padding -> no mask (flash-eligible).
        if self.mask_format == "4d":
            mask = mask[:, None, None, :].bool()
        return self._encode(inputs, mask if batch.get("padded", True) else None)

    def _packed_hidden(self, batch: dict) -> torch.Tensor:
        """Encode the packed rows, then gather every sequence's states back into the padded layout."""
        ids, positions = batch["pack_input_ids"], batch["pack_positions"]  # position -1: padding
        rows, length = ids.shape
        inputs = {"input_ids": ids}
        inputs["position_ids"] = absolute_position_ids(self.encoder, positions.clamp(min=0), positions >= 0,
                                                       self.position_offset)
        if "pack_token_type_ids" in batch:
            inputs["token_type_ids"] = batch["pack_token_type_ids"]
        if batch["pack_dense"]:  # one whole sequence per row: plain attention
            hidden = self._encode(inputs, None)
        else:
            hidden = self._encode(inputs, None, packed_sequences(batch, length, self.prompt.prompt_length))
        flat = torch.cat([hidden.reshape(rows * length, -1), hidden.new_zeros(1, hidden.shape[-1])])
        return flat[batch["pack_index"]].view(-1, batch["input_ids"].shape[-1], hidden.shape[-1])

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.head.loss(logits, batch)

    def head_state(self) -> dict[str, torch.Tensor]:
        """The head tensors a task keeps: trainable ones, and a random frozen pooler (a pretrained frozen part,
        such as a verbalizer's LM head or BERT's pooler, comes back with the backbone)."""
        return {
            name: value for name, value in self.head.named_parameters()
            if value.requires_grad or (self.keeps_frozen_pooler and ".pooler." in f".{name}")
        }

    def prompt_head_state(self) -> dict[str, torch.Tensor]:
        """The per-task artifact (prompt_head.safetensors): ``head.*``, the prompt's parameters ``prompt.*``
        and, for deep prompts, the computed per-layer prefix k/v ``prompt.computed_prefix``."""
        tensors = {f"head.{k}": v for k, v in self.head_state().items()}
        tensors |= {f"prompt.{k}": v for k, v in self.prompt.artifact().items()}
        return {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}

    def load_prompt_head_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Inverse of ``prompt_head_state``; the computed prefix is derived from the parameters, not loaded."""
        unknown = [k for k in tensors if not k.startswith(("head.", "prompt."))]
        if unknown:
            raise UserError(f"{source}: unexpected tensors {unknown[:3]}: not a ptv2 prompt_head file")
        head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        load_head_state(self.head, head, source)
        prompt = {k.removeprefix("prompt."): v for k, v in tensors.items() if k.startswith("prompt.") and k != "prompt.computed_prefix"}
        try:
            self.prompt.load_state_dict(prompt, strict=True)
        except RuntimeError as error:
            raise UserError(f"{source}: its prompt does not fit this run's ({str(error).splitlines()[0]})") from None

    def max_real_tokens(self) -> int | None:
        """Longest sequence the positions allow when shifted; None when positions are not shifted."""
        return position_capacity(self.encoder) - self.position_offset if self.position_offset else None


def load_head_state(head: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load saved head tensors: every trainable parameter must be there; frozen ones may be absent (they
    came with the backbone: a verbalizer's pretrained LM head, BERT's pooler)."""
    missing, unexpected = head.load_state_dict(state, strict=False)
    trainable = {name for name, p in head.named_parameters() if p.requires_grad}
    if unexpected or trainable & set(missing):
        raise UserError(f"{source} does not fit this run's head: missing {sorted(trainable & set(missing))[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}")


def _checkpointing(encoder: nn.Module) -> bool:
    """Gradient checkpointing on? (transformers renamed the flag to `is_activation_checkpointing` in 5.2x)."""
    flag = getattr(type(encoder), "is_activation_checkpointing", None)
    name = "is_activation_checkpointing" if flag is not None else "is_gradient_checkpointing"
    return bool(getattr(encoder, name, False))


def initializer_std(value: float | None, backbone: Backbone) -> float:
    """An init std from the config; null means the backbone's own initializer_range (the official init)."""
    return float(value) if value is not None else float(getattr(backbone.config, "initializer_range", 0.02))


def build_prompt(cfg: DictConfig, backbone: Backbone) -> Prompt:
    method, config = cfg.method.name, backbone.config
    if cfg.method.prompt == "none":
        return NoPrompt()
    if cfg.prompt_length is None or int(cfg.prompt_length) <= 0:
        raise UserError(f"prompt_length={cfg.prompt_length} must be a positive integer for method={method}")
    init_std = initializer_std(OmegaConf.select(cfg, "prompt.init_std"), backbone)
    if cfg.method.prompt == "shallow":
        if cfg.model.arch not in SUPPORTED_ARCHS:
            raise UserError(
                f"method={method} (input prompts) supports {', '.join(SUPPORTED_ARCHS)} models, "
                f"not arch={cfg.model.arch}: use method=pt2 or ft"
            )
        return ShallowPrompt(int(cfg.prompt_length), config.hidden_size, dropout=cfg.train.dropout, init_std=init_std)
    layers = resolve_depth_range(
        cfg.depth_range.select, config.num_hidden_layers, cfg.depth_range.get("k"), cfg.depth_range.get("layers")
    )
    return DeepPrompt(
        layers,
        int(cfg.prompt_length),
        config.num_attention_heads,
        config.hidden_size // config.num_attention_heads,
        reparam=cfg.reparam.type,
        mlp_hidden_size=cfg.reparam.get("hidden_size", 512),
        dropout=cfg.train.dropout,
        init_std=init_std,
    )


def _pooler(cfg: DictConfig, backbone: Backbone, init_std: float) -> nn.Module | None:
    """What the cls/choice heads read: the backbone's pooler (frozen with a frozen backbone), DeBERTa's
    ContextPooler (trainable, as the official DeBERTa heads), or nothing (head_pool=cls)."""
    pool = OmegaConf.select(cfg, "head_pool", default="pooler")
    if pool == "cls":
        return None
    if pool != "pooler":
        raise UserError(f"head_pool={pool!r}: use pooler (the backbone's pooler output, official) or cls")
    if backbone.pooler is not None:
        backbone.pooler.requires_grad_(not cfg.method.freeze_backbone)
        return backbone.pooler
    context_pooler = getattr(importlib.import_module(type(backbone.encoder).__module__), "ContextPooler", None)
    if context_pooler is None:
        raise UserError(f"model={cfg.model.name} has no pooler: use head_pool=cls")
    pooler = context_pooler(backbone.config)
    init_linear(pooler, init_std)
    return pooler


def build_head(cfg: DictConfig, backbone: Backbone, num_labels, head_kind: str) -> nn.Module:
    if head_kind == "verbalizer":
        if cfg.method.freeze_backbone:
            backbone.lm_head.requires_grad_(False)  # the pretrained LM head is part of the frozen backbone
        tokenizer = backbone.tokenizer
        return VerbalizerHead(
            backbone.lm_head, verbalizer_token_ids(tokenizer, cfg.task, num_labels), tokenizer.mask_token_id
        )
    if head_kind not in HEADS:
        raise UserError(f"head={head_kind!r} is not one of {sorted(HEADS) + ['verbalizer']}")
    init_std = initializer_std(OmegaConf.select(cfg, "head_init_std"), backbone)
    pooler = _pooler(cfg, backbone, init_std) if head_kind in POOLED_HEADS else None
    return make_head(head_kind, backbone.config.hidden_size, num_labels, cfg.train.dropout, pooler, init_std)


def _position_offset(cfg: DictConfig, backbone: Backbone) -> int:
    if not OmegaConf.select(cfg, "prompt.shift_positions", default=False):
        return 0
    if cfg.method.prompt != "deep":
        raise UserError(f"prompt.shift_positions=true shifts positions by deep prompts' length: not for method={cfg.method.name}")
    if getattr(backbone.encoder.embeddings, "position_embeddings", None) is None:
        raise UserError(f"prompt.shift_positions=true needs absolute positions; model={cfg.model.name} has none")
    return int(cfg.prompt_length)


def build_model(cfg: DictConfig, backbone: Backbone, num_labels: int, head_kind: str) -> PromptedModel:
    """Freeze, prompt and head the backbone as the method says (pt2 | pt | ft)."""
    if cfg.method.freeze_backbone:
        backbone.encoder.requires_grad_(False)
    prompt = build_prompt(cfg, backbone)
    head = build_head(cfg, backbone, num_labels, head_kind)
    return PromptedModel(backbone, head, prompt, position_offset=_position_offset(cfg, backbone))
