"""Sequence labeling (paper Table 3): NER on CoNLL03, OntoNotes 5.0 and CoNLL04; SRL builds on it.

Encoding: the record's words go through the tokenizer pre-split (``is_split_into_words``); the label
sits on each word's first sub-word, -100 on the other sub-words and on special tokens, and every
feature keeps ``word_ids`` (the record's word index per token, None elsewhere) to map predictions
back to words. Sentences longer than ``max_length`` tokens are cut into consecutive windows of whole
words, each its own feature; ``metrics`` stitches the windows back, so no word loses its label.

Label set: the task YAML's ``labels:`` (IOB2 tags; explicit so each dataset keeps its own label space,
which multi-task runs need), else derived from the FULL train split (sorted, "O" first).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerBase

from ptv2.config import CONF_DIR
from ptv2.errors import UserError
from ptv2.formats.sequence import read_sequence_file
from ptv2.metrics import seqeval_scores
from ptv2.tasks.base import Task

IGNORE = -100
_UNBOUNDED = 1_000_000  # tokenizers without a known limit report a huge model_max_length


def word_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer set up for pre-split words: byte-level BPE (RoBERTa, DeBERTa) must see each word
    with its leading space ("Ġword"), as inside running text. transformers 5 ignores a call-time
    ``add_prefix_space``, so a copy gets a prefix-adding pre-tokenizer; the backbone's own is untouched."""
    pre = getattr(tokenizer, "backend_tokenizer", None) and tokenizer.backend_tokenizer.pre_tokenizer
    if not isinstance(pre, pre_tokenizers.ByteLevel) or pre.add_prefix_space:
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=True, trim_offsets=pre.trim_offsets, use_regex=pre.use_regex
    )
    tokenizer.add_prefix_space = True
    return tokenizer


def derive_labels(records: list[dict]) -> list[str]:
    """Sorted tag set of ``records`` with "O" first."""
    tags = {t for r in records for t in r["tags"]} - {"O"}
    return ["O", *sorted(tags)]


