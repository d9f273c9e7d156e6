"""RegMix baseline: data mixture as regression over small proxy runs (Liu et al., 2024).

The procedure follows RegMix's recipe, re-implemented on this package's pieces:

1. **Proxy mixtures** (:func:`sample_regmix_mixtures`): Dirichlet draws around the token
   distribution. The prior is tempered (``prior ** temperature``, renormalised; RegMix uses
   0.5) and each draw picks one of ``n_strengths`` concentration strengths log-spaced in
   ``[min_strength, max_strength]`` (RegMix: 15 in [0.1, 5]), so that the samples range from
   nearly one-hot to near the prior. A draw is rejected if a domain would be used more than
   ``max_usage`` times its natural share (``w_d > max_usage · prior_d``; RegMix's bound on
   repeated epochs), and weights below ``minimum`` are set to 0 and the rest renormalised.
2. **Proxy runs** (:func:`tikmix.models.proxies.train_proxy`): one small model per mixture,
   trained *from scratch* on ``tokens`` tokens of it, then its loss on every validation task;
   the runs form the run table (one row per proxy).
3. **Regression** (:func:`fit_regmix`): a LightGBM regressor
   (:func:`~tikmix.mixing.surrogate.fit_surrogate`, RegMix's 1000 rounds at learning rate 0.01)
   from the mixture to the negated average task loss.
4. **Simulation**: ``n_simulations`` (RegMix: 1M) more mixtures from the same
   generator; the result is the mean of the ``top_k`` (RegMix: 100) with the lowest predicted loss.
   Given availability caps (:mod:`tikmix.mixing.availability`, which count stage-1 exposure),
   only simulated mixtures within them compete, so their mean is within them too; if none is,
   the mean of the top ``top_k`` is projected onto the caps.

Unlike RegMix's script, weights are not rounded to a grid of ``minimum`` (the sampler needs
weights summing exactly to 1), and exact duplicates are not removed (continuous draws are
distinct almost surely). The FLOPs spent are recorded: per proxy ``flops_per_token · tokens``
for training plus a third of that per token for the forward passes over the tasks.

:func:`tikmix.models.proxies.regmix_mixture` runs everything in one call; the three steps are
separate functions so that a workflow can run the proxies as separate jobs. This module holds
the torch-free steps (the generator, the regression over a run table, the result); the proxy
training lives in :mod:`tikmix.models.proxies`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tikmix.core.compute import ComputeRecord
from tikmix.core.mixture import MixtureInputError, validate_weights
from tikmix.core.settings import DirichletSettings, RegmixSettings
from tikmix.mixing.availability import CAP_TOLERANCE, project_onto_capped_simplex
from tikmix.mixing.surrogate import SurrogateQuality, fit_surrogate
from tikmix.seeds import derive_seed

#: LightGBM overrides for the few proxies a demo affords (RegMix fits 512): smaller leaves.
SMALL_SAMPLE_PARAMS = {"min_data_in_leaf": 2, "num_leaves": 7}


def check_dirichlet(settings: DirichletSettings) -> None:
    """RegMix's generator needs ``0 < min_strength <= max_strength``, ``temperature > 0``,
    ``n_strengths >= 1``, ``max_usage > 0`` (or None) and ``0 <= minimum < 1``."""
    if not 0 < settings.min_strength <= settings.max_strength:
        raise MixtureInputError(
            f"RegMix: need 0 < min_strength <= max_strength, got {settings.min_strength}, "
            f"{settings.max_strength}"
        )
    if not settings.temperature > 0 or settings.n_strengths < 1:
        raise MixtureInputError(
            f"RegMix: temperature must be > 0 and n_strengths >= 1, got "
            f"{settings.temperature}, {settings.n_strengths}"
        )
    if settings.max_usage is not None and not settings.max_usage > 0:
        raise MixtureInputError(f"RegMix: max_usage must be > 0, got {settings.max_usage}")
    if not 0 <= settings.minimum < 1:
        raise MixtureInputError(f"RegMix: minimum must be in [0, 1), got {settings.minimum}")


def sample_regmix_mixtures(
    prior: pd.Series,
    n: int,
    settings: DirichletSettings = DirichletSettings(),
    *,
    seed: int = 0,
    max_batches: int = 100,
) -> pd.DataFrame:
    """``n`` mixtures from RegMix's Dirichlet generator around ``prior`` (rows sum to 1).

    Draws are made in batches of ``n`` until ``n`` pass the usage bound; more than
    ``max_batches`` batches is an error (the bound is too tight for the strengths).
    """
    w = validate_weights(prior, source="RegMix prior")
    check_dirichlet(settings)
    if n < 1:
        raise MixtureInputError(f"RegMix: need at least one mixture, got n={n}")
    base = w.to_numpy() ** settings.temperature
    base /= base.sum()
    positive = base > 0
    strengths = np.geomspace(settings.min_strength, settings.max_strength, settings.n_strengths)
    upper = None if settings.max_usage is None else np.minimum(settings.max_usage * w.to_numpy(), 1)
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    n_kept = 0
    for _ in range(max_batches):
        choice = rng.integers(len(strengths), size=n)
        draws = np.zeros((n, len(base)))
        for k in np.unique(choice):
            rows = np.flatnonzero(choice == k)
            draws[np.ix_(rows, np.flatnonzero(positive))] = rng.dirichlet(
                base[positive] * strengths[k], size=len(rows)
            )
        valid = np.isfinite(draws).all(axis=1) & (draws.sum(axis=1) > 0)
        if upper is not None:
            valid &= (draws <= upper).all(axis=1)
        draws = draws[valid]
        draws[draws < settings.minimum] = 0.0
        draws = draws[draws.sum(axis=1) > 0]
        draws /= draws.sum(axis=1, keepdims=True)
        kept.append(draws)
        n_kept += len(draws)
        if n_kept >= n:
            return pd.DataFrame(np.vstack(kept)[:n], columns=list(w.index))
    raise MixtureInputError(
        f"RegMix: only {n_kept} of {n * max_batches} Dirichlet draws respect the usage bound "
        f"max_usage={settings.max_usage}; raise it or the strengths"
    )


@dataclass
class RegMixResult:
    """The RegMix mixture, the proxy runs behind it and the surrogate's quality."""

    weights: pd.Series
    runs: pd.DataFrame
    quality: SurrogateQuality
    predicted_loss: float
    flops: int
    settings: dict[str, Any] = field(default_factory=dict)

    def solver_report(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the ``solver`` section of a mixture document)."""
        return {
            "name": "RegMix (proxy runs + LightGBM regression + Dirichlet simulation)",
            "n_proxies": int(len(self.runs)),
            # Cross-validation folds of a few proxies can predict a constant (NaN correlation);
            # JSON has no NaN, so such values are written as null.
            "surrogate_quality": _finite_or_none(self.quality.to_dict()),
            "predicted_average_loss": self.predicted_loss,
            "proxy_average_loss": {
                "min": float(self.runs["average_loss"].min()),
                "max": float(self.runs["average_loss"].max()),
            },
            "settings": self.settings,
        }

    def compute(self) -> dict[str, Any]:
        """The ``compute`` section of a mixture document: FLOPs spent to find the mixture."""
        return {
            **ComputeRecord(int(len(self.runs) * self.settings["tokens"]), self.flops).to_dict(),
            "train_flops": int(self.runs["train_flops"].sum()),
            "eval_flops": int(self.runs["eval_flops"].sum()),
        }


def _finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (recursively) replaced by ``None``."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def fit_regmix(
    runs: pd.DataFrame,
    prior: pd.Series,
    regmix: RegmixSettings = RegmixSettings(),
    *,
    seed: int = 0,
    num_threads: int = 1,
    surrogate_params: Mapping[str, Any] | None = None,
    caps: pd.Series | None = None,
) -> tuple[pd.Series, SurrogateQuality, float]:
    """Fit the regressor on proxy runs and return ``(mixture, quality, predicted loss)``.

    ``runs`` has one column per domain of ``prior`` and ``average_loss`` (lower is better);
    ``regmix`` gives the generator (``dirichlet``), ``n_simulations`` and ``top_k``.
    The surrogate maximises ``−average_loss``; its cross-validation uses
    ``min(5, len(runs) // 4)`` folds, so at least 8 runs are needed.
    ``surrogate_params`` override LightGBM's parameters (default :data:`SMALL_SAMPLE_PARAMS`).
    ``caps`` (domain → largest weight) keep the result within the availability caps.
    """
    domains = list(validate_weights(prior, source="RegMix prior").index)
    check_dirichlet(regmix.dirichlet)  # before the regression, not after it
    missing = [c for c in [*domains, "average_loss"] if c not in runs.columns]
    if missing:
        raise MixtureInputError(f"RegMix runs table lacks column(s) {missing}")
    if len(runs) < 8:
        raise MixtureInputError(f"RegMix needs at least 8 proxy runs, got {len(runs)}")
    n_simulations, top_k = regmix.n_simulations, regmix.top_k
    if not 1 <= top_k <= n_simulations:
        raise MixtureInputError(
            f"RegMix: need 1 <= top_k <= n_simulations, got {top_k}, {n_simulations}"
        )
    fit = fit_surrogate(
        runs[domains].astype(float),
        -runs["average_loss"].to_numpy(dtype=float),
        seed=seed,
        n_folds=min(5, len(runs) // 4),
        num_threads=num_threads,
        params=dict(SMALL_SAMPLE_PARAMS if surrogate_params is None else surrogate_params),
    )
    simulated = sample_regmix_mixtures(
        prior, n_simulations, regmix.dirichlet, seed=derive_seed(seed, "regmix-simulation")
    )
    upper = None if caps is None else pd.Series(caps, dtype=float).reindex(domains).to_numpy()
    if upper is not None:
        within = (simulated.to_numpy() <= upper + CAP_TOLERANCE).all(axis=1)
        simulated = simulated[within] if within.any() else simulated
    predicted = fit.model.predict(simulated)
    top = np.argsort(-predicted, kind="stable")[:top_k]
    weights = simulated.iloc[top].mean(axis=0)
    weights = weights / weights.sum()
    if upper is not None:
        weights[:] = project_onto_capped_simplex(weights.to_numpy(), upper)
    weights = validate_weights(weights, domains, source="RegMix mixture")
    predicted_loss = -float(fit.model.predict(weights.to_numpy()[None])[0])
    return weights, fit.quality, predicted_loss
