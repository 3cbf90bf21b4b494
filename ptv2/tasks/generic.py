"""Tasks for your own data (README "Your own data"): nothing here knows a dataset.

``task=text_classification``: one text field or a pair from CSV / TSV / JSON lines, a label per row.
``task=token_classification``: CoNLL-style column files or JSON ``{tokens, tags}``, any of IOB1 / IOB2 /
BIO / BILOU / BIOES, scored like NER (seqeval). The task YAML names the folder (``task.path``, absolute or
under ``data.root``), the files (``task.files.<split>``), the fields or columns; the label set is the
train split's unless ``task.labels`` lists it; ``task.dev_fraction`` carves dev out of the train file.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

from ptv2.errors import UserError
from ptv2.formats.conll import read_columns, read_json_records
from ptv2.formats.table import TABLE_FORMATS, field, format_of, read_rows
from ptv2.metrics import macro_f1
from ptv2.tasks.base import ClassificationTask
from ptv2.tasks.ner import SequenceLabelingTask

_SEQUENCE_FORMATS = {".json": "json", ".jsonl": "json", ".ndjson": "json"}  # any other extension: columns


def split_off(records: list[dict], fraction: float, seed: int) -> dict[str, list[dict]]:
    """A seeded ``fraction`` of ``records`` as dev, the rest as train; both keep the file's order."""
    if not 0 < fraction < 1:
        raise UserError(f"task.dev_fraction={fraction} must lie between 0 and 1 (e.g. 0.1)")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    dev = set(order[: max(1, round(fraction * len(records)))])
    if len(dev) == len(records):
        raise UserError(f"task.dev_fraction={fraction} of {len(records)} train example(s) leaves none to train on")
    return {
        "dev": [r for i, r in enumerate(records) if i in dev],
        "train": [r for i, r in enumerate(records) if i not in dev],
    }


class OwnFiles:
    """Mixin before a Task class: clear errors for unset paths, and dev taken from train (``dev_fraction``)."""

    def split_path(self, split: str) -> Path:
        if not self.cfg.get("path"):
            raise UserError(f"task={self.name} needs task.path=/folder/with/your/files (absolute, or under data.root)")
        if not self.cfg.files.get(split):
            raise UserError(f"task={self.name} has no {split} file: set task.files.{split}=FILE")
        return super().split_path(split)

    def read(self, split: str) -> list[dict]:
        cache = self.__dict__.setdefault("_own_records", {})  # the train file is read once, not per use
        if split not in cache:
            cache[split] = self._read_uncached(split)
        return cache[split]

    def _read_uncached(self, split: str) -> list[dict]:
        fraction = self.cfg.get("dev_fraction")
        if not fraction or split not in ("train", "dev"):
            return super().read(split)
        seed = int(self.cfg.get("split_seed", 0))
        parts = split_off(super().read("train"), float(fraction), seed)
        if split == "dev":
            print(
                f"{self.name}: dev = {len(parts['dev'])} of the {len(parts['dev']) + len(parts['train'])} examples "
                f"of {self.split_path('train')} (task.dev_fraction={fraction}, task.split_seed={seed}); no dev file read"
            )
        return parts[split]


class TextClassification(OwnFiles, ClassificationTask):
    """Sentence or sentence-pair classification from a table; accuracy (primary) and macro-F1."""

    def read_file(self, path: Path, split: str) -> list[dict]:
        fields = list(self.cfg.text_fields)
        if not 1 <= len(fields) <= 2:
            raise UserError(f"task.text_fields={fields}: give one text field, or two for sentence pairs")
        fmt = format_of(path, self.cfg.get("format"), TABLE_FORMATS)
        _, rows = read_rows(path, fmt, bool(self.cfg.get("header", True)))
        records = []
        for row in rows:
            texts = [str(field(path, row, f, "text field")) for f in fields]
            label = field(path, row, self.cfg.label_field, "label field")
            if label is None or not str(label).strip():
                raise UserError(f"{path}:{row[0]}: empty label (task.label_field={self.cfg.label_field})")
            records.append({"idx": len(records), "texts": texts, "label_text": str(label).strip(), "where": f"{path}:{row[0]}"})
        if not records:
            raise UserError(f"{path}: no rows")
        return records

    def read(self, split: str) -> list[dict]:
        return [r | {"label": self._label_id(r)} for r in super().read(split)]

    @functools.cached_property
    def label_names(self) -> list[str]:
        if self.cfg.get("labels"):
            return [str(label) for label in self.cfg.labels]
        # integers sort as numbers (2 before 10), then any text labels alphabetically
        found = {r["label_text"] for r in super().read("train")}
        return sorted(found, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))

    def _label_id(self, record: dict) -> int:
        """The label's index in label_names; with task.labels given, an integer label may index it too."""
        text, names = record["label_text"], self.label_names
        if text in names:
            return names.index(text)
        if self.cfg.get("labels") and text.isdigit() and int(text) < len(names):
            return int(text)
        source = "task.labels" if self.cfg.get("labels") else "the train split's labels"
        raise UserError(f"{record['where']}: label {text!r} is not among {source} ({', '.join(names)})")

    def texts(self, record: dict) -> tuple[str, str | None]:
        first, *second = record["texts"]
        return first, (second[0] if second else None)

    def metrics(self, records, features, outputs):
        scores = super().metrics(records, features, outputs)
        preds, labels = self.predicted_labels(outputs), [r["label"] for r in records]
        return scores | {"macro_f1": macro_f1(preds, labels, range(self.num_labels))}


class TokenClassification(OwnFiles, SequenceLabelingTask):
    """Tags per word from CoNLL-style columns (``task.token_column``, ``task.tag_column``) or JSON; seqeval F1."""

    def read_file(self, path: Path, split: str) -> list[dict]:
        fmt = format_of(path, self.cfg.get("format"), _SEQUENCE_FORMATS, default="conll")
        if fmt == "json":
            return read_json_records(path)
        if fmt != "conll":
            raise UserError(f"task.format={fmt!r}: use conll (column files) or json")
        records = read_columns(path, int(self.cfg.token_column), int(self.cfg.tag_column), str(self.cfg.scheme))
        if not records:
            raise UserError(f"{path}: no sentences (one 'token ... tag' line per token, a blank line between sentences)")
        return records
