"""SuperGLUE tasks (paper Table 2). Records come from ``ptv2.formats.superglue``."""

from __future__ import annotations

from pathlib import Path

from ptv2.formats.superglue import read_superglue
from ptv2.metrics import accuracy, macro_f1
from ptv2.tasks.base import ClassificationTask


class SuperGlueClassification(ClassificationTask):
    def read_file(self, path: Path, split: str) -> list[dict]:
        return read_superglue(self.name, path)


class BoolQ(SuperGlueClassification):
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


class WiC(SuperGlueClassification):
    """The target word reaches the model as a prefix of both sentences (the official template 1)."""

    def texts(self, record):
        word = record["word"]
        return f"{word}: {record['sentence1']}", f"{word}: {record['sentence2']}"
