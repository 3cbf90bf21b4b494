"""Readers for a user's own files: CSV, TSV, JSON lines / a JSON list, each row with its line number.

Used by the generic tasks (``ptv2.tasks.generic``: ``task=text_classification``,
``task=token_classification``) and by the SpERT-style JSON reader of ``ptv2.formats.conll``. Every
error names the file and the line (``path:line: what is wrong``) as a ``UserError``. A UTF-8 byte
order mark (Excel's "CSV UTF-8") is ignored.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ptv2.errors import UserError

# File extension -> format of a table of rows (text classification).
TABLE_FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
                                 ".ndjson": "jsonl"}
Row = tuple[int, Any]  # (1-based line number, a dict from a header / JSON object, or a list of cells)


def open_file(path: Path):
    """The file as text, BOM dropped; a missing file is one clear line."""
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    return path.open(encoding="utf-8-sig", newline="")


def format_of(path: Path, given: str | None, formats: dict[str, str], default: str | None = None) -> str:
    """``given`` (task.format) when set, else the format the file extension names."""
    if given:
        return str(given).lower()
    found = formats.get(path.suffix.lower(), default)
    if found is None:
        choices = "|".join(dict.fromkeys(formats.values()))
        raise UserError(f"{path}: cannot tell the format from the extension {path.suffix!r}: set task.format={choices}")
    return found


def json_objects(path: Path) -> list[Row]:
    """JSON objects of a JSON list document or of JSON lines, each with the line it starts on."""
    with open_file(path) as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        return _json_list(path, text)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not JSON ({e.msg} at column {e.colno})") from None
    return [_check_object(path, row) for row in rows]


def _json_list(path: Path, text: str) -> list[Row]:
    """Items of one JSON array, decoded one at a time so that each keeps its line number."""
    decoder, rows = json.JSONDecoder(), []
    at = text.index("[") + 1
    while True:
        at = _skip_space(text, at)
        if text.startswith("]", at):
            return [_check_object(path, row) for row in rows]
        try:
            item, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not JSON ({e.msg} at column {e.colno})") from None
        rows.append((text.count("\n", 0, at) + 1, item))
        at = _skip_space(text, end)
        if text.startswith(",", at):
            at += 1
        elif not text.startswith("]", at):
            raise UserError(f"{path}:{text.count(chr(10), 0, at) + 1}: expected ',' or ']' between JSON items")


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _check_object(path: Path, row: Row) -> Row:
    if not isinstance(row[1], dict):
        raise UserError(f"{path}:{row[0]}: expected a JSON object, got {type(row[1]).__name__}")
    return row


def read_rows(path: Path, format: str, header: bool) -> tuple[list[str] | None, list[Row]]:
    """(column names or None, rows) of a csv / tsv / jsonl file; blank lines are skipped.

    TSV is split on tabs only (no quoting: texts like SST-2's hold quotes that are not csv quoting); CSV
    follows the csv module's quoting, so a quoted field may span lines (its row keeps its first line).
    """
    if format == "jsonl":
        return None, json_objects(path)
    if format not in ("csv", "tsv"):
        raise UserError(f"task.format={format!r}: use csv, tsv or jsonl")
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if format == "tsv" else {}
    rows: list[Row] = []
    with open_file(path) as handle:
        reader = csv.reader(handle, **options)
        start = 1
        try:
            for cells in reader:
                if any(c.strip() for c in cells):
                    rows.append((start, cells))
                start = reader.line_num + 1
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: not {format.upper()} ({e})") from None
    if not header:
        return None, rows
    if not rows:
        raise UserError(f"{path}:1: empty file, expected a header row (task.header=false for a file without one)")
    names = [c.strip() for c in rows[0][1]]
    return names, [(n, _named(path, n, names, cells)) for n, cells in rows[1:]]


def _named(path: Path, lineno: int, names: list[str], cells: list[str]) -> dict[str, str]:
    if len(cells) != len(names):
        raise UserError(f"{path}:{lineno}: {len(cells)} column(s), the header has {len(names)}")
    return dict(zip(names, cells, strict=True))


def field(path: Path, row: Row, key: str | int, what: str) -> Any:
    """``row[key]``: a column name (header row, JSON key) or a 0-based column index (headerless files)."""
    lineno, values = row
    try:
        if isinstance(values, dict):
            return values[str(key)]
        return values[int(key)]
    except (KeyError, IndexError, ValueError):
        if isinstance(values, dict):
            have = ", ".join(map(str, values)) or "none"
            raise UserError(f"{path}:{lineno}: no {what} {key!r} (fields: {have})") from None
        raise UserError(
            f"{path}:{lineno}: no {what} column {key!r}: the row has {len(values)} column(s) "
            "(headerless files take 0-based column indices)"
        ) from None
