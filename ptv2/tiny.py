"""Tokenizers for tiny random backbones, built offline with the real transformers tokenizer classes.

Tests and the demo run tiny randomly initialised encoders (built from a config, no weights). Their
tokenizers must still be the real classes (``BertTokenizerFast``, ``RobertaTokenizerFast``,
``DebertaTokenizerFast``, ``DebertaV2TokenizerFast``) so that ``word_ids()``, offset mappings, special
token layout, ``token_type_ids`` and RoBERTa's ``add_prefix_space`` behave as with real checkpoints.

The sub-word vocabularies are learnt by a small deterministic BPE on an embedded corpus (words split
by the ``tokenizers`` pre-tokenizers the classes use), then handed to the transformers class constructor (``vocab=`` / ``merges=``), which installs the same normalizer,
pre-tokenizer and post-processor as for a real checkpoint. Nothing is downloaded; ``sentencepiece`` is
not needed (DeBERTa-v2's fast class takes a Unigram vocab list directly).
"""

from __future__ import annotations

import math
import os
import pathlib
import shutil
import string
import tempfile
from collections import Counter

from tokenizers import AddedToken, normalizers, pre_tokenizers
from transformers import (
    AutoTokenizer,
    BertTokenizerFast,
    DebertaTokenizerFast,
    DebertaV2TokenizerFast,
    PreTrainedTokenizerFast,
    RobertaTokenizerFast,
)

TINY_KINDS: tuple[str, ...] = ("bert", "roberta", "deberta", "deberta-v2")

# Bump when the corpus or build recipe changes, so stale caches are not reused.
_CACHE_VERSION = "v1"

# Same as the real base/large checkpoints; keeps truncation behaviour realistic.
_MODEL_MAX_LENGTH = 512

# Vocab size caps; BPE stops earlier once no pair occurs twice (actual sizes are ~450-570).
_VOCAB_SIZE = {"bert": 800, "roberta": 800, "deberta": 800, "deberta-v2": 700}

# Special tokens in id order, as in the real checkpoints' vocabularies
# (BERT's are remapped to 0..4 so [PAD]=0 and the vocab stays small).
_SPECIALS = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "deberta": ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
    "deberta-v2": ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
}

# Every printable ASCII character is guaranteed a piece, so ASCII text never maps to [UNK].
# Latin-1 letters too: CoNLL-style names (Zürich, São Paulo, Müller) should not become [UNK].
_LATIN1_LETTERS = "ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝßàáâãäåçèéêëìíîïñòóôõöøùúûüýÿ"
_ALPHABET: list[str] = sorted(
    set(string.ascii_letters + string.digits + string.punctuation + _LATIN1_LETTERS)
)

