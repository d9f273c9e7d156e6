"""Benchmark: agreement of projected with unprojected influence, as a function of rank (CPU).

Trains the demo-sized built-in Llama (d_model 64, d_ff 192, 2 layers, vocab 256) for 300 steps on
a mixture of 8 synthetic domains (each a random sparse Markov chain over the vocabulary), then
runs ``tikmix.influence.api.projection_agreement``: EK-FAC and the tasks × domains benefit matrix
without projection and with ``rank_out = rank_in = r`` for r in {8, 16, 32, 64}, every fit from
scratch on the same batches. Tasks are held-out samples of three blends of the domains. Prints
Spearman (and Pearson) of each task's projected benefit row against the unprojected one.

On this model rank 64 is (nearly) full rank: every d_model-sized side (64, the input of
q/k/v/gate/up and the output of o/down) is *not* projected at r = 64, and only the 192-wide sides
of gate/up (output) and down (input) are; so the r = 64 row says little about 64 × 64 on a 4096-wide
layer. Run: ``.venv/bin/python benchmarks/bench_scale_projection.py`` (about a minute).
"""

from __future__ import annotations

import numpy as np
import torch

from tikmix.influence.api import projection_agreement
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.loss import summed_loss

VOCAB, SEQ, N_DOMAINS = 256, 64, 8
RANKS = [8, 16, 32, 64]


def markov_chains(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.dirichlet(np.full(VOCAB, 0.05), size=VOCAB) for _ in range(N_DOMAINS)]


def sample(chain: np.ndarray, n: int, rng: np.random.Generator) -> torch.Tensor:
    ids = np.empty((n, SEQ + 1), dtype=np.int64)
    ids[:, 0] = rng.integers(VOCAB, size=n)
    cdf = chain.cumsum(axis=1)
    for t in range(SEQ):
        u = rng.random(n)[:, None]
        ids[:, t + 1] = np.minimum((cdf[ids[:, t]] < u).sum(axis=1), VOCAB - 1)
    return torch.from_numpy(ids)


def blend(chains, weights, n, rng) -> torch.Tensor:
    counts = rng.multinomial(n, weights)
    return torch.cat([sample(chains[d], c, rng) for d, c in enumerate(counts) if c])


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    chains = markov_chains(rng)
    model = TinyLlama(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, max_seq_len=SEQ))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    uniform = np.full(N_DOMAINS, 1 / N_DOMAINS)
    for _ in range(300):
        loss, count = summed_loss(model, blend(chains, uniform, 16, rng))
        optimizer.zero_grad(set_to_none=True)
        (loss / count).backward()
        optimizer.step()
    print(f"trained: last batch loss {loss.item() / count:.3f} nats/token")

    def batches(ids: torch.Tensor) -> list[torch.Tensor]:
        return list(ids.split(16))

    fit = batches(blend(chains, uniform, 64, rng))
    domains = {f"domain{d}": batches(sample(chains[d], 32, rng)) for d in range(N_DOMAINS)}
    tasks = {
        f"task{t}": batches(blend(chains, rng.dirichlet(np.full(N_DOMAINS, 0.5)), 32, rng))
        for t in range(3)
    }
    table = projection_agreement(model, fit, tasks, domains, ranks=RANKS, seed=0)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = table.groupby("rank")[["spearman", "pearson"]].agg(["mean", "min"])
    print("per rank (over tasks):")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
