"""Compute accounting: the FLOPs spent to determine each mixture (paper table 1, last row).

Every job of the workflow records the work it did itself as ``compute: {tokens, flops}``: in the
attributes of the Zarr store it writes, or under a ``compute`` key of the JSON document it
writes. This module reads those records and adds them up per mixture method from the
*components* the caller names (for TiKMiX-D: the checkpoint's domain gradients, task gradients,
EK-FAC fit and influence matrix, plus its own solve; for TiKMiX-M: all of that plus its direct
measurements; a baseline: its own records).

The jobs estimate their FLOPs with :mod:`tikmix.models.flops` (a forward pass ``2·N`` per token,
a gradient pass ``6·N``, the PaLM count for the built-in model; ``9·n³`` per symmetric
eigendecomposition). Pure reductions (adding part-stores) are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tikmix.analysis import read_json_file, write_tables
from tikmix.core.compute import ComputeRecord, ComputeRecordError
from tikmix.influence.store import open_store

#: Relative difference above which two accounts of the same cost disagree (:func:`flops_disagreements`).
FLOPS_TOLERANCE = 0.01


def read_compute(path: str | Path) -> ComputeRecord:
    """The ``compute`` record of one job output: a Zarr store (directory) or a JSON file.

    Raises:
        FileNotFoundError: no such file or directory (``IncompleteStoreError`` for a store whose
            writer did not finish).
        ComputeRecordError: the output has no ``compute`` record or a malformed one.
    """
    path = Path(path)
    if path.is_dir():
        return ComputeRecord.read(open_store(path).attrs, f"store {path}")
    document = read_json_file(path, "compute record not found", ComputeRecordError)
    return ComputeRecord.read(document, str(path))


def total_compute(paths: Sequence[str | Path]) -> ComputeRecord:
    """Sum of the records of ``paths`` (each read with :func:`read_compute`)."""
    total = ComputeRecord()
    for path in paths:
        total = total + read_compute(path)
    return total


def compute_tables(
    sources: Mapping[str, Mapping[str, Sequence[str | Path]]], reference: str = "regmix"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """FLOPs to determine each mixture, in total and by component.

    Args:
        sources: method → component name → the job outputs whose records make up that
            component (e.g. ``{"tikmix_d": {"domain gradients": [...], "EK-FAC": [...]}}``).
            A method with no components (e.g. the natural mixture) costs nothing.
        reference: the method the ``ratio_to_{reference}`` column divides by (the paper compares
            against RegMix); the column is left out when that method is absent or costs nothing.

    Returns:
        ``(summary, components)``: ``summary`` one row per method (``method, tokens, flops`` and
        the ratio column), ``components`` one row per (method, component) with
        ``n_records, tokens, flops``.
    """
    rows, parts = [], []
    for method, components in sources.items():
        total = ComputeRecord()
        for component, paths in components.items():
            record = total_compute(paths)
            parts.append(
                {
                    "method": method,
                    "component": component,
                    "n_records": len(paths),
                    **record.to_dict(),
                }
            )
            total = total + record
        rows.append({"method": method, **total.to_dict()})
    summary = pd.DataFrame(rows, columns=["method", "tokens", "flops"])
    components = pd.DataFrame(
        parts, columns=["method", "component", "n_records", "tokens", "flops"]
    )
    if reference in sources:
        reference_flops = float(summary.loc[summary["method"] == reference, "flops"].iloc[0])
        if reference_flops > 0:
            summary[f"ratio_to_{reference}"] = summary["flops"] / reference_flops
    return summary, components


def write_compute_tables(
    sources: Mapping[str, Mapping[str, Sequence[str | Path]]],
    *,
    summary: str | Path,
    components: str | Path,
    reference: str = "regmix",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`compute_tables`, written as CSV to ``summary`` and ``components``; returns both."""
    tables = compute_tables(sources, reference=reference)
    write_tables(zip(tables, (summary, components), (False, False), strict=True))
    return tables


@dataclass(frozen=True)
class FlopsDisagreement:
    """Two accounts of what determining ``method``'s mixture cost that disagree.

    Attributes:
        method: the mixture method.
        mixture_file: FLOPs of its mixture file's ``total_compute``.
        compute_table: FLOPs the compute table sums from the job records.
    """

    method: str
    mixture_file: float
    compute_table: float


def flops_disagreements(
    mixture_flops: pd.Series, compute: pd.DataFrame, tolerance: float = FLOPS_TOLERANCE
) -> list[FlopsDisagreement]:
    """The methods whose two FLOP accounts differ by more than ``tolerance`` (relative).

    ``mixture_flops`` is method → ``total_compute.flops`` of its mixture file (NaN where the
    file records none); ``compute`` the compute table (columns ``method, flops``). Both should
    be the same cost; a difference means one account misses a component. Methods in only one
    account, and NaN values (nothing to compare), are not disagreements.
    """
    table = compute.set_index("method")["flops"]
    found = []
    for method in mixture_flops.index.intersection(table.index):
        a, b = float(mixture_flops[method]), float(table[method])
        if abs(a - b) > tolerance * max(abs(a), abs(b)):
            found.append(FlopsDisagreement(str(method), a, b))
    return found


@dataclass(frozen=True)
class FlopsRatio:
    """``method``'s mixture FLOPs over ``reference``'s (the paper compares TiKMiX-D to RegMix)."""

    method: str
    reference: str
    flops: float
    reference_flops: float

    @property
    def ratio(self) -> float:
        return self.flops / self.reference_flops


def flops_ratio(
    mixture_flops: pd.Series, method: str = "tikmix_d", reference: str = "regmix"
) -> FlopsRatio | None:
    """:class:`FlopsRatio` of ``method`` to ``reference``; None when either is absent or
    ``reference`` costs nothing (or is unknown: NaN)."""
    if method not in mixture_flops.index or reference not in mixture_flops.index:
        return None
    reference_flops = float(mixture_flops[reference])
    if not reference_flops > 0 or math.isnan(reference_flops):
        return None
    return FlopsRatio(method, reference, float(mixture_flops[method]), reference_flops)
