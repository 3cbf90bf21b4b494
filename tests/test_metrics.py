"""Metric tests against hand-computed values (the arithmetic is in the comments)."""

import math
import random

import pytest

from ptv2.metrics import (
    accuracy,
    binary_f1,
    exact_match,
    macro_f1,
    multirc_scores,
    normalize_answer,
    record_scores,
    seqeval_scores,
    squad_scores,
    squad_v2_with_threshold,
    token_f1,
)

# --------------------------------------------------------------------------- classification


def test_accuracy():
    # matches at positions 0 and 2 -> 2/4
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(50.0)


def test_accuracy_rejects_length_mismatch_and_empty():
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_macro_f1_three_classes():
    preds = [0, 1, 1, 0, 2]
    labels = [0, 1, 2, 0, 1]
    # class 0: tp=2 fp=0 fn=0 -> F1 = 4/4 = 1
    # class 1: tp=1 fp=1 (pos 2) fn=1 (pos 4) -> 2/(2+1+1) = 0.5
    # class 2: tp=0 fp=1 fn=1 -> 0
    # mean = 1.5/3 = 0.5
    assert macro_f1(preds, labels) == pytest.approx(50.0)
    # an extra class 3 with no tp/fp/fn scores 0 and is averaged in: 1.5/4
    assert macro_f1(preds, labels, labels_set=[0, 1, 2, 3]) == pytest.approx(37.5)


def test_macro_f1_classes_from_gold_union_pred():
    # class 0: tp=1 fp=1 fn=0 -> 2/3 ; class 1: tp=1 fp=0 fn=1 -> 2/3 ; mean 2/3
    assert macro_f1([0, 0, 1], [0, 1, 1]) == pytest.approx(200 / 3)
    # with labels_set [0,1,2], unseen class 2 adds a 0: (4/3)/3
    assert macro_f1([0, 0, 1], [0, 1, 1], labels_set=[0, 1, 2]) == pytest.approx(400 / 9)
    # a class only predicted (2) counts: class 0 tp=1 fn=1 -> 2/3 ; class 2 fp=1 -> 0 ; mean 1/3
    assert macro_f1([0, 2], [0, 0]) == pytest.approx(100 / 3)


def test_binary_f1():
    # tp = pos 0,4 = 2 ; fp = pos 1 = 1 ; fn = pos 2 = 1 -> 2*2/(4+1+1) = 2/3
    assert binary_f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(200 / 3)
    # no positive anywhere: sklearn's zero_division convention gives 0
    assert binary_f1([0, 0], [0, 0]) == 0.0


# --------------------------------------------------------------------------- SQuAD answers


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The Cat", "cat"),  # case + leading article
        ("  An   apple, a day!", "apple day"),  # articles, punctuation, whitespace runs
        ("theater", "theater"),  # "the" inside a word is not an article
        ("A.B.C.", "abc"),  # punctuation removed before articles, so "a" is glued to "bc"
        ("the-cat", "thecat"),  # same order effect: "the" is no longer a separate word
        ("Über  Café", "über café"),  # unicode letters kept and lower-cased
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match_uses_normalisation():
    assert exact_match("The  Eiffel Tower.", "eiffel tower")
    assert not exact_match("Eiffel", "eiffel tower")


def test_token_f1_partial_overlap():
    # pred -> [cat, sat] ; gold -> [cat, sat, down] ; common = 2
    # P = 2/2 = 1, R = 2/3, F1 = 2*1*(2/3)/(1+2/3) = 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # repeated tokens are matched per occurrence: pred [cat, cat], gold [cat]
    # common = min(2,1) = 1, P = 1/2, R = 1, F1 = 2/3
    assert token_f1("cat cat", "cat") == pytest.approx(2 / 3)


def test_token_f1_empty_answers():
    assert token_f1("", "") == 1.0
    assert token_f1("the", "") == 1.0  # "the" normalises to nothing: still a no-answer
    assert token_f1("", "paris") == 0.0
    assert token_f1("paris", "") == 0.0


def test_squad_scores_max_over_golds_and_no_answer():
    predictions = {"q1": "cat sat", "q2": "Paris!", "q3": "", "q4": "London"}
    golds = {
        "q1": ["a cat sat down", "the dog"],  # EM 0 ; F1 max(0.8, 0) = 0.8 (as above)
        "q2": ["in Paris", "paris"],  # EM 1 via 2nd gold ; F1 1
        "q3": [""],  # unanswerable, predicted no answer: EM 1, F1 1
        "q4": [""],  # unanswerable, answered: EM 0, F1 0
    }
    scores = squad_scores(predictions, golds)
    assert scores["exact_match"] == pytest.approx(50.0)  # (0+1+1+0)/4
    assert scores["f1"] == pytest.approx(70.0)  # (0.8+1+1+0)/4


