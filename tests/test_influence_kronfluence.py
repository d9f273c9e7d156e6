"""Agreement with kronfluence 1.0.1 (EK-FAC, empirical Fisher, aggregated gradients).

kronfluence's summed-loss conventions: its score for a (query set, train set) pair is
``Σ∇f_queryᵀ (F + λI)⁻¹ Σ∇ℓ_train`` with SUMMED token losses on both sides, while our benefit uses
per-token means, so ``B[v, d] = score / (n_tokens_v · n_tokens_d)``. Covariances are per token, Λ
per sequence, damping ``0.1 · mean(Λ)`` per module (``damping_factor=None``) in both.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_influence_models import markov_tokens, tiny_model, train_briefly

from tikmix.influence import (
    EkfacFactors,
    covariance_sums,
    domain_gradient,
    eigendecompose,
    influence_matrix,
    lambda_sums,
    precondition,
    select_modules,
    task_gradient,
)
from tikmix.models.loss import summed_loss

kronfluence = pytest.importorskip("kronfluence")
pytestmark = pytest.mark.reference


class SummedLossTask(kronfluence.Task):
    def __init__(self, names):
        self.names = names

    def compute_train_loss(self, batch, model, sample=False):
        assert not sample, "the reference runs with the empirical Fisher"
        return summed_loss(model, batch)[0]

    def compute_measurement(self, batch, model):
        return summed_loss(model, batch)[0]

    def get_influence_tracked_modules(self):
        return self.names


class Sequences(torch.utils.data.Dataset):
    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i]


def test_scores_eigenvalues_and_lambda_match_kronfluence(tmp_path, monkeypatch):
    from kronfluence.arguments import FactorArguments, ScoreArguments

    monkeypatch.chdir(tmp_path)
    model = tiny_model(2)
    fit = torch.cat([markov_tokens(8, 8, seed=s) for s in range(3)])
    train_briefly(model, fit, steps=20)
    modules = select_modules(model)
    tasks = {f"t{i}": markov_tokens(3, 8, seed=50 + i) for i in range(2)}
    domains = {f"d{i}": markov_tokens(4 + i, 8, seed=60 + i) for i in range(3)}

    batches = [fit[:10], fit[10:]]
    bases = eigendecompose(covariance_sums(model, modules, batches, fisher="empirical"))
    lambdas = lambda_sums(model, modules, bases, batches, fisher="empirical")
    factors = EkfacFactors.from_lambda(bases, lambdas, damping="auto")
    task_grads = {t: task_gradient(model, ids, modules=modules) for t, ids in tasks.items()}
    domain_grads = {d: domain_gradient(model, [ids], modules) for d, ids in domains.items()}
    ours, _ = influence_matrix(precondition(factors, task_grads), domain_grads)

    ref_model = kronfluence.prepare_model(copy.deepcopy(model), SummedLossTask(list(modules)))
    analyzer = kronfluence.Analyzer(
        "ref",
        ref_model,
        SummedLossTask(list(modules)),
        cpu=True,
        disable_tqdm=True,
        output_dir=str(tmp_path),
    )
    dtypes = {
        k: torch.float64
        for k in (
            "activation_covariance_dtype",
            "gradient_covariance_dtype",
            "per_sample_gradient_dtype",
            "lambda_dtype",
        )
    }
    analyzer.fit_all_factors(
        "f",
        Sequences(fit),
        per_device_batch_size=10,
        factor_args=FactorArguments(use_empirical_fisher=True, **dtypes),
    )
    score_args = ScoreArguments(
        damping_factor=None,
        aggregate_query_gradients=True,
        aggregate_train_gradients=True,
        per_sample_gradient_dtype=torch.float64,
        precondition_dtype=torch.float64,
        score_dtype=torch.float64,
    )
    reference = np.zeros(ours.shape)
    for i, (t, t_ids) in enumerate(tasks.items()):
        for j, (d, d_ids) in enumerate(domains.items()):
            analyzer.compute_pairwise_scores(
                f"s_{t}_{d}",
                "f",
                Sequences(t_ids),
                Sequences(d_ids),
                per_device_query_batch_size=len(t_ids),
                per_device_train_batch_size=2,
                score_args=score_args,
            )
            total = float(analyzer.load_pairwise_scores(f"s_{t}_{d}")["all_modules"].sum())
            reference[i, j] = total / (task_grads[t].n_tokens * domain_grads[d].n_tokens)
    print(
        "ours",
        ours.to_numpy(),
        "kronfluence",
        reference,
        "max relative difference",
        np.max(np.abs(ours.to_numpy() / reference - 1)),
        sep="\n",
    )
    np.testing.assert_allclose(ours.to_numpy(), reference, rtol=1e-4)

    eigen = analyzer.load_eigendecomposition("f")
    lambdas = analyzer.load_lambda_matrices("f")
    for name in modules:
        ref_lambda = lambdas["lambda_matrix"][name] / lambdas["num_lambda_processed"][name]
        # (token losses are float32 in tikmix.models.loss, hence rtol 1e-5 on a float64 model)
        torch.testing.assert_close(
            factors.eigenvalues[name], ref_lambda.double(), rtol=1e-5, atol=1e-12
        )
        for field in ("activation_eigenvalues", "gradient_eigenvalues"):
            torch.testing.assert_close(
                getattr(bases[name], field), eigen[field][name].double(), rtol=1e-5, atol=1e-12
            )
        for ours_q, key in (
            (factors.activation_eigenvectors[name], "activation_eigenvectors"),
            (factors.gradient_eigenvectors[name], "gradient_eigenvectors"),
        ):
            ref_q = eigen[key][name].double()
            # eigenvectors agree up to sign: |Q_oursᵀ Q_ref| is the identity
            torch.testing.assert_close(
                (ours_q.T @ ref_q).abs(),
                torch.eye(len(ref_q), dtype=torch.float64),
                rtol=0,
                atol=1e-5,
            )
