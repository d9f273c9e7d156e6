"""EK-FAC against the exact damped Fisher on a model small enough to build it.

The exact curvature is ``F = E_seq[vec(G_n) vec(G_n)ᵀ]`` over the fitting sequences (``G_n`` the
per-sequence gradient of the summed loss, by plain autograd, one sequence at a time), with the
same empirical labels as the fit and the same per-module damping ``λ_m = 0.1 · mean(Λ_m)``. The
tracked layer is the MLP's output projection of a 1-block model (36 parameters), so ``F`` is
exact and block-diagonality is not in question; what is measured is EK-FAC's eigenbasis and
eigenvalue approximation. Plain K-FAC (same eigenbasis, uncorrected eigenvalues) must be worse.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_influence_models import markov_tokens, tiny_model, train_briefly

from tikmix.influence import fit_ekfac, fit_kfac, select_modules

pytestmark = pytest.mark.reference

VOCAB, LENGTH = 32, 8


def test_ekfac_tracks_the_exact_damped_fisher():
    model = tiny_model(0, vocab=VOCAB, dim=4, hidden=8)
    fit = torch.cat([markov_tokens(40, LENGTH, vocab=VOCAB, seed=s) for s in range(4)])
    train_briefly(model, fit)
    modules = select_modules(model, r"mlp\.down_proj$")
    ((name, layer),) = modules.items()
    batches = [fit[i : i + 32] for i in range(0, len(fit), 32)]
    ekfac = fit_ekfac(model, batches, modules=modules, fisher="empirical")
    kfac = fit_kfac(model, batches, modules=modules, fisher="empirical")

    def flat_gradient(ids: torch.Tensor, mean: bool) -> torch.Tensor:
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="sum"
        )
        w, b = torch.autograd.grad(
            loss / (ids[:, 1:].numel() if mean else 1), [layer.weight, layer.bias]
        )
        return torch.cat([w, b[:, None]], dim=1).reshape(-1)

    per_sequence = torch.stack([flat_gradient(fit[n : n + 1], mean=False) for n in range(len(fit))])
    fisher = per_sequence.T @ per_sequence / len(fit)
    damping = ekfac.damping[name]
    exact_inverse = torch.linalg.inv(fisher + damping * torch.eye(len(fisher), dtype=fisher.dtype))

    tasks = [
        flat_gradient(markov_tokens(8, LENGTH, vocab=VOCAB, seed=100 + s), True) for s in range(8)
    ]
    domains = [
        flat_gradient(markov_tokens(16, LENGTH, vocab=VOCAB, seed=s if s < 4 else 200 + s), True)
        for s in range(8)
    ]
    shape = ekfac.eigenvalues[name].shape

    def scores(factors) -> np.ndarray:
        if factors is None:
            pre = [exact_inverse @ t for t in tasks]
        else:
            pre = [factors.ihvp({name: t.reshape(shape)})[name].reshape(-1) for t in tasks]
        return np.array([[float(p @ d) for d in domains] for p in pre]).ravel()

    exact, ours, plain = scores(None), scores(ekfac), scores(kfac)
    pearson_ekfac = np.corrcoef(exact, ours)[0, 1]
    pearson_kfac = np.corrcoef(exact, plain)[0, 1]
    error_ekfac = np.linalg.norm(ours - exact) / np.linalg.norm(exact)
    error_kfac = np.linalg.norm(plain - exact) / np.linalg.norm(exact)

    def curvature_error(factors) -> float:
        q = torch.kron(factors.gradient_eigenvectors[name], factors.activation_eigenvectors[name])
        approx = q @ torch.diag(factors.eigenvalues[name].reshape(-1)) @ q.T
        return float(torch.linalg.norm(approx - fisher) / torch.linalg.norm(fisher))

    print(f"pearson vs exact: ekfac {pearson_ekfac:.4f}  kfac {pearson_kfac:.4f}")
    print(f"relative score error: ekfac {error_ekfac:.4f}  kfac {error_kfac:.4f}")
    print(
        f"relative curvature error: ekfac {curvature_error(ekfac):.4f}  "
        f"kfac {curvature_error(kfac):.4f}"
    )
    assert pearson_ekfac >= 0.95
    assert error_ekfac < 0.95 * error_kfac
    assert curvature_error(ekfac) < 0.85 * curvature_error(kfac)
