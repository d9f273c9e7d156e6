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

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from tikmix.core.compute import ComputeRecord, ComputeRecordError
from tikmix.influence.store import open_store


def read_compute(path: str | Path) -> ComputeRecord:
    """The ``compute`` record of one job output: a Zarr store (directory) or a JSON file.

    Raises:
        FileNotFoundError: no such file or directory (``IncompleteStoreError`` for a store whose
            writer did not finish).
        ComputeRecordError: the output has no ``compute`` record or a malformed one.
    """
    path = Path(path)
    if path.is_dir():
        attrs = open_store(path).attrs
        if "compute" not in attrs:
            raise ComputeRecordError(f"store {path}: no 'compute' attribute")
        return ComputeRecord.parse(attrs["compute"], f"store {path}")
    if not path.is_file():
        raise FileNotFoundError(f"compute record not found: {path}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ComputeRecordError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, Mapping) or "compute" not in document:
        raise ComputeRecordError(f"{path}: no top-level 'compute' key")
    return ComputeRecord.parse(document["compute"], str(path))


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
