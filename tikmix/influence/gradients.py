"""Summed loss gradients of the tracked modules over many batches (group gradients).

A domain's (or a task's) gradient is accumulated as a *sum* over its scored tokens, together with
the token and sequence counts, so that shards reduce exactly by adding sums and counts; the
per-token mean ``ḡ = Σ_tokens ∇ℓ_t / n_tokens`` is taken once, at reduction. Each batch costs one
forward and one backward pass of the summed loss (``tikmix.models.loss.summed_loss``); no
per-example gradient is ever formed, and only the tracked parameters' gradients are computed.

With random projections (``tikmix.influence.projection``) the sum is accumulated in the projected
space from the hooks' projected ``(a', g')`` as ``Σ_t g'_t a'_tᵀ``: neither the per-token nor the
per-batch full gradient is formed, and no weight gradient is computed at all. ``precision="bf16"``
runs the forward pass under bfloat16 autocast; the sums stay in ``dtype``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from tikmix.influence.layers import weight_gradient_matrix
from tikmix.influence.projection import ModuleProjection
from tikmix.influence.tracking import (
    Batch,
    LayerRecorder,
    Precision,
    autocast,
    evaluation_mode,
    forward_slices,
    gradient_shape,
    projections_on,
    tracked_parameters_require_grad,
    unpack_batch,
    working_dtype,
)
from tikmix.models.loss import summed_loss


@dataclass
class GradientStats:
    """Sums of token-loss gradients per module (``[out, in(+1)]``) and how many tokens they cover."""

    sums: dict[str, torch.Tensor]
    n_tokens: int
    n_sequences: int

    def __add__(self, other: GradientStats) -> GradientStats:
        if self.sums.keys() != other.sums.keys():
            raise ValueError(
                f"cannot add gradients of different modules: {sorted(self.sums)} vs "
                f"{sorted(other.sums)}"
            )
        return GradientStats(
            sums={name: self.sums[name] + other.sums[name] for name in self.sums},
            n_tokens=self.n_tokens + other.n_tokens,
            n_sequences=self.n_sequences + other.n_sequences,
        )

    def mean(self) -> dict[str, torch.Tensor]:
        """Mean per-token gradient ``Σ ∇ℓ_t / n_tokens`` per module."""
        if self.n_tokens == 0:
            raise ValueError("mean gradient of zero scored tokens is undefined")
        return {name: s / self.n_tokens for name, s in self.sums.items()}


def module_gradient(module: nn.Linear, weight_grad: torch.Tensor, bias_grad: torch.Tensor | None):
    """The ``[out, in(+1)]`` gradient matrix of a Linear (or Conv1D) layer (bias as the last
    column)."""
    weight_grad = weight_gradient_matrix(module, weight_grad)
    if module.bias is None:
        return weight_grad
    return torch.cat([weight_grad, bias_grad.unsqueeze(1)], dim=1)


def module_dot_products(
    left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]
) -> dict[str, float]:
    """``⟨left[m], right[m]⟩`` per module (float64), e.g. a preconditioned task gradient · ḡ_d."""
    missing = set(left) ^ set(right)
    if missing:
        raise ValueError(f"gradients cover different modules; unmatched: {sorted(missing)}")
    for name in left:
        if left[name].shape != right[name].shape:
            raise ValueError(
                f"gradients of module {name!r} have shapes {tuple(left[name].shape)} and "
                f"{tuple(right[name].shape)}: were they computed with the same projection?"
            )
    return {
        name: float(torch.sum(left[name].double().cpu() * right[name].double().cpu()))
        for name in left
    }


def summed_gradients(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    batches: Iterable[Batch],
    *,
    dtype: torch.dtype = torch.float64,
    precision: Precision = "fp32",
    projections: Mapping[str, ModuleProjection] | None = None,
) -> GradientStats:
    """Sum over all scored tokens of all batches of the token-loss gradient, per tracked module.

    ``batches`` yields token ids ``[B, L + 1]`` or ``(ids, loss_mask)`` pairs; only tokens with
    ``loss_mask == 1`` are scored (all of them without a mask). Sums are accumulated in ``dtype``.
    With ``projections`` (``tikmix.influence.projection.resolve_projections``) the sums are the
    projected gradients ``P_out G P_inᵀ``. The model's own ``.grad`` buffers are neither read nor
    modified. ``model`` may be a ``torch.compile``-d wrapper of the model owning ``modules``
    (unprojected path only: the projected path relies on forward hooks).
    """
    device = next(model.parameters()).device
    if projections is not None:
        return _projected_summed_gradients(model, modules, batches, dtype, precision, projections)
    sums = {
        name: torch.zeros(gradient_shape(m), dtype=dtype, device=device)
        for name, m in modules.items()
    }
    n_tokens = n_sequences = 0
    with evaluation_mode(model), tracked_parameters_require_grad(modules, model) as params:
        for batch in batches:
            for ids, loss_mask in forward_slices(*unpack_batch(batch, device), modules):
                with autocast(device, precision):
                    loss, count = summed_loss(model, ids, loss_mask)
                n_sequences += ids.shape[0]
                if count == 0:
                    continue
                grads = iter(torch.autograd.grad(loss, params))
                del loss  # the graph is freed; nothing of it outlives the slice
                for name, module in modules.items():
                    weight_grad = next(grads)
                    bias_grad = next(grads) if module.bias is not None else None
                    sums[name] += module_gradient(module, weight_grad, bias_grad).to(dtype)
                n_tokens += count
    return GradientStats(sums=sums, n_tokens=n_tokens, n_sequences=n_sequences)


def _projected_summed_gradients(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    batches: Iterable[Batch],
    dtype: torch.dtype,
    precision: Precision,
    projections: Mapping[str, ModuleProjection],
) -> GradientStats:
    """``Σ_t g'_t a'_tᵀ`` per module from the hooks' projected inputs and output gradients."""
    device = next(model.parameters()).device
    work = working_dtype(model)  # a side left unprojected may still be bf16 under autocast
    projections = projections_on(projections, device, work)
    recorder = LayerRecorder(modules, projections)
    sums = {
        name: torch.zeros(gradient_shape(m, projections[name]), dtype=dtype, device=device)
        for name, m in modules.items()
    }
    n_tokens = n_sequences = 0
    with evaluation_mode(model), tracked_parameters_require_grad({}, model):
        for batch in batches:
            for ids, loss_mask in forward_slices(*unpack_batch(batch, device), modules):
                n_sequences += ids.shape[0]
                with recorder.recording(ids.shape[0], ids.shape[1] - 1):
                    with autocast(device, precision):
                        loss, count = summed_loss(model, ids, loss_mask)
                    if count == 0:
                        continue
                    recorder.backward(loss)
                for name in modules:
                    for a, g in recorder.pairs(name):
                        g = g.reshape(-1, g.shape[-1]).to(work)
                        a = a.reshape(-1, a.shape[-1]).to(work)
                        sums[name] += (g.T @ a).to(dtype)
                n_tokens += count
    return GradientStats(sums=sums, n_tokens=n_tokens, n_sequences=n_sequences)
