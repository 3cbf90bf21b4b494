"""The model one run trains: backbone (frozen or not) + optional prompts + head."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from ptv2.backbone import Backbone
from ptv2.errors import UserError
from ptv2.heads import HEADS, VerbalizerHead, verbalizer_token_ids
from ptv2.prompts.deep import DeepPrompt, attach_deep_prompt, resolve_depth_range
from ptv2.prompts.shallow import SUPPORTED_ARCHS, ShallowPrompt, attach_shallow_prompt


class PromptedModel(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module, prompt: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = backbone.encoder
        self.mask_format = backbone.mask_format
        self.prompt = prompt
        self.head = head
        if isinstance(prompt, DeepPrompt):
            attach_deep_prompt(backbone, prompt)
        if isinstance(prompt, ShallowPrompt):
            attach_shallow_prompt(backbone, prompt)

    def forward(self, batch: dict) -> torch.Tensor:
        input_ids = batch["input_ids"]
        flat = input_ids.dim() == 3  # multiple choice: [B, C, T] -> [B*C, T]
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if flat:
            inputs = {k: v.flatten(0, 1) for k, v in inputs.items()}
        mask = inputs.pop("attention_mask")
        shallow = isinstance(self.prompt, ShallowPrompt)
        if shallow:  # the embedding hook inserts P vectors after [CLS]: the mask must cover them
            mask = self.prompt.extend_mask(mask)
        # 4-D boolean mask goes through transformers untouched; no padding -> no mask (flash-eligible).
        if self.mask_format == "4d":
            mask = mask[:, None, None, :].bool()
        inputs["attention_mask"] = mask if batch.get("padded", True) else None
        if isinstance(self.prompt, DeepPrompt) and not _checkpointing(self.encoder):
            with self.prompt.one_pass(inputs["input_ids"].shape[0]):
                hidden = self.encoder(**inputs).last_hidden_state
        else:
            hidden = self.encoder(**inputs).last_hidden_state
        if shallow:
            hidden = self.prompt.strip(hidden)
        return self.head(hidden, batch)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.head.loss(logits, batch)


def _checkpointing(encoder: nn.Module) -> bool:
    """Gradient checkpointing on? (transformers renamed the flag to `is_activation_checkpointing` in 5.2x)."""
    flag = getattr(type(encoder), "is_activation_checkpointing", None)
    name = "is_activation_checkpointing" if flag is not None else "is_gradient_checkpointing"
    return bool(getattr(encoder, name, False))


def build_model(cfg: DictConfig, backbone: Backbone, num_labels: int, head_kind: str) -> PromptedModel:
    """Freeze, prompt and head the backbone as the method says (pt2 | pt | ft)."""
    method = cfg.method.name
    config = backbone.config
    if cfg.method.freeze_backbone:
        backbone.encoder.requires_grad_(False)
    prompt = None
    if cfg.method.prompt != "none" and (cfg.prompt_length is None or int(cfg.prompt_length) <= 0):
        raise UserError(f"prompt_length={cfg.prompt_length} must be a positive integer for method={method}")
    if cfg.method.prompt == "shallow":
        if cfg.model.arch not in SUPPORTED_ARCHS:
            raise UserError(
                f"method={method} (input prompts) supports {', '.join(SUPPORTED_ARCHS)} models, "
                f"not arch={cfg.model.arch}: use method=pt2 or ft"
            )
        prompt = ShallowPrompt(int(cfg.prompt_length), config.hidden_size, dropout=cfg.train.dropout)
    if cfg.method.prompt == "deep":
        layers = resolve_depth_range(
            cfg.depth_range.select, config.num_hidden_layers, cfg.depth_range.get("k"), cfg.depth_range.get("layers")
        )
        prompt = DeepPrompt(
            layers,
            int(cfg.prompt_length),
            config.num_attention_heads,
            config.hidden_size // config.num_attention_heads,
            reparam=cfg.reparam.type,
            mlp_hidden_size=cfg.reparam.get("hidden_size", 512),
            dropout=cfg.train.dropout,
        )
    if head_kind == "verbalizer":
        if cfg.method.freeze_backbone:
            backbone.lm_head.requires_grad_(False)  # the pretrained LM head is part of the frozen backbone
        tokenizer = backbone.tokenizer
        head = VerbalizerHead(
            backbone.lm_head, verbalizer_token_ids(tokenizer, cfg.task, num_labels), tokenizer.mask_token_id
        )
        return PromptedModel(backbone, head, prompt)
    if head_kind not in HEADS:
        raise UserError(f"head={head_kind!r} is not one of {sorted(HEADS) + ['verbalizer']}")
    head = HEADS[head_kind](config.hidden_size, num_labels, dropout=cfg.train.dropout)
    return PromptedModel(backbone, head, prompt)
