"""Pure readers for the SRL datasets of the paper (CoNLL-2005, CoNLL-2012).

One record per predicate: ``{"tokens": list[str], "tags": list[str], "predicate_index": int}`` with
IOB2 role tags (``B-A0``/``B-ARG0``, ``I-...``, ``B-V``, ``O``; the role names are the dataset's own).
The paper appends the target verb to the sentence; that belongs to encoding, so the readers only
record which token the predicate is.
"""

from __future__ import annotations

from pathlib import Path

from ptv2.errors import UserError
from ptv2.formats.conll import (
    _CONLL12_SKIP,
    Record,
    _auto_iob2,
    _blocks,
    _conll12_word,
    _convert,
    _open_text,
    _same_columns,
    brackets_to_bio,
)


def _is_bracket_cell(cell: str) -> bool:
    return "*" in cell


def _predicate_column(rows: list[list[str]]) -> int:
    """Index of the target-verb column in a CoNLL-2005 combined block (lemma or '-' per row).

    It is followed by exactly one argument column per predicate, so try P = 0, 1, ... argument
    columns and take the first layout where the column before them has P non-'-' rows. A smaller
    P than the true one cannot match: it would need as many predicates as the sentence has rows.
    """
    n = len(rows[0])
    for n_args in range(n):
        c = n - 1 - n_args
        if c < 1:
            break
        n_preds = sum(1 for r in rows if r[c] != "-")
        if n_preds == n_args and all(_is_bracket_cell(r[k]) for r in rows for k in range(c + 1, n)):
            return c
    return -1


def read_conll05(path: str | Path) -> list[Record]:
    """CoNLL-2005 in the combined layout ``word [POS ...] target_verb_or_- args_1 ... args_P``.

    The first column is the word; the column of predicate lemmas ('-' elsewhere) precedes one
    bracket-notation column per predicate (``(A0*``, ``*``, ``*)``, ``(V*)``), in sentence order.
    Sentences are separated by blank lines; sentences without predicates yield no record.
    The official release keeps words and props in separate files: paste them side by side first
    (words first), as the shared task's scripts do.
    """
    p = _open_text(path)
    records: list[Record] = []
    for block in _blocks(p):
        where, lines = f"{p}:{block[0][0]}", [n for n, _ in block]
        rows = [cols for _, cols in block]
        _same_columns(p, block, len(rows[0]), "as the sentence's first row: word ... target_verb args")
        c = _predicate_column(rows)
        if c < 0:
            raise UserError(
                f"{where}: no 'word ... target_verb args...' layout found (a bare props file needs the "
                "word column pasted in front)"
            )
        tokens = [r[0] for r in rows]
        pred_rows = [i for i, r in enumerate(rows) if r[c] != "-"]
        for k, pred in enumerate(pred_rows):
            tags = _convert([r[c + 1 + k] for r in rows], brackets_to_bio, str(p), lines)
            records.append({"tokens": tokens, "tags": tags, "predicate_index": pred})
    return records


def read_conll12(path: str | Path) -> list[Record]:
    """CoNLL-2012 ``*_gold_conll``: word in column 3, NE in column 10, one SRL column per predicate in
    columns 11..N-2, coreference last; ``#begin/#end document`` lines skipped.

    The predicate of each SRL column is the token its ``(V*)`` span starts on; a column without a V
    span (rare annotation gaps) yields no record, since the target verb cannot be given to the model.
    """
    p = _open_text(path)
    records: list[Record] = []
    for block in _blocks(p, _CONLL12_SKIP):
        rows, lines = [cols for _, cols in block], [n for n, _ in block]
        if len(rows[0]) < 12:
            raise UserError(f"{p}:{lines[0]}: {len(rows[0])} columns; gold_conll rows need at least 12")
        _same_columns(p, block, len(rows[0]), "as the sentence's first row")
        tokens = [_conll12_word(r[3]) for r in rows]
        for k in range(11, len(rows[0]) - 1):
            tags = _convert([r[k] for r in rows], brackets_to_bio, str(p), lines)
            if "B-V" not in tags:
                continue
            records.append({"tokens": tokens, "tags": tags, "predicate_index": tags.index("B-V")})
    return records


def read_srl_lines(path: str | Path) -> list[Record]:
    """One predicate per line: ``pred_idx tok_1 ... tok_n ||| tag_1 ... tag_n`` (0-based pred_idx, BIO tags)."""
    p = _open_text(path)
    records: list[Record] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            left, sep, right = line.partition("|||")
            head = left.split()
            if not sep or len(head) < 2 or not head[0].lstrip("-").isdigit():
                raise UserError(f"{where}: expected 'pred_idx tokens ||| tags'")
            pred, tokens, tags = int(head[0]), head[1:], right.split()
            if len(tags) != len(tokens):
                raise UserError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
            if not 0 <= pred < len(tokens):
                raise UserError(f"{where}: predicate index {pred} outside {len(tokens)} tokens")
            # An off-by-one index would silently train on the wrong target verb; the V tag tells.
            if "B-V" in tags and tags[pred] not in {"B-V", "I-V"}:
                raise UserError(f"{where}: predicate index {pred} is not on the V span")
            records.append(
                {"tokens": tokens, "tags": _convert(tags, _auto_iob2, where), "predicate_index": pred}
            )
    return records
