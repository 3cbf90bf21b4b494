"""The task interface: read a split, encode records into features, compute the metric.

A task is one class behind this interface, grouped by family in ``ptv2/tasks/<family>.py`` and named
by one ``conf/task/<name>.yaml``. The training loop only calls these methods; it never knows which
task it runs.
"""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from ptv2.errors import UserError
from ptv2.hub import hub_reachable
from ptv2.metrics import accuracy


class Task:
    """Base class. Subclasses set ``head`` and implement ``read_file``, ``encode`` and ``metrics``."""

    head: ClassVar[str] = "cls"
    # Set by the loop for head=verbalizer: encode puts the mask token the LM head reads into the input.
    append_mask: bool = False
    # Set by the loop for prompt.shift_positions=true: positions the prompt takes from the backbone's table,
    # so tasks that size their inputs by the backbone's limit (windowed NER/SRL) leave them free.
    reserved_positions: int = 0

    def __init__(self, cfg: DictConfig, data_root: str | Path, tokenizer: PreTrainedTokenizerBase) -> None:
        self.cfg = cfg
        self.name: str = cfg.name
        self.data_root = Path(data_root).expanduser()
        self.tokenizer = tokenizer
        self.max_length: int | None = cfg.get("max_length")

    # -- reading ---------------------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        return list(self.cfg.get("labels") or [])

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split_path(self, split: str) -> Path:
        # task.path and task.files.<split> may be absolute (pathlib then drops what stands before them)
        return self.data_root / Path(self.cfg.path).expanduser() / Path(self.cfg.files[split]).expanduser()

    def read(self, split: str) -> list[dict]:
        """Records of one split from the original files, else from the hub when it is reachable."""
        path = self.split_path(split)
        if path.exists():
            return self.read_file(path, split)
        if self.cfg.get("hub") and hub_reachable():
            return self.read_hub(split)
        where = Path(self.cfg.path)
        hint = (
            "task.path is absolute: check it and task.files.<split>" if where.is_absolute()
            else f"or pass data.root=/folder/holding/{where.parts[0]}, or task.path=/absolute/folder"
        )
        raise UserError(f"missing {path} for task={self.name}: put the {self.cfg.path} files there ({hint})")

    def read_file(self, path: Path, split: str) -> list[dict]:
        raise NotImplementedError

    def read_hub(self, split: str) -> list[dict]:
        import datasets  # only the hub path needs it

        hub = self.cfg.hub
        rows = datasets.load_dataset(hub.path, hub.get("name"), split=hub.splits[split])
        return [self.from_hub(dict(row)) for row in rows]

    def from_hub(self, row: dict) -> dict:
        """Map a hub row to this task's record fields (identity where they already agree)."""
        return row

    # -- encoding --------------------------------------------------------------------------
    def encode(self, record: dict, index: int, split: str) -> list[dict]:
        """Features of one record (several for windowed QA or ReCoRD candidates); each keeps ``example_index``."""
        raise NotImplementedError

    def encode_all(self, records: list[dict], split: str) -> list[dict]:
        """Features of a whole split; tasks override it to report split-level facts (e.g. windowing)."""
        return [f for i, r in enumerate(records) for f in self.encode(r, i, split)]

    # -- evaluation ------------------------------------------------------------------------
    def metrics(self, records: list[dict], features: list[dict], outputs: list[torch.Tensor]) -> dict[str, float]:
        """Metrics (percent) from the head's outputs, one tensor per feature, padding stripped."""
        raise NotImplementedError

    def predictions(self, records: list[dict], features: list[dict], outputs: list[torch.Tensor]) -> dict[Any, Any]:
        """Per-record predictions keyed by record idx, for predictions.json and submission files."""
        raise NotImplementedError

    def majority_baseline(self, train: list[dict], records: list[dict]) -> dict[str, float] | None:
        return None

    # -- submission (ptv2-predict) -----------------------------------------------------------
    @property
    def submission_file(self) -> str:
        """File name of the leaderboard submission for this task."""
        raise UserError(f"task={self.name} has no submission format (ptv2-predict writes SuperGLUE submissions)")

    def submission_rows(self, records: list[dict], predictions: dict[Any, Any]) -> list[dict]:
        """``predictions()`` as the rows of the official submission file (one JSON object per line)."""
        raise UserError(f"task={self.name} has no submission format (ptv2-predict writes SuperGLUE submissions)")


class ClassificationTask(Task):
    """Sentence(-pair) classification with a [CLS] head: subclasses say which texts form the input."""

    def texts(self, record: dict) -> tuple[str, str | None]:
        raise NotImplementedError

    def encode(self, record: dict, index: int, split: str) -> list[dict]:
        first, second = self.texts(record)
        max_length = self.max_length - 1 if self.append_mask and self.max_length else self.max_length
        feature = dict(self.tokenizer(first, second, truncation=True, max_length=max_length))
        if self.append_mask:
            insert_mask_token(feature, self.tokenizer.mask_token_id)
        feature["example_index"] = index
        if record.get("label") is not None:
            feature["labels"] = int(record["label"])
        return [feature]

    def predicted_labels(self, outputs: list[torch.Tensor]) -> list[int]:
        return [int(out.argmax()) for out in outputs]

    def metrics(self, records, features, outputs):
        return {"accuracy": accuracy(self.predicted_labels(outputs), [r["label"] for r in records])}

    def predictions(self, records, features, outputs):
        return {r["idx"]: self.label_names[p] for r, p in zip(records, self.predicted_labels(outputs), strict=True)}

    def majority_baseline(self, train, records):
        majority = Counter(r["label"] for r in train).most_common(1)[0][0]
        return self.metrics(records, [], [torch.nn.functional.one_hot(torch.tensor(majority), self.num_labels)] * len(records))


def insert_mask_token(feature: dict, mask_token_id: int) -> None:
    """Verbalizer input "[CLS] a [SEP] b [MASK] [SEP]": the mask goes before the final special token, after
    truncation (room was left for it), so it survives any truncation; it takes the last segment's type."""
    at = len(feature["input_ids"]) - 1
    feature["input_ids"].insert(at, mask_token_id)
    feature["attention_mask"].insert(at, 1)
    if "token_type_ids" in feature:
        feature["token_type_ids"].insert(at, feature["token_type_ids"][at - 1])


def build_task(cfg: DictConfig, data_root: str | Path, tokenizer: PreTrainedTokenizerBase) -> Task:
    """Instantiate the class named by the task YAML's ``class`` (``family_module.ClassName``)."""
    module_name, _, class_name = cfg["class"].rpartition(".")
    if "." not in module_name:  # short form: a family module of ptv2/tasks/ (else a full module path)
        module_name = f"ptv2.tasks.{module_name}"
    task_cls = getattr(importlib.import_module(module_name), class_name)
    return task_cls(cfg, data_root, tokenizer)
