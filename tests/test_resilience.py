"""Faults and scale: resume after SIGTERM, failed sweep jobs recorded (exit 1), 2-rank data parallel, ptv2-status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptv2 import checkpoint, distributed
from ptv2.distributed import claim_slot
from ptv2.results import SCHEMA_VERSION
from ptv2.status import main as status_main

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "data"
TINY = ["task=rte", "model=tiny-bert", f"data.root={DATA}", "train.progress=false"]


def _env(**extra: str) -> dict:
    return os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | extra


def _start(args: list[str], cwd: Path, module: str = "ptv2.cli", **env: str) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _metrics(root: Path) -> list[dict]:
    return [
        json.loads(p.read_text()) | {"dir": p.parent} for p in sorted(root.glob("runs/*/*/*/*/metrics.json"))
    ]


def test_sigterm_then_rerun_resumes_and_matches_uninterrupted_run(tmp_path):
    # Same relative results.root in two folders: identical commands, so identical `overrides` too.
    args = [*TINY, "train.epochs=3", "train.batch_size=4", "results.root=res"]
    interrupted = _start(["1", *args], tmp_path / "a", module="tests.preempt")
    reference = _start(args, tmp_path / "b")
    code, out, err = _finish(interrupted)
    assert code == checkpoint.EXIT_INTERRUPTED, err
    assert "interrupted by SIGTERM" in err
    assert "epoch 1:" in out and "epoch 2:" not in out
    (partial,) = _metrics(tmp_path / "a" / "res")
    assert partial["status"] == "running" and [e["epoch"] for e in partial["epochs"]] == [1]
    assert checkpoint.path(partial["dir"]).is_file()
    assert not (partial["dir"] / "lock.json").exists()  # the checkpoint exit released the run folder

    code, out, err = _finish(_start(args, tmp_path / "a"))
    assert code == 0, err
    # The signal is seen after the first step of epoch 2: the rerun resumes there and trains epochs >= 2 only.
    assert "epoch 2, step 1" in out
    assert "epoch 1:" not in out and "epoch 2:" in out and "epoch 3:" in out
    assert _finish(reference)[0] == 0

    (resumed,), (uninterrupted,) = _metrics(tmp_path / "a" / "res"), _metrics(tmp_path / "b" / "res")
    assert not checkpoint.path(resumed["dir"]).parent.exists()  # deleted once done
    for key in ("timing", "created", "versions", "dir"):
        resumed.pop(key), uninterrupted.pop(key)
    for epoch in resumed["epochs"] + uninterrupted["epochs"]:
        assert epoch.pop("train_s") > 0 and epoch.pop("eval_s") > 0  # timings differ run to run
    assert resumed["status"] == "done" and len(resumed["epochs"]) == 3
    assert resumed == uninterrupted
    a, b = (
        load_file(d / "prompt_head.safetensors")
        for d in (_metrics(tmp_path / "a" / "res")[0]["dir"], _metrics(tmp_path / "b" / "res")[0]["dir"])
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_parallel_sweep_records_the_failing_job_and_keeps_the_other(tmp_path):
    args = [
        "-m",
        "hydra/launcher=parallel",
        *TINY,
        "train.epochs=1",
        f"results.root={tmp_path}",
        "depth_range.layers=1-2,1-99",
    ]
    code, out, err = _finish(_start(args, tmp_path))
    by_status = {m["status"]: m for m in _metrics(tmp_path)}
    assert sorted(by_status) == ["done", "failed"], (out, err)
    assert code == 1 and "1 job(s) failed" in err  # read back from the worker processes
    assert by_status["done"]["depth_range"] == "1-2" and len(by_status["done"]["epochs"]) == 1
    assert by_status["failed"]["error"].startswith("UserError: depth_range.layers=1-99")


def test_two_rank_data_parallel_matches_one_process(tmp_path):
    # Global batch 4 -> 2 examples per rank; dropout 0 so both runs compute the same function. 12
    # examples, 2 epochs: 6 optimizer steps, and the saved prompt + head tensors must agree.
    args = [*TINY, "train.epochs=2", "train.batch_size=4", "train.dropout=0", "results.root=res"]
    torchrun = ["--nproc_per_node", "2", "--master_port", "29517", "-m", "ptv2.cli", *args]
    two = _start(torchrun, tmp_path / "two", module="torch.distributed.run")
    one = _start(args, tmp_path / "one")
    code, out, err = _finish(two)
    assert code == 0, err[-3000:]
    assert _finish(one)[0] == 0
    (m2,), (m1,) = _metrics(tmp_path / "two" / "res"), _metrics(tmp_path / "one" / "res")
    a, b = load_file(m2["dir"] / "prompt_head.safetensors"), load_file(m1["dir"] / "prompt_head.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    for e2, e1 in zip(m2["epochs"], m1["epochs"], strict=True):
        assert e2["train_loss"] == pytest.approx(e1["train_loss"], abs=1e-5)
        assert e2["metrics"] == e1["metrics"]
    assert out.count("epoch 2:") == 1  # only rank 0 evaluates and reports
    assert (m2["timing"]["processes"], m1["timing"]["processes"]) == (2, 1)
    assert m1["timing"]["allreduce_s"] == 0 < m2["timing"]["allreduce_s"] < m2["timing"]["train_s"]


def test_each_concurrent_job_claims_a_different_gpu_slot_until_it_ends(tmp_path):
    names = ["gpu-a", "gpu-b"]
    with claim_slot(names, tmp_path) as first, claim_slot(names, tmp_path) as second:
        assert (first, second) == (0, 1)
        with claim_slot(names, tmp_path) as third:
            assert third is None  # all held: the caller falls back to job % GPUs
    with claim_slot(names, tmp_path) as again:  # released when the jobs ended
        assert again == 0


def test_two_running_sweep_jobs_never_share_a_gpu(tmp_path, monkeypatch):
    # Jobs 0 and 2 running together (job 1 finished first): job % GPUs would put both on GPU 0.
    chosen = []
    monkeypatch.setattr(distributed.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("Props", (), {"uuid": f"uuid-{i}"}))
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    with distributed.one_gpu_per_job(0) as first, distributed.one_gpu_per_job(2) as second:
        assert (first, second) == (0, 1) and chosen == [0, 1]
    with distributed.one_gpu_per_job(3) as later:
        assert later == 0  # both freed when their jobs ended


def _write_run(root: Path, key: str, metrics: dict | None, with_checkpoint: bool = False) -> None:
    directory = root / "sweep1" / "rte" / "tiny-bert" / "pt2" / key
    directory.mkdir(parents=True)
    if metrics is not None:
        (directory / "metrics.json").write_text(json.dumps(metrics))
    if with_checkpoint:
        checkpoint.path(directory).parent.mkdir()
        checkpoint.path(directory).write_bytes(b"x")


def test_status_lists_done_failed_and_incomplete_runs(tmp_path, capsys):
    done = {
        "schema_version": SCHEMA_VERSION,
        "status": "done",
        "best": {"dev": {"accuracy": 71.5}},
        "best_epoch": 3,
        "primary_metric": "accuracy",
        "report_split": "dev",
        "epochs": [{}] * 3,
    }
    _write_run(tmp_path, "s11-aaa", done)
    _write_run(tmp_path, "s11-bbb", {"status": "failed", "error": "UserError: loss became nan", "epochs": []})
    _write_run(tmp_path, "s11-ccc", {"status": "running", "epochs": [{}]}, with_checkpoint=True)
    _write_run(tmp_path, "s11-ddd", None, with_checkpoint=True)  # killed during its first epoch
    _write_run(tmp_path / ".hydra", "s11-eee", done)  # Hydra's own folder is not a run
    assert status_main(["--results", str(tmp_path)]) == 1  # a failed run: non-zero exit
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["done", "failed", "incomplete", "incomplete"]
    assert "accuracy 71.50 @ epoch 3" in lines[0]
    assert "UserError: loss became nan" in lines[1]
    assert "checkpoint, 1 epoch(s) done" in lines[2] and "checkpoint, 0 epoch(s) done" in lines[3]
    assert lines[-1].startswith("1 done, 1 failed, 2 incomplete (4 runs")
    assert status_main(["--results", str(tmp_path), "--experiment", "other"]) == 0
    assert capsys.readouterr().out.startswith("0 done, 0 failed, 0 incomplete (0 runs")
