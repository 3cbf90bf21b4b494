"""GLUE single-sentence tasks (SST-2, used by the paper's Table 4)."""

from __future__ import annotations

from pathlib import Path

from ptv2.formats.glue import read_sst2
from ptv2.tasks.base import ClassificationTask


class SST2(ClassificationTask):
    def read_file(self, path: Path, split: str) -> list[dict]:
        return read_sst2(path, self.num_labels)

    def texts(self, record):
        return record["sentence"], None
