"""Convert the Quoref answer-generation task of BIG-bench 1.0.0 into SQuAD v1.1 JSON.

Source: ``bigbench-1.0.0/bigbench/benchmark_tasks/natural_instructions/
subtask002_quoref_answer_generation/task.json`` in the ``bigbench==1.0.0`` sdist, layout
``{"name", ..., "examples": [{"input": "Passage: <text> \\nQuestion: <question>", "target": [str, ...]}]}``.

The targets carry no offsets, so each is located in its passage: first exact occurrence, then a
case-insensitive one; targets that cannot be found are dropped (counted), and a question left
with no answer is dropped. BIG-bench appended a "." to every target that did not already end in
one ("Catherine." for "Catherine"), so one trailing "." is removed before searching, unless the
last word then looks like an abbreviation ("G.L.O.W", "D. L") and the raw target occurs.
Questions with several targets ask for several entities ("the two officers"); SQuAD v1.1 can only
express alternatives, so ``--multi-span alternatives`` (default) keeps all located spans as
alternative gold answers and ``--multi-span drop`` drops such questions.

Train/dev split is by passage (a stable sha1 of the passage text; ``--dev-percent`` of the hash
space goes to dev), so no passage is in both files.

Usage: ``python scripts/quoref_to_squad.py (--task-json PATH | --from-sdist PATH.tar.gz) --out DIR``
writes ``DIR/train-v1.1.json`` and ``DIR/dev-v1.1.json`` and prints the counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

# Runnable as a plain script from the repo root without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptv2.errors import UserError  # noqa: E402
from ptv2.formats.squad import write_squad  # noqa: E402

SDIST_MEMBER = (
    "bigbench-1.0.0/bigbench/benchmark_tasks/natural_instructions/"
    "subtask002_quoref_answer_generation/task.json"
)
PASSAGE_PREFIX = "Passage: "
QUESTION_SEP = "\nQuestion:"


def load_task_json(task_json: Path | None = None, sdist: Path | None = None) -> dict[str, Any]:
    """Load the BIG-bench task dict from a task.json file or straight from the sdist tarball."""
    if task_json is not None:
        if not Path(task_json).is_file():
            raise UserError(f"missing {task_json}: pass the Quoref task.json extracted from bigbench==1.0.0")
        return json.loads(Path(task_json).read_text(encoding="utf-8"))
    assert sdist is not None
    if not Path(sdist).is_file():
        raise UserError(
            f"missing {sdist}: get it with `pip download --no-deps --no-binary :all: bigbench==1.0.0 -d DIR`"
        )
    with tarfile.open(sdist, "r:gz") as tar:
        try:
            member = tar.getmember(SDIST_MEMBER)
        except KeyError:
            raise UserError(f"{sdist}: no member {SDIST_MEMBER}; is this the bigbench 1.0.0 sdist?") from None
        f = tar.extractfile(member)
        assert f is not None
        return json.loads(f.read().decode("utf-8"))


def split_input(text: str) -> tuple[str, str]:
    """``"Passage: P \\nQuestion: Q"`` -> (P, Q); the passage's trailing space is dropped."""
    if not text.startswith(PASSAGE_PREFIX) or QUESTION_SEP not in text:
        raise ValueError(f"unexpected input layout: {text[:80]!r}")
    passage, question = text[len(PASSAGE_PREFIX) :].rsplit(QUESTION_SEP, 1)
    return passage.rstrip(), question.strip()


def clean_target(target: str, passage: str) -> str:
    """Undo BIG-bench's appended full stop (see module doc)."""
    target = target.strip()
    if not target.endswith("."):
        return target
    stripped = target[:-1].rstrip()
    words = stripped.split()
    last = words[-1] if words else ""
    # A lone letter after an initial ("D. L.") is an initial too; after a name ("Frederick I") it is not.
    initials = (
        len(words) >= 2 and len(last) == 1 and last.isalpha() and len(words[-2]) == 2 and words[-2][1] == "."
    )
    # Keep the dot only where it ends an abbreviation ("G.L.O.W.", "D. L.") present in the passage.
    if ("." in last or initials) and target in passage:
        return target
    return stripped


