"""train.logger through `ptv2-train`: TensorBoard event files read back, a faked wandb offline, bad choices."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
from conftest import FIXTURE_DATA, run_cli

COMMON = [f"data.root={FIXTURE_DATA}", "task=rte", "train.epochs=2", "train.batch_size=4", "train.progress=false"]


def _train(tmp_path: Path, *overrides: str) -> tuple[dict, Path]:
    result = run_cli(f"results.root={tmp_path}", *COMMON, *overrides)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1].removeprefix("metrics: "))
    return json.loads(path.read_text()), path.parent


def test_tensorboard_events_hold_step_loss_lr_epoch_metrics_and_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics, run = _train(tmp_path, "train.logger=tensorboard")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/epoch_loss", "dev/accuracy"} <= scalars
    steps = events.Scalars("train/loss")
    per_epoch = len(steps) // 2
    assert per_epoch >= 2 and [s.step for s in steps] == list(range(1, 2 * per_epoch + 1))
    for epoch, record in enumerate(metrics["epochs"]):  # the epoch's mean step loss is metrics.json's train_loss
        mean = sum(s.value for s in steps[epoch * per_epoch : (epoch + 1) * per_epoch]) / per_epoch
        assert math.isclose(mean, record["train_loss"], rel_tol=1e-5)
    dev = events.Scalars("dev/accuracy")  # per epoch; float32 in the event file
    assert [e.step for e in dev] == [e["epoch"] for e in metrics["epochs"]]
    assert [e.value for e in dev] == pytest.approx([e["metrics"]["dev"]["accuracy"] for e in metrics["epochs"]], rel=1e-6)
    lrs = [s.value for s in events.Scalars("train/lr")]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-9)  # linear decay to 0
    (text,) = [t for t in events.Tags()["tensors"] if t.startswith("config")]
    config = events.Tensors(text)[0].tensor_proto.string_val[0].decode()
    assert "name: rte" in config and "logger: tensorboard" in config

    # the logger is not part of the run's identity: the same run without it is already done
    listing = run_cli(f"results.root={tmp_path}", *COMMON, "results.dry_run=true")
    assert f"[done] {run}" in listing.stdout


class _FakeRun:
    def __init__(self, calls: dict) -> None:
        self.calls = calls

    def log(self, values: dict, step: int) -> None:
        self.calls["log"].append((step, values))

    def finish(self) -> None:
        self.calls["finished"] = True


def test_wandb_goes_offline_without_network(tmp_path, monkeypatch):
    calls: dict = {"log": [], "finished": False}

    def init(**kwargs):
        calls["init"] = kwargs
        return _FakeRun(calls)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr("ptv2.run_logger.host_reachable", lambda host: False)
    metrics, run = _train(tmp_path, "train.logger=wandb", "results.experiment=logged")
    init_args = calls["init"]
    assert init_args["mode"] == "offline" and init_args["dir"] == str(run) and init_args["group"] == "logged"
    assert init_args["config"]["task"]["name"] == "rte" and init_args["name"].startswith("rte/tiny-bert/pt2/s11-")
    step_logs = [(s, v) for s, v in calls["log"] if "train/loss" in v]
    assert [s for s, _ in step_logs] == list(range(1, len(step_logs) + 1))
    epoch_logs = [v for _, v in calls["log"] if "epoch" in v]
    assert [v["dev/accuracy"] for v in epoch_logs] == [e["metrics"]["dev"]["accuracy"] for e in metrics["epochs"]]
    assert calls["finished"]


def test_wandb_mode_set_by_the_user_is_left_to_wandb(tmp_path, monkeypatch):
    from ptv2.run_logger import WandbLogger

    seen = {}
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: seen.update(kw)))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("ptv2.run_logger.host_reachable", lambda host: pytest.fail("no network probe when WANDB_MODE is set"))
    WandbLogger(tmp_path / "run", "name", None, {})
    assert seen["mode"] is None and (tmp_path / "run").is_dir()


def test_missing_wandb_and_unknown_logger_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    result = run_cli(f"results.root={tmp_path}", *COMMON, "train.logger=wandb")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "ptv2-train: error: train.logger=wandb needs wandb: pip install wandb (or train.logger=tensorboard)"
    ]
    bad = run_cli(f"results.root={tmp_path}", *COMMON, "train.logger=mlflow")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "ptv2-train: error: train.logger=mlflow must be one of none, tensorboard, wandb"]
