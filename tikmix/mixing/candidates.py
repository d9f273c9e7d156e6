"""Candidate mixtures around a reference mixture.

* :func:`latin_hypercube_mixtures` — TiKMiX-M's training mixtures (paper sec. 3.3): Latin
  hypercube samples in the box ``[low·w, high·w]`` around the search's start (w_D), widened to
  contain the ``continue`` mixture p, normalised to sum to 1, kept only if the normalised vector
  is still inside the box (and passes an optional ``accept`` filter: the Pareto constraint),
  until ``n`` are accepted.
* :func:`perturbed_mixtures` — the additivity check's mixtures (appendix D): each weight
  multiplied by ``U(low, high)``, renormalised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import qmc

from tikmix.core.mixture import MixtureInputError, validate_weights
from tikmix.core.settings import AdditivitySettings, TikmixMBox


@dataclass
class LatinHypercubeSample:
    """Accepted mixtures and the raw material they came from.

    Attributes:
        weights: ``n`` accepted mixtures (rows, domains as columns), each summing to 1
            and inside ``[lower, upper]``.
        lower, upper: the per-domain box ``[low·w, high·w]``.
        rounds: for each round, the raw Latin-hypercube samples in the box *before*
            normalisation (``batch_size × D``), so the stratification can be checked.
        acceptance_rate: accepted / drawn over all rounds.
    """

    weights: pd.DataFrame
    lower: pd.Series
    upper: pd.Series
    rounds: list[np.ndarray]
    acceptance_rate: float


def _check_box(low: float, high: float) -> None:
    if not 0 <= low <= 1 <= high or low == high:
        raise MixtureInputError(
            f"the box [low·w, high·w] needs 0 <= low <= 1 <= high and low < high so that "
            f"normalised mixtures can fall inside it; got low={low}, high={high}"
        )


def _widened_box(
    w: pd.Series, low: float, high: float, include: pd.Series | None
) -> tuple[pd.Series, pd.Series]:
    """``[low·w, high·w]`` per domain, widened where needed to contain the mixture ``include``."""
    _check_box(low, high)
    lower, upper = w * low, w * high
    if include is None:
        return lower, upper
    p = validate_weights(include, list(w.index), source="the mixture the box must contain")
    return np.minimum(lower, p), np.maximum(upper, p)


def support_box(
    w: pd.Series, low: float, high: float, caps: pd.Series | None = None, *, prior: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """The box TiKMiX-M samples and searches in: ``[low·w, high·w]`` per domain (a zero weight
    stays 0), widened to contain ``prior`` (p, the ``continue`` mixture), its upper side lowered
    to the per-domain ``caps`` where TiKMiX-D had availability caps.

    The candidates must cover staying where we are: without p in the box the surrogate (or the
    linear fit) never sees the mixture the next stage would otherwise train on, so it cannot say
    whether moving helps. Only a cap below ``p_d`` (stage 1 already spent that domain) keeps p out,
    as it keeps every capped method's mixture out.
    """
    lower, upper = _widened_box(w, low, high, prior)
    if caps is not None:
        upper = np.minimum(upper, caps.reindex(w.index).fillna(np.inf))
    return lower, upper


def latin_hypercube_mixtures(
    w_orig: pd.Series,
    n: int,
    *,
    low: float = TikmixMBox.low,
    high: float = TikmixMBox.high,
    seed: int = 0,
    batch_size: int | None = None,
    max_rounds: int = 100,
    accept: Callable[[np.ndarray], np.ndarray] | None = None,
    include: pd.Series | None = None,
) -> LatinHypercubeSample:
    """Draw ``n`` mixtures by Latin-hypercube rejection sampling around ``w_orig``.

    Each round draws one Latin hypercube of ``batch_size`` points (default ``n``) in the box
    ``[low·w_orig, high·w_orig]``, widened to contain the mixture ``include`` if given (TiKMiX-M
    passes the ``continue`` mixture p: :func:`support_box`), with
    :class:`scipy.stats.qmc.LatinHypercube`, so every
    domain's interval is split into ``batch_size`` strata holding one point each. Points are
    normalised to sum to 1 and accepted only if the normalised vector stays in the box.
    ``accept`` (rows → booleans) filters them further, e.g. to the Pareto set. Rounds repeat
    until ``n`` are accepted; the first ``n`` accepted, in draw order, are kept.
    A domain with zero weight (in ``w_orig`` and ``include``) has a degenerate box ``[0, 0]`` and
    stays at 0.

    Raises:
        MixtureInputError: bad ``w_orig`` or box, or fewer than ``n`` accepted after
            ``max_rounds`` rounds (the message gives the acceptance rate and the number of
            rounds that rate would need).
    """
    w = validate_weights(w_orig, source="w_orig")
    lower, upper = (b.to_numpy() for b in _widened_box(w, low, high, include))
    if n < 1 or max_rounds < 1:
        raise MixtureInputError(
            f"need n >= 1 and max_rounds >= 1, got n={n}, max_rounds={max_rounds}"
        )
    batch = n if batch_size is None else int(batch_size)
    if batch < 1:
        raise MixtureInputError(f"batch_size must be >= 1, got {batch}")
    sampler = qmc.LatinHypercube(d=len(w), rng=np.random.default_rng(seed))
    rounds, accepted = [], []
    n_accepted = 0
    for _ in range(max_rounds):
        raw = lower + sampler.random(batch) * (upper - lower)
        rounds.append(raw)
        normalised = raw / raw.sum(axis=1, keepdims=True)
        inside = ((normalised >= lower) & (normalised <= upper)).all(axis=1)
        if accept is not None:
            inside &= np.asarray(accept(normalised), dtype=bool)
        accepted.append(normalised[inside])
        n_accepted += int(inside.sum())
        if n_accepted >= n:
            break
    drawn = batch * len(rounds)
    rate = n_accepted / drawn
    if n_accepted < n:
        needed = (
            "never (no sample accepted)" if rate == 0 else f"about {int(np.ceil(n / rate / batch))}"
        )
        raise MixtureInputError(
            f"Latin-hypercube rejection sampling accepted {n_accepted} of {drawn} samples "
            f"(rate {rate:.3%}) in {max_rounds} rounds of {batch}; {n} needed, which would take "
            f"{needed} rounds: raise max_rounds or widen [low, high] = [{low}, {high}]"
        )
    weights = pd.DataFrame(np.vstack(accepted)[:n], columns=w.index)
    return LatinHypercubeSample(
        weights=weights,
        lower=pd.Series(lower, index=w.index),
        upper=pd.Series(upper, index=w.index),
        rounds=rounds,
        acceptance_rate=rate,
    )


def perturbed_mixtures(
    w: pd.Series,
    n: int,
    *,
    low: float = AdditivitySettings.low,
    high: float = AdditivitySettings.high,
    seed: int = 0,
) -> pd.DataFrame:
    """``n`` mixtures ``w ⊙ u / Σ(w ⊙ u)`` with ``u_d ~ U(low, high)`` i.i.d. (appendix D)."""
    w = validate_weights(w, source="w")
    if not 0 < low < high:
        raise MixtureInputError(f"need 0 < low < high, got low={low}, high={high}")
    if n < 1:
        raise MixtureInputError(f"need n >= 1, got {n}")
    u = np.random.default_rng(seed).uniform(low, high, size=(n, len(w)))
    scaled = w.to_numpy() * u
    return pd.DataFrame(scaled / scaled.sum(axis=1, keepdims=True), columns=w.index)
