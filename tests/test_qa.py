"""Extractive QA: windows and offsets, post-processing on hand-made logits, end-to-end runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf

from ptv2.errors import UserError
from ptv2.formats.squad import read_squad, write_squad
from ptv2.tasks.qa import ExtractiveQA, answer_token_span
from ptv2.tiny import build_tiny_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"


def make_task(name: str = "squad", tokenizer=None, **overrides) -> ExtractiveQA:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.merge_with(overrides)
    return ExtractiveQA(cfg, ".", tokenizer)


# -- windows and offsets --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_long_context_answer_in_a_later_window_round_trips(fixture_data, kind):
    tokenizer = build_tiny_tokenizer(kind)
    task = make_task(tokenizer=tokenizer, max_length=64, stride=16)
    record = next(r for r in read_squad(fixture_data / "squad/train-v1.1.json") if len(r["context"]) > 1000)
    answer = record["answers"][0]
    start_char, end_char = answer["answer_start"], answer["answer_start"] + len(answer["text"])

    train = task.encode(record, 7, "train")
    dev = task.encode(record, 7, "dev")
    assert len(train) == len(dev) > 5  # one feature per window, same windows for both splits
    assert all(f["example_index"] == 7 for f in train + dev)
    assert all(len(f["input_ids"]) <= 64 for f in train)
    labelled = [w for w, f in enumerate(train) if f["start_positions"] != 0]
    assert labelled and labelled[0] > 0  # the answer is far in: not in the first window
    assert (train[0]["start_positions"], train[0]["end_positions"]) == (0, 0)
    for w, (t, d) in enumerate(zip(train, dev, strict=True)):
        offsets = d["offsets"]
        assert offsets[0] is None  # CLS and question tokens carry no context offsets
        context = [o for o in offsets if o is not None]
        inside = context[0][0] <= start_char and context[-1][1] >= end_char
        assert (w in labelled) == inside
        if inside:
            s, e = t["start_positions"], t["end_positions"]
            assert offsets[s][0] <= start_char < offsets[s][1]
            assert record["context"][offsets[s][0] : offsets[e][1]] == answer["text"]


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_short_context_is_one_window_with_the_answer_span(fixture_data, kind):
    task = make_task(tokenizer=build_tiny_tokenizer(kind))
    record = read_squad(fixture_data / "squad/train-v1.1.json")[1]  # "Thomas Reed" at 160
    (train,), (dev,) = task.encode(record, 0, "train"), task.encode(record, 0, "dev")
    s, e = train["start_positions"], train["end_positions"]
    assert 0 < s <= e
    assert record["context"][dev["offsets"][s][0] : dev["offsets"][e][1]] == "Thomas Reed"


def test_unanswerable_question_trains_on_cls(fixture_data):
    task = make_task("squad_v2", tokenizer=build_tiny_tokenizer("bert"))
    record = next(r for r in read_squad(fixture_data / "squad/train-v2.0.json") if r["is_impossible"])
    (feature,) = task.encode(record, 0, "train")
    assert (feature["start_positions"], feature["end_positions"]) == (0, 0)


def test_answer_token_span_outside_window_is_none():
    offsets = [None, (10, 12), (13, 15), None]
    assert answer_token_span(offsets, 10, 15) == (1, 2)
    assert answer_token_span(offsets, 11, 12) == (1, 1)  # mid-token start maps to its token
    assert answer_token_span(offsets, 5, 12) is None  # starts before the window
    assert answer_token_span(offsets, 13, 20) is None  # ends after it


def test_question_longer_than_the_window_is_a_user_error(fixture_data):
    task = make_task(tokenizer=build_tiny_tokenizer("bert"), max_length=12, stride=2)
    with pytest.raises(UserError, match="task.max_length"):
        task.encode(read_squad(fixture_data / "squad/dev-v1.1.json")[0], 0, "dev")


# -- post-processing ------------------------------------------------------------------------
# Context "aa bb cc dd ee" in two windows [CLS q SEP ctx ctx ctx SEP]; index 1 is a question token.
CONTEXT = "aa bb cc dd ee"
W1 = [None, None, None, (0, 2), (3, 5), (6, 8), None]  # aa bb cc
W2 = [None, None, None, (6, 8), (9, 11), (12, 14), None]  # cc dd ee


def logits(start: list[float], end: list[float]) -> torch.Tensor:
    return torch.tensor([start, end]).T


# W1: the question token pair (1, 1) scores 20 but is never a span; aa..cc = 3 (3 tokens); cc..cc = 2.5.
OUT1 = logits([1, 10, 0, 1, 0, 0.5, 0], [1, 10, 0, 0, 0, 2, 0])
# W2: start dd + end cc = 5 has end < start; dd..ee = 3.5 (2 tokens); cc..cc = 3 (1 token). Null 0.5.
OUT2 = logits([0.5, 0, 0, 0, 2, 0, 0], [0, 0, 0, 3, 0, 1.5, 0])


def qa_case(gold: list[str], qid: str = "q"):
    records = [{"id": qid, "context": CONTEXT, "answers": [{"text": g, "answer_start": 0} for g in gold]}]
    features = [{"example_index": 0, "offsets": W1}, {"example_index": 0, "offsets": W2}]
    return records, features


@pytest.mark.parametrize(("max_answer_length", "expected"), [(3, "dd ee"), (2, "dd ee"), (1, "cc")])
def test_best_valid_span_across_windows(max_answer_length, expected):
    task = make_task(max_answer_length=max_answer_length)
    records, features = qa_case(["dd ee"])
    assert task.predictions(records, features, [OUT1, OUT2]) == {"q": expected}
    assert task.metrics(records, features, [OUT1, OUT2]) == (
        {"exact_match": 100.0, "f1": 100.0} if expected == "dd ee" else {"exact_match": 0.0, "f1": 0.0}
    )


def test_first_window_alone_respects_max_answer_length():
    records, features = qa_case(["aa"])
    assert make_task(max_answer_length=3).predictions(records, features[:1], [OUT1]) == {"q": "aa bb cc"}
    assert make_task(max_answer_length=2).predictions(records, features[:1], [OUT1]) == {"q": "cc"}


def test_v2_null_versus_span_and_threshold():
    task = make_task("squad_v2")
    one = [{"example_index": i, "offsets": W2} for i in range(3)]
    records = [
        {"id": "a", "context": CONTEXT, "answers": [{"text": "dd ee", "answer_start": 9}]},
        {"id": "n1", "context": CONTEXT, "answers": []},
        {"id": "n2", "context": CONTEXT, "answers": []},
    ]
    outputs = [
        OUT2,  # span 3.5, null 0.5: diff -3 -> answers "dd ee" (right)
        logits(
            [2, 0, 0, 0, 2, 0, 0], [1, 0, 0, 3, 0, 1.5, 0]
        ),  # null 3 < span 3.5: diff -0.5 -> answers (wrong)
        logits([3, 0, 0, 0, 2, 0, 0], [2, 0, 0, 3, 0, 1.5, 0]),  # null 5 > span 3.5: diff 1.5 -> "" (right)
    ]
    assert task.predictions(records, one, outputs) == {"a": "dd ee", "n1": "dd ee", "n2": ""}
    scores = task.metrics(records, one, outputs)
    # threshold 0: 2 of 3 right; best threshold -3 (answer only "a") gets all 3 right
    assert scores["exact_match"] == pytest.approx(200 / 3)
    assert scores["f1"] == pytest.approx(200 / 3)
    assert scores["best_exact_match"] == pytest.approx(100.0)
    assert scores["best_f1_threshold"] == pytest.approx(-3.0)
    assert scores["no_ans_exact_match"] == pytest.approx(50.0)


def test_v2_null_score_is_the_minimum_over_windows():
    # W1: null 4 beats its best span aa..cc (3); W2: null 0.5. The min (0.5) < best span 3.5 -> answer;
    # taking W1's null (first window, or the max) would say "no answer".
    task = make_task("squad_v2")
    records, features = qa_case(["dd ee"])
    w1 = logits([2, 10, 0, 1, 0, 0.5, 0], [2, 10, 0, 0, 0, 2, 0])
    assert task.predictions(records, features, [w1, OUT2]) == {"q": "dd ee"}
    assert task.predictions(records, features[:1], [w1]) == {"q": ""}


def test_from_hub_maps_rows_to_records():
    task = make_task("squad_v2")
    row = {
        "id": "x",
        "title": "T",
        "context": "c",
        "question": "q?",
        "answers": {"text": [], "answer_start": []},
    }
    assert task.from_hub(row)["is_impossible"] is True
    row["answers"] = {"text": ["c"], "answer_start": [0]}
    assert task.from_hub(row)["answers"] == [{"text": "c", "answer_start": 0}]


def test_quoref_yaml_reads_squad_json_from_its_folder(tmp_path, fixture_data):
    records = read_squad(fixture_data / "squad/dev-v1.1.json")
    write_squad(records, tmp_path / "quoref" / "dev-v1.1.json")
    cfg = OmegaConf.load(CONF / "quoref.yaml")
    task = ExtractiveQA(cfg, tmp_path, build_tiny_tokenizer("roberta"))
    assert task.read("dev") == records


# -- end to end -------------------------------------------------------------------------------


def train(tmp_path: Path, *overrides: str) -> tuple[dict, dict, Path]:
    cmd = [sys.executable, "-m", "ptv2.cli", *overrides, f"results.root={tmp_path}", "train.progress=false"]
    cmd += ["train.epochs=1", "task.max_length=64", "task.stride=16", "prompt_length=4"]
    proc = run_cli(*cmd[3:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    (metrics_path,) = tmp_path.glob("runs/*/*/*/*/metrics.json")
    return (
        json.loads(metrics_path.read_text()),
        json.loads((metrics_path.parent / "predictions.json").read_text()),
        metrics_path,
    )


def test_end_to_end_squad(tmp_path, fixture_data):
    metrics, predictions, _ = train(tmp_path, "task=squad", "model=tiny-roberta", f"data.root={fixture_data}")
    assert metrics["status"] == "done" and metrics["primary_metric"] == "f1"
    assert set(metrics["best"]["dev"]) == {"exact_match", "f1"}
    assert set(predictions) == {r["id"] for r in read_squad(fixture_data / "squad/dev-v1.1.json")}


def test_end_to_end_squad_v2(tmp_path, fixture_data):
    metrics, predictions, _ = train(tmp_path, "task=squad_v2", "model=tiny-bert", f"data.root={fixture_data}")
    dev = metrics["best"]["dev"]
    assert {"exact_match", "f1", "best_exact_match", "best_f1", "best_f1_threshold"} <= set(dev)
    assert set(predictions) == {r["id"] for r in read_squad(fixture_data / "squad/dev-v2.0.json")}


def test_end_to_end_custom_squad_json(tmp_path, fixture_data):
    # Any SQuAD-format JSON: point task.path (absolute, or relative to data.root) and task.files at it.
    folder = tmp_path / "mine"
    for split, name in (("train", "train-v1.1"), ("dev", "dev-v1.1")):
        write_squad(read_squad(fixture_data / f"squad/{name}.json"), folder / f"{split}.json")
    metrics, predictions, path = train(
        tmp_path / "results",
        "task=squad",
        "model=tiny-roberta",
        "task.name=mine",
        f"task.path={folder}",
        "task.files.train=train.json",
        "task.files.dev=dev.json",
    )
    assert metrics["task"] == "mine" and "/mine/" in str(path)
    assert len(predictions) == 10