def test_squad_scores_drops_golds_that_normalise_to_nothing():
    # official v2 rule: "the" normalises to "" and is dropped, so golds are just ["Paris"] and the
    # empty prediction scores 0 (without the rule it would match the empty gold and score 1)
    scores = squad_scores({"q1": ""}, {"q1": ["the", "Paris"]})
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == 0.0


def test_squad_scores_rejects_missing_prediction():
    with pytest.raises(ValueError, match="missing"):
        squad_scores({"q1": "x"}, {"q1": ["x"], "q2": ["y"]})


# --------------------------------------------------------------------------- SQuAD 2.0 threshold


def test_squad_v2_threshold_search():
    golds = {"q1": ["Paris"], "q2": ["blue whale"], "q3": [""], "q4": [""]}
    spans = {"q1": "Paris", "q2": "whale", "q3": "foo", "q4": "bar"}
    diffs = {"q1": -1.0, "q2": 0.5, "q3": 1.0, "q4": 2.0}
    # raw span scores: q1 EM1 F1 1 ; q2 EM0 F1 = P1,R1/2 -> 2/3 ; q3,q4 (no-ans, non-empty span) 0
    s = squad_v2_with_threshold(spans, diffs, golds)
    # t = 0: q1 answered (1), q2 null on has-ans (0), q3 null (1), q4 null (1)
    assert s["exact_match"] == pytest.approx(75.0)  # 3/4
    assert s["f1"] == pytest.approx(75.0)  # 3/4
    # search, sorted by diff q1,q2,q3,q4, start = #no-ans = 2
    # EM: +1 -> 3 (best, t=-1.0), +0 -> 3, -1 -> 2, -1 -> 1  => 3/4 at t=-1.0
    assert s["best_exact_match"] == pytest.approx(75.0)
    assert s["best_exact_match_threshold"] == -1.0
    # F1: +1 -> 3 (t=-1.0), +2/3 -> 11/3 (best, t=0.5), -1 -> 8/3, -1 -> 5/3  => (11/3)/4
    assert s["best_f1"] == pytest.approx(1100 / 12)  # 91.67
    assert s["best_f1_threshold"] == 0.5
    # subsets at t = 0: has-ans {q1: 1, q2: 0}, no-ans {q3: 1, q4: 1}
    assert s["has_ans_exact_match"] == pytest.approx(50.0)
    assert s["has_ans_f1"] == pytest.approx(50.0)
    assert s["no_ans_exact_match"] == pytest.approx(100.0)
    assert s["no_ans_f1"] == pytest.approx(100.0)


def test_squad_v2_threshold_is_strict_and_best_matches_reapplied_threshold():
    golds = {"q1": ["Paris"], "q2": ["blue whale"], "q3": [""], "q4": [""]}
    spans = {"q1": "Paris", "q2": "whale", "q3": "foo", "q4": "bar"}
    # diff exactly 0.0 is NOT > 0, so q2 is answered at t=0: F1 = (1 + 2/3 + 1 + 1)/4 = best F1
    diffs = {"q1": -1.0, "q2": 0.0, "q3": 1.0, "q4": 2.0}
    s = squad_v2_with_threshold(spans, diffs, golds)
    assert s["f1"] == pytest.approx(1100 / 12)
    assert s["f1"] == pytest.approx(s["best_f1"])


def test_squad_v2_threshold_empty_span_on_unanswerable_costs_nothing():
    golds = {"q1": ["Paris"], "q2": [""]}
    spans = {"q1": "Paris", "q2": ""}  # an empty best span is itself a no-answer
    diffs = {"q1": 1.0, "q2": 0.5}
    s = squad_v2_with_threshold(spans, diffs, golds)
    # t = 0: both null -> q1 0, q2 1 -> 1/2
    assert s["exact_match"] == pytest.approx(50.0)
    # search: start 1 ; q2 answered with "" stays right (+0) -> 1 ; q1 +1 -> 2 (best, t=1.0)
    assert s["best_exact_match"] == pytest.approx(100.0)
    assert s["best_exact_match_threshold"] == 1.0


def test_squad_v2_empty_has_ans_subset():
    golds = {"q1": [""], "q2": [""]}
    spans = {"q1": "x", "q2": "y"}
    diffs = {"q1": -0.5, "q2": 0.3}
    s = squad_v2_with_threshold(spans, diffs, golds)
    # t = 0: q1 answered (0), q2 null (1) -> 1/2
    assert s["exact_match"] == pytest.approx(50.0)
    assert s["no_ans_exact_match"] == pytest.approx(50.0)
    assert math.isnan(s["has_ans_exact_match"]) and math.isnan(s["has_ans_f1"])
    # search: start 2 (all null, best, t stays 0.0 as in the official script), then -1, -1
    assert s["best_exact_match"] == pytest.approx(100.0)
    assert s["best_exact_match_threshold"] == 0.0


