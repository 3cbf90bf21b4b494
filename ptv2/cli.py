"""`ptv2-train`: the Hydra app. Composes conf/, validates it, runs one training (or one job of a -m sweep).

Whatever a user can fix prints one line and exits 2: Hydra's own override and parse errors, a config that
does not fit the schema (ptv2/schema.py), missing data or weights, a results folder that cannot be written,
a run folder another process is training (ptv2/lock.py). In a sweep a failing job is recorded as failed in
its run directory and the sweep goes on; with any launcher the command exits 1 at the end if a job failed
(ptv2/sweep.py).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ptv2 import __version__, paper, sweep
from ptv2.config import CONF_DIR
from ptv2.errors import UserError
from ptv2.lock import RunLocked, describe
from ptv2.schema import omegaconf_message, unknown_key_message, validate

__all__ = ["CONF_DIR", "main"]


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


def one_line(error: BaseException) -> str:
    """A user-fixable error as the one line shown: environment faults (OSError) say what to check."""
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{where} (the folder must exist, be writable and have free space)"
    return str(error).splitlines()[0] if str(error).strip() else type(error).__name__


def hydra_message(error: Exception) -> str:
    """Hydra's override, parse and composition errors (several lines, a link) as one line."""
    text = f"{error}\n{error.__cause__ or ''}"
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown and "not in struct" in text:  # `train.lrr=1`: the same line as `+train.lrr=1` gets
        return unknown_key_message(unknown[1])
    if isinstance(error, OmegaConfBaseException):
        return omegaconf_message(error)
    text = text.split("\nConfig search path:")[0]  # a missing choice: Hydra lists its search path
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("See https://")]
    override = getattr(error, "override", None)  # a parse error names its override apart from the message
    return (f"cannot parse override {override!r}: " if override else "") + " ".join(dict.fromkeys(lines))


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    sweeping, overrides = hydra_cfg.mode == RunMode.MULTIRUN, list(hydra_cfg.overrides.task)
    dry_run = bool(cfg.results.get("dry_run"))
    try:
        validate(cfg, check_device=not dry_run)  # before any data or weights are read
        if dry_run:
            _dry_run(cfg, overrides)
            return
        _train(cfg, overrides, sweeping, hydra_cfg.job.num if sweeping else 0)
    except RunLocked as held:
        if not sweeping:
            _exit_with(str(held))
        print(f"[running elsewhere] {held.directory}  ({describe(held.holder)})")
        sweep.record("running elsewhere", overrides, str(held))
    except Exception as error:
        fixable = isinstance(error, UserError | OSError)
        if not sweeping:
            if fixable:  # Hydra would print a traceback for anything it catches
                _exit_with(one_line(error))
            raise
        detail = one_line(error) if fixable else traceback.format_exc()
        print(f"ptv2-train: job failed ({' '.join(overrides)}): {detail}", file=sys.stderr)
        sweep.record(sweep.FAILED, overrides, detail.strip().splitlines()[-1])


def _train(cfg: DictConfig, overrides: list[str], sweeping: bool, job_num: int) -> None:
    from ptv2.checkpoint import stop_on_signals
    from ptv2.distributed import one_gpu_per_job
    from ptv2.mpt2 import is_multitask, run_family
    from ptv2.results import run_dir
    from ptv2.train import run

    own_gpu = one_gpu_per_job(job_num) if cfg.train.get("gpu_per_job") and sweeping else nullcontext()
    with own_gpu, stop_on_signals():  # SIGTERM/SIGUSR1/SIGUSR2: checkpoint after the current step, exit 143
        if is_multitask(cfg):  # MPT-2: stage 1 then stage 2 per dataset, each its own run (ptv2/mpt2.py)
            run_family(cfg, overrides=overrides)
        else:
            run(cfg, overrides=overrides)
            print(f"metrics: {run_dir(cfg) / 'metrics.json'}")
    sweep.record("done", overrides)


def _dry_run(cfg: DictConfig, overrides: list[str]) -> None:
    """List instead of train: every run the job would make (an MPT-2 family: stage 1 and each stage 2)."""
    from ptv2.mpt2 import is_multitask, stage1_config, stage2_config

    if not is_multitask(cfg):
        _list_run(cfg, overrides, _locate(cfg))
        return
    stage = str(cfg.multitask.get("stage", "both"))
    stage1 = stage1_config(cfg, overrides)
    stage1_dir, _, why = located = _locate(stage1)
    if stage in ("both", "1"):
        _list_run(stage1, overrides, located, "stage 1")
    if stage in ("both", "2"):
        for name in stage1.task.tasks:  # a stage-2 key follows from stage 1's folder
            stage2 = stage2_config(name, stage1, stage1_dir or Path("stage-1"), overrides)
            located = _locate(stage2) if stage1_dir else (None, "after stage 1", f"stage 1: {why}")
            _list_run(stage2, overrides, located, "stage 2")


def _locate(cfg: DictConfig) -> tuple[Path | None, str, str]:
    """The run's folder; or None, "data absent" / "weights absent" and why, when its key cannot be known."""
    from ptv2.identity import MissingInput
    from ptv2.results import run_dir

    try:
        return run_dir(cfg), "", ""
    except MissingInput as missing:
        return None, f"{missing.what} absent", str(missing)


def _list_run(cfg: DictConfig, overrides: list[str], located: tuple[Path | None, str, str], stage: str = "") -> None:
    """One dry-run line: `[status] <run dir>  (overrides)`, or `s<seed>-?` and why the key is not known;
    MPT-2 runs are named by their stage and task."""
    from ptv2.lock import holder_of
    from ptv2.results import read_metrics, run_parent

    (directory, reason, why), job = located, " ".join(overrides)
    named = f"{stage} {cfg.task.name}: " if stage else ""
    if directory is None:
        print(f"[to run, {reason}] {named}{run_parent(cfg)}/s{cfg.seed}-?  ({job}): {why}")
        sweep.record(f"to run, {reason}", overrides, why, dry_run=True)
        return
    status = (read_metrics(directory) or {}).get("status") or "to run"
    if status == "done" and cfg.results.force:
        status = "done, forced: to run"
    holder = holder_of(directory) if status != "done" else None
    print(f"[{'running elsewhere' if holder else status}] {named}{directory}  ({job})" + (f": {describe(holder)}" if holder else ""))
    sweep.record("running elsewhere" if holder else status, overrides, dry_run=True)


def _run_paper(argv: list[str]) -> None:
    """+experiment=paper: print the plan (ptv2/paper.py); then, unless a dry run, each table's sweep in turn."""
    for table_sweep in paper.sweeps(argv, CONF_DIR):
        saved, sys.argv = sys.argv, ["ptv2-train", *table_sweep]
        try:
            _app()
        finally:
            sys.argv = saved
            GlobalHydra.instance().clear()


def _exit_with(message: str) -> None:
    print(f"ptv2-train: error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    if "--version" in sys.argv[1:]:  # before Hydra: its own --version prints Hydra's
        print(f"ptv2 {__version__}")
        return
    sweep.reset()  # per invocation (tests call main() repeatedly in one process)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them: one line below
    try:
        _check_choices(sys.argv[1:])
        if paper.requested(sys.argv[1:]):
            _run_paper(sys.argv[1:])
        else:
            _app()
    except UserError as error:
        _exit_with(str(error))
    except (HydraException, OmegaConfBaseException) as error:
        _exit_with(hydra_message(error))
    shown, failed, code = sweep.summary()
    for line in shown:
        print(line)
    for line in failed:
        print(line, file=sys.stderr)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
