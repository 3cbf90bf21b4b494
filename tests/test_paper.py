"""+experiment=paper: the whole paper planned from the per-table experiments; the dry run's counts and
GPU-hours; runs made through a per-table experiment count as done; a real (tiny) paper run."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import FIXTURE_DATA, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_ablations import GRIDS

from ptv2 import paper
from ptv2.cli import CONF_DIR
from ptv2.results import run_dir, run_status

SUMMARY = re.compile(rf"^paper: ([\d,]+) runs? \(([\d,]+) done\), about ([\d.,]+) GPU-hours on an {paper.REFERENCE_GPU}$", re.M)


def _summary(stdout: str) -> tuple[int, int, float]:
    runs, done, hours = SUMMARY.search(stdout).groups()
    return int(runs.replace(",", "")), int(done.replace(",", "")), float(hours.replace(",", ""))


def _paper_settings(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=["+experiment=paper", *overrides]).paper


def _weights_folder(tmp_path: Path) -> Path:
    """What the run key fingerprints of a weights folder (config + weight files); a dry run loads nothing."""
    folder = tmp_path / "roberta-large"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (folder / "model.safetensors").write_bytes(b"not loaded by a dry run")
    return folder


def test_dry_run_counts_a_per_table_run_as_done_and_estimates_gpu_hours(tmp_path):
    inputs = [f"data.root={FIXTURE_DATA}", f"model.path={_weights_folder(tmp_path)}", f"results.root={tmp_path}"]
    # a run "finished" through the per-table experiment: its own dry run names its directory
    table4 = ["+experiment=table4", "task=rte", "head=cls", "model=roberta-large", "seed=22"]
    listing = run_cli("-m", *table4, *inputs, "results.dry_run=true")
    (directory,) = re.findall(r"^\[to run\] (\S+)", listing.stdout, re.M)
    Path(directory).mkdir(parents=True)
    Path(directory, "metrics.json").write_text(json.dumps({"status": "done"}))

    result = run_cli("-m", "+experiment=paper", "paper.tables=[table4]", "paper.seeds=[11,22]", *inputs,
                     "results.dry_run=true")
    assert result.returncode == 0, result.stderr
    runs, done, hours = _summary(result.stdout)
    assert (runs, done) == (4 * 2 * 2, 1)  # table4: 4 tasks x 2 heads, roberta-large, 2 seeds
    # the same figure from each run's config composed in full, the slow way
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        configs = [
            compose("config", ["+experiment=table4", f"task={t}", f"head={h}", "model=roberta-large", f"seed={s}",
                               *inputs])
            for t in ("sst2", "rte", "boolq", "cb") for h in ("cls", "verbalizer") for s in (11, 22)
        ]
    assert hours == pytest.approx(sum(map(paper.estimate_seconds, configs)) / 3600, abs=0.05)
    assert str(run_dir(configs[0]).parent.parent.parent.parent) == f"{tmp_path}/table4"
    assert "left to run: 15 runs, about" in result.stdout
    assert not list(tmp_path.glob("table4/sst2/**/metrics.json"))  # a dry run trains nothing


def test_default_plan_is_every_table_for_its_paper_backbones_in_the_per_table_directories(tmp_path):
    runs = [f"results.root={tmp_path}", "train.epochs=3"]  # no data or weights here: keys unknown, folders known
    result = run_cli("-m", "+experiment=paper", *runs, "results.dry_run=true", "paper.list=true")
    assert result.returncode == 0, result.stderr
    settings = _paper_settings()
    backbones = settings.backbones
    expected = sum(GRIDS[t] * len(backbones[t]) * 3 for t in GRIDS)  # GRIDS: one backbone each
    count, done, hours = _summary(result.stdout)
    assert (count, done) == (expected, 0) and hours > 0
    assert re.search(r"^  table3_ner \(bert-large-uncased, roberta-large, deberta-xlarge\): 81 runs", result.stdout, re.M)
    assert "MPT-2 rows of Table 3" in result.stdout
    listed = re.findall(r"^\[to run(?:, \w+ absent)?\] (\S+)$", result.stdout, re.M)
    assert len(listed) == expected
    # a few runs per table composed the slow way, one Hydra compose each: the same run folders
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        offset = 0
        for table in settings.tables:
            grid = paper.table_grid(CONF_DIR, table)
            jobs = paper.table_jobs(grid, paper.sweep_args(table, list(backbones[table]), [11, 22, 33], runs))
            for index in (0, len(jobs) // 2, len(jobs) - 1):
                assert str(run_status(compose("config", jobs[index]))[0]) == listed[offset + index], (table, jobs[index])
            offset += len(jobs)
    assert offset == expected


def test_models_list_runs_table2_once_per_backbone():
    grids = {t: paper.table_grid(CONF_DIR, t) for t in ("table2_bert", "table2_roberta", "fig3_depth")}
    settings = _paper_settings("paper.tables=[table2_bert,table2_roberta,fig3_depth]", "paper.models=[roberta-large,minilm]")
    assert paper.models_per_table(settings, grids) == {
        "table2_bert": ["minilm"], "table2_roberta": ["roberta-large"], "fig3_depth": ["roberta-large", "minilm"],
    }


def test_estimate_is_tokens_over_measured_rate_per_epoch():
    cfg = OmegaConf.create({
        "model": {"name": "roberta-large"}, "method": {"name": "pt2"},
        "task": {"name": "cb", "eval_splits": ["dev"]}, "train": {"epochs": 2},
    })
    with (paper.REPORT / "paper_cost_backbones.csv").open() as f:
        rates = next(r for r in csv.DictReader(f) if r["model"] == "roberta-large")
    with (paper.REPORT / "paper_cost_datasets.csv").open() as f:
        tokens = {r["split"]: int(r["tokens"]) for r in csv.DictReader(f) if r["task"] == "cb"}
    per_epoch = tokens["train"] / float(rates["train_tokens_per_s"]) + tokens["dev"] / float(rates["eval_tokens_per_s"])
    assert paper.estimate_seconds(cfg) == pytest.approx(paper.RUN_OVERHEAD_S + 2 * per_epoch)
    cfg.method.name = "ft"  # fine-tuning trains at its own, slower rate
    assert paper.estimate_seconds(cfg) > paper.RUN_OVERHEAD_S + 2 * per_epoch
    cfg.model.name = "tiny-bert"
    assert paper.estimate_seconds(cfg) is None


def test_paper_runs_its_tables_sweeps_and_a_rerun_skips_them(tmp_path):
    args = [
        "-m", "+experiment=paper", "paper.tables=[table4]", "paper.models=[tiny-bert]", "paper.seeds=[11]",
        "task=rte", "head=cls", f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "train.epochs=1",
        "train.progress=false",
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    (metrics,) = tmp_path.glob("table4/rte/tiny-bert/pt2/*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "done"
    again = run_cli(*args)
    assert again.returncode == 0 and "paper: 1 run (1 done)" in again.stdout
    assert "paper: table4" not in again.stdout  # nothing left: no sweep launched


def test_a_bad_override_in_the_paper_is_one_line_exit_2(tmp_path):
    result = run_cli("-m", "+experiment=paper", "paper.tables=[table4]", "train.nope=3", f"results.root={tmp_path}",
                     "results.dry_run=true")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Could not override 'train.nope'" in lines[0], result.stderr
    unknown = run_cli("-m", "+experiment=paper", "paper.tables=[table9]", "results.dry_run=true")
    assert unknown.returncode == 2 and "paper.tables: no experiment 'table9'" in unknown.stderr
