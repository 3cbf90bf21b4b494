"""Semantic role labeling (paper Table 3): CoNLL-2005 (WSJ, Brown) and CoNLL-2012.

One record per predicate. Input: the sentence's words, then the backbone tokenizer's own separator,
then the predicate word (a pre-split pair); labels sit on the sentence words only.

Scoring: ``f1`` (with precision, recall) is what the official P-Tuning v2 code reports and the tables show:
seqeval over every label, the verb span (B-V/I-V) included. ``f1_args`` (precision_args, recall_args) is the
CoNLL-2005 scorer's convention beside it: argument spans only, the verb span mapped to "O" in gold and
predictions. (Before schema_version 2, ``f1`` was the argument-only score.)
"""

from __future__ import annotations

from ptv2.metrics import seqeval_scores
from ptv2.tasks.ner import SequenceLabelingTask

_VERB = {"B-V", "I-V"}


def without_verb(tags: list[str]) -> list[str]:
    return ["O" if t in _VERB else t for t in tags]


class SemanticRoleLabeling(SequenceLabelingTask):
    def second_segment(self, record: dict) -> list[str]:
        return [record["tokens"][record["predicate_index"]]]

    def score(self, gold, pred):
        arguments = seqeval_scores([without_verb(t) for t in gold], [without_verb(t) for t in pred])
        return seqeval_scores(gold, pred) | {f"{k}_args": arguments[k] for k in ("f1", "precision", "recall")}
