"""FLOPs per token for compute accounting (the report's "FLOPs to determine a mixture")."""

from __future__ import annotations

from torch import nn

from tikmix.models.llama import ModelConfig, model_flops_per_token, num_parameters


def training_flops_per_token(model: nn.Module, seq_len: int) -> int:
    """Forward + backward FLOPs per token: the PaLM count for the built-in model, 6·N otherwise.

    A forward pass alone costs a third of this (2·N per token).
    """
    config = getattr(model, "config", None)
    if isinstance(config, ModelConfig):
        return model_flops_per_token(config, seq_len)
    return 6 * num_parameters(model, exclude_embeddings=True)


def eigh_flops(n: int) -> int:
    """A symmetric eigendecomposition of an n×n matrix: ≈ 9·n³ (tridiagonalisation + QR)."""
    return 9 * n**3
