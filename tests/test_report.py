"""Tables and figures from synthetic metrics.json files, and the transcribed paper numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from ptv2.report import figures, tables
from ptv2.results import SCHEMA_VERSION


def write_run(root: Path, task: str, model: str, method: str, seed: int, best: dict, *,
              status: str = "done", head: str = "cls", prompt_length: int | None = 16, reparam: str | None = "mlp",
              depth_range: str = "1-24", num_layers: int = 24, lr: float = 0.005, report_split: str = "dev",
              primary_metric: str = "accuracy", family: str = "superglue", majority: dict | None = None,
              train_s: float = 100.0, trainable_pct: float = 0.3, max_train_samples: int | None = None,
              train_sha: str = "a" * 64, schema_version: int = SCHEMA_VERSION, dev_curve: list[float] | None = None,
              epochs: int = 10) -> Path:
    key = f"{head}-{prompt_length}-{reparam}-{depth_range}-{lr}-{seed}-{max_train_samples}-{train_sha[:4]}-{epochs}"
    run_dir = root / "runs" / task / model / method / key
    run_dir.mkdir(parents=True)
    identity = {  # as results.run_identity writes it: the config without seed and sample limits, data by content
        "key": key, "config": {"prompt_length": prompt_length, "reparam.type": reparam, "train.lr": lr,
                               "depth_range.layers": depth_range, "head": head, "train.epochs": epochs},
        "samples": {"max_train_samples": max_train_samples, "max_eval_samples": None},
        "data": {"root": "/data", "splits": {"train": {"file": "t/train.jsonl", "bytes": 10, "sha256": train_sha}}},
        "weights": {"source": "/models/x", "files": {"config.json": {"bytes": 1, "sha256": "c" * 64}}},
    }
    metrics = {
        "schema_version": schema_version, "identity": identity, "status": status, "error": None if status == "done" else "boom", "task": task,
        "family": family, "model": model, "method": method, "head": head,
        "prompt_length": None if method == "ft" else prompt_length, "reparam": None if method == "ft" else reparam,
        "depth_range": depth_range if method in ("pt2", "mpt2") else "", "num_layers": num_layers, "seed": seed,
        "experiment": None, "stage1_run": None, "primary_metric": primary_metric, "report_split": report_split,
        "splits": list(best), "best_epoch": 3, "best": best, "majority_baseline": majority,
        "epochs": [{"epoch": i + 1, "metrics": {"dev": {primary_metric: v}}} for i, v in enumerate(dev_curve or [])],
        "params": {"backbone": 1000, "trainable": 3, "stored": 1, "trainable_pct": trainable_pct, "stored_pct": 0.1},
        "timing": {"wall_s": train_s + 10, "train_s": train_s}, "hparams": {"lr": lr, "epochs": 10},
        "overrides": [], "versions": {}, "created": "2026-01-01T00:00:00Z",
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def acc(v: float) -> dict:
    return {"dev": {"accuracy": v}}


def md_row(text: str, group: str, backbone: str) -> list[str]:
    """Cells of `backbone`'s row in the Markdown sub-table headed `## group`."""
    section = text.split(f"## {group} (")[1].split("\n## ")[0]
    line = next(x for x in section.splitlines() if x.startswith(f"| {backbone} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for seed, v in zip((1, 2, 3), (70.0, 72.0, 74.0), strict=True):
        write_run(root, "rte", "bert-large", "pt2", seed, acc(v))
    # a worse config (lr) for the same cell: must not be chosen
    for seed, v in zip((1, 2), (60.0, 62.0), strict=True):
        write_run(root, "rte", "bert-large", "pt2", seed, acc(v), lr=0.01)
    write_run(root, "rte", "bert-large", "ft", 1, acc(71.0))
    write_run(root, "rte", "bert-large", "pt", 4, acc(99.0), status="failed")
    # a depth-ablation run scores higher but is not a main-table config
    write_run(root, "rte", "bert-large", "pt2", 1, acc(95.0), depth_range="21-24")
    (root / "runs" / "broken").mkdir(parents=True)
    (root / "runs" / "broken" / "metrics.json").write_text("{not json")
    return root


def test_paper_numbers_spot_checks() -> None:
    p = tables.load_paper()
    assert len(p) == 96 + 120 + 8
    assert not p.duplicated(["table", "backbone", "task", "split", "metric", "method", "head"]).any()

    def val(table: int, backbone: str, task: str, split: str, metric: str, method: str, head: str = "cls") -> float:
        sel = p[(p.table == table) & (p.backbone == backbone) & (p.task == task) & (p.split == split)
                & (p.metric == metric) & (p.method == method) & (p["head"] == head)]
        assert len(sel) == 1
        return float(sel["value"].iloc[0])

    # "BERTlarge 335M 77.7 67.2 75.8 94.6 80.4 94.6 69.0 55.0 73.0 70.5 59.6 70.6"
    assert val(2, "bert-large", "boolq", "dev", "accuracy", "ft") == 77.7
    assert val(2, "bert-large", "multirc", "dev", "f1a", "pt2") == 70.6
    # "RoBERTalarge 355M 86.9 62.3 84.8 98.2 71.4 100 94.0 63.0 93.0 85.7 59.9 82.5"
    assert val(2, "roberta-large", "cb", "dev", "accuracy", "pt2") == 100.0
    # "GLMxxlarge 10B 94.4 87.8 92.5 93.1 89.9 93.1 75.7 71.8 74.0 95.2 94.2 93.3"
    assert val(2, "glm-xxlarge", "record", "dev", "f1", "pt") == 87.8
    assert val(2, "glm-xxlarge", "wsc", "dev", "accuracy", "pt2") == 93.3
    # "DeBERTaxlarge 750M 93.1 90.2 93.1 93.1 90.4 85.1 90.4 90.5 89.1 82.4 86.5 90.1"
    assert val(3, "deberta-xlarge", "ontonotes", "test", "f1", "mpt2") == 90.5
    # "BERTlarge 335M 84.2 91.1 1.0 8.5 77.8 86.0 82.3 89.6 78.7 81.9 50.2 50.2 69.7 73.5 72.7 75.9"
    assert val(3, "bert-large", "squad", "dev", "f1", "pt") == 8.5
    assert val(3, "bert-large", "squad_v2", "dev", "exact_match", "pt2") == 69.7
    # "RoBERTalarge 355M 88.9 94.6 1.2 12.0 88.5 94.4 88.0 94.1 86.5 89.4 50.2 50.2 82.1 85.5 83.4 86.7"
    assert val(3, "roberta-large", "squad_v2", "dev", "f1", "mpt2") == 86.7
    # "BERTlarge 335M 84.9 64.5. 83.2 85.1 88.5 76.0 86.3 88.5 82.7 70.0 80.7 83.1" (CoNLL12, WSJ, Brown)
    assert val(3, "bert-large", "conll12", "test", "f1", "pt") == 64.5
    assert val(3, "bert-large", "conll05", "test_brown", "f1", "ft") == 82.7
    # "DeBERTaxlarge 750M 86.5 74.1 85.7 87.1 91.2 82.3 90.6 91.2 86.9 77.7 86.3 87.0"
    assert val(3, "deberta-xlarge", "conll05", "test_wsj", "f1", "pt2") == 90.6
    # "CLS & linear head 96.3 88.4 84.8 96.4" / "Verbalizer & LM head 95.8 86.6 84.6 94.6"
    assert val(4, "roberta-large", "sst2", "dev", "accuracy", "pt2") == 96.3
    assert val(4, "roberta-large", "cb", "dev", "accuracy", "pt2", "verbalizer") == 94.6


def test_load_runs_skips_failed_and_broken(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tables.load_runs(results)
    assert "warning: skipping" in capsys.readouterr().err
    assert len(runs) == 3 + 2 + 1 + 1  # one (dev, accuracy) row per done run
    assert "pt" not in set(runs["method"])
    assert runs["partial_depth"].sum() == 1


def test_table2_cells_best_config_and_dash(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    summary, written = tables.write_tables(results, out)
    md = (out / "table2.md").read_text()
    # seeds 70, 72, 74 -> mean 72, sample std 2; the lr=0.01 config (mean 61) and the 21-24 run are not chosen
    assert md_row(md, "RTE", "bert-large") == [
        "71.0 (n=1); paper 70.4; Δ +0.6", "—; paper 53.5", "72.0 ± 2.0 (n=3); paper 78.3; Δ -6.3"]
    assert md_row(md, "BoolQ", "bert-large") == ["—; paper 77.7", "—; paper 67.2", "—; paper 75.8"]
    assert "best of 2 configs by mean dev accuracy: train.lr=0.005" in md
    csv = pd.read_csv(out / "table2.csv")
    assert list(csv.columns) == tables.TIDY_COLUMNS
    cell = csv[(csv.backbone == "bert-large") & (csv.task == "rte") & (csv.method == "pt2")].iloc[0]
    assert (cell.ours_mean, cell.ours_std, cell.n, cell.paper) == (72.0, 2.0, 3, 78.3)
    assert cell["diff"] == pytest.approx(-6.3)
    empty = csv[(csv.backbone == "glm-xlarge") & (csv.task == "wsc") & (csv.method == "ft")].iloc[0]
    assert empty.n == 0 and math.isnan(empty.ours_mean) and empty.paper == 95.2
    assert summary.splitlines()[0] == "all tables: 2/224 paper cells filled by ours; mean |ours − paper| = 3.45"
    tex = (out / "table2.tex").read_text()
    assert "\\toprule" in tex and "\\textbf{72.0$\\pm$2.0} (78.3)" in tex and "71.0 (70.4)" in tex
    assert {p.name for p in written} >= {"table3.md", "table4.tex", "real_minilm.csv", "summary.md"}


def test_table3_and_table4_layout(tmp_path: Path) -> None:
    root = tmp_path / "results"
    for seed, em, f1, bem in [(1, 80.0, 84.0, 81.0), (2, 82.0, 86.0, 83.0)]:
        write_run(root, "squad_v2", "deberta-xlarge", "pt2", seed,
                  {"dev": {"exact_match": em, "f1": f1, "best_exact_match": bem, "best_f1": f1 + 1}},
                  family="qa", primary_metric="f1")
    write_run(root, "conll05", "roberta-large", "mpt2", 1,
              {"dev": {"f1": 88.0}, "test_wsj": {"f1": 90.0}, "test_brown": {"f1": 85.0}},
              family="srl", primary_metric="f1", report_split="test_wsj")
    write_run(root, "cb", "roberta-large", "pt2", 1, acc(92.0), head="verbalizer")
    out = tmp_path / "tables"
    tables.write_tables(root, out)
    md3 = (out / "table3.md").read_text()
    assert md_row(md3, "SQuAD 2.0 EM", "deberta-xlarge")[2] == "81.0 ± 1.4 (n=2); paper 88.4; Δ -7.4"
    assert md_row(md3, "CoNLL05 Brown", "roberta-large")[3] == "85.0 (n=1); paper 85.7; Δ -0.7"
    assert "SQuAD 2.0 deberta-xlarge PT-2, dev-tuned threshold: EM 82.0 ± 1.4 (n=2), F1 86.0 ± 1.4 (n=2)." in md3
    md4 = (out / "table4.md").read_text()
    assert md_row(md4, "CB", "roberta-large") == ["—; paper 96.4", "92.0 (n=1); paper 94.6; Δ -2.6"]
    # a verbalizer run is not a Table 2 (linear head) cell
    assert md_row((out / "table2.md").read_text(), "CB", "roberta-large")[2] == "—; paper 100.0"


def test_real_minilm_rows(tmp_path: Path) -> None:
    root = tmp_path / "results"
    for seed, v in [(1, 70.0), (2, 72.0), (3, 74.0)]:
        write_run(root, "rte", "minilm", "pt2", seed, acc(v), majority=acc(52.7), num_layers=12,
                  depth_range="1-12", trainable_pct=0.5, train_s=30.0 * seed)
    write_run(root, "rte", "minilm", "ft", 1, acc(65.0), majority=acc(52.7), train_s=200.0)
    write_run(root, "conll03", "minilm", "pt2", 1, {"dev": {"f1": 90.0}, "test": {"f1": 86.0}},
              family="ner", primary_metric="f1", report_split="test", num_layers=12, depth_range="1-12")
    write_run(root, "quoref", "minilm", "ft", 1, {"dev": {"exact_match": 60.0, "f1": 65.0}},
              family="qa", primary_metric="f1")
    out = tmp_path / "tables"
    tables.write_tables(root, out)
    lines = (out / "real_minilm.md").read_text().splitlines()
    assert "| rte | dev | accuracy | 52.7 | 65.0 (n=1) | — | 72.0 ± 2.0 (n=3) | 0.500 | 200 | — | 60 |" in lines
    assert "| conll03 | dev | f1 | — | — | — | 90.0 (n=1) | 0.300 | — | — | 100 |" in lines
    assert "| conll03 | test | f1 | — | — | — | 86.0 (n=1) | 0.300 | — | — | 100 |" in lines
    assert "| quoref | dev | exact_match | — | 60.0 (n=1) | — | — | — | 100 | — | — |" in lines
    assert "| quoref | dev | f1 | — | 65.0 (n=1) | — | — | — | 100 | — | — |" in lines
    assert len(pd.read_csv(out / "real_minilm.csv")) == 5


def test_figures_depth_and_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    for seed in (1, 2):
        for k in (4, 8, 12):
            write_run(root, "rte", "bert-large", "pt2", seed, acc(60 + k + seed), depth_range=f"1-{k}", num_layers=24)
            write_run(root, "rte", "bert-large", "pt2", seed, acc(65 + k + seed), depth_range=f"{25 - k}-24",
                      num_layers=24)
        for length in (4, 16, 64):
            for reparam in ("embedding", "mlp"):
                write_run(root, "boolq", "roberta-large", "pt2", seed, acc(70 + length / 16 + seed),
                          prompt_length=length, reparam=reparam)
    out = tmp_path / "figures"
    assert figures.main(["--results", str(root), "--out", str(out)]) == 0
    pngs = {p.name: p.stat().st_size for p in out.glob("*.png")}
    assert set(pngs) == {"fig3_depth_rte_bert-large_pt2_cls.png", "fig4_length_boolq_roberta-large_pt2_cls.png"}
    assert all(size > 0 for size in pngs.values())
    assert "wrote" in capsys.readouterr().out


def test_figures_nothing_to_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "results", "rte", "bert-large", "pt2", 1, acc(70.0))
    assert figures.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    assert "run the prompt-depth sweep" in out and "run the prompt-length x reparam sweep" in out
    assert not list((tmp_path / "figs").glob("*.png"))


def test_plot_curves(tmp_path: Path) -> None:
    (tmp_path / "curves.csv").write_text("epoch,train_loss,lr,dev/accuracy\n1,0.7,0.005,60.0\n2,0.5,0.004,65.0\n")
    path = figures.plot_curves(tmp_path)
    assert path == tmp_path / "curves.png" and path.stat().st_size > 0


def test_real_evidence_doc_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """make tables' docs/real_evidence.md block: table, gaps, chosen configs with best epochs, convergence."""
    from ptv2.report import real_evidence

    root, longer = tmp_path / "runs", tmp_path / "longer"
    ner = {"family": "ner", "primary_metric": "f1", "report_split": "test", "num_layers": 6, "depth_range": "1-6"}

    def conll(where: Path, method: str, seed: int, lr: float, curve: list[float], test: float) -> None:
        write_run(where, "conll03", "minilm", method, seed, {"dev": {"f1": max(curve)}, "test": {"f1": test}},
                  lr=lr, dev_curve=curve, epochs=len(curve), **ner)

    for seed in (1, 2):
        conll(root, "ft", seed, 1e-4, [88.0, 90.0, 91.0], 87.0)
        conll(root, "pt2", seed, 1e-2, [80.0, 89.0, 88.0], 85.0)
    conll(root, "ft", 1, 3e-5, [80.0, 81.0, 82.0], 80.0)  # the worse FT config: not chosen
    conll(root, "pt", 1, 1e-2, [70.0, 80.0, 84.0], 79.0)
    conll(longer, "pt2", 1, 1e-2, [80.0, 89.0, 88.0, 89.5, 90.0], 86.0)  # the same config, 5 epochs
    doc = tmp_path / "real_evidence.md"
    doc.write_text(f"# Title\n\n{real_evidence.BEGIN}\nstale\n{real_evidence.END}\n\nhand-written\n")
    argv = ["--results", str(root), "--convergence", str(longer), "--doc", str(doc)]
    assert real_evidence.main(argv) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n") and text.endswith("\n\nhand-written\n") and "stale" not in text
    lines = text.splitlines()
    assert "| conll03 | dev | f1 | — | 91.0 ± 0.0 (n=2) | 84.0 (n=1) | 89.0 ± 0.0 (n=2) | 0.300 | 100 | 100 | 100 |" in lines
    assert "| conll03 | test | f1 | -2.0 | +6.0 |" in lines
    assert "| conll03 | FT | 2 | train.lr=0.0001 | 1, 2 | 3/3, 3/3 |" in lines
    assert "| conll03 | PT-2 | 1 | — | 1, 2 | 2/3, 2/3 |" in lines
    assert "| conll03 | PT-2 | 1 | 89.00 (3) | 90.00 (5) | +1.00 |" in lines
    assert "conll03 6/22" in text  # runs present against the experiment file's grid
    assert real_evidence.main(argv) == 0 and doc.read_text() == text  # idempotent
    doc.write_text("no markers\n")
    assert real_evidence.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks the generated block's markers" in err[0]
