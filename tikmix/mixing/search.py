"""TiKMiX-M: surrogate-guided iterative search for the mixture (paper sec. 3.3, Algorithm 1).

From ``w_best = w0`` (the TiKMiX-D mixture in the paper), each of ``T`` iterations draws
``N`` candidates from ``Dirichlet(κ_t · w_best + floor)``, predicts their response with the
surrogate and moves ``w_best`` to the mean of the ``k`` best predicted candidates. The
concentration κ_t rises log-spaced from ``kappa_min`` to ``kappa_max``: a Dirichlet with
mean ``w_best`` has per-weight variance ``w(1 − w)/(κ + 1)``, so small κ explores broadly and
large κ refines locally. The ``floor`` added to every concentration lets a domain whose weight
is 0 in ``w_best`` still be drawn with a small positive weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tikmix.mixing.surrogate import Surrogate, SurrogateQuality, fit_surrogate
from tikmix.mixing.weights import MixtureInputError, validate_weights


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


@dataclass
class TikmixMResult:
    """The TiKMiX-M mixture, the surrogate behind it and its cross-validated quality."""

    weights: pd.Series
    quality: SurrogateQuality
    trace: pd.DataFrame
    surrogate: Surrogate

    def solver_report(self) -> dict:
        """A JSON-serialisable summary (the ``solver`` section of a mixture document)."""
        last = self.trace.iloc[-1]
        return {
            "name": "TiKMiX-M (LightGBM surrogate + Dirichlet search, Algorithm 1)",
            "surrogate_quality": self.quality.to_dict(),
            "iterations": int(len(self.trace)),
            "final_kappa": float(last["kappa"]),
            "final_center_prediction": float(last["center_prediction"]),
            "trace": self.trace[
                ["kappa", "best_prediction", "topk_mean_prediction", "center_prediction"]
            ].to_dict(orient="list"),
        }


def kappa_schedule(kappa_min: float, kappa_max: float, iters: int) -> np.ndarray:
    """``iters`` concentrations, log-spaced and rising from ``kappa_min`` to ``kappa_max``."""
    if not 0 < kappa_min <= kappa_max:
        raise MixtureInputError(
            f"need 0 < kappa_min <= kappa_max, got kappa_min={kappa_min}, kappa_max={kappa_max}"
        )
    return np.geomspace(kappa_min, kappa_max, iters)


def search_mixture(
    surrogate: Surrogate,
    w0: pd.Series,
    *,
    iters: int = 20,
    samples: int = 2048,
    top_k: int = 32,
    kappa_min: float = 20.0,
    kappa_max: float = 5000.0,
    floor: float = 0.05,
    bounds: tuple[pd.Series, pd.Series] | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    max_draws: int = 20,
    seed: int = 0,
) -> SearchResult:
    """Run Algorithm 1 on ``surrogate`` from ``w0``.

    Args:
        surrogate: the trained response model.
        w0: the starting mixture over ``surrogate.domains``.
        iters, samples, top_k: T, N and k of Algorithm 1.
        kappa_min, kappa_max: the concentration schedule (see :func:`kappa_schedule`).
        floor: added to every Dirichlet concentration (> 0, since a zero concentration is
            not a Dirichlet distribution).
        bounds: optional ``(lower, upper)`` per domain; candidates outside are rejected and
            more are drawn (up to ``max_draws`` batches) until ``samples`` are inside.
            ``w0`` must satisfy them; the mean of in-bounds candidates stays in bounds.
        project: optional map of a ``[n, D]`` batch of candidates onto a convex feasible set,
            e.g. TiKMiX's Pareto constraint ``B·w ≥ B·w_prior``
            (:func:`~tikmix.mixing.pareto.project_onto_pareto`). Candidates are projected before
            the surrogate scores them, so the search walks along the set's boundary instead of
            starving on rejections; the top-k mean of feasible points stays feasible. It acts
            after the bounds check, so projected candidates may leave ``bounds``.
        seed: the search is deterministic for a seed.
    """
    domains = surrogate.domains
    w_best = validate_weights(w0, domains, source="w0").to_numpy()
    if iters < 1 or samples < 1 or not 1 <= top_k <= samples:
        raise MixtureInputError(
            f"need iters >= 1 and 1 <= top_k <= samples, got {iters}, {top_k}, {samples}"
        )
    if not floor > 0:
        raise MixtureInputError(f"floor must be > 0 (Dirichlet concentrations), got {floor}")
    lower = upper = None
    if bounds is not None:
        lower, upper = (pd.Series(b, dtype=float).reindex(domains).to_numpy() for b in bounds)
        if np.isnan(lower).any() or np.isnan(upper).any():
            raise MixtureInputError(f"bounds must give a lower and upper value for {domains}")
        if ((w_best < lower) | (w_best > upper)).any():
            raise MixtureInputError("w0 lies outside the search bounds")
    rng = np.random.default_rng(seed)
    rows = []
    for kappa in kappa_schedule(kappa_min, kappa_max, iters):
        candidates = _draw(rng, kappa * w_best + floor, samples, lower, upper, max_draws)
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
                "accepted": int(len(candidates)),
                **dict(zip(domains, w_best.tolist(), strict=True)),
            }
        )
    trace = pd.DataFrame(rows)
    trace.index.name = "iteration"
    return SearchResult(pd.Series(w_best, index=domains, name="weight"), trace)


def _draw(rng, concentration, samples, lower, upper, max_draws) -> np.ndarray:
    """``samples`` Dirichlet draws, keeping only those inside the bounds."""
    if lower is None:
        return rng.dirichlet(concentration, size=samples)
    kept, n_kept = [], 0
    for _ in range(max_draws):
        draws = rng.dirichlet(concentration, size=samples)
        inside = draws[((draws >= lower) & (draws <= upper)).all(axis=1)]
        kept.append(inside)
        n_kept += len(inside)
        if n_kept >= samples:
            return np.vstack(kept)[:samples]
    raise MixtureInputError(
        f"only {n_kept} of {samples * max_draws} Dirichlet candidates fell inside the bounds; "
        "widen the bounds, raise kappa_min or max_draws"
    )


def solve_tikmix_m(
    W: pd.DataFrame,
    y: pd.Series | np.ndarray,
    w0: pd.Series,
    *,
    seed: int = 0,
    num_threads: int = 1,
    surrogate_params: dict | None = None,
    **search_kwargs,
) -> TikmixMResult:
    """Fit the surrogate on ``(W, y)`` and run Algorithm 1 from ``w0``.

    ``surrogate_params`` are passed to :func:`~tikmix.mixing.surrogate.fit_surrogate`
    (e.g. ``{"n_folds": 5}``); ``search_kwargs`` to :func:`search_mixture`.
    """
    fit = fit_surrogate(W, y, seed=seed, num_threads=num_threads, **(surrogate_params or {}))
    result = search_mixture(fit.model, w0, seed=seed, **search_kwargs)
    return TikmixMResult(result.weights, fit.quality, result.trace, fit.model)
