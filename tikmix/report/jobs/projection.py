"""Rule ``projection_agreement``: the gradient-projection check, its files and figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tikmix.analysis.projection_agreement import (
    AGREEMENT_TARGET,
    run_projection_agreement,
    write_projection_agreement,
)
from tikmix.core.mixture import read_mixture
from tikmix.report.figures import projection_agreement_figure

Paths = Sequence[str | Path]


def projection_agreement_job(
    *,
    checkpoint: str | Path,
    prior: str | Path,
    task_files: Paths,
    table: str | Path,
    record: str | Path,
    ckpt: str,
    tasks: Sequence[str],
    figure_stem: str | Path,
    options: Mapping,
) -> None:
    """Rule ``projection_agreement``: the check at checkpoint ``ckpt`` (``options`` go to
    :func:`run_projection_agreement`; ``task_files`` in the order of ``tasks``), its table,
    record and figure. EK-FAC is fitted on the ``prior`` mixture file's sample."""
    agreement, cost = run_projection_agreement(
        checkpoint=checkpoint,
        prior=read_mixture(prior).to_dict(),
        task_files=dict(zip(tasks, task_files, strict=True)),
        **options,
    )
    write_projection_agreement(agreement, cost, csv=table, record_path=record)
    projection_agreement_figure(
        agreement,
        figure_stem,
        title=f"Projected vs unprojected influence at {ckpt}",
        target=AGREEMENT_TARGET,
    )
