"""Prior mixtures: the stage's current data mixture that TiKMiX must not make worse.

The prior enters TiKMiX-D through the Pareto constraint ``B·w ≥ B·w_prior`` and TiKMiX-M
through the centre of its Latin-hypercube box. Three kinds are supported:

* **natural** — proportional to the tokens available per domain, optionally tempered:
  ``w_d ∝ n_d^(1/τ)`` (τ = 1 natural, τ → ∞ uniform, τ < 1 sharpens towards large domains);
* **uniform** — ``1/D`` each;
* **file** — a JSON/YAML mapping domain → weight, or a mixture JSON written by
  :mod:`tikmix.mixing.exports` (so a previous stage's result can be the next prior).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tikmix.mixing.weights import MixtureInputError, validate_weights


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


def load_mapping(path: str | Path) -> dict:
    """Read a JSON or YAML file holding a mapping (by suffix: .json, .yaml, .yml)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise MixtureInputError(f"{path}: expected a .json, .yaml or .yml file")
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise MixtureInputError(f"{path}: cannot parse: {exc}") from exc
    if not isinstance(data, dict):
        raise MixtureInputError(f"{path}: expected a mapping at the top level")
    return data


def read_prior(path: str | Path, domains: Iterable[str] | None = None) -> pd.Series:
    """Read a prior from a JSON/YAML file and validate it against ``domains``.

    The file holds either a plain mapping domain → weight or a mixture document with a
    ``weights`` key (as written by :func:`tikmix.mixing.exports.mixture_document`).
    """
    data = load_mapping(path)
    if isinstance(data.get("weights"), dict):
        data = data["weights"]
    return validate_weights(data, domains, source=str(path))


def resolve_prior(spec: str, domains: Iterable[str]) -> pd.Series:
    """Build a prior from a command-line style specification.

    ``spec`` is ``uniform``, ``natural:TOKENS_FILE`` (JSON/YAML mapping domain → tokens),
    ``natural:TOKENS_FILE:TEMPERATURE``, or the path of a prior file (see :func:`read_prior`).
    """
    domains = list(domains)
    if spec == "uniform":
        return uniform_prior(domains)
    if spec.startswith("natural:"):
        rest = spec[len("natural:") :]
        temperature = 1.0
        head, sep, tail = rest.rpartition(":")
        if sep and head:
            try:
                temperature = float(tail)
                rest = head
            except ValueError:
                pass  # a ':' inside the path, not a temperature
        return natural_prior(load_mapping(rest), temperature, domains=domains)
    return read_prior(spec, domains)
