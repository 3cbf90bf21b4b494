"""`ptv2-train` end to end on tiny backbones and fixture files; bad input gives one line and exit != 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURE_DATA, run_cli

SCHEMA_KEYS = {
    "schema_version", "status", "task", "family", "model", "method", "head", "prompt_length", "reparam",
    "depth_range", "num_layers", "seed", "primary_metric", "report_split", "splits", "best_epoch", "best",
    "epochs", "params", "timing", "hparams", "overrides", "versions",
}


def _train(tmp_path: Path, *overrides: str):
    return run_cli(
        f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "train.epochs=2", "train.progress=false", *overrides
    )


@pytest.mark.parametrize(
    ("model", "extra"),
    [("tiny-bert", ["task=rte", "reparam=mlp"]), ("tiny-roberta", ["task=cb", "depth_range.layers=2-4"])],
)
def test_train_writes_metrics_with_schema(tmp_path, model, extra):
    result = _train(tmp_path, f"model={model}", *extra)
    assert result.returncode == 0, result.stderr
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("metrics: ") and last_line.endswith("metrics.json")
    metrics_path = Path(last_line.removeprefix("metrics: "))
    metrics = json.loads(metrics_path.read_text())
    assert metrics.keys() >= SCHEMA_KEYS
    assert metrics["status"] == "done" and metrics["model"] == model and len(metrics["epochs"]) == 2
    assert metrics["primary_metric"] == "accuracy" and "accuracy" in metrics["best"]["dev"]
    assert all(e["eval_s"] > 0 and e["train_s"] > 0 for e in metrics["epochs"])
    # stored per task: prefix P*layers*2*H = 16*4*2*32 = 4096 (all 4 layers) or 16*3*2*32 = 3072 (layers
    # 2-4), plus the head 32*2+2 (RTE) or 32*3+3 (CB), plus the tiny backbone's randomly initialised (so not
    # pretrained, so stored) frozen pooler 32*32+32 that the cls head reads
    assert metrics["params"]["stored"] == (4096 + 66 if model == "tiny-bert" else 3072 + 99) + 1056
    run_dir = metrics_path.parent
    assert {"config.yaml", "curves.csv", "prompt_head.safetensors"} <= {p.name for p in run_dir.iterdir()}
    if model == "tiny-roberta":
        assert metrics["depth_range"] == "2-4" and metrics["task"] == "cb"
        assert "macro_f1" in metrics["best"]["dev"]


def test_same_command_twice_skips_the_finished_run(tmp_path):
    first = _train(tmp_path, "train.epochs=1")
    second = _train(tmp_path, "train.epochs=1")
    assert first.returncode == second.returncode == 0
    assert "already done" in second.stdout
    assert first.stdout.strip().splitlines()[-1] == second.stdout.strip().splitlines()[-1]


def test_multirun_sweep_writes_one_run_per_job(tmp_path):
    result = run_cli(
        "-m", f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "train.epochs=1", "train.progress=false",
        "prompt_length=2,4", "reparam=embedding,mlp",
    )
    assert result.returncode == 0, result.stderr
    runs = list(tmp_path.glob("runs/rte/tiny-bert/pt2/*/metrics.json"))
    assert len(runs) == 4
    assert {(m["prompt_length"], m["reparam"]) for m in map(json.loads, map(Path.read_text, runs))} == {
        (2, "embedding"), (4, "embedding"), (2, "mlp"), (4, "mlp")
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=nope"], "unknown task 'nope'"),
        (["model=nope"], "unknown model 'nope'"),
        (["prompt_length=0"], "prompt_length=0 must be a positive integer"),
        (["depth_range.layers=3-9"], "outside the model's layers 1-4"),
        (["data.root=/nonexistent"], "missing /nonexistent/superglue/RTE/train.jsonl"),
        (["model=roberta-large"], "no weights for model=roberta-large: pass model.path="),
        (["model=bert-large", "model.path=/nonexistent"], "model.path=/nonexistent has no config.json"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, overrides, message):
    result = _train(tmp_path, *overrides)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_nan_loss_stops_the_run_with_one_line_and_records_it(tmp_path, monkeypatch):
    from ptv2.heads import ClsHead

    monkeypatch.setattr(ClsHead, "loss", lambda self, logits, batch: logits.sum() * float("nan"))
    result = _train(tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss became nan at epoch 1 step 1: lower train.lr=" in lines[0], result.stderr
    (metrics_path,) = tmp_path.glob("runs/rte/tiny-bert/pt2/*/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["status"] == "failed" and "loss became nan" in metrics["error"]


@pytest.mark.parametrize("run", [["task=rte"], ["task=conll03", "train.packing=true"]])
def test_collation_workers_train_exactly_as_the_main_process(tmp_path, run):
    from safetensors.torch import load_file

    runs = {}
    for workers in ("auto", "2"):  # auto is 0 on the CPU; workers ship batches as BatchBuffers
        result = _train(tmp_path / workers, *run, "model=tiny-bert", "train.dropout=0", f"train.num_workers={workers}")
        assert result.returncode == 0, result.stderr
        path = Path(result.stdout.strip().splitlines()[-1].removeprefix("metrics: "))
        runs[workers] = json.loads(path.read_text()), load_file(path.parent / "prompt_head.safetensors")
    (main, main_tensors), (workers, worker_tensors) = runs["auto"], runs["2"]
    assert [e["train_loss"] for e in main["epochs"]] == [e["train_loss"] for e in workers["epochs"]]
    assert main_tensors.keys() == worker_tensors.keys()
    assert all((main_tensors[k] == worker_tensors[k]).all() for k in main_tensors)


def test_auto_collation_workers_leave_a_core_per_gpu_process(monkeypatch):
    import torch
    from omegaconf import OmegaConf

    from ptv2.train import num_workers

    cfg = OmegaConf.create({"train": {"num_workers": "auto"}})
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)))
    assert num_workers(cfg, torch.device("cpu")) == 0
    assert num_workers(cfg, torch.device("cuda")) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun, 8 GPU processes on 16 cores
    assert num_workers(cfg, torch.device("cuda")) == 1
    assert num_workers(OmegaConf.create({"train": {"num_workers": 3}}), torch.device("cuda")) == 3


def test_auto_collation_workers_share_the_cores_with_a_parallel_sweeps_jobs(monkeypatch):
    import torch
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from ptv2.train import num_workers

    cfg = OmegaConf.create({"train": {"num_workers": "auto"}})
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)))
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    launcher = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 6}
    hydra = HydraConfig.instance()
    monkeypatch.setattr(hydra, "cfg", OmegaConf.create({"hydra": {"launcher": launcher}}))
    assert num_workers(cfg, torch.device("cuda")) == 1  # 16 cores // 6 jobs - 1 for each job's loop
    launcher["n_jobs"] = 2
    monkeypatch.setattr(hydra, "cfg", OmegaConf.create({"hydra": {"launcher": launcher}}))
    assert num_workers(cfg, torch.device("cuda")) == 4
    launcher["n_jobs"] = -9  # joblib: all cores but 8, so 8 jobs
    monkeypatch.setattr(hydra, "cfg", OmegaConf.create({"hydra": {"launcher": launcher}}))
    assert num_workers(cfg, torch.device("cuda")) == 1
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}  # one job at a time
    monkeypatch.setattr(hydra, "cfg", OmegaConf.create({"hydra": {"launcher": basic}}))
    assert num_workers(cfg, torch.device("cuda")) == 4
