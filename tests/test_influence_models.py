"""Tiny causal LMs and token data shared by the influence tests (this file holds no tests).

The model is built from ``nn.Linear`` layers named like Llama's, so the default module pattern
tracks ``layers.{i}.self_attn.{v,o}_proj`` and ``layers.{i}.mlp.{up,down}_proj`` but not the head.
Token mixing is a causal prefix mean (no parameters), so position t depends on tokens ≤ t only.
"""

from __future__ import annotations

import torch
from torch import nn


class PrefixMeanMixer(nn.Module):
    def __init__(self, dim: int, bias: bool):
        super().__init__()
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.o_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v_proj(x)
        counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)
        return self.o_proj(v.cumsum(dim=1) / counts[:, None])


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool):
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.tanh(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool):
        super().__init__()
        self.self_attn = PrefixMeanMixer(dim, bias)
        self.mlp = Mlp(dim, hidden, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(x)
        return x + self.mlp(x)


class TinyCausalLM(nn.Module):
    """``ids [B, T] → logits [B, T, V]``: embedding, residual blocks, untracked Linear head."""

    def __init__(
        self, vocab: int = 11, dim: int = 6, hidden: int = 8, n_layers: int = 1, bias: bool = True
    ):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, hidden, bias) for _ in range(n_layers))
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(x)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float64, **kwargs) -> TinyCausalLM:
    torch.manual_seed(seed)
    return TinyCausalLM(**kwargs).to(dtype)


def markov_tokens(
    n: int, length: int, vocab: int = 11, seed: int = 0, concentration: float = 0.3
) -> torch.Tensor:
    """``[n, length + 1]`` token ids from a random sparse-ish Markov chain (one per ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    transitions = torch.distributions.Dirichlet(torch.full((vocab,), concentration))
    torch.manual_seed(seed)
    probs = transitions.sample((vocab,))
    ids = torch.empty(n, length + 1, dtype=torch.long)
    ids[:, 0] = torch.randint(vocab, (n,), generator=gen)
    for t in range(length):
        ids[:, t + 1] = torch.multinomial(probs[ids[:, t]], 1, generator=gen).squeeze(1)
    return ids


def train_briefly(model: nn.Module, ids: torch.Tensor, steps: int = 60, lr: float = 0.03):
    """A few full-batch Adam steps so the curvature is that of a model that has learned a bit."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        logits = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model
