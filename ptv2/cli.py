"""`ptv2-train`: the Hydra app. Composes conf/, runs one training (or one job of a -m sweep).

User errors print one line and exit 2. In a sweep a failing job is recorded as failed in its run
directory and the sweep goes on; the command exits 1 at the end if any job failed.
"""

from __future__ import annotations

import sys
import traceback
from contextlib import nullcontext

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ptv2 import __version__, paper
from ptv2.config import CONF_DIR
from ptv2.errors import UserError

_failed_jobs: list[str] = []
_dry_run_status: list[str] = []  # one status per job of a results.dry_run=true listing


def _check_choices(argv: list[str]) -> None:
    """Unknown config choices (task=foo) as one line, before Hydra's multi-line composition error."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        if not sep or group.startswith("hydra") or not (CONF_DIR / group).is_dir():
            continue
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        for choice in value.split(","):
            if choice and choice not in options:
                raise UserError(f"unknown {group} {choice!r}; choose from: {', '.join(options)}")


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> None:
    from ptv2.checkpoint import stop_on_signals
    from ptv2.distributed import one_gpu_per_job
    from ptv2.mpt2 import is_multitask, run_family
    from ptv2.results import record_failure, run_dir
    from ptv2.train import run

    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.results.get("dry_run"):
        _dry_run(cfg, hydra_cfg.overrides.task)
        return
    own_gpu = one_gpu_per_job(hydra_cfg.job.num) if cfg.train.get("gpu_per_job") and sweeping else nullcontext()
    # Everything below runs inside the job's own process with the joblib/submitit launchers, so a failed
    # job is recorded in its run directory there; only the basic launcher's exit status sees _failed_jobs.
    try:
        with own_gpu, stop_on_signals():  # SIGTERM/SIGUSR1/SIGUSR2: checkpoint after the current step, exit 143
            # multitask=<family>: MPT-2, stage 1 then stage 2 per dataset, each its own run (ptv2/multitask.py)
            (run_family if is_multitask(cfg) else run)(cfg, overrides=list(hydra_cfg.overrides.task))
    except Exception as error:
        if not is_multitask(cfg) and (sweeping or run_dir(cfg).exists()):  # run_family records its own runs
            record_failure(cfg, error)
        if not sweeping:
            if isinstance(error, UserError):  # Hydra would print a traceback for anything it catches
                _exit_with(error)
            raise
        _failed_jobs.append(" ".join(hydra_cfg.overrides.task))
        detail = str(error) if isinstance(error, UserError) else traceback.format_exc()
        print(f"ptv2-train: job failed ({_failed_jobs[-1]}): {detail}", file=sys.stderr)
        return
    if not is_multitask(cfg):
        print(f"metrics: {run_dir(cfg) / 'metrics.json'}")


def _dry_run(cfg: DictConfig, overrides) -> None:
    """List instead of train: the job's overrides, run directory and whether it would be skipped
    (multitask=<family>: stage 1 and every stage-2 run, by task name)."""
    from ptv2.mpt2 import family_runs, is_multitask
    from ptv2.results import run_status

    runs = family_runs(cfg, list(overrides)) if is_multitask(cfg) else [("", cfg)]
    for label, run_cfg in runs:
        directory, status = run_status(run_cfg)
        _dry_run_status.append(status)
        named = f"{label} {run_cfg.task.name}: " if label else ""
        print(f"[{status}] {named}{directory}  ({' '.join(overrides)})")


def _run_paper(argv: list[str]) -> None:
    """+experiment=paper: print the plan (ptv2/paper.py); then, unless a dry run, each table's sweep in turn."""
    for sweep in paper.sweeps(argv, CONF_DIR):
        saved, sys.argv = sys.argv, ["ptv2-train", *sweep]
        try:
            _app()
        finally:
            sys.argv = saved
            GlobalHydra.instance().clear()


def _exit_with(error: UserError) -> None:
    print(f"ptv2-train: error: {error}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    if "--version" in sys.argv[1:]:  # before Hydra: its own --version prints Hydra's
        print(f"ptv2 {__version__}")
        return
    _failed_jobs.clear()  # per invocation (tests call main() repeatedly in one process)
    _dry_run_status.clear()
    try:
        _check_choices(sys.argv[1:])
        if paper.requested(sys.argv[1:]):
            _run_paper(sys.argv[1:])
        else:
            _app()
    except UserError as error:
        _exit_with(error)
    if _dry_run_status:
        counts = {s: _dry_run_status.count(s) for s in dict.fromkeys(_dry_run_status)}
        print(f"dry run: {len(_dry_run_status)} job(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if _failed_jobs:
        print(f"ptv2-train: {len(_failed_jobs)} sweep job(s) failed: {'; '.join(_failed_jobs)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