def locate(answer: str, passage: str) -> int:
    """Character start of ``answer`` in ``passage``: exact match first, then case-insensitive; -1 if absent."""
    start = passage.find(answer)
    if start < 0:
        # str.lower keeps lengths for the text seen here; guard anyway so offsets stay valid.
        low_p, low_a = passage.lower(), answer.lower()
        if len(low_p) == len(passage) and len(low_a) == len(answer):
            start = low_p.find(low_a)
    return start


def passage_in_dev(passage: str, dev_percent: int) -> bool:
    """Stable assignment by passage text (sha1, not Python's salted hash)."""
    h = int(hashlib.sha1(passage.encode("utf-8")).hexdigest()[:8], 16)
    return h % 100 < dev_percent


def convert(
    task: dict[str, Any], dev_percent: int = 10, multi_span: str = "alternatives"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter]:
    """Turn the task's examples into SQuAD records (train, dev) and counts of what happened."""
    keys = [
        "questions_in",
        "targets_in",
        "targets_exact",
        "targets_case_insensitive",
        "targets_not_located",
        "multi_span_questions",
        "questions_dropped_multi_span",
        "questions_dropped_no_answer",
    ]
    counts: Counter = Counter(dict.fromkeys(keys, 0))  # zeros printed too, so the report is complete
    train: list[dict[str, Any]] = []
    dev: list[dict[str, Any]] = []
    for i, ex in enumerate(task["examples"]):
        counts["questions_in"] += 1
        passage, question = split_input(ex["input"])
        targets = ex["target"] if isinstance(ex["target"], list) else [ex["target"]]
        counts["targets_in"] += len(targets)
        if len(targets) > 1:
            counts["multi_span_questions"] += 1
            if multi_span == "drop":
                counts["questions_dropped_multi_span"] += 1
                continue
        answers = []
        for t in targets:
            text = clean_target(t, passage)
            start = passage.find(text)
            if start >= 0:
                counts["targets_exact"] += 1
            else:
                start = locate(text, passage)
                if start < 0:
                    counts["targets_not_located"] += 1
                    continue
                counts["targets_case_insensitive"] += 1
                text = passage[start : start + len(text)]  # the span as written in the passage
            answers.append({"text": text, "answer_start": start})
        if not answers:
            counts["questions_dropped_no_answer"] += 1
            continue
        key = hashlib.sha1(passage.encode("utf-8")).hexdigest()[:10]
        rec = {
            "id": f"quoref-{i:05d}",
            "title": f"quoref-{key}",
            "context": passage,
            "question": question,
            "answers": answers,
            "is_impossible": False,
        }
        (dev if passage_in_dev(passage, dev_percent) else train).append(rec)
    counts["train_questions"] = len(train)
    counts["dev_questions"] = len(dev)
    counts["train_passages"] = len({r["context"] for r in train})
    counts["dev_passages"] = len({r["context"] for r in dev})
    return train, dev, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--task-json", type=Path, help="the extracted subtask002_quoref_answer_generation/task.json"
    )
    src.add_argument(
        "--from-sdist", type=Path, help="bigbench-1.0.0.tar.gz; the member is read without extracting"
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for train-v1.1.json and dev-v1.1.json")
    ap.add_argument("--dev-percent", type=int, default=10, help="share of passages (by hash) put in dev")
    ap.add_argument("--multi-span", choices=["alternatives", "drop"], default="alternatives")
    args = ap.parse_args(argv)
    try:
        task = load_task_json(args.task_json, args.from_sdist)
        train, dev, counts = convert(task, args.dev_percent, args.multi_span)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_squad(train, args.out / "train-v1.1.json", version="1.1")
    write_squad(dev, args.out / "dev-v1.1.json", version="1.1")
    for k in sorted(counts):
        print(f"{k}: {counts[k]}")
    print(f"wrote {args.out / 'train-v1.1.json'} and {args.out / 'dev-v1.1.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
