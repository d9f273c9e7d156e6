"""Group influence engine: module selection, masks, linearity, map-reduce and Fisher sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_influence_models import markov_tokens, tiny_model

from tikmix.influence import (
    DEFAULT_MODULE_PATTERN,
    EkfacFactors,
    covariance_sums,
    domain_gradient,
    eigendecompose,
    fit_ekfac,
    influence_matrix,
    lambda_sums,
    measure_mixture_benefits,
    precondition,
    reduce,
    select_modules,
    summed_gradients,
    task_gradient,
)
from tikmix.influence.ekfac import fisher_loss


@pytest.fixture(scope="module")
def model():
    return tiny_model(0, n_layers=2)


@pytest.fixture(scope="module")
def modules(model):
    return select_modules(model)


@pytest.fixture(scope="module")
def fit_ids():
    return torch.cat([markov_tokens(12, 10, seed=s) for s in range(3)])


def batches_of(ids, size, mask=None):
    return [
        (ids[i : i + size], None if mask is None else mask[i : i + size])
        for i in range(0, len(ids), size)
    ]


def test_default_pattern_tracks_projections_not_head(model):
    names = sorted(select_modules(model))
    assert names == sorted(
        f"layers.{i}.{block}"
        for i in range(2)
        for block in ("self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")
    )
    wrapped = torch.nn.Module()
    wrapped.model = model  # Hugging Face adds a `model.` prefix
    assert len(select_modules(wrapped, DEFAULT_MODULE_PATTERN)) == 8
    with pytest.raises(ValueError, match=r"attention.*q_proj. matches no nn\.Linear"):
        select_modules(model, r"attention\.q_proj")


def test_group_gradient_equals_autograd_of_mean_loss(model, modules):
    """Our summed-then-averaged gradient is the plain autograd gradient of the mean token loss."""
    ids = markov_tokens(5, 9, seed=7)
    mask = torch.ones_like(ids)
    mask[:, :4] = 0  # score only the continuation
    stats = task_gradient(model, ids, mask, modules, batch_size=2)
    assert stats.n_tokens == 5 * 6 and stats.n_sequences == 5
    logits = model(ids[:, :-1])
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
    ).view(5, 9)
    mean_loss = (losses * mask[:, 1:]).sum() / mask[:, 1:].sum()
    up = modules["layers.1.mlp.up_proj"]
    w, b = torch.autograd.grad(mean_loss, [up.weight, up.bias])
    expected = torch.cat([w, b[:, None]], dim=1)
    # (the token losses are computed in float32 by tikmix.models.loss, hence rtol 1e-5)
    torch.testing.assert_close(
        stats.mean()["layers.1.mlp.up_proj"], expected, rtol=1e-5, atol=1e-10
    )


def test_padding_is_invisible(model, modules):
    """A right-padded sequence (padding unscored) contributes exactly what the short one does."""
    short = markov_tokens(3, 6, seed=3)
    padded = torch.zeros(3, 10, dtype=torch.long)
    padded[:, :7] = short
    mask = torch.zeros_like(padded)
    mask[:, 1:7] = 1
    for fisher in ("empirical", "true"):
        a = covariance_sums(model, modules, [short], fisher=fisher, seed=1)
        b = covariance_sums(model, modules, [(padded, mask)], fisher=fisher, seed=1)
        assert a.n_tokens == b.n_tokens == dict.fromkeys(modules, 18)
        for name in modules:
            torch.testing.assert_close(a.activation[name], b.activation[name], rtol=1e-10, atol=0)
            torch.testing.assert_close(a.gradient[name], b.gradient[name], rtol=1e-6, atol=1e-14)
    ga, gb = (
        summed_gradients(model, modules, [short]),
        summed_gradients(model, modules, [(padded, mask)]),
    )
    assert ga.n_tokens == gb.n_tokens == 18
    for name in modules:
        torch.testing.assert_close(ga.sums[name], gb.sums[name], rtol=1e-6, atol=1e-14)


def test_group_influence_is_linear_in_members(model, modules, fit_ids):
    """n_S · B[v, S] == Σ_i n_i · B[v, S_i] for a set S split into members of unequal size.

    The domain gradient is a per-token mean, so the *token-weighted* member benefits add up:
    the sum of members' SUM-gradients is the set's SUM-gradient.
    """
    factors = fit_ekfac(model, batches_of(fit_ids, 8), modules=modules, fisher="empirical")
    tasks = {"t0": task_gradient(model, markov_tokens(4, 10, seed=11), modules=modules)}
    pre = precondition(factors, tasks)
    ids = markov_tokens(9, 10, seed=12)
    mask = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.7).long()
    members = {
        f"m{i}": [(ids[s], mask[s])] for i, s in enumerate([[0], [1, 2, 3], [4, 5, 6, 7, 8]])
    }
    member_stats = {k: domain_gradient(model, b, modules) for k, b in members.items()}
    whole = domain_gradient(model, [(ids, mask)], modules)
    matrix, per_module = influence_matrix(pre, {"set": whole, **member_stats})
    weighted = sum(member_stats[k].n_tokens * matrix.loc["t0", k] for k in members)
    assert whole.n_tokens == sum(s.n_tokens for s in member_stats.values())
    np.testing.assert_allclose(whole.n_tokens * matrix.loc["t0", "set"], weighted, rtol=1e-5)
    # the per-module table adds up to the matrix
    total = per_module.groupby(["task", "domain"])["benefit"].sum()
    np.testing.assert_allclose(total.loc[("t0", "set")], matrix.loc["t0", "set"], rtol=1e-12)


def test_map_reduce_and_batch_size_invariance(model, modules, fit_ids):
    """1 shard vs 4 shards, and batch sizes 4 vs 36, give the same sums, factors and scores."""
    one = covariance_sums(model, modules, batches_of(fit_ids, 36), seed=5)
    parts = [covariance_sums(model, modules, batches_of(s, 4), seed=5) for s in fit_ids.chunk(4)]
    four = reduce(parts)
    assert four.n_tokens == one.n_tokens and four.n_sequences == one.n_sequences == 36
    for name in modules:
        torch.testing.assert_close(four.activation[name], one.activation[name], rtol=1e-6, atol=0)
        torch.testing.assert_close(four.gradient[name], one.gradient[name], rtol=1e-6, atol=1e-16)
    bases = eigendecompose(one)
    lam_one = lambda_sums(model, modules, bases, batches_of(fit_ids, 36), seed=5)
    lam_four = reduce(
        lambda_sums(model, modules, bases, batches_of(s, 3), seed=5) for s in fit_ids.chunk(4)
    )
    for name in modules:
        torch.testing.assert_close(lam_four.sums[name], lam_one.sums[name], rtol=1e-6, atol=1e-16)
    f_one = EkfacFactors.from_lambda(bases, lam_one)
    f_four = EkfacFactors.from_lambda(eigendecompose(four), lam_four)

    domain_ids = markov_tokens(16, 10, seed=20)
    g_one = domain_gradient(model, batches_of(domain_ids, 16), modules)
    g_four = reduce(domain_gradient(model, batches_of(s, 2), modules) for s in domain_ids.chunk(4))
    for name in modules:
        torch.testing.assert_close(g_four.sums[name], g_one.sums[name], rtol=1e-6, atol=1e-16)
    tasks = {"t": task_gradient(model, markov_tokens(3, 10, seed=21), modules=modules)}
    m_one, _ = influence_matrix(precondition(f_one, tasks), {"d": g_one})
    m_four, _ = influence_matrix(precondition(f_four, tasks), {"d": g_four})
    np.testing.assert_allclose(m_four.to_numpy(), m_one.to_numpy(), rtol=1e-6)


def test_true_fisher_labels_are_deterministic_per_seed(model, fit_ids):
    ids = fit_ids[:6]
    labels = []
    for seed in (3, 3, 4):
        loss, _ = fisher_loss(model, ids, None, "true", seed)
        labels.append(float(loss.detach()))
    assert labels[0] == labels[1]
    assert labels[0] != labels[2]
    # the labels of a sequence do not depend on the rest of its batch
    alone = sum(
        float(fisher_loss(model, ids[i : i + 1], None, "true", 3)[0].detach()) for i in range(6)
    )
    assert alone == pytest.approx(labels[0], rel=1e-9)
    # and they are drawn from the model, not the data: the losses differ from the empirical ones
    empirical = float(fisher_loss(model, ids, None, "empirical", 3)[0].detach())
    assert empirical != pytest.approx(labels[0])


def test_ihvp_inverts_the_damped_curvature(model, modules, fit_ids):
    factors = fit_ekfac(model, batches_of(fit_ids, 12), modules=modules)
    name = "layers.0.mlp.up_proj"
    q_a, q_s = factors.activation_eigenvectors[name], factors.gradient_eigenvectors[name]
    v = torch.randn(factors.eigenvalues[name].shape, dtype=torch.float64)
    x = factors.ihvp(
        {n: v if n == name else torch.zeros_like(e) for n, e in factors.eigenvalues.items()}
    )[name]
    curvature_times_x = (
        q_s @ ((q_s.T @ x @ q_a) * (factors.eigenvalues[name] + factors.damping[name])) @ q_a.T
    )
    torch.testing.assert_close(curvature_times_x, v, rtol=1e-9, atol=1e-12)
    assert factors.damping[name] == pytest.approx(0.1 * float(factors.eigenvalues[name].mean()))


def test_measured_mixture_benefit_matches_matrix(model, modules, fit_ids):
    """A dataset made of two domains' sequences measures the token-weighted matrix prediction."""
    factors = fit_ekfac(model, batches_of(fit_ids, 12), modules=modules, fisher="empirical")
    tasks = {
        f"t{i}": task_gradient(model, markov_tokens(3, 10, seed=30 + i), modules=modules)
        for i in range(2)
    }
    pre = precondition(factors, tasks)
    a, b = markov_tokens(4, 10, seed=40), markov_tokens(8, 10, seed=41)
    matrix, _ = influence_matrix(
        pre, {"a": domain_gradient(model, [a], modules), "b": domain_gradient(model, [b], modules)}
    )
    measured = measure_mixture_benefits(model, modules, [[a, b], [b]], pre)
    predicted = (4 * matrix["a"] + 8 * matrix["b"]) / 12
    np.testing.assert_allclose(measured[0], predicted.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(measured[1], matrix["b"].to_numpy(), rtol=1e-6)
    assert measured.shape == (2, 2)


def test_fitting_rejects_a_one_shot_iterator(model, fit_ids):
    with pytest.raises(TypeError, match="re-iterable"):
        fit_ekfac(model, iter(batches_of(fit_ids, 12)))
