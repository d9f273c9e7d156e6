"""Random Kronecker projections: exact identities of the projected gradient and EK-FAC spaces."""

from __future__ import annotations

import copy

import pytest
import torch
from test_influence_models import markov_tokens, tiny_model, train_briefly
from torch import nn

from tikmix.influence import (
    covariance_sums,
    eigendecompose,
    fit_ekfac,
    group_influence,
    lambda_sums,
    select_modules,
    summed_gradients,
)
from tikmix.influence.api import projection_agreement
from tikmix.influence.projection import (
    ModuleProjection,
    ProjectionSpec,
    make_projections,
    project_gradients,
    resolve_projections,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]


def batches_of(ids, size, mask=None):
    return [
        (ids[i : i + size], None if mask is None else mask[i : i + size])
        for i in range(0, len(ids), size)
    ]


@pytest.fixture(scope="module")
def trained():
    """A float64 tiny LM with biases (so the bias column is projected too), trained a little."""
    ids = torch.cat([markov_tokens(8, 12, seed=s) for s in range(3)])
    return train_briefly(tiny_model(0, n_layers=2, bias=True), ids, steps=40), ids


def test_spec_from_config_validates_and_seeds_per_module():
    assert ProjectionSpec.from_config(None) is None
    spec = ProjectionSpec.from_config({"rank_out": 3, "rank_in": 4, "seed": 7})
    assert spec == ProjectionSpec(3, 4, 7)
    with pytest.raises(ValueError, match="unknown keys \\['rank'\\]"):
        ProjectionSpec.from_config({"rank": 3, "rank_in": 4, "rank_out": 2})
    with pytest.raises(ValueError, match="rank_out must be a positive integer"):
        ProjectionSpec(0, 4)
    modules = select_modules(tiny_model(0, n_layers=2, bias=True))
    first, again = make_projections(modules, spec), make_projections(modules, spec)
    names = list(modules)
    for name in names:  # same seed and name -> the same matrices (every job agrees)
        assert torch.equal(first[name].input, again[name].input)
    # different modules draw different matrices; the bias column is covered (in_features + 1)
    assert not torch.equal(first[names[0]].input, first[names[1]].input)
    assert first["layers.0.mlp.down_proj"].input.shape == (4, 9)
    # a side whose dimension is at most its rank stays unprojected
    wide = make_projections(modules, ProjectionSpec(rank_out=8, rank_in=4))
    assert wide["layers.0.mlp.up_proj"].output is None  # out = 8
    assert wide["layers.0.self_attn.v_proj"].output is None  # out = 6
    assert wide["layers.0.self_attn.v_proj"].input.shape == (4, 7)
    assert wide["layers.0.self_attn.v_proj"].shape(6, 7) == (6, 4)


@pytest.mark.parametrize("device", DEVICES)
def test_summed_projected_gradient_equals_projection_of_summed_gradient(trained, device):
    model, ids = trained
    model = copy.deepcopy(model).to(device)
    modules = select_modules(model)
    projections = make_projections(modules, ProjectionSpec(rank_out=3, rank_in=4, seed=1))
    mask = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) > 0.3).long()
    batches = batches_of(ids, 5, mask)
    full = summed_gradients(model, modules, batches)
    projected = summed_gradients(model, modules, batches, projections=projections)
    assert projected.n_tokens == full.n_tokens == int(mask[:, 1:].sum())
    reference = project_gradients(full.sums, projections)
    for name, value in projected.sums.items():
        assert value.shape == (3, 4)
        torch.testing.assert_close(value, reference[name], rtol=1e-10, atol=1e-12)


class Adapted(nn.Module):
    """``base(x) + P_outᵀ W' P_in x`` with ``W' = 0``: the projected reparameterisation of a layer.

    The gradient of the inner layer ``W'`` is ``P_out G P_inᵀ``; its input is ``P_in x`` and its
    output gradient ``P_out g``: the unprojected engine applied to ``W'`` is an independent
    reference for everything computed in the projected space.
    """

    def __init__(self, base: nn.Linear, projection: ModuleProjection):
        super().__init__()
        self.base = base
        self.register_buffer("p_in", projection.input)
        self.register_buffer("p_out", projection.output)
        self.inner = nn.Linear(projection.input.shape[0], projection.output.shape[0], bias=False)
        nn.init.zeros_(self.inner.weight)
        self.inner.to(base.weight.dtype)

    def forward(self, x):
        return self.base(x) + self.inner(x @ self.p_in.T) @ self.p_out


def adapted_copy(model, projections):
    """A copy of ``model`` with every projected layer wrapped; its inner layers by original name."""
    model = copy.deepcopy(model)
    inner = {}
    for name, projection in projections.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        wrapped = Adapted(getattr(parent, child), projection)
        setattr(parent, child, wrapped)
        inner[name] = wrapped.inner
    return model, inner


