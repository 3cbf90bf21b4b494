"""One entry point for the sequence-labeling readers, chosen by a format name from the config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ptv2.errors import UserError
from ptv2.formats.conll import (
    Record,
    entity_counts,
    read_conll04,
    read_conll2003,
    read_json_records,
    read_ontonotes,
)
from ptv2.formats.srl import read_conll05, read_conll12, read_srl_lines

READERS: dict[str, Callable[[Path], list[Record]]] = {
    "conll2003": read_conll2003,
    "ontonotes": read_ontonotes,
    "conll04": read_conll04,
    "conll05": read_conll05,
    "conll12": read_conll12,
    "srl_lines": read_srl_lines,
    "json": read_json_records,
}

# What to put at the missing path, so the error says how to fix it.
_EXPECTED = {
    "conll2003": "the CoNLL-2003 eng.train/eng.testa/eng.testb column files",
    "ontonotes": "OntoNotes 5.0 NER in the Xu et al. (2021) split, <root>/ontonotes/{train,dev,test}.*",
    "conll04": "CoNLL04 as SpERT-style JSON or the original conll04.corp",
    "conll05": "CoNLL-2005 words and props pasted into one column file per split",
    "conll12": "CoNLL-2012 *_gold_conll files",
    "srl_lines": "'pred_idx tokens ||| tags' lines",
    "json": "a JSON list or JSON lines of {tokens, tags} or {tokens, entities}",
}

__all__ = ["READERS", "entity_counts", "read_sequence_file"]


def read_sequence_file(path: str | Path, format: str) -> list[Record]:
    """Read one split file of a sequence-labeling dataset into IOB2 records."""
    reader = READERS.get(format)
    if reader is None:
        raise UserError(f"unknown sequence format {format!r}; use one of {', '.join(READERS)}")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"data file not found: {p} (supply {_EXPECTED[format]})")
    return reader(p)
