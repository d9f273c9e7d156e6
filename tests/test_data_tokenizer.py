"""Tokenizer training, loading and the balanced training-text sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from tikmix.data.errors import DataError
from tikmix.data.sources import DomainSource
from tikmix.data.tokenizer import (
    EOS_TOKEN,
    eos_id,
    load_tokenizer,
    sample_training_text,
    token_dtype,
    train_tokenizer,
    vocab_size,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Grüße aus Köln — naïve café, façade; 東京は晴れ 🌞🚀 ",
    "def f(x):\n\treturn x ** 2  # tabs\tand  double  spaces\r\n",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        "  leading and trailing spaces  ",
        "Grüße, 東京, and emoji 🧪🌍 — never seen: ǅ ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "\x00\x01 control chars\n\n\ttabs",
        "",
    ],
)
def test_byte_level_round_trip(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids) == text


def test_eos_is_id_zero_and_training_is_deterministic(tokenizer, tmp_path):
    assert tokenizer.token_to_id(EOS_TOKEN) == 0 and eos_id(tokenizer) == 0
    assert vocab_size(tokenizer) <= 400
    again = train_tokenizer(CORPUS, vocab_size=400, out_path=tmp_path / "tok" / "tokenizer.json")
    assert again.to_str() == tokenizer.to_str()
    loaded = load_tokenizer(tmp_path / "tok" / "tokenizer.json")
    assert loaded.encode(CORPUS[1]).ids == tokenizer.encode(CORPUS[1]).ids
    with pytest.raises(DataError, match="too small for a byte-level BPE"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match=r"tokenizer file not found: .*nope\.json"):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match=r"bad\.json: not a tokenizers tokenizer\.json"):
        load_tokenizer(tmp_path / "bad.json")
    no_eos = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    no_eos.save(str(tmp_path / "noeos.json"))
    with pytest.raises(DataError, match=r"noeos\.json: tokenizer has no end-of-document"):
        load_tokenizer(tmp_path / "noeos.json")


def test_eos_of_a_foreign_tokenizer_is_recorded():
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "a": 1, "</s>": 2}, unk_token="a"))
    tok.add_special_tokens(["</s>"])
    assert eos_id(tok) == 2


def test_token_dtype_threshold():
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32


def test_training_sample_is_balanced_round_robin(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"text": "b" * 1000}) + "\n" for _ in range(50)))
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"text": "s" * 300}) + "\n")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": "o" * 700}) + "\n" for _ in range(50)))
    sources = {n: DomainSource(n, str(tmp_path / f"{n}.jsonl")) for n in ("big", "small", "other")}
    pieces = list(sample_training_text(sources, char_budget=5000, piece_chars=400))
    chars = {c: sum(len(p) for p in pieces if p[0] == c) for c in "bso"}
    assert sum(chars.values()) == 5000
    assert chars["s"] == 300  # the small domain is used whole
    assert abs(chars["b"] - chars["o"]) <= 400  # the others share the rest evenly (± one piece)
    assert max(len(p) for p in pieces) <= 400
    assert pieces == list(sample_training_text(sources, char_budget=5000, piece_chars=400))