# Small, cased English corpus. Morphological families (play/played/player/replay...) make the trainers
# learn stems and affixes, so unseen long words split into several sub-words.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A lazy dog sleeps in the warm sun.
John Smith lives in New York and works for the United Nations in Geneva.
Mary Johnson visited Paris, London and Berlin in 2019 and again in 2023.
The movie was great, and the actors were wonderful. I loved it!
The film was terrible; the story was boring and the music was awful.
What a beautiful day! The weather is nice and the sky is blue.
Is the sentence true or false? The answer is yes, or maybe no.
Who wrote the book? When did the war end? Where is the station? Why not?
How many people live in the city? About 8,000,000 people live there.
The company reported profits of $3.5 billion, up 12% from last year.
Microsoft, Google and Apple are large technology companies in America.
The president said on Monday that the government will support the plan.
She played the piano while he was playing the guitar; they play together.
The player replayed the game. Players often replay games they have played.
He walked to the school, she was walking home, and they walk every day.
The teacher teaches students; the students are learning and have learned a lot.
We are reading a book. He reads the newspaper. They have read many stories.
The children were running quickly, and the runner runs faster than anyone.
This is unbelievable! It is unusual, unhappy, unknown and unfinished.
The development of new treatments is important for international organizations.
Information, communication and education are the foundations of modern nations.
The researchers discovered an unexpected relationship between the variables.
Questions and answers: the question was difficult, but the answer was correct.
The premise entails the hypothesis, or the hypothesis contradicts the premise.
Neutral statements are neither entailment nor contradiction.
Water boils at 100 degrees. Ice melts at 0 degrees. 1 2 3 4 5 6 7 8 9 10.
The river flows through the valley, and the mountains rise above the forest.
Germany, France, Italy, Spain, China, Japan, India, Brazil and Canada.
January, February, March, April, May, June, July, August, September, October.
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday.
The doctor examined the patient and the nurse prepared the medicine.
The scientists studied the planets, the stars and the galaxies.
He said: "I don't know." She replied: "You can't be serious."
It's the team's best season; the coach's strategy worked.
The market opened higher, but stocks closed lower after the announcement.
The police arrested the suspect near the bank on Friday night.
Students who study hard usually perform well in examinations.
The small cat and the big dog are friends; the cats and dogs are playing.
Happiness, kindness and darkness; careful, helpful and beautiful; quickly and slowly.
Reconstruction, reconsideration and representation were discussed at the meeting.
The European Union and the World Health Organization signed an agreement.
Barack Obama was born in Hawaii. Angela Merkel was chancellor of Germany.
The new building has twenty floors and three hundred windows.
Some people prefer coffee, others prefer tea, and a few drink only water.
José Müller met François in Zürich and São Paulo at a café; it was a naïve idea.
""".strip()


def _cache_root() -> pathlib.Path:
    # $PTV2_CACHE lets CI / clusters move every ptv2 cache off $HOME.
    base = os.environ.get("PTV2_CACHE")
    root = pathlib.Path(base) if base else pathlib.Path.home() / ".cache" / "ptv2"
    return root / "tiny-tokenizers"


def _check_kind(kind: str) -> None:
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny tokenizer kind {kind!r}; expected one of {TINY_KINDS}")


def _words(
    pre_tokenizer: pre_tokenizers.PreTokenizer, normalizer: normalizers.Normalizer | None = None
) -> Counter[str]:
    """Word frequencies of the corpus as the given pre-tokenizer splits it."""
    counts: Counter[str] = Counter()
    for line in _CORPUS.splitlines():
        text = normalizer.normalize_str(line) if normalizer is not None else line
        counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(text))
    return counts


def _train_bpe(
    words: Counter[str], n_merges: int, prefix: str = "", min_count: int = 2
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Plain BPE with a total order on ties (count, then pair), so every build is byte-identical.

    The ``tokenizers`` WordPiece/Unigram trainers break ties by Rust hash-map order, which changes
    per process, so they are not used. ``prefix`` marks non-initial symbols (WordPiece's "##").
    ``min_count=2`` keeps words seen once from becoming single tokens, so rare words keep splitting.
    Returns the merges and the frequency of each token in the final segmentation of the corpus.
    """
    # Sorted so the pair counts below are accumulated in a fixed order.
    segs = [([w[0]] + [prefix + c for c in w[1:]], n) for w, n in sorted(words.items())]
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for syms, n in segs:
            for pair in zip(syms, syms[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_count:
            break
        a, b = best
        merged = a + b[len(prefix) :]
        merges.append(best)
        for syms, _n in segs:
            i = 0
            while i < len(syms) - 1:
                if syms[i] == a and syms[i + 1] == b:
                    syms[i : i + 2] = [merged]
                i += 1
    freqs: Counter[str] = Counter()
    for syms, n in segs:
        for sym in syms:
            freqs[sym] += n
    return merges, freqs


def _merged_tokens(merges: list[tuple[str, str]], prefix: str = "") -> list[str]:
    # New tokens in merge order (as in GPT-2's vocab.json), without duplicates.
    return list(dict.fromkeys(a + b[len(prefix) :] for a, b in merges))


def _build_bert() -> BertTokenizerFast:
    specials = _SPECIALS["bert"]
    # Split words exactly as the class will (cased BertNormalizer + BertPreTokenizer).
    words = _words(
        pre_tokenizers.BertPreTokenizer(), normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    )
    alphabet = [p for c in _ALPHABET for p in (c, "##" + c)]
    n_merges = _VOCAB_SIZE["bert"] - len(specials) - len(alphabet)
    merges, _ = _train_bpe(words, n_merges, prefix="##")
    # Every char has a "c" and "##c" piece: WordPiece maps a whole word to [UNK] if one char has none.
    pieces = list(dict.fromkeys(specials + alphabet + _merged_tokens(merges, "##")))
    vocab = {piece: i for i, piece in enumerate(pieces)}
    # Cased like bert-large-cased; accents kept (real BERT strips them only when lower-casing).
    return BertTokenizerFast(
        vocab=vocab,
        do_lower_case=False,
        strip_accents=False,
        model_max_length=_MODEL_MAX_LENGTH,
    )


def _train_byte_level_bpe(kind: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    specials = _SPECIALS[kind]
    # Raw lines as GPT-2 saw text: line-initial words get pieces without "Ġ", all others with it.
    words = _words(pre_tokenizers.ByteLevel(add_prefix_space=False))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # all 256 bytes: nothing is ever unknown
    merges, _ = _train_bpe(words, _VOCAB_SIZE[kind] - len(specials) - len(alphabet))
    pieces = list(dict.fromkeys(specials + alphabet + _merged_tokens(merges)))
    return {piece: i for i, piece in enumerate(pieces)}, merges


def _lstrip_mask(token: str) -> AddedToken:
    # As in roberta-base / deberta-base: the mask eats the space before it ("a <mask>" -> "a", "<mask>").
    # Passing a plain str leaves a stray "Ġ" token before the mask in transformers 5.
    return AddedToken(token, lstrip=True, rstrip=False, normalized=False, special=True)


def _build_roberta() -> RobertaTokenizerFast:
    vocab, merges = _train_byte_level_bpe("roberta")
    return RobertaTokenizerFast(
        vocab=vocab, merges=merges, mask_token=_lstrip_mask("<mask>"), model_max_length=_MODEL_MAX_LENGTH
    )


def _build_deberta() -> DebertaTokenizerFast:
    # DeBERTa v1 reuses GPT-2's byte-level BPE, only with BERT-style special tokens.
    vocab, merges = _train_byte_level_bpe("deberta")
    return DebertaTokenizerFast(
        vocab=vocab, merges=merges, mask_token=_lstrip_mask("[MASK]"), model_max_length=_MODEL_MAX_LENGTH
    )


def _build_deberta_v2() -> DebertaV2TokenizerFast:
    specials = _SPECIALS["deberta-v2"]
    # SentencePiece style: "▁" marks word starts; punctuation split off as SentencePiece's
    # split-by-unicode-script does, so pieces are letters/digits only.
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.Punctuation(behavior="isolated"), pre_tokenizers.Metaspace(prepend_scheme="always")]
    )
    alphabet = ["▁"] + _ALPHABET
    merges, freqs = _train_bpe(_words(pre), _VOCAB_SIZE["deberta-v2"] - len(specials) - len(alphabet))
    pieces = list(dict.fromkeys(alphabet + _merged_tokens(merges)))
    # Unigram scores = log relative frequency of each piece in the BPE segmentation (one EM step);
    # unseen alphabet chars get half a count, so they are usable but never preferred.
    total = sum(freqs.values())
    scores = [(p, math.log(max(freqs[p], 0.5) / total)) for p in pieces]
    # Special tokens score 0.0: the class finds unk_id by looking up (unk_token, 0.0) in the list.
    vocab = [(s, 0.0) for s in specials] + scores
    return DebertaV2TokenizerFast(
        vocab=vocab,
        unk_id=specials.index("[UNK]"),
        model_max_length=_MODEL_MAX_LENGTH,
    )


_BUILDERS = {
    "bert": _build_bert,
    "roberta": _build_roberta,
    "deberta": _build_deberta,
    "deberta-v2": _build_deberta_v2,
}


def build_tiny_tokenizer(kind: str, save_dir: pathlib.Path | None = None) -> PreTrainedTokenizerFast:
    """Train and construct the tiny tokenizer of ``kind``; if ``save_dir`` is given, save it there."""
    _check_kind(kind)
    tokenizer = _BUILDERS[kind]()
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def tiny_tokenizer_dir(kind: str) -> pathlib.Path:
    """Directory holding the saved tiny tokenizer of ``kind`` (built on first use, then reused).

    Load it with ``AutoTokenizer.from_pretrained(tiny_tokenizer_dir(kind))``.
    """
    _check_kind(kind)
    target = _cache_root() / f"{kind}-{_CACHE_VERSION}"
    if (target / "tokenizer_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename: concurrent processes (pytest-xdist, sweeps) never see a
    # half-written directory; the loser of a race just discards its copy.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        build_tiny_tokenizer(kind, tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "tokenizer_config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tiny_tokenizer(kind: str, **kwargs: object) -> PreTrainedTokenizerFast:
    """``AutoTokenizer.from_pretrained`` on the cached dir (kwargs such as ``add_prefix_space`` pass through)."""
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir(kind)), **kwargs)
