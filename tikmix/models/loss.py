"""Causal-LM token losses shared by training, influence and evaluation.

Sequence convention used everywhere in tikmix: a batch of token ids has shape
[B, L + 1]; position t predicts token t + 1, so a model sees ``ids[:, :-1]`` and is
scored against ``ids[:, 1:]``. A ``loss_mask`` of shape [B, L + 1] marks the tokens
that are *scored* (mask[:, 0] is ignored: the first token is never predicted).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_lm_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] for the built-in model and for Hugging Face causal LMs alike."""
    out = model(input_ids)
    return out.logits if hasattr(out, "logits") else out


def token_losses(
    model: torch.nn.Module, ids: torch.Tensor, loss_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy [B, L] and the float mask [B, L] of scored targets."""
    logits = causal_lm_logits(model, ids[:, :-1])
    targets = ids[:, 1:]
    # At least float32 (bf16 logits lose too much in the softmax), float64 kept for exact tests.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    mask = (
        torch.ones_like(losses)
        if loss_mask is None
        else loss_mask[:, 1:].to(dtype=losses.dtype, device=losses.device)
    )
    return losses, mask


def summed_loss(
    model: torch.nn.Module, ids: torch.Tensor, loss_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Sum of token losses over scored targets, and the number of scored targets.

    Influence code backpropagates the *sum* and divides by the token count itself,
    so that shards of different sizes reduce exactly (map-reduce invariance).
    """
    losses, mask = token_losses(model, ids, loss_mask)
    return (losses * mask).sum(), int(mask.sum().item())
