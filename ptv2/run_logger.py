"""Experiment logging, ``train.logger``: none (default), tensorboard, or wandb.

The loop opens one logger per run (``open_logger``), hands it each step's loss and learning rate as it
books the step (one step late, so logging never waits for the GPU: ``settle_last_step`` in
ptv2/train.py), each epoch's metrics after evaluation, and closes it at the end. Only rank 0 logs.

* tensorboard: event files in ``<run dir>/tensorboard/`` (``tensorboard --logdir results``): scalars
  ``train/loss`` and ``train/lr`` per global step, ``<split>/<metric>`` and ``train/epoch_loss`` per
  epoch, and the resolved config as text. Flushed every epoch, so a crash loses at most that epoch's steps.
* wandb: the same values in a Weights & Biases run (project ``$WANDB_PROJECT``, else "ptv2"; group = the
  experiment), files under the run dir. Offline when ``api.wandb.ai`` cannot be reached (or
  ``WANDB_MODE=offline``): ``wandb sync <run dir>/wandb/offline-run-*`` uploads it later.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from ptv2.errors import UserError
from ptv2.hub import host_reachable

CHOICES = ("none", "tensorboard", "wandb")


class RunLogger:
    """``train.logger=none``: every call does nothing. Subclasses send the values somewhere."""

    def log_step(self, step: int, loss: float, lr: float) -> None:
        """One optimizer step: ``step`` counts from 1 over the whole run (epochs included)."""

    def log_epoch(self, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        """One epoch's metrics by split, e.g. ``{"dev": {"accuracy": 71.2}, "train": {"epoch_loss": 0.4}}``."""

    def close(self) -> None:
        pass


class TensorBoardLogger(RunLogger):
    def __init__(self, directory: Path, config_yaml: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("train.logger=tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(directory))
        # TensorBoard renders text as Markdown: indent by four spaces so the YAML shows as a code block
        self.writer.add_text("config", "\n".join(f"    {line}" for line in config_yaml.splitlines()))

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def log_epoch(self, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        for split, values in metrics.items():
            for name, value in values.items():
                if value is not None:
                    self.writer.add_scalar(f"{split}/{name}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger(RunLogger):
    def __init__(self, directory: Path, name: str, group: str | None, config: dict) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError("train.logger=wandb needs wandb: pip install wandb (or train.logger=tensorboard)") from None
        directory.mkdir(parents=True, exist_ok=True)
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
        # WANDB_MODE, when set, is wandb's own choice; otherwise go offline rather than hang without network
        mode = None if os.environ.get("WANDB_MODE") else ("online" if host_reachable(host) else "offline")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "ptv2"), name=name, group=group, dir=str(directory),
            config=config, mode=mode,
        )
        self.step = 0

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.step = step
        self.run.log({"train/loss": loss, "train/lr": lr}, step=step)

    def log_epoch(self, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        values = {f"{split}/{k}": v for split, m in metrics.items() for k, v in m.items() if v is not None}
        self.run.log(values | {"epoch": epoch}, step=self.step)  # at the epoch's last step: steps only go up

    def close(self) -> None:
        self.run.finish()


def open_logger(cfg: DictConfig, run_dir: Path, main_rank: bool = True) -> RunLogger:
    """The logger ``train.logger`` names, writing into ``run_dir``; a no-op one on ranks other than 0."""
    kind = str(cfg.train.get("logger") or "none").lower()
    if kind not in CHOICES:
        raise UserError(f"train.logger={kind!r}: use {', '.join(CHOICES)}")
    if kind == "none" or not main_rank:
        return RunLogger()
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir / "tensorboard", OmegaConf.to_yaml(cfg, resolve=True))
    name = "/".join(run_dir.parts[-4:])  # task/model/method/key
    return WandbLogger(run_dir, name, cfg.results.get("experiment"), OmegaConf.to_container(cfg, resolve=True))
