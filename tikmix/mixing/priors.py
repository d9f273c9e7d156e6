"""Prior mixtures: the stage's current data mixture that TiKMiX must not make worse.

The prior enters TiKMiX-D through the Pareto constraint ``B·w ≥ B·w_prior`` and TiKMiX-M
through the centre of its Latin-hypercube box. One grammar (:func:`build_prior`), the same in
the config (``stage1.prior``) and on the command line (``--prior``):

* ``natural`` or ``natural:<τ>`` — proportional to the tokens available per domain, optionally
  tempered: ``w_d ∝ n_d^(1/τ)`` (τ = 1 natural, τ → ∞ uniform, τ < 1 sharpens towards large
  domains); the token counts come from the workflow's ``meta.json`` files or ``--tokens``;
* ``uniform`` — ``1/D`` each;
* anything else — the path of a mixture file (:func:`tikmix.core.mixture.read_mixture`: a
  mapping domain → weight, or a mixture document, so a previous stage's result can be the next
  prior).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tikmix.core.mixture import (
    MixtureInputError,
    read_mixture,
    validate_weights,
)


def uniform_prior(domains: Iterable[str]) -> pd.Series:
    """``1/D`` on each of the given domains."""
    domains = [str(d) for d in domains]
    if not domains:
        raise MixtureInputError("uniform prior: no domains given")
    return validate_weights(pd.Series(1.0 / len(domains), index=domains), source="uniform prior")


def natural_prior(
    tokens: Mapping[str, float] | pd.Series,
    temperature: float = 1.0,
    *,
    domains: Iterable[str] | None = None,
) -> pd.Series:
    """Weights ``∝ n_d^(1/temperature)`` from the tokens available per domain.

    Args:
        tokens: domain → available token count (non-negative, not all zero).
        temperature: τ > 0; 1 gives the natural distribution.
        domains: if given, ``tokens`` must cover exactly these domains; the result follows
            their order.
    """
    if not temperature > 0:
        raise MixtureInputError(f"natural prior: temperature must be > 0, got {temperature}")
    counts = pd.Series(tokens, dtype=object)
    if domains is not None:
        domains = list(domains)
        missing = [d for d in domains if d not in counts.index]
        if missing:
            raise MixtureInputError(f"natural prior: no token count for domain(s) {missing}")
        unknown = [d for d in counts.index if d not in set(domains)]
        if unknown:
            raise MixtureInputError(f"natural prior: token count for unknown domain(s) {unknown}")
        counts = counts.reindex(domains)
    values = {}
    for domain, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, (int, float, np.integer, np.floating)):
            raise MixtureInputError(f"natural prior: token count of {domain!r} is not a number")
        if not np.isfinite(count) or count < 0:
            raise MixtureInputError(
                f"natural prior: token count of {domain!r} must be finite and >= 0, got {count}"
            )
        values[str(domain)] = float(count)
    counts = pd.Series(values, dtype=float)
    if counts.empty or counts.max() <= 0:
        raise MixtureInputError("natural prior: no domain has any tokens")
    # Scale before the power so large counts with a small temperature do not overflow.
    powered = (counts / counts.max()) ** (1.0 / temperature)
    return validate_weights(powered / powered.sum(), source="natural prior")


def prior_kind(spec: str) -> str:
    """``natural``, ``uniform`` or ``file``: which kind of prior ``spec`` names."""
    if spec == "uniform":
        return "uniform"
    if spec == "natural" or spec.startswith("natural:"):
        return "natural"
    return "file"


def build_prior(
    spec: str, domains: Iterable[str], tokens: Mapping[str, float] | None = None
) -> pd.Series:
    """The prior ``spec`` names, over ``domains`` (see the module docstring for the grammar).

    ``tokens`` (domain → available tokens) is needed by ``natural`` only.
    """
    domains = list(domains)
    kind = prior_kind(spec)
    if kind == "uniform":
        return uniform_prior(domains)
    if kind == "file":
        return read_mixture(spec, domains)
    _, _, temperature = spec.partition(":")
    try:
        tau = float(temperature) if temperature else 1.0
    except ValueError:
        raise MixtureInputError(f"prior {spec!r}: temperature is not a number") from None
    if tokens is None:
        raise MixtureInputError(f"prior {spec!r} needs the token count of every domain")
    return natural_prior(tokens, tau, domains=domains)


def domain_tokens(domain_meta: Mapping[str, str | Path]) -> dict[str, int]:
    """Tokens available to train on per domain, from each domain's ``meta.json``."""
    return {
        d: json.loads(Path(path).read_text())["n_tokens_train"] for d, path in domain_meta.items()
    }
