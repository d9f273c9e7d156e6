"""The fast EK-FAC passes (issue 14) against straightforward references.

``covariance_sums`` shares one ``Σ a aᵀ`` among modules reading the same input, forms per-batch
products in float32 (BLAS ``syrk`` on the CPU) and ``lambda_sums`` rotates shared inputs once,
in float32: both must stay within 1e-6 (relative, Frobenius) of the plain float64 per-module
computation, and the true-Fisher labels must be bit-identical to the per-sequence sampler.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from tikmix.influence import select_modules
from tikmix.influence.ekfac import (
    _backward_recorded,
    _sample_labels,
    _symmetric_from_upper,
    covariance_sums,
    eigendecompose,
    lambda_sums,
)
from tikmix.influence.tracking import LayerRecorder, evaluation_mode
from tikmix.models.llama import ModelConfig, TinyLlama

VOCAB, LENGTH = 97, 24


def reference_labels(probs, ids, mask, seed):
    """The sampler as it was before issue 14: one generator and one search per sequence."""
    targets = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.long)
    cdf = probs.double().cumsum(dim=-1)
    for n in range(ids.shape[0]):
        scored = mask[n].nonzero()
        if len(scored) == 0:
            continue
        length = int(scored[-1]) + 1
        digest = hashlib.blake2b(digest_size=8)
        digest.update(int(seed).to_bytes(8, "little", signed=True))
        digest.update(ids[n, : length + 1].numpy().astype(np.int64).tobytes())
        generator = torch.Generator().manual_seed(
            int.from_bytes(digest.digest(), "little") & (2**63 - 1)
        )
        uniforms = torch.rand(length, 1, dtype=torch.float64, generator=generator)
        row_cdf = cdf[n, :length]
        targets[n, :length] = (
            torch.searchsorted(row_cdf, uniforms * row_cdf[:, -1:]).squeeze(1).clamp_(max=VOCAB - 1)
        )
    return targets


def padded_batch(seed: int = 0, n: int = 6):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(VOCAB, (n, LENGTH + 1), generator=gen)
    loss_mask = torch.ones_like(ids)
    loss_mask[1, 15:] = 0  # trailing padding
    loss_mask[2, :9] = 0  # unscored prompt
    loss_mask[3, 5:12] = 0  # a hole
    loss_mask[4] = 0  # nothing scored
    return ids, loss_mask


def test_true_fisher_labels_are_bit_identical_to_the_per_sequence_sampler():
    ids, loss_mask = padded_batch()
    mask = loss_mask[:, 1:] != 0
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(ids.shape[0], LENGTH, VOCAB, generator=gen), dim=-1)
    for seed in (0, 7):
        labels = _sample_labels(probs, ids, mask, seed)
        assert torch.equal(labels, reference_labels(probs, ids, mask, seed))
    # a sequence's labels do not depend on its batch
    alone = _sample_labels(probs[2:3], ids[2:3], mask[2:3], 7)
    assert torch.equal(alone, labels[2:3])
    assert not torch.equal(_sample_labels(probs, ids, mask, 8), labels)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=LENGTH)
    return TinyLlama(config).float().eval()


def test_recorder_shares_the_input_of_modules_reading_the_same_tensor(model):
    modules = select_modules(model)
    recorder = LayerRecorder(modules)
    ids, loss_mask = padded_batch()
    _backward_recorded(model, recorder, ids, loss_mask, "true", 0, "fp32")
    a = {name: recorder.pairs(name)[0][0] for name in modules}
    layer = "layers.0.self_attn"
    assert a[f"{layer}.q_proj"] is a[f"{layer}.k_proj"] is a[f"{layer}.v_proj"]
    assert a["layers.0.mlp.gate_proj"] is a["layers.0.mlp.up_proj"]
    distinct = {id(x) for x in a.values()}
    assert len(distinct) == 2 * 4  # per layer: qkv, o, gate/up, down


def reference_sums(model, modules, batches, bases):
    """Covariance and Λ sums as before issue 14: per module, everything in float64."""
    recorder = LayerRecorder(modules)
    activation, gradient, lam = {}, {}, {}
    with evaluation_mode(model):
        for ids, loss_mask in batches:
            mask = _backward_recorded(model, recorder, ids, loss_mask, "true", 0, "fp32")
            for name in modules:
                ((a, g),) = recorder.pairs(name)
                a, g = a.double(), g.double()
                scored_a, scored_g = a[mask], g[mask]
                activation[name] = activation.get(name, 0) + scored_a.T @ scored_a
                gradient[name] = gradient.get(name, 0) + scored_g.T @ scored_g
                q_a = bases[name].activation_eigenvectors
                q_s = bases[name].gradient_eigenvectors
                rotated = torch.bmm((g @ q_s).transpose(1, 2), a @ q_a)
                lam[name] = lam.get(name, 0) + rotated.square().sum(dim=0)
    return activation, gradient, lam


def relative_difference(new: dict, old: dict) -> float:
    assert new.keys() == old.keys()
    num = sum(float((new[k].double() - old[k]).square().sum()) for k in old)
    return (num / sum(float(old[k].square().sum()) for k in old)) ** 0.5


def test_covariance_and_lambda_sums_match_the_float64_per_module_computation(model):
    modules = select_modules(model)
    batches = [padded_batch(seed) for seed in range(3)]
    covariances = covariance_sums(model, modules, batches)
    bases = eigendecompose(covariances)
    lambdas = lambda_sums(model, modules, bases, batches)
    activation, gradient, lam = reference_sums(model, modules, batches, bases)
    assert relative_difference(covariances.activation, activation) < 1e-6
    assert relative_difference(covariances.gradient, gradient) < 1e-6
    assert relative_difference(lambdas.sums, lam) < 1e-6
    for name in modules:  # shared-input modules still get a full, symmetric A each
        assert torch.equal(covariances.activation[name], covariances.activation[name].T)
        assert covariances.activation[name].dtype == torch.float64
    # q/k/v share A, hence Q_A: Λ's shared rotation is exercised
    q, k = (bases[f"layers.0.self_attn.{p}_proj"] for p in "qk")
    assert torch.equal(q.activation_eigenvectors, k.activation_eigenvectors)


class RoutingModel(torch.nn.Module):
    """Two tracked layers that read the same input tensor, except in batches of 3 sequences."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(VOCAB, 8)
        self.layers = torch.nn.ModuleList([torch.nn.Module()])
        self.layers[0].mlp = torch.nn.Module()
        self.layers[0].mlp.gate_proj = torch.nn.Linear(8, 8)
        self.layers[0].mlp.up_proj = torch.nn.Linear(8, 8)
        self.lm_head = torch.nn.Linear(8, VOCAB)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        mlp = self.layers[0].mlp
        y = 2 * x if ids.shape[0] == 3 else x
        return self.lm_head(torch.tanh(mlp.gate_proj(x)) * mlp.up_proj(y))


def test_shared_covariance_follows_a_change_of_which_modules_share_an_input():
    torch.manual_seed(0)
    model = RoutingModel().float()
    modules = select_modules(model)
    batches = [padded_batch(0), tuple(x[:3] for x in padded_batch(1)), padded_batch(2)]
    covariances = covariance_sums(model, modules, batches)
    bases = eigendecompose(covariances)
    activation, gradient, _ = reference_sums(model, modules, batches, bases)
    assert relative_difference(covariances.activation, activation) < 1e-6
    assert relative_difference(covariances.gradient, gradient) < 1e-6


@pytest.mark.parametrize("n", [1, 5, 255, 256, 257, 600])
def test_blocked_symmetrisation_equals_mirroring_the_whole_upper_triangle(n):
    """The block-wise mirror is bit-identical to ``triu + triu(1).T`` at every size (block
    boundaries included), ignores the lower triangle it is given and works in place."""
    upper = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    expected = upper.triu() + upper.triu(1).T
    from_triangle = _symmetric_from_upper(upper.triu())
    result = _symmetric_from_upper(upper)
    assert result.data_ptr() == upper.data_ptr()
    assert torch.equal(result, expected)
    assert torch.equal(from_triangle, expected)
