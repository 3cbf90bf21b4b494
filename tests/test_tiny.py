"""Tiny offline tokenizers: real transformers classes with real-checkpoint behaviour, no network."""

from __future__ import annotations

import os

# Before transformers/huggingface_hub are imported, so their offline constant is set.
os.environ["HF_HUB_OFFLINE"] = "1"

import pathlib
import socket
from collections.abc import Iterator

import pytest
from transformers import (
    AutoTokenizer,
    BertTokenizerFast,
    DebertaTokenizerFast,
    DebertaV2TokenizerFast,
    PreTrainedTokenizerFast,
    RobertaTokenizerFast,
)

from ptv2.tiny import TINY_KINDS, build_tiny_tokenizer, tiny_tokenizer_dir

CLASSES = {
    "bert": BertTokenizerFast,
    "roberta": RobertaTokenizerFast,
    "deberta": DebertaTokenizerFast,
    "deberta-v2": DebertaV2TokenizerFast,
}
# Byte-level BPE kinds need add_prefix_space=True for pre-split words (as with the real checkpoints).
PREFIX_SPACE_KINDS = ("roberta", "deberta")
RARE_WORD = "Photosynthesizing"  # not in the embedded corpus
TEXT = "The researchers in Zürich were photosynthesizing unbelievably quickly"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any connection attempt (hub look-up, download) fails the test instead of silently going online.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    root = tmp_path_factory.mktemp("ptv2-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTV2_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def loaded(cache_root: pathlib.Path) -> dict[str, PreTrainedTokenizerFast]:
    """Each kind as callers get it: built into the cache once, then loaded with AutoTokenizer."""
    return {k: AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir(k))) for k in TINY_KINDS}


def tokens(tok: PreTrainedTokenizerFast, ids: list[int]) -> list[str]:
    return tok.convert_ids_to_tokens(ids)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_real_class_and_special_tokens(loaded: dict[str, PreTrainedTokenizerFast], kind: str) -> None:
    tok = loaded[kind]
    assert type(tok) is CLASSES[kind]
    assert isinstance(tok, PreTrainedTokenizerFast) and tok.is_fast
    assert 400 <= len(tok) <= 1000
    assert tok.model_max_length == 512
    # The mask token is a real single vocab entry, and survives encoding as one token.
    assert tok.mask_token == ("<mask>" if kind == "roberta" else "[MASK]")
    assert tok.mask_token_id is not None and tok.mask_token_id != tok.unk_token_id
    ids = tok(f"the cat {tok.mask_token} on the mat")["input_ids"]
    assert ids.count(tok.mask_token_id) == 1
    # The mask eats the space before it (lstrip, as in roberta-base/deberta-base): no stray space token.
    before = tokens(tok, ids)[ids.index(tok.mask_token_id) - 1]
    assert before in ("cat", "Ġcat", "▁cat"), before
    expected_ids = {
        "bert": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4},
        "roberta": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4},
        "deberta": {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "[MASK]": 4},
        "deberta-v2": {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "[MASK]": 4},
    }[kind]
    assert {t: tok.convert_tokens_to_ids(t) for t in expected_ids} == expected_ids


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_pair_layout(loaded: dict[str, PreTrainedTokenizerFast], kind: str) -> None:
    tok = loaded[kind]
    a, b = "The cat sat", "on the mat"
    enc = tok(a, b)
    toks = tokens(tok, enc["input_ids"])
    a_ids = tok(a, add_special_tokens=False)["input_ids"]
    b_ids = tok(b, add_special_tokens=False)["input_ids"]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    if kind in ("bert", "deberta-v2"):
        assert enc["input_ids"] == [cls, *a_ids, sep, *b_ids, sep]
        assert enc["token_type_ids"] == [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)
    elif kind == "roberta":
        assert toks[0] == "<s>" and toks[-1] == "</s>"
        assert enc["input_ids"] == [cls, *a_ids, sep, sep, *b_ids, sep]
        assert "token_type_ids" not in enc  # RoBERTa has no segment embeddings
    else:
        # transformers 5's DebertaTokenizer template: RoBERTa-like double [SEP], all type ids 0
        # (v4 gave [CLS] A [SEP] B [SEP] with 0/1; deberta-base has type_vocab_size=0 so ids are unused).
        assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
        assert enc["input_ids"] == [cls, *a_ids, sep, sep, *b_ids, sep]
        assert set(enc["token_type_ids"]) == {0}


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_rare_word_splits_into_pieces_of_one_word(
    loaded: dict[str, PreTrainedTokenizerFast], kind: str
) -> None:
    tok = loaded[kind]
    enc = tok(f"I saw {RARE_WORD} today")
    word_ids = enc.word_ids()
    pieces = [i for i, w in zip(enc["input_ids"], word_ids, strict=True) if w == 2]
    assert len(pieces) >= 2
    assert tok.unk_token_id not in enc["input_ids"]
    assert tok.decode(pieces).strip() == RARE_WORD
    # Pieces of one word are contiguous; specials have no word.
    positions = [p for p, w in enumerate(word_ids) if w == 2]
    assert positions == list(range(positions[0], positions[-1] + 1))
    assert word_ids[0] is None and word_ids[-1] is None


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_offsets_slice_back_to_text(loaded: dict[str, PreTrainedTokenizerFast], kind: str) -> None:
    tok = loaded[kind]
    enc = tok(TEXT, return_offsets_mapping=True)
    special = set(tok.all_special_ids)
    for tid, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        if tid in special:
            assert (start, end) == (0, 0)
            continue
        surface = tok.convert_tokens_to_string([tok.convert_ids_to_tokens(tid)]).strip()
        if kind == "bert":
            surface = surface.removeprefix("##")
        # Byte-level/SentencePiece offsets may include the leading space, as with real checkpoints.
        assert TEXT[start:end].strip() == surface
    # The pieces of each word span exactly that word.
    words = TEXT.split()
    for w, word in enumerate(words):
        spans = [o for o, i in zip(enc["offset_mapping"], enc.word_ids(), strict=True) if i == w]
        assert TEXT[min(s for s, _ in spans) : max(e for _, e in spans)].strip() == word


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_split_into_words(cache_root: pathlib.Path, kind: str) -> None:
    kwargs = {"add_prefix_space": True} if kind in PREFIX_SPACE_KINDS else {}
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir(kind)), **kwargs)
    words = ["John", "lives", "in", "Zürich", RARE_WORD, "."]
    enc = tok(words, is_split_into_words=True, truncation=True, max_length=64)
    word_ids = enc.word_ids()
    assert {w for w in word_ids if w is not None} == set(range(len(words)))
    assert word_ids[0] is None and word_ids[-1] is None
    assert sum(w == 4 for w in word_ids) >= 2
    # Each word is encoded as if it followed a space, i.e. the same as in running text.
    running = tok(" ".join(words), add_special_tokens=False)["input_ids"]
    if kind in PREFIX_SPACE_KINDS:
        running = tok(" " + " ".join(words), add_special_tokens=False)["input_ids"]
    assert enc["input_ids"][1:-1] == running


