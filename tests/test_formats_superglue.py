"""Readers of the original file formats: fixtures (always) and the real release files (when present)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from ptv2.errors import UserError
from ptv2.formats.glue import read_sst2
from ptv2.formats.squad import read_squad, write_squad
from ptv2.formats.superglue import (
    SPLIT_FILES,
    SUPERGLUE_DIRS,
    SUPERGLUE_LABELS,
    read_superglue,
    superglue_path,
)

TASKS = sorted(SUPERGLUE_DIRS)


def sg(root: Path, task: str, split: str) -> list[dict]:
    return read_superglue(task, superglue_path(root, task, split))


# ---------------------------------------------------------------- SuperGLUE fixtures


@pytest.mark.parametrize("task", TASKS)
def test_every_task_reads_all_splits_and_test_has_no_labels(fixture_data, task):
    for split in SPLIT_FILES:
        recs = sg(fixture_data, task, split)
        assert recs, (task, split)
        if task == "record":
            gold = [bool(r["answers"]) for r in recs]
            assert all(gold) if split != "test" else not any(gold)
        else:
            labels = [r["label"] for r in recs]
            assert (
                all(x is None for x in labels) if split == "test" else all(isinstance(x, int) for x in labels)
            )


@pytest.mark.parametrize("task", ["boolq", "cb", "copa", "rte", "wic", "wsc"])
def test_fixture_labels_balanced(fixture_data, task):
    counts = Counter(r["label"] for r in sg(fixture_data, task, "train"))
    n_classes = len(SUPERGLUE_LABELS[task])
    assert set(counts) == set(range(n_classes))
    assert max(counts.values()) - min(counts.values()) <= 1


def test_rte_and_cb_fields(fixture_data):
    rte = sg(fixture_data, "rte", "train")
    assert len(rte) == 12
    assert rte[1] == {
        "idx": 1,
        "premise": "Anna moved to Lisbon last spring to start a job at a shipping company.",
        "hypothesis": "Anna has never lived in Lisbon.",
        "label": SUPERGLUE_LABELS["rte"].index("not_entailment"),
    }
    cb = sg(fixture_data, "CB", "dev")  # task name is case-insensitive
    assert SUPERGLUE_LABELS["cb"] == ["entailment", "contradiction", "neutral"]
    assert [r["label"] for r in cb[:3]] == [0, 1, 2]


def test_boolq_fields(fixture_data):
    r = sg(fixture_data, "boolq", "train")[0]
    assert r == {
        "idx": 0,
        "passage": "The Sun is the star at the centre of the Solar System.",
        "question": "is the sun a star",
        "label": 1,
    }


def test_copa_has_both_question_types(fixture_data):
    recs = sg(fixture_data, "copa", "train")
    assert {r["question"] for r in recs} == {"cause", "effect"}
    r = recs[0]
    assert (r["premise"], r["choice1"], r["label"]) == (
        "The man broke his toe.",
        "He dropped a hammer on his foot.",
        0,
    )
    assert set(r) == {"idx", "premise", "choice1", "choice2", "question", "label"}


def test_wic_offsets_point_at_the_word(fixture_data):
    for split in SPLIT_FILES:
        for r in sg(fixture_data, "wic", split):
            for s in ("1", "2"):
                piece = r[f"sentence{s}"][r[f"start{s}"] : r[f"end{s}"]]
                assert piece.lower().startswith(r["word"]), (r, piece)


def test_wsc_word_indices_point_at_the_spans(fixture_data):
    recs = sg(fixture_data, "wsc", "train") + sg(fixture_data, "wsc", "dev")
    for r in recs:
        words = r["text"].split(" ")
        n1 = len(r["span1_text"].split(" "))
        assert " ".join(words[r["span1_index"] : r["span1_index"] + n1]).strip(",.") == r["span1_text"]
        assert words[r["span2_index"]].strip(",.") == r["span2_text"]
    assert set(recs[0]) == {"idx", "text", "span1_text", "span1_index", "span2_text", "span2_index", "label"}


def test_multirc_flattened_one_record_per_answer(fixture_data):
    path = superglue_path(fixture_data, "multirc", "train")
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    n_answers = sum(len(q["answers"]) for p in raw for q in p["passage"]["questions"])
    n_questions = sum(len(p["passage"]["questions"]) for p in raw)
    recs = read_superglue("multirc", path)
    assert len(recs) == n_answers
    assert len({r["question_uid"] for r in recs}) == n_questions
    assert len({r["paragraph_idx"] for r in recs}) == len(raw) == 3
    assert {r["label"] for r in recs} == {0, 1}
    r = recs[0]
    assert r["idx"] == r["answer_idx"] == 0
    assert (r["question"], r["answer"], r["label"]) == ("Where does Lily walk her dog?", "To the harbour", 1)
    assert r["question_uid"] == (0, 0) and hash(r["question_uid"]) is not None
    assert r["paragraph"].startswith("<b>Sent 1: </b>Lily lives")
    # several answers per question, mixed labels within one question
    per_q = Counter(x["question_uid"] for x in recs)
    assert min(per_q.values()) >= 2 and max(per_q.values()) >= 4
    test = sg(fixture_data, "multirc", "test")
    assert all(x["label"] is None for x in test)


def test_record_entities_and_answers(fixture_data):
    recs = sg(fixture_data, "record", "train")
    assert len(recs) == 8  # one per query
    r = recs[1]
    assert (r["idx"], r["passage_idx"]) == (1, 0)
    assert r["query"] == "@placeholder, a teacher, is the new champion."
    assert sorted(r["answers"]) == ["Anna Berg", "Berg"]
    # unique strings in first-seen order, cut with inclusive ends
    assert r["entities"] == ["Anna Berg", "Oslo", "Nordic Chess Cup", "Berg", "Lars Dahl", "Bergen", "Dahl"]
    assert "@highlight" not in r["passage"]
    assert "\n- Anna Berg wins the Nordic Chess Cup\n- She beat" in r["passage"]
    assert all(set(x["answers"]) <= set(x["entities"]) for x in recs)
    assert sum(len(x["answers"]) >= 2 for x in recs) >= 2
    uk = [x for x in recs if x["query"].startswith("@placeholder signed")][0]
    assert sorted(uk["answers"]) == ["UK", "United Kingdom"]
    test = sg(fixture_data, "record", "test")
    assert test and all(x["answers"] == [] and x["entities"] for x in test)


def test_unknown_task_and_split(fixture_data):
    with pytest.raises(UserError, match="unknown SuperGLUE task 'axb'"):
        read_superglue("axb", fixture_data / "x.jsonl")
    with pytest.raises(UserError, match="unknown split"):
        superglue_path(fixture_data, "rte", "validation")


def test_missing_files_raise_user_error(tmp_path):
    path = superglue_path(tmp_path, "rte", "train")
    with pytest.raises(UserError) as e:
        read_superglue("rte", path)
    msg = str(e.value)
    assert str(path) in msg and "superglue/" in msg and "\n" not in msg
    with pytest.raises(UserError, match="missing .*dev.tsv"):
        read_sst2(tmp_path / "glue" / "SST-2" / "dev.tsv")
    with pytest.raises(UserError, match="missing .*dev-v1.1.json"):
        read_squad(tmp_path / "squad" / "dev-v1.1.json")


def test_bad_json_line_is_user_error(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 0}\n{oops\n')
    with pytest.raises(UserError, match=r"train.jsonl:2"):
        read_superglue("rte", p)


# ---------------------------------------------------------------- SST-2 and SQuAD fixtures


def test_sst2_fixture(fixture_data):
    d = fixture_data / "glue" / "SST-2"
    train, dev, test = (read_sst2(d / f) for f in ("train.tsv", "dev.tsv", "test.tsv"))
    assert (len(train), len(dev), len(test)) == (16, 8, 4)
    assert train[0] == {"idx": 0, "sentence": "a warm and funny film about friendship", "label": 1}
    assert Counter(r["label"] for r in train) == {0: 8, 1: 8}
    assert test[2] == {"idx": 2, "sentence": "it has `` heart '' and humor", "label": None}


def test_squad_v11_fixture(fixture_data):
    train = read_squad(fixture_data / "squad" / "train-v1.1.json")
    dev = read_squad(fixture_data / "squad" / "dev-v1.1.json")
    assert len(train) == len(dev) == 10
    for r in train + dev:
        assert r["is_impossible"] is False
        for a in r["answers"]:
            assert r["context"][a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
    assert all(2 <= len(r["answers"]) <= 3 for r in dev)
    assert train[1]["title"] == "Lighthouse" and train[1]["answers"] == [
        {"text": "Thomas Reed", "answer_start": 160}
    ]
    long = [r for r in train if len(r["context"].split()) >= 600]
    assert long and long[0]["answers"][0]["answer_start"] > 0.8 * len(long[0]["context"])


def test_squad_v20_fixture(fixture_data):
    train = read_squad(fixture_data / "squad" / "train-v2.0.json")
    dev = read_squad(fixture_data / "squad" / "dev-v2.0.json")
    assert len(train) == len(dev) == 10
    for recs in (train, dev):
        imp = [r for r in recs if r["is_impossible"]]
        assert 3 <= len(imp) <= 5 and all(r["answers"] == [] for r in imp)
        assert all(r["answers"] for r in recs if not r["is_impossible"])
    assert set(train[0]) == {"id", "title", "context", "question", "answers", "is_impossible"}


@pytest.mark.parametrize("name,version", [("dev-v1.1.json", "1.1"), ("dev-v2.0.json", "2.0")])
def test_write_squad_round_trips(fixture_data, tmp_path, name, version):
    recs = read_squad(fixture_data / "squad" / name)
    out = tmp_path / "sub" / name
    write_squad(recs, out, version=version)
    assert read_squad(out) == recs
    raw = json.loads(out.read_text())
    assert ("is_impossible" in raw["data"][0]["paragraphs"][0]["qas"][0]) == (version == "2.0")


# ---------------------------------------------------------------- Quoref converter (on a tiny task dict)


def _load_quoref_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "quoref_to_squad.py"
    spec = importlib.util.spec_from_file_location("quoref_to_squad", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quoref_conversion(tmp_path):
    q = _load_quoref_script()
    p1 = "Anna Berg met G.L.O.W. in Oslo. Later anna berg left."
    p2 = "Tom Hale opened a bakery. Hale bakes bread."
    task = {
        "examples": [
            {"input": f"Passage: {p1} \nQuestion: Who met the band?", "target": ["Anna Berg."]},
            {"input": f"Passage: {p1} \nQuestion: Which band?", "target": ["G.L.O.W."]},
            {"input": f"Passage: {p1} \nQuestion: Who left?", "target": ["ANNA BERG LEFT."]},
            {"input": f"Passage: {p2} \nQuestion: Who?", "target": ["Nobody Here.", "Hale."]},
            {"input": f"Passage: {p2} \nQuestion: What?", "target": ["a cake."]},
        ]
    }
    train, dev, counts = q.convert(task, dev_percent=50)
    recs = {r["question"]: r for r in train + dev}
    assert recs["Who met the band?"]["answers"] == [{"text": "Anna Berg", "answer_start": 0}]
    assert recs["Which band?"]["answers"][0]["text"] == "G.L.O.W."
    assert recs["Who left?"]["answers"] == [
        {"text": "anna berg left", "answer_start": p1.index("anna berg left")}
    ]
    assert recs["Who?"]["answers"] == [{"text": "Hale", "answer_start": p2.index("Hale")}]
    assert "What?" not in recs
    assert counts["targets_not_located"] == 2 and counts["questions_dropped_no_answer"] == 1
    assert counts["targets_case_insensitive"] == 1 and counts["multi_span_questions"] == 1
    # passages never straddle the split
    assert not {r["context"] for r in train} & {r["context"] for r in dev}
    src = tmp_path / "task.json"
    src.write_text(json.dumps(task))
    assert q.main(["--task-json", str(src), "--out", str(tmp_path / "out")]) == 0
    got = read_squad(tmp_path / "out" / "train-v1.1.json") + read_squad(tmp_path / "out" / "dev-v1.1.json")
    assert len(got) == 4


# ---------------------------------------------------------------- real release files


REAL_SUPERGLUE = {  # task: (train, val, test) per the data README
    "rte": (2490, 277, 3000),
    "cb": (250, 56, 250),
    "copa": (400, 100, 500),
    "wic": (5428, 638, 1400),
    "wsc": (554, 104, 146),
}


@pytest.mark.parametrize("task", sorted(REAL_SUPERGLUE))
def test_real_superglue_counts(shared_data, task):
    got = tuple(len(sg(shared_data, task, s)) for s in ("train", "dev", "test"))
    assert got == REAL_SUPERGLUE[task]
    train = sg(shared_data, task, "train")
    assert all(r["label"] is not None for r in train)
    assert all(r["label"] is None for r in sg(shared_data, task, "test"))
    assert len(Counter(r["label"] for r in train)) == len(SUPERGLUE_LABELS[task])


def test_real_wic_offsets(shared_data):
    for r in sg(shared_data, "wic", "dev"):
        assert 0 <= r["start1"] < r["end1"] <= len(r["sentence1"])
        assert 0 <= r["start2"] < r["end2"] <= len(r["sentence2"])


def test_real_sst2_counts(shared_data):
    d = shared_data / "glue" / "SST-2"
    train, dev, test = (read_sst2(d / f) for f in ("train.tsv", "dev.tsv", "test.tsv"))
    assert (len(train), len(dev), len(test)) == (67349, 872, 1821)
    assert {r["label"] for r in train} == {0, 1} and all(r["label"] is None for r in test)
    assert [r["idx"] for r in test] == list(range(1821))
    assert dev[0] == {"idx": 0, "sentence": "it 's a charming and often affecting journey .", "label": 1}
