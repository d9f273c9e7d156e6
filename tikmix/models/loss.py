"""Causal-LM token losses shared by training, influence and evaluation.

Sequence convention used everywhere in tikmix: a batch of token ids has shape
[B, L + 1]; position t predicts token t + 1, so a model sees ``ids[:, :-1]`` and is
scored against ``ids[:, 1:]``. A ``loss_mask`` of shape [B, L + 1] marks the tokens
that are *scored* (mask[:, 0] is ignored: the first token is never predicted).

The LM head and its cross-entropy run :data:`LOGIT_CHUNK_ELEMENTS` logits at a time
(:func:`head_cross_entropy`) wherever the model's logits are exactly ``lm_head(hidden)``: no
``[B, L, V]`` logits, log-softmax or logit-gradient tensor is ever held (at vocabulary 49152,
batch 32 and 128 positions each of them is 0.8 GB). The gradient of the head is computed
chunk by chunk in the forward pass, as fused linear-cross-entropy kernels do, so the head's
matrix products run once each. Training keeps the one-piece head (:func:`token_losses` with
gradients), so checkpoints stay bitwise those of earlier runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: Logits per chunk of the LM head (32 MB in float32): 170 positions at vocabulary 49152.
LOGIT_CHUNK_ELEMENTS = 2**23

#: Hugging Face families whose causal-LM logits are exactly
#: ``get_output_embeddings()(base_model(ids).last_hidden_state)`` (no logit scaling or
#: soft-capping), so their head can run chunk by chunk. Others take the one-piece path.
PLAIN_HEAD_FAMILIES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi", "phi3", "olmo", "olmo2"}
)

#: ``labels(probabilities [rows, V], rows) -> targets [rows]``: targets drawn from the model.
LabelSampler = Callable[[torch.Tensor, slice], torch.Tensor]


def causal_lm_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] for the built-in model and for Hugging Face causal LMs alike."""
    out = model(input_ids)
    return out.logits if hasattr(out, "logits") else out


def chunkable_head(model: nn.Module) -> nn.Linear | None:
    """The model's LM head if its logits are ``head(final_hidden_states(model, ids))``, else None.

    None as well when the head has hooks (a tracked head must see the whole batch at once).
    """
    from tikmix.models.llama import TinyLlama  # llama.py is torch-only; no cycle

    family = getattr(getattr(model, "config", None), "model_type", None)
    if not isinstance(model, TinyLlama) and family not in PLAIN_HEAD_FAMILIES:
        return None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, nn.Linear) or head._forward_hooks or head._forward_pre_hooks:
        return None
    return head


def final_hidden_states(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The ``[B, T, d]`` states the head of a :func:`chunkable_head` model reads."""
    if hasattr(model, "hidden_states"):  # the built-in model
        return model.hidden_states(input_ids)
    return model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state


class _LinearCrossEntropy(torch.autograd.Function):
    """``Σ_t w_t · CE(h_t Wᵀ + b, y_t)`` over rows, ``rows`` at a time; the gradients with
    respect to ``h`` (and ``W``, ``b`` when they require it) are formed in the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, weights, labels, rows, grads):
        n = hidden.shape[0]
        losses = torch.empty(n, dtype=torch.promote_types(hidden.dtype, torch.float32))
        losses = losses.to(hidden.device)
        grad_hidden = torch.empty_like(hidden) if grads[0] else None
        grad_weight = torch.zeros_like(weight, dtype=losses.dtype) if grads[1] else None
        grad_bias = torch.zeros_like(bias, dtype=losses.dtype) if grads[2] else None
        drawn = []
        for start in range(0, n, rows):
            chunk = slice(start, min(n, start + rows))
            h = hidden[chunk]
            logits = F.linear(h, weight, bias)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            if labels is not None:
                y = labels(torch.softmax(logits, dim=-1), chunk)
                drawn.append(y)
            else:
                y = targets[chunk]
            log_probs = torch.log_softmax(logits, dim=-1)
            del logits
            # F.cross_entropy's value: the negated log-probability of the target
            losses[chunk] = -log_probs.gather(1, y.unsqueeze(1)).squeeze(1)
            if not any(grads):
                continue
            # d CE / d logits = (softmax − one-hot) · the row's weight, by the kernel autograd's
            # cross-entropy backward runs (the log-softmax backward of −weight at the target),
            # so a batch within one chunk gets bitwise the one-piece head's gradients
            grad_log_probs = torch.zeros_like(log_probs).scatter_(
                1, y.unsqueeze(1), -weights[chunk].to(log_probs.dtype).unsqueeze(1)
            )
            grad_logits = torch._log_softmax_backward_data(
                grad_log_probs, log_probs, -1, log_probs.dtype
            )
            del grad_log_probs, log_probs
            if grad_hidden is not None:
                grad_hidden[chunk] = (grad_logits.to(h.dtype) @ weight.to(h.dtype)).to(
                    grad_hidden.dtype
                )
            if grad_weight is not None:
                grad_weight += grad_logits.T @ h.to(grad_logits.dtype)
            if grad_bias is not None:
                grad_bias += grad_logits.sum(dim=0)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        sampled = torch.cat(drawn) if drawn else targets
        ctx.mark_non_differentiable(losses, sampled)
        return (losses * weights.to(losses.dtype)).sum(), losses, sampled

    @staticmethod
    def backward(ctx, grad_loss, _grad_losses, _grad_sampled):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors

        def scaled(grad):
            return None if grad is None else grad * grad_loss.to(grad.dtype)

        return (
            scaled(grad_hidden),
            scaled(grad_weight),
            scaled(grad_bias),
            None,
            None,
            None,
            None,
            None,
        )


