"""TiKMiX-M: LightGBM surrogate quality and the Algorithm 1 search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from tikmix.mixing.candidates import latin_hypercube_mixtures
from tikmix.mixing.search import kappa_schedule, search_mixture, solve_tikmix_m
from tikmix.mixing.surrogate import fit_surrogate
from tikmix.mixing.weights import MixtureInputError


@dataclass
class ExactResponse:
    """A stand-in surrogate with a known optimum: −‖w − w*‖²."""

    optimum: np.ndarray
    domains: list[str]

    def predict(self, W) -> np.ndarray:
        return -((np.atleast_2d(W) - self.optimum) ** 2).sum(axis=1)


def test_tikmix_m_finds_a_known_optimum():
    # TiKMiX-M's setting: runs sampled by LHS in a box around a prior, the optimum w* inside
    # that box but away from the prior, a concave response measured with noise.
    rng = np.random.default_rng(0)
    domains = ["web", "code", "books", "news"]
    w_orig = pd.Series(rng.dirichlet(np.full(4, 5.0)), index=domains)
    shift = rng.uniform(0.8, 1.25, 4)
    w_star = w_orig * shift / (w_orig * shift).sum()
    sample = latin_hypercube_mixtures(w_orig, 512, low=0.67, high=1.5, seed=0)
    W = sample.weights
    y = -((W - w_star) ** 2).sum(axis=1) + rng.normal(0, 1e-5, len(W))
    result = solve_tikmix_m(W, y, w_orig, seed=0, bounds=(sample.lower, sample.upper))
    start_distance = float(np.abs(w_orig - w_star).sum())
    distance = float(np.abs(result.weights - w_star).sum())
    assert start_distance > 0.1
    assert distance < 0.05, f"L1 {distance:.4f} from w* (start {start_distance:.4f})"
    assert result.quality.spearman >= 0.9
    assert min(result.quality.fold_spearman) >= 0.9
    assert result.weights.sum() == pytest.approx(1.0)
    trace = result.trace
    assert len(trace) == 20 and (np.diff(trace["kappa"]) > 0).all()
    assert (trace[domains].to_numpy() >= sample.lower.to_numpy() - 1e-12).all()
    assert (trace[domains].to_numpy() <= sample.upper.to_numpy() + 1e-12).all()


def test_cross_validated_quality_is_held_out():
    # On a pure-noise response the in-sample fit correlates strongly with y, but predictions
    # for held-out folds cannot: a leak of test rows into training would show here.
    rng = np.random.default_rng(1)
    W = pd.DataFrame(rng.dirichlet(np.ones(3), size=120), columns=list("abc"))
    y = rng.normal(size=120)
    fit = fit_surrogate(W, y, seed=0, early_stopping_rounds=1000)
    assert abs(fit.quality.spearman) < 0.3
    assert np.corrcoef(fit.model.predict(W), y)[0, 1] > 0.4
    assert fit.quality.n_folds == 5 and len(fit.quality.fold_pearson) == 5


def test_surrogate_is_deterministic_and_checks_columns():
    rng = np.random.default_rng(2)
    W = pd.DataFrame(rng.dirichlet(np.ones(3), size=60), columns=list("abc"))
    y = W["a"] - W["c"] ** 2
    first, again = fit_surrogate(W, y, seed=3), fit_surrogate(W, y, seed=3)
    np.testing.assert_array_equal(first.model.predict(W), again.model.predict(W))
    assert first.quality == again.quality
    # Columns are matched by name, not position.
    np.testing.assert_array_equal(first.model.predict(W[["c", "a", "b"]]), first.model.predict(W))
    with pytest.raises(MixtureInputError, match=r"lack domain column\(s\) \['c'\]"):
        first.model.predict(W[["a", "b"]])


def test_search_converges_on_an_exact_response_and_is_deterministic():
    domains = list("abcde")
    optimum = np.array([0.1, 0.4, 0.2, 0.25, 0.05])
    surrogate = ExactResponse(optimum, domains)
    w0 = pd.Series(0.2, index=domains)
    result = search_mixture(surrogate, w0, seed=0)
    assert np.abs(result.weights.to_numpy() - optimum).sum() < 0.01
    again = search_mixture(surrogate, w0, seed=0)
    pd.testing.assert_series_equal(result.weights, again.weights)
    pd.testing.assert_frame_equal(result.trace, again.trace)


def test_floor_lets_a_zero_weight_move_and_bounds_are_respected():
    domains = list("abc")
    surrogate = ExactResponse(np.array([0.3, 0.3, 0.4]), domains)
    w0 = pd.Series([0.5, 0.5, 0.0], index=domains)
    result = search_mixture(surrogate, w0, seed=1)
    assert result.weights["c"] > 0.3
    lower = pd.Series([0.35, 0.35, 0.0], index=domains)
    upper = pd.Series([0.6, 0.6, 0.2], index=domains)
    bounded = search_mixture(surrogate, w0, bounds=(lower, upper), seed=1)
    w = bounded.trace[domains].to_numpy()
    assert (w >= lower.to_numpy()).all() and (w <= upper.to_numpy()).all()
    assert bounded.weights["c"] > 0.15  # pushed towards the optimum, up to the bound
    with pytest.raises(MixtureInputError, match="floor must be > 0"):
        search_mixture(surrogate, w0, floor=0.0)


def test_kappa_schedule_rises_log_spaced():
    kappa = kappa_schedule(10.0, 1000.0, 3)
    np.testing.assert_allclose(kappa, [10.0, 100.0, 1000.0])
    with pytest.raises(MixtureInputError, match="kappa_min <= kappa_max"):
        kappa_schedule(100.0, 10.0, 3)


def test_search_with_projection_keeps_every_iterate_feasible():
    """A linear constraint (like TiKMiX's Pareto one) holds at every iterate of Algorithm 1,
    and the search still moves from w0 towards the constrained optimum along the boundary."""
    from tikmix.mixing.pareto import project_onto_pareto
    from tikmix.mixing.search import search_mixture
    from tikmix.mixing.surrogate import fit_surrogate

    rng = np.random.default_rng(0)
    domains = ["a", "b", "c"]
    W = pd.DataFrame(rng.dirichlet(np.ones(3), size=400), columns=domains)
    y = -((W.to_numpy() - [0.6, 0.3, 0.1]) ** 2).sum(axis=1)
    fit = fit_surrogate(W, y, seed=0)
    # Weight of "c" at least 0.25: excludes the unconstrained optimum, whose constrained
    # counterpart is the projection (0.5, 0.25, 0.25) when w0 starts on the boundary.
    B_hat, floor = np.array([[0.0, 0.0, 1.0]]), np.array([0.25])
    w0 = pd.Series([0.2, 0.55, 0.25], index=domains)
    result = search_mixture(
        fit.model,
        w0,
        iters=8,
        samples=256,
        top_k=16,
        project=lambda ws: project_onto_pareto(ws, B_hat, floor),
    )
    assert (result.trace["c"] >= 0.25 - 1e-9).all()
    assert result.weights["c"] >= 0.25 - 1e-9
    assert np.abs(result.weights.to_numpy() - [0.5, 0.25, 0.25]).sum() < 0.1
