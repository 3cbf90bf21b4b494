"""A run's record: what metrics.json holds (schema: docs/metrics.md), as one typed object.

The loop fills it as the run goes (``add_epoch``, ``timing``) and writes it after every epoch; a checkpoint
keeps it, so a resumed run continues the same record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch
import transformers
from omegaconf import DictConfig, OmegaConf

import ptv2
from ptv2.prompts.deep import format_depth_range
from ptv2.results import SCHEMA_VERSION


@dataclass
class RunRecord:
    task: str
    family: str
    model: str
    method: str
    head: str
    prompt_length: int | None
    reparam: str | None
    depth_range: str
    num_layers: int
    seed: int
    experiment: str | None
    stage1_run: str | None
    primary_metric: str
    report_split: str
    splits: list[str]
    majority_baseline: dict | None
    params: dict
    hparams: dict
    overrides: list[str]
    schema_version: int = SCHEMA_VERSION
    status: str = "running"  # running | done | failed
    error: str | None = None
    best_epoch: int | None = None
    best: dict | None = None
    epochs: list[dict] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    versions: dict = field(default_factory=lambda: {
        "ptv2": ptv2.__version__, "torch": torch.__version__, "transformers": transformers.__version__
    })
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    identity: dict = field(default_factory=dict)  # the run key and what it covers (ptv2.results.run_identity)

    # metrics.json's key order (the dataclass's field order puts the defaults last)
    ORDER = (
        "schema_version", "status", "error", "task", "family", "model", "method", "head", "prompt_length",
        "reparam", "depth_range", "num_layers", "seed", "experiment", "stage1_run", "primary_metric",
        "report_split", "splits", "best_epoch", "best", "majority_baseline", "epochs", "params", "timing",
        "hparams", "overrides", "versions", "created", "identity",
    )

    @classmethod
    def start(cls, cfg: DictConfig, model, head: str, num_layers: int, stage1_run: str | None, majority: dict,
              params: dict, overrides: list[str]) -> RunRecord:
        """The record of a run about to train: what it is, before any result."""
        prompted = cfg.method.prompt != "none"
        return cls(
            task=cfg.task.name, family=cfg.task.family, model=cfg.model.name, method=cfg.method.name, head=head,
            prompt_length=int(cfg.prompt_length) if prompted else None,
            reparam=cfg.reparam.type if cfg.method.prompt == "deep" else None,
            depth_range=format_depth_range(list(model.prompt.layers)), num_layers=num_layers, seed=int(cfg.seed),
            experiment=cfg.results.get("experiment"), stage1_run=stage1_run, primary_metric=cfg.task.primary_metric,
            report_split=cfg.task.report_split, splits=list(cfg.task.eval_splits), majority_baseline=majority or None,
            params=params, hparams=OmegaConf.to_container(cfg.train, resolve=True), overrides=list(overrides),
        )

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: data[k] for k in self.ORDER}

    def add_epoch(self, epoch: int, train_loss: float, lr: float, metrics: dict, train_s: float,
                  eval_s: float | None = None) -> bool:
        """Book one evaluated epoch; True when its dev primary metric is the best so far (ties keep the first)."""
        self.epochs.append({"epoch": epoch, "train_loss": train_loss, "lr": lr, "metrics": metrics, "train_s": train_s,
                            "eval_s": eval_s})
        best = None if self.best is None else self.best["dev"][self.primary_metric]
        if best is not None and metrics["dev"][self.primary_metric] <= best:
            return False
        self.best_epoch, self.best = epoch, metrics
        return True
