"""Validation of mixture weight vectors and of the tables the mixture optimizers read.

Every mixture that enters or leaves :mod:`tikmix.mixing` (a prior, a solver result, a file
written for a training stack) passes through :func:`validate_weights`, so a bad vector is
reported once, in one wording, naming the file and the domain at fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

#: Tolerance on ``|sum(w) - 1|`` for weights read from users or files.
SUM_TOLERANCE = 1e-6


class MixtureInputError(ValueError):
    """A mixture, prior, influence matrix or run table that cannot be used as given."""


#: The forms of the eq. 6 normaliser ``P̂_i = (B w)_i / s_i``: ``max`` is the paper's
#: ``s_i = max_j B_ij``; ``abs_max`` is ``s_i = max_j |B_ij|``. See :func:`row_scales`.
NORMALISERS = ("max", "abs_max")


def row_scales(B: np.ndarray, eps: float = 1e-8, normaliser: str = "max") -> np.ndarray:
    """The eq. 6 normaliser of every row of a benefit matrix (tasks × domains).

    ``normaliser="max"`` is the paper's ``s_i = max_j B_ij``, the benefit of the task's best
    domain, so ``P̂_i`` is the fraction of that best benefit a mixture attains. A row whose
    largest entry is not positive (every domain hurts the task) would flip the sign of ``P̂_i``
    under that form, so such a row falls back to ``max_j |B_ij|``. ``normaliser="abs_max"`` uses
    ``max_j |B_ij|`` for every row. ``eps`` is *relative*: ``s_i · (1 + eps)``, so ``P̂`` and
    every mixture derived from it are invariant to a global rescaling of ``B``. An all-zero row
    gets scale 1 (its ``P̂`` is 0 for every mixture).
    """
    if normaliser not in NORMALISERS:
        raise MixtureInputError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
    if not eps >= 0:
        raise MixtureInputError(f"eps must be >= 0, got {eps}")
    B = np.atleast_2d(np.asarray(B, dtype=float))
    magnitude = np.abs(B).max(axis=1)
    scale = magnitude if normaliser == "abs_max" else B.max(axis=1)
    scale = np.where(scale > 0, scale, magnitude)
    return np.where(scale > 0, scale * (1.0 + eps), 1.0)


def normalised_matrix(B: np.ndarray, eps: float = 1e-8, normaliser: str = "max") -> np.ndarray:
    """``B̂ = B / s`` row by row (:func:`row_scales`): ``P̂(w) = B̂ w``."""
    B = np.atleast_2d(np.asarray(B, dtype=float))
    return B / row_scales(B, eps, normaliser)[:, None]


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
        if missing:
            raise MixtureInputError(f"{source}: no weight for domain(s) {missing}")
        known = set(domains)
        unknown = [d for d in series.index if d not in known]
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


def read_influence_matrix(path: str | Path) -> pd.DataFrame:
    """Read a benefit matrix CSV: task names in the first column, one column per domain.

    The orientation is *benefit* (``B = -influence``, larger is better), as written by the
    influence stage. Raises :class:`MixtureInputError` naming the task and domain of any
    missing or non-numeric cell, and ``FileNotFoundError`` for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"influence matrix not found: {path}")
    table = pd.read_csv(path, index_col=0)
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise MixtureInputError(f"{path}: the influence matrix is empty (need tasks × domains)")
    for axis, labels in (("task", table.index), ("domain", table.columns)):
        if labels.has_duplicates:
            dups = sorted(set(labels[labels.duplicated()].astype(str)))
            raise MixtureInputError(f"{path}: duplicate {axis} name(s) {dups}")
    numeric = table.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna().to_numpy() | ~np.isfinite(numeric.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise MixtureInputError(
            f"{path}: missing or non-numeric value {table.iat[row, col]!r} at task "
            f"{table.index[row]!r}, domain {table.columns[col]!r} (CSV line {row + 2}); "
            f"{int(bad.sum())} bad cell(s) in total"
        )
    numeric.index = numeric.index.astype(str)
    numeric.columns = numeric.columns.astype(str)
    numeric.index.name = "task"
    numeric.columns.name = "domain"
    return numeric.astype(float)


def read_runs_table(
    path: str | Path, response: str, weight_columns: list[str] | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """Read a table of mixtures and their measured response (one run per row).

    Args:
        path: CSV file, one row per run.
        response: the column holding the response to maximise.
        weight_columns: the domain columns; default: every column except ``response``.

    Returns:
        ``(W, y)``: the mixtures (rows sum to 1) and the response.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run table not found: {path}")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise MixtureInputError(f"{path}: the run table is empty") from exc
    if response not in table.columns:
        raise MixtureInputError(
            f"{path}: response column {response!r} not found; columns are {list(table.columns)}"
        )
    if table.empty:
        raise MixtureInputError(f"{path}: the run table has a header but no rows")
    if weight_columns is None:
        weight_columns = [c for c in table.columns if c != response]
    else:
        missing = [c for c in weight_columns if c not in table.columns]
        if missing:
            raise MixtureInputError(f"{path}: weight column(s) {missing} not found")
    if not weight_columns:
        raise MixtureInputError(f"{path}: no weight columns besides the response {response!r}")
    for column in [*weight_columns, response]:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise MixtureInputError(
                f"{path}: missing or non-numeric value {table[column].iat[row]!r} in column "
                f"{column!r} (CSV line {row + 2})"
            )
        table[column] = values.astype(float)
    W = table[weight_columns].astype(float)
    W.columns = W.columns.astype(str)
    for row, (_, weights) in enumerate(W.iterrows()):
        validate_weights(weights, source=f"{path} (CSV line {row + 2})")
    return W.reset_index(drop=True), table[response].astype(float).reset_index(drop=True)
