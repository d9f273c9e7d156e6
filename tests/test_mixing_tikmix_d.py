"""TiKMiX-D: constraints, optimality against independent solvers, invariances, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import BFGS, Bounds, LinearConstraint, minimize
from threadpoolctl import threadpool_limits

from tikmix.core.conventions import normalised_benefit
from tikmix.core.mixture import MixtureInputError
from tikmix.core.settings import Normalisation, TikmixDSettings
from tikmix.mixing.tikmix_d import MixtureSolveError, solve_tikmix_d

TOL = 1e-8


def frame(B: np.ndarray) -> pd.DataFrame:
    n, m = B.shape
    return pd.DataFrame(
        B, index=[f"task{i}" for i in range(n)], columns=[f"d{j}" for j in range(m)]
    )


def reference_scale(B, eps=1e-8, normaliser="max"):
    """Eq. 6's normaliser written out independently: the paper's max_j B_ij (max_j |B_ij| for
    a row without a positive entry, or for every row with ``abs_max``), times (1 + ε)."""
    B = np.asarray(B, dtype=float)
    scale = []
    for row in B:
        s = np.abs(row).max() if normaliser == "abs_max" or row.max() <= 0 else row.max()
        scale.append(s * (1 + eps) if s > 0 else 1.0)
    return np.array(scale)


def reference_objective(B, w, alpha=1.0, beta=1.0, gamma=1.0, eps=1e-8):
    """Eq. 7 written out independently of the library (entropy with 0 log 0 = 0)."""
    p = (B @ w) / reference_scale(B, eps)
    w_pos = w[w > 0]
    return alpha * p.std() - beta * p.sum() + gamma * float(w_pos @ np.log(w_pos))


def random_problem(rng, m, n, *, negative_row=False, with_caps=False):
    # Rows on very different scales: the normaliser must make them comparable.
    B = rng.normal(size=(n, m)) * 10.0 ** rng.uniform(-6, 3, size=(n, 1))
    if negative_row:
        B[rng.integers(n)] = -np.abs(B[rng.integers(n)]) - 1e-3
    concentration = rng.choice([0.2, 1.0, 20.0])
    prior = rng.dirichlet(np.full(m, concentration))
    prior[rng.random(m) < 0.1] = 0.0  # some domains absent from the prior
    if prior.sum() == 0:
        prior[0] = 1.0
    prior /= prior.sum()
    caps = None
    if with_caps:
        # Caps above the prior (so the problem is feasible), some below 1/m (so the uniform
        # start must be projected onto them).
        caps = np.maximum(prior * rng.uniform(1.0, 3.0, m), rng.uniform(0.3, 2.0) / m)
    return frame(B), prior, caps


def check_feasible(B: pd.DataFrame, prior: np.ndarray, w: np.ndarray, caps=None, eps=1e-8):
    assert np.all(w >= 0)
    assert abs(w.sum() - 1) <= TOL
    if caps is not None:
        assert np.all(w <= caps + TOL)
    slack = (B.to_numpy() @ w - B.to_numpy() @ prior) / reference_scale(B.to_numpy(), eps)
    assert slack.min() >= -TOL, f"Pareto constraint violated by {-slack.min():.3g}"
    return slack


def test_constraints_hold_on_random_problems():
    rng = np.random.default_rng(0)
    for k in range(200):
        m, n = int(rng.integers(2, 65)), int(rng.integers(1, 13))
        with_caps = k % 4 == 1
        B, prior, caps = random_problem(rng, m, n, negative_row=k % 3 == 0, with_caps=with_caps)
        cap_series = None if caps is None else pd.Series(caps, index=B.columns)
        result = solve_tikmix_d(B, pd.Series(prior, index=B.columns), caps=cap_series)
        w = result.weights.to_numpy()
        slack = check_feasible(B, prior, w, np.minimum(caps, 1) if with_caps else None)
        np.testing.assert_allclose(result.pareto_slack.to_numpy(), slack, atol=1e-12)
        assert result.success and result.weights.index.tolist() == B.columns.tolist()


def _random_feasible_starts(rng, A, prior, count):
    """Dirichlet points that satisfy the Pareto constraint (rejection sampling)."""
    draws = rng.dirichlet(np.ones(A.shape[1]), size=200_000)
    feasible = draws[((draws - prior) @ A.T >= 0).all(axis=1)]
    assert len(feasible) >= count
    return feasible[:count]


@threadpool_limits.wrap(limits=1, user_api="blas")
def test_objective_no_worse_than_trust_constr_multistart():
    rng = np.random.default_rng(2)
    for _ in range(3):
        m, n = int(rng.integers(3, 7)), int(rng.integers(1, 4))
        B, prior, _ = random_problem(rng, m, n)
        Bv = B.to_numpy()
        A = Bv / reference_scale(Bv)[:, None]
        ours = solve_tikmix_d(B, pd.Series(prior, index=B.columns))
        best = np.inf
        for x0 in _random_feasible_starts(rng, A, prior, 20):
            ref = minimize(
                lambda w, Bv=Bv: reference_objective(Bv, np.clip(w, 1e-300, None)),
                x0,
                method="trust-constr",
                hess=BFGS(),
                constraints=[
                    LinearConstraint(np.ones((1, m)), 1, 1),
                    LinearConstraint(A, A @ prior, np.inf),
                ],
                bounds=Bounds(0, 1),
                options={"maxiter": 300, "gtol": 1e-10, "xtol": 1e-12},
            )
            w = ref.x
            feasible = (w >= -TOL).all() and abs(w.sum() - 1) <= 1e-6
            if feasible and ((w - prior) @ A.T >= -1e-6).all():
                best = min(best, reference_objective(Bv, np.clip(w, 0, None)))
        assert np.isfinite(best)
        ours_value = reference_objective(Bv, ours.weights.to_numpy())
        assert ours_value == pytest.approx(ours.objective, abs=1e-12)
        assert ours_value <= best + 1e-6


def ecos_optimum(B, prior, alpha, beta, gamma, caps=None):
    """TiKMiX-D's optimum from another interior-point solver (ECOS), formulated here."""
    import cvxpy as cp

    A = B / reference_scale(B)[:, None]
    n, m = A.shape
    w = cp.Variable(m)
    p = A @ w
    objective = alpha * cp.norm(p - cp.sum(p) / n, 2) / np.sqrt(n) - beta * cp.sum(p)
    objective = objective - gamma * cp.sum(cp.entr(w))
    constraints = [cp.sum(w) == 1, w >= 0, p >= A @ prior]
    if caps is not None:
        constraints.append(w <= caps)
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver="ECOS", abstol=1e-10, reltol=1e-10, feastol=1e-10, max_iters=500)
    assert problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    x = np.clip(w.value, 0, None)
    return reference_objective(B, x / x.sum(), alpha, beta, gamma)


