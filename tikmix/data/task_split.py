"""The steering / evaluation split of a validation task: items that steer a mixture never score it.

Task gradients, TiKMiX-D/M, RegMix's targets and the assumption checks read a task's *steering*
half; stage 2 (table 1, figure 4, accuracy) reads its *evaluation* half only. Scoring a mixture on
the items it was fitted to would flatter every method that fits to them.

An item's place depends on its content only: items are ranked by the sha256 of the canonical JSON
of their parsed fields (:func:`item_digest`; not the line number, so reordering or appending to the
file moves no other item), and the first ``round(fraction · N)`` of that ranking steer. The split is
therefore balanced for tasks of a few rows too. Identical items share a digest and stay together:
when a group of duplicates straddles the boundary, all of it steers (the steering half is then a
little larger than ``round(fraction · N)``). Items are split before long texts are cut into
windows, so the windows of one item lie in one half.

Files (docs/architecture.md): ``results/data/tasks/{task}/steering.npz`` and ``evaluation.npz`` in
the format of :func:`tikmix.data.tasks.tokenize_task`, and ``split.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from tikmix.core.atomic import write_json_atomic
from tikmix.data.errors import DataError
from tikmix.data.tasks import TaskItem, read_task, tokenize_task
from tikmix.data.tokenizer import load_tokenizer

#: Fewest items a half may hold: one item is no estimate of a task's loss.
MIN_ITEMS_PER_HALF = 2


def item_digest(item: TaskItem) -> str:
    """sha256 of the canonical JSON of the item's parsed fields (everything but its line)."""
    fields = {
        "kind": item.kind,
        "text": item.text,
        "context": item.context,
        "continuation": item.continuation,
        "choices": list(item.choices) if item.choices is not None else None,
        "answer": item.answer,
    }
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TaskSplit:
    """A task's items in two disjoint halves, each in file order."""

    task: str
    fraction: float
    steering: list[TaskItem]
    evaluation: list[TaskItem]

    def record(self) -> dict[str, Any]:
        """``split.json``: the fraction, the counts, and each half's items (source line, sha256)."""

        def listed(items: list[TaskItem]) -> list[dict[str, Any]]:
            return [{"line": item.line, "sha256": item_digest(item)} for item in items]

        return {
            "task": self.task,
            "fraction": self.fraction,
            "items": len(self.steering) + len(self.evaluation),
            "steering_items": len(self.steering),
            "evaluation_items": len(self.evaluation),
            "steering": listed(self.steering),
            "evaluation": listed(self.evaluation),
        }


def split_task_items(
    task: str, items: list[TaskItem], fraction: float, min_items: int = MIN_ITEMS_PER_HALF
) -> TaskSplit:
    """Split ``items`` (:func:`tikmix.data.tasks.read_task`'s) into steering and evaluation halves.

    Raises:
        DataError: a half would hold fewer than ``min_items`` items (one line naming the task,
            its item count and the fraction), or ``fraction`` is not in (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"task '{task}': steering fraction must be in (0, 1), got {fraction}")
    digests = [item_digest(item) for item in items]
    n_steering = round(fraction * len(items))
    steering_digests = set(sorted(digests)[:n_steering])
    split = TaskSplit(
        task,
        fraction,
        steering=[i for i, d in zip(items, digests, strict=True) if d in steering_digests],
        evaluation=[i for i, d in zip(items, digests, strict=True) if d not in steering_digests],
    )
    if min(len(split.steering), len(split.evaluation)) < min_items:
        raise DataError(
            f"task '{task}' has {len(items)} items: at data.steering_fraction {fraction} that "
            f"is {len(split.steering)} steering and {len(split.evaluation)} evaluation items, "
            f"and each half needs at least {min_items} (add items or change the fraction)"
        )
    return split


def read_task_split(task: str, path: str | Path, fraction: float) -> TaskSplit:
    """Read and validate a task file, then split it (:func:`split_task_items`)."""
    return split_task_items(task, read_task(path), fraction)


def tokenize_task_split(
    task: str,
    path: str | Path,
    tokenizer: Tokenizer | str | Path,
    steering_path: str | Path,
    evaluation_path: str | Path,
    split_path: str | Path,
    seq_len: int,
    steering_fraction: float,
) -> dict[str, Any]:
    """Rule ``tokenize_task``: split the task file ``path`` and tokenize each half.

    Writes ``steering_path`` and ``evaluation_path`` (:func:`tikmix.data.tasks.tokenize_task`'s
    ``.npz``) and ``split_path`` (:meth:`TaskSplit.record`), each atomically. Returns each
    half's tokenization summary.
    """
    split = read_task_split(task, path, steering_fraction)
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = load_tokenizer(tokenizer)
    summary = {
        "steering": tokenize_task(path, tokenizer, steering_path, seq_len, split.steering),
        "evaluation": tokenize_task(path, tokenizer, evaluation_path, seq_len, split.evaluation),
    }
    write_json_atomic(split_path, split.record())
    return summary
