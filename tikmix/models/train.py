"""The training loop: AdamW with a cosine or warmup-stable-decay schedule.

It consumes an iterator of numpy batches ``[B, L + 1]`` (the sequence convention of
:mod:`tikmix.models.loss`), so it does not depend on how the caller samples data; the workflow
feeds it sequences drawn by the mixture sampler. The same loop trains stage 1 from scratch and
continues stage 2 from a checkpoint with its optimizer state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tikmix.models.device import resolve_device
from tikmix.models.loss import token_losses

Schedule = Literal["cosine", "wsd"]
CheckpointCallback = Callable[[int, int, torch.optim.Optimizer], None]

_LOG = logging.getLogger(__name__)


def learning_rate(
    step: int,
    total_steps: int,
    *,
    lr: float,
    schedule: Schedule = "cosine",
    warmup_fraction: float = 0.0,
    decay_fraction: float = 0.2,
    min_lr_ratio: float = 0.1,
) -> float:
    """Learning rate of optimizer update ``step`` (1-based) of ``total_steps``.

    Both schedules warm up linearly over the first ``round(warmup_fraction · total_steps)``
    updates, reaching ``lr`` at the end of warm-up, and end at ``min_lr_ratio · lr`` on the last
    update. ``cosine`` then follows a half cosine from ``lr`` down to the minimum; ``wsd``
    (warmup-stable-decay, Hu et al. 2024) holds ``lr`` and decays linearly to the minimum over the
    last ``round(decay_fraction · total_steps)`` updates.
    """
    if total_steps < 1 or not 1 <= step <= total_steps:
        raise ValueError(f"step must be in [1, total_steps={total_steps}], got {step}")
    if schedule not in ("cosine", "wsd"):
        raise ValueError(f"unknown schedule {schedule!r}; expected 'cosine' or 'wsd'")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1], got {warmup_fraction}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if schedule == "wsd" and not (0.0 < decay_fraction <= 1.0 - warmup_fraction):
        raise ValueError(
            "wsd needs 0 < decay_fraction and warmup_fraction + decay_fraction <= 1, "
            f"got decay_fraction={decay_fraction}, warmup_fraction={warmup_fraction}"
        )
    warmup = round(warmup_fraction * total_steps)
    if step <= warmup:
        return lr * step / warmup
    min_lr = min_lr_ratio * lr
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay = max(1, round(decay_fraction * total_steps))
    decay_start = total_steps - decay
    if step <= decay_start:
        return lr
    return lr - (lr - min_lr) * (step - decay_start) / decay


def build_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW with two parameter groups: weight matrices decay; norms and embeddings do not.

    Group 0 holds the matrices of the linear layers (an untied output head included), group 1
    the 1-D parameters (norm gains, biases) and the embedding table (with a tied head).
    """
    embedding = model.get_input_embeddings().weight
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or param is embedding else decay).append(param)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=betas,
    )


@dataclass
class TrainResult:
    """Outcome of :func:`train`: per-update training losses and the optimizer (for checkpoints)."""

    steps: int
    tokens_seen: int
    losses: list[float]
    optimizer: torch.optim.Optimizer


