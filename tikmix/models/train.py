"""The training loop (AdamW, cosine or warmup-stable-decay) and its one entry point.

:func:`train_on_mixture` is how every model of the workflow is trained, in the manner of
nanoGPT's single loop with ``init_from``: stage 1 (from scratch), stage 2 (from a checkpoint,
with its optimizer moments), RegMix's proxies and DoReMi's reference and proxy
(:mod:`tikmix.models.proxies`). It owns the model's creation or loading, the mixture's batch
stream, the step arithmetic (:class:`TrainSettings`), the optimizer and schedule, the loop and
its progress log, and returns the model with its compute record (:class:`TrainRun`).

:func:`train` is the loop itself. It consumes an iterator of numpy batches ``[B, L + 1]`` (the
sequence convention of :mod:`tikmix.models.loss`), so it does not depend on how the caller
samples data; an ``objective`` hook replaces the mean token loss (DoReMi's weighted domain
losses) without a second loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tikmix import progress
from tikmix.core.compute import ComputeRecord
from tikmix.data.sampler import mixture_batches
from tikmix.models.checkpoint import load_checkpoint, load_optimizer_state
from tikmix.models.device import resolve_device
from tikmix.models.flops import training_flops_per_token
from tikmix.models.llama import ModelConfig, TinyLlama, num_parameters
from tikmix.models.loss import token_losses

Schedule = Literal["cosine", "wsd"]
CheckpointCallback = Callable[[int, int, torch.optim.Optimizer], None]
#: ``objective(model, ids, step)``: the scalar loss of update ``step`` on the batch ``ids``.
Objective = Callable[[nn.Module, torch.Tensor, int], torch.Tensor]
OPTIMIZER_POLICIES = ("resume", "fresh")
#: The keys of a config section (``stage1``) that :meth:`TrainSettings.from_options` reads.
TRAIN_KEYS = ("tokens", "batch_size", "lr", "weight_decay", "schedule", "warmup_fraction")

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
    objective: Objective | None = None,
    vocab_size: int | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``total_steps`` updates, one batch [B, L + 1] per update.

    The loss is the mean next-token cross-entropy over all B · L targets. After update ``s`` in
    ``checkpoint_steps``, ``on_checkpoint(s, tokens_seen, optimizer)`` is called (typically to
    :func:`~tikmix.models.checkpoint.save_checkpoint`). ``optimizer_state`` (a saved
    ``optimizer.state_dict()``) resumes the AdamW moments, e.g. for stage-2 continuation; the
    learning rate, betas and weight decay are this call's, the schedule restarts at update 1.
    With the same model initialisation, batches and ``seed`` the result is bit-identical on CPU.
    ``bf16`` runs the forward pass under bfloat16 autocast (on GPUs); weights stay float32.
    ``objective(model, ids, step)`` replaces the mean token loss (it runs under the autocast);
    ``vocab_size`` bounds the token ids (default: the model's embedding rows).
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
    if vocab_size is None:
        vocab_size = model.get_input_embeddings().weight.shape[0]

    batch_iter = iter(batches)
    losses: list[float] = []
    window: list[torch.Tensor] = []
    tokens_seen = 0
    start = window_start = progress.clock()
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
            if objective is None:
                token_loss, _ = token_losses(forward_model, ids)
                loss = token_loss.mean()
            else:
                loss = objective(forward_model, ids, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()

        n_tokens = ids.shape[0] * (ids.shape[1] - 1)
        tokens_seen += n_tokens
        window_tokens += n_tokens
        window.append(loss.detach())
        # every log_every updates, and at least every progress.INTERVAL_SECONDS of wall time
        due = progress.clock() - window_start >= progress.INTERVAL_SECONDS
        if step % log_every == 0 or step == total_steps or due:
            window_losses = torch.stack(window).float().cpu().tolist()
            losses.extend(window_losses)
            now = progress.clock()
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


@dataclass(frozen=True)
class TrainSettings:
    """How a model is trained: the token budget, the batch shape and the optimisation.

    ``tokens // (batch_size · seq_len)`` updates (at least one) of ``batch_size`` sequences of
    ``seq_len`` tokens. ``log_every=None`` logs the last update only (the proxies).
    """

    tokens: int
    batch_size: int
    seq_len: int
    lr: float
    weight_decay: float = 0.1
    schedule: Schedule = "cosine"
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.1
    bf16: bool = False
    log_every: int | None = 50

    @classmethod
    def from_options(cls, options: Mapping[str, Any], **overrides: Any) -> TrainSettings:
        """Settings from a config section holding :data:`TRAIN_KEYS` (its other keys unread)."""
        return cls(**{key: options[key] for key in TRAIN_KEYS}, **overrides)

    @property
    def steps(self) -> int:
        """Optimizer updates: ``max(1, tokens // (batch_size · seq_len))``."""
        return max(1, self.tokens // (self.batch_size * self.seq_len))


@dataclass
class TrainRun:
    """Outcome of :func:`train_on_mixture`: the trained model and what training it cost."""

    model: nn.Module
    steps: int
    tokens: int
    flops: int
    losses: list[float]
    optimizer: torch.optim.Optimizer
    resumed_moments: bool

    @property
    def compute(self) -> ComputeRecord:
        """Tokens trained on and training FLOPs (:func:`training_flops_per_token` · tokens)."""
        return ComputeRecord(self.tokens, self.flops)


def check_optimizer_policy(policy: str) -> None:
    """Raise unless ``policy`` is one of :data:`OPTIMIZER_POLICIES`."""
    if policy not in OPTIMIZER_POLICIES:
        raise ValueError(f"optimizer_policy must be one of {OPTIMIZER_POLICIES}, got {policy!r}")


#: ``on_checkpoint(model, step, tokens_seen, optimizer)`` after the updates in checkpoint_steps.
RunCheckpointCallback = Callable[[nn.Module, int, int, torch.optim.Optimizer], None]


def train_on_mixture(
    init_from: ModelConfig | str | Path,
    mixture: Mapping[str, float] | None,
    streams: Mapping[str, np.ndarray] | None,
    settings: TrainSettings,
    *,
    seed: int,
    data_seed: int | None = None,
    device: str | torch.device = "cpu",
    optimizer_policy: str = "fresh",
    model: nn.Module | None = None,
    batches: Iterable[np.ndarray] | None = None,
    objective: Objective | None = None,
    vocab_size: int | None = None,
    checkpoint_steps: Sequence[int] = (),
    on_checkpoint: RunCheckpointCallback | None = None,
    label: str = "training",
    logger: logging.Logger | None = None,
) -> TrainRun:
    """Train a model on ``mixture`` of ``streams`` as ``settings`` say: the one entry point.

    Args:
        init_from: a :class:`ModelConfig` — a new :class:`TinyLlama` initialised under
            ``torch.manual_seed(seed)`` — or a checkpoint directory (built-in or Hugging Face),
            continued in float32.
        mixture, streams: domain → weight and domain → token stream; the batches are
            ``mixture_batches(streams, mixture, settings.steps, batch_size, seq_len, data_seed)``.
        settings: the token budget, batch shape and optimisation (:class:`TrainSettings`).
        seed: the torch seed of the initialisation and of the loop.
        data_seed: the seed of the batch stream (default ``seed``).
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        optimizer_policy: with a checkpoint, ``resume`` restores its AdamW moments when it has
            them (``TrainRun.resumed_moments`` says whether it did); ``fresh`` starts at zero.
        model: the checkpoint at ``init_from`` already loaded (float32); trained in place.
        batches: a batch stream of its own instead of ``mixture`` (DoReMi's per-domain batches).
        objective: replaces the mean token loss (see :func:`train`); ``vocab_size`` bounds ids.
        checkpoint_steps, on_checkpoint: ``on_checkpoint(model, step, tokens, optimizer)``
            after each of these updates.
        label: names the run in the log.
    """
    logger = logger or _LOG
    torch_device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    check_optimizer_policy(optimizer_policy)
    state = None
    if isinstance(init_from, ModelConfig):
        if model is not None or optimizer_policy != "fresh":
            raise ValueError("a model trained from scratch has no loaded model nor moments")
        torch.manual_seed(seed)
        model = TinyLlama(init_from).to(torch_device)
    else:
        if model is None:
            model, _ = load_checkpoint(init_from, device=torch_device, dtype=torch.float32)
        if optimizer_policy == "resume":
            state = load_optimizer_state(init_from)
    total_steps = settings.steps
    if batches is None:
        if mixture is None or streams is None:
            raise ValueError("train_on_mixture needs a mixture and its streams, or batches")
        batches = mixture_batches(
            streams,
            mixture,
            total_steps,
            settings.batch_size,
            settings.seq_len,
            seed if data_seed is None else data_seed,
        )
    moments = "" if isinstance(init_from, ModelConfig) else "; optimizer moments %s"
    logger.info(
        f"%s: %d parameters, %d steps of %d x %d tokens on %s{moments}",
        label,
        num_parameters(model),
        total_steps,
        settings.batch_size,
        settings.seq_len,
        torch_device,
        *(
            ()
            if not moments
            else ("resumed from the checkpoint" if state is not None else "fresh",)
        ),
    )
    result = train(
        model,
        batches,
        total_steps=total_steps,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        schedule=settings.schedule,
        warmup_fraction=settings.warmup_fraction,
        decay_fraction=settings.decay_fraction,
        min_lr_ratio=settings.min_lr_ratio,
        seed=seed,
        device=torch_device,
        checkpoint_steps=checkpoint_steps,
        on_checkpoint=(
            None
            if on_checkpoint is None
            else lambda step, tokens, optimizer: on_checkpoint(model, step, tokens, optimizer)
        ),
        log_every=settings.log_every or total_steps,
        logger=logger,
        optimizer_state=state,
        bf16=settings.bf16,
        objective=objective,
        vocab_size=vocab_size,
    )
    return TrainRun(
        model=model,
        steps=result.steps,
        tokens=result.tokens_seen,
        flops=training_flops_per_token(model, settings.seq_len) * result.tokens_seen,
        losses=result.losses,
        optimizer=result.optimizer,
        resumed_moments=state is not None,
    )
