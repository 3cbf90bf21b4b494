"""From a composed config to what a run needs: backbone, task, encoded splits, model. One path for
``ptv2-train`` and ``ptv2-predict``, so a saved run is rebuilt exactly as it was trained."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ptv2.backbone import Backbone, load_backbone
from ptv2.data import feature_length
from ptv2.errors import UserError
from ptv2.model import PromptedModel, build_model
from ptv2.multitask import init_prompt_from
from ptv2.tasks.base import Task, build_task


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(cfg: DictConfig) -> torch.device:
    if cfg.train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.train.device)


def autocast_dtype(cfg: DictConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPUs (train.precision=bf16); CPUs always run fp32."""
    return torch.bfloat16 if device.type == "cuda" and cfg.train.precision == "bf16" else None


@dataclass
class Split:
    records: list[dict]
    features: list[dict]


@dataclass
class Built:
    backbone: Backbone
    task: Task
    model: PromptedModel
    head: str  # the head kind: the task's own, or head=verbalizer
    splits: dict[str, Split]
    stage1_run: str | None  # MPT-2 stage 2: the stage-1 run its prompt came from


def encode_split(task: Task, split: str, limit: int | None) -> Split:
    records = task.read(split)
    if limit:
        records = records[:limit]
    features = task.encode_all(records, split)
    if not features:
        raise UserError(f"task={task.name} split {split} has no examples")
    return Split(records, features)


def check_position_budget(model: PromptedModel, splits: dict[str, Split]) -> None:
    """prompt.shift_positions=true: every sequence must fit the positions left after the prompt's P."""
    limit = model.max_real_tokens()
    if limit is None:
        return
    longest = max(feature_length(f) for split in splits.values() for f in split.features)
    if longest > limit:
        raise UserError(
            f"prompt.shift_positions=true puts real tokens after the {model.position_offset} prompt positions: "
            f"a {longest}-token input exceeds the {limit} left; lower task.max_length or prompt_length"
        )


def build(cfg: DictConfig, device: torch.device, splits: list[str], limits: dict[str, int | None] | None = None) -> Built:
    """Backbone -> task -> encoded splits -> model (prompt + head) on ``device``, as a run trains it.

    ``limits``: data.max_*_samples per split name."""
    head = cfg.head or cfg.task.head
    backbone = load_backbone(cfg.model, cfg.train.attention, cfg.train.dropout, with_lm_head=head == "verbalizer")
    task = build_task(cfg.task, cfg.data.root, backbone.tokenizer)
    task.append_mask = head == "verbalizer"
    task.reserved_positions = int(cfg.prompt_length) if OmegaConf.select(cfg, "prompt.shift_positions") else 0
    encoded = {s: encode_split(task, s, (limits or {}).get(s)) for s in splits}
    model = build_model(cfg, backbone, task.num_labels, head).to(device)
    check_position_budget(model, encoded)
    init_from = OmegaConf.select(cfg, "prompt.init_from")
    stage1_run = init_prompt_from(init_from, cfg, model, head) if init_from else None
    return Built(backbone, task, low_precision_backbone(cfg, model, device), head, encoded, stage1_run)


def low_precision_backbone(cfg: DictConfig, model: PromptedModel, device: torch.device) -> PromptedModel:
    """A frozen backbone in bf16 on GPUs under train.precision=bf16: frozen weights need no fp32 master copy."""
    if cfg.method.freeze_backbone and autocast_dtype(cfg, device) == torch.bfloat16:
        model.encoder.to(torch.bfloat16)
    return model
