"""Texts longer than a row holds are encoded from a prefix: the same first ids, bounded memory.

Found by an audit: `build` and `stats --tokenizer` needed ~150 bytes a character of the longest
message (5 GB for 30 MB; a 300 MB message aborted inside the tokenizer), though a row keeps
max_length tokens."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from oasst_data.long_texts import MARGIN_CHARS, BoundedEncoder, longest_token_chars

from .conftest import FIXTURE_TOKENIZER, REAL_TOKENIZER, needs_real_tokenizer

PIECES = ["the", " ", "  ", "\n", "quick", "Ünïcödé", "日本語", "12345", "!?", "\t", "    ", "e\u0301", "🙂", "a" * 40]


def encoder(folder) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.encode_special_tokens = True
    return tokenizer


FIXTURE_ENCODER = encoder(FIXTURE_TOKENIZER)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.sampled_from(PIECES), min_size=50, max_size=400), keep=st.integers(1, 40), repeat=st.integers(1, 60))
def test_the_first_ids_of_a_capped_text_are_those_of_the_whole(pieces, keep, repeat):
    text = "".join(pieces) * repeat
    bounded = BoundedEncoder(FIXTURE_ENCODER, keep)
    whole = FIXTURE_ENCODER.encode(text, add_special_tokens=False).ids
    (got,) = bounded.encode_ids([text])
    if len(text) > bounded.cap:
        assert got == whole[:keep] and bounded.capped == 1 and len(whole) > keep
    else:
        assert got == whole and bounded.capped == 0


def test_a_batch_mixes_capped_and_whole_texts():
    keep = 5
    bounded = BoundedEncoder(FIXTURE_ENCODER, keep)
    long = "word " * (bounded.cap // 5 + 100)
    texts = ["short one", long, "another", long + "x"]
    got = bounded.encode_ids(texts)
    assert [len(ids) for ids in got] == [len(FIXTURE_ENCODER.encode(t, add_special_tokens=False).ids) if t in ("short one", "another") else keep for t in texts]
    assert bounded.capped == 2
    assert bounded.cap == keep * longest_token_chars(FIXTURE_ENCODER) + MARGIN_CHARS


@needs_real_tokenizer
def test_pythias_tokenizer_gives_the_same_first_ids_from_the_prefix():
    real = encoder(REAL_TOKENIZER)
    keep = 64
    bounded = BoundedEncoder(real, keep)
    assert longest_token_chars(real) == 512  # a run of 512 spaces is one token: the bound is wide
    paragraph = "Open-Assistant answers questions.\n\n    indented code();  " + " " * 600 + "after a long run\n"
    text = paragraph * (bounded.cap // len(paragraph) + 2)
    assert len(text) > bounded.cap
    assert bounded.encode_ids([text])[0] == real.encode(text, add_special_tokens=False).ids[:keep]


def test_a_build_row_from_a_huge_message_is_the_truncated_row(tmp_path):
    """The row of a thread whose answer is far past max_length: the first max_length ids, as
    without the cap (the whole text encoded)."""
    from oasst_data.conversation import Role, Source, Split, Thread, Turn
    from oasst_data.shards.tokenize import ThreadTokenizer
    from oasst_data.tokenizer import load_tokenizer

    loaded = load_tokenizer(str(FIXTURE_TOKENIZER))
    tokenizer = ThreadTokenizer(loaded, max_length=32)
    answer = "a long answer with words " * 40_000  # ~1 MB: far past the cap at 32 tokens
    thread = Thread("t", "t", Source.ALPACA, "en", Split.TRAIN, (Turn(Role.PROMPTER, "Q?"), Turn(Role.ASSISTANT, answer)))
    batch = tokenizer.tokenize([thread])
    uncapped = ThreadTokenizer(loaded, max_length=32)
    uncapped._bounded.cap = 10**12  # no cap: the whole text encoded
    expected = uncapped.tokenize([thread])
    assert batch.input_ids.tolist() == expected.input_ids.tolist() and batch.truncated == [True]
    assert tokenizer._bounded.capped == 1 and uncapped._bounded.capped == 0


def test_stats_counts_a_huge_message_as_over_long_and_says_totals_are_lower_bounds(tmp_path, caplog):
    import json

    from oasst_data.stats import export_stats

    path = tmp_path / "alpaca.jsonl"
    path.write_text(json.dumps({"instruction": "Q?", "input": "", "output": "word " * 300_000}) + "\n")
    with caplog.at_level("WARNING", logger="oasst_data"):
        report = export_stats(alpaca=[str(path)], tokenizer=str(FIXTURE_TOKENIZER), max_length=64)
    assert "1 message(s) longer than" in caplog.text and "token totals are lower bounds" in caplog.text
    threads = report["export"]["threads"]
    assert threads["over_max_length"] == 1 and threads["tokens"]["max"] > 64


def test_a_token_longer_than_the_vocabularys_longest_falls_back_to_the_whole_text():
    """Found by a review: WordPiece maps a word over 100 characters to one [UNK], so a token may
    cover more than the longest vocabulary entry; the cut word then split into other pieces."""
    import random

    from tokenizers import models, normalizers, pre_tokenizers, trainers

    rng = random.Random(0)
    corpus = [" ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 8))) for _ in range(30)) for _ in range(300)]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]"]))
    for keep in (30, 37, 100):
        bounded = BoundedEncoder(wordpiece, keep)
        text = " ".join(["j" * 150] * (bounded.cap // 151 + 50))  # each word one [UNK] of 150 characters
        assert bounded.encode_ids([text])[0][:keep] == wordpiece.encode(text, add_special_tokens=False).ids[:keep]
