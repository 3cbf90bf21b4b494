"""Sequence labeling (NER, SRL): label alignment, word windows, SRL encoding, metrics, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf

from ptv2.errors import UserError
from ptv2.tasks.base import build_task
from ptv2.tasks.ner import IGNORE, word_windows
from ptv2.tiny import load_tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
X = IGNORE


@pytest.fixture(scope="module")
def bert_tok():
    return load_tiny_tokenizer("bert")


@pytest.fixture(scope="module")
def roberta_tok():
    return load_tiny_tokenizer("roberta")


def make_task(name: str, tokenizer, data_root: Path, **overrides):
    cfg = OmegaConf.load(ROOT / "conf" / "task" / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return build_task(cfg, data_root, tokenizer)


def logits_for(task, features, word_tags: list[list[str]], other: str = "B-PER") -> list[torch.Tensor]:
    """One-hot outputs: each word's tag at its first sub-word, ``other`` on every other position."""
    outputs = []
    for f in features:
        out = torch.zeros(len(f["input_ids"]), task.num_labels)
        previous = None
        for t, w in enumerate(f["word_ids"]):
            tag = word_tags[f["example_index"]][w] if w is not None and w != previous else other
            out[t, task.label_ids[tag]] = 1.0
            previous = w
        outputs.append(out)
    return outputs


def test_first_subword_alignment(bert_tok, fixture_data):
    task = make_task("conll03", bert_tok, fixture_data)
    record = {"tokens": ["The", "company", "assassinated"], "tags": ["O", "B-ORG", "O"]}
    (f,) = task.encode(record, 0, "train")
    assert bert_tok.convert_ids_to_tokens(f["input_ids"]) == [
        "[CLS]", "The", "comp", "##any", "a", "##s", "##s", "##as", "##s", "##in", "##at", "##ed", "[SEP]"
    ]  # fmt: skip
    assert f["word_ids"] == [None, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, None]
    # O = 0, B-ORG = 3 in the YAML's (hub) order
    assert f["labels"] == [X, 0, 3, X, 0, X, X, X, X, X, X, X, X]
    assert f["example_index"] == 0 and f["num_windows"] == 1 and f["windowed_words"] == 0


def test_roberta_words_get_their_leading_space(roberta_tok, fixture_data):
    task = make_task("conll03", roberta_tok, fixture_data)
    (f,) = task.encode({"tokens": ["The", "company"], "tags": ["O", "O"]}, 0, "dev")
    assert roberta_tok.convert_ids_to_tokens(f["input_ids"])[:3] == ["<s>", "ĠThe", "Ġcomp"]
    # the backbone's own tokenizer is left as it was
    assert roberta_tok.convert_ids_to_tokens(roberta_tok(["The"], is_split_into_words=True)["input_ids"]) == [
        "<s>",
        "The",
        "</s>",
    ]


def test_word_windows_hand_counts():
    assert word_windows([1, 2, 1, 3, 5, 1], 4) == [(0, 3), (3, 4), (4, 5), (5, 6)]
    assert word_windows([1, 1], 10) == [(0, 2)]


def test_windows_keep_every_label_and_stitch_back(bert_tok, fixture_data):
    task = make_task("conll03", bert_tok, fixture_data, max_length=6)  # 4 sub-words per window
    tokens = ["EU", "rejects", "German", "call", "company", "assassinated", "Peter", "Blackburn", "."]
    tags = ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-PER", "I-PER", "O"]
    records = [{"tokens": tokens, "tags": tags}, {"tokens": ["EU"], "tags": ["B-ORG"]}]
    features = task.encode_all(records, "dev")
    windows = [f for f in features if f["example_index"] == 0]
    assert len(windows) > 2 and all(len(f["input_ids"]) <= 6 for f in features)
    assert windows[0]["windowed_words"] == len(tokens) and windows[0]["num_windows"] == len(windows)
    # every word labelled exactly once, with its own tag
    labelled = [
        (w, task.label_names[y])
        for f in windows
        for w, y in zip(f["word_ids"], f["labels"], strict=True)
        if y != X
    ]
    assert labelled == list(enumerate(tags))
    outputs = logits_for(task, features, [tags, ["B-ORG"]])
    assert task.predicted_tags(records, features, outputs) == [tags, ["B-ORG"]]
    assert task.metrics(records, features, outputs)["f1"] == pytest.approx(100.0)


