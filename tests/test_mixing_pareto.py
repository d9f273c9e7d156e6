"""The Pareto projection against an independent QP solve (SciPy SLSQP), and its invariants."""

import numpy as np
import pytest
from scipy.optimize import minimize

from tikmix.mixing.pareto import project_onto_pareto, project_onto_simplex, pull_towards


def _reference_projection(x, B_hat, floor, lower=None, upper=None):
    """The same QP by SciPy's SLSQP (an active-set method: exact on the active constraints)."""
    d = len(x)
    lower = np.zeros(d) if lower is None else lower
    upper = np.ones(d) if upper is None else upper
    result = minimize(
        lambda w: 0.5 * ((w - x) ** 2).sum(),
        np.full(d, 1 / d),
        jac=lambda w: w - x,
        method="SLSQP",
        bounds=list(zip(lower, upper, strict=True)),
        constraints=[
            {"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(d)},
            {"type": "ineq", "fun": lambda w: B_hat @ w - floor, "jac": lambda w: B_hat},
        ],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert result.success, result.message
    return result.x


def test_simplex_projection_matches_the_closed_form_cases():
    np.testing.assert_allclose(project_onto_simplex([[0.2, 0.3, 0.5]]), [[0.2, 0.3, 0.5]])
    np.testing.assert_allclose(project_onto_simplex([[2.0, 0.0, 0.0]]), [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(project_onto_simplex([[1.0, 1.0, -3.0]]), [[0.5, 0.5, 0.0]])
    rows = project_onto_simplex(np.random.default_rng(0).normal(size=(50, 7)))
    assert (rows >= 0).all() and np.allclose(rows.sum(axis=1), 1)


@pytest.mark.parametrize("seed", range(12))
def test_pareto_projection_equals_the_qp_solution(seed):
    """Random TiKMiX-like instances: B̂ rows in [-1, 1], floor from a random prior (so the set is
    non-empty), points from a Dirichlet around another mixture."""
    rng = np.random.default_rng(seed)
    d, t = rng.integers(3, 16), rng.integers(1, 6)
    B_hat = rng.uniform(-1, 1, size=(t, d))
    prior = rng.dirichlet(np.ones(d))
    floor = B_hat @ prior
    points = rng.dirichlet(np.ones(d), size=4)
    projected = project_onto_pareto(points, B_hat, floor)
    for x, p in zip(points, projected, strict=True):
        reference = _reference_projection(x, B_hat, floor)
        np.testing.assert_allclose(p, reference, atol=1e-6)
    assert (projected >= -1e-9).all() and np.allclose(projected.sum(axis=1), 1)
    assert (projected @ B_hat.T >= floor - 1e-7).all()
    exact = pull_towards(projected, prior, B_hat, floor)
    assert (exact @ B_hat.T >= floor - 1e-9).all() and np.allclose(exact.sum(axis=1), 1)
    np.testing.assert_allclose(exact, projected, atol=1e-6)  # only round-off removed


@pytest.mark.parametrize("seed", range(6))
def test_projection_onto_pareto_and_box_equals_the_qp_solution(seed):
    """TiKMiX-M's support: the box [0.5, 2]·w_D cut by the Pareto constraint, w_D inside it."""
    rng = np.random.default_rng(100 + seed)
    d, t = rng.integers(4, 16), rng.integers(1, 5)
    B_hat = rng.uniform(-1, 1, size=(t, d))
    center = rng.dirichlet(np.ones(d))
    floor = B_hat @ center - rng.uniform(0, 0.05, size=t)
    lower, upper = 0.5 * center, 2.0 * center
    points = rng.dirichlet(np.ones(d), size=4)
    projected = project_onto_pareto(points, B_hat, floor, lower=lower, upper=upper)
    for x, p in zip(points, projected, strict=True):
        np.testing.assert_allclose(
            p, _reference_projection(x, B_hat, floor, lower, upper), atol=1e-6
        )
    assert (projected >= lower - 1e-7).all() and (projected <= upper + 1e-7).all()
    assert (projected @ B_hat.T >= floor - 1e-7).all() and np.allclose(projected.sum(axis=1), 1)


def test_feasible_points_are_left_alone():
    B_hat = np.array([[1.0, 0.0, 0.0]])
    inside = np.array([[0.5, 0.3, 0.2]])
    np.testing.assert_allclose(project_onto_pareto(inside, B_hat, np.array([0.4])), inside)
    np.testing.assert_allclose(pull_towards(inside, inside[0], B_hat, np.array([0.4])), inside)
    outside = np.array([[0.2, 0.5, 0.3]])  # violates by 0.2: pulled half way to the anchor
    np.testing.assert_allclose(
        pull_towards(outside, inside[0], B_hat, np.array([0.35])), [[0.35, 0.4, 0.25]]
    )
    with pytest.raises(ValueError, match="anchor mixture violates"):
        pull_towards(inside, np.array([0.1, 0.6, 0.3]), B_hat, np.array([0.4]))
