"""Rule ``compute_table``: the FLOPs to determine each mixture, tables and bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tikmix.analysis.compute import write_compute_tables
from tikmix.report.figures import compute_bars

Paths = Sequence[str | Path]


def compute_table_job(
    *,
    summary: str | Path,
    components: str | Path,
    sources: Mapping[str, Mapping[str, Paths]],
    reference: str,
    figure_stem: str | Path,
) -> None:
    """Rule ``compute_table``: the compute tables (:func:`write_compute_tables`) and the bars."""
    table, _ = write_compute_tables(
        sources, summary=summary, components=components, reference=reference
    )
    compute_bars(table, figure_stem, title="Compute spent to determine each mixture")