def train(
    model: nn.Module,
    batches: Iterable[np.ndarray],
    *,
    total_steps: int,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    schedule: Schedule = "cosine",
    warmup_fraction: float = 0.05,
    decay_fraction: float = 0.2,
    min_lr_ratio: float = 0.1,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint_steps: Sequence[int] = (),
    on_checkpoint: CheckpointCallback | None = None,
    log_every: int = 50,
    logger: logging.Logger | None = None,
    optimizer_state: dict[str, Any] | None = None,
    bf16: bool = False,
    compile_model: bool = False,
) -> TrainResult:
    """Train ``model`` in place for ``total_steps`` updates, one batch [B, L + 1] per update.

    The loss is the mean next-token cross-entropy over all B · L targets. After update ``s`` in
    ``checkpoint_steps``, ``on_checkpoint(s, tokens_seen, optimizer)`` is called (typically to
    :func:`~tikmix.models.checkpoint.save_checkpoint`). ``optimizer_state`` (a saved
    ``optimizer.state_dict()``) resumes the AdamW moments, e.g. for stage-2 continuation; the
    learning rate, betas and weight decay are this call's, the schedule restarts at update 1.
    With the same model initialisation, batches and ``seed`` the result is bit-identical on CPU.
    ``bf16`` runs the forward pass under bfloat16 autocast (on GPUs); weights stay float32.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    checkpoint_steps = sorted(set(checkpoint_steps))
    if checkpoint_steps and not 1 <= checkpoint_steps[0] <= checkpoint_steps[-1] <= total_steps:
        raise ValueError(f"checkpoint_steps {checkpoint_steps} must lie in [1, {total_steps}]")
    if checkpoint_steps and on_checkpoint is None:
        raise ValueError("checkpoint_steps given without an on_checkpoint callback")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    logger = logger or _LOG
    device = resolve_device(device)
    torch.manual_seed(seed)

    model.to(device).train()
    optimizer = build_optimizer(model, lr=lr, weight_decay=weight_decay, betas=betas)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        for group, decay in zip(optimizer.param_groups, (weight_decay, 0.0), strict=True):
            group.update(weight_decay=decay, betas=betas)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    forward_model = torch.compile(model) if compile_model else model
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )
    vocab_size = model.get_input_embeddings().weight.shape[0]

    batch_iter = iter(batches)
    losses: list[float] = []
    window: list[torch.Tensor] = []
    tokens_seen = 0
    start = window_start = time.perf_counter()
    window_tokens = 0
    for step in range(1, total_steps + 1):
        try:
            batch = next(batch_iter)
        except StopIteration:
            raise ValueError(
                f"batches ran out after {step - 1} of total_steps={total_steps} updates"
            ) from None
        ids = batch_to_tensor(batch, vocab_size, device)
        step_lr = learning_rate(
            step,
            total_steps,
            lr=lr,
            schedule=schedule,
            warmup_fraction=warmup_fraction,
            decay_fraction=decay_fraction,
            min_lr_ratio=min_lr_ratio,
        )
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        with autocast:
            token_loss, _ = token_losses(forward_model, ids)
            loss = token_loss.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()

        n_tokens = ids.shape[0] * (ids.shape[1] - 1)
        tokens_seen += n_tokens
        window_tokens += n_tokens
        window.append(loss.detach())
        if step % log_every == 0 or step == total_steps:
            window_losses = torch.stack(window).float().cpu().tolist()
            losses.extend(window_losses)
            now = time.perf_counter()
            eta = (now - start) / step * (total_steps - step)
            logger.info(
                "step %d/%d  loss %.4f  lr %.3g  %.0f tokens/s  elapsed %.0fs  ETA %.0fs",
                step,
                total_steps,
                sum(window_losses) / len(window_losses),
                step_lr,
                window_tokens / max(now - window_start, 1e-9),
                now - start,
                eta,
            )
            window, window_tokens, window_start = [], 0, now
        if checkpoint_steps and step == checkpoint_steps[0]:
            checkpoint_steps.pop(0)
            on_checkpoint(step, tokens_seen, optimizer)
    return TrainResult(
        steps=total_steps, tokens_seen=tokens_seen, losses=losses, optimizer=optimizer
    )


def batch_to_tensor(batch: np.ndarray, vocab_size: int, device: torch.device) -> torch.Tensor:
    """An int64 tensor of a [B, L + 1] batch of token ids, checked against the vocabulary."""
    array = np.asarray(batch)
    if array.ndim != 2 or array.shape[1] < 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"a training batch must be an integer array [B, L + 1] with L >= 1, got "
            f"{array.dtype} of shape {array.shape}"
        )
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids in a batch span [{low}, {high}], outside [0, {vocab_size})")
    return torch.from_numpy(array.astype(np.int64, copy=False)).to(device)
