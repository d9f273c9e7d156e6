"""TiKMiX-D: constraints, optimality against an independent solver, invariances, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import BFGS, Bounds, LinearConstraint, approx_fprime, minimize
from threadpoolctl import threadpool_limits

from tikmix.mixing.tikmix_d import (
    MixtureSolveError,
    _Problem,
    availability_caps,
    normalised_benefit,
    solve_tikmix_d,
)
from tikmix.mixing.weights import MixtureInputError

TOL = 1e-8


def frame(B: np.ndarray) -> pd.DataFrame:
    n, m = B.shape
    return pd.DataFrame(
        B, index=[f"task{i}" for i in range(n)], columns=[f"d{j}" for j in range(m)]
    )


def reference_objective(B, w, alpha=1.0, beta=1.0, gamma=1.0, eps=1e-8):
    """Eq. 7 written out independently of the library (entropy with 0 log 0 = 0)."""
    p = (B @ w) / (np.abs(B).max(axis=1) + eps)
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
    scale = np.abs(B.to_numpy()).max(axis=1) + eps
    slack = (B.to_numpy() @ w - B.to_numpy() @ prior) / scale
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


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    B, prior, _ = random_problem(rng, 7, 4)
    problem = _Problem.build(B, pd.Series(prior, index=B.columns), 0.7, 1.3, 0.9, 1e-8, None)
    for _ in range(5):
        w = rng.dirichlet(np.ones(7))
        numeric = approx_fprime(w, problem.objective, 1e-7)
        np.testing.assert_allclose(problem.gradient(w), numeric, rtol=1e-4, atol=1e-5)
        assert problem.objective(w) == pytest.approx(
            reference_objective(B.to_numpy(), w, 0.7, 1.3, 0.9), abs=1e-12
        )


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
        A = Bv / (np.abs(Bv).max(axis=1, keepdims=True) + 1e-8)
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
    a = a_raw[0] / (4.0 + 1e-8)
    expected = np.exp(a) / np.exp(a).sum()
    np.testing.assert_allclose(result.weights.to_numpy(), expected, atol=1e-7)


def test_binding_pareto_constraint_keeps_the_prior_benefit():
    # Only domain 0 helps the task; with α = β = 0 the solver maximises entropy subject to
    # w_0 ≥ 0.7, whose solution spreads the remaining 0.3 evenly.
    B = frame(np.array([[1.0, 0.0, 0.0, 0.0]]))
    prior = pd.Series([0.7, 0.3, 0.0, 0.0], index=B.columns)
    result = solve_tikmix_d(B, prior, alpha=0.0, beta=0.0)
    np.testing.assert_allclose(result.weights.to_numpy(), [0.7, 0.1, 0.1, 0.1], atol=1e-7)
    assert result.pareto_slack.iloc[0] == pytest.approx(0.0, abs=1e-8)


def test_all_negative_row_keeps_its_sign():
    B = frame(np.array([[-2.0, -1.0, -4.0], [1.0, 2.0, 0.5]]))
    w = np.array([0.2, 0.5, 0.3])
    p = normalised_benefit(B, w, eps=0.0)
    assert p.iloc[0] == pytest.approx((-0.4 - 0.5 - 1.2) / 4.0)
    assert p.iloc[0] < 0
    result = solve_tikmix_d(B, pd.Series(w, index=B.columns))
    assert result.benefit.loc["task0", "mixture"] >= result.benefit.loc["task0", "prior"] - 1e-8
    assert result.benefit["mixture_normalised"].iloc[0] < 0


def test_result_reports_terms_slacks_and_benefit():
    rng = np.random.default_rng(4)
    B, prior, caps = random_problem(rng, 6, 3, with_caps=True)
    caps = pd.Series(caps, index=B.columns)
    result = solve_tikmix_d(B, pd.Series(prior, index=B.columns), caps=caps, alpha=2.0)
    w = result.weights.to_numpy()
    Bv = B.to_numpy()
    p = Bv @ w / (np.abs(Bv).max(axis=1) + 1e-8)
    assert result.terms["std"] == pytest.approx(p.std())
    assert result.terms["sum"] == pytest.approx(p.sum())
    assert result.terms["entropy"] == pytest.approx(-(w[w > 0] @ np.log(w[w > 0])))
    assert result.objective == pytest.approx(reference_objective(Bv, w, alpha=2.0))
    np.testing.assert_allclose(result.benefit["mixture"], Bv @ w)
    np.testing.assert_allclose(result.benefit["prior"], Bv @ prior)
    np.testing.assert_allclose(result.cap_slack, np.minimum(caps, 1) - w)
    assert result.start == "uniform" and result.attempts[0]["violations"] == []
    report = json.loads(json.dumps(result.solver_report()))
    assert report["params"]["alpha"] == 2.0 and report["success"] is True


def test_uniform_start_is_projected_onto_the_caps():
    B = frame(np.ones((1, 4)))
    caps = pd.Series([0.1, 0.2, 1.0, 1.0], index=B.columns)
    problem = _Problem.build(B, pd.Series(0.25, index=B.columns), 1, 1, 1, 1e-8, caps)
    np.testing.assert_allclose(problem.uniform_start(), [0.1, 0.2, 0.35, 0.35], atol=1e-12)
    # With α = β = 0 only the entropy matters: the projected start is also the optimum.
    result = solve_tikmix_d(B, pd.Series(0.25, index=B.columns), alpha=0, beta=0, caps=caps)
    np.testing.assert_allclose(result.weights, [0.1, 0.2, 0.35, 0.35], atol=1e-7)


def test_availability_caps():
    caps = availability_caps(pd.Series({"a": 100.0, "b": 10.0}), stage_tokens=50, max_epochs=2)
    assert caps.to_dict() == {"a": 4.0, "b": 0.4}


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
        solve_tikmix_d(B, pd.Series([0.5, 0.5], index=B.columns), gamma=-1)
    with pytest.raises(MixtureInputError, match=r"missing domain\(s\) \['d1'\]"):
        solve_tikmix_d(B, pd.Series([0.5, 0.5], index=B.columns), caps=pd.Series({"d0": 1.0}))


def test_failed_uniform_start_is_restarted_from_the_prior(monkeypatch):
    import tikmix.mixing.tikmix_d as module

    calls = []
    real_minimize = module.minimize

    def first_call_stops_early(*args, **kwargs):
        calls.append(args[1].copy())
        if len(calls) == 1:
            kwargs["options"] = {**kwargs["options"], "maxiter": 1}
        return real_minimize(*args, **kwargs)

    monkeypatch.setattr(module, "minimize", first_call_stops_early)
    rng = np.random.default_rng(5)
    B, prior, _ = random_problem(rng, 8, 3)
    result = solve_tikmix_d(B, pd.Series(prior, index=B.columns))
    assert [a["start"] for a in result.attempts] == ["uniform", "prior"]
    assert result.attempts[0]["success"] is False and result.start == "prior"
    np.testing.assert_allclose(calls[1], prior)
    check_feasible(B, prior, result.weights.to_numpy())


def test_solver_failure_is_an_error_not_a_fallback(monkeypatch):
    import tikmix.mixing.tikmix_d as module

    real_minimize = module.minimize

    def always_stops_early(*args, **kwargs):
        return real_minimize(*args, **{**kwargs, "options": {**kwargs["options"], "maxiter": 1}})

    monkeypatch.setattr(module, "minimize", always_stops_early)
    B, prior, _ = random_problem(np.random.default_rng(6), 8, 3)
    with pytest.raises(MixtureSolveError, match="from the uniform start: .*from the prior start"):
        solve_tikmix_d(B, pd.Series(prior, index=B.columns))
