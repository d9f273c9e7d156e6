"""Validation tasks: row validation, loss masks on exactly the continuation, windows, choices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tikmix.data.errors import DataError
from tikmix.data.tasks import read_task, split_context, tokenize_task
from tikmix.data.tokenizer import train_tokenizer

TEXTS = [
    "Question: What is the capital of France?\nAnswer: Paris is the capital.",
    "The quick brown fox jumps over the lazy dog; Grüße, 東京 🚀.",
] * 30


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, vocab_size=300)


def write_task(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def masked_text(tok, ids, mask):
    return tok.decode([int(i) for i, m in zip(ids, mask, strict=True) if m])


def test_mask_covers_exactly_the_continuation(tok, tmp_path):
    rows = [
        {"context": "Question: What is the capital of France?\nAnswer:", "continuation": " Paris"},
        {"context": "Grüße aus ", "continuation": "東京 🚀"},  # trailing space moves across
        {"context": "", "continuation": "The quick brown fox"},  # empty context -> EOS
    ]
    write_task(tmp_path / "t.jsonl", rows)
    summary = tokenize_task(tmp_path / "t.jsonl", tok, tmp_path / "t.npz", seq_len=64)
    data = np.load(tmp_path / "t.npz")
    assert data["input_ids"].dtype == np.int32 and data["input_ids"].shape == (3, 65)
    assert data["loss_mask"].dtype == np.uint8 and not data["loss_mask"][:, 0].any()
    expected = [" Paris", " 東京 🚀", "The quick brown fox"]
    for ids, mask, cont in zip(data["input_ids"], data["loss_mask"], expected, strict=True):
        assert masked_text(tok, ids, mask) == cont
        n_real = len(tok.encode(cont, add_special_tokens=False).ids)
        assert mask.sum() == n_real
    assert data["input_ids"][2, 0] == 0  # the EOS that stands in for an empty context
    assert summary["n_scored_tokens"] == int(data["loss_mask"].sum())
    assert set(data.files) == {"input_ids", "loss_mask"}


def test_trailing_space_of_context_equals_leading_space_of_continuation(tok, tmp_path):
    a = write_task(tmp_path / "a.jsonl", [{"context": "Answer: ", "continuation": "Paris"}])
    b = write_task(tmp_path / "b.jsonl", [{"context": "Answer:", "continuation": " Paris"}])
    tokenize_task(a, tok, tmp_path / "a.npz", seq_len=16)
    tokenize_task(b, tok, tmp_path / "b.npz", seq_len=16)
    da, db = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(da["input_ids"], db["input_ids"])
    np.testing.assert_array_equal(da["loss_mask"], db["loss_mask"])
    assert split_context("ctx \n ", "x") == ("ctx", " \n x")


def test_long_context_is_truncated_from_the_left(tok, tmp_path):
    context = " ".join(f"w{i}" for i in range(200))
    write_task(tmp_path / "t.jsonl", [{"context": context, "continuation": " Paris"}])
    summary = tokenize_task(tmp_path / "t.jsonl", tok, tmp_path / "t.npz", seq_len=16)
    data = np.load(tmp_path / "t.npz")
    ids, mask = data["input_ids"][0], data["loss_mask"][0]
    ctx_ids = tok.encode(context, add_special_tokens=False).ids
    cont_ids = tok.encode(" Paris", add_special_tokens=False).ids
    np.testing.assert_array_equal(ids, (ctx_ids + cont_ids)[-17:])  # full row, no padding
    assert masked_text(tok, ids, mask) == " Paris" and summary["n_truncated_contexts"] == 1


def test_text_rows_are_windowed_and_every_token_scored_once(tok, tmp_path):
    long_text = " ".join(TEXTS[:6])
    write_task(tmp_path / "t.jsonl", [{"text": long_text}, {"text": "Answer: Paris"}])
    seq_len = 10
    tokenize_task(tmp_path / "t.jsonl", tok, tmp_path / "t.npz", seq_len=seq_len)
    data = np.load(tmp_path / "t.npz")
    tokens = tok.encode(long_text, add_special_tokens=False).ids
    n_windows = -(-(len(tokens) - 1) // seq_len)
    ids, mask = data["input_ids"][:n_windows], data["loss_mask"][:n_windows]
    # window k starts at token k * seq_len; its scored tokens are exactly tokens[1:] in order
    for k in range(n_windows):
        window = tokens[k * seq_len : k * seq_len + seq_len + 1]
        np.testing.assert_array_equal(ids[k, : len(window)], window)
    scored = [
        int(t)
        for row, m in zip(ids, mask, strict=True)
        for t, keep in zip(row, m, strict=True)
        if keep
    ]
    assert scored == tokens[1:]
    short = tok.encode("Answer: Paris", add_special_tokens=False).ids
    assert data["input_ids"].shape[0] == n_windows + 1
    assert data["loss_mask"][-1].sum() == len(short) - 1
    assert (data["input_ids"][-1, len(short) :] == 0).all()


def test_choice_task_arrays(tok, tmp_path):
    rows = [
        {
            "context": "Question: capital of France?\nAnswer:",
            "choices": [" Paris", " Rome", " Oslo"],
            "answer": 0,
        },
        {
            "context": "Fox:",
            "choices": [" quick", " lazy"],
            "answer": 1,
            "continuation": " lazy dog",
        },
    ]
    write_task(tmp_path / "t.jsonl", rows)
    summary = tokenize_task(tmp_path / "t.jsonl", tok, tmp_path / "t.npz", seq_len=32)
    data = np.load(tmp_path / "t.npz")
    assert masked_text(tok, data["input_ids"][0], data["loss_mask"][0]) == " Paris"
    assert masked_text(tok, data["input_ids"][1], data["loss_mask"][1]) == " lazy dog"
    np.testing.assert_array_equal(data["choice_item"], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(data["answer"], [0, 1])
    choices = [c for r in rows for c in r["choices"]]
    for ids, mask, choice in zip(data["choice_ids"], data["choice_mask"], choices, strict=True):
        assert masked_text(tok, ids, mask) == choice
    assert data["choice_ids"].shape == (5, 33) and summary["n_choices"] == 5


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        (
            [{"text": "a"}, {"context": "a", "continuation": "b"}],
            r"t\.jsonl:2: a continuation row, but line 1 is a text row",
        ),
        ([{"question": "a"}], r"t\.jsonl:1: unknown row shape"),
        ([{"continuation": "b"}], r"t\.jsonl:1: row has no 'context'"),
        ([{"context": "a"}], r"t\.jsonl:1: row has 'context' but no 'continuation' or 'choices'"),
        ([{"text": "a", "context": "b"}], r"t\.jsonl:1: mixes 'text' with \['context'\]"),
        ([{"context": "a", "continuation": ""}], r"t\.jsonl:1: 'continuation' is empty"),
        ([{"context": 3, "continuation": "b"}], r"t\.jsonl:1: 'context' must be a string"),
        (
            [{"context": "a", "choices": [" x", " y"], "answer": 2}],
            r"t\.jsonl:1: 'answer' 2 is out of range for 2 choices",
        ),
        (
            [{"context": "a", "choices": [" x", " y"], "answer": True}],
            r"t\.jsonl:1: 'answer' must be an integer",
        ),
        (
            [{"context": "a", "choices": [" x"], "answer": 0}],
            r"t\.jsonl:1: 'choices' must be a list of at least 2",
        ),
        (
            [{"context": "a", "choices": [" x", ""], "answer": 0}],
            r"t\.jsonl:1: choices\[1\] must be a non-empty string",
        ),
        (
            [{"context": "a", "choices": [" x", " y"]}],
            r"t\.jsonl:1: 'choices' and 'answer' must be given together",
        ),
        ([], r"t\.jsonl: task file has no rows"),
    ],
)
def test_invalid_rows_name_file_and_line(tmp_path, rows, pattern):
    write_task(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match=pattern):
        read_task(tmp_path / "t.jsonl")


def test_long_continuation_is_truncated_to_seq_len(tok, tmp_path):
    write_task(tmp_path / "t.jsonl", [{"context": "a", "continuation": " x" * 40}])
    summary = tokenize_task(tmp_path / "t.jsonl", tok, tmp_path / "t.npz", seq_len=8)
    assert summary["n_truncated_continuations"] == 1
    with np.load(tmp_path / "t.npz") as data:
        assert data["loss_mask"][0, 1:].sum() == 8 and data["loss_mask"][0, 0] == 0


def test_tokenization_errors(tok, tmp_path):
    write_task(tmp_path / "s.jsonl", [{"text": "Answer: Paris"}, {"text": "a"}])
    with pytest.raises(DataError, match=r"s\.jsonl:2: text has fewer than 2 tokens"):
        tokenize_task(tmp_path / "s.jsonl", tok, tmp_path / "s.npz", seq_len=8)
    assert not (tmp_path / "s.npz").exists()
