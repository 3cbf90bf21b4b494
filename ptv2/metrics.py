"""Evaluation metrics for the P-Tuning v2 tasks.

Every score is returned in PERCENT (0-100), as the paper reports them, except the per-answer helpers
``exact_match`` (bool) and ``token_f1`` (0-1), which are building blocks for the averaged scores.

The SQuAD helpers follow the official SQuAD v2.0 evaluation script (normalisation, token F1 with the
no-answer rule, best-threshold search); ReCoRD and the SQuAD v1.1 numbers reuse the same helpers.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence

__all__ = [
    "accuracy",
    "macro_f1",
    "binary_f1",
    "normalize_answer",
    "exact_match",
    "token_f1",
    "squad_scores",
    "squad_v2_with_threshold",
    "multirc_scores",
    "record_scores",
    "seqeval_scores",
]


def _check_same_length(preds: Sequence, labels: Sequence) -> None:
    # A silent zip() over lists of different length would score a truncated set.
    if len(preds) != len(labels):
        raise ValueError(f"preds and labels differ in length: {len(preds)} vs {len(labels)}")
    if len(preds) == 0:
        raise ValueError("cannot score an empty set of predictions")


def _f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """F1 in [0, 1] as 2tp / (2tp + fp + fn); 0 when the class never occurs (sklearn's zero_division=0)."""
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def _class_counts(preds: Sequence[Hashable], labels: Sequence[Hashable], c: Hashable) -> tuple[int, int, int]:
    """(tp, fp, fn) of class ``c``."""
    pairs = list(zip(preds, labels, strict=True))
    tp = sum(p == c and y == c for p, y in pairs)
    fp = sum(p == c and y != c for p, y in pairs)
    fn = sum(p != c and y == c for p, y in pairs)
    return tp, fp, fn


# --------------------------------------------------------------------------- classification


def accuracy(preds: Sequence[Hashable], labels: Sequence[Hashable]) -> float:
    """Percentage of predictions equal to their label."""
    _check_same_length(preds, labels)
    return 100.0 * sum(p == y for p, y in zip(preds, labels, strict=True)) / len(labels)


def macro_f1(
    preds: Sequence[Hashable], labels: Sequence[Hashable], labels_set: Sequence[Hashable] | None = None
) -> float:
    """Unweighted mean of per-class F1, in percent.

    Classes averaged over are ``labels_set`` if given, else the classes seen in gold or predictions
    (sklearn's ``unique_labels``). A class with no tp, fp or fn scores 0, as sklearn does.
    """
    _check_same_length(preds, labels)
    classes = list(labels_set) if labels_set is not None else set(labels) | set(preds)
    if not classes:
        raise ValueError("labels_set is empty")
    f1s = [_f1_from_counts(*_class_counts(preds, labels, c)) for c in classes]
    return 100.0 * sum(f1s) / len(f1s)


def binary_f1(preds: Sequence[int], labels: Sequence[int]) -> float:
    """F1 of the positive class 1, in percent (0 if class 1 is neither predicted nor gold)."""
    _check_same_length(preds, labels)
    return 100.0 * _f1_from_counts(*_class_counts(preds, labels, 1))


# --------------------------------------------------------------------------- SQuAD answers

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Official SQuAD normalisation: lower case, drop punctuation, drop articles, collapse whitespace."""
    # The order matters and is the official one: punctuation goes before articles, so "the-cat"
    # becomes "thecat" (no article left) rather than "cat".
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(pred: str, gold: str) -> bool:
    """Whether the two answers are equal after normalisation."""
    return normalize_answer(pred) == normalize_answer(gold)


def token_f1(pred: str, gold: str) -> float:
    """Bag-of-tokens F1 in [0, 1] between normalised answers (official SQuAD v2.0 rule).

    If either side normalises to no tokens (a SQuAD 2.0 "no answer"), F1 is 1 when both are empty
    and 0 otherwise.
    """
    pred_toks = normalize_answer(pred).split()
    gold_toks = normalize_answer(gold).split()
    if not pred_toks or not gold_toks:
        return float(pred_toks == gold_toks)
    num_same = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _usable_golds(golds: Sequence[str]) -> list[str]:
    # The official v2 script drops gold answers that normalise to nothing and falls back to [""] (no
    # answer) when none is left; an unanswerable question is therefore the same as golds == [""].
    kept = [g for g in golds if normalize_answer(g)]
    return kept if kept else [""]


def _check_same_ids(name: str, got: Mapping, golds: Mapping) -> None:
    # Missing or extra ids mean predictions were misaligned with the data; refusing is safer than
    # scoring a subset (the official script silently skips missing ids, which inflates scores).
    if not golds:
        raise ValueError("no gold questions to score")
    missing = golds.keys() - got.keys()
    extra = got.keys() - golds.keys()
    if missing or extra:
        raise ValueError(
            f"{name} ids do not match gold ids: {len(missing)} missing (e.g. {sorted(map(repr, missing))[:3]}), "
            f"{len(extra)} extra (e.g. {sorted(map(repr, extra))[:3]})"
        )


def _raw_scores(predictions: Mapping[Hashable, str], golds: Mapping[Hashable, Sequence[str]]):
    """Per-question (exact in {0,1}, f1 in [0,1]), each the max over the usable gold answers."""
    exact: dict[Hashable, float] = {}
    f1: dict[Hashable, float] = {}
    for qid, answers in golds.items():
        answers = _usable_golds(answers)
        pred = predictions[qid]
        exact[qid] = float(max(exact_match(pred, g) for g in answers))
        f1[qid] = max(token_f1(pred, g) for g in answers)
    return exact, f1


def _mean_percent(values: Mapping[Hashable, float], ids: Sequence[Hashable]) -> float:
    # NaN, not 0, for an empty subset: 0 would read as a real (terrible) score in a results table.
    if not ids:
        return math.nan
    return 100.0 * sum(values[q] for q in ids) / len(ids)


def squad_scores(
    predictions: Mapping[Hashable, str], golds: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    """SQuAD exact match and F1 in percent: max over gold answers, mean over questions.

    For SQuAD 2.0 an unanswerable question has golds ``[""]`` and the prediction ``""`` means "no answer".
    """
    _check_same_ids("prediction", predictions, golds)
    exact, f1 = _raw_scores(predictions, golds)
    ids = list(golds)
    return {"exact_match": _mean_percent(exact, ids), "f1": _mean_percent(f1, ids)}


def _best_threshold(
    raw: Mapping[Hashable, float],
    span_predictions: Mapping[Hashable, str],
    null_score_diff: Mapping[Hashable, float],
    has_ans: Mapping[Hashable, bool],
) -> tuple[float, float]:
    """(best score in percent, threshold) - the official v2 script's ``find_best_thresh``.

    Start with every question predicted "no answer" (score = number of unanswerable questions), then
    switch questions to "answer" in order of increasing null_score_diff, keeping the running best.
    Kept quirks of the official script, so numbers match it: the initial threshold is 0.0 even though
    the all-null start corresponds to -inf, and with tied diffs the best may be recorded mid-tie.
    """
    score = float(sum(not has_ans[q] for q in raw))
    best_score, best_thresh = score, 0.0
    for qid in sorted(raw, key=lambda q: null_score_diff[q]):
        # Answerable: null scored 0, answering scores the span. Unanswerable: null scored 1, answering
        # loses it unless the span itself is empty (which is a no-answer too).
        if has_ans[qid]:
            score += raw[qid]
        elif span_predictions[qid]:
            score -= 1.0
        if score > best_score:
            best_score, best_thresh = score, null_score_diff[qid]
    return 100.0 * best_score / len(raw), best_thresh


def squad_v2_with_threshold(
    span_predictions: Mapping[Hashable, str],
    null_score_diff: Mapping[Hashable, float],
    golds: Mapping[Hashable, Sequence[str]],
) -> dict[str, float]:
    """SQuAD 2.0 scores with the null-answer threshold, in percent.

    ``span_predictions`` holds the best non-null span per question; a question is predicted unanswerable
    at threshold t iff ``null_score_diff > t`` (diff = null score - best span score). ``exact_match``,
    ``f1`` and the has/no-ans subsets use t = 0.0; ``best_*`` searches t like the official script.
    Subset scores are NaN when the subset is empty.
    """
    _check_same_ids("span prediction", span_predictions, golds)
    _check_same_ids("null_score_diff", null_score_diff, golds)
    exact_raw, f1_raw = _raw_scores(span_predictions, golds)
    has_ans = {q: _usable_golds(a) != [""] for q, a in golds.items()}

    def at_zero(raw: Mapping[Hashable, float]) -> dict[Hashable, float]:
        # Predicted null scores 1 on an unanswerable question and 0 on an answerable one.
        return {q: (float(not has_ans[q]) if null_score_diff[q] > 0.0 else s) for q, s in raw.items()}

    exact, f1 = at_zero(exact_raw), at_zero(f1_raw)
    ids = list(golds)
    has_ids = [q for q in ids if has_ans[q]]
    no_ids = [q for q in ids if not has_ans[q]]
    best_em, best_em_t = _best_threshold(exact_raw, span_predictions, null_score_diff, has_ans)
    best_f1, best_f1_t = _best_threshold(f1_raw, span_predictions, null_score_diff, has_ans)
    return {
        "exact_match": _mean_percent(exact, ids),
        "f1": _mean_percent(f1, ids),
        "best_exact_match": best_em,
        "best_exact_match_threshold": best_em_t,
        "best_f1": best_f1,
        "best_f1_threshold": best_f1_t,
        "has_ans_exact_match": _mean_percent(exact, has_ids),
        "has_ans_f1": _mean_percent(f1, has_ids),
        "no_ans_exact_match": _mean_percent(exact, no_ids),
        "no_ans_f1": _mean_percent(f1, no_ids),
    }


# --------------------------------------------------------------------------- SuperGLUE specials


def multirc_scores(
    question_ids: Sequence[Hashable], preds: Sequence[int], labels: Sequence[int]
) -> dict[str, float]:
    """MultiRC F1a (binary F1 over all answer options) and EM (questions with every option right).

    ``question_ids`` must be unique per question across paragraphs (e.g. a (paragraph, question) pair),
    since EM groups the options by it.
    """
    _check_same_length(preds, labels)
    if len(question_ids) != len(preds):
        raise ValueError(f"question_ids and preds differ in length: {len(question_ids)} vs {len(preds)}")
    all_right: dict[Hashable, bool] = defaultdict(lambda: True)
    for qid, p, y in zip(question_ids, preds, labels, strict=True):
        all_right[qid] = all_right[qid] and p == y
    em = 100.0 * sum(all_right.values()) / len(all_right)
    return {"f1a": binary_f1(preds, labels), "em": em}


def record_scores(
    predictions: Mapping[Hashable, str], golds: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    """ReCoRD F1 and exact match in percent: SQuAD normalisation, max over gold entities, mean over queries."""
    # ReCoRD's official scorer is the SQuAD v1.1 one; its golds are never empty, so the v2 no-answer
    # rule inside token_f1 never applies and the numbers agree.
    scores = squad_scores(predictions, golds)
    return {"f1": scores["f1"], "exact_match": scores["exact_match"]}


# --------------------------------------------------------------------------- sequence labeling


def seqeval_scores(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 in percent from seqeval.

    Unsuffixed keys: seqeval's default (conlleval-compatible) mode, where e.g. a leading ``I-PER`` still
    starts an entity. ``_strict`` keys: strict IOB2 mode, where such malformed chunks are not entities.
    """
    # Imported here so the rest of the module works without seqeval installed.
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support as prfs_default
    from seqeval.metrics.v1 import precision_recall_fscore_support as prfs_strict
    from seqeval.scheme import IOB2

    if len(true_tags) != len(pred_tags):
        raise ValueError(f"true_tags and pred_tags differ in length: {len(true_tags)} vs {len(pred_tags)}")
    for i, (t, p) in enumerate(zip(true_tags, pred_tags, strict=True)):
        # seqeval flattens the sentences, so a length mismatch would shift every later tag.
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags vs {len(p)} predicted tags")
    # zero_division=0: the value seqeval's "warn" would give, without a warning on entity-free input.
    p, r, f, _ = prfs_default(true_tags, pred_tags, average="micro", zero_division=0)
    ps, rs, fs, _ = prfs_strict(
        true_tags, pred_tags, average="micro", zero_division=0, mode="strict", scheme=IOB2
    )
    return {
        "f1": 100.0 * float(f),
        "precision": 100.0 * float(p),
        "recall": 100.0 * float(r),
        "f1_strict": 100.0 * float(fs),
        "precision_strict": 100.0 * float(ps),
        "recall_strict": 100.0 * float(rs),
    }