@pytest.mark.reference
def test_optimum_agrees_with_an_independent_conic_solver():
    # Any α, β, γ >= 0, small γ included (where SLSQP stopped 2.3e-3 above the optimum).
    rng = np.random.default_rng(7)
    worst = 0.0
    for k in range(12):
        m, n = int(rng.integers(3, 16)), int(rng.integers(2, 6))
        B, prior, caps = random_problem(rng, m, n, with_caps=k % 3 == 0)
        Bv = B.to_numpy()
        cap_series = None if caps is None else pd.Series(caps, index=B.columns)
        for alpha, beta, gamma in [
            (1, 1, 1),
            (1, 1, 0.1),
            (3, 1, 0.01),
            (0, 1, 0.1),
            (1, 0, 0),
            (0, 1, 0),
            (0.3, 1, 0.001),
            (0, 0, 1),
        ]:
            ours = solve_tikmix_d(
                B,
                pd.Series(prior, index=B.columns),
                TikmixDSettings(alpha=alpha, beta=beta, gamma=gamma),
                caps=cap_series,
            )
            value = reference_objective(Bv, ours.weights.to_numpy(), alpha, beta, gamma)
            reference = ecos_optimum(
                Bv, prior, alpha, beta, gamma, None if caps is None else np.minimum(caps, 1)
            )
            worst = max(worst, abs(value - reference))
    assert worst <= 1e-6


def test_mixture_is_invariant_to_a_global_scale_of_the_matrix():
    # ε is relative to each row's scale: scaling B by 1e-6 used to move w_D by L1 0.29.
    rng = np.random.default_rng(8)
    for _ in range(5):
        B, prior, _ = random_problem(rng, 10, 4)
        prior = pd.Series(prior, index=B.columns)
        base = solve_tikmix_d(B, prior).weights
        for factor in (1e-6, 1e-3, 1e4):
            scaled = solve_tikmix_d(B * factor, prior).weights
            assert (scaled - base).abs().sum() < 1e-6


