"""The built-in Llama-style causal language model.

A pre-norm decoder with RMSNorm, rotary position embeddings, a SwiGLU MLP and causal
self-attention, without biases: the Llama architecture, small enough to train on a laptop
for the demo and large enough (>100M parameters) to be a real proxy model on a GPU.

Modules are named exactly like Hugging Face ``LlamaForCausalLM`` (without its ``model.``
prefix): ``embed_tokens``, ``layers.{i}.self_attn.{q,k,v,o}_proj``,
``layers.{i}.mlp.{gate,up,down}_proj``, ``layers.{i}.{input,post_attention}_layernorm``,
``norm`` and ``lm_head``, so one module regex selects the same layers in both. Every linear
map is a plain ``nn.Linear`` called exactly once per forward pass, which is what the influence
hooks (input activations, output gradients) rely on. The numerics follow the Hugging Face
implementation (normalisation and rotary angles in float32, or float64 for a float64 model), so
the same weights give the same logits in both.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# SwiGLU hidden sizes are rounded up to a multiple of this (as in Llama's ``multiple_of``).
FFN_MULTIPLE = 32


@dataclass
class ModelConfig:
    """Shape and numerics of a :class:`TinyLlama`; saved as a checkpoint's ``config.json``.

    ``d_ff`` defaults to 8/3 · d_model rounded up to a multiple of 32, which keeps the SwiGLU
    MLP (three matrices) at the parameter count of a classic 4 · d_model MLP (two matrices).
    """

    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    max_seq_len: int = 256
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = FFN_MULTIPLE * math.ceil(int(8 * self.d_model / 3) / FFN_MULTIPLE)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"ModelConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"ModelConfig head dimension d_model / n_heads = {self.head_dim} must be even "
                "(rotary embeddings rotate pairs of features)"
            )
        for name in ("rope_theta", "norm_eps", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"ModelConfig.{name} must be positive, got {getattr(self, name)!r}"
                )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys: {sorted(known)}")
        if "vocab_size" not in values:
            raise ValueError("ModelConfig needs 'vocab_size'")
        return cls(**values)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameter count of the model this config builds (tied weights counted once).

        ``exclude_embeddings`` leaves out the input embedding table (with tied embeddings
        that is also the output head, being the same tensor).
        """
        d, v = self.d_model, self.vocab_size
        per_layer = 4 * d * d + 3 * d * self.d_ff + 2 * d
        total = v * d + self.n_layers * per_layer + d + (0 if self.tie_embeddings else v * d)
        return total - v * d if exclude_embeddings else total


def model_flops_per_token(config: ModelConfig, seq_len: int | None = None) -> int:
    """Training FLOPs (forward + backward) per token, for compute accounting.

    The PaLM convention (Chowdhery et al. 2022, appendix B): 6 · N for the matrix multiplies,
    where N counts every weight used in one (the output head included, the embedding lookup
    not), plus 12 · n_layers · d_model · seq_len for the attention scores and their weighted
    sum (without the causal mask's saving). ``seq_len`` defaults to ``config.max_seq_len``.
    """
    seq_len = config.max_seq_len if seq_len is None else seq_len
    d = config.d_model
    matmul_params = config.n_layers * (4 * d * d + 3 * d * config.d_ff) + config.vocab_size * d
    return 6 * matmul_params + 12 * config.n_layers * d * seq_len


def num_parameters(model: nn.Module, exclude_embeddings: bool = False) -> int:
    """Number of distinct parameters of a built-in or Hugging Face model.

    ``exclude_embeddings`` leaves out the input embedding table (see
    :meth:`ModelConfig.num_parameters`).
    """
    total = sum(p.numel() for p in model.parameters())
    if exclude_embeddings:
        total -= model.get_input_embeddings().weight.numel()
    return total


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float32 and lower precisions, float64 for float64 models."""
    return torch.promote_types(dtype, torch.float32)


def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines [T, head_dim] of the rotary angles at integer ``positions`` [T].

    Feature pairs (j, j + head_dim/2) rotate at frequency theta^(-2j / head_dim), the
    Llama / GPT-NeoX layout (rotate-half), so that weights are interchangeable with HF Llama.
    """
    work = _compute_dtype(dtype)
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=work) / head_dim)
    )
    angles = positions.to(work)[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the feature pairs of ``x`` [..., T, head_dim] by the angles of (cos, sin) [T, head_dim]."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain, computed in at least float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(_compute_dtype(x.dtype))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary position embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def heads(h: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, head_dim]
            return h.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

        q = apply_rotary(heads(self.q_proj(x)), cos, sin)
        k = apply_rotary(heads(self.k_proj(x)), cos, sin)
        y = F.scaled_dot_product_attention(q, k, heads(self.v_proj(x)), is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    """The gated MLP down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.self_attn = SelfAttention(config)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyLlama(nn.Module):
    """Llama-style causal LM: ``forward(input_ids [B, T]) -> logits [B, T, vocab_size]``.

    Weights are drawn from N(0, init_std²), the residual output projections (``o_proj``,
    ``down_proj``) scaled by 1/sqrt(2 · n_layers) as in GPT-2, so the residual stream's variance
    does not grow with depth. Build under ``torch.device("meta")`` to size a model without
    allocating it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_embeddings:
            self.tie_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                is_residual = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)

    def tie_weights(self) -> None:
        """Make the output head share the input embedding table (one parameter)."""
        self.lm_head.weight = self.embed_tokens.weight

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table (same accessor as Hugging Face models)."""
        return self.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        """The output head (same accessor as Hugging Face models)."""
        return self.lm_head

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids))

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The normalised final states ``[B, T, d]`` the head reads."""
        if input_ids.ndim != 2:
            raise ValueError(
                f"input_ids must be [batch, seq_len], got shape {tuple(input_ids.shape)}"
            )
        seq_len = input_ids.shape[1]
        if seq_len > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {seq_len} exceeds the model's max_seq_len "
                f"{self.config.max_seq_len}"
            )
        x = self.embed_tokens(input_ids)
        positions = torch.arange(seq_len, device=input_ids.device)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)
