"""Which layers influence is computed for, and hooks that see their inputs and output gradients.

Every tracked module is an ``nn.Linear`` or a ``transformers`` ``Conv1D`` (GPT-2's linear layer,
whose weight is stored transposed, ``[in, out]``). Its gradient is laid out as a matrix
``[out_features, in_features (+1)]``: the weight, with the bias appended as a last column when the
layer has one (a ``Conv1D``'s weight gradient is transposed into this layout). The layer input ``a`` gets a matching constant 1 appended, so that the gradient of
one token is ``g aᵀ`` with ``g`` the gradient with respect to the layer output (the layout
kronfluence uses).

Batches follow ``docs/architecture.md``: token ids ``[B, L + 1]``, optionally with a loss mask of
the same shape; the model sees ``ids[:, :-1]``, so input position ``t`` is scored when
``loss_mask[:, t + 1]`` is 1. The scored positions are the *tokens* that token counts and the
curvature expectations run over; padding is simply an unscored position.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from tikmix.core.tracked_modules import DEFAULT_MODULE_PATTERN, check_model_family
from tikmix.influence.layers import is_trackable, layer_dims
from tikmix.influence.projection import ModuleProjection

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]

#: ``fp32``: the model's own dtype; ``bf16``: forward passes under bfloat16 autocast (weights,
#: sums and covariances stay in their own dtypes); ``auto``: bf16 on CUDA, fp32 elsewhere.
Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS = ("fp32", "bf16", "auto")


def autocast(
    device: torch.device, precision: Precision = "fp32"
) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in for ``precision`` on ``device``.

    ``bf16`` autocasts matrix products to bfloat16 (on CPU as on CUDA); the backward pass
    follows the forward's dtypes. Losses are computed in float32 (``tikmix.models.loss``) and
    everything accumulated from the pass (gradient sums, covariances, Λ) in float32 or float64.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)




def select_modules(model: nn.Module, pattern: str = DEFAULT_MODULE_PATTERN) -> dict[str, nn.Module]:
    """The ``nn.Linear`` / ``Conv1D`` modules of ``model`` whose qualified name matches
    ``pattern`` (``re.search``).

    The LM head, embeddings and norms are not matched by the default pattern. Raises ``ValueError``
    naming the pattern (and some layer names it could have matched) when nothing matches, and
    for a Hugging Face mixture-of-experts model with the default pattern
    (:func:`check_model_family`).
    """
    model_config = getattr(model, "config", None)
    if hasattr(model_config, "to_dict"):
        check_model_family(model_config.to_dict(), pattern, type(model).__name__)
    regex = re.compile(pattern)
    linear = {name: m for name, m in model.named_modules() if is_trackable(m)}
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
        if not is_trackable(module):
            raise TypeError(
                f"tracked module {name!r} is {type(module).__name__}, not nn.Linear or Conv1D"
            )
    return dict(modules)


def gradient_shape(
    module: nn.Linear, projection: ModuleProjection | None = None
) -> tuple[int, int]:
    """Shape of the module's gradient matrix: ``[out, in + 1]`` with a bias, else ``[out, in]``.

    With a projection, the shape of the projected gradient ``P_out G P_inᵀ``.
    """
    out_features, in_features = layer_dims(module)
    shape = out_features, in_features + (module.bias is not None)
    return shape if projection is None else projection.shape(*shape)


def working_dtype(model: nn.Module) -> torch.dtype:
    """float32 for float32/bf16 models, float64 for float64 ones: the dtype hooks project in."""
    return torch.promote_types(next(model.parameters()).dtype, torch.float32)


def projections_on(
    projections: Mapping[str, ModuleProjection] | None, device: torch.device, dtype: torch.dtype
) -> dict[str, ModuleProjection] | None:
    """The projections moved to ``device`` in ``dtype`` (``None`` stays ``None``)."""
    if projections is None:
        return None
    return {name: p.to(device, dtype) for name, p in projections.items()}


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


#: Saved activations one forward/backward pass may hold, as estimated by
#: :func:`activation_bytes_per_token`: a batch whose sequences would exceed it runs as slices of
#: whole sequences (:func:`forward_slices`). Every pass sums over sequences, so the slicing
#: changes no result beyond the order of a float sum (``docs/scaling.md#memory-of-each-pass``).
ACTIVATION_BUDGET_BYTES = 2**30


def activation_bytes_per_token(modules: Mapping[str, nn.Module]) -> int:
    """Estimated bytes a forward pass saves for backward per token: the float32 input and output
    of every tracked layer. A Llama block saves ``6 d + 2 d_kv + 4 d_ff + n_heads + 2`` floats
    per token (measured, ``docs/scaling.md#memory-of-each-pass``); its tracked layers' inputs
    and outputs count ``9 d + 2 d_kv + 3 d_ff``, within 2 % at SmolLM2's shape."""
    return 4 * sum(sum(gradient_shape(m)) for m in modules.values())


def forward_slices(
    ids: torch.Tensor,
    loss_mask: torch.Tensor | None,
    modules: Mapping[str, nn.Module],
    budget: int = ACTIVATION_BUDGET_BYTES,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(ids, loss_mask)`` in slices of whole sequences whose activations fit ``budget``."""
    per_sequence = activation_bytes_per_token(modules) * (ids.shape[1] - 1)
    rows = max(1, budget // max(per_sequence, 1))
    for start in range(0, ids.shape[0], rows):
        part = slice(start, start + rows)
        yield ids[part], None if loss_mask is None else loss_mask[part]


def slice_batches(
    batches: Iterable[Batch], modules: Mapping[str, nn.Module]
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Every batch as :func:`forward_slices` (where they stay): a job's progress is then counted
    per forward pass, however large its batches."""
    for batch in batches:
        ids, mask = (batch, None) if isinstance(batch, torch.Tensor) else batch
        yield from forward_slices(ids, mask, modules)


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

    ``a`` is the layer input with the bias column appended (if the layer has a bias) and ``g``
    the gradient of the backpropagated loss with respect to the layer output, both reshaped to
    ``[B, L, features]`` (some Hugging Face layers see flattened ``[B·L, features]`` inputs) and
    detached. With ``projections``, each is projected as soon as it is seen (``a' = P_in a``,
    ``g' = P_out g``, in the projection's dtype, outside autocast), so only the projected
    features are ever held. A module called several times in one forward pass (shared weights)
    records one pair per call.

    Modules that read the same input tensor in a pass (q/k/v of an attention block, gate/up of
    a gated MLP: detected by the hook's input being the same object, for any architecture) and
    transform it alike (same bias column, no input projection) record the *same* ``a`` object,
    so consumers can compute products of ``a`` once per distinct input (``id(a)``).

    Use as ``with recorder.recording(B, L): loss = ...; recorder.backward(loss)``; ``pairs(name)``
    then returns what that pass saw. ``backward`` differentiates the loss with respect to a zero
    scalar added to every tracked output, which sends gradients through every tracked layer
    without computing any weight gradient: no model-sized gradient buffer is allocated.
    """

    def __init__(
        self,
        modules: dict[str, nn.Linear],
        projections: Mapping[str, ModuleProjection] | None = None,
    ):
        self.modules = modules
        self.projections = dict(projections) if projections is not None else {}
        self._inputs: dict[str, list[torch.Tensor]] = {}
        self._grads: dict[str, list[torch.Tensor | None]] = {}
        self._shape: tuple[int, int] = (0, 0)
        self._anchor: torch.Tensor | None = None
        # (id of the raw input, bias column?) -> (raw input, recorded a); the raw input is held
        # so that its id cannot be reused by another tensor within the pass
        self._shared_inputs: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}

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
        self._shared_inputs = {}
        device = next(iter(self.modules.values())).weight.device
        self._anchor = torch.zeros((), device=device, requires_grad=True)
        handles = [
            module.register_forward_hook(self._forward_hook(name))
            for name, module in self.modules.items()
        ]
        try:
            yield self
        finally:
            self._anchor = None
            self._shared_inputs = {}
            for handle in handles:
                handle.remove()

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` through the tracked layers; the hooks record their ``g``."""
        if self._anchor is None:
            raise RuntimeError("LayerRecorder.backward must be called inside recording()")
        torch.autograd.grad(loss, self._anchor, allow_unused=True)

    def _forward_hook(self, name: str):
        module = self.modules[name]
        projection = self.projections.get(name)

        projects_input = projection is not None and projection.input is not None

        def hook(module_: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            a = None
            key = (id(inputs[0]), module.bias is not None)
            if not projects_input and key in self._shared_inputs:
                a = self._shared_inputs[key][1]
            if a is None:
                a = with_bias_column(module, self._as_sequences(name, inputs[0]))
                if projects_input:
                    with torch.autocast(a.device.type, enabled=False):
                        a = projection.project_activations(a)
                else:
                    self._shared_inputs[key] = (inputs[0], a)
            self._inputs[name].append(a)
            index = len(self._grads[name])
            self._grads[name].append(None)
            output = output + self._anchor.to(output.dtype)

            def save_grad(grad: torch.Tensor) -> None:
                g = self._as_sequences(name, grad)
                if projection is not None:
                    with torch.autocast(g.device.type, enabled=False):
                        g = projection.project_output_grads(g)
                self._grads[name][index] = g

            output.register_hook(save_grad)
            return output

        return hook

    def pairs(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(a, g)`` per call of module ``name`` (projected if the recorder projects)."""
        out = []
        for a, g in zip(self._inputs[name], self._grads[name], strict=True):
            if g is None:
                raise RuntimeError(
                    f"no output gradient reached tracked module {name!r}: does the loss depend "
                    "on it, and did the backward pass run inside the recording block?"
                )
            out.append((a, g))
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
def tracked_parameters_require_grad(
    modules: dict[str, nn.Linear], model: nn.Module | None = None
) -> Iterator[list[nn.Parameter]]:
    """Temporarily make the tracked weights (and biases) require grad; yield them in order.

    Influence is computed on frozen or inference-mode checkpoints too; the previous flags are
    restored on exit. With ``model``, its other parameters are frozen meanwhile, so the graph
    keeps nothing for their gradients (and a tied LM head's gradient is not formed).
    """
    params = [p for m in modules.values() for p in (m.weight, m.bias) if p is not None]
    tracked = {id(p) for p in params}
    others = [] if model is None else [p for p in model.parameters() if id(p) not in tracked]
    previous = [p.requires_grad for p in params + others]
    for p in params:
        p.requires_grad_(True)
    for p in others:
        p.requires_grad_(False)
    try:
        yield params
    finally:
        for p, flag in zip(params + others, previous, strict=True):
            p.requires_grad_(flag)
