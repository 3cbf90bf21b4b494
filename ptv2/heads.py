"""Randomly initialised task heads on the encoder's final hidden states.

Each head maps hidden states [N, T, H] (N = batch, or batch x choices) to logits and owns its loss.
The loop never looks inside: it calls ``head(hidden, batch)`` and ``head.loss(logits, batch)``.

As in the official code, the Linear layers start at N(0, init_std) with zero bias (``head_init_std``; null
= the backbone's initializer_range), and the cls / choice heads read the backbone's pooler output
(``head_pool=pooler``: BERT's pretrained pooler, RoBERTa's randomly initialised one, both frozen with a
frozen backbone; DeBERTa's trainable ContextPooler) unless ``head_pool=cls`` asks for the raw [CLS] state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def init_linear(module: nn.Module, std: float) -> None:
    """N(0, std) weights and zero biases for every Linear in ``module`` (transformers' _init_weights rule)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class _FirstToken(nn.Module):
    """The first token's hidden state, through the pooler when there is one."""

    def __init__(self, pooler: nn.Module | None) -> None:
        super().__init__()
        self.pooler = pooler

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # transformers' poolers (BertPooler, DeBERTa's ContextPooler) read hidden[:, 0] themselves
        return hidden[:, 0] if self.pooler is None else self.pooler(hidden)


class ClsHead(nn.Module):
    """Linear classifier on the first token ([CLS] / <s>), pooled or raw - no verbalizer, as P-Tuning v2 argues."""

    def __init__(
        self, hidden_size: int, num_labels: int, dropout: float = 0.1, pooler: nn.Module | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.first_token = _FirstToken(pooler)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        if init_std is not None:
            init_linear(self.classifier, init_std)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.classifier(self.dropout(self.first_token(hidden)))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class ChoiceHead(nn.Module):
    """Multiple choice (COPA): one score per (context, choice) pair from its first token, softmax over choices."""

    def __init__(
        self, hidden_size: int, num_labels: int = 1, dropout: float = 0.1, pooler: nn.Module | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.first_token = _FirstToken(pooler)
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)
        if init_std is not None:
            init_linear(self.scorer, init_std)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        num_choices = batch["input_ids"].shape[1]
        return self.scorer(self.dropout(self.first_token(hidden))).view(-1, num_choices)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class TokenHead(nn.Module):
    """Per-token classifier (NER, SRL); labels of -100 (non-first sub-words, specials) are ignored."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1, init_std: float | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        if init_std is not None:
            init_linear(self.classifier, init_std)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)


class SpanHead(nn.Module):
    """Extractive QA: start and end logits on every token; logits [N, T, 2]."""

    def __init__(self, hidden_size: int, num_labels: int = 2, dropout: float = 0.0, init_std: float | None = None) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)  # no dropout, as the official QA models
        if init_std is not None:
            init_linear(self.qa_outputs, init_std)

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

    def __init__(
        self, hidden_size: int, num_labels: dict[str, tuple[str, int]], dropout: float = 0.1,
        pooler: nn.Module | None = None, init_std: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_labels, dict):
            from ptv2.errors import UserError

            raise UserError("head=multi is MPT-2's own head: train several datasets with multitask=<family> instead")
        self.heads = nn.ModuleDict({
            name: make_head(kind, hidden_size, n, dropout, pooler, init_std) for name, (kind, n) in num_labels.items()
        })
        self._order = list(self.heads.values())

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return self._order[batch["task_id"]](hidden, batch)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return self._order[batch["task_id"]].loss(logits, batch)


HEADS: dict[str, type[nn.Module]] = {
    "cls": ClsHead, "choice": ChoiceHead, "token": TokenHead, "span": SpanHead, "multi": MultiTaskHeads
}
POOLED_HEADS = ("cls", "choice", "multi")  # heads that read the first token (multi: through its own heads)


def make_head(
    kind: str, hidden_size: int, num_labels, dropout: float, pooler: nn.Module | None, init_std: float | None
) -> nn.Module:
    """A linear head of ``kind``; only the heads that read the first token take the pooler."""
    options = {"dropout": dropout, "init_std": init_std} | ({"pooler": pooler} if kind in POOLED_HEADS else {})
    return HEADS[kind](hidden_size, num_labels, **options)


class VerbalizerHead(nn.Module):
    """Table 4's "verbalizer & LM head": the backbone's pretrained LM head at the input's mask token,
    read at the label words only -> logits [N, num_labels].

    The task's encoding puts the tokenizer's mask token before the final separator (``Task.append_mask``);
    the last mask token of a row is the one read. Under a frozen backbone the LM head is frozen too.
    """

    def __init__(self, lm_head: nn.Module, label_token_ids: list[int], mask_token_id: int) -> None:
        super().__init__()
        self.lm_head = lm_head
        self.mask_token_id = mask_token_id
        self.register_buffer("label_token_ids", torch.tensor(label_token_ids), persistent=False)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        is_mask = batch["input_ids"] == self.mask_token_id
        if not bool(is_mask.any(-1).all()):
            raise ValueError("verbalizer head: a row has no mask token (the task's encoding must add one)")
        length = is_mask.shape[-1]
        last = length - 1 - is_mask.flip(-1).int().argmax(-1)  # last mask position per row
        at_mask = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.lm_head(at_mask)[:, self.label_token_ids]

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


def verbalizer_token_ids(tokenizer, task_cfg, num_labels: int) -> list[int]:
    """One vocabulary id per label from the task YAML's ``verbalizer`` words (in label order).

    Each word is tokenised as " word" (after a space, as it stands before the mask token): RoBERTa's
    byte-level BPE then yields the "Ġword" token, BERT's WordPiece the plain word.
    """
    from ptv2.errors import UserError

    words = list(task_cfg.get("verbalizer") or [])
    fix = f"set task.verbalizer=[...] (one word per label of {list(task_cfg.get('labels') or [])}) or use head=cls"
    if not words:
        raise UserError(f"task={task_cfg.name} has no verbalizer words for head=verbalizer: {fix}")
    if len(words) != num_labels:
        raise UserError(f"task={task_cfg.name} verbalizer has {len(words)} words for {num_labels} labels: {fix}")
    if tokenizer.mask_token_id is None:
        raise UserError("the tokenizer has no mask token: head=verbalizer needs a masked-LM model")
    ids = []
    for word in words:
        pieces = tokenizer(" " + str(word), add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise UserError(f"verbalizer word {word!r} is {len(pieces)} tokens for this tokenizer, not 1: {fix}")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise UserError(f"task={task_cfg.name} verbalizer words {words} map to the same token: {fix}")
    return ids