def head_cross_entropy(
    hidden: torch.Tensor,
    head: nn.Linear,
    targets: torch.Tensor | None,
    weights: torch.Tensor,
    labels: LabelSampler | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``Σ weights · CE(head(hidden), targets)`` computed a chunk of rows at a time.

    ``hidden [..., d]``, ``targets`` and ``weights`` of its leading shape (flattened here).
    With ``labels``, each chunk's targets are drawn from its probabilities instead. Returns the
    weighted sum (differentiable with respect to ``hidden`` and the head's parameters), the
    per-row losses (flattened, not differentiable) and the targets used. Peak memory: a few
    ``[rows, V]`` chunks (``rows · V ≈`` :data:`LOGIT_CHUNK_ELEMENTS`), ``hidden``'s gradient
    and, when the head's weight requires grad, its float32 gradient.
    """
    flat = hidden.reshape(-1, hidden.shape[-1])
    rows = max(1, LOGIT_CHUNK_ELEMENTS // head.out_features)
    grad_on = torch.is_grad_enabled()
    grads = (
        grad_on and flat.requires_grad,
        grad_on and head.weight.requires_grad,
        grad_on and head.bias is not None and head.bias.requires_grad,
    )
    return _LinearCrossEntropy.apply(
        flat,
        head.weight,
        head.bias,
        None if targets is None else targets.reshape(-1),
        weights.reshape(-1),
        labels,
        rows,
        grads,
    )


def token_losses(
    model: torch.nn.Module, ids: torch.Tensor, loss_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy [B, L] and the float mask [B, L] of scored targets.

    Without gradients (evaluation) the head runs in chunks (:func:`head_cross_entropy`); with
    gradients (training) in one piece.
    """
    targets = ids[:, 1:]
    head = None if torch.is_grad_enabled() else chunkable_head(model)
    if head is not None:
        hidden = final_hidden_states(model, ids[:, :-1])
        _, losses, _ = head_cross_entropy(hidden, head, targets, torch.ones_like(targets))
        losses = losses.view_as(targets)
    else:
        logits = causal_lm_logits(model, ids[:, :-1])
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
    so that shards of different sizes reduce exactly (map-reduce invariance). The head runs
    in chunks where the model allows it (:func:`head_cross_entropy`).
    """
    head = chunkable_head(model)
    if head is None:
        losses, mask = token_losses(model, ids, loss_mask)
        return (losses * mask).sum(), int(mask.sum().item())
    targets = ids[:, 1:]
    weights = torch.ones_like(targets) if loss_mask is None else loss_mask[:, 1:]
    hidden = final_hidden_states(model, ids[:, :-1])
    loss, _, _ = head_cross_entropy(hidden, head, targets, weights)
    return loss, int(weights.sum().item())
