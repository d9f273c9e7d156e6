"""TiKMiX-D: the mixture that directly maximises the (normalised) Group Influence benefit.

Paper eq. 6–7 with the conventions of DESIGN.md. With ``B`` the benefit matrix
(tasks × domains, larger is better) and ``P̂_i = (B w)_i / (max_j |B_ij| + ε)``::

    minimise    α·std(P̂) − β·Σ_i P̂_i − γ·H(w),      H(w) = −Σ_d w_d log w_d
    subject to  Σ_d w_d = 1,  0 ≤ w_d ≤ cap_d,  B·w ≥ B·w_prior   (Pareto: no task gets worse)

The absolute value in the normaliser keeps the sign of ``P̂_i`` when every domain hurts task
``i``. ``std`` is the population standard deviation over tasks. With α, γ ≥ 0 the objective is
convex (a norm of an affine map, a linear term, a negative entropy), so the optimum is unique
when γ > 0; the solver still validates its answer because SLSQP can stop short.

The Pareto constraint is imposed row by row in normalised units, ``P̂(w) ≥ P̂(w_prior)``,
which is the same set as ``B·w ≥ B·w_prior`` but lets one absolute tolerance (``1e-8``) mean
the same for every task whatever the scale of its row. Slacks are reported in those units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linprog, minimize
from threadpoolctl import threadpool_limits

from tikmix.mixing.weights import MixtureInputError, validate_weights

#: Constraint tolerance of a returned mixture (sum, bounds, caps, Pareto in normalised units).
FEASIBILITY_TOLERANCE = 1e-8
#: Weights below this value are clipped inside the entropy's logarithm (see :func:`_entropy`).
ENTROPY_CLIP = 1e-12


class MixtureSolveError(ValueError):
    """No mixture satisfies every constraint (or the optimizer found none).

    A ``ValueError`` because the cause is nearly always in the inputs: caps that sum to less
    than 1, or caps that exclude every mixture as good as the prior on every task.
    """


def normalised_benefit(B: pd.DataFrame, w: np.ndarray | pd.Series, eps: float = 1e-8) -> pd.Series:
    """``P̂(w)`` per task: ``(B w)_i / (max_j |B_ij| + eps)`` (paper eq. 6, with |·|)."""
    w = np.asarray(w, dtype=float)
    return pd.Series(_row_normalised(B.to_numpy(dtype=float), eps) @ w, index=B.index)


def availability_caps(
    available_tokens: pd.Series, stage_tokens: float, max_epochs: float = 1.0
) -> pd.Series:
    """Per-domain weight caps ``max_epochs · available_d / stage_tokens``.

    A stage of ``stage_tokens`` tokens with weight ``w_d`` reads ``w_d · stage_tokens`` tokens
    of domain ``d``; the cap keeps that within ``max_epochs`` passes over the domain.
    """
    if not stage_tokens > 0 or not max_epochs > 0:
        raise MixtureInputError(
            f"caps: stage_tokens and max_epochs must be > 0, got {stage_tokens}, {max_epochs}"
        )
    available = pd.Series(available_tokens, dtype=float)
    if available.isna().any() or (available < 0).any():
        bad = available.index[available.isna() | (available < 0)].tolist()
        raise MixtureInputError(f"caps: available tokens must be >= 0 for domain(s) {bad}")
    return max_epochs * available / stage_tokens


@dataclass
class TikmixDResult:
    """The TiKMiX-D mixture and everything needed to audit it.

    Attributes:
        weights: the mixture (domains in the matrix's column order), sums to 1.
        prior: the prior mixture of the Pareto constraint.
        objective: ``α·std − β·sum − γ·entropy`` at ``weights``.
        terms: ``{"std": std(P̂), "sum": ΣP̂, "entropy": H(w)}`` at ``weights``.
        success, status, message, iterations: SciPy SLSQP's report of the accepted solve.
        start: where the accepted solve started (``uniform``, ``prior`` or ``feasible point``).
        attempts: one record per solve tried, in order (start, status, message, violation).
        sum_slack: ``Σw − 1``.
        pareto_slack: ``P̂_i(w) − P̂_i(w_prior)`` per task (≥ −1e-8).
        cap_slack: ``cap_d − w_d`` per domain, or ``None`` without caps.
        benefit: per task, ``prior`` / ``mixture`` raw ``B·w`` and their normalised ``P̂``.
        params: the solver settings (α, β, γ, ε, maxiter, ftol).
    """

    weights: pd.Series
    prior: pd.Series
    objective: float
    terms: dict[str, float]
    success: bool
    status: int
    message: str
    iterations: int
    start: str
    attempts: list[dict]
    sum_slack: float
    pareto_slack: pd.Series
    cap_slack: pd.Series | None
    benefit: pd.DataFrame
    params: dict = field(default_factory=dict)

    def solver_report(self) -> dict:
        """A JSON-serialisable summary (the ``solver`` section of a mixture document)."""
        return {
            "name": "scipy.optimize.minimize(method='SLSQP')",
            "success": self.success,
            "status": self.status,
            "message": self.message,
            "iterations": self.iterations,
            "start": self.start,
            "attempts": self.attempts,
            "params": self.params,
            "objective": self.objective,
            "terms": self.terms,
            "constraint_slack": {
                "sum": self.sum_slack,
                "pareto_normalised": {k: float(v) for k, v in self.pareto_slack.items()},
                "caps": None
                if self.cap_slack is None
                else {k: float(v) for k, v in self.cap_slack.items()},
            },
            "benefit": {
                column: {k: float(v) for k, v in self.benefit[column].items()}
                for column in self.benefit.columns
            },
        }


def solve_tikmix_d(
    B: pd.DataFrame,
    prior: pd.Series,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-8,
    caps: pd.Series | None = None,
    maxiter: int = 1000,
    ftol: float = 1e-12,
) -> TikmixDResult:
    """Solve TiKMiX-D (paper eq. 7) with SciPy SLSQP and analytic gradients.

    The solve starts from the uniform mixture (projected onto the caps), as in the paper.
    The returned point has tiny negative weights clipped and is renormalised, then every
    constraint is re-checked to :data:`FEASIBILITY_TOLERANCE`. If SLSQP reports failure or its
    point violates a constraint, the documented remedy is one restart from a feasible point:
    the prior itself when it satisfies the caps (it always satisfies the Pareto constraint),
    otherwise a point found by a linear program. Every attempt is recorded in the result.

    Args:
        B: benefit matrix, tasks × domains (larger is better); finite values.
        prior: the prior mixture over ``B``'s columns (Pareto reference).
        alpha, beta, gamma: weights of std(P̂), ΣP̂ and H(w); must be >= 0.
        eps: the normaliser's ε (eq. 6).
        caps: optional upper bound per domain (see :func:`availability_caps`).
        maxiter, ftol: SLSQP's iteration limit and objective precision goal.

    Raises:
        MixtureInputError: malformed inputs (NaN, unknown domains, caps summing to < 1, ...).
        MixtureSolveError: no attempt produced a point satisfying every constraint; the
            message names the violated constraint (task / domain) and by how much.
    """
    problem = _Problem.build(B, prior, alpha, beta, gamma, eps, caps)
    # SLSQP's dense linear algebra is tiny (domains × domains); multi-threaded BLAS only adds
    # synchronisation, which costs 100× on a busy machine. One thread is always fastest.
    with threadpool_limits(limits=1, user_api="blas"):
        return _solve(problem, maxiter, ftol)


def _solve(problem: _Problem, maxiter: int, ftol: float) -> TikmixDResult:
    """SLSQP from the uniform start, then the documented remedy (see :func:`solve_tikmix_d`)."""
    options = {"maxiter": int(maxiter), "ftol": float(ftol)}
    attempts: list[dict] = []
    for name, x0 in _starts(problem):
        raw = minimize(
            problem.objective,
            x0,
            jac=problem.gradient,
            method="SLSQP",
            bounds=problem.bounds,
            constraints=problem.constraints,
            options=options,
        )
        w = problem.clean(raw.x)
        violations = problem.violations(w)
        attempts.append(
            {
                "start": name,
                "success": bool(raw.success),
                "status": int(raw.status),
                "message": str(raw.message),
                "iterations": int(raw.nit),
                "violations": violations,
            }
        )
        if raw.success and not violations:
            return problem.result(w, raw, name, attempts, {**problem.params, **options})
    details = "; ".join(
        f"from the {a['start']} start: {a['message']}"
        + (f" (violates {', '.join(a['violations'])})" if a["violations"] else "")
        for a in attempts
    )
    raise MixtureSolveError(f"TiKMiX-D found no feasible optimum: {details}")


def _starts(problem: _Problem):
    """The uniform start, then (computed only if needed) one feasible restart point."""
    yield "uniform", problem.uniform_start()
    yield problem.feasible_start()


def _row_normalised(B: np.ndarray, eps: float) -> np.ndarray:
    return B / (np.abs(B).max(axis=1, keepdims=True) + eps)


def _entropy(w: np.ndarray) -> tuple[float, np.ndarray]:
    """``H(w) = −Σ w log max(w, δ)`` and its exact gradient, δ = :data:`ENTROPY_CLIP`.

    Clipping inside the logarithm keeps the value and gradient finite at ``w = 0`` (where the
    true gradient is +∞, i.e. the entropy pushes weights off zero) and at the slightly
    negative points SLSQP may visit; above δ it is the exact entropy.
    """
    clipped = np.maximum(w, ENTROPY_CLIP)
    log_w = np.log(clipped)
    value = -float(w @ log_w)
    grad = -(log_w + (w > ENTROPY_CLIP))
    return value, grad


@dataclass
class _Problem:
    """TiKMiX-D in arrays: ``A`` is ``B`` with rows scaled by the eq. 6 normaliser."""

    B: pd.DataFrame
    A: np.ndarray
    prior: np.ndarray
    caps: np.ndarray | None
    alpha: float
    beta: float
    gamma: float
    eps: float

    @property
    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "eps": self.eps}

    @classmethod
    def build(cls, B, prior, alpha, beta, gamma, eps, caps) -> _Problem:
        if not isinstance(B, pd.DataFrame) or B.shape[0] == 0 or B.shape[1] == 0:
            raise MixtureInputError("TiKMiX-D: B must be a non-empty DataFrame (tasks × domains)")
        values = B.to_numpy(dtype=float)
        if not np.isfinite(values).all():
            row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(values)))
            raise MixtureInputError(
                f"TiKMiX-D: non-finite benefit at task {B.index[row]!r}, domain {B.columns[col]!r}"
            )
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not value >= 0:
                raise MixtureInputError(f"TiKMiX-D: {name} must be >= 0, got {value}")
        if not eps >= 0:
            raise MixtureInputError(f"TiKMiX-D: eps must be >= 0, got {eps}")
        domains = list(B.columns)
        prior = validate_weights(prior, domains, source="prior").to_numpy()
        cap_values = None
        if caps is not None:
            cap_values = pd.Series(caps, dtype=float)
            missing = [d for d in domains if d not in cap_values.index]
            unknown = [d for d in cap_values.index if d not in set(domains)]
            if missing or unknown:
                raise MixtureInputError(
                    f"caps: missing domain(s) {missing}, unknown domain(s) {unknown}"
                )
            cap_values = cap_values.reindex(domains).to_numpy()
            if np.isnan(cap_values).any() or (cap_values < 0).any():
                bad = [d for d, c in zip(domains, cap_values, strict=True) if not c >= 0]
                raise MixtureInputError(f"caps: must be >= 0 and not NaN for domain(s) {bad}")
            if cap_values.sum() < 1 - FEASIBILITY_TOLERANCE:
                raise MixtureSolveError(
                    f"caps sum to {cap_values.sum():.6g} < 1: no mixture fits within them "
                    "(raise max_epochs, lower stage_tokens or add data)"
                )
            cap_values = np.minimum(cap_values, 1.0)
        return cls(B, _row_normalised(values, eps), prior, cap_values, alpha, beta, gamma, eps)

    @property
    def bounds(self) -> list[tuple[float, float]]:
        upper = np.ones(self.A.shape[1]) if self.caps is None else self.caps
        return [(0.0, float(u)) for u in upper]

    @property
    def constraints(self) -> list[dict]:
        A, target = self.A, self.A @ self.prior
        ones = np.ones(A.shape[1])
        return [
            {"type": "eq", "fun": lambda w: np.array([w.sum() - 1.0]), "jac": lambda w: ones[None]},
            {"type": "ineq", "fun": lambda w: A @ w - target, "jac": lambda w: A},
        ]

    def terms(self, w: np.ndarray) -> dict[str, float]:
        p = self.A @ w
        return {"std": float(p.std()), "sum": float(p.sum()), "entropy": _entropy(w)[0]}

    def objective(self, w: np.ndarray) -> float:
        t = self.terms(w)
        return self.alpha * t["std"] - self.beta * t["sum"] - self.gamma * t["entropy"]

    def gradient(self, w: np.ndarray) -> np.ndarray:
        p = self.A @ w
        std = p.std()
        # d std / d p = (p − mean) / (n · std); at std = 0 (one task, or equal P̂) the
        # objective is not differentiable and 0 is a valid subgradient.
        d_std = (p - p.mean()) / (p.size * std) if std > 0 else np.zeros_like(p)
        grad = self.A.T @ (self.alpha * d_std - self.beta)
        return grad - self.gamma * _entropy(w)[1]

    def uniform_start(self) -> np.ndarray:
        """The uniform mixture, projected onto the caps (``min(cap, t)`` with Σ = 1)."""
        m = self.A.shape[1]
        if self.caps is None or (self.caps >= 1.0 / m).all():
            return np.full(m, 1.0 / m)
        lo, hi = 0.0, 1.0
        for _ in range(200):  # bisection on the water level t
            t = 0.5 * (lo + hi)
            lo, hi = (t, hi) if np.minimum(self.caps, t).sum() < 1 else (lo, t)
        w = np.minimum(self.caps, hi)
        return w / w.sum()

    def feasible_start(self) -> tuple[str, np.ndarray]:
        """The prior if it fits the caps, else the max-min-slack point of a linear program."""
        if self.caps is None or (self.prior <= self.caps + FEASIBILITY_TOLERANCE).all():
            return "prior", self.prior.copy()
        return "feasible point", self._max_min_slack_point()

    def _max_min_slack_point(self) -> np.ndarray:
        """Solve ``max t  s.t.  A(w − w_prior) ≥ t,  Σw = 1,  0 ≤ w ≤ caps,  t ≤ 1``.

        Raises :class:`MixtureSolveError` when the best worst-task slack is negative: the
        Pareto constraint and the caps cannot both hold.
        """
        n, m = self.A.shape
        c = np.zeros(m + 1)
        c[-1] = -1.0
        A_ub = np.hstack([-self.A, np.ones((n, 1))])
        b_ub = -self.A @ self.prior
        A_eq = np.hstack([np.ones((1, m)), np.zeros((1, 1))])
        bounds = [(0.0, float(u)) for u in self.caps] + [(None, 1.0)]
        lp = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs")
        if lp.status != 0:
            raise MixtureSolveError(f"no feasible mixture within the caps: {lp.message}")
        w, t = lp.x[:m], lp.x[-1]
        if t < -FEASIBILITY_TOLERANCE:
            slack = self.A @ (w - self.prior)
            task = self.B.index[int(np.argmin(slack))]
            raise MixtureSolveError(
                "the Pareto constraint cannot hold within the caps: the prior exceeds the caps "
                f"and the best capped mixture still falls short on task {task!r} by {-t:.3g} "
                "(normalised benefit)"
            )
        return w

    def clean(self, x: np.ndarray) -> np.ndarray:
        w = np.clip(x, 0.0, None)
        return w / w.sum()

    def violations(self, w: np.ndarray) -> list[str]:
        """Human-readable list of the constraints ``w`` violates beyond the tolerance."""
        tol = FEASIBILITY_TOLERANCE
        found = []
        if abs(w.sum() - 1) > tol:
            found.append(f"sum = {w.sum():.12g}")
        if self.caps is not None:
            over = w - self.caps
            for j in np.flatnonzero(over > tol):
                found.append(f"cap of domain {self.B.columns[j]!r} by {over[j]:.3g}")
        short = self.A @ (w - self.prior)
        for i in np.flatnonzero(short < -tol):
            found.append(f"Pareto constraint of task {self.B.index[i]!r} by {-short[i]:.3g}")
        return found

    def result(self, w, raw, start, attempts, params) -> TikmixDResult:
        B, tasks, domains = self.B, self.B.index, self.B.columns
        terms = self.terms(w)
        raw_b = B.to_numpy(dtype=float)
        benefit = pd.DataFrame(
            {
                "prior": raw_b @ self.prior,
                "mixture": raw_b @ w,
                "prior_normalised": self.A @ self.prior,
                "mixture_normalised": self.A @ w,
            },
            index=tasks,
        )
        return TikmixDResult(
            weights=pd.Series(w, index=domains, name="weight"),
            prior=pd.Series(self.prior, index=domains, name="weight"),
            objective=self.objective(w),
            terms=terms,
            success=bool(raw.success),
            status=int(raw.status),
            message=str(raw.message),
            iterations=int(raw.nit),
            start=start,
            attempts=attempts,
            sum_slack=float(w.sum() - 1),
            pareto_slack=pd.Series(self.A @ (w - self.prior), index=tasks),
            cap_slack=None if self.caps is None else pd.Series(self.caps - w, index=domains),
            benefit=benefit,
            params=params,
        )