def test_projected_ekfac_equals_ekfac_of_the_projected_reparameterisation():
    ids = torch.cat([markov_tokens(8, 12, seed=s) for s in range(3)])
    model = train_briefly(tiny_model(1, n_layers=2, bias=False), ids, steps=40)
    modules = select_modules(model)
    projections = make_projections(modules, ProjectionSpec(rank_out=3, rank_in=4, seed=2))
    reference_model, inner = adapted_copy(model, projections)
    batches = batches_of(ids, 6)

    # covariances and Λ, pass by pass (Fisher labels: the adapted model's logits are identical)
    cov = covariance_sums(model, modules, batches, seed=3, projections=projections)
    ref_cov = covariance_sums(reference_model, inner, batches, seed=3)
    for name in modules:
        assert cov.activation[name].shape == (4, 4) and cov.gradient[name].shape == (3, 3)
        torch.testing.assert_close(cov.activation[name], ref_cov.activation[name])
        torch.testing.assert_close(cov.gradient[name], ref_cov.gradient[name])
    bases = eigendecompose(cov)
    lam = lambda_sums(model, modules, bases, batches, seed=3, projections=projections)
    ref_lam = lambda_sums(reference_model, inner, bases, batches, seed=3)
    for name in modules:
        torch.testing.assert_close(lam.sums[name], ref_lam.sums[name])

    # and end to end: the benefit matrix
    tasks = {f"t{s}": batches_of(markov_tokens(4, 12, seed=10 + s), 4) for s in range(2)}
    domains = {f"d{s}": batches_of(markov_tokens(6, 12, seed=20 + s), 6) for s in range(3)}
    factors = fit_ekfac(model, batches, modules=modules, projection=projections, seed=3)
    ref_factors = fit_ekfac(reference_model, batches, modules=inner, seed=3)
    projected = group_influence(model, tasks, domains, factors, modules, projection=projections)
    reference = group_influence(reference_model, tasks, domains, ref_factors, inner)
    torch.testing.assert_close(
        torch.tensor(projected.to_numpy()), torch.tensor(reference.to_numpy()), rtol=1e-7, atol=0
    )


def random_orthogonal(n, generator):
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=generator))
    return q * torch.sign(torch.diagonal(r))


@pytest.mark.parametrize("device", DEVICES)
def test_full_rank_orthogonal_projection_leaves_influence_unchanged(trained, device):
    model, ids = trained
    model = copy.deepcopy(model).to(device)
    modules = select_modules(model)
    generator = torch.Generator().manual_seed(5)
    rotations = {
        name: ModuleProjection(
            random_orthogonal(m.out_features, generator),
            random_orthogonal(m.in_features + 1, generator),
        )
        for name, m in modules.items()
    }
    assert resolve_projections(modules, rotations) == rotations
    batches = batches_of(ids, 6)
    tasks = {f"t{s}": batches_of(markov_tokens(4, 12, seed=10 + s), 4) for s in range(2)}
    domains = {f"d{s}": batches_of(markov_tokens(6, 12, seed=20 + s), 6) for s in range(3)}
    plain = group_influence(model, tasks, domains, fit_ekfac(model, batches, modules=modules))
    rotated_factors = fit_ekfac(model, batches, modules=modules, projection=rotations)
    rotated = group_influence(model, tasks, domains, rotated_factors, projection=rotations)
    torch.testing.assert_close(
        torch.tensor(rotated.to_numpy()), torch.tensor(plain.to_numpy()), rtol=1e-8, atol=0
    )
    # a random (non-orthogonal) projection of the same ranks does change the scores
    gaussian = {"rank_out": 6, "rank_in": 6, "seed": 0}
    changed = group_influence(
        model,
        tasks,
        domains,
        fit_ekfac(model, batches, modules=modules, projection=gaussian),
        projection=gaussian,
    )
    assert not torch.allclose(torch.tensor(changed.to_numpy()), torch.tensor(plain.to_numpy()))


def test_rank_agreement_rises_with_rank():
    ids = torch.cat([markov_tokens(6, 16, vocab=13, seed=s) for s in range(4)])
    model = train_briefly(
        tiny_model(3, n_layers=1, vocab=13, dim=16, hidden=32, bias=False), ids, steps=60
    )
    fit = batches_of(ids, 8)
    tasks = {f"t{s}": batches_of(markov_tokens(8, 16, vocab=13, seed=40 + s), 8) for s in range(3)}
    domains = {
        f"d{s}": batches_of(markov_tokens(8, 16, vocab=13, seed=s, concentration=0.2 + s / 10), 8)
        for s in range(8)
    }
    table = projection_agreement(model, fit, tasks, domains, ranks=[1, 8, 32], seed=0)
    assert list(table.columns) == ["rank", "task", "spearman", "pearson"]
    assert len(table) == 9
    mean = table.groupby("rank")["spearman"].mean()
    # rank 32 covers every layer (dims 16 and 32): no side is projected, agreement is exact
    assert mean[32] == pytest.approx(1.0)
    assert mean[1] < mean[8] < mean[32]
    with pytest.raises(ValueError, match="at least 3 domains"):
        projection_agreement(model, fit, tasks, dict(list(domains.items())[:2]), ranks=[1])


def test_lm_head_can_be_tracked_in_projected_space():
    """A vocabulary-sized output side is only ever held as [r_out, r_out] covariances."""
    model = tiny_model(0, n_layers=1, vocab=11, bias=False)
    modules = select_modules(model, r"lm_head$|mlp\.down_proj$")
    spec = ProjectionSpec(rank_out=4, rank_in=4)
    ids = markov_tokens(6, 10, seed=0)
    factors = fit_ekfac(model, batches_of(ids, 3), modules=modules, projection=spec)
    assert factors.eigenvalues["lm_head"].shape == (4, 4)
    assert factors.gradient_eigenvectors["lm_head"].shape == (4, 4)
    grads = summed_gradients(
        model, modules, batches_of(ids, 3), projections=make_projections(modules, spec)
    )
    assert set(factors.ihvp(grads.mean())) == {"lm_head", "layers.0.mlp.down_proj"}


def test_mismatched_projection_is_a_clear_error(trained):
    model, ids = trained
    modules = select_modules(model)
    factors = fit_ekfac(model, batches_of(ids, 6), modules=modules)
    projected = summed_gradients(
        model,
        modules,
        batches_of(ids, 6),
        projections=make_projections(modules, ProjectionSpec(2, 2)),
    )
    with pytest.raises(ValueError, match="has shape \\(2, 2\\), factors expect"):
        factors.ihvp(projected.mean())
