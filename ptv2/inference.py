"""Forward passes without gradients: a loader's batches through the model, head outputs per feature, and the
official submission file of a split's predictions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ptv2.data import BatchBuffer
from ptv2.results import write_atomic


def to_device(batch: dict | BatchBuffer, device: torch.device) -> dict:
    if isinstance(batch, BatchBuffer):
        return batch.to(device)
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None,
    runner: Callable[[dict], torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Head outputs per feature (float32, CPU); per-token outputs cut to the feature's real length.

    ``runner`` calls the model (compiled or not, ``ptv2.speed.ModelRunner``); the model itself by default.
    """
    model.eval()
    runner = runner or model
    outputs: list[torch.Tensor] = []
    pending = None  # the previous batch: its outputs copy to the host while this batch's forward runs
    for batch in loader:
        on_device = to_device(batch, device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = runner(on_device)
        if pending is not None:
            outputs += _arrived(*pending)
        pending = (*_to_host(logits), batch)
    if pending is not None:
        outputs += _arrived(*pending)
    return outputs


def _to_host(logits: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """From a GPU, the outputs' float32 copy into pinned memory, queued behind the forward and not waited for
    here: the loop reads it after queuing the next batch, so the GPU is not left idle (``per_feature``
    converts anything else)."""
    if logits.device.type != "cuda":
        return logits, None
    host = torch.empty(logits.shape, dtype=torch.float32, pin_memory=True).copy_(logits.float(), non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return host, copied


def _arrived(host: torch.Tensor, copied: torch.cuda.Event | None, batch: dict | BatchBuffer) -> list[torch.Tensor]:
    if copied is not None:
        copied.synchronize()
    return per_feature(host, batch)


def per_feature(logits: torch.Tensor, batch: dict | BatchBuffer) -> list[torch.Tensor]:
    """A batch's head outputs, one float32 CPU tensor per feature; per-token ones cut to the real length."""
    logits = logits.float().cpu()
    if logits.dim() == 3 and batch["input_ids"].dim() == 2:
        lengths = batch["attention_mask"].sum(-1).tolist()
        return [row[:n] for row, n in zip(logits, lengths, strict=True)]
    return list(logits)


def write_submission(task, data, outputs: list[torch.Tensor], path: Path) -> None:
    """The official submission file (one JSON object per line) of a split's predictions (``data``: a Split)."""
    rows = task.submission_rows(data.records, task.predictions(data.records, data.features, outputs))
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
