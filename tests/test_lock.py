"""One process owns a run folder: a second command is told who holds it (exit 2), waits with results.wait=true,
or in a sweep lists it as running elsewhere; stale locks (pid gone, old heartbeat on another host) are taken
over; the lock goes on every way out."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FIXTURE_DATA, run_cli

from ptv2 import lock
from ptv2.results import run_dir

REPO = Path(__file__).resolve().parent.parent
ARGS = [f"data.root={FIXTURE_DATA}", "train.epochs=1", "train.progress=false"]
HOLDER = "import sys, time; from pathlib import Path; from ptv2 import lock; lock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)"


def _hold(directory: Path) -> subprocess.Popen:
    """Another live process holding the run folder (as a training ptv2-train would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def held_run(tiny_cfg, tmp_path):
    directory = run_dir(tiny_cfg(*ARGS, f"results.root={tmp_path}"))
    proc = _hold(directory)
    yield directory, proc
    proc.kill()
    proc.wait()


def test_second_command_says_who_trains_the_folder(held_run, tmp_path):
    directory, proc = held_run
    result = run_cli(*ARGS, f"results.root={tmp_path}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"ptv2-train: error: run {directory} is being trained by pid {proc.pid} on host "
                           f"{socket.gethostname()} since ")
    assert not (directory / "metrics.json").exists()  # the holder's folder is left alone


def test_in_a_sweep_a_held_run_is_running_elsewhere_not_failed(held_run, tmp_path):
    directory, proc = held_run
    result = run_cli("-m", *ARGS, f"results.root={tmp_path}", "prompt_length=16,8")
    assert result.returncode == 0, result.stderr
    assert f"[running elsewhere] {directory}  (pid {proc.pid} on host" in result.stdout
    assert "sweep: 2 job(s): 1 running elsewhere, 1 done" in result.stdout
    listing = run_cli("-m", *ARGS, f"results.root={tmp_path}", "prompt_length=16,8", "results.dry_run=true")
    assert "dry run: 2 job(s): 1 running elsewhere, 1 done" in listing.stdout


def test_wait_takes_the_folder_once_its_holder_is_gone(held_run, tmp_path, monkeypatch):
    directory, proc = held_run
    monkeypatch.setattr(lock, "WAIT_POLL_S", 0.1)
    threading.Timer(1.0, proc.kill).start()  # SIGKILL: the lock file stays behind, its pid is gone (stale)
    result = run_cli(*ARGS, f"results.root={tmp_path}", "results.wait=true")
    assert result.returncode == 0, result.stderr
    assert "waiting (results.wait=true): run " in result.stdout
    assert json.loads((directory / "metrics.json").read_text())["status"] == "done"
    assert not (directory / lock.LOCK_FILE).exists()


def _lock_file(directory: Path, **holder) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / lock.LOCK_FILE).write_text(json.dumps({"token": "theirs", "started": "then", **holder}))


def test_stale_locks_are_taken_over_live_ones_are_not(tmp_path):
    here = socket.gethostname()
    fresh = {"host": "another-node", "pid": 1, "heartbeat": time.time()}
    cases = [
        ({"host": "another-node", "pid": 1, "heartbeat": time.time() - lock.STALE_AFTER_S - 1}, True),  # requeued
        (fresh, False),
        ({"host": here, "pid": os.getpid(), "pid_start": "0", "heartbeat": time.time()}, True),  # pid reused
        ({"host": here, "pid": os.getpid(), "pid_start": lock._process_start(os.getpid())}, False),
    ]
    for i, (holder, stale) in enumerate(cases):
        directory = tmp_path / str(i)
        _lock_file(directory, **holder)
        if stale:
            owner = lock.acquire(directory)
            assert json.loads((directory / lock.LOCK_FILE).read_text())["token"] == owner["token"]
        else:
            with pytest.raises(lock.RunLocked, match="is being trained by pid"):
                lock.acquire(directory)


def test_heartbeat_refreshes_and_every_exit_releases(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    path = tmp_path / lock.LOCK_FILE
    with lock.hold(tmp_path):
        first = json.loads(path.read_text())["heartbeat"]
        time.sleep(0.3)
        assert json.loads(path.read_text())["heartbeat"] > first
    assert not path.exists()
    for exit_ in (KeyboardInterrupt, SystemExit(143), RuntimeError("boom")):
        with pytest.raises(type(exit_) if isinstance(exit_, BaseException) else exit_), lock.hold(tmp_path):
            raise exit_
        assert not path.exists()


def test_a_failed_run_releases_its_folder(tmp_path, monkeypatch):
    from ptv2.heads import ClsHead

    monkeypatch.setattr(ClsHead, "loss", lambda self, logits, batch: logits.sum() * float("nan"))
    result = run_cli(*ARGS, f"results.root={tmp_path}")
    assert result.returncode == 2
    (metrics,) = tmp_path.glob("runs/*/*/*/*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "failed"
    assert not (metrics.parent / lock.LOCK_FILE).exists()
