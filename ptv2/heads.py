"""Randomly initialised task heads on the encoder's final hidden states.

Each head maps hidden states [N, T, H] (N = batch, or batch x choices) to logits and owns its loss.
The loop never looks inside: it calls ``head(hidden, batch)`` and ``head.loss(logits, batch)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClsHead(nn.Module):
    """Linear classifier on the [CLS] (first) hidden state - no verbalizer, as P-Tuning v2 argues."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.classifier(self.dropout(hidden[:, 0]))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class ChoiceHead(nn.Module):
    """Multiple choice (COPA): one score per (context, choice) pair from its [CLS], softmax over choices."""

    def __init__(self, hidden_size: int, num_labels: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        num_choices = batch["input_ids"].shape[1]
        return self.scorer(self.dropout(hidden[:, 0])).view(-1, num_choices)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class TokenHead(nn.Module):
    """Per-token classifier (NER, SRL); labels of -100 (non-first sub-words, specials) are ignored."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)


class SpanHead(nn.Module):
    """Extractive QA: start and end logits on every token; logits [N, T, 2]."""

    def __init__(self, hidden_size: int, num_labels: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        logits = self.qa_outputs(hidden).float()
        # padding can never be a start or an end
        return logits.masked_fill(~batch["attention_mask"].bool().unsqueeze(-1), torch.finfo(logits.dtype).min)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        start, end = logits.unbind(-1)
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2


class MultiTaskHeads(nn.Module):
    """MPT-2 stage 1: one head per dataset behind the one shared prompt. Every batch holds a single
    dataset (``batch["task_id"]``, its position in ``num_labels``), whose head scores it and owns the loss.

    ``num_labels``: dataset name -> (head kind, num_labels), in task_id order (``MultiTask.num_labels``).
    """

    def __init__(self, hidden_size: int, num_labels: dict[str, tuple[str, int]], dropout: float = 0.1) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: HEADS[kind](hidden_size, n, dropout=dropout) for name, (kind, n) in num_labels.items()})
        self._order = list(self.heads.values())

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self._order[batch["task_id"]](hidden, batch)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return self._order[batch["task_id"]].loss(logits, batch)


HEADS: dict[str, type[nn.Module]] = {
    "cls": ClsHead, "choice": ChoiceHead, "token": TokenHead, "span": SpanHead, "multi": MultiTaskHeads
}
