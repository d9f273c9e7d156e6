"""The layers whose gradients are tracked: ``nn.Linear`` and ``transformers``' ``Conv1D``.

Both compute ``y = x Wᵀ + b`` (a Conv1D stores ``W`` as ``[in, out]``), so a layer's gradient is
``g aᵀ``; the module-selection, projection and gradient code all read a layer's shape here.
"""

from __future__ import annotations

import sys

import torch
from torch import nn


def _conv1d_class() -> type | None:
    """``transformers``' Conv1D when ``transformers`` is loaded (a model using it imported it)."""
    return getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)


def is_trackable(module: nn.Module) -> bool:
    """``nn.Linear`` or ``transformers`` ``Conv1D``: the layers whose gradient is ``g aᵀ``."""
    conv1d = _conv1d_class()
    return isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))


def layer_dims(module: nn.Module) -> tuple[int, int]:
    """``(out_features, in_features)`` of a tracked layer (without the bias column)."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    in_features, out_features = module.weight.shape  # Conv1D stores [in, out]
    return out_features, in_features


def weight_gradient_matrix(module: nn.Module, weight_grad: torch.Tensor) -> torch.Tensor:
    """The weight's gradient as ``[out, in]`` (a Conv1D's ``[in, out]`` gradient transposed)."""
    return weight_grad if isinstance(module, nn.Linear) else weight_grad.T
