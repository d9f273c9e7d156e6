"""TiKMiX-M: surrogate-guided iterative search for the mixture (paper sec. 3.3, Algorithm 1).

From ``w_best = w0`` (the TiKMiX-D mixture), each of ``T`` iterations draws ``N`` candidates
from ``Dirichlet(κ_t · w_best)``, maps them onto the feasible set (``project``: the Pareto
constraint intersected with the box the surrogate's training mixtures were sampled in), predicts
their response with the surrogate and moves ``w_best`` to the mean of the ``k`` best. The
concentration κ_t rises log-spaced from ``kappa_min`` to ``kappa_max``: a Dirichlet with mean
``w_best`` has per-weight variance ``w(1 − w)/(κ + 1)``, so small κ explores broadly and large κ
refines locally. A domain whose weight is exactly 0 gets concentration ``floor`` (a Dirichlet
needs positive concentrations); every other domain gets ``κ·w`` alone, so the draws have mean
``w_best`` and an uninformative surrogate does not pull the search towards uniform.

:func:`propose_tikmix_m` is the whole procedure behind both the workflow and ``python -m tikmix
mix-m``: the box ``[low·w_start, high·w_start]`` widened to contain the prior p, ∩ Pareto set,
the surrogate, the search and the gate; :func:`confirm_tikmix_m` then checks the proposal with
the response itself. Before any tree is grown, a linear model of the response is
cross-validated: when it explains the response (R² above ``gate.linear_r2``), LightGBM could only
approximate a plane with steps, and Algorithm 1 would only approximate the optimum of a linear
program. TiKMiX-M then maximises the fitted linear response over the same feasible set directly
(:func:`maximise_linear_response`) and says so in its document (``surrogate: linear``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from tikmix.core.mixture import MixtureInputError, validate_weights
from tikmix.core.settings import TikmixMBox, TikmixMGate, TikmixMSearch
from tikmix.mixing.candidates import support_box
from tikmix.mixing.pareto import project_onto_pareto, pull_towards
from tikmix.mixing.surrogate import (
    LinearResponse,
    SurrogateQuality,
    fit_linear_response,
    fit_surrogate,
)
from tikmix.mixing.tikmix_d import SOLVER_TOLERANCE, MixtureSolveError

#: Algorithm 1's trace columns besides the mixture (the linear program has no iterations).
TRACE_COLUMNS = ["kappa", "best_prediction", "topk_mean_prediction", "center_prediction"]


@dataclass
class SearchResult:
    """Outcome of Algorithm 1.

    Attributes:
        weights: the final ``w_best``.
        trace: one row per iteration: ``kappa``, ``best_prediction`` (the top candidate),
            ``topk_mean_prediction``, ``center_prediction`` (the surrogate at the new
            ``w_best``), ``accepted`` (candidates inside the bounds), then the new ``w_best``
            (one column per domain).
    """

    weights: pd.Series
    trace: pd.DataFrame


def kappa_schedule(kappa_min: float, kappa_max: float, iters: int) -> np.ndarray:
    """``iters`` concentrations, log-spaced and rising from ``kappa_min`` to ``kappa_max``."""
    if not 0 < kappa_min <= kappa_max:
        raise MixtureInputError(
            f"need 0 < kappa_min <= kappa_max, got kappa_min={kappa_min}, kappa_max={kappa_max}"
        )
    return np.geomspace(kappa_min, kappa_max, iters)


def search_mixture(
    surrogate,
    w0: pd.Series,
    *,
    settings: TikmixMSearch = TikmixMSearch(),
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
) -> SearchResult:
    """Run Algorithm 1 on ``surrogate`` from ``w0``.

    Args:
        surrogate: the trained response model (``domains`` and ``predict``; the
            :class:`~tikmix.mixing.surrogate.Surrogate` in the workflow).
        w0: the starting mixture over ``surrogate.domains``.
        settings: T, N and k of Algorithm 1 (``iters``, ``samples``, ``top_k``), the
            concentration schedule (``kappa_min``, ``kappa_max``; :func:`kappa_schedule`) and
            the Dirichlet concentration of a domain whose weight is exactly 0 (``floor`` > 0).
        project: map of a ``[n, D]`` batch of candidates onto a convex feasible set (TiKMiX's
            Pareto constraint within the sampled box: :func:`propose_tikmix_m`). Candidates are
            projected before the surrogate scores them, so it only ever scores points of the
            set; the top-k mean of points of a convex set stays in it.
        seed: the search is deterministic for a seed.
    """
    iters, samples, top_k = settings.iters, settings.samples, settings.top_k
    floor = settings.floor
    domains = surrogate.domains
    w_best = validate_weights(w0, domains, source="w0").to_numpy()
    if iters < 1 or samples < 1 or not 1 <= top_k <= samples:
        raise MixtureInputError(
            f"need iters >= 1 and 1 <= top_k <= samples, got {iters}, {top_k}, {samples}"
        )
    if not floor > 0:
        raise MixtureInputError(f"floor must be > 0 (Dirichlet concentrations), got {floor}")
    rng = np.random.default_rng(seed)
    rows = []
    for kappa in kappa_schedule(settings.kappa_min, settings.kappa_max, iters):
        concentration = np.where(w_best > 0, kappa * w_best, floor)
        candidates = rng.dirichlet(concentration, size=samples)
        if project is not None:
            candidates = project(candidates)
        predicted = surrogate.predict(candidates)
        top = np.argsort(-predicted, kind="stable")[:top_k]
        w_best = candidates[top].mean(axis=0)
        w_best /= w_best.sum()
        rows.append(
            {
                "kappa": float(kappa),
                "best_prediction": float(predicted[top[0]]),
                "topk_mean_prediction": float(predicted[top].mean()),
                "center_prediction": float(surrogate.predict(w_best[None])[0]),
                **dict(zip(domains, w_best.tolist(), strict=True)),
            }
        )
    trace = pd.DataFrame(rows)
    trace.index.name = "iteration"
    return SearchResult(pd.Series(w_best, index=domains, name="weight"), trace)


def _finite_or_none(value: float) -> float | int | None:
    if isinstance(value, int):
        return value
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class TikmixMProposal:
    """The search's mixture and the gate's verdict on it, before the response confirms it.

    Attributes:
        start: the search's start ``w_start`` (w_D in the workflow).
        weights: the searched mixture ``w_M`` (inside the box and the Pareto set).
        lower, upper: the sampled and searched box ``[low·w_start, high·w_start]`` widened to
            contain the prior p (under the caps).
        surrogate: ``linear`` when the linear fit explained the response and the linear program
            gave ``w_M``, else ``lightgbm`` (surrogate + Algorithm 1).
        linear: the linear fit of the response, cross-validated in either case.
        linear_r2_threshold: the R² the linear fit had to exceed (``gate.linear_r2``).
        surrogate_reason: why that model, in words.
        quality: the cross-validated quality of the model used (its out-of-fold predictions).
        trace: Algorithm 1's iterations (none for the linear program).
        predicted_start, predicted: the model at ``w_start`` and at ``w_M``.
        training_inside_box: share of the training mixtures inside the box (the support).
        passed: whether the gate let ``w_M`` through to the confirmation.
        reason: why (or why not), in words.
    """

    start: pd.Series
    weights: pd.Series
    lower: pd.Series
    upper: pd.Series
    surrogate: str
    linear: LinearResponse
    linear_r2_threshold: float
    surrogate_reason: str
    quality: SurrogateQuality
    trace: pd.DataFrame
    predicted_start: float
    predicted: float
    training_inside_box: float
    passed: bool
    reason: str

    @property
    def predicted_gain(self) -> float:
        return self.predicted - self.predicted_start

    @property
    def name(self) -> str:
        """The method in words, for the mixture document's ``solver``."""
        if self.surrogate == "linear":
            return "TiKMiX-M (linear response: linear program, cvxpy + Clarabel, gate)"
        return "TiKMiX-M (LightGBM surrogate + Dirichlet search, Algorithm 1, gate)"

    def to_dict(self) -> dict:
        """JSON-serialisable (non-finite numbers become ``null``)."""
        quality = {
            k: [_finite_or_none(x) for x in v] if isinstance(v, list) else _finite_or_none(v)
            for k, v in self.quality.to_dict().items()
        }
        linear = self.linear.to_dict()
        return {
            "name": self.name,
            "start": self.start.to_dict(),
            "proposal": self.weights.to_dict(),
            "box": {"lower": self.lower.to_dict(), "upper": self.upper.to_dict()},
            "surrogate": self.surrogate,
            "linear_cv_r2": _finite_or_none(linear.pop("cv_r2")),
            "linear_r2_threshold": self.linear_r2_threshold,
            "surrogate_reason": self.surrogate_reason,
            "linear_response": linear,
            "surrogate_quality": quality,
            "predicted_start": self.predicted_start,
            "predicted_proposal": self.predicted,
            "predicted_gain": self.predicted_gain,
            "training_inside_box": self.training_inside_box,
            "gate_passed": self.passed,
            "gate_reason": self.reason,
            "trace": self.trace[TRACE_COLUMNS].to_dict(orient="list"),
        }


