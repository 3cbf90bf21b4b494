"""Run folders written by earlier ptv2 versions still load: tests/fixtures/runs/v1 holds two runs trained by
the first release (schema_version 1: raw [CLS] heads, N(0, 1) prompts; config.yaml without today's keys)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURE_DATA

from ptv2.inference import predict
from ptv2.predict import load_run, predict_split

V1 = Path(__file__).resolve().parent / "fixtures" / "runs" / "v1"


@pytest.fixture
def v1(tmp_path) -> Path:
    shutil.copytree(V1, tmp_path / "v1")
    return tmp_path / "v1"


def test_v1_copa_run_predicts_its_recorded_dev_metrics_and_submission(v1, tmp_path):
    run = v1 / "copa"
    path, metrics = predict_split(run, "dev", tmp_path / "out", data_root=str(FIXTURE_DATA))
    assert json.loads((run / "metrics.json").read_text())["schema_version"] == 1
    assert metrics == pytest.approx(json.loads((run / "metrics.json").read_text())["best"]["dev"])
    recorded = json.loads((run / "predictions.json").read_text())  # idx -> choice, at the best epoch
    written = {row["idx"]: row["label"] for row in map(json.loads, path.read_text().splitlines())}
    assert {str(k): v for k, v in written.items()} == recorded and len(set(recorded.values())) > 1


def test_v1_ner_run_rebuilds_its_word_level_predictions(v1):
    run = v1 / "conll03"
    cfg, built = load_run(run, "dev", str(FIXTURE_DATA))
    assert cfg.head_pool == "cls"  # the key it predates reads as what it meant then
    from ptv2.data import Batching, eval_loader

    dev = built.splits["dev"]
    outputs = predict(built.model, eval_loader(dev.features, 64, Batching(built.backbone.tokenizer.pad_token_id)),
                      built.model.head.classifier.weight.device, None)
    predicted = built.task.predictions(dev.records, dev.features, outputs)
    recorded = json.loads((run / "predictions.json").read_text())
    assert {str(k): v for k, v in predicted.items()} == recorded