def test_normaliser_is_the_papers_max_or_the_absolute_max():
    B = frame(np.array([[2.0, -5.0, 1.0], [-1.0, -3.0, -2.0]]))
    w = np.array([0.5, 0.25, 0.25])
    raw = B.to_numpy() @ w
    paper = normalised_benefit(B, w, Normalisation(eps=0.0))
    # Row 0: max_j B_ij = 2; row 1 has no positive entry, so it falls back to max |B_ij| = 3.
    np.testing.assert_allclose(paper, raw / [2.0, 3.0], atol=1e-12)
    absolute = normalised_benefit(B, w, Normalisation(eps=0.0, normaliser="abs_max"))
    np.testing.assert_allclose(absolute, raw / [5.0, 3.0], atol=1e-12)
    prior = pd.Series(1 / 3, index=B.columns)
    report = solve_tikmix_d(
        B, prior, normalisation=Normalisation(normaliser="abs_max")
    ).solver_report()
    assert report["params"]["normaliser"] == "abs_max"
    with pytest.raises(MixtureInputError, match="normaliser must be one of"):
        solve_tikmix_d(B, prior, normalisation=Normalisation(normaliser="paper"))


def test_permuting_domains_permutes_the_result():
    rng = np.random.default_rng(3)
    for with_caps in (False, True):
        B, prior, caps = random_problem(rng, 12, 5, with_caps=with_caps)
        base = solve_tikmix_d(
            B,
            pd.Series(prior, index=B.columns),
            caps=None if caps is None else pd.Series(caps, index=B.columns),
        )
        perm = rng.permutation(12)
        Bp = B.iloc[:, perm]
        result = solve_tikmix_d(
            Bp,
            pd.Series(prior[perm], index=Bp.columns),
            caps=None if caps is None else pd.Series(caps[perm], index=Bp.columns),
        )
        assert result.weights.index.tolist() == Bp.columns.tolist()
        np.testing.assert_allclose(
            result.weights.to_numpy(), base.weights[Bp.columns].to_numpy(), atol=1e-6
        )


def test_single_task_without_binding_pareto_is_softmax():
    # One task, α irrelevant (std of one value is 0), β = γ = 1: minimising −a·w − H(w) on the
    # simplex gives w ∝ exp(a) with a the normalised row. From the uniform prior the Pareto
    # constraint a·w ≥ mean(a) holds at the softmax, so it is the answer.
    a_raw = np.array([[3.0, -1.0, 0.5, 2.0, -4.0]])
    result = solve_tikmix_d(frame(a_raw), pd.Series(0.2, index=frame(a_raw).columns))
    a = a_raw[0] / (3.0 * (1 + 1e-8))  # the paper's normaliser: the row's largest entry
    expected = np.exp(a) / np.exp(a).sum()
    np.testing.assert_allclose(result.weights.to_numpy(), expected, atol=1e-7)


def test_binding_pareto_constraint_keeps_the_prior_benefit():
    # Only domain 0 helps the task; with α = β = 0 the solver maximises entropy subject to
    # w_0 ≥ 0.7, whose solution spreads the remaining 0.3 evenly.
    B = frame(np.array([[1.0, 0.0, 0.0, 0.0]]))
    prior = pd.Series([0.7, 0.3, 0.0, 0.0], index=B.columns)
    result = solve_tikmix_d(B, prior, TikmixDSettings(alpha=0.0, beta=0.0))
    np.testing.assert_allclose(result.weights.to_numpy(), [0.7, 0.1, 0.1, 0.1], atol=1e-7)
    assert result.pareto_slack.iloc[0] == pytest.approx(0.0, abs=1e-8)


def test_all_negative_row_keeps_its_sign():
    B = frame(np.array([[-2.0, -1.0, -4.0], [1.0, 2.0, 0.5]]))
    w = np.array([0.2, 0.5, 0.3])
    p = normalised_benefit(B, w, Normalisation(eps=0.0))
    assert p.iloc[0] == pytest.approx((-0.4 - 0.5 - 1.2) / 4.0)
    assert p.iloc[0] < 0
    result = solve_tikmix_d(B, pd.Series(w, index=B.columns))
    assert result.benefit.loc["task0", "mixture"] >= result.benefit.loc["task0", "prior"] - 1e-8
    assert result.benefit["mixture_normalised"].iloc[0] < 0


