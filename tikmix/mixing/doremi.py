"""DoReMi-lite baseline: domain weights from a proxy's excess loss over a reference (Xie et al. 2023).

DoReMi trains a small *proxy* model with Group DRO against a *reference* model and takes the
domain weights averaged over the proxy run as the mixture. This re-implementation keeps the
algorithm (DoReMi's Algorithm 1) and makes two choices the stage-2 setting needs:

* **Reference**: ``reference="checkpoint"`` uses the stage-1 checkpoint itself (already trained on
  the prior mixture, so its training cost is sunk and not counted); ``reference="train"`` trains
  a fresh model of the proxy's shape on the reference mixture (DoReMi's setting: uniform or the
  prior) for ``reference_tokens``.
* **Proxy run**: a fresh model of the proxy shape, ``proxy_tokens`` tokens. Each step draws the same
  number of sequences from every domain (DoReMi samples the uniform mixture), then

  1. per domain ``d``, the excess loss ``λ_d = mean over d's tokens of max(ℓ_proxy − ℓ_ref, 0)``
     (per-token clipping, as in DoReMi);
  2. exponentiated-gradient ascent on the weights, ``α' ∝ α · exp(η λ)``, then smoothing
     ``α = (1 − ε) α' + ε / D`` (:func:`exponentiated_gradient_step`; DoReMi: η = 1, ε = 1e-3);
  3. one AdamW update of the proxy on ``Σ_d α_d · (mean proxy loss on d's tokens)``.

  Domains the proxy has not yet learned but the reference has (large excess) gain weight; domains
  that neither can learn (excess ≈ 0) lose it.

The mixture is the average of ``α`` over the proxy's steps; every ``α_t ≥ ε / D``, so the average
is too. Given availability caps (:mod:`tikmix.mixing.availability`), the average is projected onto
``{w in the simplex, w <= cap}`` (Euclidean, :func:`~tikmix.mixing.availability.project_onto_capped_simplex`);
the solver report keeps the uncapped average. Compute recorded: the reference's training (when trained) and its forward passes on the
proxy's batches, and the proxy's training, with the FLOP conventions of
:func:`~tikmix.models.flops.training_flops_per_token` (forward = a third of training).

This module holds the torch-free arithmetic (the weight update, the averaged mixture, the
result); the reference and proxy training live in :mod:`tikmix.models.proxies`
(:func:`~tikmix.models.proxies.doremi_mixture`, :func:`~tikmix.models.proxies.run_doremi`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tikmix.core.compute import ComputeRecord
from tikmix.core.mixture import MixtureInputError, validate_weights
from tikmix.mixing.availability import project_onto_capped_simplex

Reference = Literal["checkpoint", "train"]


def check_doremi_settings(domains: Sequence[str], *, eta: float, smoothing: float) -> None:
    """DoReMi needs two domains or more, ``eta > 0`` and ``0 < smoothing <= 1``."""
    if len(domains) < 2:
        raise MixtureInputError(f"DoReMi needs at least 2 domains, got {list(domains)}")
    if not eta > 0:
        raise MixtureInputError(f"DoReMi: eta must be > 0, got {eta}")
    if not 0 < smoothing <= 1:
        raise MixtureInputError(f"DoReMi: smoothing must be in (0, 1], got {smoothing}")


def exponentiated_gradient_step(
    alpha: np.ndarray, excess: np.ndarray, *, eta: float, smoothing: float
) -> np.ndarray:
    """DoReMi's weight update: ``(1 − ε) · softmax(log α + η λ) + ε / D``."""
    alpha, excess = np.asarray(alpha, dtype=float), np.asarray(excess, dtype=float)
    if alpha.shape != excess.shape or alpha.ndim != 1:
        raise ValueError(f"alpha {alpha.shape} and excess {excess.shape} must be equal 1-D shapes")
    if not 0 <= smoothing <= 1:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    logits = np.log(alpha) + eta * excess
    p = np.exp(logits - logits.max())
    return (1 - smoothing) * p / p.sum() + smoothing / len(alpha)


@dataclass
class DoremiResult:
    """The DoReMi mixture (average weights), the per-step trace and the compute spent."""

    weights: pd.Series
    trace: pd.DataFrame
    flops: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)

    def solver_report(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the ``solver`` section of a mixture document)."""
        domains = list(self.weights.index)
        last = self.trace.iloc[-1]
        return {
            "name": "DoReMi-lite (Group DRO proxy vs reference, averaged domain weights)",
            "steps": int(len(self.trace)),
            "final_weights": {d: float(last[f"weight:{d}"]) for d in domains},
            "averaged_weights": averaged_weights(self.trace, domains).to_dict(),
            "mean_excess_loss": {d: float(self.trace[f"excess:{d}"].mean()) for d in domains},
            "settings": self.settings,
        }

    def compute(self) -> dict[str, Any]:
        """The ``compute`` section of a mixture document: FLOPs spent to find the mixture."""
        tokens = self.settings["reference_tokens"] + self.settings["proxy_tokens"]
        return {**ComputeRecord(int(tokens), sum(self.flops.values())).to_dict(), **self.flops}


def averaged_weights(
    trace: pd.DataFrame, domains: Sequence[str], caps: pd.Series | None = None
) -> pd.Series:
    """The DoReMi mixture: the per-step weights ``weight:{d}`` of ``trace`` averaged over steps,
    projected onto the availability ``caps`` (domain → largest weight) when given."""
    domains = list(domains)
    mean = trace[[f"weight:{d}" for d in domains]].mean().to_numpy()
    mean = mean / mean.sum()
    if caps is not None:
        mean = project_onto_capped_simplex(
            mean, pd.Series(caps, dtype=float).reindex(domains).to_numpy()
        )
    return validate_weights(pd.Series(mean, index=domains), domains, source="DoReMi weights")