def test_metrics_match_hand_computed_seqeval(bert_tok, fixture_data):
    task = make_task("conll03", bert_tok, fixture_data)
    records = [
        {"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
    ]
    preds = [["B-ORG", "O", "B-PER", "O"], ["B-PER", "I-PER"]]
    features = task.encode_all(records, "test")
    scores = task.metrics(records, features, logits_for(task, features, preds, other="B-LOC"))
    # gold {ORG, MISC, PER}, predicted {ORG, PER@2, PER}: tp 2 of 3 and 3 -> P = R = F1 = 2/3
    for key in ("f1", "precision", "recall", "f1_strict"):
        assert scores[key] == pytest.approx(200 / 3)
    assert task.predictions(records, features, logits_for(task, features, preds)) == {
        0: preds[0],
        1: preds[1],
    }


def test_srl_appends_separator_and_predicate(roberta_tok, fixture_data):
    task = make_task("conll05", roberta_tok, fixture_data)
    record = {
        "tokens": ["The", "company", "said", "it"],
        "tags": ["B-A0", "I-A0", "B-V", "B-A1"],
        "predicate_index": 2,
    }
    (f,) = task.encode(record, 0, "train")
    pieces = roberta_tok.convert_ids_to_tokens(f["input_ids"])
    sentence_end = max(t for t, w in enumerate(f["word_ids"]) if w is not None) + 1
    assert pieces[:sentence_end] == ["<s>", "ĠThe", "Ġcomp", "any", "Ġsaid", "Ġit"]
    assert pieces[sentence_end] == roberta_tok.sep_token
    assert (
        roberta_tok.convert_tokens_to_string(pieces[sentence_end:]).replace(roberta_tok.sep_token, "").strip()
        == "said"
    )
    lab = task.label_ids
    assert f["labels"][:sentence_end] == [X, lab["B-A0"], lab["I-A0"], X, lab["B-V"], lab["B-A1"]]
    assert all(y == X for y in f["labels"][sentence_end:])
    assert all(w is None for w in f["word_ids"][sentence_end:])


def test_srl_labels_derived_from_full_train(roberta_tok, fixture_data):
    task = make_task("conll05", roberta_tok, fixture_data)
    assert task.label_names == ["O", "B-A0", "B-A1", "B-AM-MNR", "B-AM-TMP", "B-V", "I-A0", "I-A1"]


def test_srl_f1_scores_every_label_and_f1_args_the_arguments_only(roberta_tok, fixture_data):
    task = make_task("conll05", roberta_tok, fixture_data)
    gold = [["B-A0", "I-A0", "B-V", "B-A1"]]
    scores = task.score(gold, [["B-A0", "I-A0", "O", "B-V"]])  # A0 right, A1 missed, V on the wrong word
    # f1 (official, the tables' number): gold {A0, V, A1}, predicted {A0, V@3}: P = 1/2, R = 1/3, F1 = 2/5.
    assert scores["f1"] == pytest.approx(40.0)
    assert scores["precision"] == pytest.approx(50.0) and scores["recall"] == pytest.approx(100 / 3)
    # f1_args (CoNLL-05 scorer): gold {A0, A1}, predicted {A0}: P = 1, R = 1/2, F1 = 2/3.
    assert scores["f1_args"] == pytest.approx(200 / 3)
    assert scores["precision_args"] == pytest.approx(100.0) and scores["recall_args"] == pytest.approx(50.0)


def test_unknown_train_tag_is_a_user_error(bert_tok, fixture_data):
    task = make_task("conll04", bert_tok, fixture_data)
    with pytest.raises(UserError, match="B-Misc"):
        task.encode({"tokens": ["x"], "tags": ["B-Misc"]}, 0, "train")
    (f,) = task.encode({"tokens": ["x"], "tags": ["B-Misc"]}, 0, "test")  # eval-only tags: scored, no loss
    assert f["labels"] == [X, X, X]


def test_hub_rows_map_ids_to_yaml_labels(bert_tok, fixture_data):
    task = make_task("conll03", bert_tok, fixture_data)
    row = {"id": "0", "tokens": ["EU", "Commission", "x"], "pos_tags": [1, 2, 3], "ner_tags": [3, 4, 0]}
    assert task.from_hub(row) == {"tokens": ["EU", "Commission", "x"], "tags": ["B-ORG", "I-ORG", "O"]}


def test_prompt_of_200_with_sequence_at_max_positions(tiny_cfg):
    """Prefix prompts take no position ids: 200 prompts + a 512-token input still fit tiny-roberta (514 positions)."""
    from ptv2.backbone import load_backbone
    from ptv2.model import build_model

    cfg = tiny_cfg("model=tiny-roberta", "task=conll05", "prompt_length=200", "train.dropout=0")
    backbone = load_backbone(cfg.model, "eager")
    model = build_model(cfg, backbone, 5, "token").eval()
    length = backbone.tokenizer.model_max_length
    assert length == 512
    batch = {
        "input_ids": torch.full((1, length), 10),
        "attention_mask": torch.ones(1, length, dtype=torch.long),
        "padded": False,
    }
    with torch.no_grad():
        assert model(batch).shape == (1, length, 5)


REPORT = {"conll03": "test", "conll05": "test_wsj", "ontonotes": "test", "conll04": "test", "conll12": "test"}


@pytest.mark.parametrize(
    ("task", "model"),
    [
        ("conll03", "tiny-bert"),
        ("conll05", "tiny-roberta"),
        ("ontonotes", "tiny-roberta"),
        ("conll04", "tiny-bert"),
        ("conll12", "tiny-bert"),
    ],
)
def test_end_to_end(task, model, tmp_path, fixture_data):
    proc = run_cli(f"task={task}", f"model={model}", f"data.root={fixture_data}", "train.epochs=1",
                   "train.progress=false", f"results.root={tmp_path}", "prompt_length=4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (tmp_path / "runs").glob("**/metrics.json")
    metrics, report = json.loads(path.read_text()), REPORT[task]
    assert metrics["task"] == task and metrics["status"] == "done" and metrics["head"] == "token"
    assert metrics["report_split"] == report
    assert set(metrics["best"]) == set(OmegaConf.load(ROOT / "conf" / "task" / f"{task}.yaml").eval_splits)
    assert 0.0 <= metrics["best"][report]["f1"] <= 100.0 and "f1_strict" in metrics["best"][report]
    # predictions.json: word tags per dev record
    predictions = json.loads((path.parent / "predictions.json").read_text())
    assert predictions and all(isinstance(tags, list) for tags in predictions.values())


def test_real_conll2003_counts_and_labels(shared_data):
    if not (shared_data / "conll2003").is_dir():
        pytest.skip("no conll2003 in the real data")
    task = make_task("conll03", None, shared_data)
    splits = {s: task.read(s) for s in ("train", "dev", "test")}
    # the official sentence counts (-DOCSTART- lines are not sentences)
    assert {s: len(r) for s, r in splits.items()} == {"train": 14041, "dev": 3250, "test": 3453}
    assert {t for r in splits["train"] for t in r["tags"]} == set(task.label_names)
