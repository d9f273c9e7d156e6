"""TiKMiX-M's curvature response against a brute-force refit, and its linear limit B·w."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_influence_models import markov_tokens, tiny_model

from tikmix.influence import (
    EkfacFactors,
    covariance_sums,
    eigendecompose,
    lambda_sums,
    select_modules,
    summed_gradients,
)
from tikmix.influence.ekfac import LambdaSums
from tikmix.influence.gradients import module_dot_products
from tikmix.influence.mixture_curvature import ModuleTerms, curvature_responses


@pytest.fixture(scope="module")
def setting():
    """A tiny model, three domains (distinct Markov chains), two tasks, a fitted EK-FAC."""
    torch.manual_seed(0)
    model = tiny_model(0, n_layers=2)
    modules = select_modules(model)
    domains = [markov_tokens(8, 10, seed=s) for s in (1, 2, 3)]
    tasks = [markov_tokens(4, 10, seed=s) for s in (11, 12)]
    batches = [[(ids[i : i + 4], None) for i in range(0, len(ids), 4)] for ids in domains]
    fit_batches = [b for domain in batches for b in domain]
    bases = eigendecompose(covariance_sums(model, modules, fit_batches, seed=5))
    fitted = EkfacFactors.from_lambda(
        bases, lambda_sums(model, modules, bases, fit_batches, seed=5)
    )
    per_domain = [lambda_sums(model, modules, bases, b, seed=5) for b in batches]
    domain_grads = [summed_gradients(model, modules, b).mean() for b in batches]
    task_grads = [summed_gradients(model, modules, [(ids, None)]).mean() for ids in tasks]
    return model, modules, bases, fitted, per_domain, domain_grads, task_grads


def module_terms(setting, lambdas):
    """The response's per-module terms with ``lambdas[d][module]`` as domain d's Λ."""
    _, modules, bases, fitted, _, domain_grads, task_grads = setting
    return [
        ModuleTerms.rotate(
            name,
            bases[name].activation_eigenvectors,
            bases[name].gradient_eigenvectors,
            fitted.damping[name],
            [g[name] for g in task_grads],
            [g[name] for g in domain_grads],
            [values[name] for values in lambdas],
        )
        for name in modules
    ]


def brute_force(setting, w):
    """Refit Λ on the pooled per-domain samples, weighted by w (each domain's sequences carry
    w_d / n_d), keep the eigenbasis and damping, and run the library's IHVP on ḡ(w)."""
    _, modules, bases, fitted, per_domain, domain_grads, task_grads = setting
    pooled = LambdaSums(
        sums={
            m: sum(
                wd * part.sums[m] / part.n_sequences for wd, part in zip(w, per_domain, strict=True)
            )
            for m in modules
        },
        n_sequences=1,
    )
    refit = EkfacFactors.from_lambda(bases, pooled)
    refit.damping = dict(fitted.damping)
    mixture_gradient = {
        m: sum(wd * g[m] for wd, g in zip(w, domain_grads, strict=True)) for m in modules
    }
    return np.array(
        [
            sum(module_dot_products(refit.ihvp(task), mixture_gradient).values())
            for task in task_grads
        ]
    )


def test_curvature_response_equals_a_brute_force_refit(setting):
    per_domain = setting[4]
    lambdas = [{m: part.sums[m] / part.n_sequences for m in part.sums} for part in per_domain]
    W = np.random.default_rng(0).dirichlet(np.ones(3), size=6)
    W[0] = [1.0, 0.0, 0.0]  # a vertex: one domain's own curvature
    ours = curvature_responses(W, module_terms(setting, lambdas))
    reference = np.stack([brute_force(setting, w) for w in W])
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-12)
    # Not linear in w: the interaction through the curvature is real on this model.
    midpoint = curvature_responses(W[:2].mean(axis=0)[None], module_terms(setting, lambdas))
    assert np.abs(midpoint[0] - ours[:2].mean(axis=0)).max() > 1e-6 * np.abs(ours).max()


def test_curvature_response_reduces_to_b_times_w_with_the_fitted_lambda(setting):
    _, modules, _, fitted, _, domain_grads, task_grads = setting
    same = [dict(fitted.eigenvalues) for _ in range(3)]
    W = np.random.default_rng(1).dirichlet(np.ones(3), size=5)
    ours = curvature_responses(W, module_terms(setting, same))
    B = np.array(
        [
            [sum(module_dot_products(fitted.ihvp(task), g).values()) for g in domain_grads]
            for task in task_grads
        ]
    )
    np.testing.assert_allclose(ours, W @ B.T, rtol=1e-10, atol=1e-14)


def test_chunking_does_not_change_the_response(setting):
    per_domain = setting[4]
    lambdas = [{m: part.sums[m] / part.n_sequences for m in part.sums} for part in per_domain]
    W = np.random.default_rng(2).dirichlet(np.ones(3), size=7)
    whole = curvature_responses(W, module_terms(setting, lambdas))
    chunked = curvature_responses(W, module_terms(setting, lambdas), max_elements=50)
    np.testing.assert_allclose(whole, chunked, rtol=1e-12)
    with pytest.raises(ValueError, match="mixtures have 2 domains"):
        curvature_responses(W[:, :2], module_terms(setting, lambdas))
