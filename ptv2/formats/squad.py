"""Reader/writer for SQuAD v1.1 / v2.0 JSON (train-v1.1.json, dev-v1.1.json, train-v2.0.json,
dev-v2.0.json).

Records, one per question: ``{id, title, context, question, answers, is_impossible}`` where
``answers`` is a list of ``{text, answer_start}`` (character offset into ``context``; on dev sets
several annotators' answers, possibly repeated) and ``is_impossible`` is False for v1.1. For v2.0
unanswerable questions ``answers`` is ``[]``; their ``plausible_answers`` are not kept (no metric
or training objective uses them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptv2.errors import UserError

SQUAD_FILES: dict[str, dict[str, str]] = {
    "v1.1": {"train": "train-v1.1.json", "dev": "dev-v1.1.json"},
    "v2.0": {"train": "train-v2.0.json", "dev": "dev-v2.0.json"},
}

MISSING_HINT = (
    "download SQuAD (train/dev-v1.1.json or -v2.0.json) and point data.root at the folder holding squad/"
)


def read_squad(path: Path) -> list[dict[str, Any]]:
    """Read a SQuAD-format JSON file into one record per question."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing {path}: {MISSING_HINT}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or "data" not in doc:
        raise UserError(f"{path}: not a SQuAD file (no top-level 'data' list)")
    out: list[dict[str, Any]] = []
    for number, article in enumerate(doc["data"]):
        try:
            out += _article_records(article)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problem = f"missing field {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
            raise UserError(f"{path}: article {number} ({article.get('title', '') if isinstance(article, dict) else ''!r}): "
                            f"{problem}") from None
    return out


def _article_records(article: dict[str, Any]) -> list[dict[str, Any]]:
    title = article.get("title", "")
    out: list[dict[str, Any]] = []
    for para in article["paragraphs"]:
        for qa in para["qas"]:
            impossible = qa.get("is_impossible", False)
            if not isinstance(impossible, bool):  # a string "False" must not read as true
                raise ValueError(f"question {qa.get('id')!r}: is_impossible={impossible!r} is not true or false")
            out.append({
                "id": qa["id"],
                "title": title,
                "context": para["context"],
                "question": qa["question"],
                "answers": [{"text": a["text"], "answer_start": int(a["answer_start"])} for a in qa.get("answers", [])],
                "is_impossible": impossible,
            })
    return out


def write_squad(records: list[dict[str, Any]], path: Path, version: str = "1.1") -> None:
    """Write records (as ``read_squad`` returns them) back to SQuAD JSON.

    Questions sharing (title, context) are grouped into one paragraph, articles by title, in first-seen
    order, so ``read_squad(write_squad(r))`` gives back ``r``. ``is_impossible`` is written only for
    version "2.0", matching the official files.
    """
    articles: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        paras = articles.setdefault(r.get("title", ""), {})
        para = paras.setdefault(r["context"], {"context": r["context"], "qas": []})
        qa: dict[str, Any] = {
            "id": r["id"],
            "question": r["question"],
            "answers": [{"text": a["text"], "answer_start": int(a["answer_start"])} for a in r["answers"]],
        }
        if version.startswith("2"):
            qa["is_impossible"] = bool(r.get("is_impossible", False))
        para["qas"].append(qa)
    doc = {
        "version": version,
        "data": [{"title": t, "paragraphs": list(paras.values())} for t, paras in articles.items()],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
