"""bf16 autocast for the influence passes: close to fp32, on the built-in Llama, on any device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tikmix.influence import fit_ekfac, group_influence, select_modules, summed_gradients
from tikmix.influence.tracking import autocast
from tikmix.models.llama import ModelConfig, TinyLlama

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]
VOCAB, SEQ = 64, 16


def token_batches(seed: int, n_batches: int = 2, size: int = 8, skew: float = 1.0):
    """Batches of ids from a skewed unigram distribution (one per ``seed``): distinct domains."""
    gen = torch.Generator().manual_seed(seed)
    logits = skew * torch.randn(VOCAB, generator=gen)
    probs = torch.softmax(logits, dim=0)
    return [
        torch.multinomial(probs, size * (SEQ + 1), replacement=True, generator=gen).view(
            size, SEQ + 1
        )
        for _ in range(n_batches)
    ]


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=2, max_seq_len=SEQ)
    return TinyLlama(config)


def test_precision_names_are_checked():
    assert isinstance(autocast(torch.device("cpu"), "bf16"), torch.autocast)
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast(torch.device("cpu"), "fp16")


@pytest.mark.parametrize("device", DEVICES)
# rank_in 64 leaves the 32-wide inputs unprojected (still bf16) and projects down_proj's 96
@pytest.mark.parametrize("projection", [None, {"rank_out": 8, "rank_in": 64, "seed": 0}])
def test_bf16_influence_matches_fp32(llama, device, projection):
    model = llama.to(device)
    modules = select_modules(model)
    fit = token_batches(0, n_batches=3)
    tasks = {f"task{s}": token_batches(100 + s, n_batches=1) for s in range(3)}
    domains = {f"domain{s}": token_batches(200 + s, skew=0.5 + s / 2) for s in range(6)}
    matrices = {}
    for precision in ("fp32", "bf16"):
        factors = fit_ekfac(model, fit, modules=modules, precision=precision, projection=projection)
        matrices[precision] = group_influence(
            model, tasks, domains, factors, modules, precision=precision, projection=projection
        ).to_numpy()
    fp32, bf16 = matrices["fp32"].ravel(), matrices["bf16"].ravel()
    assert not np.array_equal(fp32, bf16)  # the autocast did run
    assert np.corrcoef(fp32, bf16)[0, 1] > 0.99


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_sums_accumulate_in_the_requested_dtype(llama, device):
    model = llama.to(device)
    modules = select_modules(model)
    batches = token_batches(1)
    fp32 = summed_gradients(model, modules, batches)
    bf16 = summed_gradients(model, modules, batches, precision="bf16")
    for name, reference in fp32.sums.items():
        assert bf16.sums[name].dtype == torch.float64
        relative = (bf16.sums[name] - reference).norm() / reference.norm()
        assert 0 < relative < 0.05, name
