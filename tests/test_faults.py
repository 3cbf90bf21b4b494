"""Bad files, a broken environment, failing sweep jobs, a diverging loss and bad arguments to the other
commands: one line (exit 2, or 1 for a sweep with a failed job), nothing lost, or a correct result."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURE_DATA, run_cli

from ptv2 import divergence, predict, status
from ptv2.errors import UserError
from ptv2.formats.conll import read_conll2003, read_ontonotes
from ptv2.formats.srl import read_conll05
from ptv2.formats.superglue import read_superglue
from ptv2.report import tables

REPO = Path(__file__).resolve().parent.parent
TINY = ["model=tiny-bert", "train.epochs=1", "train.progress=false"]


def _one_error_line(result, code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line


def _copy(tmp_path: Path, sub: str) -> Path:
    shutil.copytree(FIXTURE_DATA / sub, tmp_path / "data" / sub)
    return tmp_path / "data" / sub


# -- readers ----------------------------------------------------------------------------------------------
def _rewrite_jsonl(path: Path, edit) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(edit(i, r)) + "\n" for i, r in enumerate(rows)))


def test_boolean_labels_are_read_by_meaning_never_by_truthiness(tmp_path):
    folder = _copy(tmp_path, "superglue/BoolQ")
    expected = read_superglue("boolq", folder / "val.jsonl")
    _rewrite_jsonl(folder / "val.jsonl", lambda i, r: r | {"label": str(r["label"])})  # "False" / "True"
    assert read_superglue("boolq", folder / "val.jsonl") == expected  # bool("False") would make every label 1
    _rewrite_jsonl(folder / "val.jsonl", lambda i, r: r | {"label": "yes" if i == 1 else r["label"]})
    line = _one_error_line(run_cli("task=boolq", *TINY, f"data.root={tmp_path / 'data'}", f"results.root={tmp_path}"))
    assert line.endswith(f"{folder / 'val.jsonl'}:2: label 'yes' is not a boolean: write true or false")


@pytest.mark.parametrize(("label", "message"), [("positive", "label 'positive' is not one of the integers 0..1"),
                                                 ("2", "label '2' is not one of the integers 0..1")])
def test_sst2_labels_must_be_the_task_integers(tmp_path, label, message):
    folder = _copy(tmp_path, "glue/SST-2")
    lines = (folder / "train.tsv").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t" + label
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    line = _one_error_line(run_cli("task=sst2", *TINY, f"data.root={tmp_path / 'data'}", f"results.root={tmp_path}"))
    assert f"{folder / 'train.tsv'}:3: {message} (text labels: task=text_classification" in line


def test_superglue_name_labels_outside_the_task_and_missing_fields_cite_file_and_line(tmp_path):
    folder = _copy(tmp_path, "superglue/CB")
    _rewrite_jsonl(folder / "train.jsonl", lambda i, r: r | {"label": "maybe"} if i == 2 else r)
    with pytest.raises(UserError, match=r"train.jsonl:3: label 'maybe' is not one of cb's labels"):
        read_superglue("cb", folder / "train.jsonl")
    _rewrite_jsonl(folder / "train.jsonl", lambda i, r: {k: v for k, v in r.items() if k != "premise"})
    with pytest.raises(UserError, match=r"train.jsonl:1: missing field 'premise' for cb"):
        read_superglue("cb", folder / "train.jsonl")


def test_json_readers_name_the_line_of_the_item_that_does_not_fit(tmp_path):
    from ptv2.formats.conll import read_json_records
    from ptv2.formats.squad import read_squad

    squad = tmp_path / "dev.json"
    squad.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [
        {"id": "q1", "question": "?", "answers": [], "is_impossible": "False"}]}]}]}))
    with pytest.raises(UserError, match=r"dev.json: article 0 \('T'\): question 'q1': is_impossible='False'"):
        read_squad(squad)
    spans = tmp_path / "train.json"
    spans.write_text(json.dumps([{"tokens": ["a", "b"], "entities": [{"start": 0, "type": "Loc"}]}]))
    with pytest.raises(UserError, match=r"train.json:1: missing field 'end'"):
        read_json_records(spans)


def test_column_errors_cite_the_offending_line(tmp_path):
    conll = tmp_path / "eng.train"
    conll.write_text("EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP\ncall NN I-NP O\n")
    with pytest.raises(UserError, match=r"eng.train:3: 3 columns, not 4 .*is a column missing"):
        read_conll2003(conll)
    conll.write_text("EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP X-MISC\n")
    with pytest.raises(UserError, match=r"eng.train:3: malformed tag 'X-MISC'"):
        read_conll2003(conll)
    conll.write_text("EU NNP I-NP\nrejects VBZ I-VP\n\nGerman JJ I-NP\n")  # the NER column is missing altogether
    with pytest.raises(UserError, match="holds chunk tags .*: the NER column is missing"):
        read_conll2003(conll)
    two = tmp_path / "dev.txt"
    two.write_text("John B-PER\nlives O\nin\n")
    with pytest.raises(UserError, match=r"dev.txt:3: 1 columns, not 2"):
        read_ontonotes(two)
    props = tmp_path / "dev.props"
    props.write_text("The - (A0*\ncat - *)\nsat sit (V*)\n.\n")
    with pytest.raises(UserError, match=r"dev.props:4: 1 columns, not 3"):
        read_conll05(props)


def test_an_unknown_tag_hint_names_only_config_files_that_exist(tmp_path):
    folder = _copy(tmp_path, "conll2003")
    text = (folder / "eng.train").read_text().replace(" I-PER", " I-FOO", 1)
    (folder / "eng.train").write_text(text)
    args = ["task=conll03", *TINY, f"data.root={tmp_path / 'data'}", f"results.root={tmp_path}"]
    assert "add it to conf/task/conll03.yaml labels" in _one_error_line(run_cli(*args))
    line = _one_error_line(run_cli(*args, "task.name=mine"))
    assert "add it to task.labels=[...]" in line and "conf/task/mine.yaml" not in line


# -- environment faults -------------------------------------------------------------------------------------
def _fail_on_replace(monkeypatch, error: int, text: str) -> None:
    def refuse(src, dst):
        raise OSError(error, text, str(dst))

    monkeypatch.setattr(os, "replace", refuse)


def test_a_read_only_results_folder_is_one_line_and_a_done_run_stays_intact(tmp_path, monkeypatch):
    args = ["task=rte", *TINY, f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}"]
    done = Path(run_cli(*args).stdout.strip().splitlines()[-1].removeprefix("metrics: "))
    before = done.read_bytes()
    with monkeypatch.context() as patch:
        _fail_on_replace(patch, errno.EROFS, "Read-only file system")
        line = _one_error_line(run_cli(*args, "results.force=true"))
        assert line.startswith("ptv2-train: error: Read-only file system: ") and "writable" in line
        assert "already done" in run_cli(*args).stdout  # skipping a finished run needs no write
    assert done.read_bytes() == before


def test_a_full_disk_while_checkpointing_is_one_line(tmp_path, monkeypatch):
    from ptv2 import checkpoint

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "write_atomic", full)
    line = _one_error_line(run_cli("task=rte", *TINY, f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}"))
    assert line.startswith("ptv2-train: error: No space left on device: ") and "last.pt" in line
    (metrics,) = tmp_path.glob("runs/*/*/*/*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "failed"


# -- every launcher: exit 1 when a job failed -----------------------------------------------------------------
def test_basic_launcher_sweep_with_a_failed_job_exits_1(tmp_path):
    result = run_cli("-m", "task=rte", *TINY, f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}",
                     "depth_range.layers=1-2,1-99")
    assert result.returncode == 1
    assert "ptv2-train: 1 job(s) failed: " in result.stderr and "sweep: 2 job(s): 1 done, 1 failed" in result.stdout


def test_submitit_local_sweep_with_a_failed_job_exits_1(tmp_path):
    args = ["-m", "hydra/launcher=local", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "task=rte", *TINY, f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "depth_range.layers=1-2,1-99"]
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ptv2.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "sweep: 2 job(s): 1 done, 1 failed" in proc.stdout
    statuses = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("runs/*/*/*/*/metrics.json"))
    assert statuses == ["done", "failed"]


# -- a loss that explodes while staying finite ------------------------------------------------------------
def test_finite_divergence_stops_the_run_like_nan(tmp_path):
    result = run_cli("task=rte", "model=tiny-bert", "train.epochs=3", "train.batch_size=4", "train.lr=1e10",
                     "train.progress=false", f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}")
    line = _one_error_line(result)
    assert "loss diverged at epoch 1 step" in line and "lower train.lr=1e+10" in line
    (metrics,) = tmp_path.glob("runs/*/*/*/*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "failed"


def _watch(losses: list[float]) -> None:
    watch = divergence.LossWatch(lr=0.01)
    for step, loss in enumerate(losses, 1):
        watch.check(loss, 1, step)


def test_the_divergence_rule_spares_healthy_runs():
    _watch([0.69] + [0.69, 7.0, 0.5] * 30)  # a 10x spike every third step
    _watch([12.5 + (i % 5) for i in range(100)])  # span losses, large from the start
    _watch([1e-4] + [0.05, 0.3, 0.01] * 30)  # a resumed run: tiny first loss, then ordinary noise
    _watch([0.69] + [60.0] * 100)  # bad (worse than chance) but bounded
    with pytest.raises(UserError, match="loss diverged at epoch 1 step 2"):
        _watch([0.69, 1e9])
    with pytest.raises(UserError, match="loss became nan"):
        _watch([0.69, float("nan")])


# -- ptv2-predict, ptv2-status, make tables --------------------------------------------------------------
def _predict(*args: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        predict.main(list(args))
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_predict_bad_inputs_are_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert "missing " in _predict(f"run={run}", capsys=capsys)
    assert "unknown argument 'splt=dev'" in _predict(f"run={run}", "splt=dev", capsys=capsys)
    (run / "config.yaml").write_text("model: [unclosed\n")
    (run / "prompt_head.safetensors").write_bytes(b"not safetensors")
    assert "config.yaml is not a readable config" in _predict(f"run={run}", capsys=capsys)
    (run / "config.yaml").write_text("just: a yaml file\n")
    assert "is not a ptv2 run config" in _predict(f"run={run}", capsys=capsys)


def test_predict_corrupt_weights_and_missing_device_are_one_line(tmp_path, capsys):
    args = ["task=rte", *TINY, f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}"]
    run = Path(run_cli(*args).stdout.strip().splitlines()[-1].removeprefix("metrics: ")).parent
    (run / "prompt_head.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{garbage")
    assert _predict(f"run={run}", "split=dev", capsys=capsys).startswith("ptv2-predict: error: ")
    if not __import__("torch").cuda.is_available():
        assert "device=cuda needs a CUDA GPU" in _predict(f"run={run}", "device=cuda", capsys=capsys)


def test_status_and_tables_bad_inputs_are_one_line(tmp_path, capsys):
    assert status.main(["--results", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as exit_:
        status.main(["--bogus"])
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    folder = tmp_path / "runs" / "rte" / "tiny-bert" / "pt2" / "s11-x"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("[1, 2]")
    assert status.main(["--results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("unreadable")
    assert tables.main(["--results", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert tables.main(["--results", str(tmp_path), "--out", str(tmp_path / "file" / "tables")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("tables: error: cannot write")