def test_squad_v2_empty_no_ans_subset():
    s = squad_v2_with_threshold({"q1": "Paris"}, {"q1": -2.0}, {"q1": ["Paris"]})
    assert s["exact_match"] == pytest.approx(100.0)
    assert math.isnan(s["no_ans_exact_match"]) and math.isnan(s["no_ans_f1"])
    # start 0 (no unanswerable), q1 +1 -> 1 at t = -2.0
    assert s["best_f1"] == pytest.approx(100.0)
    assert s["best_f1_threshold"] == -2.0


def test_squad_v2_best_equals_brute_force_over_thresholds():
    # With distinct diffs, the search must equal re-scoring at every candidate threshold (plus -inf =
    # all null); the plain scores at t re-use the function itself with shifted diffs (diff - t > 0).
    rng = random.Random(0)
    words = ["red", "blue", "cat", "dog", "sat", ""]
    golds, spans, diffs = {}, {}, {}
    for i in range(12):
        golds[i] = [""] if rng.random() < 0.4 else [" ".join(rng.sample(words[:5], 2))]
        spans[i] = " ".join(rng.sample(words, 2)).strip()
        diffs[i] = rng.uniform(-3, 3)
    s = squad_v2_with_threshold(spans, diffs, golds)
    for key in ("exact_match", "f1"):
        at = {
            t: squad_v2_with_threshold(spans, {q: d - t for q, d in diffs.items()}, golds)[key]
            for t in diffs.values()
        }
        all_null = 100.0 * sum(g == [""] for g in golds.values()) / len(golds)
        best_t = max(at, key=at.get)
        assert s[f"best_{key}"] == pytest.approx(max(all_null, at[best_t]))
        if at[best_t] > all_null:
            assert s[f"best_{key}_threshold"] == best_t


# --------------------------------------------------------------------------- SuperGLUE


def test_multirc_groups_by_question_id():
    ids = ["a", "a", "b", "b", "a", "b", "b", "c", "c"]
    preds = [1, 0, 1, 1, 1, 0, 0, 0, 0]
    labels = [1, 0, 1, 0, 1, 1, 0, 0, 0]
    # options are interleaved; b's last option is right but two earlier ones are wrong
    # a: positions 0,1,4 all right ; b: wrong at 3 and 5 ; c: positions 7,8 right -> EM 2/3
    # F1a: tp = 0,2,4 = 3 ; fp = 3 ; fn = 5 -> 6/(6+1+1) = 0.75
    s = multirc_scores(ids, preds, labels)
    assert s["em"] == pytest.approx(200 / 3)
    assert s["f1a"] == pytest.approx(75.0)


def test_record_max_over_answers():
    predictions = {"q1": "Barack Obama", "q2": "the United States"}
    golds = {
        "q1": ["Obama", "Barack Obama"],  # EM 1 (2nd), F1 1
        # pred -> [united, states]; "U.S." -> "us" (0); 2nd -> 4 tokens, common 2: P 1, R 1/2, F1 2/3
        "q2": ["U.S.", "United States of America"],
    }
    s = record_scores(predictions, golds)
    assert s["exact_match"] == pytest.approx(50.0)  # (1+0)/2
    assert s["f1"] == pytest.approx(250 / 3)  # (1+2/3)/2 = 83.33


# --------------------------------------------------------------------------- seqeval


def test_seqeval_default_vs_strict():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    s = seqeval_scores(true, pred)
    # default (conlleval): leading I-PER starts a PER chunk -> PER, LOC, ORG all match: 3/3, 3/3
    assert s["precision"] == pytest.approx(100.0)
    assert s["recall"] == pytest.approx(100.0)
    assert s["f1"] == pytest.approx(100.0)
    # strict IOB2: "I-PER I-PER" is no entity -> pred {LOC, ORG}, tp 2, P 2/2, R 2/3
    # F1 = 2*1*(2/3)/(1+2/3) = 0.8
    assert s["precision_strict"] == pytest.approx(100.0)
    assert s["recall_strict"] == pytest.approx(200 / 3)
    assert s["f1_strict"] == pytest.approx(80.0)


def test_seqeval_rejects_ragged_sentences():
    with pytest.raises(ValueError, match="sentence 0"):
        seqeval_scores([["B-PER", "O"]], [["B-PER"]])
