"""Your own data through `ptv2-train`: task=text_classification and task=token_classification on small
files written here, absolute task.path for the built-in tasks, and reader errors as `file:line` lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURE_DATA, run_cli

from ptv2.errors import UserError
from ptv2.formats.conll import read_columns
from ptv2.tasks.generic import split_off

POSITIVE = ["a warm, funny film", "great acting", "I loved it", "wonderful and moving", "a joy", "superb", "so good"]
NEGATIVE = ["dull, slow and long", "awful", "a mess", "boring plot", "weak"]


def _train(tmp_path: Path, *overrides: str):
    return run_cli(
        f"results.root={tmp_path / 'results'}", "train.epochs=1", "train.progress=false", *overrides
    )


def _finished(result) -> tuple[dict, Path]:
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1].removeprefix("metrics: "))
    metrics = json.loads(path.read_text())
    assert metrics["status"] == "done"
    return metrics, path.parent


def _csv(path: Path, header: str, rows: list[tuple[str, str]]) -> None:
    lines = [header] + [f'"{text}",{label}' for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # with the BOM Excel writes


def test_csv_with_text_labels_and_bom(tmp_path):
    _csv(tmp_path / "train.csv", "sentence,polarity", [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE])
    _csv(tmp_path / "dev.csv", "sentence,polarity", [("great fun", "pos"), ("awful, boring", "neg"), ("a joy", "pos")])
    metrics, run = _finished(_train(
        tmp_path, "task=text_classification", f"task.path={tmp_path}", "task.text_fields=[sentence]",
        "task.label_field=polarity", "task.name=polarity",
    ))
    assert metrics["task"] == "polarity" and "/runs/polarity/tiny-bert/" in str(run)
    assert metrics["primary_metric"] == "accuracy" and {"accuracy", "macro_f1"} <= metrics["best"]["dev"].keys()
    # labels sorted from train: [neg, pos]; train's majority (pos) is right on 2 of the 3 dev rows
    assert metrics["majority_baseline"]["dev"]["accuracy"] == pytest.approx(200 / 3)
    predictions = json.loads((run / "predictions.json").read_text())
    assert len(predictions) == 3 and set(predictions.values()) <= {"neg", "pos"}
    # tiny-bert prefix + a 2-label head + the pooler the cls head reads (head_pool=pooler: 32*32+32, stored)
    assert metrics["params"]["stored"] == 4096 + 32 * 2 + 2 + 1056


def test_headerless_tsv_by_column_index_with_integer_labels(tmp_path):
    rows = [(1, t) for t in POSITIVE] + [(0, t) for t in NEGATIVE] + [(2, "it was fine"), (2, "average")]
    (tmp_path / "train.tsv").write_text("".join(f"{label}\t{text}\n" for label, text in rows))
    (tmp_path / "dev.tsv").write_text("0\tboring\n2\tfine\n1\tgreat\n\n")  # a trailing blank line is no row
    metrics, run = _finished(_train(
        tmp_path, "task=text_classification", f"task.path={tmp_path}", "task.files.train=train.tsv",
        "task.files.dev=dev.tsv", "task.header=false", "task.text_fields=[1]", "task.label_field=0",
        "task.labels=[negative,positive,neutral]",
    ))
    # integer labels index task.labels; majority of train is 1 (positive): right on 1 of 3
    assert metrics["majority_baseline"]["dev"]["accuracy"] == pytest.approx(100 / 3)
    assert set(json.loads((run / "predictions.json").read_text()).values()) <= {"negative", "positive", "neutral"}
    assert metrics["params"]["stored"] == 4096 + 32 * 3 + 3 + 1056  # 3 labels (+ the pooler, as above)


def test_jsonl_sentence_pairs(tmp_path):
    pairs = [("a man sleeps", "a person rests", "entail"), ("a dog runs", "a cat sleeps", "contradict")] * 4
    pairs.append(("a boy eats", "someone eats", "entail"))
    lines = [json.dumps({"premise": p, "hypothesis": h, "gold": g}) for p, h, g in pairs]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.jsonl").write_text("\n".join(lines[:3]) + "\n")
    metrics, _ = _finished(_train(
        tmp_path, "task=text_classification", f"task.path={tmp_path}", "task.files.train=train.jsonl",
        "task.files.dev=dev.jsonl", "task.text_fields=[premise,hypothesis]", "task.label_field=gold",
    ))
    assert metrics["best"]["dev"].keys() >= {"accuracy", "macro_f1"}
    assert metrics["majority_baseline"]["dev"]["accuracy"] == pytest.approx(200 / 3)  # train's majority: entail


def test_dev_fraction_splits_one_train_file_deterministically(tmp_path):
    _csv(tmp_path / "all.csv", "text,label", [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE])
    args = ["task=text_classification", f"task.path={tmp_path}", "task.files.train=all.csv", "task.dev_fraction=0.25"]
    first = _train(tmp_path / "a", *args)
    metrics, run = _finished(first)
    assert "dev = 3 of the 12 examples" in first.stdout
    again = _finished(_train(tmp_path / "b", *args))[1]
    assert json.loads((run / "predictions.json").read_text()).keys() == json.loads((again / "predictions.json").read_text()).keys()
    split = split_off(list(range(12)), 0.25, 0)
    assert sorted(split["dev"] + split["train"]) == list(range(12)) and split == split_off(list(range(12)), 0.25, 0)
    assert split["dev"] != split_off(list(range(12)), 0.25, 1)["dev"]


WNUT_TRAIN = (
    "-DOCSTART-\tO\n\n"
    "Apple\tB-corporation\nlaunched\tO\nthe\tO\niPhone\tB-product\n\t\n"  # a tab-only separator line
    "@paul\tB-person\nloves\tO\nNew\tB-location\nYork\tI-location\n\n"
    "Google\tB-corporation\nhired\tO\nMary\tB-person\nSmith\tI-person\n"
)
WNUT_DEV = "Mary\tB-person\nuses\tO\nGoogle\tB-corporation\n \nNew\tB-location\nYork\tI-location\n"


def test_conll_columns_with_their_own_tag_set(tmp_path):
    (tmp_path / "train.conll").write_text(WNUT_TRAIN)
    (tmp_path / "dev.conll").write_text(WNUT_DEV)
    metrics, run = _finished(_train(tmp_path, "task=token_classification", f"task.path={tmp_path}", "train.lr=5e-2"))
    assert metrics["primary_metric"] == "f1" and {"f1", "precision", "recall"} <= metrics["best"]["dev"].keys()
    # the tags train has: O, B-corporation, B-location, I-location, B-person, I-person, B-product: a 7-way head
    assert metrics["params"]["stored"] == 4096 + 32 * 7 + 7
    predictions = json.loads((run / "predictions.json").read_text())
    assert [len(tags) for tags in predictions.values()] == [3, 2]  # the whitespace-only line separated two sentences


def test_conll_columns_chosen_and_schemes_read(tmp_path):
    path = tmp_path / "four.txt"
    path.write_text("x\tNNP\tU-PER\tAlice\ny\tVB\tO\tsees\nz\tNNP\tB-LOC\tNew\nw\tNNP\tL-LOC\tYork\n")
    (record,) = read_columns(path, token_column=3, tag_column=2)
    assert record == {"tokens": ["Alice", "sees", "New", "York"], "tags": ["B-PER", "O", "B-LOC", "I-LOC"]}
    path.write_text("Alice B-PER\nsees O\nBob\n")
    with pytest.raises(UserError, match=rf"^{path}:3: 1 column\(s\)"):
        read_columns(path)
    path.write_text("Alice B-PER\nsees X-Y-\n")
    with pytest.raises(UserError, match=rf"^{path}:2: malformed tag"):
        read_columns(path)


@pytest.mark.parametrize(
    ("train", "dev", "message"),
    [
        ("text,label\ngood,pos\nbad\n", "text,label\nok,pos\n", "train.csv:3: 1 column(s), the header has 2"),
        ("text,label\ngood,pos\nbad,neg\n", "text,label\nok,pos\nhmm,maybe\n",
         "dev.csv:3: label 'maybe' is not among the train split's labels (neg, pos)"),
        ("text,stars\ngood,5\n", "text,stars\nok,4\n", "train.csv:2: no label field 'label' (fields: text, stars)"),
    ],
)
def test_reader_errors_name_file_and_line_exit_2(tmp_path, train, dev, message):
    (tmp_path / "train.csv").write_text(train)
    (tmp_path / "dev.csv").write_text(dev)
    result = _train(tmp_path, "task=text_classification", f"task.path={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{tmp_path}/{message}" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_json_token_file_error_names_its_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["b", "c"], "tags": ["O"]}\n')
    (tmp_path / "dev.jsonl").write_text('{"tokens": ["a"], "tags": ["O"]}\n')
    result = _train(
        tmp_path, "task=token_classification", f"task.path={tmp_path}", "task.files.train=train.jsonl",
        "task.files.dev=dev.jsonl",
    )
    assert result.returncode == 2 and f"{tmp_path}/train.jsonl:2: 2 tokens but 1 tags" in result.stderr


def test_builtin_task_reads_an_absolute_task_path_and_file_names(tmp_path):
    (tmp_path / "mine").mkdir()
    for name in ("train", "dev"):
        (tmp_path / "mine" / f"my_{name}.tsv").write_bytes((FIXTURE_DATA / "glue" / "SST-2" / f"{name}.tsv").read_bytes())
    metrics, _ = _finished(_train(
        tmp_path, "task=sst2", "data.root=/nonexistent", f"task.path={tmp_path / 'mine'}",
        "task.files.train=my_train.tsv", "task.files.dev=my_dev.tsv",
    ))
    assert metrics["task"] == "sst2"
    missing = _train(tmp_path, "task=rte", f"task.path={tmp_path / 'none'}")
    assert missing.returncode == 2 and "task.path is absolute" in missing.stderr


def test_sst2_file_with_text_labels_points_to_text_classification_in_one_line(tmp_path):
    from ptv2.formats.glue import read_sst2

    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nbad film\tnegative\n")
    with pytest.raises(UserError, match=rf"^{path}:3: label 'negative' is not one of the integers 0..1 \(text labels: task=text_classification"):
        read_sst2(path)
    text_file = tmp_path / "polarity.tsv"
    text_file.write_text("sentence\tlabel\ngood film\tpositive\nbad film\tnegative\n")
    metrics, _ = _finished(_train(tmp_path, "task=text_classification", f"task.path={tmp_path}", "task.files.train=polarity.tsv",
                                  "task.files.dev=polarity.tsv", "task.text_fields=[sentence]"))
    assert "accuracy" in metrics["best"]["dev"]  # the same file, read by the generic task with its names
