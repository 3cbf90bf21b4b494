"""Resume after a crash or a preemption: `<run dir>/checkpoint/last.pt`, written atomically.

Saved after every epoch (and, on SIGTERM/SIGUSR1/SIGUSR2, after the current step): the trainable
parameters only (prompts + head; with method=ft the trainable set IS the backbone, so ft checkpoints
are as big as the model), optimizer, scheduler, RNG states and the loop's bookkeeping (epoch, steps
done in it, best-so-far, the epochs list). The batch order is a function of seed + epoch, so a resumed
epoch skips the steps already done. Re-running the same command resumes (the run directory is a
function of the config); the checkpoint is deleted when the run is done.
"""

from __future__ import annotations

import io
import random
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ptv2.results import write_atomic

# Exit status of a run stopped by a signal after saving its checkpoint (128 + SIGTERM, the shell's way).
EXIT_INTERRUPTED = 143
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
_stop: dict = {"signal": None, "previous": {}}


def path(run_directory: Path) -> Path:
    return run_directory / "checkpoint" / "last.pt"


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        # this process's GPU only: reading every GPU's state would open a context on each (torchrun ranks)
        state["cuda_device"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda_device" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_device"])


def save(run_directory: Path, model: torch.nn.Module, optimizer, scheduler, loop: dict) -> None:
    """`loop`: the loop's position (the epoch to run, its steps already done) and bookkeeping, the record."""
    state = {
        "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "loop": loop,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path(run_directory), buffer.getvalue())


def load(run_directory: Path, model: torch.nn.Module, optimizer, scheduler) -> dict | None:
    """Restore a checkpoint into the freshly built objects; returns the loop bookkeeping, None if none."""
    file = path(run_directory)
    if not file.is_file():
        return None
    # Our own file (numpy RNG state and Python objects inside), hence weights_only=False.
    state = torch.load(file, map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["loop"]


def delete(run_directory: Path) -> None:
    shutil.rmtree(path(run_directory).parent, ignore_errors=True)


def stop_requested() -> bool:
    return _stop["signal"] is not None


def _on_signal(signum, frame) -> None:
    _stop["signal"] = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While training: SIGTERM/SIGUSR1/SIGUSR2 (Slurm preemption, time limit) only set a flag that the
    loop checks after each step. Outside (and in non-main threads) the signals keep their handlers."""
    try:
        _stop["previous"] = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    except ValueError:  # not the main thread: cannot install handlers
        _stop["previous"] = {}
    _stop["signal"] = None
    try:
        yield
    finally:
        for s, handler in _stop["previous"].items():
            signal.signal(s, handler)


def exit_interrupted(run_directory: Path) -> None:
    """After the checkpoint is saved: hand the signal to a previous Python handler (submitit requeues the
    job on SIGUSR2 that way), then exit with EXIT_INTERRUPTED."""
    signum = _stop["signal"]
    print(
        f"ptv2-train: interrupted by {signal.Signals(signum).name}; checkpoint saved in {path(run_directory)}; "
        "re-run the same command to resume",
        file=sys.stderr,
        flush=True,
    )
    previous = _stop["previous"].get(signum)
    if callable(previous):
        previous(signum, None)
    raise SystemExit(EXIT_INTERRUPTED)
