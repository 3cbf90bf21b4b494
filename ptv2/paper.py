"""The whole paper as one planned sweep: ``ptv2-train -m +experiment=paper`` (conf/experiment/paper.yaml).

The plan is every table's and figure's experiment (``conf/experiment/<table>.yaml``) expanded as Hydra's
basic sweeper expands it (its grid, ``model=`` the table's backbones, ``seed=`` ``paper.seeds``, then the
command line's other overrides), so each run gets the config, and the run directory, that the per-table
sweep gives it: runs made either way count as done, and a re-run skips them.

Composing ~800 configs one by one through Hydra takes ~0.16 s each on 2 cores; the plan composes once per
distinct set of config-group choices (task, model, method, ...) and applies each job's plain
``key=value`` overrides (seed, prompt_length, depth_range.k, ...) exactly as Hydra applies them after
composing: ~20 s for the whole paper on 2 cores (~30 s with the machine busy) instead of ~2 minutes.

``results.dry_run=true`` prints per table and in total the runs, how many are done, and the estimated
GPU-hours on the reference GPU (``estimate_seconds``, from ptv2/report/paper_cost_*.csv). Otherwise each
table's sweep runs in turn (``sweeps``), through the chosen launcher.
"""

from __future__ import annotations

import copy
import csv
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl  # how Hydra applies key=value overrides
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # how `-m` expands a grid
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from ptv2.errors import UserError
from ptv2.results import run_status

REPORT = Path(__file__).resolve().parent / "report"
REFERENCE_GPU = "H200"  # the GPU the per-token costs were measured on (paper_cost_backbones.csv)
RUN_OVERHEAD_S = 60.0  # ours: loading weights, encoding the data, checkpoints, per run
EXPERIMENT = "+experiment=paper"


@dataclass(frozen=True)
class Planned:
    table: str
    model: str
    directory: Path
    status: str
    seconds: float | None  # estimated GPU time; None: no cost figure for this backbone or dataset


def requested(argv: list[str]) -> bool:
    return EXPERIMENT in argv