def in_support(
    W: np.ndarray,
    B_hat: np.ndarray,
    floor: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    tolerance: float = 1e-7,
) -> np.ndarray:
    """Which rows of ``W`` lie in the box and satisfy the Pareto constraint ``B̂ w ≥ floor``."""
    W = np.atleast_2d(W)
    return (
        (W >= lower - tolerance).all(axis=1)
        & (W <= upper + tolerance).all(axis=1)
        & (W @ np.atleast_2d(B_hat).T >= floor - tolerance).all(axis=1)
    )


def maximise_linear_response(
    coefficients: np.ndarray,
    start: np.ndarray,
    B_hat: np.ndarray,
    floor: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    tolerance: float = SOLVER_TOLERANCE,
) -> np.ndarray:
    """``argmax c·w`` over TiKMiX-M's feasible set: ``Σw = 1``, ``lower ≤ w ≤ upper`` (the box
    under the caps) and ``B̂ w ≥ floor`` (the Pareto set).

    A linear program, solved by Clarabel through cvxpy as TiKMiX-D is. ``start`` must be feasible:
    it is the answer when ``c`` is the same on every domain (every mixture ties), and the solver's
    round-off on the Pareto side is removed along the segment to it (:func:`pull_towards`). ``c``
    is centred and scaled first, which changes no argmax on the simplex but keeps the solver's
    absolute tolerances meaningful for a response of any scale.
    """
    centred = np.asarray(coefficients, dtype=float) - float(np.mean(coefficients))
    scale = float(np.abs(centred).max())
    if not scale > 0:
        return np.asarray(start, dtype=float).copy()
    w = cp.Variable(len(centred))
    program = cp.Problem(
        cp.Maximize((centred / scale) @ w),
        [cp.sum(w) == 1, w >= lower, w <= upper, np.atleast_2d(B_hat) @ w >= floor],
    )
    try:
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", UserWarning)
            program.solve(
                solver="CLARABEL", tol_gap_abs=tolerance, tol_gap_rel=tolerance, tol_feas=tolerance
            )
    except cp.error.SolverError as error:
        raise MixtureSolveError(f"TiKMiX-M: the linear program failed: {error}") from error
    if program.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or w.value is None:
        raise MixtureSolveError(f"TiKMiX-M's linear program: solver status {program.status}")
    return pull_towards(np.clip(w.value, lower, upper), start, np.atleast_2d(B_hat), floor)[0]


