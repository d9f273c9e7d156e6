"""The steering / evaluation split of every task: items that steer a mixture never score it."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
from workflow_helpers import Workflow, job_counts

from tikmix.data.errors import DataError
from tikmix.data.task_split import (
    item_digest,
    read_task_split,
    split_task_items,
    tokenize_task_split,
)
from tikmix.data.tasks import read_task
from tikmix.data.tokenizer import train_tokenizer

QA_ROWS = [{"context": f"Question {i}:", "continuation": f" answer {i}"} for i in range(40)]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def contents(items):
    return sorted(item_digest(item) for item in items)


@pytest.mark.parametrize("n", range(2, 11))
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_halves_are_disjoint_cover_every_item_and_are_balanced(tmp_path, n, fraction):
    items = read_task(write_rows(tmp_path / "t.jsonl", QA_ROWS[:n]))
    split = split_task_items("t", items, fraction, min_items=0)
    steering, evaluation = contents(split.steering), contents(split.evaluation)
    assert set(steering).isdisjoint(evaluation)
    assert sorted(steering + evaluation) == contents(items)
    assert len(split.steering) == round(fraction * n)
    again = split_task_items("t", read_task(tmp_path / "t.jsonl"), fraction, min_items=0)
    assert (again.steering, again.evaluation) == (split.steering, split.evaluation)
    # Each half keeps the order of the file.
    assert [i.line for i in split.steering] == sorted(i.line for i in split.steering)


def test_reordering_the_file_keeps_every_item_in_its_half(tmp_path):
    rows = QA_ROWS[:25]
    split = read_task_split("t", write_rows(tmp_path / "a.jsonl", rows), 0.5)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != rows
    moved = read_task_split("t", write_rows(tmp_path / "b.jsonl", shuffled), 0.5)
    assert contents(moved.steering) == contents(split.steering)
    assert contents(moved.evaluation) == contents(split.evaluation)
    # Appending an item moves no other item out of the half it was in.
    grown = read_task_split("t", write_rows(tmp_path / "c.jsonl", rows + QA_ROWS[25:26]), 0.5)
    kept = set(contents(grown.steering)) | set(contents(grown.evaluation))
    assert len(kept) == 26
    moved_out = set(contents(split.steering)) - set(contents(grown.steering))
    assert len(moved_out) <= 1, "at most the boundary item changes half"


def test_duplicate_items_stay_in_one_half(tmp_path):
    rows = [QA_ROWS[0]] * 3 + QA_ROWS[1:6]
    split = read_task_split("t", write_rows(tmp_path / "t.jsonl", rows), 0.5)
    assert set(contents(split.steering)).isdisjoint(contents(split.evaluation))
    assert len(split.steering) + len(split.evaluation) == 8


@pytest.mark.parametrize("n, fraction", [(3, 0.5), (2, 0.5), (10, 0.1), (10, 0.9)])
def test_a_task_too_small_to_split_fails_in_one_line_naming_it(tmp_path, n, fraction):
    items = read_task(write_rows(tmp_path / "t.jsonl", QA_ROWS[:n]))
    with pytest.raises(DataError) as failure:
        split_task_items("tiny_task", items, fraction)
    message = str(failure.value)
    assert "\n" not in message
    assert f"task 'tiny_task' has {n} items" in message
    assert f"data.steering_fraction {fraction}" in message


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([row["context"] + row["continuation"] for row in QA_ROWS], 300)


def test_tokenize_task_split_writes_both_halves_and_the_split(tmp_path, tokenizer):
    """Long texts are split by item before windowing: an item's windows lie in one half."""
    rows = [{"text": " ".join(f"word{i} number{j}" for j in range(3 + 4 * i))} for i in range(7)]
    path = write_rows(tmp_path / "t.jsonl", rows)
    paths = {part: tmp_path / "out" / f"{part}.npz" for part in ("steering", "evaluation")}
    summary = tokenize_task_split(
        "t",
        path,
        tokenizer,
        paths["steering"],
        paths["evaluation"],
        tmp_path / "out" / "split.json",
        seq_len=8,
        steering_fraction=0.5,
    )
    record = json.loads((tmp_path / "out" / "split.json").read_text())
    assert (record["items"], record["steering_items"], record["evaluation_items"]) == (7, 4, 3)
    assert record["task"] == "t" and record["fraction"] == 0.5
    lines = {part: [entry["line"] for entry in record[part]] for part in paths}
    assert sorted(lines["steering"] + lines["evaluation"]) == list(range(1, 8))
    for part in paths:
        windows = 0
        for line in lines[part]:
            text = rows[line - 1]["text"]
            n_tokens = len(tokenizer.encode(text, add_special_tokens=False).ids)
            windows += -(-(n_tokens - 1) // 8)  # every token after the first scored once
        with np.load(paths[part]) as data:
            assert data["input_ids"].shape == (windows, 9)
        assert summary[part]["n_items"] == len(lines[part])
    with pytest.raises(DataError, match="task 'small' has 3 items"):
        tokenize_task_split(
            "small",
            write_rows(tmp_path / "small.jsonl", rows[:3]),
            tokenizer,
            tmp_path / "s.npz",
            tmp_path / "e.npz",
            tmp_path / "split.json",
            seq_len=8,
            steering_fraction=0.5,
        )


STEERING, EVALUATION = "steering.npz", "evaluation.npz"
SCORING_RULES = {"evaluate_checkpoint", "evaluate_stage2"}


@pytest.mark.workflow
def test_no_rule_reads_both_halves_and_only_stage2_reads_the_evaluation_half(workflow_dir):
    """In the whole DAG of the tiny study: the scoring rules get every task's evaluation half and
    no steering half; every other reader of task files gets the steering half only."""
    jobs = Workflow(workflow_dir).plan()
    tasks = sorted(Workflow(workflow_dir).config()["tasks"])
    readers = {}
    for job in jobs:
        halves = {
            os.path.basename(path)
            for path in job.inputs
            if "results/data/tasks/" in path and path.endswith(".npz")
        }
        if halves:
            readers.setdefault(job.rule, set()).update(halves)
        evaluation = [p for p in job.inputs if p.endswith(EVALUATION)]
        if job.rule in SCORING_RULES:
            assert STEERING not in halves, str(job)
            assert sorted(p.split("/")[-2] for p in evaluation) == tasks, str(job)
        else:
            assert not evaluation, f"{job} reads an evaluation half"
    assert {rule for rule, halves in readers.items() if EVALUATION in halves} == SCORING_RULES
    steering_readers = {rule for rule, halves in readers.items() if halves == {STEERING}}
    assert {"task_gradients", "mixture_regmix"} <= steering_readers
    assert set(readers) == SCORING_RULES | steering_readers
    (report,) = [job for job in jobs if job.rule == "report"]
    splits = [p for p in report.inputs if p.endswith("split.json")]
    assert sorted(p.split("/")[-2] for p in splits) == tasks


@pytest.mark.workflow
def test_steering_items_never_reach_an_evaluation_score(completed_workflow, tmp_path):
    """Replace every steering item's tokens with random tokens (keeping the files' times, so
    nothing that steers reruns) and score again: the stage-2 records are bit-identical."""
    flow = completed_workflow.copy(tmp_path / "work")
    results = flow.workdir / "results"
    assert (results / "evaluation" / "tikmix_d" / "seed0.json").is_file()
    rng = np.random.default_rng(0)
    for path in sorted((results / "data" / "tasks").glob(f"*/{STEERING}")):
        with np.load(path) as data:
            arrays = dict(data)
        ids = arrays["input_ids"]
        noise = rng.integers(1, 500, ids.shape, dtype=ids.dtype)
        arrays["input_ids"] = np.where(ids > 0, noise, 0).astype(ids.dtype)
        stat = path.stat()
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # TiKMiX-D's mixture is fitted to the steering half; natural's reads no task.
    records = [f"results/evaluation/{method}/seed0.json" for method in ("natural", "tikmix_d")]
    before_files = ["results/evaluation/checkpoint_tasks.json", *records]
    before = {path: (flow.workdir / path).read_bytes() for path in before_files}
    forced = (*records, "--forcerun", "evaluate_checkpoint", "evaluate_stage2")
    assert job_counts(flow.plan(*forced)) == {"evaluate_checkpoint": 1, "evaluate_stage2": 2}
    flow.snakemake(*forced)
    for path, old in before.items():
        assert (flow.workdir / path).read_bytes() == old, path