def test_roberta_prefix_space_changes_first_word(cache_root: pathlib.Path) -> None:
    # Guards that add_prefix_space really reaches the byte-level pre-tokenizer.
    plain = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir("roberta")))
    spaced = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir("roberta")), add_prefix_space=True)
    assert tokens(plain, plain("people")["input_ids"])[1] != "Ġpeople"
    assert tokens(spaced, spaced("people")["input_ids"])[1] == "Ġpeople"
    # Sentence-initial words have their own un-prefixed pieces, as in GPT-2's vocab.
    assert tokens(plain, plain("The people")["input_ids"]) == ["<s>", "The", "Ġpeople", "</s>"]


def test_bert_is_cased(loaded: dict[str, PreTrainedTokenizerFast]) -> None:
    tok = loaded["bert"]
    assert tok.do_lower_case is False
    assert tokens(tok, tok("The the")["input_ids"]) == ["[CLS]", "The", "the", "[SEP]"]
    assert tokens(tok, tok("Paris")["input_ids"])[1].startswith("P")


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_reload_from_cache_gives_identical_ids(loaded: dict[str, PreTrainedTokenizerFast], kind: str) -> None:
    fresh = build_tiny_tokenizer(kind)
    cached = loaded[kind]
    assert type(fresh) is type(cached)
    assert fresh.get_vocab() == cached.get_vocab()
    samples = [TEXT, f"I saw {RARE_WORD} today.", "São Paulo, 2024: 12% up!"]
    for s in samples:
        assert fresh(s, "a b")["input_ids"] == cached(s, "a b")["input_ids"]


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_build_is_deterministic(tmp_path: pathlib.Path, kind: str) -> None:
    build_tiny_tokenizer(kind, tmp_path / "a")
    build_tiny_tokenizer(kind, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "tokenizer.json" in names and "tokenizer_config.json" in names
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_cache_dir_is_built_once(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTV2_CACHE", str(tmp_path))
    first = tiny_tokenizer_dir("bert")
    assert first == tmp_path / "tiny-tokenizers" / "bert-v1"
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert tiny_tokenizer_dir("bert") == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp
    # The temporary build dir was renamed into place, nothing left behind.
    assert sorted(p.name for p in first.parent.iterdir()) == ["bert-v1"]


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown tiny tokenizer kind"):
        tiny_tokenizer_dir("gpt2")