def propose_tikmix_m(
    W: pd.DataFrame,
    y: pd.Series | np.ndarray,
    start: pd.Series,
    *,
    prior: pd.Series,
    B_hat: np.ndarray,
    pareto_floor: np.ndarray,
    box: TikmixMBox = TikmixMBox(),
    min_spearman: float = TikmixMGate.min_spearman,
    linear_r2: float = TikmixMGate.linear_r2,
    caps: pd.Series | None = None,
    seed: int = 0,
    num_threads: int = 1,
    surrogate_params: dict | None = None,
    search: TikmixMSearch = TikmixMSearch(),
) -> TikmixMProposal:
    """TiKMiX-M up to the confirmation: surrogate, search in the support, and the gate.

    The support is the box ``[box.low·w_start, box.high·w_start]``, widened per domain to contain
    ``prior`` (p, the mixture of the Pareto floor and of ``continue``: the candidates must cover
    staying where we are, or nothing can say whether moving helps), intersected with the Pareto
    set ``{w : B̂ w ≥ pareto_floor}`` (``pareto_floor = B̂ p``); the training mixtures ``W`` should
    have been sampled there (:func:`tikmix.mixing.candidates.latin_hypercube_mixtures` with
    ``include=p`` and an ``accept`` filter), and the search never scores a point outside it.
    ``caps`` (TiKMiX-D's availability caps) lower the box's upper side.

    First a linear model of the response is cross-validated (least squares with intercept, the
    surrogate's folds). If its R² exceeds ``linear_r2``, LightGBM is skipped and the fitted linear
    response is maximised over the support as a linear program (:func:`maximise_linear_response`);
    the gate then asks only that the predicted gain over ``w_start`` exceed the linear model's
    cross-validated RMSE. Otherwise the LightGBM surrogate and Algorithm 1 run as in the paper,
    and the gate fails, so the proposal must not replace ``w_start``, when the surrogate's
    cross-validated Spearman is below ``min_spearman`` (or undefined) or its predicted gain over
    ``w_start`` is within its cross-validated RMSE.
    """
    domains = list(W.columns)
    start = validate_weights(start, domains, source="TiKMiX-M start")
    B_hat = np.atleast_2d(np.asarray(B_hat, dtype=float))
    floor = np.asarray(pareto_floor, dtype=float)
    lower, upper = support_box(start, box.low, box.high, caps, prior=prior)
    if not in_support(start.to_numpy()[None], B_hat, floor, lower.to_numpy(), upper.to_numpy())[0]:
        raise MixtureInputError("the TiKMiX-M start violates the Pareto constraint")
    linear = fit_linear_response(W, y, seed=seed)
    r2_words = f"the linear fit's cross-validated R² {linear.r2:.4f}"
    if linear.r2 > linear_r2:
        surrogate, model, quality = "linear", linear, linear.quality
        surrogate_reason = (
            f"{r2_words} > {linear_r2:g}: the response is linear in w, so LightGBM was skipped "
            "and the linear program was solved directly"
        )
        exact = maximise_linear_response(
            linear.coefficients.to_numpy(),
            start.to_numpy(),
            B_hat,
            floor,
            lower.to_numpy(),
            upper.to_numpy(),
        )
        trace = pd.DataFrame(columns=[*TRACE_COLUMNS, *domains], dtype=float)
    else:
        fit = fit_surrogate(W, y, seed=seed, num_threads=num_threads, **(surrogate_params or {}))
        surrogate, model, quality = "lightgbm", fit.model, fit.quality
        surrogate_reason = (
            f"{r2_words} is not above {linear_r2:g}: the LightGBM surrogate and Algorithm 1 search"
        )

        def project(points: np.ndarray) -> np.ndarray:
            return project_onto_pareto(
                points, B_hat, floor, lower=lower.to_numpy(), upper=upper.to_numpy()
            )

        result = search_mixture(model, start, settings=search, seed=seed, project=project)
        # Dykstra converges to the set; remove its round-off on the Pareto side against w_start.
        exact = pull_towards(result.weights.to_numpy(), start.to_numpy(), B_hat, floor)[0]
        trace = result.trace
    weights = pd.Series(exact, index=start.index, name="weight")
    predicted_start = float(model.predict(start.to_numpy()[None])[0])
    predicted = float(model.predict(exact[None])[0])
    inside = in_support(W.to_numpy(dtype=float), B_hat, floor, lower.to_numpy(), upper.to_numpy())
    gain = predicted - predicted_start
    if surrogate == "lightgbm" and not (quality.spearman >= min_spearman):
        passed, reason = (
            False,
            (
                f"the surrogate's cross-validated Spearman {quality.spearman:.3f} is below "
                f"{min_spearman:g}: its ranking of mixtures is not trusted"
            ),
        )
    elif not gain > quality.rmse:
        passed, reason = (
            False,
            (
                f"the predicted gain over the start {gain:.4g} is within the "
                f"{'linear fit' if surrogate == 'linear' else 'surrogate'}'s cross-validated "
                f"error (RMSE {quality.rmse:.4g})"
            ),
        )
    else:
        trusted = (
            f"linear R² {linear.r2:.4f} > {linear_r2:g}"
            if surrogate == "linear"
            else f"Spearman {quality.spearman:.3f} >= {min_spearman:g}"
        )
        passed, reason = (
            True,
            f"{trusted} and predicted gain {gain:.4g} > RMSE {quality.rmse:.4g}",
        )
    return TikmixMProposal(
        start=start,
        weights=weights,
        lower=lower,
        upper=upper,
        surrogate=surrogate,
        linear=linear,
        linear_r2_threshold=float(linear_r2),
        surrogate_reason=surrogate_reason,
        quality=quality,
        trace=trace,
        predicted_start=predicted_start,
        predicted=predicted,
        training_inside_box=float(inside.mean()),
        passed=passed,
        reason=reason,
    )


