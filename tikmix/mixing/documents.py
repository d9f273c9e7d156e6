"""Every mixture document the project writes is built here.

The document's format is :func:`tikmix.core.mixture.mixture_document`'s; this module fills it
for each kind of mixture: the workflow's methods (:func:`method_document`: baselines, TiKMiX-D,
TiKMiX-M, random mixtures), the prior (:func:`prior_document`), the proxy-model baselines
(:func:`baseline_document`: RegMix, DoReMi) and the command line's (:func:`cli_document`). Each
records what it cost to determine (``compute: {tokens, flops}``) so the report can compare methods,
and, given the checkpoint's :class:`~tikmix.mixing.availability.Availability`, each domain's planned
cumulative epochs and the caps (``planned_epochs``, ``availability``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from tikmix.core.compute import ComputeRecord
from tikmix.core.conventions import normalised_benefit
from tikmix.core.mixture import mixture_document, write_mixture
from tikmix.core.settings import Normalisation
from tikmix.mixing.availability import Availability
from tikmix.mixing.weights import read_influence_matrix


def _predicted(B: pd.DataFrame, w: pd.Series, normalisation: Normalisation) -> dict[str, Any]:
    """Predicted per-task benefit B·w and its normalised form P̂ (eq. 6) for a mixture."""
    w = w.reindex(B.columns)
    raw = B.to_numpy() @ w.to_numpy()
    normalised = normalised_benefit(B, w, normalisation)
    return {
        "benefit": dict(zip(B.index, raw.tolist(), strict=True)),
        "normalised_benefit": normalised.to_dict(),
        "total_normalised_benefit": float(normalised.sum()),
    }


def method_document(
    weights: pd.Series,
    *,
    method: str,
    influence_csv: str | Path | None = None,
    normalisation: Normalisation = Normalisation(),
    solver: Mapping | None = None,
    compute: ComputeRecord | Mapping | None = None,
    upstream_compute: ComputeRecord | Mapping | None = None,
    provenance: Mapping | None = None,
    availability: Availability | None = None,
) -> dict:
    """A workflow mixture's document, with the predicted benefit when an influence matrix is given
    and the planned epochs when the ``availability`` is (its ``T`` is the ``stage_tokens``).

    ``compute`` is what this step itself cost; ``total_compute`` adds ``upstream_compute``
    (e.g. the influence matrix TiKMiX-D was solved on): the FLOPs spent to determine the mixture.
    """
    own = ComputeRecord.total(*([compute] if compute is not None else []))
    upstream = ComputeRecord.total(*([upstream_compute] if upstream_compute is not None else []))
    document = mixture_document(
        weights,
        method=method,
        stage_tokens=None if availability is None else availability.stage_tokens,
        provenance=dict(provenance or {}),
        solver=dict(solver or {}),
        compute=own.to_dict(),
        total_compute=(own + upstream).to_dict(),
    )
    if availability is not None:
        document.update(availability.record(weights))
    if influence_csv is not None:
        document["predicted"] = _predicted(
            read_influence_matrix(influence_csv), weights, normalisation
        )
    return document


def write_method(path: str | Path, weights: pd.Series, **document: Any) -> dict:
    """Write :func:`method_document` (its keyword arguments) to ``path``; return the document."""
    built = method_document(weights, **document)
    write_mixture(path, built)
    return built


def prior_document(prior: pd.Series, spec: str) -> dict:
    """The prior as a mixture document (``method: prior``, its ``spec`` in the provenance)."""
    return mixture_document(prior, method="prior", provenance={"spec": spec})


class ProxyBaseline(Protocol):
    """A proxy-model baseline's result (:class:`~tikmix.mixing.regmix.RegMixResult`,
    :class:`~tikmix.mixing.doremi.DoremiResult`)."""

    weights: pd.Series

    def solver_report(self) -> dict[str, Any]: ...

    def compute(self) -> dict[str, Any]: ...


def baseline_document(
    result: ProxyBaseline,
    *,
    method: str,
    availability: Availability | None = None,
    provenance: Mapping | None = None,
) -> dict[str, Any]:
    """A proxy-model baseline's document (``regmix``, ``doremi``) with its ``compute`` section
    and, given the ``availability``, its planned epochs and caps."""
    document = mixture_document(
        result.weights,
        method=method,
        stage_tokens=None if availability is None else availability.stage_tokens,
        provenance=provenance,
        solver=result.solver_report(),
        compute=result.compute(),
    )
    if availability is not None:
        document.update(availability.record(result.weights))
    return document


def cli_document(
    weights: pd.Series,
    *,
    method: str,
    stage_tokens: int | None,
    provenance: Mapping,
    solver: Mapping,
    digits: int,
    availability: Availability | None = None,
) -> dict:
    """A command-line mixture's document (``tikmix mix-d``, ``mix-m``), weights rounded; with
    ``tikmix mix-d --available``, its planned epochs and caps."""
    document = mixture_document(
        weights,
        method=method,
        stage_tokens=stage_tokens,
        provenance=provenance,
        solver=solver,
        digits=digits,
    )
    if availability is not None:
        document.update(availability.record(pd.Series(document["weights"])))
    return document
