"""Validation tasks: read and validate task jsonl files, tokenize them into ``.npz`` arrays.

A task file holds rows of exactly one shape:

* ``{"text": ...}`` — language modelling: every token after the first is scored. A text longer than
  ``seq_len + 1`` tokens is cut into windows that overlap by one token (window ``k`` starts at token
  ``k · seq_len``), so every token after the first is scored exactly once.
* ``{"context": ..., "continuation": ...}`` — only the continuation's tokens are scored.
* ``{"context": ..., "choices": [...], "answer": i}`` (``continuation`` optional) — multiple choice:
  the scored continuation is ``continuation`` if given, else ``choices[answer]``; every choice is
  also tokenized after the context for accuracy.

Other keys (ids, subjects, ...) are ignored. Context and continuation are tokenized separately and
concatenated (as lm-eval does), so the mask boundary is exact. Whitespace at the end of the context is
moved to the start of the continuation first, so ``"Answer: " + "Paris"`` and ``"Answer:" + " Paris"``
both become the tokens of ``"Answer:"`` followed by those of ``" Paris"`` — the way a byte-level BPE
splits running text, where a space belongs to the word after it. An empty context becomes the single
EOS token, so the first continuation token is scored too. When context + continuation exceed
``seq_len + 1`` tokens the context is truncated from the left; a continuation longer than ``seq_len``
tokens is an error.

The ``.npz`` (docs/architecture.md): ``input_ids`` int32 ``[N, seq_len + 1]`` padded with 0,
``loss_mask`` uint8 (1 = scored; column 0 is never scored), and for multiple-choice tasks
``choice_ids`` / ``choice_mask`` ``[Σ choices, seq_len + 1]``, ``choice_item`` ``[Σ choices]`` (the
item each row belongs to) and ``answer`` ``[N]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from tikmix.core.atomic import atomic_output
from tikmix.data.errors import DataError
from tikmix.data.sources import iter_jsonl_rows
from tikmix.data.tokenizer import eos_id, load_tokenizer

PAD_ID = 0
TEXT, CONTINUATION, CHOICE = "text", "continuation", "choice"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskItem:
    """One validated task row. ``continuation`` is the scored continuation (for choice rows,
    ``choices[answer]`` when the row has no ``continuation``)."""

    line: int
    kind: str
    text: str | None = None
    context: str | None = None
    continuation: str | None = None
    choices: tuple[str, ...] | None = None
    answer: int | None = None


def _string(row: dict[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise DataError(f"{where}: {key!r} is empty")
    return value


def _parse_row(row: dict[str, Any], where: str, line: int) -> TaskItem:
    if "text" in row:
        extra = [k for k in ("context", "continuation", "choices", "answer") if k in row]
        if extra:
            raise DataError(f"{where}: mixes 'text' with {extra}; use one row shape")
        return TaskItem(line, TEXT, text=_string(row, "text", where))
    if "context" not in row:
        if "continuation" in row or "choices" in row:
            raise DataError(f"{where}: row has no 'context'")
        raise DataError(
            f"{where}: unknown row shape (keys {sorted(row)}); expected 'text', or 'context' with "
            "'continuation' and/or 'choices' + 'answer'"
        )
    context = _string(row, "context", where, allow_empty=True)
    if "choices" not in row and "answer" not in row:
        if "continuation" not in row:
            raise DataError(f"{where}: row has 'context' but no 'continuation' or 'choices'")
        return TaskItem(
            line, CONTINUATION, context=context, continuation=_string(row, "continuation", where)
        )
    if "choices" not in row or "answer" not in row:
        raise DataError(f"{where}: 'choices' and 'answer' must be given together")
    choices = row["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise DataError(f"{where}: 'choices' must be a list of at least 2 strings")
    for i, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice:
            raise DataError(f"{where}: choices[{i}] must be a non-empty string, got {choice!r}")
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise DataError(f"{where}: 'answer' must be an integer index, got {answer!r}")
    if not 0 <= answer < len(choices):
        raise DataError(f"{where}: 'answer' {answer} is out of range for {len(choices)} choices")
    continuation = _string(row, "continuation", where) if "continuation" in row else choices[answer]
    return TaskItem(line, CHOICE, None, context, continuation, tuple(choices), answer)


def read_task(path: str | Path) -> list[TaskItem]:
    """Read and validate every row of a task jsonl file (one row shape per file).

    Raises DataError with ``path:line`` for malformed JSON, unknown or mixed row shapes, wrong
    types, empty strings, or an answer index out of range; and for a file without rows.
    """
    items: list[TaskItem] = []
    for lineno, row in iter_jsonl_rows(path):
        item = _parse_row(row, f"{path}:{lineno}", lineno)
        if items and item.kind != items[0].kind:
            raise DataError(
                f"{path}:{lineno}: a {item.kind} row, but line {items[0].line} is a "
                f"{items[0].kind} row; a task file holds rows of one shape"
            )
        items.append(item)
    if not items:
        raise DataError(f"{path}: task file has no rows")
    return items


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the start of the continuation (lm-eval rule)."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


class _Packer:
    """Turns items into fixed-length ``[seq_len + 1]`` rows of ids and loss masks."""

    def __init__(self, tokenizer: Tokenizer, seq_len: int, path: Path) -> None:
        self.tokenizer, self.seq_len, self.path = tokenizer, seq_len, path
        self.eos = eos_id(tokenizer)
        self.n_truncated = 0
        self.n_truncated_continuations = 0

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def row(self, tokens: list[int], n_scored: int) -> tuple[np.ndarray, np.ndarray]:
        """Left-aligned, zero-padded ids and a mask over the last ``n_scored`` real tokens."""
        ids = np.full(self.seq_len + 1, PAD_ID, dtype=np.int32)
        mask = np.zeros(self.seq_len + 1, dtype=np.uint8)
        ids[: len(tokens)] = tokens
        mask[len(tokens) - n_scored : len(tokens)] = 1
        return ids, mask

    def text_rows(self, item: TaskItem) -> list[tuple[np.ndarray, np.ndarray]]:
        tokens = self.encode(item.text)
        if len(tokens) < 2:
            raise DataError(
                f"{self.path}:{item.line}: text has fewer than 2 tokens; nothing to score"
            )
        rows = []
        for start in range(0, len(tokens) - 1, self.seq_len):
            window = tokens[start : start + self.seq_len + 1]
            rows.append(self.row(window, len(window) - 1))
        return rows

    def pair_row(self, item: TaskItem, continuation: str) -> tuple[np.ndarray, np.ndarray]:
        context, continuation = split_context(item.context, continuation)
        ctx = self.encode(context) or [self.eos]
        cont = self.encode(continuation)
        if len(cont) > self.seq_len:
            # Scoring the first seq_len tokens keeps the item (a long multiple-choice option,
            # say) instead of failing the task; the summary counts how often this happened.
            log.warning(
                "%s:%d: continuation has %d tokens, more than seq_len=%d; its first %d are scored",
                self.path,
                item.line,
                len(cont),
                self.seq_len,
                self.seq_len,
            )
            self.n_truncated_continuations += 1
            cont = cont[: self.seq_len]
        keep = self.seq_len + 1 - len(cont)
        if len(ctx) > keep:
            self.n_truncated += 1
            ctx = ctx[len(ctx) - keep :]
        return self.row(ctx + cont, len(cont))


def tokenize_task(
    path: str | Path,
    tokenizer: Tokenizer | str | Path,
    out_path: str | Path,
    seq_len: int,
    items: list[TaskItem] | None = None,
) -> dict[str, Any]:
    """Validate and tokenize a task file into ``out_path`` (``.npz``, written atomically).

    Args:
        path: task jsonl (see the module docstring for row shapes).
        tokenizer: a loaded tokenizer or the path of a ``tokenizer.json``.
        out_path: the ``.npz`` to write.
        seq_len: model context length; rows have ``seq_len + 1`` tokens.
        items: the items of ``path`` to tokenize (:func:`read_task`'s, one half of a split:
            :mod:`tikmix.data.task_split`); all of the file's when None.

    Returns:
        A summary: ``kind``, ``n_items``, ``n_sequences``, ``n_scored_tokens``,
        ``n_truncated_contexts``, and ``n_choices`` for multiple-choice tasks.
    """
    path = Path(path)
    if seq_len < 1:
        raise DataError(f"seq_len must be positive, got {seq_len}")
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = load_tokenizer(tokenizer)
    items = read_task(path) if items is None else items
    packer = _Packer(tokenizer, seq_len, path)
    kind = items[0].kind
    arrays: dict[str, np.ndarray] = {}
    if kind == TEXT:
        rows = [r for item in items for r in packer.text_rows(item)]
    else:
        rows = [packer.pair_row(item, item.continuation) for item in items]
    arrays["input_ids"] = np.stack([ids for ids, _ in rows])
    arrays["loss_mask"] = np.stack([mask for _, mask in rows])
    summary = {
        "kind": kind,
        "n_items": len(items),
        "n_sequences": len(rows),
        "n_scored_tokens": int(arrays["loss_mask"].sum()),
    }
    if kind == CHOICE:
        choice_rows = [packer.pair_row(item, c) for item in items for c in item.choices]
        arrays["choice_ids"] = np.stack([ids for ids, _ in choice_rows])
        arrays["choice_mask"] = np.stack([mask for _, mask in choice_rows])
        arrays["choice_item"] = np.repeat(
            np.arange(len(items), dtype=np.int32), [len(item.choices) for item in items]
        )
        arrays["answer"] = np.array([item.answer for item in items], dtype=np.int64)
        summary["n_choices"] = len(choice_rows)
    summary["n_truncated_contexts"] = packer.n_truncated
    summary["n_truncated_continuations"] = packer.n_truncated_continuations
    with atomic_output(out_path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return summary
