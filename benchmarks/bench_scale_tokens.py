"""Benchmark: gradient, EK-FAC and influence cost vs token budget — linear growth (CPU).

Built-in Llama (d_model 128, 4 layers, vocab 1024, ~0.9M parameters), sequences of 128 tokens,
fp32. For token budgets 2k–16k it times the domain-gradient pass (``summed_gradients``), the
EK-FAC passes (covariances + Λ; the eigendecomposition is a one-off independent of tokens and
excluded) and the whole influence of one task on one domain (task gradient on a fixed task, the
EK-FAC fit including ``eigh``, IHVP, domain gradient and dot product). It fits
``seconds = slope · tokens + intercept`` by least squares and prints the slope (µs per token),
the intercept and R². Each stage's time is the best of two runs (the machine may be shared;
contention only ever adds time). Run: ``.venv/bin/python benchmarks/bench_scale_tokens.py`` (~1–2 minutes).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tikmix.influence import (
    EkfacFactors,
    covariance_sums,
    eigendecompose,
    lambda_sums,
    select_modules,
    summed_gradients,
)
from tikmix.influence.gradients import module_dot_products
from tikmix.models.llama import ModelConfig, TinyLlama

SEQ, BATCH = 128, 8
BUDGETS = [2048, 4096, 8192, 12288, 16384]


def timed(fn, repeats: int = 2):
    """The value of ``fn()`` and its best wall time over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return value, best


def main() -> None:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=1024, d_model=128, n_layers=4, n_heads=4, max_seq_len=SEQ)
    model = TinyLlama(config)
    modules = select_modules(model)
    gen = torch.Generator().manual_seed(0)
    pool = torch.randint(1024, (max(BUDGETS) // SEQ, SEQ + 1), generator=gen)
    task = [torch.randint(1024, (BATCH, SEQ + 1), generator=gen)]
    task_grad = summed_gradients(model, modules, task).mean()
    summed_gradients(model, modules, task)  # warm-up
    rows = []
    for tokens in BUDGETS:
        batches = list(pool[: tokens // SEQ].split(BATCH))
        domain, t_grad = timed(lambda b=batches: summed_gradients(model, modules, b))
        cov, t_cov = timed(lambda b=batches: covariance_sums(model, modules, b))
        bases, t_eigh = timed(lambda c=cov: eigendecompose(c))
        lam, t_lambda = timed(lambda b=batches, e=bases: lambda_sums(model, modules, e, b))
        factors = EkfacFactors.from_lambda(bases, lam)
        _, t_score = timed(
            lambda f=factors, d=domain: module_dot_products(f.ihvp(task_grad), d.mean())
        )
        t_ekfac = t_cov + t_lambda
        rows.append((tokens, t_grad, t_ekfac, t_grad + t_ekfac + t_eigh + t_score))
        print(
            f"tokens {tokens:6d}: gradient {t_grad:6.2f}s  EK-FAC (cov+Λ) {t_ekfac:6.2f}s  "
            f"eigh {t_eigh:5.2f}s  influence total {rows[-1][3]:6.2f}s",
            flush=True,
        )
    table = np.array(rows)
    x = table[:, 0]
    print(f"threads={torch.get_num_threads()}  model {config.num_parameters() / 1e6:.2f}M params")
    print(f"{'stage':<16} {'us/token':>9} {'intercept s':>11} {'R^2':>7}")
    for column, stage in enumerate(("gradient", "EK-FAC cov+Λ", "influence total"), start=1):
        y = table[:, column]
        slope, intercept = np.polyfit(x, y, 1)
        residual = y - (slope * x + intercept)
        r2 = 1 - residual.var() / y.var()
        print(f"{stage:<16} {slope * 1e6:9.1f} {intercept:11.3f} {r2:7.4f}")


if __name__ == "__main__":
    main()
