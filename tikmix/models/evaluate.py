"""Validation loss and multiple-choice accuracy of a causal LM on tokenized tasks.

Inputs follow the task file contract (``results/data/tasks/{task}/{steering,evaluation}.npz``):
rows ``[N, L + 1]`` of token ids padded with 0 and a ``loss_mask`` marking the scored tokens.
Rows are right-padded, so each batch is cut after its last scored token: by causality the
padding after it cannot change any scored logit, and skipping it saves most of the compute on
short items.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from tikmix.models.loss import token_losses
from tikmix.progress import Progress

log = logging.getLogger(__name__)


@torch.no_grad()
def sequence_losses(
    model: nn.Module,
    ids: np.ndarray | torch.Tensor,
    loss_mask: np.ndarray | torch.Tensor,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row summed token loss (float64 [N]) and number of scored tokens (int64 [N]).

    ``device`` defaults to the model's. The model is put in eval mode.
    """
    ids, loss_mask = torch.as_tensor(ids), torch.as_tensor(loss_mask)
    if ids.ndim != 2 or ids.shape != loss_mask.shape or ids.shape[1] < 2:
        raise ValueError(
            f"ids and loss_mask must both be [N, L + 1] with L >= 1, got shapes "
            f"{tuple(ids.shape)} and {tuple(loss_mask.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    starts = range(0, ids.shape[0], batch_size)
    widths = []
    for start in starts:
        scored_targets = (loss_mask[start : start + batch_size, 1:] != 0).any(dim=0).nonzero()
        widths.append(int(scored_targets[-1]) + 2 if len(scored_targets) else 2)
    rows = [min(batch_size, ids.shape[0] - start) for start in starts]
    total = sum(n * (width - 1) for n, width in zip(rows, widths, strict=True))
    progress = Progress(total, "evaluation", log)
    sums, counts = [], []
    for start, width in zip(starts, widths, strict=True):
        mask = loss_mask[start : start + batch_size] != 0
        batch = ids[start : start + batch_size, :width].to(device=device, dtype=torch.int64)
        losses, weights = token_losses(model, batch, mask[:, :width].to(device))
        progress.update(batch.shape[0] * (width - 1))
        sums.append((losses.double() * weights.double()).sum(dim=1).cpu())
        counts.append(weights.sum(dim=1).cpu().to(torch.int64))
    return torch.cat(sums).numpy(), torch.cat(counts).numpy()


def mean_loss(
    model: nn.Module,
    ids: np.ndarray | torch.Tensor,
    loss_mask: np.ndarray | torch.Tensor,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> float:
    """Mean loss per scored token over all rows (rows weighted by their scored tokens)."""
    sums, counts = sequence_losses(model, ids, loss_mask, batch_size, device)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("loss_mask scores no token (mask[:, 1:] is all zero)")
    return float(sums.sum() / total)


def multiple_choice_accuracy(
    model: nn.Module,
    choice_ids: np.ndarray | torch.Tensor,
    choice_mask: np.ndarray | torch.Tensor,
    choice_item: np.ndarray,
    answer: np.ndarray,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Accuracy of picking the most likely continuation, as lm-evaluation-harness does.

    Each row of ``choice_ids`` is one item's context followed by one choice, with
    ``choice_mask`` marking the choice's tokens; ``choice_item[r]`` is the item of row r, and
    ``answer[i]`` the index of item i's correct choice among its rows, in row order. ``accuracy``
    ranks choices by summed log-likelihood; ``accuracy_norm`` by log-likelihood per token
    (lm-eval's ``acc_norm`` divides by the continuation's length in bytes; tokens are what a
    tokenized task file knows). Ties go to the first choice, like ``numpy.argmax``.
    """
    choice_item, answer = np.asarray(choice_item), np.asarray(answer)
    n_items = len(answer)
    if choice_item.ndim != 1 or len(choice_item) != len(choice_ids):
        raise ValueError(
            f"choice_item must have one entry per choice row ({len(choice_ids)}), "
            f"got shape {choice_item.shape}"
        )
    if n_items == 0 or choice_item.min() < 0 or choice_item.max() >= n_items:
        raise ValueError(f"choice_item values must index the {n_items} items of answer")
    sums, counts = sequence_losses(model, choice_ids, choice_mask, batch_size, device)
    if (counts == 0).any():
        raise ValueError(f"choice rows {np.flatnonzero(counts == 0)[:10].tolist()} score no token")
    loglik = -sums
    correct = correct_norm = 0
    for item in range(n_items):
        rows = np.flatnonzero(choice_item == item)
        if not 0 <= answer[item] < len(rows):
            raise ValueError(
                f"answer[{item}] = {answer[item]} but item {item} has {len(rows)} choices"
            )
        correct += int(np.argmax(loglik[rows]) == answer[item])
        correct_norm += int(np.argmax(loglik[rows] / counts[rows]) == answer[item])
    return {
        "accuracy": correct / n_items,
        "accuracy_norm": correct_norm / n_items,
        "n_items": n_items,
    }
