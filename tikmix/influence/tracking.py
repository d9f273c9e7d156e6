"""Which layers influence is computed for, and hooks that see their inputs and output gradients.

Every tracked module is an ``nn.Linear``. Its gradient is laid out as a matrix
``[out_features, in_features (+1)]``: the weight, with the bias appended as a last column when the
layer has one. The layer input ``a`` gets a matching constant 1 appended, so that the gradient of
one token is ``g aᵀ`` with ``g`` the gradient with respect to the layer output (the layout
kronfluence uses).

Batches follow ``docs/architecture.md``: token ids ``[B, L + 1]``, optionally with a loss mask of
the same shape; the model sees ``ids[:, :-1]``, so input position ``t`` is scored when
``loss_mask[:, t + 1]`` is 1. The scored positions are the *tokens* that token counts and the
curvature expectations run over; padding is simply an unscored position.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

#: Attention and MLP projections of Llama-style models (built-in and Hugging Face alike).
DEFAULT_MODULE_PATTERN = r"(^|\.)layers\.\d+\.(self_attn|mlp)\.\w+_proj$"

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]


def select_modules(model: nn.Module, pattern: str = DEFAULT_MODULE_PATTERN) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules of ``model`` whose qualified name matches ``pattern`` (``re.search``).

    The LM head, embeddings and norms are not matched by the default pattern. Raises ``ValueError``
    naming the pattern (and some Linear names it could have matched) when nothing matches.
    """
    regex = re.compile(pattern)
    linear = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    selected = {name: m for name, m in linear.items() if regex.search(name)}
    if not selected:
        examples = ", ".join(list(linear)[:8]) or "none"
        raise ValueError(
            f"module pattern {pattern!r} matches no nn.Linear module of "
            f"{type(model).__name__} (Linear modules: {examples})"
        )
    return selected


def resolve_modules(
    model: nn.Module, modules: dict[str, nn.Linear] | str | None
) -> dict[str, nn.Linear]:
    """Accept an explicit module dict, a regex, or ``None`` for the default pattern."""
    if modules is None:
        return select_modules(model)
    if isinstance(modules, str):
        return select_modules(model, modules)
    for name, module in modules.items():
        if not isinstance(module, nn.Linear):
            raise TypeError(f"tracked module {name!r} is {type(module).__name__}, not nn.Linear")
    return dict(modules)


def gradient_shape(module: nn.Linear) -> tuple[int, int]:
    """Shape of the module's gradient matrix: ``[out, in + 1]`` with a bias, else ``[out, in]``."""
    return module.out_features, module.in_features + (module.bias is not None)


def unpack_batch(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``ids`` or ``(ids, loss_mask)`` → int64 ids and an optional mask, both on ``device``."""
    ids, mask = (batch, None) if isinstance(batch, torch.Tensor) else batch
    if ids.dim() != 2 or ids.shape[1] < 2:
        raise ValueError(f"a batch of token ids must have shape [B, L + 1], got {tuple(ids.shape)}")
    if mask is not None and mask.shape != ids.shape:
        raise ValueError(
            f"loss_mask shape {tuple(mask.shape)} differs from token ids shape {tuple(ids.shape)}"
        )
    ids = ids.to(device=device, dtype=torch.long)
    return ids, None if mask is None else mask.to(device=device)


def position_mask(ids: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    """Boolean ``[B, L]`` mask of the model's input positions whose prediction is scored."""
    if loss_mask is None:
        return torch.ones(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool, device=ids.device)
    return loss_mask[:, 1:] != 0


def with_bias_column(module: nn.Linear, activations: torch.Tensor) -> torch.Tensor:
    """Append the constant-1 input of the bias (if the module has one) along the last axis."""
    if module.bias is None:
        return activations
    ones = activations.new_ones(*activations.shape[:-1], 1)
    return torch.cat([activations, ones], dim=-1)


class LayerRecorder:
    """Forward/backward hooks that record ``(a, g)`` of every call of every tracked module.

    ``a`` is the layer input and ``g`` the gradient of the backpropagated loss with respect to the
    layer output, both reshaped to ``[B, L, features]`` (some Hugging Face layers see flattened
    ``[B·L, features]`` inputs) and detached. A module called several times in one forward pass
    (shared weights) records one pair per call. Use as ``with recorder.recording(B, L): ...``;
    ``pairs(name)`` then returns what the last forward/backward pass saw.
    """

    def __init__(self, modules: dict[str, nn.Linear]):
        self.modules = modules
        self._inputs: dict[str, list[torch.Tensor]] = {}
        self._grads: dict[str, list[torch.Tensor | None]] = {}
        self._shape: tuple[int, int] = (0, 0)

    def _as_sequences(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        batch, length = self._shape
        if tensor.shape[:-1].numel() != batch * length:
            raise RuntimeError(
                f"tracked module {name!r} saw a tensor of shape {tuple(tensor.shape)}, which is "
                f"not one row per token of a [{batch}, {length}] batch"
            )
        return tensor.detach().reshape(batch, length, tensor.shape[-1])

    @contextmanager
    def recording(self, batch_size: int, length: int) -> Iterator[LayerRecorder]:
        """Install the hooks for one batch of ``batch_size`` sequences of ``length`` positions."""
        self._shape = (batch_size, length)
        self._inputs = {name: [] for name in self.modules}
        self._grads = {name: [] for name in self.modules}
        handles = [
            module.register_forward_hook(self._forward_hook(name))
            for name, module in self.modules.items()
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _forward_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            self._inputs[name].append(self._as_sequences(name, inputs[0]))
            index = len(self._grads[name])
            self._grads[name].append(None)
            if output.requires_grad:

                def save_grad(grad: torch.Tensor) -> None:
                    self._grads[name][index] = self._as_sequences(name, grad)

                output.register_hook(save_grad)

        return hook

    def pairs(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(a, g)`` per call of module ``name``; ``a`` includes the bias column if any."""
        module = self.modules[name]
        out = []
        for a, g in zip(self._inputs[name], self._grads[name], strict=True):
            if g is None:
                raise RuntimeError(
                    f"no output gradient reached tracked module {name!r}: does the loss depend "
                    "on it, and did the backward pass run inside the recording block?"
                )
            out.append((with_bias_column(module, a), g))
        return out


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (no dropout: gradients are deterministic), then restore it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def tracked_parameters_require_grad(modules: dict[str, nn.Linear]) -> Iterator[list[nn.Parameter]]:
    """Temporarily make the tracked weights (and biases) require grad; yield them in order.

    Influence is computed on frozen or inference-mode checkpoints too; the previous flags are
    restored on exit.
    """
    params = [p for m in modules.values() for p in (m.weight, m.bias) if p is not None]
    previous = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield params
    finally:
        for p, flag in zip(params, previous, strict=True):
            p.requires_grad_(flag)
