"""Sequence-labeling readers: tag schemes, bracket notation, the fixture files, and real CoNLL-2003."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ptv2.errors import UserError
from ptv2.formats.conll import (
    bilou_to_iob2,
    brackets_to_bio,
    detect_scheme,
    entity_counts,
    iob1_to_iob2,
    read_conll04,
    read_conll2003,
    read_ontonotes,
    to_iob2,
)
from ptv2.formats.sequence import read_sequence_file
from ptv2.formats.srl import read_conll05, read_conll12, read_srl_lines

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures" / "data"


def _tags(text: str) -> list[str]:
    """Space-separated tags, so long expected sequences stay on one readable line."""
    return text.split()


def _shared_data() -> Path:
    # Same resolution as the project's data convention: env override, else the folder beside the checkout.
    env = os.environ.get("PTV2_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


# --------------------------------------------------------------------------- tag schemes
def test_iob1_to_iob2_starts_and_adjacent_entities() -> None:
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "O", "I-MISC"]
    assert iob1_to_iob2(iob1) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG", "O", "B-MISC"]


def test_iob1_to_iob2_is_identity_on_iob2() -> None:
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert iob1_to_iob2(iob2) == iob2
    assert to_iob2(iob2, "iob2") == iob2


def test_bilou_and_bioes_to_iob2() -> None:
    assert bilou_to_iob2(["U-PER", "O", "B-ORG", "I-ORG", "L-ORG", "U-ORG"]) == _tags(
        "B-PER O B-ORG I-ORG I-ORG B-ORG"
    )
    assert to_iob2(["S-LOC", "B-PER", "E-PER", "O"], "bioes") == ["B-LOC", "B-PER", "I-PER", "O"]
    # a single-token entity right after one of the same type must still start a new span
    assert to_iob2(["B-PER", "E-PER", "S-PER", "U-PER"], "bilou") == ["B-PER", "I-PER", "B-PER", "B-PER"]


def test_to_iob2_rejects_unknown_scheme_and_bad_tags() -> None:
    with pytest.raises(UserError):
        to_iob2(["O"], "iobes2")
    with pytest.raises(ValueError):
        iob1_to_iob2(["PER"])


def test_detect_scheme() -> None:
    assert detect_scheme([["I-PER", "O"]]) == "iob1"
    assert detect_scheme([["B-PER", "I-PER"]]) == "iob2"
    assert detect_scheme([["S-PER"]]) == "bioes"


# --------------------------------------------------------------------------- bracket notation
def test_brackets_to_bio() -> None:
    cells = ["(A0*", "*)", "(V*)", "(AM-TMP*)", "(A1*", "*", "*)", "*"]
    assert brackets_to_bio(cells) == ["B-A0", "I-A0", "B-V", "B-AM-TMP", "B-A1", "I-A1", "I-A1", "O"]
    # CoNLL-2012 NE columns close single-token spans without a star: (GPE)
    assert brackets_to_bio(["(GPE)", "*", "(PERSON*", "*)"]) == ["B-GPE", "O", "B-PERSON", "I-PERSON"]
    # nested spans cannot be flat tags: the outermost one labels all its tokens
    assert brackets_to_bio(["(ORG*", "(GPE*)", "*)"]) == ["B-ORG", "I-ORG", "I-ORG"]


def test_brackets_unbalanced_is_an_error() -> None:
    with pytest.raises(ValueError):
        brackets_to_bio(["(A0*", "*"])
    with pytest.raises(ValueError):
        brackets_to_bio(["*)"])


# --------------------------------------------------------------------------- CoNLL-2003 fixtures
def test_conll2003_fixture_iob1_conversion() -> None:
    recs = read_conll2003(FIX / "conll2003" / "eng.train")
    assert len(recs) == 8  # -DOCSTART- at the end does not create a sentence
    assert all("-DOCSTART-" not in r["tokens"] for r in recs)
    assert recs[1] == {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}
    # "Spain I-LOC / Italy B-LOC": IOB1 B- splits two adjacent LOC entities
    britain = recs[5]
    assert britain["tokens"][:5] == ["In", "Britain", ",", "Spain", "Italy"]
    assert britain["tags"] == ["O", "B-LOC", "O", "B-LOC", "B-LOC", "O", "B-LOC", "O", "O"]
    assert entity_counts(recs) == {"LOC": 6, "MISC": 3, "ORG": 4, "PER": 3}


@pytest.mark.parametrize(
    ("split", "counts"),
    [
        ("eng.testa", {"LOC": 2, "MISC": 1, "ORG": 6, "PER": 3}),
        ("eng.testb", {"LOC": 7, "MISC": 1, "ORG": 1, "PER": 3}),
    ],
)
def test_conll2003_fixture_dev_test(split: str, counts: dict[str, int]) -> None:
    recs = read_sequence_file(FIX / "conll2003" / split, "conll2003")
    assert len(recs) == 8
    assert entity_counts(recs) == counts


def test_conll2003_iob2_copy_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_text("-DOCSTART- O\n\nEU B-ORG\nrejects O\nGerman B-MISC\n\nA B-PER\nB B-PER\n")
    recs = read_conll2003(f, scheme="iob2")
    assert [r["tags"] for r in recs] == [["B-ORG", "O", "B-MISC"], ["B-PER", "B-PER"]]


# --------------------------------------------------------------------------- OntoNotes
def test_ontonotes_gold_conll_brackets() -> None:
    recs = read_ontonotes(FIX / "ontonotes" / "train.gold_conll")
    assert len(recs) == 3
    assert recs[0]["tags"] == _tags("B-PERSON I-PERSON O B-DATE I-DATE I-DATE O O O O B-DATE I-DATE O")
    second = dict(zip(recs[1]["tokens"], recs[1]["tags"], strict=True))
    assert second["Vinken"] == "B-PERSON" and second["Dutch"] == "B-NORP"
    assert (second["Elsevier"], second["N.V."]) == ("B-ORG", "I-ORG")
    assert recs[1]["tokens"][-1] == "."  # treebank escape "/." undone
    assert recs[2] == {"tokens": ["Rudolph", "Agnew"], "tags": ["B-PERSON", "I-PERSON"]}
    dev = read_sequence_file(FIX / "ontonotes" / "dev.gold_conll", "ontonotes")
    assert dev[1]["tags"] == ["B-GPE", "O", "B-GPE"]
    test = read_sequence_file(FIX / "ontonotes" / "test.gold_conll", "ontonotes")
    assert entity_counts(test) == {"DATE": 1, "GPE": 1, "ORG": 1}


def test_ontonotes_two_column_and_conllx(tmp_path: Path) -> None:
    two = tmp_path / "train.txt"
    two.write_text("Pierre B-PERSON\nVinken I-PERSON\njoined O\n\nParis S-GPE\n")
    assert [r["tags"] for r in read_ontonotes(two)] == [["B-PERSON", "I-PERSON", "O"], ["B-GPE"]]
    conllx = tmp_path / "train.sd.conllx"
    conllx.write_text(
        "1\tPierre\t_\tNNP\tNNP\t_\t2\tcompound\t_\t_\tB-PERSON\n"
        "2\tVinken\t_\tNNP\tNNP\t_\t0\troot\t_\t_\tE-PERSON\n"
    )
    assert read_ontonotes(conllx) == [{"tokens": ["Pierre", "Vinken"], "tags": ["B-PERSON", "I-PERSON"]}]


# --------------------------------------------------------------------------- CoNLL04
def test_conll04_json_entities_to_tags() -> None:
    recs = read_conll04(FIX / "conll04" / "train.json")
    assert len(recs) == 3
    assert recs[0]["tags"][:3] == ["B-Peop", "I-Peop", "I-Peop"]  # end is exclusive: 0..3
    assert recs[0]["tags"][3] == "O" and recs[0]["tags"][7] == "B-Peop"
    assert entity_counts(recs) == {"Loc": 2, "Org": 1, "Other": 1, "Peop": 3}
    assert len(read_sequence_file(FIX / "conll04" / "dev.json", "conll04")) == 2
    assert entity_counts(read_conll04(FIX / "conll04" / "test.json")) == {"Loc": 2, "Org": 2}


def test_conll04_json_lines_and_tags(tmp_path: Path) -> None:
    f = tmp_path / "train.jsonl"
    f.write_text(
        json.dumps({"tokens": ["a", "b", "c"], "entities": [{"type": "Org", "start": 1, "end": 3}]})
        + "\n"
        + json.dumps({"tokens": ["x", "y"], "tags": ["U-Loc", "O"]})
        + "\n"
    )
    assert [r["tags"] for r in read_conll04(f)] == [["O", "B-Org", "I-Org"], ["B-Loc", "O"]]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"tokens": ["a"], "entities": [{"type": "Org", "start": 0, "end": 2}]}]))
    with pytest.raises(UserError):
        read_conll04(bad)


def test_conll04_original_corp() -> None:
    recs = read_conll04(FIX / "conll04" / "original.corp")
    assert len(recs) == 3  # relation lines are not sentences
    first = dict(zip(recs[0]["tokens"], recs[0]["tags"], strict=False))
    assert "COMMA" not in recs[0]["tokens"]
    i = recs[0]["tokens"].index("Bruno")
    assert recs[0]["tokens"][i : i + 2] == ["Bruno", "Pusterla"]
    assert recs[0]["tags"][i : i + 2] == ["B-Peop", "I-Peop"]
    assert first["Confederation"] == "I-Org" and first["Italian"] == "B-Org"
    assert recs[0]["tokens"][5:9] == ["150", ",", "000", "hectares"]
    # "1/2" has a single POS, so it is a genuine token, not a joined multiword entity
    assert "1/2" in recs[1]["tokens"] and recs[1]["tags"][:3] == ["B-Loc", "O", "B-Loc"]


# --------------------------------------------------------------------------- SRL
def test_conll05_one_record_per_predicate() -> None:
    recs = read_conll05(FIX / "conll05" / "train.props")
    # 2 predicates + 1 predicate + 1 sentence without a predicate
    assert [r["predicate_index"] for r in recs] == [2, 4, 1]
    assert recs[0]["tokens"] == recs[1]["tokens"]
    assert recs[0]["tags"] == ["B-A0", "I-A0", "B-V", "B-A1", "I-A1", "I-A1", "I-A1", "O"]
    assert recs[1]["tags"] == ["O", "O", "O", "B-A0", "B-V", "B-A1", "I-A1", "O"]
    assert recs[2]["tags"] == ["B-A1", "B-V", "B-AM-MNR", "B-AM-TMP", "O"]


@pytest.mark.parametrize(("split", "n"), [("dev", 2), ("test_wsj", 3), ("test_brown", 2)])
def test_conll05_splits(split: str, n: int) -> None:
    recs = read_sequence_file(FIX / "conll05" / f"{split}.props", "conll05")
    assert len(recs) == n
    for r in recs:
        assert r["tags"][r["predicate_index"]] == "B-V"


def test_conll12_gold_conll_srl_columns() -> None:
    recs = read_conll12(FIX / "conll12" / "train.gold_conll")
    assert [r["predicate_index"] for r in recs] == [2, 4, 1]
    assert recs[0]["tags"] == _tags("B-ARG0 I-ARG0 B-V B-ARG1 I-ARG1 I-ARG1 I-ARG1 I-ARG1 O")
    assert recs[1]["tags"] == ["O", "O", "O", "B-ARG0", "B-V", "B-ARG1", "I-ARG1", "B-ARGM-TMP", "O"]
    assert len(read_sequence_file(FIX / "conll12" / "dev.gold_conll", "conll12")) == 1  # 2nd has no verb
    test = read_sequence_file(FIX / "conll12" / "test.gold_conll", "conll12")
    assert test[0]["tags"] == ["B-ARG0", "B-ARGM-MOD", "B-ARGM-NEG", "B-V", "B-C-V", "O"]


def test_srl_lines() -> None:
    recs = read_srl_lines(FIX / "srl" / "sample.txt")
    assert recs[0] == {
        "tokens": ["The", "cat", "has", "sat", "on", "the", "mat", "."],
        "tags": ["B-ARG1", "I-ARG1", "O", "B-V", "B-ARGM-LOC", "I-ARGM-LOC", "I-ARGM-LOC", "O"],
        "predicate_index": 3,
    }
    assert [r["predicate_index"] for r in recs] == [3, 1, 5]


def test_srl_lines_errors(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("1 a b ||| O\n")
    with pytest.raises(UserError, match="2 tokens but 1 tags"):
        read_srl_lines(f)
    f.write_text("0 a b ||| O B-V\n")
    with pytest.raises(UserError, match="not on the V span"):
        read_srl_lines(f)


# --------------------------------------------------------------------------- dispatcher
def test_dispatcher_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown sequence format"):
        read_sequence_file(FIX / "srl" / "sample.txt", "conllu")
    missing = tmp_path / "nope" / "eng.train"
    with pytest.raises(UserError, match=str(missing).replace("\\", "\\\\")):
        read_sequence_file(missing, "conll2003")


def test_dispatcher_json(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text(json.dumps([{"tokens": ["a", "b"], "tags": ["I-X", "I-X"], "predicate_index": 0}]))
    assert read_sequence_file(f, "json") == [
        {"tokens": ["a", "b"], "tags": ["B-X", "I-X"], "predicate_index": 0}
    ]


# --------------------------------------------------------------------------- real CoNLL-2003
REAL = _shared_data() / "conll2003"


@pytest.mark.skipif(not (REAL / "eng.train").is_file(), reason="shared CoNLL-2003 data not present")
@pytest.mark.parametrize(
    ("split", "n_sent", "counts"),
    [
        ("eng.train", 14041, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
        ("eng.testa", 3250, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
        ("eng.testb", 3453, {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}),
    ],
)
def test_real_conll2003(split: str, n_sent: int, counts: dict[str, int]) -> None:
    recs = read_sequence_file(REAL / split, "conll2003")
    assert len(recs) == n_sent
    assert entity_counts(recs) == counts
