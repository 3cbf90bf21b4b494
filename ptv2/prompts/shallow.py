"""Shallow prompts (the PT baseline, Lester et al. 2021): P trainable vectors in the input sequence only.

Where the vectors go, and why:
- The real tokens are embedded once, by the backbone's own embedding module, with their normal
  position ids (0..T-1, RoBERTa's padding-offset positions) and token types. A forward hook on that
  module inserts the prompt into its output, so nothing of the stock embedding path is repeated or
  skipped (the official PT baseline applied positions and LayerNorm twice and dropped token types).
- The prompt is inserted right AFTER the first token ([CLS] / <s>): the [CLS] stays at position 0,
  so the cls head reads the same place as without prompts.
- The vectors live in the post-embedding space (after the embedding LayerNorm): they get no position
  or token-type embedding and no LayerNorm; they are trained directly as the encoder's layer-0 input.
  Initialised N(0, prompt.init_std), 1.0 for method=pt (conf/method/pt.yaml): the scale of a LayerNorm
  output, where the official baseline's N(0, 0.02) vectors ended up after its second LayerNorm.
- The attention mask covers them (ones); no layer gets a prefix k/v.
- After the encoder, the prompt positions are removed from the hidden states, so every head (and the
  token/span offsets of NER, SRL and QA) sees exactly the real tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ptv2.prompts.base import Prompt


class ShallowPrompt(Prompt):
    kind = "shallow"
    packable = False  # its vectors sit after each sequence's [CLS]: packed rows do not keep that place

    def __init__(self, prompt_length: int, hidden_size: int, dropout: float = 0.0, init_std: float = 1.0) -> None:
        super().__init__()
        self.prompt_length = prompt_length
        self.embedding = nn.Parameter(torch.randn(prompt_length, hidden_size) * init_std)
        self.dropout = nn.Dropout(dropout)

    def insert(self, embedded: torch.Tensor) -> torch.Tensor:
        """[B, T, H] embedding output -> [B, T+P, H] with the prompt after the first token."""
        prompt = self.embedding.to(embedded.dtype).expand(embedded.shape[0], -1, -1)
        return torch.cat([embedded[:, :1], self.dropout(prompt), embedded[:, 1:]], dim=1)

    def extend_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, T] attention mask -> [B, T+P]: the prompt positions are always attended to."""
        ones = mask.new_ones(mask.shape[0], self.prompt_length)
        return torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)

    def strip(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T+P, H] final hidden states -> [B, T, H]: only the real tokens reach the head."""
        return torch.cat([hidden[:, :1], hidden[:, 1 + self.prompt_length :]], dim=1)

    def stored_parameter_count(self) -> int:
        return self.embedding.numel()

    def attach(self, backbone) -> None:
        """Insert the vectors into the backbone's embedding output (a forward hook)."""
        backbone.encoder.embeddings.register_forward_hook(PromptInserter(self))


class PromptInserter:
    """Forward hook on the embedding module; a class (not a closure) so deepcopy rebinds it."""

    def __init__(self, prompt: ShallowPrompt) -> None:
        self.prompt = prompt

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.prompt.insert(output)


SUPPORTED_ARCHS = ("bert", "roberta")  # absolute-position embeddings module + encoder stack
