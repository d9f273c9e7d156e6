"""Progress lines of long jobs: tokens/s and ETA at least every 30 s of (injected) wall time."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch

from tikmix import progress
from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.influence import stages
from tikmix.models.checkpoint import load_checkpoint, save_checkpoint
from tikmix.models.evaluate import mean_loss
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.train import train

VOCAB, SEQ, ROWS = 64, 16, 24
PROMISE_SECONDS = 30.0
LINE = re.compile(r": (\d+)/(\d+) tokens \(.*\), \d+ tokens/s, ETA \d+s")
TRAINING_LINE = re.compile(r"step (\d+)/(\d+) .* \d+ tokens/s .* ETA \d+s")


class SlowedClock:
    """A clock that only moves when the model runs: ``seconds_per_forward`` per forward pass."""

    def __init__(self, seconds_per_forward: float):
        self.now, self.step = 0.0, seconds_per_forward

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def slowed(monkeypatch):
    clock = SlowedClock(seconds_per_forward=7.0)
    monkeypatch.setattr(progress, "clock", clock)
    hidden_states = TinyLlama.hidden_states

    def slow_hidden_states(self, input_ids):
        clock.now += clock.step
        return hidden_states(self, input_ids)

    monkeypatch.setattr(TinyLlama, "hidden_states", slow_hidden_states)
    return clock


class TimedLines(logging.Handler):
    """Records each progress line with the (injected) time it was logged at."""

    def __init__(self, clock: SlowedClock, line: re.Pattern = LINE):
        super().__init__(logging.INFO)
        self.clock, self.line, self.lines = clock, line, []

    def emit(self, record: logging.LogRecord) -> None:
        match = self.line.search(record.getMessage())
        if match:
            self.lines.append((self.clock.now, int(match[1]), int(match[2])))


def check_lines(handler: TimedLines, end: float) -> None:
    times = [0.0] + [t for t, _, _ in handler.lines]
    assert len(handler.lines) >= end / PROMISE_SECONDS, handler.lines
    assert max(np.diff(times)) <= PROMISE_SECONDS, handler.lines
    assert end - times[-1] <= PROMISE_SECONDS
    done, total = handler.lines[-1][1:]
    assert done == total  # the last line closes the job


@pytest.fixture
def workspace(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=16, n_layers=1, n_heads=2, max_seq_len=SEQ)
    checkpoint = save_checkpoint(
        tmp_path / "ckpt",
        TinyLlama(config),
        config,
        step=1,
        tokens_seen=0,
        mixture={},
        tokenizer="none",
        seed=0,
    )
    ids = np.random.default_rng(0).integers(0, VOCAB, (ROWS, SEQ + 1)).astype(np.int32)
    mask = np.ones_like(ids, dtype=np.uint8)
    np.savez(tmp_path / "task.npz", input_ids=ids, loss_mask=mask)
    return tmp_path, checkpoint


def test_a_slowed_task_gradient_job_logs_tokens_per_second_and_eta_every_30_seconds(
    workspace, slowed, caplog
):
    root, checkpoint = workspace
    caplog.set_level(logging.INFO, logger="tikmix.influence.stages")
    handler = TimedLines(slowed)
    logging.getLogger("tikmix.influence.stages").addHandler(handler)
    try:
        stages.task_gradients(
            checkpoint=checkpoint,
            task="t",
            task_file=root / "task.npz",
            gradient_pass=GradientPassSettings(
                tracked_modules=r"mlp\.\w+_proj$",
                projection=None,
                precision="fp32",
                batch_size=2,
                seq_len=None,
                seed=None,
                device="cpu",
            ),
            out=root / "task.zarr",
        )
    finally:
        logging.getLogger("tikmix.influence.stages").removeHandler(handler)
    assert slowed.now == 7.0 * ROWS / 2  # one forward pass per batch of 2 rows
    check_lines(handler, slowed.now)


def test_a_slowed_evaluation_logs_tokens_per_second_and_eta_every_30_seconds(
    workspace, slowed, caplog
):
    root, checkpoint = workspace
    caplog.set_level(logging.INFO, logger="tikmix.models.evaluate")
    model, _ = load_checkpoint(checkpoint)
    handler = TimedLines(slowed)
    logging.getLogger("tikmix.models.evaluate").addHandler(handler)
    try:
        with np.load(root / "task.npz") as data:
            mean_loss(model, data["input_ids"], data["loss_mask"], batch_size=1)
    finally:
        logging.getLogger("tikmix.models.evaluate").removeHandler(handler)
    assert slowed.now == 7.0 * ROWS
    check_lines(handler, slowed.now)


def test_a_slowed_training_run_logs_tokens_per_second_and_eta_every_30_seconds(workspace, slowed):
    # stage 1, stage 2, the RegMix and DoReMi proxies and lookahead all train through train()
    _, checkpoint = workspace
    model, _ = load_checkpoint(checkpoint)
    rng = np.random.default_rng(1)
    batches = (rng.integers(0, VOCAB, (2, SEQ + 1)) for _ in range(12))
    log = logging.getLogger("test_progress.training")
    log.setLevel(logging.INFO)
    handler = TimedLines(slowed, TRAINING_LINE)
    log.addHandler(handler)
    try:  # log_every far beyond the run: only the time trigger can print
        train(model, batches, total_steps=12, lr=1e-3, log_every=1000, logger=log)
    finally:
        log.removeHandler(handler)
    assert slowed.now == 7.0 * 12
    check_lines(handler, slowed.now)


def test_progress_logs_once_the_interval_has_passed_and_at_the_end(monkeypatch, caplog):
    clock = SlowedClock(0.0)
    monkeypatch.setattr(progress, "clock", clock)
    log = logging.getLogger("test_progress")
    tracker = progress.Progress(100, "job", log, interval=10.0)
    with caplog.at_level(logging.INFO, logger="test_progress"):
        for _ in range(10):
            clock.now += 4.0
            tracker.update(10)
    # lines at 12 s, 24 s, 36 s (each ≥ 10 s after the previous one) and at the end (40 s)
    assert [r.getMessage().split(":")[1].split()[0] for r in caplog.records] == [
        "30/100",
        "60/100",
        "90/100",
        "100/100",
    ]
