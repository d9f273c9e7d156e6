"""Rule ``projection_agreement``: the gradient-projection check, its files and figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tikmix.analysis.projection_agreement import (
    AGREEMENT_TARGET,
    run_projection_agreement,
    write_projection_agreement,
)
from tikmix.core.gradient_pass import GradientPassSettings
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
    gradient_pass: GradientPassSettings,
    **options,
) -> None:
    """Rule ``projection_agreement``: the check at checkpoint ``ckpt`` (``options`` go to
    :func:`run_projection_agreement`: domain_dirs, ranks, tokens_per_domain, fit_tokens,
    fisher; ``task_files`` in the order of ``tasks``), its table, record and figure. EK-FAC is
    fitted on the ``prior`` mixture file's sample; the check projects at its own ranks, so
    ``gradient_pass.projection`` is not used."""
    agreement, cost = run_projection_agreement(
        checkpoint=checkpoint,
        prior=read_mixture(prior).to_dict(),
        task_files=dict(zip(tasks, task_files, strict=True)),
        seq_len=gradient_pass.seq_len,
        batch_size=gradient_pass.batch_size,
        tracked_modules=gradient_pass.tracked_modules,
        precision=gradient_pass.precision,
        seed=gradient_pass.seed,
        device=gradient_pass.device,
        **options,
    )
    write_projection_agreement(agreement, cost, csv=table, record_path=record)
    projection_agreement_figure(
        agreement,
        figure_stem,
        title=f"Projected vs unprojected influence at {ckpt}",
        target=AGREEMENT_TARGET,
    )
