"""The mixture document: the only place mixtures are validated, built, read and written.

Every mixture that enters or leaves the workflow (a prior, a solver's result, a file written
for a training stack, a user's weights file) passes through :func:`validate_weights`, so a bad
vector is reported once, in one wording, naming the file and the domain at fault.

Formats (``FORMATS``):

* ``json`` — the canonical document::

      {"method": ..., "weights": {domain: w}, "stage_tokens": ..., "provenance": {...},
       "solver": {...}, "sign_convention": "benefit = -influence; larger is better",
       "compute": {...}, "total_compute": {...}}

  (a plain ``{domain: weight}`` mapping is read too);
* ``yaml`` — a plain ``domain: weight`` mapping (the sign convention in a comment);
* ``csv`` — ``domain,weight`` rows;
* ``megatron`` — one Megatron-LM ``--data-path w1 p1 w2 p2 …`` line: each domain's weight is
  split over its shard prefixes in proportion to their token counts (or equally).

Rounding (:func:`round_weights`) rounds to ``digits`` decimals and gives the largest weight
the remainder, so the written weights sum to 1 within 1e-9.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tikmix import __version__
from tikmix.core.atomic import dumps_json, write_text_atomic
from tikmix.core.conventions import SIGN_CONVENTION, MixtureInputError

#: Tolerance on ``|sum(w) - 1|`` for weights read from users or files.
SUM_TOLERANCE = 1e-6


def validate_weights(
    weights: Mapping[str, float] | pd.Series,
    domains: Iterable[str] | None = None,
    *,
    source: str = "weights",
    tolerance: float = SUM_TOLERANCE,
) -> pd.Series:
    """Check a domain → weight mapping and return it as a float Series.

    Args:
        weights: the mapping to check.
        domains: the domains the weights must cover exactly (e.g. the influence matrix's
            columns); the result is reordered to this order. ``None`` keeps the given order.
        source: how to name the weights in error messages (a file path, "prior", ...).
        tolerance: allowed ``|sum - 1|``.

    Raises:
        MixtureInputError: a domain is missing or unknown, a weight is NaN, not a number or
            negative, or the weights do not sum to 1 within ``tolerance``.
    """
    series = pd.Series(weights, dtype=object) if not isinstance(weights, pd.Series) else weights
    if series.empty:
        raise MixtureInputError(f"{source}: no domain weights given")
    if series.index.has_duplicates:
        dups = sorted(set(series.index[series.index.duplicated()].astype(str)))
        raise MixtureInputError(f"{source}: duplicate domain(s) {dups}")
    if domains is not None:
        domains = list(domains)
        missing = [d for d in domains if d not in series.index]
        known = set(domains)
        unknown = [d for d in series.index if d not in known]
        if missing:
            # A misspelt domain is both missing and unknown: name the domain it stands for.
            hints = [
                f"'{name}' is not a domain: did you mean '{close[0]}'?"
                for name in unknown
                if (close := difflib.get_close_matches(str(name), missing, n=1))
            ]
            raise MixtureInputError(
                f"{source}: no weight for domain(s) {missing}" + "".join(f"; {h}" for h in hints)
            )
        if unknown:
            raise MixtureInputError(
                f"{source}: unknown domain(s) {unknown}; known domains are {domains}"
            )
        series = series.reindex(domains)
    values = {}
    for domain, value in series.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise MixtureInputError(
                f"{source}: weight of domain {domain!r} is not a number: {value!r}"
            )
        if np.isnan(value):
            raise MixtureInputError(f"{source}: weight of domain {domain!r} is NaN")
        if value < 0:
            raise MixtureInputError(f"{source}: weight of domain {domain!r} is negative ({value})")
        values[str(domain)] = float(value)
    result = pd.Series(values, dtype=float, name="weight")
    result.index.name = "domain"
    total = float(result.sum())
    if not abs(total - 1.0) <= tolerance:
        raise MixtureInputError(
            f"{source}: weights sum to {total:.12g}, not 1 (tolerance {tolerance:g})"
        )
    return result


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


FORMATS = ("json", "yaml", "csv", "megatron")


def round_weights(weights: pd.Series, digits: int) -> pd.Series:
    """Round to ``digits`` decimals; the largest weight takes the rounding remainder.

    All weights but the largest are rounded; the largest becomes ``1 − Σ others`` rounded to
    the same decimals, so the decimal values written sum to exactly 1 and the floats to
    within 1e-9. Raises if that would make the largest weight negative (too few digits for
    this many domains).
    """
    w = validate_weights(weights, source="weights")
    if not 1 <= digits <= 15:
        raise MixtureInputError(f"digits must be in 1..15 (float precision), got {digits}")
    values = w.to_numpy().copy()
    largest = int(np.argmax(values))
    rounded = np.round(values, digits)
    rounded[largest] = 0.0
    rounded[largest] = round(1.0 - math.fsum(rounded), digits)
    if rounded[largest] < 0:
        raise MixtureInputError(
            f"cannot round {len(values)} weights to {digits} digits: the rounding remainder "
            "exceeds the largest weight; use more digits"
        )
    return pd.Series(rounded, index=w.index, name="weight")


def mixture_document(
    weights: pd.Series,
    *,
    method: str,
    stage_tokens: int | None = None,
    provenance: Mapping | None = None,
    solver: Mapping | None = None,
    digits: int | None = None,
    compute: Mapping | None = None,
    total_compute: Mapping | None = None,
) -> dict:
    """The canonical mixture document (see module docstring); ``digits`` rounds the weights.

    ``compute`` is what determining the mixture cost in its own step; ``total_compute`` adds
    what it was derived from (e.g. the influence matrix) and defaults to ``compute``.
    """
    w = validate_weights(weights, source=f"{method} weights")
    if digits is not None:
        w = round_weights(w, digits)
    document = {
        "method": method,
        "weights": {str(d): float(v) for d, v in w.items()},
        "stage_tokens": stage_tokens,
        "provenance": {"tikmix_version": __version__, **(provenance or {})},
        "solver": dict(solver or {}),
        "sign_convention": SIGN_CONVENTION,
    }
    if compute is not None:
        document["compute"] = dict(compute)
        document["total_compute"] = dict(total_compute or compute)
    return document


def megatron_data_path(
    weights: pd.Series,
    prefixes: Mapping[str, Sequence[str] | Mapping[str, float]],
    *,
    digits: int = 8,
) -> str:
    """A Megatron-LM ``--data-path`` value ``"w1 p1 w2 p2 …"``.

    Args:
        weights: the mixture.
        prefixes: domain → list of shard prefixes (weight split equally), or domain →
            {prefix: token count} (weight split in proportion to tokens). Every domain with a
            positive weight needs prefixes; domains with weight 0 are left out of the line.
        digits: decimals of the written weights, which sum to exactly 1.
    """
    w = validate_weights(weights, source="weights")
    unknown = [d for d in prefixes if d not in w.index]
    if unknown:
        raise MixtureInputError(f"megatron prefixes: unknown domain(s) {unknown}")
    entries: dict[str, float] = {}
    for domain, weight in w.items():
        if weight == 0:
            continue
        if domain not in prefixes or len(prefixes[domain]) == 0:
            raise MixtureInputError(f"megatron prefixes: no shard prefix for domain {domain!r}")
        shards = prefixes[domain]
        if isinstance(shards, Mapping):
            tokens = pd.Series(shards, dtype=float)
            if tokens.isna().any() or (tokens < 0).any() or tokens.sum() <= 0:
                raise MixtureInputError(
                    f"megatron prefixes: token counts of domain {domain!r} must be >= 0, "
                    "not all zero"
                )
            split = weight * tokens / tokens.sum()
        else:
            split = pd.Series(weight / len(shards), index=list(shards))
        for prefix, share in split.items():
            if prefix in entries or any(c.isspace() for c in prefix):
                raise MixtureInputError(
                    f"megatron prefixes: prefix {prefix!r} is repeated or contains whitespace"
                )
            entries[prefix] = share
    flat = round_weights(pd.Series(entries), digits)
    return " ".join(f"{v:.{digits}f} {p}" for p, v in flat.items())


def parse_megatron_data_path(
    line: str, prefixes: Mapping[str, Sequence[str] | Mapping[str, float]] | None = None
) -> pd.Series:
    """Parse a ``--data-path`` line back into weights.

    Without ``prefixes`` the result is indexed by shard prefix. With them (as given to
    :func:`megatron_data_path`) the prefix weights are summed per domain; a prefix that
    belongs to no domain is an error, and domains absent from the line get weight 0.
    """
    tokens = line.split()
    if not tokens or len(tokens) % 2:
        raise MixtureInputError(
            f"megatron --data-path: expected 'w1 p1 w2 p2 ...' pairs, got {len(tokens)} fields"
        )
    per_prefix = {}
    for weight, prefix in zip(tokens[::2], tokens[1::2], strict=True):
        try:
            per_prefix[prefix] = float(weight)
        except ValueError as exc:
            raise MixtureInputError(
                f"megatron --data-path: {weight!r} (before {prefix!r}) is not a number"
            ) from exc
    if prefixes is None:
        return validate_weights(per_prefix, source="megatron --data-path")
    owner = {p: d for d, shards in prefixes.items() for p in shards}
    per_domain = dict.fromkeys(prefixes, 0.0)
    for prefix, weight in per_prefix.items():
        if prefix not in owner:
            raise MixtureInputError(f"megatron --data-path: prefix {prefix!r} belongs to no domain")
        per_domain[owner[prefix]] += weight
    return validate_weights(per_domain, source="megatron --data-path")


def format_mixture(
    document: Mapping,
    fmt: str,
    *,
    prefixes: Mapping[str, Sequence[str] | Mapping[str, float]] | None = None,
    digits: int = 8,
) -> str:
    """Render a mixture document as the text of one of :data:`FORMATS`."""
    weights = validate_weights(document["weights"], source=f"{document.get('method')} weights")
    if fmt == "json":
        return dumps_json(document, indent=2) + "\n"
    if fmt == "megatron":
        if prefixes is None:
            raise MixtureInputError("the megatron format needs shard prefixes per domain")
        return megatron_data_path(weights, prefixes, digits=digits) + "\n"
    rounded = round_weights(weights, digits)
    if fmt == "yaml":
        header = f"# {document.get('method')} mixture ({SIGN_CONVENTION})\n"
        body = yaml.safe_dump({d: float(v) for d, v in rounded.items()}, sort_keys=False)
        return header + body
    if fmt == "csv":
        return "domain,weight\n" + "".join(f"{d},{v:.{digits}f}\n" for d, v in rounded.items())
    raise MixtureInputError(f"unknown mixture format {fmt!r}; choose one of {FORMATS}")


def write_mixture(path: str | Path, document: Mapping, fmt: str | None = None, **kwargs) -> Path:
    """Write ``document`` to ``path`` atomically (temporary file, then rename).

    ``fmt`` defaults from the suffix (.json, .yaml/.yml, .csv; anything else needs ``fmt``);
    ``kwargs`` go to :func:`format_mixture`.
    """
    path = Path(path)
    fmt = fmt or _format_from_suffix(path)
    write_text_atomic(path, format_mixture(document, fmt, **kwargs))
    return path


def read_mixture(
    path: str | Path,
    domains: Iterable[str] | None = None,
    *,
    fmt: str | None = None,
    prefixes: Mapping[str, Sequence[str] | Mapping[str, float]] | None = None,
) -> pd.Series:
    """Read and validate a mixture file in any of :data:`FORMATS`.

    JSON may be the canonical document or a plain mapping. ``domains``, if given, must match
    the file's domains exactly. A megatron file needs ``prefixes`` to map shards to domains.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mixture file not found: {path}")
    fmt = fmt or _format_from_suffix(path)
    if fmt in ("json", "yaml"):
        data = load_mapping(path)
        if fmt == "json" and isinstance(data.get("weights"), dict):
            data = data["weights"]
        return validate_weights(data, domains, source=str(path))
    if fmt == "csv":
        table = pd.read_csv(path, dtype={"domain": str})
        if list(table.columns) != ["domain", "weight"]:
            raise MixtureInputError(
                f"{path}: expected columns 'domain,weight', got {list(table.columns)}"
            )
        weights = pd.Series(table["weight"].to_numpy(), index=table["domain"].to_numpy())
        return validate_weights(weights, domains, source=str(path))
    if fmt == "megatron":
        weights = parse_megatron_data_path(path.read_text(), prefixes)
        return validate_weights(weights, domains, source=str(path))
    raise MixtureInputError(f"unknown mixture format {fmt!r}; choose one of {FORMATS}")


def read_mixture_document(path: str | Path, domains: Iterable[str] | None = None) -> dict:
    """A canonical mixture document (JSON) whole, its weights validated (:func:`read_mixture`).

    For readers that need more than the weights: ``solver``, ``compute``, ``total_compute``…
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mixture file not found: {path}")
    document = load_mapping(path)
    if not isinstance(document.get("weights"), dict):
        raise MixtureInputError(f"{path}: not a mixture document (no 'weights' mapping)")
    weights = validate_weights(document["weights"], domains, source=str(path))
    document["weights"] = {str(d): float(v) for d, v in weights.items()}
    return document


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    formats = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".csv": "csv"}
    if suffix not in formats:
        raise MixtureInputError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; give one of {FORMATS}"
        )
    return formats[suffix]
