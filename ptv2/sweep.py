"""What each job of a command ended as (done, failed, running elsewhere, a dry-run status), for every launcher.

A job runs in the command's own process (basic launcher), in a worker process (joblib) or on another machine
(submitit: local or Slurm), so its outcome cannot live in memory: a `-m` job appends it to
`<sweep dir>/.ptv2-jobs/<job number>.jsonl`, and `JobOutcomes` - a Hydra callback, run by the launching
command - clears that folder before the sweep and reads it back after it. A single run keeps its outcomes
in memory. `summary` turns them into the command's last lines and exit status: 1 when any job failed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

OUTCOMES_DIR = ".ptv2-jobs"
FAILED = "failed"
_outcomes: list[dict] = []  # this command's: recorded here (single run) or read back after a sweep
_swept: list[bool] = []  # non-empty once a sweep's outcomes were read back


def reset() -> None:
    """Forget earlier commands' outcomes (tests call the CLI many times in one process)."""
    _outcomes.clear()
    _swept.clear()


def record(status: str, overrides: list[str], detail: str = "", dry_run: bool = False) -> None:
    """One outcome of the running job (a multi-task or dry-run job may have several)."""
    outcome = {"status": status, "job": " ".join(overrides), "detail": detail, "dry_run": dry_run}
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        _outcomes.append(outcome)
        return
    folder = Path(hydra_cfg.sweep.dir) / OUTCOMES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{hydra_cfg.job.num}.jsonl", "a", encoding="utf-8") as handle:  # one job, one process
        handle.write(json.dumps(outcome) + "\n")


class JobOutcomes(Callback):
    """Registered in conf/config.yaml (hydra.callbacks); Hydra calls these in the launching command."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # a sweep started within the same second reuses the folder name: start from nothing
        shutil.rmtree(Path(config.hydra.sweep.dir) / OUTCOMES_DIR, ignore_errors=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir) / OUTCOMES_DIR
        files = sorted(folder.glob("*.jsonl"), key=lambda p: int(p.stem)) if folder.is_dir() else []
        for path in files:
            _outcomes.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
        _swept.append(True)


def summary() -> tuple[list[str], list[str], int]:
    """The command's closing lines for stdout (job counts, after a sweep or a dry run) and stderr (the
    failed jobs), and its exit status: 1 when any job failed."""
    dry_run = any(o.get("dry_run") for o in _outcomes)
    statuses = [o["status"] for o in _outcomes]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    shown = [f"{'dry run' if dry_run else 'sweep'}: {len(statuses)} job(s): {counts}"] if statuses and (dry_run or _swept) else []
    failed = [o["job"] for o in _outcomes if o["status"] == FAILED and not o["dry_run"]]  # not a listed old failure
    if not failed:
        return shown, [], 0
    return shown, [f"ptv2-train: {len(failed)} job(s) failed: {'; '.join(failed)}"], 1
