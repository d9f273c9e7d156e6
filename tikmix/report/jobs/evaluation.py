"""Rule ``evaluation_table``: table 1, figure 4's data and figure 4."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tikmix.analysis.evaluation import write_evaluation_tables
from tikmix.core.settings import Normalisation
from tikmix.report.figures import benefit_improvement_scatter

log = logging.getLogger(__name__)

Paths = Sequence[str | Path]


def evaluation_table_job(
    *,
    records: Paths,
    mixtures: Paths,
    influence: str | Path,
    table: str | Path,
    summary: str | Path,
    figure4: str | Path,
    figure4_stats: str | Path,
    paired: str | Path,
    paired_stats: str | Path,
    methods: Sequence[str],
    random_mixtures: Sequence[str],
    reference: str,
    normalisation: Normalisation,
    checkpoint: str,
    figure_stem: str | Path,
) -> None:
    """Rule ``evaluation_table``: table 1 and figure 4's data
    (:func:`write_evaluation_tables`; ``mixtures`` in the order of ``methods``) and figure 4."""
    points, stats = write_evaluation_tables(
        records,
        dict(zip(methods, mixtures, strict=True)),
        influence,
        table_path=table,
        summary_path=summary,
        figure4_path=figure4,
        figure4_stats_path=figure4_stats,
        paired_path=paired,
        paired_stats_path=paired_stats,
        random_mixtures=random_mixtures,
        reference=reference,
        normalisation=normalisation,
    )
    benefit_improvement_scatter(
        points,
        stats,
        figure_stem,
        title=f"Predicted benefit vs stage-2 improvement (checkpoint {checkpoint})",
    )
    log.info("predicted benefit vs measured improvement: %s", stats)
