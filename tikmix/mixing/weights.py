"""Validation of the tables the mixture optimizers read: benefit matrices and run tables.

Mixture weight vectors are validated by :func:`tikmix.core.mixture.validate_weights`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tikmix.core.mixture import MixtureInputError, validate_weights


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
