"""SuperGLUE tasks (paper Table 2). Records come from ``ptv2.formats.superglue``.

Encodings follow the official P-Tuning v2 code (shared/paper/hyperparameters.md). Each class also
formats its predictions as the official SuperGLUE submission file (``ptv2-predict``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ptv2.errors import UserError
from ptv2.formats.superglue import read_superglue
from ptv2.metrics import accuracy, macro_f1, multirc_scores, normalize_answer, record_scores
from ptv2.tasks.base import ClassificationTask, Task


class SuperGlueTask(Task):
    """Reading and submission naming shared by all eight tasks."""

    def read_file(self, path: Path, split: str) -> list[dict]:
        return read_superglue(self.name, path)

    def from_hub(self, row: dict) -> dict:
        # The hub's super_glue rows carry the release's fields flat; hidden test labels are -1 there.
        return row | {"label": None} if row.get("label") == -1 else row

    @property
    def submission_file(self) -> str:
        """The file name the SuperGLUE leaderboard expects: the official task folder name + .jsonl."""
        return f"{Path(self.cfg.path).name}.jsonl"

    def submission_rows(self, records: list[dict], predictions: dict[Any, Any]) -> list[dict]:
        """One jsonl row per official example: ``{"idx", "label"}`` with the label as the leaderboard spells it."""
        return [{"idx": idx, "label": label} for idx, label in predictions.items()]


class SuperGlueClassification(SuperGlueTask, ClassificationTask):
    pass


class BooleanSubmission(SuperGlueClassification):
    """Tasks whose official labels are JSON-style booleans in submissions: "true" / "false"."""

    def submission_rows(self, records, predictions):
        return [{"idx": idx, "label": str(label).lower()} for idx, label in predictions.items()]


class BoolQ(BooleanSubmission):
    def texts(self, record):
        return record["question"], record["passage"]


class CB(SuperGlueClassification):
    def texts(self, record):
        return record["premise"], record["hypothesis"]

    def metrics(self, records, features, outputs):
        preds, labels = self.predicted_labels(outputs), [r["label"] for r in records]
        return {"accuracy": accuracy(preds, labels), "macro_f1": macro_f1(preds, labels, range(self.num_labels))}


class RTE(SuperGlueClassification):
    def texts(self, record):
        return record["premise"], record["hypothesis"]


class WiC(BooleanSubmission):
    """The official templates (``task.template``): 0, one sequence asking about the word (RoBERTa's);
    1, the word as a prefix of both sentences (BERT's)."""

    def texts(self, record):
        word, first, second = record["word"], record["sentence1"], record["sentence2"]
        template = int(self.cfg.get("template", 1))
        if template == 0:
            return f"{first} {second} Does {word} have the same meaning in both sentences?", None
        if template == 1:
            return f"{word}: {first}", f"{word}: {second}"
        raise UserError(f"task.template={template} for wic: use 0 (one sequence) or 1 (word-prefixed pair)")


class WSC(BooleanSubmission):
    """Official pair ("span2: text", span1): does the pronoun (span2) refer to the noun phrase (span1)?"""

    def texts(self, record):
        return f"{record['span2_text']}: {record['text']}", record["span1_text"]


class COPA(SuperGlueClassification):
    """Multiple choice: one (premise + connective, choice) pair per choice, scored by the choice head.

    The connective turns the question into text: "cause" -> " because", "effect" -> " so".
    """

    head = "choice"
    CONNECTIVES = {"cause": "because", "effect": "so"}

    def encode(self, record, index, split):
        if record["question"] not in self.CONNECTIVES:
            raise UserError(f"copa idx {record['idx']}: question {record['question']!r} is not cause or effect")
        context = f"{record['premise']} {self.CONNECTIVES[record['question']]}"
        rows = [
            self.tokenizer(context, record[choice], truncation=True, max_length=self.max_length)
            for choice in ("choice1", "choice2")
        ]
        # One feature per example with every sequence key as [choices][tokens]; collate pads to [B, C, T].
        feature: dict = {key: [dict(row)[key] for row in rows] for key in rows[0]}
        feature["example_index"] = index
        if record.get("label") is not None:
            feature["labels"] = int(record["label"])
        return [feature]

    def predictions(self, records, features, outputs):
        return dict(zip((r["idx"] for r in records), self.predicted_labels(outputs), strict=True))


class MultiRC(SuperGlueClassification):
    """Binary per answer option: (paragraph, "question answer"); F1a over options, EM per question."""

    def texts(self, record):
        return record["paragraph"], f"{record['question']} {record['answer']}"

    def from_hub(self, row: dict) -> dict:
        """A hub row is one answer option, its ids nested under ``idx``: the file reader's record."""
        ids = row["idx"]
        label = row.get("label")
        return {
            "idx": ids["answer"], "paragraph_idx": ids["paragraph"], "question_idx": ids["question"],
            "answer_idx": ids["answer"], "paragraph": row["paragraph"], "question": row["question"],
            "answer": row["answer"], "label": None if label in (None, -1) else int(label),
            "question_uid": (ids["paragraph"], ids["question"]),
        }

    def metrics(self, records, features, outputs):
        return multirc_scores(
            [r["question_uid"] for r in records], self.predicted_labels(outputs), [r["label"] for r in records]
        )

    def predictions(self, records, features, outputs):
        # Keyed by the official answer idx, which the release numbers uniquely across a split file.
        preds = {r["idx"]: p for r, p in zip(records, self.predicted_labels(outputs), strict=True)}
        if len(preds) != len(records):
            raise UserError(f"multirc: answer idx values are not unique in this split ({len(records)} options)")
        return preds

    def submission_rows(self, records, predictions):
        """Nested as released: paragraph -> questions -> answers, each answer labelled 0/1."""
        paragraphs: dict[Any, dict[Any, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for r in records:
            paragraphs[r["paragraph_idx"]][r["question_idx"]].append({"idx": r["idx"], "label": int(predictions[r["idx"]])})
        return [
            {"idx": p, "passage": {"questions": [{"idx": q, "answers": answers} for q, answers in questions.items()]}}
            for p, questions in paragraphs.items()
        ]


class ReCoRD(SuperGlueTask):
    """Cloze over the passage's entities: every candidate fills @placeholder and is scored on its own.

    One feature per (query, candidate): (passage, filled query) -> binary cls head, label 1 iff the
    candidate is a gold answer (``task.label_match``). The query's prediction is the candidate with the
    highest positive-class logit (``task.rank_by``), as the official code ranks them. Training uses all candidates, so
    positives are rare (about 1 in 14 on the real data); we keep the plain loss, no resampling.
    """

    head = "cls"

    @property
    def num_labels(self) -> int:
        return 2

    def from_hub(self, row: dict) -> dict:
        """A hub row is one query with its passage's entity strings and gold answers: the reader's record."""
        return {
            "idx": row["idx"]["query"], "passage_idx": row["idx"]["passage"],
            "passage": row["passage"].replace("@highlight\n", "- "), "query": row["query"],
            "entities": list(dict.fromkeys(row["entities"])), "answers": list(dict.fromkeys(row.get("answers") or [])),
        }

    def _is_answer(self, entity: str, answers: list[str]) -> bool:
        """task.label_match: exact (official: the entity string is among the answers) | normalized (SQuAD)."""
        if self.cfg.get("label_match", "exact") == "normalized":
            return normalize_answer(entity) in {normalize_answer(a) for a in answers}
        return entity in answers

    def encode(self, record, index, split):
        features = []
        for entity in record["entities"]:
            filled = record["query"].replace("@placeholder", entity)
            # Default truncation cuts the longer side - the passage - so the filled query survives.
            feature = dict(self.tokenizer(record["passage"], filled, truncation=True, max_length=self.max_length))
            feature["example_index"] = index
            feature["candidate"] = entity  # metadata for predictions; not a model key
            if record["answers"]:  # test queries have no answers: no labels
                feature["labels"] = int(self._is_answer(entity, record["answers"]))
            features.append(feature)
        return features

    def _candidate_score(self, output) -> float:
        """task.rank_by: logit (official: the positive class's logit) | probability (its softmax)."""
        output = output.float()
        return float(output.softmax(-1)[1] if self.cfg.get("rank_by", "logit") == "probability" else output[1])

    def predictions(self, records, features, outputs):
        best: dict[int, tuple[float, str]] = {}
        for feature, out in zip(features, outputs, strict=True):
            score = self._candidate_score(out)
            i = feature["example_index"]
            if i not in best or score > best[i][0]:
                best[i] = (score, feature["candidate"])
        # A query without candidates predicts the empty string (scores 0), never crashes the metric.
        return {r["idx"]: best[i][1] if i in best else "" for i, r in enumerate(records)}

    def metrics(self, records, features, outputs):
        predictions = self.predictions(records, features, outputs)
        return record_scores(predictions, {r["idx"]: r["answers"] for r in records})