def word_windows(piece_counts: list[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` word ranges whose sub-words fit ``budget`` (a word longer than the
    budget alone forms a window; its tail sub-words get truncated, its first one - the labelled one - stays)."""
    windows, start, used = [], 0, 0
    for i, n in enumerate(piece_counts):
        if i > start and used + n > budget:
            windows.append((start, i))
            start, used = i, 0
        used += n
    windows.append((start, len(piece_counts)))
    return windows


class SequenceLabelingTask(Task):
    head = "token"

    def __init__(self, cfg, data_root, tokenizer) -> None:
        super().__init__(cfg, data_root, tokenizer)
        self.word_tokenizer = word_tokenizer(tokenizer)
        self._records: dict[str, list[dict]] = {}

    # -- reading ---------------------------------------------------------------------------
    def read(self, split: str) -> list[dict]:
        # Cached: deriving the label set reads train once more otherwise.
        if split not in self._records:
            self._records[split] = super().read(split)
        return self._records[split]

    def read_file(self, path: Path, split: str) -> list[dict]:
        return read_sequence_file(path, self.cfg.format)

    def from_hub(self, row: dict) -> dict:
        # Hub NER sets (conll2003) store tags as ints indexing the YAML labels, in the hub's order.
        return {"tokens": list(row["tokens"]), "tags": [self.label_names[i] for i in row["ner_tags"]]}

    @functools.cached_property
    def label_names(self) -> list[str]:
        labels = self.cfg.get("labels")
        return list(labels) if labels else derive_labels(self.read("train"))

    @functools.cached_property
    def label_ids(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.label_names)}

    # -- encoding --------------------------------------------------------------------------
    @functools.cached_property
    def length_limit(self) -> int:
        """Tokens per feature: task max_length, else the backbone's positions (prefix prompts take none
        unless prompt.shift_positions=true)."""
        if self.max_length:
            return int(self.max_length)
        limit = self.tokenizer.model_max_length
        if limit > _UNBOUNDED:
            raise UserError(f"tokenizer of task={self.name} has no length limit: set task.max_length=512")
        return int(limit) - self.reserved_positions

    def second_segment(self, record: dict) -> list[str] | None:
        """Words after the separator (SRL: the predicate); never labelled."""
        return None

    def _tokenize_full(self, records: list[dict]) -> list[dict]:
        """Each record whole, untruncated, in one batched call (the fast path: most records fit)."""
        seconds = [self.second_segment(r) for r in records]
        enc = self.word_tokenizer(
            [r["tokens"] for r in records],
            seconds if seconds[0] is not None else None,
            is_split_into_words=True,
            verbose=False,  # over-long rows are windowed below, not fed to the model
        )
        return [
            {
                "data": {k: list(v[i]) for k, v in enc.items()},
                "words": enc.word_ids(i),
                "seq": enc.sequence_ids(i),
            }
            for i in range(len(records))
        ]

    def encode(self, record: dict, index: int, split: str) -> list[dict]:
        return self._encode(record, index, split, self._tokenize_full([record])[0])

    def _encode(self, record: dict, index: int, split: str, full: dict) -> list[dict]:
        words, second = record["tokens"], self.second_segment(record)
        counts = [0] * len(words)
        for w, s in zip(full["words"], full["seq"], strict=True):
            if w is not None and s == 0:
                counts[w] += 1
        if len(full["data"]["input_ids"]) <= self.length_limit:
            windows = [(0, len(words))]
        else:
            budget = self.length_limit - (
                len(full["data"]["input_ids"]) - sum(counts)
            )  # minus specials, predicate
            if budget < 1:
                raise UserError(f"task.max_length={self.length_limit} leaves no room for words: raise it")
            windows = word_windows(counts, budget)
        tags = record.get("tags")
        features = []
        for k, (start, end) in enumerate(windows):
            if len(windows) == 1:
                data, word_ids, seq_ids = full["data"], full["words"], full["seq"]
            else:
                enc = self.word_tokenizer(
                    words[start:end],
                    second,
                    is_split_into_words=True,
                    truncation="only_first" if second is not None else True,
                    max_length=self.length_limit,
                )
                data, word_ids, seq_ids = (
                    {key: list(v) for key, v in enc.items()},
                    enc.word_ids(),
                    enc.sequence_ids(),
                )
            word_ids = [
                start + w if w is not None and s == 0 else None
                for w, s in zip(word_ids, seq_ids, strict=True)
            ]
            feature = dict(data)
            feature |= {
                "example_index": index,
                "word_ids": word_ids,
                "window": k,
                "num_windows": len(windows),
                # words of a record cut into windows (0 when it fits); summed per split by encode_all
                "windowed_words": len(words) if len(windows) > 1 else 0,
                "wordless": sum(c == 0 for c in counts[start:end]),
            }
            if tags is not None:
                feature["labels"] = self._labels(word_ids, tags, split)
            features.append(feature)
        return features

    def _labels(self, word_ids: list[int | None], tags: list[str], split: str) -> list[int]:
        labels, previous = [], None
        for w in word_ids:
            if w is None or w == previous:
                labels.append(IGNORE)
            elif tags[w] in self.label_ids:
                labels.append(self.label_ids[tags[w]])
            elif split == "train":
                raise UserError(
                    f"tag {tags[w]!r} of task={self.name} train is not in its labels: {self._labels_hint()}"
                )
            else:  # an eval-only tag: no loss on it; it is still scored (the model can never predict it)
                labels.append(IGNORE)
            previous = w
        return labels

    def _labels_hint(self) -> str:
        """Where to fix the label set: the task's own YAML when there is one (task.name can be anything)."""
        yaml = CONF_DIR / "task" / f"{self.name}.yaml"
        shown = f"conf/task/{self.name}.yaml labels" if yaml.is_file() else "task.labels=[...]"
        return f"add it to {shown} (or task.labels=null to derive them from train)"

    def encode_all(self, records: list[dict], split: str) -> list[dict]:
        features = []
        for start in range(0, len(records), 1024):
            chunk = records[start : start + 1024]
            for i, (record, full) in enumerate(zip(chunk, self._tokenize_full(chunk), strict=True)):
                features += self._encode(record, start + i, split, full)
        heads = [f for f in features if f["window"] == 0]
        windowed = [f for f in heads if f["num_windows"] > 1]
        if windowed:
            print(
                f"{self.name} {split}: {len(windowed)} sentence(s), {sum(f['windowed_words'] for f in windowed)} words, "
                f"longer than {self.length_limit} tokens: split into {sum(f['num_windows'] for f in windowed)} windows "
                "of whole words (all labels kept, predictions stitched back)"
            )
        wordless = sum(f["wordless"] for f in features)
        if wordless:
            print(f"{self.name} {split}: {wordless} word(s) give no sub-word token: predicted O")
        return features

    # -- evaluation ------------------------------------------------------------------------
    def predicted_tags(
        self, records: list[dict], features: list[dict], outputs: list[torch.Tensor]
    ) -> list[list[str]]:
        """Word tags per record: argmax at each word's first sub-word, windows stitched by word index."""
        preds = [["O"] * len(r["tokens"]) for r in records]
        for feature, out in zip(features, outputs, strict=True):
            ids, row, previous = out.argmax(-1).tolist(), preds[feature["example_index"]], None
            for t, w in enumerate(feature["word_ids"]):
                if w is not None and w != previous:
                    row[w] = self.label_names[ids[t]]
                previous = w
        return preds

    def score(self, gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
        return seqeval_scores(gold, pred)

    def metrics(self, records, features, outputs):
        return self.score([r["tags"] for r in records], self.predicted_tags(records, features, outputs))

    def predictions(self, records, features, outputs):
        return dict(enumerate(self.predicted_tags(records, features, outputs)))


class CoNLL03(SequenceLabelingTask):
    """CoNLL-2003 English NER (IOB1 in the files, IOB2 after reading)."""


class OntoNotes(SequenceLabelingTask):
    """OntoNotes 5.0 NER, 18 types, in the Xu et al. (2021) train/dev/test split."""


class CoNLL04(SequenceLabelingTask):
    """CoNLL04 entities (Loc, Org, Peop, Other) as NER, from the SpERT-style JSON split."""
