"""Benchmark: cost of the influence passes vs model size, relative to a training step (CPU).

Built-in Llama from ~0.2M to ~25M parameters, and a Hugging Face ``LlamaForCausalLM`` of ~100M
parameters (random init, ``save_pretrained`` into a temporary directory and loaded back through
``tikmix.models.checkpoint.load_checkpoint``, as a user's checkpoint would be). For each model, on
the same batches (fp32):

* ``train``: forward + backward + AdamW step — the reference;
* ``grad``: ``summed_gradients`` of the tracked projections (the domain/task gradient pass);
* ``ekfac``: covariance pass + Λ pass (``covariance_sums`` + ``lambda_sums``, sampled labels);
  the eigendecomposition, a one-off cost independent of tokens, is reported separately (``eigh s``);
* ``influence``: one task's IHVP plus one domain dot product (independent of tokens: seconds).

Per-token costs are printed as multiples of the training step's. Models above 5M parameters
(the 26M built-in and the ~100M HF model) track their layers in a 128×128 projected space: their
unprojected ``eigh`` of 1376² to 2048² factors alone takes minutes on 2 cores (measured 114 s
for a 30M built-in model); the smaller ones are unprojected (``proj`` column). Run:
``.venv/bin/python benchmarks/bench_scale_model_size.py`` (about 2–3 minutes on 2 cores).
"""

from __future__ import annotations

import tempfile
import time

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
from tikmix.influence.projection import ProjectionSpec, make_projections
from tikmix.models.checkpoint import load_checkpoint
from tikmix.models.llama import ModelConfig, TinyLlama, num_parameters
from tikmix.models.loss import summed_loss

SEQ = 128
BUILTIN = [  # (d_model, n_layers, vocab): about 0.2M, 1.3M, 6.8M and 26M parameters
    (64, 2, 2048),
    (128, 4, 4096),
    (256, 6, 8192),
    (512, 7, 8192),
]
PROJECT_ABOVE = 5e6  # models above this many parameters fit EK-FAC at rank 128 x 128
RANK = 128


def seconds(fn, repeats: int = 1) -> float:
    """Best of ``repeats`` wall times (the machine is shared: the minimum is the least noisy)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def hf_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    config = LlamaConfig(
        vocab_size=16000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=SEQ,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as directory:
        LlamaForCausalLM(config).save_pretrained(directory)
        model, _ = load_checkpoint(directory, device=torch.device("cpu"))
    return model


def measure(label: str, model: torch.nn.Module, n_batches: int, batch: int, rank: int | None):
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(vocab, (batch, SEQ + 1), generator=gen) for _ in range(n_batches)]
    tokens = n_batches * batch * SEQ
    modules = select_modules(model)
    projections = None if rank is None else make_projections(modules, ProjectionSpec(rank, rank))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train() -> None:
        for ids in batches:
            loss, count = summed_loss(model, ids)
            optimizer.zero_grad(set_to_none=True)
            (loss / count).backward()
            optimizer.step()

    train()  # warm-up (allocator, AdamW state)
    t_train = seconds(train, repeats=2)
    stats = {}
    t_grad = seconds(
        lambda: stats.update(g=summed_gradients(model, modules, batches, projections=projections)),
        repeats=2,
    )
    t_cov = seconds(
        lambda: stats.update(c=covariance_sums(model, modules, batches, projections=projections))
    )
    t_eigh = seconds(lambda: stats.update(b=eigendecompose(stats["c"])))
    t_lambda = seconds(
        lambda: stats.update(
            lam=lambda_sums(model, modules, stats["b"], batches, projections=projections)
        )
    )
    factors = EkfacFactors.from_lambda(stats["b"], stats["lam"])
    mean = stats["g"].mean()
    t_influence = seconds(lambda: module_dot_products(factors.ihvp(mean), mean))
    n_params = num_parameters(model)
    per_token = t_train / tokens
    print(
        f"{label:<22} {n_params / 1e6:8.2f} {'-' if rank is None else rank:>5} {tokens:7d} "
        f"{per_token * 1e6:10.1f} {t_grad / t_train:6.2f} {(t_cov + t_lambda) / t_train:6.2f} "
        f"{t_eigh:7.2f} {t_influence:9.4f}",
        flush=True,
    )


def main() -> None:
    print(f"threads={torch.get_num_threads()}  seq={SEQ}  fp32")
    print(
        f"{'model':<22} {'params M':>8} {'proj':>5} {'tokens':>7} {'train us/tok':>10} "
        f"{'grad x':>6} {'ekfac x':>6} {'eigh s':>7} {'influence s':>9}"
    )
    for d_model, n_layers, vocab in BUILTIN:
        torch.manual_seed(0)
        config = ModelConfig(
            vocab_size=vocab, d_model=d_model, n_layers=n_layers, n_heads=4, max_seq_len=SEQ
        )
        model = TinyLlama(config)
        small = config.num_parameters() < PROJECT_ABOVE
        n_batches, batch = (2, 8) if small else (1, 4)
        rank = None if small else RANK
        measure(f"built-in d{d_model} L{n_layers}", model, n_batches, batch, rank)
    measure("HF Llama h768 L12", hf_llama(), 1, 2, rank=RANK)
    print("grad x / ekfac x: seconds per token as a multiple of a training step's (same batches)")


if __name__ == "__main__":
    main()