def _split_argv(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(paper.* settings, overrides of every run, Hydra's own flags and overrides: passed on to the sweeps)."""
    paper, runs, hydra = [], [], []
    for arg in argv:
        if arg == EXPERIMENT or arg.startswith("paper."):
            paper.append(arg)
        elif arg in ("-m", "--multirun"):
            continue  # each table's sweep gets its own -m
        elif arg.startswith(("-", "hydra/", "hydra.")):
            hydra.append(arg)
        else:
            runs.append(arg)
    return paper, runs, hydra


def _settings(conf_dir: Path, paper_args: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
        return compose("config", overrides=paper_args).paper


def models_per_table(paper: DictConfig, grids: dict[str, dict]) -> dict[str, list[str]]:
    """Each table's backbones: the paper's (``paper.backbones``), or ``paper.models`` for every table. Tables
    with the same grid but for the model (Table 2's BERT and RoBERTa halves) run a listed backbone once: in
    the table whose paper backbones include it, else in the first of them."""
    tables = list(paper.tables)
    if paper.models is None:
        return {t: [str(m) for m in paper.backbones[t]] for t in tables}

    def owner(model: str, twins: list[str]) -> str:
        return next((t for t in twins if model in paper.backbones.get(t, [])), twins[0])

    shape = {t: {k: v for k, v in grids[t].items() if k != "model"} for t in tables}
    twins = {t: [u for u in tables if shape[u] == shape[t]] for t in tables}
    return {t: [str(m) for m in paper.models if owner(str(m), twins[t]) == t] for t in tables}


def table_grid(conf_dir: Path, table: str) -> dict:
    path = conf_dir / "experiment" / f"{table}.yaml"
    if not path.is_file():
        raise UserError(f"paper.tables: no experiment {table!r} (conf/experiment/{table}.yaml)")
    return dict(OmegaConf.to_container(OmegaConf.load(path).hydra.sweeper.params))


def sweep_args(table: str, models: list[str], seeds: list, runs: list[str]) -> list[str]:
    """One table's `ptv2-train -m` overrides: the experiment, its backbones and seeds, the user's overrides."""
    return [f"+experiment={table}", f"model={','.join(models)}", f"seed={','.join(map(str, seeds))}", *runs]


def table_jobs(grid: dict, args: list[str]) -> list[list[str]]:
    """Each job's override list, as the basic sweeper builds them (grid first, command line after)."""
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in grid.items()] + args)
    return BasicSweeper.split_arguments(overrides, None)[0]


class Composer:
    """Configs of many jobs, composed once per set of config-group choices (see the module docstring)."""

    # Hydra's logging configs are not part of the app's config: the smallest ones compose fastest.
    QUIET = ("hydra/job_logging=none", "hydra/hydra_logging=none")

    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir
        self._parser = OverridesParser.create()
        self._parsed: dict[str, Override] = {}  # the same override strings recur in every job
        self._composed: dict[tuple, DictConfig] = {}

    def _parse(self, text: str) -> Override:
        if text not in self._parsed:
            self._parsed[text] = self._parser.parse_override(text)
        return self._parsed[text]

    def __call__(self, job: list[str]) -> DictConfig:
        """The job's config. It is shared with the jobs of the same choices and keys: read it before the next call."""
        try:
            return self._compose(job)
        except HydraException as error:  # a bad override: one line, as for any other run
            raise UserError(f"paper: {' '.join(job)}: {str(error).strip().splitlines()[0]}") from None

    def _compose(self, job: list[str]) -> DictConfig:
        parsed = [self._parse(o) for o in job if not o.startswith(("hydra/", "hydra."))]
        groups = [o for o in parsed if (self.conf_dir / o.key_or_group).is_dir()]
        plain = [o for o in parsed if o not in groups]
        # Jobs with the same choices and the same plain keys overwrite all of each other's values, so one
        # config per such set serves them in turn (a deep copy per job costs as much as a fifth of a compose).
        key = (tuple(o.input_line for o in groups), tuple(o.key_or_group for o in plain))
        if key not in self._composed:
            with initialize_config_dir(config_dir=str(self.conf_dir), version_base=None):
                self._composed[key] = compose("config", overrides=[*self.QUIET, *key[0]])
        cfg = self._composed[key]
        if any(o.is_add() or o.is_delete() for o in plain):  # +key / ~key change the keys: not reusable
            cfg = copy.deepcopy(cfg)
        ConfigLoaderImpl._apply_overrides_to_config(plain, cfg)
        return cfg


@functools.cache
def _costs() -> tuple[dict[str, dict], dict[tuple[str, str], int]]:
    with (REPORT / "paper_cost_backbones.csv").open() as f:
        backbones = {row["model"]: row for row in csv.DictReader(f)}
    with (REPORT / "paper_cost_datasets.csv").open() as f:
        tokens = {(row["task"], row["split"]): int(row["tokens"]) for row in csv.DictReader(f)}
    return backbones, tokens


def estimate_seconds(cfg: DictConfig) -> float | None:
    """GPU seconds of one run on the reference GPU: every epoch trains on the train split's tokens and
    evaluates each eval split's, at the backbone's measured tokens/s (fine-tuning at its own rate), plus a
    fixed overhead. Prompt length and batch size are not modelled (measured at P=16, batch 32)."""
    backbones, tokens = _costs()
    rates, task = backbones.get(cfg.model.name), cfg.task.name
    splits = ["train", *cfg.task.eval_splits]
    if rates is None or any((task, s) not in tokens for s in splits):
        return None
    train_rate = float(rates["ft_tokens_per_s" if cfg.method.name == "ft" else "train_tokens_per_s"])
    per_epoch = tokens[task, "train"] / train_rate + sum(tokens[task, s] for s in splits[1:]) / float(rates["eval_tokens_per_s"])
    return RUN_OVERHEAD_S + int(cfg.train.epochs) * per_epoch


def plan(conf_dir: Path, paper: DictConfig, runs: list[str]) -> tuple[list[Planned], bool]:
    """Every planned run, and whether results.dry_run=true is set for them."""
    grids = {t: table_grid(conf_dir, t) for t in paper.tables}
    compose_job, planned, dry_run = Composer(conf_dir), [], False
    for table, models in models_per_table(paper, grids).items():
        if not models:
            continue
        for job in table_jobs(grids[table], sweep_args(table, models, list(paper.seeds), runs)):
            cfg = compose_job(job)
            directory, status = run_status(cfg)
            planned.append(Planned(table, cfg.model.name, directory, status, estimate_seconds(cfg)))
            dry_run = bool(cfg.results.dry_run)
    return planned, dry_run


def _summary(planned: list[Planned], with_done: bool = True) -> str:
    hours = sum(p.seconds or 0.0 for p in planned) / 3600
    shown = f"{hours:.1f}" if hours < 10 else f"{hours:,.0f}"
    text = f"{len(planned):,} run{'' if len(planned) == 1 else 's'}"
    if with_done:
        text += f" ({sum(p.status == 'done' for p in planned):,} done)"
    text += f", about {shown} GPU-hours on an {REFERENCE_GPU}"
    unknown = sorted({p.model for p in planned if p.seconds is None})
    if unknown:
        text += f" ({sum(p.seconds is None for p in planned):,} runs of {', '.join(unknown)}: no cost figure, not counted)"
    return text


def report(planned: list[Planned], listing: bool) -> None:
    """Per table, then the whole paper; with ``listing`` every run's status and directory first."""
    if listing:
        for p in planned:
            print(f"[{p.status}] {p.directory}")
    tables = list(dict.fromkeys(p.table for p in planned))
    for table in tables:
        rows = [p for p in planned if p.table == table]
        models = ", ".join(dict.fromkeys(p.model for p in rows))
        print(f"  {table} ({models}): {_summary(rows)}")
    left = [p for p in planned if p.status != "done"]
    print(f"paper: {_summary(planned)}")
    print(f"left to run: {_summary(left, with_done=False)}")
    print("not in the plan: the MPT-2 rows of Table 3 (ptv2-train multitask=ner|qa|srl model=...)")


def sweeps(argv: list[str], conf_dir: Path) -> Iterator[list[str]]:
    """Print the plan; unless it is a dry run, yield each table's `ptv2-train -m` arguments that has runs left."""
    paper_args, runs, hydra = _split_argv(argv)
    paper = _settings(conf_dir, paper_args)
    planned, dry_run = plan(conf_dir, paper, runs)
    if not planned:
        raise UserError("paper: no runs planned (paper.tables or paper.models left nothing)")
    report(planned, listing=bool(paper.get("list")))
    if dry_run:
        return
    for table in dict.fromkeys(p.table for p in planned):
        rows = [p for p in planned if p.table == table]
        if any(p.status != "done" for p in rows):
            models = list(dict.fromkeys(p.model for p in rows))
            print(f"paper: {table}", flush=True)
            yield ["-m", *hydra, *sweep_args(table, models, list(paper.seeds), runs)]
