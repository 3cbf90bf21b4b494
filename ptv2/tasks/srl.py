"""Semantic role labeling (paper Table 3): CoNLL-2005 (WSJ, Brown) and CoNLL-2012.

One record per predicate. Input: the sentence's words, then the backbone tokenizer's own separator,
then the predicate word (a pre-split pair); labels sit on the sentence words only. Scoring follows
the CoNLL-2005 scorer: argument spans only, the verb span itself (B-V/I-V) is not scored - it is
mapped to "O" in gold and predictions before seqeval.
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
        return seqeval_scores([without_verb(t) for t in gold], [without_verb(t) for t in pred])
