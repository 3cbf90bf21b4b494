"""What every prompt offers the model, the artifacts and the counts: deep, shallow, or none.

``PromptedModel`` calls these around the encoder and never asks which kind it holds:

- ``attach(backbone)``: hook into the backbone once (deep: a slot per prompted layer; shallow: the
  embedding output).
- ``extend_mask(mask)``, ``encoder_inputs(rows, mask, length)`` (``packed_inputs(sequences)`` for packed
  rows), ``around_encoder(rows)``, ``strip(hidden)``:
  one forward pass (shallow prompts add mask columns and remove their positions afterwards; deep prompts
  hand every layer's prefix to the attention functions).
- ``artifact()``: the tensors a task keeps (``prompt.*`` in prompt_head.safetensors), ``stored_parameter_count``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn


class Prompt(nn.Module):
    kind: ClassVar[str] = "none"
    packable: ClassVar[bool] = True  # can its sequences share rows (ptv2.data.packed_rows)?
    prompt_length: int = 0
    layers: tuple[int, ...] = ()  # 0-based layers holding a prefix (metrics.json's depth_range)

    def attach(self, backbone) -> None:
        """Connect to the backbone; called once, when the model is built."""

    def extend_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The [rows, T] padding mask of the encoder's input sequence."""
        return mask

    def encoder_inputs(self, rows: int, mask: torch.Tensor | None, length: int) -> dict:
        """Extra keyword arguments of one encoder call."""
        return {}

    def packed_inputs(self, sequences: int) -> dict:
        """Extra keyword arguments of one encoder call over packed rows holding ``sequences`` sequences."""
        return {}

    @contextlib.contextmanager
    def around_encoder(self, rows: int, recomputed: bool = False) -> Iterator[None]:
        """Wraps one encoder call (``recomputed``: gradient checkpointing will rerun its layers)."""
        yield

    def strip(self, hidden: torch.Tensor) -> torch.Tensor:
        """The encoder's states of the real tokens only."""
        return hidden

    def artifact(self) -> dict[str, torch.Tensor]:
        """The prompt tensors a task keeps, by name (without the ``prompt.`` prefix)."""
        return dict(self.state_dict())

    def stored_parameter_count(self) -> int:
        return 0


class NoPrompt(Prompt):
    """Fine-tuning (method=ft): the encoder as it is."""
