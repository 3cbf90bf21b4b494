"""Reader for GLUE SST-2 in the official tsv layout (``<root>/glue/SST-2/{train,dev,test}.tsv``).

Records: ``{idx, sentence, label}``; ``label`` is 0 (negative) / 1 (positive), ``None`` on test.
train/dev have the header ``sentence\\tlabel`` (no idx column: ``idx`` is the row number from 0);
test has ``index\\tsentence`` and ``idx`` is that index. Sentences are stripped: the release
leaves a trailing space on every train/dev sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptv2.errors import UserError

SST2_LABELS: list[str] = ["negative", "positive"]
SST2_SPLIT_FILES: dict[str, str] = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}

MISSING_HINT = "download GLUE SST-2 and point data.root at the folder holding glue/"


def read_sst2(path: Path, num_labels: int = len(SST2_LABELS)) -> list[dict[str, Any]]:
    """Read one SST-2 split tsv (train/dev with labels, test without) into records.

    Labels are the integers 0 .. num_labels-1, as the release writes them; anything else (a label name,
    another number) is one UserError naming ``path:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing {path}: {MISSING_HINT}")
    # Plain split on tabs, not csv: the text contains quotes that are not csv quoting.
    with path.open(encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    if not lines:
        raise UserError(f"{path}: empty file, expected an SST-2 tsv with a header line")
    header = lines[0].split("\t")
    out: list[dict[str, Any]] = []
    if header == ["sentence", "label"]:
        for i, line in enumerate(lines[1:]):
            if not line.strip():
                continue
            sentence, label = _split(path, line, i + 2)
            out.append({"idx": i, "sentence": sentence.strip(), "label": _label(path, i + 2, label, num_labels)})
    elif header == ["index", "sentence"]:
        for i, line in enumerate(lines[1:]):
            if not line.strip():
                continue
            index, sentence = _split(path, line, i + 2)
            if not index.strip().isdigit():
                raise UserError(f"{path}:{i + 2}: index {index!r} is not a number")
            out.append({"idx": int(index), "sentence": sentence.strip(), "label": None})
    else:
        raise UserError(
            f"{path}: unexpected header {lines[0]!r}; expected 'sentence\\tlabel' or 'index\\tsentence'"
        )
    return out


def _split(path: Path, line: str, lineno: int) -> tuple[str, str]:
    parts = line.split("\t")
    if len(parts) != 2:
        raise UserError(f"{path}:{lineno}: expected 2 tab-separated columns, got {len(parts)}")
    return parts[0], parts[1]


def _label(path: Path, lineno: int, text: str, num_labels: int) -> int:
    value = text.strip()
    if not value.isdigit() or int(value) >= num_labels:  # the release's labels are integers: a name is a wrong file
        raise UserError(f"{path}:{lineno}: label {text!r} is not one of the integers 0..{num_labels - 1} "
                        "(text labels: task=text_classification, README: Your own data)")
    return int(value)