def confirm_tikmix_m(
    proposal: TikmixMProposal | dict,
    start_responses: np.ndarray,
    proposal_responses: np.ndarray,
) -> tuple[pd.Series, dict]:
    """The mixture TiKMiX-M recommends: ``w_M`` if the gate passed *and* the response itself
    (not the surrogate) ranks it above the start, else the start.

    ``proposal`` is a :class:`TikmixMProposal` or its :meth:`~TikmixMProposal.to_dict` form.

    ``*_responses`` are the response of each mixture, one value per replicate measurement. With
    one value each (a deterministic response such as ``curvature``) ``w_M`` must be strictly
    better; with replicates, better by more than twice the standard error of the difference.
    """
    start_responses = np.atleast_1d(np.asarray(start_responses, dtype=float))
    proposal_responses = np.atleast_1d(np.asarray(proposal_responses, dtype=float))
    difference = float(proposal_responses.mean() - start_responses.mean())
    if min(len(start_responses), len(proposal_responses)) > 1:
        margin = 2.0 * math.sqrt(
            start_responses.var(ddof=1) / len(start_responses)
            + proposal_responses.var(ddof=1) / len(proposal_responses)
        )
    else:
        margin = 0.0
    decision = {
        "start_response": float(start_responses.mean()),
        "proposal_response": float(proposal_responses.mean()),
        "response_gain": difference,
        "response_margin": margin,
        "replicates": int(len(proposal_responses)),
    }
    if isinstance(proposal, TikmixMProposal):
        proposal = proposal.to_dict()
    passed, reason = proposal["gate_passed"], proposal["gate_reason"]
    if not passed:
        chosen, why = "start", f"gate: {reason}"
    elif difference > margin:
        chosen, why = (
            "proposal",
            (
                f"{reason}; the response confirms it: {decision['proposal_response']:.6g} "
                f"vs {decision['start_response']:.6g} at the start"
            ),
        )
    else:
        chosen, why = (
            "start",
            (
                f"{reason}, but the response does not confirm it: "
                f"{decision['proposal_response']:.6g} vs {decision['start_response']:.6g} at the start"
                + (f" (margin {margin:.3g})" if margin else "")
            ),
        )
    decision.update(chosen=chosen, reason=why)
    return pd.Series(proposal[chosen], dtype=float, name="weight"), decision
