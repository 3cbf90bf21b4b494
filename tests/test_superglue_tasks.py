"""The eight SuperGLUE tasks: encodings, metrics, end-to-end runs through the CLI, ptv2-predict submissions."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ptv2.cli import CONF_DIR
from ptv2.tasks.base import build_task
from ptv2.tiny import build_tiny_tokenizer

REPO = Path(__file__).resolve().parent.parent
ALL_TASKS = ["rte", "cb", "boolq", "wic", "copa", "wsc", "multirc", "record"]
PRIMARY = {"rte": "accuracy", "cb": "accuracy", "boolq": "accuracy", "wic": "accuracy", "copa": "accuracy",
           "wsc": "accuracy", "multirc": "f1a", "record": "f1"}
BERT_TASKS = ["copa", "record"]


_tokenizer = functools.cache(build_tiny_tokenizer)


def _task(name: str, data_root: Path, kind: str = "bert"):
    cfg = OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml")
    return build_task(cfg, data_root, _tokenizer(kind))


def _cli(*args: str, module: str = "ptv2.cli") -> subprocess.CompletedProcess:
    if module == "ptv2.cli":
        done = run_cli(*args)
    else:
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# --------------------------------------------------------------------------- end to end (CLI)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """One Hydra sweep per tiny model over the tasks (one process each keeps the file fast)."""
    root = tmp_path_factory.mktemp("sg_runs")
    common = ["data.root=tests/fixtures/data", "train.epochs=1", "data.max_train_samples=4", "train.batch_size=4", "train.eval_batch_size=8",
              "train.progress=false", f"results.root={root}"]
    _cli("-m", f"task={','.join(ALL_TASKS)}", "model=tiny-roberta", *common)
    _cli("-m", f"task={','.join(BERT_TASKS)}", "model=tiny-bert", *common)
    runs = {}
    for path in root.glob("runs/*/*/pt2/*/metrics.json"):
        runs[(path.parts[-5], path.parts[-4])] = path.parent
    return runs


@pytest.mark.parametrize(
    ("task", "model"), [(t, "tiny-roberta") for t in ALL_TASKS] + [(t, "tiny-bert") for t in BERT_TASKS]
)
def test_task_runs_end_to_end(finished_runs, task, model):
    metrics = json.loads((finished_runs[(task, model)] / "metrics.json").read_text())
    assert metrics["status"] == "done"
    assert metrics["primary_metric"] == PRIMARY[task]
    assert 0.0 <= metrics["best"]["dev"][PRIMARY[task]] <= 100.0
    assert (finished_runs[(task, model)] / "prompt_head.safetensors").is_file()


# --------------------------------------------------------------------------- encodings


def test_copa_connective_by_question_and_two_rows(fixture_data):
    task = _task("copa", fixture_data)
    tok = task.tokenizer
    cause = {"idx": 0, "premise": "The man broke his toe.", "choice1": "He fell.", "choice2": "He sang.",
             "question": "cause", "label": 1}
    effect = cause | {"question": "effect", "label": 0}
    (f_cause,) = task.encode(cause, 3, "train")
    (f_effect,) = task.encode(effect, 4, "train")
    assert len(f_cause["input_ids"]) == 2 and len(f_cause["attention_mask"]) == 2
    assert f_cause["input_ids"][0] == tok("The man broke his toe. because", "He fell.")["input_ids"]
    assert f_cause["input_ids"][1] == tok("The man broke his toe. because", "He sang.")["input_ids"]
    assert f_effect["input_ids"][1] == tok("The man broke his toe. so", "He sang.")["input_ids"]
    assert (f_cause["labels"], f_cause["example_index"], f_effect["labels"]) == (1, 3, 0)
    assert "labels" not in task.encode(cause | {"label": None}, 0, "test")[0]


def test_wsc_pair_is_span2_text_then_span1(fixture_data):
    task = _task("wsc", fixture_data)
    record = {"idx": 0, "text": "Mark told Pete he was late.", "span1_text": "Pete", "span1_index": 2,
              "span2_text": "he", "span2_index": 3, "label": 1}
    (feature,) = task.encode(record, 0, "train")
    assert feature["input_ids"] == task.tokenizer("he: Mark told Pete he was late.", "Pete")["input_ids"]


def test_record_one_feature_per_candidate_with_placeholder_filled(fixture_data):
    task = _task("record", fixture_data, "roberta")
    record = {"idx": 7, "passage_idx": 0, "passage": "Alice met Bob.", "query": "@placeholder smiled.",
              "entities": ["Alice", "Bob", "the Bob"], "answers": ["Bob"]}
    features = task.encode(record, 5, "train")
    assert [f["candidate"] for f in features] == ["Alice", "Bob", "the Bob"]
    assert features[0]["input_ids"] == task.tokenizer("Alice met Bob.", "Alice smiled.")["input_ids"]
    assert features[2]["input_ids"] == task.tokenizer("Alice met Bob.", "the Bob smiled.")["input_ids"]
    # official: a candidate is positive iff its string is a gold answer
    assert [f["labels"] for f in features] == [0, 1, 0]
    # task.label_match=normalized: SQuAD normalisation drops the article, so "the Bob" is right too
    task.cfg.label_match = "normalized"
    assert [f["labels"] for f in task.encode(record, 5, "train")] == [0, 1, 1]
    assert {f["example_index"] for f in features} == {5}
    test_features = task.encode(record | {"answers": []}, 0, "test")
    assert len(test_features) == 3 and all("labels" not in f for f in test_features)


def test_record_prediction_is_argmax_candidate_and_scores_max_over_gold(fixture_data):
    task = _task("record", fixture_data)
    records = [{"idx": 10, "answers": ["Bob", "Bobby Smith"]}, {"idx": 11, "answers": ["Rome"]}]
    features = [{"example_index": 0, "candidate": "Alice"}, {"example_index": 0, "candidate": "Bobby"},
                {"example_index": 1, "candidate": "Paris"}, {"example_index": 1, "candidate": "Rome"}]
    # Alice has the larger raw positive logit (6 > 3) but the smaller positive probability (sigmoid 1 < sigmoid 3).
    outputs = [torch.tensor([5.0, 6.0]), torch.tensor([0.0, 3.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    assert task.predictions(records, features, outputs) == {10: "Alice", 11: "Rome"}  # official: by logit
    assert task.metrics(records, features, outputs) == {"f1": pytest.approx(50.0), "exact_match": pytest.approx(50.0)}
    task.cfg.rank_by = "probability"
    assert task.predictions(records, features, outputs) == {10: "Bobby", 11: "Rome"}
    scores = task.metrics(records, features, outputs)
    # "Bobby" vs golds: "Bob" f1 0, "Bobby Smith" P=1 R=1/2 -> 2/3; query 11 exact -> f1 (2/3 + 1)/2, em 1/2
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert scores["exact_match"] == pytest.approx(50.0)


def test_multirc_metrics_group_options_by_question_uid(fixture_data):
    task = _task("multirc", fixture_data)
    yes, no = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    # (uid, gold, predicted): question (0,0) all right; (0,1) one false positive; (1,0) shares question idx 0
    # with (0,0) but is another paragraph's question, and is wrong.
    rows = [((0, 0), 1, yes), ((0, 0), 0, no), ((0, 0), 1, yes), ((0, 1), 1, yes), ((0, 1), 0, yes), ((1, 0), 0, yes)]
    records = [{"idx": i, "question_uid": uid, "label": y} for i, (uid, y, _) in enumerate(rows)]
    scores = task.metrics(records, [], [out for *_, out in rows])
    assert scores["f1a"] == pytest.approx(100 * 2 * 3 / (2 * 3 + 2 + 0))  # tp 3, fp 2, fn 0
    assert scores["em"] == pytest.approx(100 / 3)  # grouping by question idx alone would give 0


def test_multirc_and_record_encode_fixture_splits(fixture_data):
    multirc, record = _task("multirc", fixture_data), _task("record", fixture_data)
    records = multirc.read("dev")
    first = multirc.encode(records[0], 0, "dev")[0]
    expected = multirc.tokenizer(records[0]["paragraph"], f"{records[0]['question']} {records[0]['answer']}",
                                 truncation=True, max_length=128)["input_ids"]
    assert first["input_ids"] == expected
    queries = record.read("dev")
    assert len(record.encode(queries[0], 0, "dev")) == len(queries[0]["entities"])


# --------------------------------------------------------------------------- ptv2-predict


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_multirc_submission_nested_shape(finished_runs, fixture_data, tmp_path):
    run = finished_runs[("multirc", "tiny-roberta")]
    _cli(f"run={run}", "split=test", f"out={tmp_path}", module="ptv2.predict")
    rows = _rows(tmp_path / "MultiRC.jsonl")
    shape = [(r["idx"], [(q["idx"], [a["idx"] for a in q["answers"]]) for q in r["passage"]["questions"]]) for r in rows]
    assert shape == [(0, [(0, [0, 1, 2]), (1, [3, 4])])]  # the test fixture's paragraph/question/answer idx
    labels = {a["label"] for r in rows for q in r["passage"]["questions"] for a in q["answers"]}
    assert labels <= {0, 1} and set(rows[0]) == {"idx", "passage"}


def test_predict_record_and_boolq_submissions(finished_runs, fixture_data, tmp_path, capsys):
    from ptv2.predict import main

    main([f"run={finished_runs[('record', 'tiny-roberta')]}", f"out={tmp_path}"])
    entities = {r["idx"]: r["entities"] for r in _task("record", fixture_data).read("test")}
    rows = _rows(tmp_path / "ReCoRD.jsonl")
    assert [r["idx"] for r in rows] == list(entities) and all(r["label"] in entities[r["idx"]] for r in rows)

    boolq = finished_runs[("boolq", "tiny-roberta")]
    main([f"run={boolq}", f"out={tmp_path}"])
    rows = _rows(tmp_path / "BoolQ.jsonl")
    assert [r["idx"] for r in rows] == [r["idx"] for r in _task("boolq", fixture_data).read("test")]
    assert {r["label"] for r in rows} <= {"true", "false"}


@pytest.mark.parametrize("task", ["record", "copa"])
def test_predict_dev_reproduces_the_runs_best_metrics(finished_runs, tmp_path, task):
    """The rebuilt model (same seed -> same tiny backbone, loaded prompt + head) scores as the run did."""
    from ptv2.predict import predict_split

    run = finished_runs[(task, "tiny-roberta")]
    _, metrics = predict_split(run, "dev", tmp_path)
    assert metrics == pytest.approx(json.loads((run / "metrics.json").read_text())["best"]["dev"])


def test_predict_rejects_bad_arguments():
    from ptv2.errors import UserError
    from ptv2.predict import parse_args

    with pytest.raises(UserError, match="give run=<run dir> or runs="):
        parse_args(["split=test"])
    with pytest.raises(UserError, match="unknown argument"):
        parse_args(["run=x", "splt=test"])


# --------------------------------------------------------------------------- real data


def test_real_copa_and_wsc_counts(shared_data):
    copa, wsc = _task("copa", shared_data), _task("wsc", shared_data)
    assert (len(copa.read("train")), len(copa.read("dev"))) == (400, 100)
    assert (len(wsc.read("train")), len(wsc.read("dev"))) == (554, 104)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rte", "cb", "copa", "wic", "wsc"])
def test_real_dev_evaluation_pass(shared_data, name):
    """One evaluation pass of a tiny model over the real dev split: encoding, batching and metric all hold."""
    from ptv2.backbone import load_backbone
    from ptv2.build import encode_split
    from ptv2.data import Batching, eval_loader
    from ptv2.inference import predict
    from ptv2.model import build_model

    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config", [f"task={name}", "model=tiny-roberta", f"data.root={shared_data}"])
    torch.manual_seed(0)
    backbone = load_backbone(cfg.model)
    task = build_task(cfg.task, cfg.data.root, backbone.tokenizer)
    dev = encode_split(task, "dev", None)
    records, features = dev.records, dev.features
    model = build_model(cfg, backbone, task.num_labels, cfg.task.head)
    loader = eval_loader(features, 64, Batching(backbone.tokenizer.pad_token_id))
    outputs = predict(model, loader, torch.device("cpu"), None)
    assert len(outputs) == len(records) == len(features)
    score = task.metrics(records, features, outputs)[cfg.task.primary_metric]
    correct = score * len(records) / 100
    assert 0 <= score <= 100 and correct == pytest.approx(round(correct))
