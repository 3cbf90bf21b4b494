"""Extractive question answering (paper Table 3, QA block): SQuAD 1.1 / 2.0 and any SQuAD-format JSON.

A (question, context) pair longer than ``max_length`` becomes several overlapping windows of the
context (``stride`` tokens shared between neighbours); each window is one feature. Training labels
are the gold span's token positions where it lies wholly inside the window, else the CLS position
(index 0) - which is also the label of an unanswerable SQuAD 2.0 question. At evaluation every
window is scored and the best span across windows wins; SQuAD 2.0 compares it with the null (CLS)
score.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ptv2.errors import UserError
from ptv2.formats.squad import read_squad
from ptv2.metrics import squad_scores, squad_v2_with_threshold
from ptv2.tasks.base import Task

Offsets = list[tuple[int, int] | None]


def answer_token_span(offsets: Offsets, start_char: int, end_char: int) -> tuple[int, int] | None:
    """Token (start, end), inclusive, covering the characters [start_char, end_char) of the context.

    ``offsets`` holds (char_start, char_end) for context tokens and None elsewhere. None when the
    answer is not wholly inside this window's context tokens.
    """
    context = [i for i, o in enumerate(offsets) if o is not None]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return None
    # First token ending after the answer's first character; last token starting before its end.
    start = next(i for i in context if offsets[i][1] > start_char)
    end = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return (start, end) if start <= end else None


def best_span(
    logits: torch.Tensor, offsets: Offsets, n_best: int, max_answer_length: int
) -> tuple[float, int, int] | None:
    """(score, start, end) of the best valid span among the n_best start x n_best end candidates.

    Valid: both ends on context tokens, end >= start, at most ``max_answer_length`` tokens. The
    candidate restriction is the usual (HF run_qa / official) search; score = start + end logit.
    """
    start_logits, end_logits = logits[:, 0], logits[:, 1]
    k = min(n_best, len(offsets))
    starts, ends = start_logits.topk(k).indices, end_logits.topk(k).indices
    in_context = torch.tensor([o is not None for o in offsets])
    scores = start_logits[starts][:, None] + end_logits[ends][None, :]
    length = ends[None, :] - starts[:, None] + 1
    valid = (
        in_context[starts][:, None]
        & in_context[ends][None, :]
        & (length >= 1)
        & (length <= max_answer_length)
    )
    if not valid.any():
        return None
    flat = scores.masked_fill(~valid, -torch.inf).argmax()
    i, j = divmod(int(flat), k)
    return float(scores[i, j]), int(starts[i]), int(ends[j])


class ExtractiveQA(Task):
    """SQuAD-format extractive QA with the span head. ``version_2: true`` in the YAML allows no-answer."""

    head = "span"

    def __init__(self, cfg, data_root, tokenizer) -> None:
        super().__init__(cfg, data_root, tokenizer)
        self.max_length = int(cfg.get("max_length") or 384)
        self.stride = int(cfg.get("stride") or 128)
        self.n_best = int(cfg.get("n_best") or 20)
        self.max_answer_length = int(cfg.get("max_answer_length") or 30)
        self.version_2 = bool(cfg.get("version_2", False))
        if self.stride >= self.max_length:
            raise UserError(
                f"task.stride={self.stride} must be smaller than task.max_length={self.max_length}"
            )

    # -- reading ---------------------------------------------------------------------------
    def read_file(self, path: Path, split: str) -> list[dict]:
        return read_squad(path)

    def from_hub(self, row: dict) -> dict:
        # Hub SQuAD rows: answers = {"text": [...], "answer_start": [...]}; empty lists = unanswerable.
        answers = [
            {"text": t, "answer_start": int(s)}
            for t, s in zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True)
        ]
        return {
            "id": row["id"],
            "title": row.get("title", ""),
            "context": row["context"],
            "question": row["question"],
            "answers": answers,
            "is_impossible": not answers,
        }

    # -- encoding --------------------------------------------------------------------------
    def encode(self, record: dict, index: int, split: str) -> list[dict]:
        try:
            # Leading spaces in questions waste tokens and shift nothing we need (offsets are context-only).
            enc = self.tokenizer(
                record["question"].lstrip(),
                record["context"],
                truncation="only_second",
                max_length=self.max_length,
                stride=self.stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        except Exception as error:  # the tokenizer's message is long and names no config key
            raise UserError(
                f"task={self.name} question {record['id']!r} does not fit max_length={self.max_length} with "
                f"stride={self.stride}: raise task.max_length or lower task.stride ({str(error).splitlines()[0]})"
            ) from None
        gold = None
        if split == "train" and record["answers"] and not record.get("is_impossible"):
            answer = record["answers"][0]  # train questions carry one answer (Quoref: the first of several)
            gold = answer["answer_start"], answer["answer_start"] + len(answer["text"])
        features = []
        for w in range(len(enc["input_ids"])):
            sequence_ids = enc.sequence_ids(w)
            offsets = [
                tuple(o) if s == 1 else None
                for o, s in zip(enc["offset_mapping"][w], sequence_ids, strict=True)
            ]
            feature = {k: enc[k][w] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
            feature["example_index"] = index
            if split == "train":
                # Offsets are only needed to read answers back at evaluation; train features skip them.
                span = answer_token_span(offsets, *gold) if gold else None
                feature["start_positions"], feature["end_positions"] = span or (0, 0)
            else:
                feature["offsets"] = offsets
            features.append(feature)
        return features

    # -- evaluation ------------------------------------------------------------------------
    def _best_answers(
        self, records: list[dict], features: list[dict], outputs: list[torch.Tensor]
    ) -> tuple[dict[str, str], dict[str, float]]:
        """Per question id: best span text across windows and null score diff (null - best span)."""
        best: list[tuple[float, str] | None] = [None] * len(records)
        null = [torch.inf] * len(records)
        for feature, logits in zip(features, outputs, strict=True):
            i, offsets = feature["example_index"], feature["offsets"]
            # Null = CLS start + end, the minimum over windows (official / HF practice).
            null[i] = min(null[i], float(logits[0, 0] + logits[0, 1]))
            found = best_span(logits, offsets, self.n_best, self.max_answer_length)
            if found and (best[i] is None or found[0] > best[i][0]):
                score, s, e = found
                best[i] = score, records[i]["context"][offsets[s][0] : offsets[e][1]]
        texts, diffs = {}, {}
        for record, b, n in zip(records, best, null, strict=True):
            texts[record["id"]] = b[1] if b else ""
            diffs[record["id"]] = n - b[0] if b else torch.inf  # no valid span at all: always null
        return texts, diffs

    def metrics(self, records, features, outputs):
        texts, diffs = self._best_answers(records, features, outputs)
        golds = {r["id"]: [a["text"] for a in r["answers"]] or [""] for r in records}
        if not self.version_2:
            return squad_scores(texts, golds)
        # exact_match / f1 use null threshold 0 - what the paper's official code reports and the
        # primary metric; best_* tune the threshold on dev (reported separately, in a footnote).
        return squad_v2_with_threshold(texts, diffs, golds)

    def predictions(self, records, features, outputs):
        texts, diffs = self._best_answers(records, features, outputs)
        if not self.version_2:
            return texts
        return {q: "" if diffs[q] > 0.0 else t for q, t in texts.items()}  # "" = no answer, threshold 0
