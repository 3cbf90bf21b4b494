"""Readers for the official SuperGLUE release: one split jsonl -> plain normalised records.

Layout expected: ``<root>/superglue/<Task>/{train,val,test}.jsonl`` with the task folder names
of the official zip (BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC). No tokenizer, no torch:
these are plain dicts, so the same reader serves training, evaluation and tests.

Records per task (``label`` is ``None`` on the test split, where labels are hidden):

- ``boolq``: ``{idx, passage, question, label}``; label ``True -> 1``, ``False -> 0``.
- ``cb``: ``{idx, premise, hypothesis, label}``; label indexes ``SUPERGLUE_LABELS["cb"]``
  (entailment, contradiction, neutral).
- ``rte``: ``{idx, premise, hypothesis, label}``; label indexes ``["entailment", "not_entailment"]``.
- ``copa``: ``{idx, premise, choice1, choice2, question, label}``; ``question`` is ``"cause"`` or
  ``"effect"``, label 0 = choice1, 1 = choice2.
- ``wic``: ``{idx, word, sentence1, sentence2, start1, end1, start2, end2, label}``; the start/end
  fields are character offsets (end exclusive) of the target word in each sentence; label
  ``True -> 1``.
- ``wsc``: ``{idx, text, span1_text, span1_index, span2_text, span2_index, label}``; the span
  indices are whitespace-token indices into ``text`` (span1 = candidate noun phrase, span2 =
  pronoun); label ``True -> 1`` (the pronoun refers to span1).
- ``multirc``: flattened, one record per answer option:
  ``{idx, paragraph_idx, question_idx, answer_idx, paragraph, question, answer, label,
  question_uid}``; ``idx`` equals ``answer_idx`` (the official answer idx), ``question_uid`` is
  the tuple ``(paragraph_idx, question_idx)`` that groups the options of one question (needed
  for EM and for the per-question answers of the official metric).
- ``record``: one record per query:
  ``{idx, passage_idx, passage, query, entities, answers}``; ``passage`` has the
  ``"@highlight\\n"`` markers replaced by ``"- "``; ``query`` keeps its ``@placeholder``;
  ``entities`` are the unique entity strings (first-seen order) cut from the raw passage with the
  official inclusive ``[start, end]`` spans; ``answers`` are the unique gold texts (``[]`` on
  test).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptv2.errors import UserError

# Label order fixes the class ids; CB/RTE follow the order of the official code and the HF datasets.
SUPERGLUE_LABELS: dict[str, list[str]] = {
    "boolq": ["False", "True"],
    "cb": ["entailment", "contradiction", "neutral"],
    "copa": ["choice1", "choice2"],
    "multirc": ["False", "True"],
    "record": [],  # span selection over entities: no fixed label set
    "rte": ["entailment", "not_entailment"],
    "wic": ["False", "True"],
    "wsc": ["False", "True"],
}

# Folder names inside superglue/ as shipped in the official zip.
SUPERGLUE_DIRS: dict[str, str] = {
    "boolq": "BoolQ",
    "cb": "CB",
    "copa": "COPA",
    "multirc": "MultiRC",
    "record": "ReCoRD",
    "rte": "RTE",
    "wic": "WiC",
    "wsc": "WSC",
}

# The release calls the dev split "val"; the project calls it "dev".
SPLIT_FILES: dict[str, str] = {"train": "train.jsonl", "dev": "val.jsonl", "test": "test.jsonl"}

MISSING_HINT = "download SuperGLUE and point data.root at the folder holding superglue/"


def superglue_path(root: Path, task: str, split: str) -> Path:
    """Path of one split file: ``root/superglue/<Task>/<split file>``."""
    task = _check_task(task)
    if split not in SPLIT_FILES:
        raise UserError(f"unknown split {split!r} for SuperGLUE; use one of {sorted(SPLIT_FILES)}")
    return Path(root) / "superglue" / SUPERGLUE_DIRS[task] / SPLIT_FILES[split]


def read_superglue(task: str, path: Path) -> list[dict[str, Any]]:
    """Read one split jsonl of SuperGLUE task ``task`` into normalised records (see module doc).

    A row that does not fit (a missing field, a label outside the task's labels, a boolean written as
    anything but true/false) is one UserError naming ``path:line``.
    """
    task = _check_task(task)
    convert = _CONVERTERS[task]
    out: list[dict[str, Any]] = []
    for lineno, row in numbered_jsonl(Path(path), hint=MISSING_HINT):
        try:
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            out.extend(convert(row))
        except KeyError as e:
            raise UserError(f"{path}:{lineno}: missing field {e.args[0]!r} for {task}") from None
        except (TypeError, ValueError) as e:
            raise UserError(f"{path}:{lineno}: {e}") from None
    return out


def numbered_jsonl(path: Path, hint: str) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) per non-blank line; a missing file or bad line is a one-line ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing {path}: {hint}")
    rows: list[tuple[int, Any]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():  # official test files lack a final newline; tolerate blanks
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


def _check_task(task: str) -> str:
    key = task.lower()
    if key not in SUPERGLUE_DIRS:
        raise UserError(f"unknown SuperGLUE task {task!r}; known: {', '.join(sorted(SUPERGLUE_DIRS))}")
    return key


_BOOLEAN_WORDS = {"true": 1, "false": 0}


def _bool_label(row: dict[str, Any]) -> int | None:
    """JSON true/false (MultiRC writes 0/1); the strings "true"/"false" by their meaning, never by truthiness
    (bool("False") is True). Anything else is an error."""
    label = row.get("label")
    if label is None:
        return None
    if isinstance(label, bool):
        return int(label)
    if isinstance(label, int) and label in (0, 1):
        return label
    if isinstance(label, str) and label.strip().lower() in _BOOLEAN_WORDS:
        return _BOOLEAN_WORDS[label.strip().lower()]
    raise ValueError(f"label {label!r} is not a boolean: write true or false")


def _name_label(task: str, row: dict[str, Any]) -> int | None:
    label = row.get("label")
    if label is None:
        return None
    if label not in SUPERGLUE_LABELS[task]:
        raise ValueError(f"label {label!r} is not one of {task}'s labels {SUPERGLUE_LABELS[task]}")
    return SUPERGLUE_LABELS[task].index(label)


def _choice_label(row: dict[str, Any]) -> int | None:
    """COPA: 0 = choice1, 1 = choice2."""
    label = row.get("label")
    if label is None or (isinstance(label, int) and not isinstance(label, bool) and label in (0, 1)):
        return label
    raise ValueError(f"label {label!r} is not 0 (choice1) or 1 (choice2)")


def _boolq(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"idx": row["idx"], "passage": row["passage"], "question": row["question"], "label": _bool_label(row)}
    ]


def _nli(task: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    def convert(row: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {
                "idx": row["idx"],
                "premise": row["premise"],
                "hypothesis": row["hypothesis"],
                "label": _name_label(task, row),
            }
        ]

    return convert


def _copa(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "idx": row["idx"],
            "premise": row["premise"],
            "choice1": row["choice1"],
            "choice2": row["choice2"],
            "question": row["question"],
            "label": _choice_label(row),
        }
    ]


def _wic(row: dict[str, Any]) -> list[dict[str, Any]]:
    rec = {k: row[k] for k in ("idx", "word", "sentence1", "sentence2")}
    rec.update({k: int(row[k]) for k in ("start1", "end1", "start2", "end2")})
    rec["label"] = _bool_label(row)
    return [rec]


def _wsc(row: dict[str, Any]) -> list[dict[str, Any]]:
    target = row["target"]  # the release nests the spans under "target"
    return [
        {
            "idx": row["idx"],
            "text": row["text"],
            "span1_text": target["span1_text"],
            "span1_index": int(target["span1_index"]),
            "span2_text": target["span2_text"],
            "span2_index": int(target["span2_index"]),
            "label": _bool_label(row),
        }
    ]


def _multirc(row: dict[str, Any]) -> list[dict[str, Any]]:
    # Flattened because the model scores each answer option on its own (binary per option).
    paragraph_idx = row["idx"]
    text = row["passage"]["text"]
    out = []
    for q in row["passage"]["questions"]:
        for a in q["answers"]:
            out.append(
                {
                    "idx": a["idx"],
                    "paragraph_idx": paragraph_idx,
                    "question_idx": q["idx"],
                    "answer_idx": a["idx"],
                    "paragraph": text,
                    "question": q["question"],
                    "answer": a["text"],
                    "label": _bool_label(a),
                    "question_uid": (paragraph_idx, q["idx"]),
                }
            )
    return out


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _record(row: dict[str, Any]) -> list[dict[str, Any]]:
    raw = row["passage"]["text"]
    # Entity spans index the raw text and their end is inclusive in the official release.
    entities = _unique([raw[e["start"] : e["end"] + 1] for e in row["passage"]["entities"]])
    passage = raw.replace("@highlight\n", "- ")
    out = []
    for qa in row["qas"]:
        out.append(
            {
                "idx": qa["idx"],
                "passage_idx": row["idx"],
                "passage": passage,
                "query": qa["query"],
                "entities": list(entities),
                "answers": _unique([a["text"] for a in qa.get("answers", [])]),
            }
        )
    return out


_CONVERTERS = {
    "boolq": _boolq,
    "cb": _nli("cb"),
    "copa": _copa,
    "multirc": _multirc,
    "record": _record,
    "rte": _nli("rte"),
    "wic": _wic,
    "wsc": _wsc,
}
