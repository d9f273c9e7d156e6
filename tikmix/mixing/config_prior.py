"""The workflow's prior mixture from ``stage1.prior`` and the domains' token counts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from tikmix.mixing.priors import natural_prior, read_prior, uniform_prior
from tikmix.mixing.weights import MixtureInputError


def prior_from_config(spec: str, domain_meta: Mapping[str, str | Path]) -> pd.Series:
    """``natural``, ``natural:<temperature>``, ``uniform`` or a weights file (json/yaml).

    ``domain_meta`` maps each domain to its ``meta.json``; natural weights follow its
    ``n_tokens_train`` (the tokens available to train on).
    """
    domains = list(domain_meta)
    if spec == "uniform":
        return uniform_prior(domains)
    if spec == "natural" or spec.startswith("natural:"):
        _, _, temperature = spec.partition(":")
        try:
            tau = float(temperature) if temperature else 1.0
        except ValueError:
            raise MixtureInputError(f"prior {spec!r}: temperature is not a number") from None
        tokens = {
            d: json.loads(Path(path).read_text())["n_tokens_train"]
            for d, path in domain_meta.items()
        }
        return natural_prior(tokens, tau, domains=domains)
    return read_prior(spec, domains)


def write_prior(prior: pd.Series, path: str | Path, spec: str) -> None:
    """The prior as a mixture JSON (``{"method": "prior", "spec", "weights"}``)."""
    document = {"method": "prior", "spec": spec, "weights": {k: float(v) for k, v in prior.items()}}
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