def test_result_reports_terms_slacks_and_benefit():
    rng = np.random.default_rng(4)
    B, prior, caps = random_problem(rng, 6, 3, with_caps=True)
    caps = pd.Series(caps, index=B.columns)
    result = solve_tikmix_d(
        B, pd.Series(prior, index=B.columns), TikmixDSettings(alpha=2.0), caps=caps
    )
    w = result.weights.to_numpy()
    Bv = B.to_numpy()
    p = Bv @ w / reference_scale(Bv)
    assert result.terms["std"] == pytest.approx(p.std())
    assert result.terms["sum"] == pytest.approx(p.sum())
    assert result.terms["entropy"] == pytest.approx(-(w[w > 0] @ np.log(w[w > 0])))
    assert result.objective == pytest.approx(reference_objective(Bv, w, alpha=2.0))
    np.testing.assert_allclose(result.benefit["mixture"], Bv @ w)
    np.testing.assert_allclose(result.benefit["prior"], Bv @ prior)
    np.testing.assert_allclose(result.cap_slack, np.minimum(caps, 1) - w)
    report = json.loads(json.dumps(result.solver_report()))
    assert report["params"]["alpha"] == 2.0 and report["success"] is True


def test_entropy_alone_fills_the_caps_like_water():
    # With α = β = 0 only the entropy matters: the optimum is min(cap, t) with Σ = 1.
    B = frame(np.ones((1, 4)))
    caps = pd.Series([0.1, 0.2, 1.0, 1.0], index=B.columns)
    result = solve_tikmix_d(
        B, pd.Series(0.25, index=B.columns), TikmixDSettings(alpha=0, beta=0), caps=caps
    )
    np.testing.assert_allclose(result.weights, [0.1, 0.2, 0.35, 0.35], atol=1e-7)


def test_caps_summing_below_one_are_reported_up_front():
    B = frame(np.eye(3))
    with pytest.raises(MixtureSolveError, match="caps sum to 0.9"):
        solve_tikmix_d(B, pd.Series(1 / 3, index=B.columns), caps=pd.Series(0.3, index=B.columns))


def test_pareto_impossible_within_caps_names_the_task():
    B = pd.DataFrame([[1.0, 0.0]], index=["arc"], columns=["web", "code"])
    prior = pd.Series([0.8, 0.2], index=B.columns)
    with pytest.raises(MixtureSolveError, match=r"task 'arc' by 0\.3"):
        solve_tikmix_d(B, prior, caps=pd.Series([0.5, 1.0], index=B.columns))


def test_prior_over_caps_but_feasible_is_solved():
    # The prior violates the cap of "a", but moving its excess to "b" keeps the benefit.
    B = pd.DataFrame([[1.0, 1.0, 0.0]], index=["arc"], columns=["a", "b", "c"])
    prior = pd.Series([0.9, 0.0, 0.1], index=B.columns)
    caps = pd.Series([0.5, 1.0, 1.0], index=B.columns)
    result = solve_tikmix_d(B, prior, caps=caps)
    check_feasible(B, prior.to_numpy(), result.weights.to_numpy(), caps.to_numpy())


def test_bad_inputs_name_the_problem():
    B = frame(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(MixtureInputError, match="task 'task0', domain 'd1'"):
        solve_tikmix_d(B, pd.Series([0.5, 0.5], index=B.columns))
    B = frame(np.eye(2))
    with pytest.raises(MixtureInputError, match=r"no weight for domain\(s\) \['d1'\]"):
        solve_tikmix_d(B, pd.Series({"d0": 1.0}))
    with pytest.raises(MixtureInputError, match="gamma must be >= 0"):
        solve_tikmix_d(B, pd.Series([0.5, 0.5], index=B.columns), TikmixDSettings(gamma=-1))
    with pytest.raises(MixtureInputError, match=r"missing domain\(s\) \['d1'\]"):
        solve_tikmix_d(B, pd.Series([0.5, 0.5], index=B.columns), caps=pd.Series({"d0": 1.0}))


def test_solver_failure_is_an_error_not_a_fallback(monkeypatch):
    import cvxpy as cp

    def gives_up(self, *args, **kwargs):
        raise cp.error.SolverError("iteration limit")

    monkeypatch.setattr(cp.Problem, "solve", gives_up)
    B, prior, _ = random_problem(np.random.default_rng(6), 8, 3)
    with pytest.raises(MixtureSolveError, match="conic solver failed: iteration limit"):
        solve_tikmix_d(B, pd.Series(prior, index=B.columns))
